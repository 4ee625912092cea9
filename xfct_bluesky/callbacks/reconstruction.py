"""Live reconstruction of a tomography as its projections arrive.

:class:`LiveReconstruction` is an event-model ``DocumentRouter``. Each
``primary`` event's maps are queued to a worker thread, which keeps a
filtered back-projection of one slice (the central row by default) up to
date, shifted by the live DPC alignment's current shifts when one is given,
and shows it. After the stop document the worker aligns the whole
tomography (the live alignment's final shifts, or
:func:`~xfct_bluesky.analysis.align.align_projections` on DPC), reconstructs
every element asked for (MLEM by default) and the phase from DPC (FBP), and
publishes the volumes as a derived run (``plan_name``
"xfct_reconstruction", ``raw_uid``) through ``emit``. The RunEngine only
ever queues maps: nothing heavy runs on its thread, and no exception reaches
it. The same callback replays a stored run: feed it ``run.documents()``,
then :meth:`wait`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np
from event_model import unpack_event_page

from ..quantities import quantities_of
from ._base import SafeDocumentRouter, theta_key_of

logger = logging.getLogger(__name__)


class LiveReconstruction(SafeDocumentRouter):
    """Reconstruct a tomography live; publish the volumes at its end.

    Parameters
    ----------
    emit : callable(name, doc), optional
        Receives the derived run's documents (e.g. the session's TiledWriter).
    elements : sequence of str
        Elements to reconstruct: their symbols, which the run's ``quantities``
        resolve to data keys (or the endings ``_<element>`` of data keys).
    alignment : LiveDPCAlignment, optional
        Its shifts are used live and, if it has finished the same run, at the
        end (subscribe it before this callback); otherwise the run is aligned
        with DPC at the end.
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
        Show the preview slice with matplotlib.

    Attributes
    ----------
    preview : (n_cols, n_cols) array or None
        The latest live slice.
    results : dict
        Per raw-run uid: the :class:`~xfct_bluesky.reconstruction.Reconstruction`
        and the derived run's uid.
    errors : list
        Exceptions caught (logged, never raised into the RunEngine).
    """

    def __init__(self, emit: Callable | None = None, *, elements: Sequence[str] = ("Zn",), alignment=None,
                 algorithm: str = "mlem", iterations: int | None = None, subsets: int = 1, phase: bool = True,
                 preview_row: int | None = None, preview_every: int | None = None, plot: bool = False):
        from ..reconstruction import check_elements, check_options

        super().__init__()
        self.algorithm, self.iterations, self.subsets, _ = check_options(algorithm, iterations, subsets, "dpc")
        self.emit = emit
        self.elements = check_elements(elements)
        self.alignment = alignment
        self.phase = phase
        self.preview_row = preview_row
        self.preview_every = preview_every
        self.plot = plot
        self.preview: np.ndarray | None = None
        self.results: dict[str, dict] = {}
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start: dict | None = None
        self._primary: set[str] = set()
        self._keys: dict[str, str] = {}
        self._theta_key: str | None = None
        self._fig = None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current run is reconstructed and published (scripts and tests)."""
        if self._worker is not None:
            self._worker.join(timeout)

    # -- documents -----------------------------------------------------------------
    def start(self, doc):
        self._queue.put(None)  # a run that never stopped: let its worker go
        self.wait()
        self._start = doc
        self._primary.clear()
        self._keys = {}
        self._theta_key = None
        self.preview = None
        self._queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, args=(self._queue, doc), name="live-reconstruction",
                                        daemon=True)
        self._worker.start()

    def descriptor(self, doc):
        if doc.get("name") != "primary":
            return
        self._primary.add(doc["uid"])
        keys = doc["data_keys"]
        maps = {k for k, v in keys.items() if len(v.get("shape") or []) == 2 and not v.get("external")}
        wanted = [*self.elements, "dpc_x", "dpc_y", "dpc_diag"]
        named = quantities_of(keys, self._start)
        self._keys = {w: k for w in wanted for k in sorted(maps) if k.endswith("_" + w) or k == w}  # by ending
        self._keys.update((w, named[w]) for w in wanted if named.get(w) in maps)  # by name, where the run has it
        theta_key = theta_key_of(self._start, keys)
        self._theta_key = theta_key
        missing = [e for e in self.elements if e not in self._keys]
        if missing or theta_key is None:
            logger.warning("LiveReconstruction: no map for %s or no rotation key in 'primary'", missing)

    def event(self, doc):
        if doc["descriptor"] in self._primary and self._theta_key is not None:
            data = doc["data"]
            maps = {w: np.asarray(data[k]) for w, k in self._keys.items() if k in data}
            self._queue.put(("event", float(data[self._theta_key]), maps))

    def event_page(self, doc):
        for ev in unpack_event_page(doc):
            self.event(ev)

    def stop(self, doc):
        self._queue.put(("stop", doc))

    # -- worker --------------------------------------------------------------------
    def _work(self, q: queue.Queue, start: dict):
        theta: list[float] = []
        stacks: dict[str, list[np.ndarray]] = {}
        n_planned = int(start.get("n_angles") or start.get("num_points") or 60)
        every = self.preview_every or max(1, n_planned // 20)
        while True:
            item = q.get()
            if item is None:
                return
            try:
                if item[0] == "event":
                    _, t, maps = item
                    theta.append(t)
                    for key, value in maps.items():
                        stacks.setdefault(key, []).append(value)
                    if len(theta) >= 2 and (len(theta) % every == 0):
                        self._update_preview(np.asarray(theta), stacks)
                elif len(theta) >= 2:
                    self._finish(start, np.asarray(theta), stacks)
            except Exception as exc:
                logger.exception("LiveReconstruction: could not reconstruct")
                self.errors.append(exc)
            if item[0] == "stop":
                return  # the run is over, whatever happened

    def _live_shifts(self, n: int) -> np.ndarray:
        shifts = np.zeros((n, 2))
        if self.alignment is not None:
            s = np.asarray(self.alignment.shifts)
            m = min(len(s), n)
            shifts[:m] = s[:m]
        return shifts

    def _update_preview(self, theta, stacks):
        from ..analysis import tomo
        from ..analysis.align import apply_shifts
        from ..analysis.consistency import angles_checked

        element = self.elements[0]
        if element not in stacks:
            return
        stack = np.asarray(stacks[element], np.float32)
        row = stack.shape[1] // 2 if self.preview_row is None else int(self.preview_row)
        lo, hi = max(row - 4, 0), min(row + 5, stack.shape[1])  # a band: vertical shifts interpolate
        shifts = self._live_shifts(len(theta))
        placed = np.isfinite(shifts).all(axis=1)  # a blank projection has no live shift (NaN): left out
        if placed.sum() < 2:
            return
        band = apply_shifts(stack[placed, lo:hi], shifts[placed])
        # a preview of the angles so far: a sequential scan's first ones cover a small range, as expected
        with angles_checked():
            self.preview = tomo.fbp(band[:, row - lo], np.asarray(theta)[placed], filter="shepp-logan")
        if self.plot:
            self._show()

    def _show(self):
        import matplotlib.pyplot as plt

        if self._fig is None:
            self._fig, self._ax = plt.subplots(num="Live reconstruction")
            self._im = self._ax.imshow(self.preview, cmap="magma")
            self._ax.set_title(f"{self.elements[0]}, central slice (FBP preview)")
        else:
            self._im.set_data(self.preview)
            self._im.set_clim(*np.percentile(self.preview, [1, 99.5]))
        self._fig.canvas.draw_idle()

    def _finish(self, start, theta, stacks):
        from ..reconstruction import publish, raw_metadata, reconstruct_maps

        raw_uid = start["uid"]
        maps = {k: np.asarray(v) for k, v in stacks.items()}
        shifts, source = None, "dpc"
        done = getattr(self.alignment, "results", {}).get(raw_uid)
        if done is not None and len(done["shifts"]) == len(theta):
            shifts, source = np.asarray(done["shifts"]), "live dpc alignment"
        rec = reconstruct_maps(theta, maps, elements=[e for e in self.elements if e in maps],
                               algorithm=self.algorithm, iterations=self.iterations, subsets=self.subsets,
                               align="dpc", shifts=shifts, phase=self.phase)
        rec.raw_uid = raw_uid
        rec.metadata = raw_metadata(start)
        derived = None
        if self.emit is not None:
            extra = {"alignment_source": source}
            if done is not None and done.get("derived_uid"):
                extra["alignment_uid"] = done["derived_uid"]
            derived = publish(rec, self.emit, extra_md=extra)
        self.results[raw_uid] = {"reconstruction": rec, "derived_uid": derived}
        vol = rec.volumes[self.elements[0]] if self.elements[0] in rec.volumes else None
        if vol is not None:
            self.preview = vol[vol.shape[0] // 2 if self.preview_row is None else int(self.preview_row)]
            if self.plot:
                self._show()
