"""Live DPC alignment of a tomography as its projections arrive.

:class:`LiveDPCAlignment` is a live callback (:class:`~._base.LiveCallback`):
the RunEngine's thread only copies and queues each document; on the live
worker's thread a ``RunRouter`` gives every run its own state. For every
``primary`` event of a tomography it registers the new DPC map against the
projections already received that are nearest in angle, and re-solves all
shifts jointly (the estimator of
:func:`~xfct_bluesky.analysis.align.align_projections`, built up
incrementally). Runs that are not tomographies (:func:`~._base.is_tomography`:
a single map, a dwell pair series) are skipped, with a log line.

The live estimate is a preview. The callback also keeps each projection's
maps (the aligned field, DPC, transmission, I0, live time and the element
maps), and at the stop document aligns them once more with
:func:`~xfct_bluesky.analysis.align.align_projections` (``method``: "auto"
picks pairwise or projection matching from the data); those are the final
shifts, and the result's :meth:`~xfct_bluesky.analysis.align.Alignment.summary`
(method, channel, reason, consistency before and after, warnings) is stored
in the derived run's start document under ``"alignment"``. Where a
:class:`~.fit.LiveSpectrumFit` run of the same raw run arrives (it lists this
callback in its ``emit``), its fitted element maps (``"Zn"``...) replace the
run's ROI-window maps in that final alignment (the live estimate uses the
raw run's maps), and the summary's ``element_maps`` says which each was
(:func:`~xfct_bluesky.analysis.fitting.maps.prefer_fitted`); the final
alignment waits (on the worker, :meth:`~._worker.LiveWorker.after_run`) until
every callback in the run has processed its stop, so the fit is in whatever
the order of subscription. The derived run
(``plan_name`` "dpc_alignment", ``raw_uid`` linking the raw run, one event per
projection: theta, dy, dx) goes whole to each of ``emit``: the session's
:class:`~._emit.SerialEmitter` into Tiled and, to have the reconstruction use
these shifts, the :class:`~.reconstruction.LiveReconstruction`.

The same callback replays a stored run: feed it ``run.documents()``, then
:meth:`~._base.LiveCallback.wait`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from event_model import compose_run

from .._warnings import collected
from ..analysis.align import (
    METHODS,
    AlignmentWarning,
    align_projections,
    alignment_consistency,
    fit_sinusoid,
)
from ..analysis.channels import is_element_key
from ..analysis.fitting.maps import prefer_fitted
from ..analysis.pairwise import solve_shifts
from ..analysis.registration import is_blank, register
from ..quantities import ALIGNMENT_PLAN, CHEMICAL_SYMBOLS, quantities_of
from ._base import LiveCallback, RunState, is_tomography, theta_key_of
from ._emit import send_run, sinks_of
from ._plotting import FigureQueue, live_figures
from ._worker import LiveWorker
from .fit import FIT_PLAN, FitInbox, FittedMapsReader

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

    def add(self, image: np.ndarray, theta: float) -> None:
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
            self.shifts = solve_shifts(len(self.theta), np.asarray(self.pairs), np.asarray(self.measured),
                                 np.asarray(self.weights))
        else:  # nothing registered yet: the first projection with signal sits at zero
            self.shifts = np.where(np.asarray(self.blank)[:, None], np.nan, 0.0)


class LiveDPCAlignment(LiveCallback):
    """Align each projection of a tomography as it arrives, off the RunEngine's thread.

    Parameters
    ----------
    emit : callable(name, doc) or sequence of them, optional
        Each receives every derived run whole, from the worker's thread: the
        session's :class:`~._emit.SerialEmitter` (so the shifts are stored in
        Tiled beside the raw run; never a bare TiledWriter the RunEngine also
        feeds), a :class:`~.reconstruction.LiveReconstruction` (so it uses
        these shifts), a list collecting documents.
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
        Plot shifts against angle live, on the main thread through ``figures``
        (no plots with a non-interactive matplotlib backend).
    method : {"auto", "pairwise", "matching"}
        Method of the final alignment at the stop document
        (:func:`~xfct_bluesky.analysis.align.align_projections`).
    worker : LiveWorker, optional
        Default: the one the live callbacks share (give a reconstruction fed
        by this callback the same one).
    figures : FigureQueue, optional
        Default: the shared one (:func:`~._plotting.live_figures`).

    Attributes
    ----------
    shifts : (n, 2) array
        The live (dy, dx) of the projections of the latest run received so far
        (acquisition order); NaN for a projection without signal (a closed
        shutter, a beam dump) or not yet tied to the others.
    theta : (n,) array
    results : dict
        Per raw-run uid: the final shifts, theta, the derived run's uid, the
        sinusoid of dx and ``summary`` (the final alignment's summary, with
        ``element_maps``: {element: "fitted spectra" or "ROI window"}, or,
        when it failed, the live estimate's with the ``error``).
    errors : list
        Exceptions caught (logged, never raised into the RunEngine).
    """

    def __init__(self, emit: Callable | Sequence[Callable] | None = None, *, field: str = "dpc_diag",
                 upsample: int = 20, neighbours: int = 6, max_angle: float = 12.0, plot: bool = False,
                 method: str = "auto", worker: LiveWorker | None = None, figures: FigureQueue | None = None):
        if method not in METHODS:
            raise ValueError(f"LiveDPCAlignment: method={method!r}; allowed {', '.join(map(repr, METHODS))}")
        super().__init__(worker=worker)
        self.method = method
        self.sinks = sinks_of(emit, "LiveDPCAlignment")
        self.field = field
        self.upsample = upsample
        self.neighbours = neighbours
        self.max_angle = max_angle
        self.figures = figures if figures is not None else live_figures()
        self.plot = bool(plot) and self.figures.enabled
        if plot and not self.plot:
            logger.info("LiveDPCAlignment: plot=True, but matplotlib's backend is not interactive: no plot")
        self._drawer = _ShiftsPlot()
        self.last_run: _AlignmentRun | None = None
        self.fits = FitInbox()  # raw uid -> the maps of its live_spectrum_fit run (worker thread only)

    # -- properties for users ----------------------------------------------------
    @property
    def shifts(self) -> np.ndarray:
        run = self.last_run
        return np.array(run.est.shifts) if run is not None else np.zeros((0, 2))

    @property
    def theta(self) -> np.ndarray:
        run = self.last_run
        return np.array(run.est.theta) if run is not None else np.zeros(0)

    def _factory(self, name, start):
        if start.get("plan_name") == FIT_PLAN and start.get("raw_uid"):  # fitted maps for a run's final alignment
            return [FittedMapsReader(self, start)], []
        if start.get("raw_uid"):  # a derived run (ours, a reconstruction's): nothing to align
            return [], []
        if not is_tomography(start):
            logger.info("LiveDPCAlignment: run %s (%s) is not a tomography (its start document has no "
                        "n_angles or angles >= 2): not aligned", start["uid"][:8], start.get("plan_name", "?"))
            return [], []
        self.last_run = run = _AlignmentRun(self, start)
        return [run], []


class _AlignmentRun(RunState):
    """One tomography's live alignment (worker thread only)."""

    failure = "could not align a projection of"

    def __init__(self, owner: LiveDPCAlignment, start: dict):
        super().__init__(owner, start)
        self.est = _Estimator(owner.upsample, owner.neighbours, owner.max_angle)
        self.keys: tuple[str, str] | None = None  # data keys of theta and of the field
        self.map_keys: tuple[str, ...] = ()
        self.names: dict[str, str] = {}  # data key -> the name its map is kept under (its quantity name)
        self.maps: list[dict[str, np.ndarray]] = []  # per projection received: the maps of the final alignment
        self.map_bytes = 0
        self.field_only = False

    def stream_descriptor(self, doc):
        field = self.owner.field
        keys = doc["data_keys"]
        maps = [k for k, v in keys.items() if len(v.get("shape") or []) == 2]
        named = quantities_of(keys, self.start_doc)
        self.names = {key: key for key in maps}
        for name, key in reversed(named.items()):  # a map is kept under its (first) quantity name
            if key in self.names:
                self.names[key] = name
        image = [named[field]] if named.get(field) in maps else [k for k in maps if k.endswith(field)]
        theta_key = theta_key_of(self.start_doc, keys)
        if image and theta_key:
            self.keys = (theta_key, image[0])
            self.map_keys = tuple(k for k in maps if k != image[0] and (
                self.names[k] in MAP_ENDINGS or self.names[k] in CHEMICAL_SYMBOLS
                or k.endswith(MAP_ENDINGS) or is_element_key(k)))
        else:
            logger.warning("LiveDPCAlignment: no %r map or rotation key in stream 'primary'", field)

    def stream_event(self, doc):
        if self.keys is None:
            return
        theta_key, image_key = self.keys
        data = doc["data"]
        image = np.asarray(data[image_key])
        maps = {self.names[image_key]: image}
        maps.update((self.names[k], np.asarray(data[k])) for k in self.map_keys if k in data)
        self.est.add(image, float(data[theta_key]))
        self._keep(maps)
        if self.owner.plot:
            self.owner.figures.put("DPC alignment", self.owner._drawer.update(
                np.array(self.est.theta), np.array(self.est.shifts), self.uid))

    def stop(self, doc):
        if len(self.est.theta) < 2:
            return  # a single map (or none) has nothing to align
        # after every callback in this run has processed its stop: a live spectrum fit's maps are in by then
        self.owner.worker.after_run(self.uid, self._finish_safely)

    def _finish_safely(self):
        try:
            self._finish()
        except Exception as exc:
            self.owner._failed(exc, f"could not align run {self.uid[:8]}")

    def _finish(self):
        owner = self.owner
        theta = np.array(self.est.theta)
        shifts, summary = self._final(theta)
        docs = self._derived(theta, shifts, summary) if owner.sinks else []
        owner.results[self.uid] = {"theta": theta, "shifts": shifts, "derived_uid": docs[0][1]["uid"] if docs else None,
                                   "sinusoid": fit_sinusoid(shifts[:, 1], theta) if len(theta) > 2 else None,
                                   "summary": summary}
        if docs:
            send_run(owner.sinks, docs, owner._failed)

    def _final(self, theta) -> tuple[np.ndarray, dict]:
        """(final shifts, JSON-ready summary): align_projections on the kept maps, else the live estimate."""
        live_shifts = np.array(self.est.shifts)
        image_key = self.names[self.keys[1]] if self.keys else self.owner.field
        names = [k for k in self.maps[0] if all(k in m for m in self.maps)] if self.maps else []
        try:
            if len(self.maps) != len(theta) or image_key not in names:
                raise RuntimeError(f"{len(self.maps)} projections' maps kept for {len(theta)} angles")
            maps = {k: np.stack([m[k] for m in self.maps]) for k in names}
            fit = self.owner.fits.pop(self.uid)  # the element maps from fitted spectra, where a fit covers them
            maps, sources = prefer_fitted(maps, theta, fit and fit.counts, fit and fit.theta)
            with collected() as caught:  # logged below, as the alignment's warnings
                al = align_projections(maps, theta, method=self.owner.method)
                shifts, summary = np.array(al.shifts, float), al.summary()
                same_left_out = np.array_equal(np.isnan(live_shifts[:, 0]), np.isnan(al.shifts[:, 0]))
                if al.applied and al.method == "pairwise" and al.channel == image_key and same_left_out:
                    # the same method as the live estimate, which weighs neighbours by their angular
                    # distance: keep whichever of the two leaves the stack more consistent
                    live = alignment_consistency(maps, theta, live_shifts)
                    if live.get("after") is not None and live["after"] <= (al.consistency.get("after") or np.inf):
                        shifts = live_shifts
                        summary["consistency"] = live
                        summary["reason"] += "; the live incremental estimate kept (more consistent)"
            summary["element_maps"] = sources
            if fit is not None:
                summary["fit_uid"] = fit.uid
            summary = _plain(summary)
            c = summary["consistency"]
            logger.info("LiveDPCAlignment: run %s aligned by %s on %s (%s), reprojection error %s -> %s",
                        self.uid[:8], al.method, al.channel, "applied" if al.applied else "NOT applied",
                        c.get("before"), c.get("after"))
            others = [str(w.message) for w in caught if not issubclass(w.category, AlignmentWarning)]
            for text in [*al.warnings, *others]:
                logger.warning("LiveDPCAlignment: %s", text)
            return shifts, summary
        except Exception as exc:
            logger.exception("LiveDPCAlignment: the final alignment failed; keeping the live pairwise estimate")
            error = f"{type(exc).__name__}: {exc}"
            return live_shifts, {"method": "pairwise", "channel": image_key, "applied": True,
                                 "reason": f"live incremental pairwise estimate: the final alignment failed ({error})",
                                 "consistency": {}, "warnings": [], "survey": {}, "error": error}

    def _keep(self, maps: dict[str, np.ndarray]) -> None:
        """Keep one projection's maps for the final alignment: all of them while under MAX_MAP_BYTES, else the field."""
        image_key = self.names[self.keys[1]]
        if not self.field_only and self.map_bytes + sum(m.nbytes for m in maps.values()) > MAX_MAP_BYTES:
            logger.warning("LiveDPCAlignment: the maps kept would exceed %.1f GB: the final alignment uses %s only",
                           MAX_MAP_BYTES / 1024**3, image_key)
            self.field_only = True
            self.maps = [{image_key: m[image_key]} for m in self.maps]
            self.map_bytes = sum(m[image_key].nbytes for m in self.maps)
        if self.field_only:
            maps = {image_key: maps[image_key]}
        self.maps.append(maps)
        self.map_bytes += sum(m.nbytes for m in maps.values())

    def _derived(self, theta, shifts, summary) -> list[tuple[str, dict]]:
        """The derived run's documents: start (linked by raw_uid), one event per projection, stop."""
        owner = self.owner
        metadata = {
            "plan_name": ALIGNMENT_PLAN, "raw_uid": self.uid, "field": owner.field, "quantities": {"theta": "theta"},
            "upsample": owner.upsample, "alignment": summary,
            "purpose": "DPC alignment shifts of a tomography (shift moves each projection onto the axis)",
        }
        if self.start_doc.get("sample") is not None:  # a run on a beamline's records may name none: no null
            metadata["sample"] = self.start_doc["sample"]  # (event-model's start schema refuses sample: None)
        bundle = compose_run(metadata=metadata)
        docs: list[tuple[str, dict]] = [("start", bundle.start_doc)]
        desc = bundle.compose_descriptor(name="primary", data_keys={
            "theta": {"dtype": "number", "shape": [], "source": "derived", "units": "deg"},
            "dy": {"dtype": "number", "shape": [], "source": "derived", "units": "px"},
            "dx": {"dtype": "number", "shape": [], "source": "derived", "units": "px"},
        })
        docs.append(("descriptor", desc.descriptor_doc))
        now = time.time()
        for t, (dy, dx) in zip(theta, shifts, strict=True):
            docs.append(("event", desc.compose_event(data={"theta": float(t), "dy": float(dy), "dx": float(dx)},
                                                     timestamps={"theta": now, "dy": now, "dx": now})))
        docs.append(("stop", bundle.compose_stop()))
        return docs


class _ShiftsPlot:
    """The live shifts figure; :meth:`update` (any thread) returns the drawing, run on the main thread."""

    def __init__(self):
        self._fig = None
        self._ax = None

    def update(self, theta: np.ndarray, shifts: np.ndarray, uid: str) -> Callable[[], None]:
        return lambda: self._draw(theta, shifts, uid)

    def _draw(self, theta, shifts, uid):
        import matplotlib.pyplot as plt

        if self._fig is None or not plt.fignum_exists(self._fig.number):
            self._fig, self._ax = plt.subplots(num="DPC alignment")
        ax = self._ax
        ax.clear()
        ax.plot(theta, shifts[:, 1], "o", ms=3, label="dx")
        ax.plot(theta, shifts[:, 0], "s", ms=3, label="dy")
        ax.set_xlabel("theta (deg)")
        ax.set_ylabel("shift (px)")
        ax.set_title(f"live DPC alignment, run {uid[:8]}", fontsize=10)
        ax.legend()
        self._fig.canvas.draw_idle()
