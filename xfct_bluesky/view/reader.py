"""What the live view shows, read from Tiled with the Python client: plain numbers for the page.

:class:`LiveReader` answers the page's four questions about one run (the
latest scan of the catalog, or a chosen one): :meth:`~LiveReader.state`
(what it is, how far it has got, the dose so far, whether its derived runs
exist yet), :meth:`~LiveReader.maps` (one projection's DPC and element
maps), :meth:`~LiveReader.shifts` (the live alignment's shifts against
angle) and :meth:`~LiveReader.slice` (the live reconstruction's central
slice). Maps travel as base64 of little-endian float32 with their shape, so
the page and a test decode the very numbers Tiled holds.

Every Tiled call goes through one lock (the client is shared by the web
server's threads) and is tried again after an HTTP 5xx: tiled 0.2.20 may
answer a table read that meets another process's append with HTTP 500.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..quantities import ALIGNMENT_PLAN, RECONSTRUCTION_PLAN, quantities_of
from ..quantities import theta_key as resolve_theta_key
from ..storage import derived_runs
from ..storage._fetch import stream_parts

logger = logging.getLogger(__name__)

#: The maps of the latest projection the page shows: the DPC pair and an element.
DPC_MAPS = ("dpc_x", "dpc_y")
#: Tries of a Tiled read that answers HTTP 5xx, and the pause between them (s).
TRIES = 4
PAUSE = 0.25


def encode_array(array: np.ndarray) -> dict:
    """``{"shape", "data" (base64 of little-endian float32), "min", "max"}``; min/max of the finite values
    (None if there are none)."""
    values = np.ascontiguousarray(array, dtype="<f4")
    finite = values[np.isfinite(values)]
    return {"shape": list(values.shape), "dtype": "float32", "data": base64.b64encode(values.tobytes()).decode(),
            "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None}


def decode_array(encoded: dict) -> np.ndarray:
    """The array :func:`encode_array` encoded."""
    return np.frombuffer(base64.b64decode(encoded["data"]), dtype="<f4").reshape(encoded["shape"])


def _number(value: Any) -> float | None:
    """A float for JSON: None for NaN, inf or a missing value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def planned_projections(start: dict) -> int | None:
    """The projections a run's start document plans (``n_angles``, ``num_points`` or its ``angles``)."""
    planned = start.get("n_angles") or start.get("num_points") or len(start.get("angles") or []) or None
    return int(planned) if planned else None


def _retrying(call: Callable[[], Any]) -> Any:
    """``call()``, tried again after an HTTP 5xx answer (up to :data:`TRIES` times)."""
    import httpx

    for attempt in range(TRIES):
        try:
            return call()
        except httpx.HTTPStatusError as err:
            if err.response.status_code < 500 or attempt == TRIES - 1:
                raise
            logger.info("live view: Tiled answered %s; trying again", err.response.status_code)
            time.sleep(PAUSE)
    raise AssertionError("unreachable")


def _table(parts: dict, column: str | None) -> Any:
    """The table among a stream's parts (:func:`~xfct_bluesky.storage._fetch.stream_parts`) with ``column``."""
    return next((p for p in parts.values() if column and column in (getattr(p, "columns", None) or ())), None)


class RunNotFound(LookupError):
    """The run asked for is not in the catalog (the message says which, and how to list them)."""


