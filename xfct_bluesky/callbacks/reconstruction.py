"""Live reconstruction of a tomography as its projections arrive.

:class:`LiveReconstruction` is a live callback (:class:`~._base.LiveCallback`):
the RunEngine's thread only copies and queues each document; on the live
worker's thread a ``RunRouter`` gives every run its own state. Each
``primary`` event's maps are kept, and a filtered back-projection of one slice
(the central row by default; not aligned: a preview) is brought up to date
and shown. After the stop document the whole tomography is aligned and every
element asked for reconstructed (MLEM by default), and the phase from DPC
(FBP); the volumes are published as a derived run (``plan_name``
"xfct_reconstruction", ``raw_uid``) to each of ``emit``.

The shifts: this callback also takes the derived runs of a
:class:`~.alignment.LiveDPCAlignment` (``plan_name`` "dpc_alignment", its
``raw_uid`` and ``primary`` stream of theta, dy, dx), when that callback
lists it in its ``emit``; their documents, not the alignment callback's
attributes. The final reconstruction of a raw run waits (on the worker,
through :meth:`~._worker.LiveWorker.after_run`) until every callback that saw
the run's start has processed its stop, so the alignment's shifts are there
whatever the order of subscription; when no alignment run arrives for it (no
alignment subscribed, or it could not align), the run is aligned here with
DPC, as :func:`~xfct_bluesky.reconstruction.reconstruct_maps` does.

The element maps: where a :class:`~.fit.LiveSpectrumFit` run of the raw run
arrives (it lists this callback in its ``emit``), each element's fitted
counts are reconstructed instead of its ROI-window map, if the fit covers
every projection (:func:`~xfct_bluesky.analysis.fitting.maps.prefer_fitted`;
the preview uses the raw maps); ``element_maps`` in the results and in the
derived run's start document says which. Runs that
are not tomographies (:func:`~._base.is_tomography`: a single map, a dwell
pair series) are skipped, with a log line.

The same callback replays a stored run: feed it ``run.documents()`` (a stored
``dpc_alignment`` run's documents first, to use its shifts), then
:meth:`~._base.LiveCallback.wait`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from ..analysis.fitting.maps import prefer_fitted
from ..quantities import ALIGNMENT_PLAN, RECONSTRUCTION_PLAN, quantities_of  # noqa: F401 (importable here too)
from ._base import LiveCallback, RunState, is_tomography, theta_key_of
from ._emit import send_run, sinks_of
from ._plotting import FigureQueue, live_figures
from ._worker import LiveWorker
from .fit import FIT_PLAN, FitInbox, FittedMapsReader

logger = logging.getLogger(__name__)

#: Alignment runs kept for raw runs not (yet) reconstructed: at most this many.
MAX_ALIGNMENTS = 16


def preview_slice(stack: np.ndarray, theta: np.ndarray, *, row: int | None = None,
                  shifts: np.ndarray | None = None) -> np.ndarray | None:
    """A filtered back-projection (Shepp-Logan) of one row of a stack of projections: a quick look.

    Parameters
    ----------
    stack : (n, ny, nx) array
        Projections, in the order of ``theta``.
    theta : (n,) array
        Angles (deg).
    row : int, optional
        Row reconstructed; default the central one.
    shifts : (n, 2) array, optional
        (dy, dx) applied first (a band of rows around ``row``, so that vertical
        shifts interpolate); a projection whose shift is not finite (left out
        by an alignment) is left out.

    Returns
    -------
    (nx, nx) array, or None with fewer than two projections placed.
    """
    from ..analysis import tomo
    from ..analysis.align import apply_shifts
    from ..analysis.angles import angles_checked

    stack = np.asarray(stack, np.float32)
    theta = np.asarray(theta, float)
    row = stack.shape[1] // 2 if row is None else int(row)
    if shifts is None:
        placed = np.ones(len(theta), bool)
        sinogram = stack[:, row]
    else:
        shifts = np.asarray(shifts, float)
        placed = np.isfinite(shifts).all(axis=1)
        if placed.sum() < 2:
            return None
        lo, hi = max(row - 4, 0), min(row + 5, stack.shape[1])  # a band: vertical shifts interpolate
        sinogram = apply_shifts(stack[placed, lo:hi], shifts[placed])[:, row - lo]
    if placed.sum() < 2:
        return None
    # a preview of the angles so far: a sequential scan's first ones cover a small range, as expected
    with angles_checked():
        return tomo.fbp(sinogram, theta[placed], filter="shepp-logan")


class LiveReconstruction(LiveCallback):
    """Reconstruct a tomography live; publish the volumes at its end.

    Parameters
    ----------
    emit : callable(name, doc) or sequence of them, optional
        Each receives the derived run whole, from the worker's thread (the
        session's :class:`~._emit.SerialEmitter` into Tiled; never a bare
        TiledWriter the RunEngine also feeds).
    elements : sequence of str
        Elements to reconstruct: their symbols, which the run's ``quantities``
        resolve to data keys (or the endings ``_<element>`` of data keys).
    algorithm, iterations, subsets
        Final reconstruction (see :func:`~xfct_bluesky.reconstruction.reconstruct_maps`).
    phase : bool
        Also reconstruct the phase integrated from DPC x and y.
    preview_row : int, optional
        Row shown live; default the central one.
    preview_every : int, optional
        Update the preview after this many projections; default about 20
        updates per scan.
    plot : bool
        Show the preview slice, on the main thread through ``figures`` (no
        plots with a non-interactive matplotlib backend).
    worker : LiveWorker, optional
        Default: the one the live callbacks share; the alignment whose runs
        this callback takes must use the same one.
    figures : FigureQueue, optional
        Default: the shared one (:func:`~._plotting.live_figures`).

    Attributes
    ----------
    preview : (n_cols, n_cols) array or None
        The latest live slice.
    results : dict
        Per raw-run uid: the :class:`~xfct_bluesky.reconstruction.Reconstruction`,
        the derived run's uid, ``alignment_source`` ("live dpc alignment"
        or "dpc") and ``element_maps`` ({element: "fitted spectra" or "ROI window"}).
    errors : list
        Exceptions caught (logged, never raised into the RunEngine).
    """

    def __init__(self, emit: Callable | Sequence[Callable] | None = None, *, elements: Sequence[str] = ("Zn",),
                 algorithm: str = "mlem", iterations: int | None = None, subsets: int = 1, phase: bool = True,
                 preview_row: int | None = None, preview_every: int | None = None, plot: bool = False,
                 worker: LiveWorker | None = None, figures: FigureQueue | None = None):
        from ..reconstruction import check_elements, check_options

        super().__init__(worker=worker)
        self.algorithm, self.iterations, self.subsets, _ = check_options(algorithm, iterations, subsets, "dpc")
        self.sinks = sinks_of(emit, "LiveReconstruction")
        self.elements = check_elements(elements)
        self.phase = phase
        self.preview_row = preview_row
        self.preview_every = preview_every
        self.figures = figures if figures is not None else live_figures()
        self.plot = bool(plot) and self.figures.enabled
        if plot and not self.plot:
            logger.info("LiveReconstruction: plot=True, but matplotlib's backend is not interactive: no plot")
        self.preview: np.ndarray | None = None
        self.last_run: _ReconstructionRun | None = None
        self._drawer = _SlicePlot()
        # raw uid -> the shifts of its dpc_alignment run (worker thread only)
        self._alignments: OrderedDict[str, dict] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()  # raw runs reconstructed (or given up)
        self.fits = FitInbox()  # raw uid -> the maps of its live_spectrum_fit run (worker thread only)

    def _factory(self, name, start):
        plan = start.get("plan_name")
        if plan == ALIGNMENT_PLAN and start.get("raw_uid"):
            return [_AlignmentReader(self, start)], []
        if plan == FIT_PLAN and start.get("raw_uid"):
            return [FittedMapsReader(self, start)], []
        if start.get("raw_uid"):  # another derived run (ours, a fit): nothing to reconstruct
            return [], []
        if not is_tomography(start):
            logger.info("LiveReconstruction: run %s (%s) is not a tomography (its start document has no "
                        "n_angles or angles >= 2): not reconstructed", start["uid"][:8], plan or "?")
            return [], []
        self.last_run = run = _ReconstructionRun(self, start)
        return [run], []

    def _show(self, image: np.ndarray, title: str) -> None:
        self.preview = image
        if self.plot:
            self.figures.put("Live reconstruction", self._drawer.update(np.array(image), title))

    def _take_alignment(self, raw_uid: str, alignment: dict) -> None:
        if raw_uid in self._finished:
            logger.warning("LiveReconstruction: the dpc_alignment run %s of run %s arrived after its reconstruction "
                           "(give the alignment and this callback the same worker): not used",
                           alignment["uid"][:8], raw_uid[:8])
            return
        self._alignments[raw_uid] = alignment
        while len(self._alignments) > MAX_ALIGNMENTS:
            self._alignments.popitem(last=False)

    def _done(self, raw_uid: str) -> None:
        self._finished[raw_uid] = None
        while len(self._finished) > 4 * MAX_ALIGNMENTS:
            self._finished.popitem(last=False)


class _AlignmentReader(RunState):
    """A dpc_alignment derived run, read for its raw run's shifts (worker thread only)."""

    failure = "could not read the alignment run"

    def __init__(self, owner: LiveReconstruction, start: dict):
        super().__init__(owner, start)
        self.raw_uid = start["raw_uid"]
        self.theta: list[float] = []
        self.shifts: list[tuple[float, float]] = []

    def stream_event(self, doc):
        data = doc["data"]
        self.theta.append(float(data["theta"]))
        self.shifts.append((_number(data["dy"]), _number(data["dx"])))

    def stop(self, doc):
        self.owner._take_alignment(self.raw_uid, {
            "uid": self.uid, "theta": np.asarray(self.theta, float), "shifts": np.asarray(self.shifts, float)})


