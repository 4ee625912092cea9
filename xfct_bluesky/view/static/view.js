// xfct-bluesky live view: polls the view server's JSON endpoints and draws on canvases.
// Plain JavaScript, no libraries. Everything drawn is also kept in window.xfctView (for tests and the console).
"use strict";

const view = window.xfctView = {
  state: null, maps: {}, shifts: null, axes: null, slice: null, polls: 0, errors: [],
  colours: { dx: [31, 119, 180], dy: [255, 127, 14], nan: [255, 0, 255] },
};
const TARGET = 256;  // maps and slices are drawn this many CSS px wide (at least), whole pixels per value
const params = new URLSearchParams(window.location.search);

function $(id) { return document.getElementById(id); }

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "?";
  return Number(value).toPrecision(digits).replace(/\.?0+e/, "e").replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function decode(encoded) {
  const bytes = Uint8Array.from(atob(encoded.data), c => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

// Grey, linear from min (black) to max (white) of the finite values; magenta where not finite.
function drawImage(canvas, encoded) {
  const [ny, nx] = encoded.shape;
  const values = decode(encoded);
  const scale = Math.max(1, Math.floor(TARGET / Math.max(ny, nx)));
  canvas.width = nx * scale;
  canvas.height = ny * scale;
  canvas.style.width = `${nx * scale}px`;
  canvas.style.height = `${ny * scale}px`;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(nx * scale, ny * scale);
  const lo = encoded.min, hi = encoded.max;
  for (let y = 0; y < ny; y++) {
    for (let x = 0; x < nx; x++) {
      const v = values[y * nx + x];
      let rgb;
      if (!Number.isFinite(v)) rgb = view.colours.nan;
      else {
        const g = hi > lo ? Math.min(255, Math.max(0, Math.round(255 * (v - lo) / (hi - lo)))) : 128;
        rgb = [g, g, g];
      }
      for (let dy = 0; dy < scale; dy++) {
        let p = ((y * scale + dy) * nx * scale + x * scale) * 4;
        for (let dx = 0; dx < scale; dx++, p += 4) {
          image.data[p] = rgb[0]; image.data[p + 1] = rgb[1]; image.data[p + 2] = rgb[2]; image.data[p + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  return scale;
}

function clearCanvas(canvas) {
  canvas.width = 1; canvas.height = 1;
  canvas.style.width = "1px"; canvas.style.height = "1px";
}

function niceTicks(lo, hi, n = 5) {
  const span = hi - lo;
  const step0 = span / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= step0) || step0;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) ticks.push(Math.abs(t) < 1e-12 ? 0 : t);
  return ticks;
}

// The shifts plot: dx circles and dy squares against theta; view.axes maps data to canvas pixels.
function drawShifts(data) {
  const canvas = $("shifts");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const box = { left: 60, top: 12, width: W - 60 - 14, height: H - 12 - 42 };
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  const th = data.theta, pts = [];
  for (let i = 0; i < th.length; i++) {
    if (th[i] === null) continue;
    if (data.dx[i] !== null) pts.push(data.dx[i]);
    if (data.dy[i] !== null) pts.push(data.dy[i]);
  }
  const thf = th.filter(t => t !== null);
  if (thf.length === 0) return;
  let x0 = Math.min(...thf), x1 = Math.max(...thf);
  let y0 = pts.length ? Math.min(...pts, 0) : -1, y1 = pts.length ? Math.max(...pts, 0) : 1;
  if (x1 - x0 < 1e-9) { x0 -= 1; x1 += 1; }
  if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
  const padx = 0.04 * (x1 - x0), pady = 0.08 * (y1 - y0);
  x0 -= padx; x1 += padx; y0 -= pady; y1 += pady;
  const axes = view.axes = { x0, x1, y0, y1, ...box };
  const px = t => box.left + (t - x0) / (x1 - x0) * box.width;
  const py = v => box.top + (y1 - v) / (y1 - y0) * box.height;
  // axes, ticks, zero line
  ctx.strokeStyle = "#444"; ctx.lineWidth = 1; ctx.strokeRect(box.left, box.top, box.width, box.height);
  ctx.fillStyle = "#222"; ctx.font = "12px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of niceTicks(x0, x1)) {
    ctx.beginPath(); ctx.moveTo(px(t), box.top + box.height); ctx.lineTo(px(t), box.top + box.height + 4); ctx.stroke();
    ctx.fillText(fmt(t), px(t), box.top + box.height + 6);
  }
  ctx.fillText("rotation angle theta (deg)", box.left + box.width / 2, H - 16);
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const v of niceTicks(y0, y1)) {
    ctx.beginPath(); ctx.moveTo(box.left - 4, py(v)); ctx.lineTo(box.left, py(v)); ctx.stroke();
    ctx.fillText(fmt(v), box.left - 6, py(v));
  }
  ctx.save(); ctx.translate(14, box.top + box.height / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center";
  ctx.fillText("shift (px)", 0, 0); ctx.restore();
  ctx.strokeStyle = "#bbb"; ctx.beginPath(); ctx.moveTo(box.left, py(0)); ctx.lineTo(box.left + box.width, py(0)); ctx.stroke();
  const c = view.colours;
  ctx.fillStyle = `rgb(${c.dx.join(",")})`;
  for (let i = 0; i < th.length; i++) {
    if (th[i] === null || data.dx[i] === null) continue;
    ctx.beginPath(); ctx.arc(px(th[i]), py(data.dx[i]), 3.5, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.fillStyle = `rgb(${c.dy.join(",")})`;
  for (let i = 0; i < th.length; i++) {
    if (th[i] === null || data.dy[i] === null) continue;
    ctx.fillRect(Math.round(px(th[i])) - 3, Math.round(py(data.dy[i])) - 3, 7, 7);
  }
}

function showRun(state) {
  const r = state.run;
  if (!r) { $("run").textContent = state.message || "no run"; return; }
  const when = r.time ? new Date(r.time * 1000).toLocaleString() : "";
  const field = r.shape ? `, ${r.shape[0]} x ${r.shape[1]} px` + (r.pixel_size ? ` of ${fmt(r.pixel_size * 1e9)} nm` : "") : "";
  const dwell = r.dwell ? `, dwell ${fmt(r.dwell * 1e3)} ms/px` : "";
  $("run").textContent = `Scan ${r.scan_id ?? "?"} (run ${r.uid.slice(0, 8)}), ${r.plan_name || "?"}, sample ` +
    `${r.sample ?? "(none given)"}${field}${dwell}; started ${when}; status: ${r.status}`;
  const p = state.progress, el = $("progress");
  el.dataset.done = p.done; el.dataset.planned = p.planned ?? "";
  el.textContent = p.planned ? `${p.done} of ${p.planned} projections stored` : `${p.done} projections stored`;
  $("bar").max = p.planned || Math.max(p.done, 1); $("bar").value = p.done;
  const d = state.dose;
  $("dose").textContent = d.so_far === null ? "not recorded by this run" :
    `${fmt(d.so_far)} Gy (${fmt(d.per_projection)} Gy per projection` + (d.planned ? `; ${fmt(d.planned)} Gy planned)` : ")");
}

async function updateMaps(state) {
  const shown = state.shown, uid = state.run.uid;
  const key = shown ? `${uid}/${shown.index}` : null;
  if (key === view.mapsKey) return;
  if (!shown) {
    for (const id of ["dpc_x", "dpc_y", "element"]) clearCanvas($(`map-${id}`));
    view.maps = {}; view.mapsKey = null;
    $("maps-title").textContent = "Latest projection: none stored yet";
    return;
  }
  const data = await getJSON(`/api/maps?uid=${encodeURIComponent(uid)}&index=${shown.index}`);
  const planned = state.progress.planned ? ` of ${state.progress.planned}` : "";
  $("maps-title").textContent = `Latest projection: ${data.index + 1}${planned}, theta = ${fmt(data.theta, 4)} deg`;
  const maps = {};
  for (const [name, id] of [["dpc_x", "dpc_x"], ["dpc_y", "dpc_y"], [state.element, "element"]]) {
    const m = data.maps[name], canvas = $(`map-${id}`);
    const label = name === "dpc_x" ? "DPC x" : name === "dpc_y" ? "DPC y" : `${name} fluorescence`;
    if (!m) { clearCanvas(canvas); $(`cap-${id}`).textContent = `${label}: not in this run`; continue; }
    const scale = drawImage(canvas, m);
    const units = m.units ? ` (${m.units})` : "";
    $(`cap-${id}`).textContent = `${label}${units}`;
    $(`scale-${id}`).textContent = `${m.shape[0]} x ${m.shape[1]} px; black ${fmt(m.min)}, white ${fmt(m.max)}`;
    maps[name] = { canvas: canvas.id, index: data.index, theta: data.theta, min: m.min, max: m.max, shape: m.shape, scale };
  }
  view.maps = maps; view.mapsKey = key; view.mapsIndex = data.index; view.mapsTheta = data.theta;
}

async function updateShifts(state) {
  const a = state.alignment, uid = state.run.uid;
  const key = a ? `${a.uid}/${a.complete}` : null;
  if (key === view.shiftsKey) return;
  if (!a) {
    const canvas = $("shifts"), ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    view.shifts = null; view.axes = null; view.shiftsKey = null;
    $("shifts-note").textContent = "waiting for the live alignment (published when the scan ends)";
    return;
  }
  const data = await getJSON(`/api/shifts?uid=${encodeURIComponent(uid)}`);
  if (!data.uid) return;
  drawShifts(data);
  view.shifts = data; view.shiftsKey = key;
  const n = data.theta.length, left = data.dx.filter(v => v === null).length;
  const applied = data.applied === false ? "NOT applied (zero shifts)" : data.applied ? "applied" : "?";
  $("shifts-note").textContent = `${n} projections, alignment run ${data.uid.slice(0, 8)}: ${data.method || "?"}, ` +
    `${applied}${left ? `; ${left} left out (no signal)` : ""}` + (data.reason ? `. Reason: ${data.reason}` : "");
}

async function updateSlice(state) {
  const r = state.reconstruction, uid = state.run.uid;
  const key = r ? `${r.uid}/${r.complete}` : null;
  if (key === view.sliceKey) return;
  if (!r) {
    clearCanvas($("slice")); view.slice = null; view.sliceKey = null;
    $("slice-title").textContent = "Live reconstruction: central slice";
    $("slice-note").textContent = "waiting for the live reconstruction (after the scan)";
    return;
  }
  const data = await getJSON(`/api/slice?uid=${encodeURIComponent(uid)}`);
  if (!data.uid) return;
  const scale = drawImage($("slice"), data.image);
  $("slice-title").textContent = `Live reconstruction: ${data.volume}, central slice (row ${data.row} of ${data.rows}), ${data.algorithm}`;
  $("slice-note").textContent = `${data.image.shape[0]} x ${data.image.shape[1]} px${data.units ? `, ${data.units}` : ""}; ` +
    `black ${fmt(data.image.min)}, white ${fmt(data.image.max)}; run ${data.uid.slice(0, 8)}`;
  view.slice = { uid: data.uid, row: data.row, volume: data.volume, min: data.image.min, max: data.image.max,
                 shape: data.image.shape, scale };
  view.sliceKey = key;
}

async function poll() {
  try {
    const state = await getJSON("/api/state");
    if (view.state && view.state.run && state.run && view.state.run.uid !== state.run.uid) {
      view.mapsKey = view.shiftsKey = view.sliceKey = undefined;  // a new run: redraw everything
    }
    view.state = state;
    showRun(state);
    if (state.run) {
      await updateMaps(state);
      await updateShifts(state);
      await updateSlice(state);
    }
    $("message").textContent = "";
  } catch (err) {
    view.errors.push(String(err));
    $("message").textContent = `could not update: ${err.message || err}`;
  } finally {
    view.polls += 1;
    const every = Number(params.get("poll")) || (view.state && view.state.poll) || 1.0;
    setTimeout(poll, every * 1000);
  }
}

poll();
