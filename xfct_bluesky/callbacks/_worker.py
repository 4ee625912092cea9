"""One worker thread for the live callbacks' heavy work, in submission order, and the run barrier.

The live callbacks (:class:`~xfct_bluesky.callbacks.LiveDPCAlignment`,
:class:`~xfct_bluesky.callbacks.LiveReconstruction`) do nothing on the
RunEngine's thread but copy a document and put it on a :class:`LiveWorker`.
The worker's one thread processes every document of every run in the order
the RunEngine emitted them, so the runs are analysed one after the other and
nobody ever waits for the worker but a script or a test calling
:meth:`LiveWorker.wait`.

The barrier orders callbacks that depend on each other without their reading
each other's state: a callback that saw a run's start document is *in* that
run until the worker has processed its stop document (:meth:`LiveWorker.open_run`,
:meth:`LiveWorker.close_run`), and :meth:`LiveWorker.after_run` defers work
until every callback in the run is done with it. The live reconstruction
defers its final reconstruction so: by then the live alignment (if it is
subscribed, in whatever order) has processed the same stop document and
delivered its derived ``dpc_alignment`` run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class LiveWorker:
    """Run the live callbacks' work on one thread, in the order it was submitted.

    Parameters
    ----------
    name : str
        The thread's name (seen in tracebacks and ``threading.enumerate()``).

    Notes
    -----
    The thread is a daemon, started at the first submission: an interpreter
    that exits with work queued does not hang on it, and that work is lost;
    call :meth:`wait` before leaving a session while a reconstruction is in
    flight. A task's exception is logged, never raised (the callbacks catch
    and keep their own in ``errors`` first).
    """

    def __init__(self, name: str = "xfct-live"):
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._runs: dict[str, list[Any]] = {}  # run uid -> the callbacks in it that have not finished its stop
        self._after: dict[str, list[Callable[[], None]]] = {}  # run uid -> work waiting for them

    def __repr__(self):
        return f"LiveWorker({self.name!r}, pending={self._pending})"

    # -- work ------------------------------------------------------------------------
    def submit(self, fn: Callable, *args) -> None:
        """Queue ``fn(*args)``; return at once (any thread)."""
        with self._cond:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put((fn, args))

    def on_worker(self) -> bool:
        """Whether the calling thread is this worker's."""
        return self._thread is not None and threading.current_thread() is self._thread

    @property
    def pending(self) -> int:
        """Tasks submitted and not yet finished (the one running included)."""
        return self._pending

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every task submitted so far, and every task those submit, has finished.

        Returns False if ``timeout`` (s) passed first. For scripts and tests: no
        callback ever calls it, least of all on the RunEngine's thread.
        """
        if self.on_worker():
            raise RuntimeError(f"{self!r}.wait() called from its own thread would never return")
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _loop(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except BaseException:  # the callbacks catch their own; this keeps the thread alive regardless
                logger.exception("%s: a task failed", self.name)
            finally:
                with self._cond:
                    self._pending -= 1
                    if self._pending == 0:
                        self._cond.notify_all()

    # -- the run barrier ---------------------------------------------------------------
    def open_run(self, uid: str, member: Any) -> None:
        """``member`` has received run ``uid``'s start document (called on the caller's thread)."""
        with self._cond:
            self._runs.setdefault(uid, []).append(member)

    def after_run(self, uid: str, fn: Callable[[], None]) -> None:
        """Call ``fn()`` on the worker once every member of run ``uid`` has processed its stop document.

        At once if none is left. ``fn`` must not raise (wrap it in the callback's error handling).
        """
        with self._cond:
            if uid in self._runs:
                self._after.setdefault(uid, []).append(fn)
                return
        fn()

    def close_run(self, uid: str | None, member: Any) -> None:
        """``member`` has processed run ``uid``'s stop document; the last one to do so runs the deferred work."""
        with self._cond:
            members = self._runs.get(uid)
            if members is None:
                return
            for i, m in enumerate(members):
                if m is member:
                    del members[i]
                    break
            if members:
                return
            del self._runs[uid]
            ready = self._after.pop(uid, [])
        for fn in ready:
            fn()


_default: LiveWorker | None = None
_default_lock = threading.Lock()


def default_worker() -> LiveWorker:
    """The worker the live callbacks share unless given one: one thread for the whole session."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LiveWorker()
        return _default
