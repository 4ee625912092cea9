"""Live plot of the latest maps of a fly scan (DPC, Zn, ...)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from bluesky.callbacks.core import make_class_safe
from event_model import DocumentRouter

from ..quantities import quantities_of, theta_key

logger = logging.getLogger(__name__)


@make_class_safe(logger=logger)
class LiveMaps(DocumentRouter):
    """Show the latest 2D maps of the ``primary`` stream as images.

    Parameters
    ----------
    fields : sequence of str
        Quantities to show (the run's ``quantities`` name their data keys), or
        endings of data keys (``"dpc_diag"`` matches ``microprobe_scanner_dpc_diag``);
        default DPC diagonal and Zn.
    fig : matplotlib Figure, optional
        Default: a new figure.
    """

    def __init__(self, fields: Sequence[str] = ("dpc_diag", "Zn"), fig=None):
        super().__init__()
        self.fields = tuple(fields)
        self.fig = fig
        self._axes = {}
        self._images = {}
        self._keys: dict[str, str] = {}
        self._primary: set[str] = set()
        self._start = None
        self._theta_key = None

    def start(self, doc):
        self._start = doc
        self._theta_key = None
        self._primary.clear()

    def descriptor(self, doc):
        if doc.get("name") != "primary":
            return
        self._primary.add(doc["uid"])
        self._keys = {}
        keys = doc["data_keys"]
        maps = [k for k, v in keys.items() if len(v.get("shape") or []) == 2 and not v.get("external")]
        named = quantities_of(keys, self._start)
        for field in self.fields:
            key = named[field] if named.get(field) in maps else next((k for k in maps if k.endswith(field)), None)
            if key is not None:
                self._keys[field] = key
        try:
            self._theta_key = theta_key(keys, self._start)
        except KeyError:  # no rotation angle: the titles go without it
            self._theta_key = None
        if self._keys:
            self._setup()

    def _setup(self):
        import matplotlib.pyplot as plt

        if self.fig is None:
            self.fig = plt.figure("xfct live maps", figsize=(4 * len(self._keys), 4))
        self.fig.clf()
        self._axes = {}
        self._images = {}
        for i, field in enumerate(self._keys, start=1):
            ax = self.fig.add_subplot(1, len(self._keys), i)
            ax.set_title(field)
            self._axes[field] = ax

    def event(self, doc):
        if doc["descriptor"] not in self._primary or not self._keys:
            return
        theta = doc["data"].get(self._theta_key) if self._theta_key else None
        for field, key in self._keys.items():
            img = np.asarray(doc["data"][key])
            ax = self._axes[field]
            if field in self._images:
                self._images[field].set_data(img)
                self._images[field].set_clim(np.percentile(img, [1, 99]))
            else:
                self._images[field] = ax.imshow(img, origin="lower", cmap="gray")
            if theta is not None:
                ax.set_title(f"{field}  theta={float(theta):.1f} deg")
        self.fig.canvas.draw_idle()
