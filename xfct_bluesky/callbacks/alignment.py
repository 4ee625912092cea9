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

The same callback replays a stored run: feed it ``run.documents()``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np
from event_model import compose_run

from ..analysis.align import _solve, fit_sinusoid
from ..analysis.registration import register
from ._base import SafeDocumentRouter, theta_key_of

logger = logging.getLogger(__name__)


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
        self.shifts = np.zeros((0, 2))

    def add(self, theta: float, image: np.ndarray) -> None:
        k = len(self.theta)
        if self.theta:
            th = np.asarray(self.theta)
            dist = np.abs(th - theta)
            near = np.argsort(dist, kind="stable")[: self.neighbours]
            near = near[dist[near] <= self.max_angle]
            if len(near) == 0:
                near = np.argsort(dist, kind="stable")[:1]
            refs = np.stack([self.images[i] for i in near])
            res = register(refs, np.broadcast_to(image, refs.shape), upsample=self.upsample, roi=self.roi,
                           window="tukey")
            for i, s in zip(near, np.atleast_2d(res.shift), strict=True):
                self.pairs.append((int(i), k))
                self.measured.append(np.asarray(s, float))
                rank = 1 + np.count_nonzero(np.asarray(self.theta)[near] != self.theta[i])
                self.weights.append(1.0 / max(dist[i], 1e-3) / rank)
        self.theta.append(float(theta))
        self.images.append(np.asarray(image, dtype=np.float32))
        if self.pairs:
            self.shifts = _solve(len(self.theta), np.asarray(self.pairs), np.asarray(self.measured),
                                 np.asarray(self.weights))
        else:
            self.shifts = np.zeros((1, 2))


class LiveDPCAlignment(SafeDocumentRouter):
    """Align each projection of a tomography as it arrives, off the RunEngine's thread.

    Parameters
    ----------
    emit : callable(name, doc), optional
        Receives the derived run's documents, e.g. the session's TiledWriter,
        so the shifts are stored in Tiled beside the raw run.
    field : str
        Suffix of the data key to align on (``"dpc_diag"``, ``"dpc_x"``, ``"Zn"``).
    upsample : int
        Registration precision 1/upsample px.
    neighbours : int
        Registrations per new projection (nearest in angle).
    max_angle : float
        Largest angle difference (deg) registered.
    plot : bool
        Plot shifts against angle live (matplotlib).

    Attributes
    ----------
    shifts : (n, 2) array
        Current (dy, dx) of the projections received so far (acquisition order).
    theta : (n,) array
    results : dict
        Per raw-run uid: the final shifts, theta and the derived run's uid.
    """

    def __init__(self, emit: Callable | None = None, *, field: str = "dpc_diag", upsample: int = 20,
                 neighbours: int = 6, max_angle: float = 12.0, plot: bool = False):
        super().__init__()
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
        self._keys: tuple[str, str] | None = None
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
        self._est = _Estimator(self.upsample, self.neighbours, self.max_angle)
        self._queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="live-dpc-alignment", daemon=True)
        self._worker.start()

    def descriptor(self, doc):
        if doc.get("name") != "primary":
            return
        self._primary.add(doc["uid"])
        keys = doc["data_keys"]
        image = [k for k, v in keys.items() if k.endswith(self.field) and len(v.get("shape") or []) == 2]
        theta_key = theta_key_of(self._start, keys)
        if image and theta_key:
            self._keys = (theta_key, image[0])
        else:
            logger.warning("LiveDPCAlignment: no %r map or rotation key in stream 'primary'", self.field)

    def event(self, doc):
        if doc["descriptor"] in self._primary and self._keys is not None:
            theta_key, image_key = self._keys
            self._queue.put((float(doc["data"][theta_key]), np.asarray(doc["data"][image_key])))

    def event_page(self, doc):
        for ev in _unpack(doc):
            self.event(ev)

    def stop(self, doc):
        self._queue.put(None)
        self.wait()
        if self._start is None or self._est is None or len(self._est.theta) < 2:
            return  # a single map (or none) has nothing to align
        raw_uid = self._start["uid"]
        theta, shifts = self.theta, self.shifts
        derived = self._publish(raw_uid, theta, shifts) if self.emit is not None else None
        self.results[raw_uid] = {"theta": theta, "shifts": shifts, "derived_uid": derived,
                                 "sinusoid": fit_sinusoid(theta, shifts[:, 1]) if len(theta) > 2 else None}

    # -- worker --------------------------------------------------------------------
    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._est.add(*item)
                if self.plot:
                    self._update_plot()
            except Exception as exc:
                logger.exception("LiveDPCAlignment: could not align a projection")
                self.errors.append(exc)

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

    def _publish(self, raw_uid, theta, shifts) -> str:
        bundle = compose_run(metadata={
            "plan_name": "dpc_alignment", "raw_uid": raw_uid, "field": self.field,
            "sample": self._start.get("sample"), "upsample": self.upsample,
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
