"""Live DPC alignment of a tomography as its projections arrive.

:class:`LiveDPCAlignment` is an event-model ``DocumentRouter``. For every
``primary`` event of a run it registers the new DPC map against the
projections already received that are nearest in angle, and re-solves all
shifts jointly (the estimator of
:func:`~xfct_bluesky.analysis.align.align_projections`, built up
incrementally). The work runs in a worker thread: the RunEngine only queues
the map. At the stop document it publishes the result as a derived run
(``plan_name`` "dpc_alignment", ``raw_uid`` linking the raw run) through
``emit`` (e.g. a TiledWriter), with one event per projection: theta, dy, dx.

The live estimate is a preview. The callback also keeps each projection's
maps (the aligned field, DPC, transmission, I0, live time and the element
maps), and at the stop document aligns them once more with
:func:`~xfct_bluesky.analysis.align.align_projections` (``method``: "auto"
picks pairwise or projection matching from the data); those are the final
shifts, and the result's :meth:`~xfct_bluesky.analysis.align.Alignment.summary`
(method, channel, reason, consistency before and after, warnings) is stored
in the derived run's start document under ``"alignment"``.

The same callback replays a stored run: feed it ``run.documents()``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
from event_model import compose_run

from ..analysis.align import METHODS, AlignmentWarning, align_projections, alignment_consistency, fit_sinusoid
from ..analysis.channels import is_element_key
from ..analysis.pairwise import _solve
from ..analysis.registration import is_blank, register
from ..quantities import CHEMICAL_SYMBOLS, quantities_of
from ._base import SafeDocumentRouter, theta_key_of

logger = logging.getLogger(__name__)

#: Quantities (or, for a key without a quantity name, endings) of the 2D data keys kept for the final
#: alignment, besides the aligned field and the element maps.
MAP_ENDINGS = ("dpc_diag", "dpc_x", "dpc_y", "transmission", "i0", "live_time")
#: The kept maps stop growing beyond this (bytes): then only the aligned field is kept.
MAX_MAP_BYTES = 2 * 1024**3
def _plain(value):
    """``value`` as plain JSON types: numpy scalars and arrays unwrapped, tuples as lists, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


class _Estimator:
    """Incremental graph of pairwise registrations and its least-squares solution."""

    def __init__(self, upsample, neighbours, max_angle, key_roi=None):
        self.upsample = upsample
        self.neighbours = neighbours
        self.max_angle = max_angle
        self.roi = key_roi
        self.theta: list[float] = []
        self.images: list[np.ndarray] = []
        self.pairs: list[tuple[int, int]] = []
        self.measured: list[np.ndarray] = []
        self.weights: list[float] = []
        self.blank: list[bool] = []
        self.shifts = np.zeros((0, 2))

    def add(self, theta: float, image: np.ndarray) -> None:
        """Register a new projection against its nearest neighbours with signal and solve again.

        A projection without signal (constant: a closed shutter, a beam dump) is not registered: its
        shift is NaN, and the next ones are registered against the others.
        """
        k = len(self.theta)
        blank = is_blank(image, roi=self.roi)
        others = np.flatnonzero(~np.asarray(self.blank, bool))
        if others.size and not blank:
            th = np.asarray(self.theta)[others]
            dist = np.abs(th - theta)
            order = np.argsort(dist, kind="stable")
            near = order[: self.neighbours]
            near = near[dist[near] <= self.max_angle]
            if len(near) == 0:
                near = order[:1]
            refs = np.stack([self.images[others[i]] for i in near])
            res = register(refs, np.broadcast_to(image, refs.shape), upsample=self.upsample, roi=self.roi,
                           window="tukey")
            for i, s, ok in zip(near, np.atleast_2d(res.shift), np.atleast_1d(res.valid), strict=True):
                if not ok:  # no correlation peak: nothing measured
                    continue
                self.pairs.append((int(others[i]), k))
                self.measured.append(np.asarray(s, float))
                rank = 1 + np.count_nonzero(th[near] != th[i])
                self.weights.append(1.0 / max(dist[i], 1e-3) / rank)
        self.theta.append(float(theta))
        self.images.append(np.asarray(image, dtype=np.float32))
        self.blank.append(blank)
        if self.pairs:
            self.shifts = _solve(len(self.theta), np.asarray(self.pairs), np.asarray(self.measured),
                                 np.asarray(self.weights))
        else:  # nothing registered yet: the first projection with signal sits at zero
            self.shifts = np.where(np.asarray(self.blank)[:, None], np.nan, 0.0)