def _number(value) -> float:
    """A shift as stored: a float, or None for a projection left out (NaN)."""
    return float("nan") if value is None else float(value)


class _ReconstructionRun(RunState):
    """One tomography's maps, preview and final reconstruction (worker thread only)."""

    failure = "could not reconstruct"

    def __init__(self, owner: LiveReconstruction, start: dict):
        super().__init__(owner, start)
        self.keys: dict[str, str] = {}
        self.theta_key: str | None = None
        self.theta: list[float] = []
        self.stacks: dict[str, list[np.ndarray]] = {}
        n_planned = int(start.get("n_angles") or start.get("num_points") or 60)
        self.every = owner.preview_every or max(1, n_planned // 20)

    def stream_descriptor(self, doc):
        keys = doc["data_keys"]
        maps = {k for k, v in keys.items() if len(v.get("shape") or []) == 2 and not v.get("external")}
        wanted = [*self.owner.elements, "dpc_x", "dpc_y", "dpc_diag"]
        named = quantities_of(keys, self.start_doc)
        self.keys = {w: k for w in wanted for k in sorted(maps) if k.endswith("_" + w) or k == w}  # by ending
        self.keys.update((w, named[w]) for w in wanted if named.get(w) in maps)  # by name, where the run has it
        self.theta_key = theta_key_of(self.start_doc, keys)
        missing = [e for e in self.owner.elements if e not in self.keys]
        if missing or self.theta_key is None:
            logger.warning("LiveReconstruction: no map for %s or no rotation key in 'primary'", missing)

    def stream_event(self, doc):
        if self.theta_key is None:
            return
        data = doc["data"]
        maps = {w: np.asarray(data[k]) for w, k in self.keys.items() if k in data}
        self.theta.append(float(data[self.theta_key]))
        for key, value in maps.items():
            self.stacks.setdefault(key, []).append(value)
        element = self.owner.elements[0]
        if len(self.theta) >= 2 and len(self.theta) % self.every == 0 and element in self.stacks:
            image = preview_slice(np.asarray(self.stacks[element]), np.asarray(self.theta), row=self.owner.preview_row)
            if image is not None:
                self.owner._show(image, f"{element}, central slice (FBP preview, not aligned), run {self.uid[:8]}")

    def stop(self, doc):
        if len(self.theta) < 2:
            logger.info("LiveReconstruction: run %s has %d projection(s): not reconstructed", self.uid[:8],
                        len(self.theta))
            self.owner._done(self.uid)
            return
        # after every callback in this run has processed its stop (a live fit's maps are in), and queued behind
        # the work they deferred to that moment (the live alignment's final alignment, which sends its shifts)
        self.owner.worker.after_run(self.uid, lambda: self.owner.worker.submit(self._finish_safely))

    def _finish_safely(self):
        try:
            self._finish()
        except Exception as exc:  # noqa: BLE001 - logged and kept in the owner's errors
            self.owner._failed(exc, f"could not reconstruct run {self.uid[:8]}")
        finally:
            self.owner._done(self.uid)

    def _finish(self):
        from ..reconstruction import publish, raw_metadata, reconstruct_maps

        owner = self.owner
        theta = np.asarray(self.theta)
        maps = {k: np.asarray(v) for k, v in self.stacks.items()}
        fit = owner.fits.pop(self.uid)  # the element maps from fitted spectra, where a fit covers them
        maps, element_maps = prefer_fitted(maps, theta, fit and fit.counts, fit and fit.theta, owner.elements)
        shifts, source, alignment = None, "dpc", owner._alignments.pop(self.uid, None)
        if alignment is not None:
            if alignment["theta"].shape == theta.shape and np.allclose(alignment["theta"], theta):
                shifts, source = alignment["shifts"], "live dpc alignment"
            else:
                logger.warning("LiveReconstruction: the dpc_alignment run %s has %d angles, run %s %d (or others): "
                               "aligned with DPC instead", alignment["uid"][:8], alignment["theta"].size,
                               self.uid[:8], theta.size)
        logger.info("LiveReconstruction: reconstructing run %s (%d projections; shifts: %s; %s)", self.uid[:8],
                    theta.size, source, ", ".join(f"{e} from {m}" for e, m in element_maps.items()))
        rec = reconstruct_maps(maps, theta, elements=[e for e in owner.elements if e in maps],
                               algorithm=owner.algorithm, iterations=owner.iterations, subsets=owner.subsets,
                               align="dpc", shifts=shifts, phase=owner.phase)
        rec.raw_uid = self.uid
        rec.metadata = raw_metadata(self.start_doc)
        docs: list[tuple[str, dict]] = []
        if owner.sinks:
            extra = {"alignment_source": source, "element_maps": element_maps}
            if fit is not None:
                extra["fit_uid"] = fit.uid
            if shifts is not None:
                extra["alignment_uid"] = alignment["uid"]
            publish(rec, lambda name, doc: docs.append((name, doc)), extra_md=extra)
        owner.results[self.uid] = {"reconstruction": rec, "derived_uid": docs[0][1]["uid"] if docs else None,
                                   "alignment_source": source, "element_maps": element_maps}
        if docs:
            send_run(owner.sinks, docs, owner._failed)
        vol = rec.volumes.get(owner.elements[0])
        if vol is not None:
            row = vol.shape[0] // 2 if owner.preview_row is None else int(owner.preview_row)
            owner._show(vol[row], f"{owner.elements[0]}, slice {row} ({rec.algorithm}), run {self.uid[:8]}")


class _SlicePlot:
    """The live slice figure; :meth:`update` (any thread) returns the drawing, run on the main thread."""

    def __init__(self):
        self._fig = None
        self._ax = None
        self._im = None

    def update(self, image: np.ndarray, title: str) -> Callable[[], None]:
        return lambda: self._draw(image, title)

    def _draw(self, image, title):
        import matplotlib.pyplot as plt

        if self._fig is None or not plt.fignum_exists(self._fig.number) or self._im.get_array().shape != image.shape:
            if self._fig is None or not plt.fignum_exists(self._fig.number):
                self._fig, self._ax = plt.subplots(num="Live reconstruction")
            self._ax.clear()
            self._im = self._ax.imshow(image, cmap="magma")
        else:
            self._im.set_data(image)
        lo, hi = np.percentile(image, [1, 99.5])
        self._im.set_clim(lo, hi if hi > lo else lo + 1)
        self._ax.set_title(title, fontsize=9)
        self._fig.canvas.draw_idle()
