"""Live callbacks: progress bar, live maps, live spectrum fitting, live DPC alignment, live reconstruction.

The analysis callbacks never block the RunEngine: their ``__call__`` copies
and queues; one :class:`LiveWorker` thread does the work, run after run,
with per-run state from an ``event_model.RunRouter``. Derived runs go whole
through a :class:`SerialEmitter` into the writer; figures are drawn on the
main thread from a :class:`FigureQueue`. A session wires them so::

    writer = SerialEmitter(make_tiled_writer(catalog))  # the RunEngine's and the workers' way in
    RE.subscribe(writer)
    recon = LiveReconstruction(emit=writer, elements=("Zn",), plot=True)
    align = LiveDPCAlignment(emit=[writer, recon], plot=True)  # shifts to Tiled and to the reconstruction
    fit = LiveSpectrumFit(emit=[writer, align, recon])  # fitted maps to Tiled, the alignment, the reconstruction
    RE.subscribe(fit)
    RE.subscribe(align)
    RE.subscribe(recon)  # in any order
    live_figures().start()  # draw their figures on the main thread (an interactive backend)
"""

from ._base import LiveCallback, is_tomography
from ._emit import SerialEmitter
from ._plotting import FigureQueue, live_figures
from ._worker import LiveWorker, default_worker
from .alignment import LiveDPCAlignment
from .fit import LiveSpectrumFit
from .plots import LiveMaps
from .progress import ProgressBar
from .reconstruction import LiveReconstruction

__all__ = ["FigureQueue", "LiveCallback", "LiveDPCAlignment", "LiveMaps", "LiveReconstruction", "LiveSpectrumFit",
           "LiveWorker", "ProgressBar", "SerialEmitter", "default_worker", "is_tomography", "live_figures"]