class LiveDPCAlignment(SafeDocumentRouter):
    """Align each projection of a tomography as it arrives, off the RunEngine's thread.

    Parameters
    ----------
    emit : callable(name, doc), optional
        Receives the derived run's documents, e.g. the session's TiledWriter,
        so the shifts are stored in Tiled beside the raw run.
    field : str
        Quantity to align on (``"dpc_diag"``, ``"dpc_x"``, ``"Zn"``: the run's
        ``quantities`` name its data key), or the ending of a data key.
    upsample : int
        Registration precision 1/upsample px.
    neighbours : int
        Registrations per new projection (nearest in angle).
    max_angle : float
        Largest angle difference (deg) registered.
    plot : bool
        Plot shifts against angle live (matplotlib).
    method : {"auto", "pairwise", "matching"}
        Method of the final alignment at the stop document
        (:func:`~xfct_bluesky.analysis.align.align_projections`).

    Attributes
    ----------
    shifts : (n, 2) array
        Current (dy, dx) of the projections received so far (acquisition order);
        NaN for a projection without signal (a closed shutter, a beam dump) or
        not yet tied to the others.
    theta : (n,) array
    results : dict
        Per raw-run uid: the final shifts, theta, the derived run's uid, the
        sinusoid of dx and ``summary`` (the final alignment's summary, or,
        when it failed, the live estimate's with the ``error``).
    """

    def __init__(self, emit: Callable | None = None, *, field: str = "dpc_diag", upsample: int = 20,
                 neighbours: int = 6, max_angle: float = 12.0, plot: bool = False, method: str = "auto"):
        if method not in METHODS:
            raise ValueError(f"LiveDPCAlignment: method={method!r}; allowed {', '.join(map(repr, METHODS))}")
        super().__init__()
        self.method = method
        self.emit = emit
        self.field = field
        self.upsample = upsample
        self.neighbours = neighbours
        self.max_angle = max_angle
        self.plot = plot
        self.results: dict[str, dict] = {}
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._est: _Estimator | None = None
        self._start: dict | None = None
        self._primary: set[str] = set()
        self._keys: tuple[str, str] | None = None  # data keys of theta and of the field
        self._map_keys: tuple[str, ...] = ()
        self._names: dict[str, str] = {}  # data key -> the name its map is kept under (its quantity name)
        self._maps: list[dict[str, np.ndarray]] = []  # per projection received: the maps of the final alignment
        self._map_bytes = 0
        self._field_only = False
        self._fig = None

    # -- properties for users ----------------------------------------------------
    @property
    def shifts(self) -> np.ndarray:
        return np.array(self._est.shifts) if self._est is not None else np.zeros((0, 2))

    @property
    def theta(self) -> np.ndarray:
        return np.array(self._est.theta) if self._est is not None else np.zeros(0)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every queued projection is processed (for scripts and tests)."""
        if self._worker is not None:
            self._worker.join(timeout)

    # -- documents -----------------------------------------------------------------
    def start(self, doc):
        self.wait()
        self._start = doc
        self._primary.clear()
        self._keys = None
        self._map_keys = ()
        self._names = {}
        self._maps = []
        self._map_bytes = 0
        self._field_only = False
        self._est = _Estimator(self.upsample, self.neighbours, self.max_angle)
        self._queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="live-dpc-alignment", daemon=True)
        self._worker.start()

    def descriptor(self, doc):
        if doc.get("name") != "primary":
            return
        self._primary.add(doc["uid"])
        keys = doc["data_keys"]
        maps = [k for k, v in keys.items() if len(v.get("shape") or []) == 2]
        named = quantities_of(keys, self._start)
        self._names = {key: key for key in maps}
        for name, key in reversed(named.items()):  # a map is kept under its (first) quantity name
            if key in self._names:
                self._names[key] = name
        image = [named[self.field]] if named.get(self.field) in maps else [k for k in maps if k.endswith(self.field)]
        theta_key = theta_key_of(self._start, keys)
        if image and theta_key:
            self._keys = (theta_key, image[0])
            self._map_keys = tuple(k for k in maps if k != image[0] and (
                self._names[k] in MAP_ENDINGS or self._names[k] in CHEMICAL_SYMBOLS
                or k.endswith(MAP_ENDINGS) or is_element_key(k)))
        else:
            logger.warning("LiveDPCAlignment: no %r map or rotation key in stream 'primary'", self.field)

    def event(self, doc):
        if doc["descriptor"] in self._primary and self._keys is not None:
            theta_key, image_key = self._keys
            data = doc["data"]
            image = np.asarray(data[image_key])
            maps = {self._names[image_key]: image}
            maps.update((self._names[k], np.asarray(data[k])) for k in self._map_keys if k in data)
            self._queue.put((float(data[theta_key]), image, maps))

    def event_page(self, doc):
        for ev in _unpack(doc):
            self.event(ev)

    def stop(self, doc):
        self._queue.put(None)
        self.wait()
        if self._start is None or self._est is None or len(self._est.theta) < 2:
            return  # a single map (or none) has nothing to align
        raw_uid = self._start["uid"]
        theta = self.theta
        shifts, summary = self._final(theta)
        derived = self._publish(raw_uid, theta, shifts, summary) if self.emit is not None else None
        self.results[raw_uid] = {"theta": theta, "shifts": shifts, "derived_uid": derived,
                                 "sinusoid": fit_sinusoid(theta, shifts[:, 1]) if len(theta) > 2 else None,
                                 "summary": summary}

    def _final(self, theta) -> tuple[np.ndarray, dict]:
        """(final shifts, JSON-ready summary): align_projections on the kept maps, else the live estimate."""
        image_key = self._names[self._keys[1]] if self._keys else self.field
        names = [k for k in self._maps[0] if all(k in m for m in self._maps)] if self._maps else []
        try:
            if len(self._maps) != len(theta) or image_key not in names:
                raise RuntimeError(f"{len(self._maps)} projections' maps kept for {len(theta)} angles")
            maps = {k: np.stack([m[k] for m in self._maps]) for k in names}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                al = align_projections(maps, theta, method=self.method)
                shifts, summary = np.array(al.shifts, float), al.summary()
                same_left_out = np.array_equal(np.isnan(self.shifts[:, 0]), np.isnan(al.shifts[:, 0]))
                if al.applied and al.method == "pairwise" and al.channel == image_key and same_left_out:
                    # the same method as the live estimate, which weighs neighbours by their angular
                    # distance: keep whichever of the two leaves the stack more consistent
                    live = alignment_consistency(maps, theta, self.shifts)
                    if live.get("after") is not None and live["after"] <= (al.consistency.get("after") or np.inf):
                        shifts = self.shifts
                        summary["consistency"] = live
                        summary["reason"] += "; the live incremental estimate kept (more consistent)"
            summary = _plain(summary)
            c = summary["consistency"]
            logger.info("LiveDPCAlignment: run %s aligned by %s on %s (%s), reprojection error %s -> %s",
                        self._start["uid"][:8], al.method, al.channel, "applied" if al.applied else "NOT applied",
                        c.get("before"), c.get("after"))
            others = [str(w.message) for w in caught if not issubclass(w.category, AlignmentWarning)]
            for text in [*al.warnings, *others]:
                logger.warning("LiveDPCAlignment: %s", text)
            return shifts, summary
        except Exception as exc:
            logger.exception("LiveDPCAlignment: the final alignment failed; keeping the live pairwise estimate")
            error = f"{type(exc).__name__}: {exc}"
            return self.shifts, {"method": "pairwise", "channel": image_key, "applied": True,
                                 "reason": f"live incremental pairwise estimate: the final alignment failed ({error})",
                                 "consistency": {}, "warnings": [], "survey": {}, "error": error}

    # -- worker --------------------------------------------------------------------
    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                theta, image, maps = item
                self._est.add(theta, image)
                self._keep(maps)
                if self.plot:
                    self._update_plot()
            except Exception as exc:
                logger.exception("LiveDPCAlignment: could not align a projection")
                self.errors.append(exc)

    def _keep(self, maps: dict[str, np.ndarray]) -> None:
        """Keep one projection's maps for the final alignment: all of them while under MAX_MAP_BYTES, else the field."""
        image_key = self._names[self._keys[1]]
        if not self._field_only and self._map_bytes + sum(m.nbytes for m in maps.values()) > MAX_MAP_BYTES:
            logger.warning("LiveDPCAlignment: the maps kept would exceed %.1f GB: the final alignment uses %s only",
                           MAX_MAP_BYTES / 1024**3, image_key)
            self._field_only = True
            self._maps = [{image_key: m[image_key]} for m in self._maps]
            self._map_bytes = sum(m[image_key].nbytes for m in self._maps)
        if self._field_only:
            maps = {image_key: maps[image_key]}
        self._maps.append(maps)
        self._map_bytes += sum(m.nbytes for m in maps.values())

    def _update_plot(self):
        import matplotlib.pyplot as plt

        if self._fig is None:
            self._fig, self._ax = plt.subplots(num="DPC alignment")
        ax = self._ax
        ax.clear()
        th, s = self.theta, self.shifts
        ax.plot(th, s[:, 1], "o", ms=3, label="dx")
        ax.plot(th, s[:, 0], "s", ms=3, label="dy")
        ax.set_xlabel("theta (deg)")
        ax.set_ylabel("shift (px)")
        ax.legend()
        self._fig.canvas.draw_idle()

    def _publish(self, raw_uid, theta, shifts, summary) -> str:
        bundle = compose_run(metadata={
            "plan_name": "dpc_alignment", "raw_uid": raw_uid, "field": self.field, "quantities": {"theta": "theta"},
            "sample": self._start.get("sample"), "upsample": self.upsample, "alignment": summary,
            "purpose": "DPC alignment shifts of a tomography (shift moves each projection onto the axis)",
        })
        self.emit("start", bundle.start_doc)
        desc = bundle.compose_descriptor(name="primary", data_keys={
            "theta": {"dtype": "number", "shape": [], "source": "derived", "units": "deg"},
            "dy": {"dtype": "number", "shape": [], "source": "derived", "units": "px"},
            "dx": {"dtype": "number", "shape": [], "source": "derived", "units": "px"},
        })
        self.emit("descriptor", desc.descriptor_doc)
        now = time.time()
        for t, (dy, dx) in zip(theta, shifts, strict=True):
            ev = desc.compose_event(data={"theta": float(t), "dy": float(dy), "dx": float(dx)},
                                    timestamps={"theta": now, "dy": now, "dx": now})
            self.emit("event", ev)
        self.emit("stop", bundle.compose_stop())
        return bundle.start_doc["uid"]


def _unpack(page):
    from event_model import unpack_event_page

    return unpack_event_page(page)
