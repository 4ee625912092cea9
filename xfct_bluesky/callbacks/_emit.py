"""One thread-safe way into the writer for the RunEngine's documents and the derived runs.

TiledWriter (bluesky-tiled-plugins) has no lock: its ``RunRouter`` and each
run's ``_RunWriter`` expect one caller at a time. The RunEngine calls it from
its thread; the live callbacks publish derived runs from their worker's.
:class:`SerialEmitter` puts one lock around every call, and the live callbacks
hand it a derived run whole (:meth:`SerialEmitter.emit_run`), so the writer
never sees two callers at once nor half a derived run between two of the
RunEngine's documents. Subscribe the emitter, not the writer, to the
RunEngine, and give the same emitter to the callbacks::

    writer = SerialEmitter(make_tiled_writer(catalog))
    RE.subscribe(writer)
    recon = LiveReconstruction(emit=writer)
    align = LiveDPCAlignment(emit=[writer, recon])  # its shifts to Tiled and to the reconstruction
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

Sink = Callable[[str, dict], Any]


class SerialEmitter:
    """A document sink (e.g. a TiledWriter) that any thread may call: one lock around every call.

    Parameters
    ----------
    sink : callable(name, doc)
        The writer. Its exceptions propagate to the caller (to the RunEngine
        for the RunEngine's documents, as when the writer is subscribed
        directly; the live callbacks log and keep theirs).
    lock : threading.RLock, optional
        Shared with other emitters whose sinks must not run at the same time
        (two TiledWriters on one server: see :class:`~xfct_bluesky.session.Session`).

    Notes
    -----
    The lock is re-entrant, so a sink that emits into the same emitter does
    not deadlock. While a derived run is being written, a document of the
    RunEngine waits for it (TiledWriter writes a run's events at its stop
    document, so one write of the derived run's size).
    """

    def __init__(self, sink: Sink, *, lock: threading.RLock | None = None):
        if isinstance(sink, SerialEmitter):
            sink = sink.sink
        self.sink = sink
        self.lock = lock if lock is not None else threading.RLock()

    @classmethod
    def around(cls, sink: Sink) -> SerialEmitter:
        """``sink`` itself if it is a SerialEmitter already, else one around it."""
        return sink if isinstance(sink, SerialEmitter) else cls(sink)

    def __repr__(self):
        return f"SerialEmitter({self.sink!r})"

    def __call__(self, name: str, doc: dict) -> Any:
        with self.lock:
            return self.sink(name, doc)

    def emit_run(self, docs: Iterable[tuple[str, dict]]) -> None:
        """Send a whole run's documents, in order, holding the lock from the first to the last."""
        with self.lock:
            for name, doc in docs:
                self.sink(name, doc)


def sinks_of(emit: Sink | Sequence[Sink] | None, owner: str) -> tuple[Sink, ...]:
    """``emit`` as a tuple of sinks: None -> (), one callable -> (it,), a sequence -> its callables."""
    if emit is None:
        return ()
    if callable(emit):
        return (emit,)
    sinks = tuple(emit)
    bad = [s for s in sinks if not callable(s)]
    if bad:
        raise TypeError(f"{owner}: emit={emit!r}: {bad[0]!r} is not callable; allowed a callable(name, doc) "
                        "(a TiledWriter, a SerialEmitter, a live callback) or a list of them")
    return sinks


def send_run(sinks: Sequence[Sink], docs: list[tuple[str, dict]], on_error: Callable[[BaseException, str], None]
             ) -> None:
    """Send a whole derived run to each sink in turn (``emit_run`` where it has one); an error is reported, not raised.

    A sink that fails does not keep the run from the others.
    """
    for sink in sinks:
        try:
            if isinstance(sink, SerialEmitter):
                sink.emit_run(docs)
            else:
                for name, doc in docs:
                    sink(name, doc)
        except Exception as exc:  # noqa: BLE001 - reported through on_error (logged, kept)
            on_error(exc, f"could not send a derived run to {sink!r}")
