"""What the live analysis callbacks share: per-run state off the RunEngine's thread, never raising, theta.

A :class:`LiveCallback` is built as bluesky-tiled-plugins' TiledWriter is: an
``event_model.RunRouter`` whose factory makes one object per run (two runs
never share state), here driven by a :class:`~._worker.LiveWorker`. Its
``__call__``, the RunEngine's entry, copies the document and queues it; the
RunRouter and the per-run objects only ever run on the worker's thread.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping

from event_model import DocumentRouter, RunRouter

from ..quantities import recorded_theta_key, theta_key
from ._worker import LiveWorker, default_worker

logger = logging.getLogger(__name__)


def is_tomography(start: Mapping) -> bool:
    """Whether a run is a tomography, from its start document alone.

    Yes for an ``xfct_tomo`` run; for a run whose start document records two
    or more angles (``angles`` with two distinct values, as an imported
    tomography's; ``n_angles`` >= 2); and for a scan of two or more points
    along a rotation (its ``hints`` dimension is the ``theta_key``, the
    ``theta`` quantity, or a key named ``theta`` or ending in ``rotation``: a
    ``list_scan`` of the stage, as older runs were taken). No for a single
    map (``xrf_fly_map``: one point), maps at one recorded angle ``theta``
    (``dwell_pair_series``, an imported map) and derived runs (``raw_uid``).
    """
    if start.get("raw_uid"):
        return False
    if start.get("plan_name") == "xfct_tomo":
        return True
    angles = start.get("angles")
    if isinstance(angles, list | tuple):
        return len({a for a in angles if isinstance(a, int | float) and not isinstance(a, bool)}) >= 2
    n = start.get("n_angles")
    if isinstance(n, int) and not isinstance(n, bool):
        return n >= 2
    if isinstance(start.get("theta"), int | float):  # every map at one angle
        return False
    points = start.get("num_points")
    if not (isinstance(points, int) and points >= 2):
        return False
    names = {recorded_theta_key(start), "theta"} - {None}  # quantities.theta_key's rules, from the start alone
    dimensions = (start.get("hints") or {}).get("dimensions") or []
    fields = [f for dim in dimensions if isinstance(dim, list | tuple) and dim and isinstance(dim[0], list | tuple)
              for f in dim[0]]
    return any(f in names or str(f).endswith("rotation") for f in fields)


def _copy(name: str, doc: dict) -> dict:
    """A copy of the document's dicts (not of its arrays, which a document's receivers never modify)."""
    doc = dict(doc)
    if name in ("event", "event_page"):
        doc["data"] = dict(doc["data"])
        if "timestamps" in doc:
            doc["timestamps"] = dict(doc["timestamps"])
    return doc


class LiveCallback(abc.ABC):
    """Base of the live analysis callbacks: ``__call__`` queues, a RunRouter on the worker does the rest.

    Parameters
    ----------
    worker : LiveWorker, optional
        The thread the documents are processed on; default the one the
        session's live callbacks share (:func:`~._worker.default_worker`).
        Callbacks that consume each other's derived runs must share it.

    Attributes
    ----------
    errors : list
        Exceptions caught (logged, never raised into the RunEngine).
    results : dict
        Per raw-run uid, what the callback found (see the subclasses).
    """

    def __init__(self, *, worker: LiveWorker | None = None):
        self.worker = worker if worker is not None else default_worker()
        self.errors: list[BaseException] = []
        self.results: dict[str, dict] = {}
        self._router = RunRouter([self._factory])

    @abc.abstractmethod
    def _factory(self, name: str, start: dict) -> tuple[list, list]:
        """The RunRouter factory: this run's :class:`RunState` callbacks (``([state], [])``), or none."""

    def __call__(self, name: str, doc: dict) -> None:
        """Take one document: copy it and queue it for the worker (or, on the worker, process it now)."""
        try:
            doc = _copy(name, doc)
            if name == "start":
                self.worker.open_run(doc["uid"], self)
        except Exception as exc:  # noqa: BLE001 - a malformed document: logged and kept, never raised into the RE
            self._failed(exc, f"could not take a {name!r} document")
            return
        if self.worker.on_worker():  # a derived run from another callback on the same worker: in order, now
            self._route(name, doc)
        else:
            self.worker.submit(self._route, name, doc)

    def _route(self, name: str, doc: dict) -> None:
        try:
            self._router(name, doc)
        except Exception as exc:  # noqa: BLE001 - logged and kept in errors
            self._failed(exc, f"failed on a {name!r} document")
        finally:
            if name == "stop":
                self.worker.close_run(doc.get("run_start"), self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has finished all the work submitted to it (scripts and tests).

        Returns False if ``timeout`` (s) passed first. Never called by the callbacks themselves.
        """
        return self.worker.wait(timeout)

    def _failed(self, exc: BaseException, what: str) -> None:
        """Log (with the traceback: call from an ``except`` block) and keep an exception."""
        logger.error("%s: %s", type(self).__name__, what, exc_info=exc)
        self.errors.append(exc)


class RunState(DocumentRouter):
    """One run's state in a :class:`LiveCallback` (made by its RunRouter factory); errors go to the owner.

    The descriptors of the stream :attr:`stream` are kept in :attr:`primary`;
    a subclass reads that stream by overriding :meth:`stream_descriptor` and
    :meth:`stream_event` (events of other streams never reach them; an event
    page reaches :meth:`stream_event` event by event, by DocumentRouter's own
    unpacking).
    """

    #: What failed, for the log: "<owner class>: could not ... run <uid>".
    failure = "failed on"
    #: The stream read (the maps of a scan, the shifts of an alignment run: ``primary``).
    stream = "primary"

    def __init__(self, owner: LiveCallback, start: dict):
        super().__init__()
        self.owner = owner
        self.start_doc = start
        self.uid = start["uid"]
        self.primary: set[str] = set()  # uids of the descriptors of `stream`

    def descriptor(self, doc):
        if doc.get("name") == self.stream:
            self.primary.add(doc["uid"])
            self.stream_descriptor(doc)

    def event(self, doc):
        if doc["descriptor"] in self.primary:
            self.stream_event(doc)

    def stream_descriptor(self, doc: dict) -> None:
        """A descriptor of :attr:`stream` (override; the default does nothing)."""

    def stream_event(self, doc: dict) -> None:
        """An event of :attr:`stream` (override; the default does nothing)."""

    def __call__(self, name, doc, validate=False):
        try:
            return super().__call__(name, doc, validate)
        except Exception as exc:  # noqa: BLE001 - logged and kept in the owner's errors
            self.owner._failed(exc, f"{self.failure} run {self.uid[:8]} ({name!r} document)")
            return name, doc


def theta_key_of(start: dict | None, data_keys: dict) -> str | None:
    """The rotation angle's data key, found as :func:`~xfct_bluesky.storage.load_tomo` finds it
    (:func:`xfct_bluesky.quantities.theta_key`); None, with a warning saying why, when there is none."""
    try:
        return theta_key(data_keys, start)
    except KeyError as err:
        logger.warning("%s", err.args[0])
        return None