class LiveReader:
    """The live view's reads of one run and its derived runs.

    Parameters
    ----------
    catalog : CatalogOfBlueskyRuns
        The scans (a session's ``catalog``).
    derived : callable
        Returns the derived runs' container, or None while the catalog has
        none (it is looked up again at every call).
    run : str
        ``"latest"`` (default: the newest scan, following each new one as it
        starts) or a uid, a unique uid prefix (5 characters or more) or a scan id.
    element : str
        The element map and volume shown (default ``"Zn"``).
    """

    def __init__(self, catalog: Any, derived: Callable[[], Any], *, run: str = "latest", element: str = "Zn"):
        self.catalog = catalog
        self.derived = derived
        self.run = run
        self.element = element
        self.lock = threading.Lock()
        self._parts: tuple | None = None  # (uid, stream parts, names, theta, data keys) of the last poll
        self._stopped: dict[str, dict] = {}  # uid -> state of a stopped run, but its derived runs
        self._final: dict[str, dict] = {}  # uid -> state of a stopped run whose derived runs are complete

    # ------------------------------------------------------------------ runs
    def _run(self, uid: str | None = None) -> Any:
        cat = self.catalog
        if uid is not None:
            return cat[uid]
        if self.run == "latest":
            return cat[-1] if len(cat) else None
        key: Any = int(self.run) if self.run.isdigit() else self.run
        try:
            return cat[key]
        except (KeyError, ValueError) as err:
            raise RunNotFound(f"no run {self.run!r} in the catalog ({err}); `xfct-bluesky ls` lists them") from None

    def _derived(self, uid: str, plan: str) -> Any:
        container = self.derived()
        found = derived_runs(container, uid, plan) if container is not None else []
        return found[-1] if found else None

    def _primary(self, run: Any, start: dict) -> tuple[dict, dict, str | None, dict]:
        """(parts of the primary stream, {quantity: data key}, theta's data key, data keys); empty before
        the stream exists."""
        try:
            stream = run["primary"]
        except KeyError:  # no event yet
            return {}, {}, None, {}
        data_keys = stream.metadata.get("data_keys") or {}
        try:
            theta = resolve_theta_key(data_keys, start)
        except KeyError:
            theta = None
        return stream_parts(stream), quantities_of(data_keys, start), theta, data_keys

    # ------------------------------------------------------------- answers
    def state(self) -> dict:
        """The run shown: what it is, its progress and dose so far, which derived runs exist.

        ``progress.done`` counts the projections stored in Tiled (the stop
        document's count once it has one); ``shown`` is the index of the
        latest projection whose maps are all stored (None before the first).
        """
        with self.lock:
            return _retrying(self._state)

    def _state(self) -> dict:
        run = self._run()
        if run is None:
            return {"run": None, "message": "no runs in the catalog yet: waiting for the first scan"}
        start = run.metadata["start"]
        stop = run.metadata.get("stop") or None
        uid = start["uid"]
        final = self._final.get(uid)
        if final is not None:  # stopped, and its derived runs complete: nothing will change
            return final
        if stop is not None and uid in self._stopped:  # stopped: only the derived runs may still come
            state = dict(self._stopped[uid])
        else:
            state = self._progress(run, start, stop)
            if stop is not None:
                self._stopped[uid] = state
        if stop is not None:  # the live alignment and reconstruction publish theirs after the stop
            for name, plan in (("alignment", ALIGNMENT_PLAN), ("reconstruction", RECONSTRUCTION_PLAN)):
                derived = self._derived(uid, plan)
                state[name] = None if derived is None else {
                    "uid": derived.metadata["start"]["uid"],
                    "method": (derived.metadata["start"].get("alignment") or {}).get("method"),
                    "algorithm": derived.metadata["start"].get("algorithm"),
                    "complete": bool(derived.metadata.get("stop"))}
            if all((state.get(name) or {}).get("complete") for name in ("alignment", "reconstruction")):
                self._final[uid] = state
        return state

    def _progress(self, run: Any, start: dict, stop: dict | None) -> dict:
        """The run's description, progress, dose and latest projection (no derived runs)."""
        uid = start["uid"]
        parts, names, theta_key, data_keys = self._primary(run, start)
        theta = np.zeros(0)
        table = _table(parts, theta_key)
        if table is not None:
            theta = np.asarray(table.read([theta_key])[theta_key], float)
        map_keys = {name: names[name] for name in (*DPC_MAPS, self.element) if name in names}
        rows = [parts[key].shape[0] for key in map_keys.values() if key in parts]
        stored = min([theta.size, *rows]) if rows else 0
        self._parts = (uid, parts, names, theta, data_keys)  # for maps(): fresh as of this poll
        done = theta.size
        if stop is not None:
            done = int((stop.get("num_events") or {}).get("primary", done))
        planned = planned_projections(start)
        per = start.get("dose_per_projection")
        per = float(per) if isinstance(per, int | float) else None
        return {
            "run": {"uid": uid, "scan_id": start.get("scan_id"), "plan_name": start.get("plan_name"),
                    "sample": start.get("sample"), "time": start.get("time"),
                    "status": (stop or {}).get("exit_status", "running"),
                    "shape": start.get("shape"), "pixel_size": start.get("pixel_size"), "dwell": start.get("dwell")},
            "progress": {"done": done, "planned": planned},
            "dose": {"per_projection": per, "so_far": None if per is None else per * done,
                     "planned": _number(start.get("total_dose")), "units": "Gy"},
            "shown": None if stored == 0 else {"index": stored - 1, "theta": _number(theta[stored - 1])},
            "maps": {name: {"key": key, "units": (data_keys.get(key) or {}).get("units")}
                     for name, key in map_keys.items()},
            "alignment": None, "reconstruction": None,
        }

    def maps(self, uid: str, index: int) -> dict:
        """Projection ``index`` of run ``uid``: its angle and its DPC and element maps (encoded)."""
        with self.lock:
            return _retrying(lambda: self._maps(uid, index))

    def _maps(self, uid: str, index: int) -> dict:
        cached = self._parts
        if cached is None or cached[0] != uid or index >= cached[3].size:  # not the run of the last poll
            run = self._run(uid)
            self._progress(run, run.metadata["start"], None)
            cached = self._parts
        _, parts, names, theta, data_keys = cached
        if not 0 <= index < theta.size:
            raise IndexError(f"projection {index}: run {uid[:8]} has {theta.size} stored (0..{theta.size - 1})")
        out = {}
        for name in (*DPC_MAPS, self.element):
            key = names.get(name)
            if key in parts and index < parts[key].shape[0]:
                out[name] = {**encode_array(np.asarray(parts[key][index])), "key": key,
                             "units": (data_keys.get(key) or {}).get("units")}
        return {"uid": uid, "index": index, "theta": _number(theta[index]), "maps": out}

    def shifts(self, uid: str) -> dict:
        """The live alignment's shifts of run ``uid``: theta (deg), dy and dx (px; None for a projection left
        out), the method, whether it was applied and why (its summary); ``{"uid": None}`` before the
        alignment run exists."""
        with self.lock:
            return _retrying(lambda: self._shifts(uid))

    def _shifts(self, uid: str) -> dict:
        run = self._derived(uid, ALIGNMENT_PLAN)
        if run is None or "primary" not in run:
            return {"uid": None, "raw_uid": uid}
        table = _table(stream_parts(run["primary"]), "theta").read(["theta", "dy", "dx"])
        start = run.metadata["start"]
        summary = start.get("alignment") or {}
        return {"uid": start["uid"], "raw_uid": uid, "method": summary.get("method"),
                "applied": summary.get("applied"), "reason": summary.get("reason"),
                **{k: [_number(v) for v in np.asarray(table[k], float)] for k in ("theta", "dy", "dx")}}

    def slice(self, uid: str) -> dict:
        """The live reconstruction's central slice of run ``uid`` (the element's volume, else the first),
        encoded; ``{"uid": None}`` before the reconstruction run exists."""
        with self.lock:
            return _retrying(lambda: self._slice(uid))

    def _slice(self, uid: str) -> dict:
        run = self._derived(uid, RECONSTRUCTION_PLAN)
        if run is None or "primary" not in run:
            return {"uid": None, "raw_uid": uid}
        start = run.metadata["start"]
        volumes = [v for v in start.get("volumes") or [] if v != "phase"] or list(start.get("volumes") or [])
        name = self.element if self.element in volumes else volumes[0]
        node = run["primary"][name]  # (1 event, rows, n, n)
        rows = node.shape[1]
        row = rows // 2
        image = np.asarray(node[0, row])
        units = (run["primary"].metadata.get("data_keys") or {}).get(name, {}).get("units")
        return {"uid": start["uid"], "raw_uid": uid, "volume": name, "row": row, "rows": rows,
                "algorithm": start.get("algorithm"), "units": units, "image": encode_array(image)}
