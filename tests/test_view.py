"""``xfct-bluesky view``: a scan watched in a real headless Chromium, the page checked against Tiled.

One view server (``xfct-bluesky view`` in a subprocess, on a free loopback port, stopped by its PID) over
the suite's shared Tiled server. A Session writes a small tomography into that server with its live
alignment and reconstruction while the page is open; the page's progress is read as it goes, and at the
end the element screenshots of its canvases are decoded and compared pixel by pixel with the data read
back from Tiled (the same grey mapping), the shift plot's values and marker pixels with the alignment
run's shifts, the slice with the reconstruction run's central slice.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest
from servers import CONSOLE_SCRIPT, free_port, in_ci, require_program, stop_process

from xfct_bluesky.view.app import TOKEN_FILE

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CHROMIUM_FIX = "install Debian's chromium (`make services`, as root) to run the live view's browser test"
N_ANGLES = 4
#: Seconds the RunEngine waits after each projection: a beamline's projection takes seconds, the simulated
#: one milliseconds; the page must have the time to see the scan part-done.
PACE = 0.3


def _playwright():
    """playwright's sync API, or skip (fail under CI=true) when it is not installed."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed: `pip install -e .[test]` to run the live view's browser test"
        if in_ci():
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def view(shared_tiled, tmp_path_factory):
    """``xfct-bluesky view`` on the shared server (its key given in a 0600 file), answering: ``.url``,
    ``.token``, ``.log``."""
    root = tmp_path_factory.mktemp("view")
    uri = shared_tiled.server.uri
    base, key = uri.split("?", 1)[0], parse_qs(urlparse(uri).query)["api_key"][0]
    key_file = root / "tiled_key"
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    port, data = free_port(), root / "data"
    log = root / "view.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(CONSOLE_SCRIPT), "view", "--uri", base, "--api-key-file", str(key_file),
                                 "--data-dir", str(data), "--port", str(port), "--poll", "0.5"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"xfct-bluesky view did not come up:\n{log.read_text()[-3000:]}")
            token_path = data / TOKEN_FILE
            if token_path.exists():
                token = token_path.read_text().strip()
                try:
                    if httpx.get(f"{url}/api/state", headers={"Authorization": f"Bearer {token}"},
                                 timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        assert os.stat(token_path).st_mode & 0o777 == 0o600
        yield SimpleNamespace(url=url, token=token, log=log, token_path=token_path)
    finally:
        stop_process(proc)
    assert not (data / TOKEN_FILE).exists()  # removed at the stop: the token dies with the server


def test_the_view_refuses_requests_without_its_token(view):
    for path in ("/", "/api/state", "/static/view.js", "/api/maps?uid=x&index=0"):
        assert httpx.get(view.url + path, timeout=10).status_code == 401, path
        assert httpx.get(view.url + path, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    assert httpx.get(f"{view.url}/?token={view.token[:-1]}", timeout=10).status_code == 401
    # the URL printed once sets an HttpOnly cookie and sends the browser to the bare page
    first = httpx.get(f"{view.url}/?token={view.token}", timeout=10)
    assert first.status_code == 303 and first.headers["location"] == "/"
    assert "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    page = httpx.get(view.url + "/", cookies={"xfct_view_token": view.token}, timeout=10)
    assert page.status_code == 200 and "<canvas" in page.text
    # the token is printed once, in the URL to open; never logged with the requests (no access log)
    assert view.log.read_text().count(view.token) == 1


def test_bad_view_options_are_refused_before_anything_starts(tmp_path, capsys):
    from xfct_bluesky import cli

    for argv, message in ((["--host", "0.0.0.0"], "--allow-remote"), (["--port", "0"], "--port"),
                          (["--poll", "0"], "--poll"), (["--run", "abc"], "--run 'abc'"),
                          (["--api-key-file", str(tmp_path / "none")], "--api-key-file")):
        assert cli.main(["view", "--data-dir", str(tmp_path / "d"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_view_reads_the_derived_runs_the_live_callbacks_publish():
    from xfct_bluesky.callbacks import alignment, reconstruction
    from xfct_bluesky.view import reader

    assert reader.ALIGNMENT_PLAN == alignment.ALIGNMENT_PLAN  # one name (quantities), the view without the analysis
    assert reader.RECONSTRUCTION_PLAN == reconstruction.RECONSTRUCTION_PLAN
    values = np.array([[1.5, np.nan], [-2.0, 3.25]], np.float32)
    np.testing.assert_array_equal(reader.decode_array(reader.encode_array(values)), values)
    assert reader.encode_array(values)["min"] == -2.0 and reader.encode_array(values)["max"] == 3.25


class _Browser(threading.Thread):
    """Headless Chromium on the page, in a thread of its own (playwright's sync API stays in the thread that
    started it; the RunEngine runs on the test's main thread). Records the progress the page shows until
    ``uid`` is set, then waits for the page to show that run's maps, shifts and slice and screenshots them."""

    def __init__(self, url: str, chromium: str):
        super().__init__(name="view-browser", daemon=True)
        self.url, self.chromium = url, chromium
        self.ready, self.scan_done = threading.Event(), threading.Event()
        self.uid: str | None = None
        self.seen: list[tuple] = []
        self.result: dict = {}
        self.error: BaseException | None = None

    def run(self):
        try:
            with _playwright()() as p:
                browser = p.chromium.launch(executable_path=self.chromium, args=CHROMIUM_ARGS)
                try:
                    self._watch(browser)
                finally:
                    browser.close()
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            self.error = err
            self.ready.set()

    def _watch(self, browser):
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        page.goto(self.url)
        page.wait_for_function("() => window.xfctView && window.xfctView.polls > 0", timeout=30000)
        self.ready.set()
        progress = ("() => { const s = window.xfctView.state; return s && s.run ? [s.run.uid, "
                    "Number(document.getElementById('progress').dataset.done), s.run.status] : null; }")
        while not self.scan_done.is_set():
            self.seen.append(tuple(page.evaluate(progress) or ()))
            time.sleep(0.05)
        page.wait_for_function(
            """([uid, n]) => { const v = window.xfctView; return v.state && v.state.run && v.state.run.uid === uid
                 && v.mapsIndex === n - 1 && v.shifts && v.shifts.raw_uid === uid && v.slice !== null; }""",
            arg=[self.uid, N_ANGLES], timeout=60000)
        self.shots.mkdir(parents=True, exist_ok=True)
        shots = {}
        for name in ("map-dpc_x", "map-dpc_y", "map-element", "shifts", "slice"):
            shots[name] = page.locator(f"#{name}").screenshot(path=str(self.shots / f"{name}.png"))
        page.screenshot(path=str(self.shots / "page.png"), full_page=True)
        state = page.evaluate("() => { const v = window.xfctView; return {state: v.state, maps: v.maps, "
                              "boxes: ['map-dpc_x', 'map-dpc_y', 'map-element', 'shifts', 'slice'].map("
                              "id => document.getElementById(id).getBoundingClientRect().toJSON()), "
                              "shifts: v.shifts, axes: v.axes, slice: v.slice, colours: v.colours, "
                              "errors: v.errors, progress: document.getElementById('progress').textContent, "
                              "title: document.getElementById('maps-title').textContent, "
                              "shifts_note: document.getElementById('shifts-note').textContent}; }")
        self.result = {"shots": shots, **state}


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _grey(values: np.ndarray) -> np.ndarray:
    """The page's mapping: grey, linear from the finite minimum (0) to the maximum (255)."""
    v = np.asarray(values, np.float32).astype(float)
    lo, hi = np.nanmin(v), np.nanmax(v)
    return np.round(255 * (v - lo) / (hi - lo)) if hi > lo else np.full(v.shape, 128.0)


def _assert_shows(png: bytes, expected: np.ndarray, scale: int, what: str) -> None:
    """The screenshot of a canvas is ``expected``'s grey image, each value a ``scale`` x ``scale`` block."""
    img = _rgb(png)
    ny, nx = expected.shape
    assert img.shape[:2] == (ny * scale, nx * scale), (what, img.shape, expected.shape, scale)
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]), what  # grey
    centres = img[scale // 2::scale, scale // 2::scale, 0]
    grey = _grey(expected)
    assert np.abs(centres - grey).max() <= 1, (what, np.abs(centres - grey).max())  # Math.round vs np.round
    assert np.corrcoef(centres.ravel(), grey.ravel())[0, 1] > 0.999, what
    blocks = img[..., 0].reshape(ny, scale, nx, scale)
    assert (blocks == blocks[:, :1, :, :1]).all(), what  # whole blocks: nothing smoothed


def test_the_page_shows_a_scan_as_it_is_acquired(view, shared_tiled, tmp_path):
    from tiled.client import from_uri

    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import RunoutModel, small_cell
    from xfct_bluesky.plans import xfct_tomo
    from xfct_bluesky.session import Session
    from xfct_bluesky.storage import derived_runs, load_tomo

    chromium = require_program("chromium", CHROMIUM_FIX)
    _playwright()

    def microprobe(session):
        return make_sim_microprobe(shape=(16, 20), pixel_size=300e-9, seed=0, specimen=small_cell(5e-6),
                                   save_spectra=False, runout=RunoutModel(eccentricity=1e-6, wobble=5e-6,
                                                                          lever_arm=20e-3, seed=0))

    browser = _Browser(f"{view.url}/?token={view.token}", chromium)
    browser.shots = tmp_path / "shots"  # the screenshots the checks below decode, kept with the test's files
    browser.start()
    with Session(tmp_path / "session", client=from_uri(shared_tiled.server.uri), microprobe=microprobe,
                 persistent_md=False, journal=False) as s:
        # on a given server the Session stores each projection as it comes (batch_size=1): the page sees them
        s.RE.subscribe(lambda name, doc: time.sleep(PACE) if name == "event" else None)
        assert browser.ready.wait(60), "the page did not load"
        assert browser.error is None, browser.error
        (uid,) = s.RE(xfct_tomo(s.microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=N_ANGLES, dwell=3e-3,
                                md={"sample": "view cell"}))

        browser.uid = uid
        browser.scan_done.set()
        s.wait(120)
        browser.join(90)

        assert not browser.is_alive(), "the page never showed the run's maps, shifts and slice"
        assert browser.error is None, browser.error
        res = browser.result
        assert res["errors"] == [], res["errors"]

        # progress seen going up while the scan ran, then complete
        running = sorted({done for u, done, status in (t for t in browser.seen if t) if u == uid
                          and status == "running"})
        assert len(running) >= 2 and 0 < running[-2] < N_ANGLES, browser.seen  # seen part-done
        state = res["state"]
        assert state["progress"] == {"done": N_ANGLES, "planned": N_ANGLES}
        assert res["progress"] == f"{N_ANGLES} of {N_ANGLES} projections stored"
        start = s.catalog[uid].metadata["start"]
        assert state["run"]["sample"] == "view cell" and state["run"]["scan_id"] == start["scan_id"]
        assert state["dose"]["so_far"] == pytest.approx(start["dose_per_projection"] * N_ANGLES)

        # the latest projection's maps: the stored numbers, in the page's grey, block for block
        tomo = load_tomo(s.catalog[uid])
        index = N_ANGLES - 1
        assert res["maps"]["dpc_x"]["theta"] == pytest.approx(tomo.theta[index])
        assert f"theta = {tomo.theta[index]:g} deg" in res["title"]
        for name, canvas in (("dpc_x", "map-dpc_x"), ("dpc_y", "map-dpc_y"), ("Zn", "map-element")):
            stored = tomo.maps[name][index]
            assert np.ptp(stored) > 0, name  # a map with contrast, or the comparison proves little
            _assert_shows(res["shots"][canvas], stored, res["maps"][name]["scale"], f"{name} at {res['boxes']}")

        # the shifts: the page's values are the alignment run's; its markers are where the values say
        (alignment,) = derived_runs(s.derived, uid, "dpc_alignment")
        table = alignment["primary"].read()
        shifts = res["shifts"]
        for key in ("theta", "dx", "dy"):
            np.testing.assert_allclose(np.asarray(shifts[key], float), np.asarray(table[key], float))
        summary = alignment.metadata["start"]["alignment"]
        assert (shifts["applied"], shifts["reason"]) == (summary["applied"], summary["reason"])
        assert ("NOT applied" in res["shifts_note"]) == (not summary["applied"])  # zero shifts say so
        ax, img = res["axes"], _rgb(res["shots"]["shifts"])
        dx_rgb, dy_rgb = np.array(res["colours"]["dx"]), np.array(res["colours"]["dy"])

        def pixel(theta, value):
            x = ax["left"] + (theta - ax["x0"]) / (ax["x1"] - ax["x0"]) * ax["width"]
            y = ax["top"] + (ax["y1"] - value) / (ax["y1"] - ax["y0"]) * ax["height"]
            return round(x), round(y)

        dy_at = [pixel(t, v) for t, v in zip(shifts["theta"], shifts["dy"], strict=True)]
        for (x, y) in dy_at:  # drawn last: 7 x 7 squares
            assert np.abs(img[y, x] - dy_rgb).max() <= 8, (x, y, img[y, x])
        dx_seen = 0
        for t, v in zip(shifts["theta"], shifts["dx"], strict=True):
            x, y = pixel(t, v)
            if min(abs(x - a) + abs(y - b) for a, b in dy_at) > 8:  # not under a dy square
                assert np.abs(img[y, x] - dx_rgb).max() <= 8, (x, y, img[y, x])
                dx_seen += 1
        blue = np.abs(img - dx_rgb).max(axis=-1) <= 8
        assert blue.sum() >= 20 * dx_seen  # round markers (radius 3.5 px: ~38 px each), not specks
        orange = np.abs(img - dy_rgb).max(axis=-1) <= 8
        assert orange.sum() >= 40 * len(set(dy_at))  # 7 x 7 squares

        # the central slice of the reconstruction run
        (rec,) = derived_runs(s.derived, uid, "xfct_reconstruction")
        volume = np.asarray(rec["primary"]["Zn"].read())[0]
        assert res["slice"]["row"] == volume.shape[0] // 2
        _assert_shows(res["shots"]["slice"], volume[volume.shape[0] // 2], res["slice"]["scale"], "slice")
