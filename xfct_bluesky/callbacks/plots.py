"""Live plot of the latest maps of a fly scan (DPC, Zn, ...), drawn on the main thread."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from event_model import DocumentRouter, RunRouter, unpack_event_page

from ..quantities import quantities_of, theta_key
from ._plotting import FigureQueue, live_figures

logger = logging.getLogger(__name__)


class LiveMaps:
    """Show the latest 2D maps of the ``primary`` stream as images.

    The RunEngine's thread only picks the maps out of each event (per-run
    state in a ``RunRouter`` factory) and queues a figure update on
    ``figures``; the main thread draws it (:mod:`._plotting`). With a
    non-interactive matplotlib backend nothing is queued. Exceptions are
    logged, never raised into the RunEngine.

    Parameters
    ----------
    fields : sequence of str
        Quantities to show (the run's ``quantities`` name their data keys), or
        endings of data keys (``"dpc_diag"`` matches ``microprobe_scanner_dpc_diag``);
        default DPC diagonal and Zn.
    fig : matplotlib Figure, optional
        Default: a new figure "xfct live maps".
    figures : FigureQueue, optional
        Default: the shared one (:func:`~._plotting.live_figures`).
    """

    def __init__(self, fields: Sequence[str] = ("dpc_diag", "Zn"), fig=None, *, figures: FigureQueue | None = None):
        self.fields = tuple(fields)
        self.figures = figures if figures is not None else live_figures()
        self._drawer = _MapsPlot(fig)
        self._router = RunRouter([self._factory])

    @property
    def fig(self):
        return self._drawer.fig

    def _factory(self, name, start):
        if not self.figures.enabled:
            return [], []
        return [_MapsRun(self, start)], []

    def __call__(self, name, doc):
        try:
            self._router(name, doc)
        except Exception:
            logger.exception("LiveMaps failed on a %s document", name)


class _MapsRun(DocumentRouter):
    def __init__(self, owner: LiveMaps, start: dict):
        super().__init__()
        self.owner = owner
        self.start_doc = start
        self.primary: set[str] = set()
        self.keys: dict[str, str] = {}
        self.theta_key: str | None = None

    def descriptor(self, doc):
        if doc.get("name") != "primary":
            return
        self.primary.add(doc["uid"])
        self.keys = {}
        keys = doc["data_keys"]
        maps = [k for k, v in keys.items() if len(v.get("shape") or []) == 2 and not v.get("external")]
        named = quantities_of(keys, self.start_doc)
        for field in self.owner.fields:
            key = named[field] if named.get(field) in maps else next((k for k in maps if k.endswith(field)), None)
            if key is not None:
                self.keys[field] = key
        try:
            self.theta_key = theta_key(keys, self.start_doc)
        except KeyError:  # no rotation angle: the titles go without it
            self.theta_key = None

    def event(self, doc):
        if doc["descriptor"] not in self.primary or not self.keys:
            return
        data = doc["data"]
        theta = data.get(self.theta_key) if self.theta_key else None
        images = {field: np.array(data[key]) for field, key in self.keys.items() if key in data}
        self.owner.figures.put("xfct live maps", self.owner._drawer.update(images, theta))

    def event_page(self, doc):
        for ev in unpack_event_page(doc):
            self.event(ev)


class _MapsPlot:
    """The maps figure (main thread only); :meth:`update` (any thread) returns the drawing."""

    def __init__(self, fig=None):
        self.fig = fig
        self._own = fig is None  # a figure of ours, made again if the user closes it
        self._axes: dict = {}
        self._images: dict = {}

    def update(self, images: dict[str, np.ndarray], theta) -> Callable[[], None]:
        return lambda: self._draw(images, theta)

    def _draw(self, images, theta):
        import matplotlib.pyplot as plt

        if self.fig is None or (self._own and not plt.fignum_exists(self.fig.number)):
            self.fig = plt.figure("xfct live maps", figsize=(4 * len(images), 4))
            self._axes = {}
        if list(self._axes) != list(images):  # new fields (a new run), or a new figure: new axes
            self.fig.clf()
            self._axes = {f: self.fig.add_subplot(1, len(images), i) for i, f in enumerate(images, start=1)}
            self._images = {}
        for field, img in images.items():
            ax = self._axes[field]
            if field in self._images and self._images[field].get_array().shape == img.shape:
                self._images[field].set_data(img)
                self._images[field].set_clim(*np.percentile(img, [1, 99]))
            else:
                self._images[field] = ax.imshow(img, origin="lower", cmap="gray")
            ax.set_title(f"{field}  theta={float(theta):.1f} deg" if theta is not None else field)
        self.fig.canvas.draw_idle()
