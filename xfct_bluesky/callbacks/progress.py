"""A tqdm progress bar over the events of a run (one tick per projection)."""

from __future__ import annotations

import logging

from bluesky.callbacks.core import make_class_safe
from event_model import DocumentRouter

logger = logging.getLogger(__name__)


@make_class_safe(logger=logger)
class ProgressBar(DocumentRouter):
    """Show a progress bar for the ``primary`` stream of each run.

    The total comes from the start document's ``num_points``; the bar closes
    at the stop document. Exceptions are logged, never raised into the
    RunEngine (``make_class_safe``).

    Parameters
    ----------
    stream : str
        Stream whose events are counted.
    **tqdm_kwargs
        Passed to ``tqdm.tqdm`` (e.g. ``disable=True``, ``file=...``).
    """

    def __init__(self, stream: str = "primary", **tqdm_kwargs):
        super().__init__()
        self.stream = stream
        self.tqdm_kwargs = tqdm_kwargs
        self._bar = None
        self._descriptors: set[str] = set()

    def start(self, doc):
        from tqdm.auto import tqdm

        self._close()
        self._descriptors.clear()
        label = doc.get("plan_name", "run")
        self._bar = tqdm(total=doc.get("num_points"), desc=label, unit="map", **self.tqdm_kwargs)

    def descriptor(self, doc):
        if doc.get("name") == self.stream:
            self._descriptors.add(doc["uid"])

    def event(self, doc):
        if self._bar is not None and doc["descriptor"] in self._descriptors:
            self._bar.update(1)

    def event_page(self, doc):
        if self._bar is not None and doc["descriptor"] in self._descriptors:
            self._bar.update(len(doc["seq_num"]))

    def stop(self, doc):
        if self._bar is not None:
            self._bar.set_postfix_str(doc.get("exit_status", ""))
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
