"""Live figures drawn on the main thread: the workers queue updates, the main thread draws them.

matplotlib (its GUI backends above all) must only be used from the main
thread. The live callbacks therefore never draw: they put a figure update (a
function of copies of the data to show) on a :class:`FigureQueue`, keyed by
figure, only the latest update per figure kept. :meth:`FigureQueue.draw_pending`
runs the queued updates and must be called on the main thread; :meth:`FigureQueue.start`
arranges that it is:

* a timer of the interactive matplotlib backend, which fires on the main
  thread whenever that backend's event loop runs: between commands through
  IPython's input hook (``%matplotlib qt``), and during a scan because
  bluesky's RunEngine runs the Qt event loop on the main thread while a plan
  runs (``DefaultDuringTask``; with Tk the figures update after the scan);
* IPython's ``post_execute`` event, if IPython is running: after each command.

A script may instead call ``draw_pending()`` itself (after ``RE(...)``).
With a non-interactive backend (Agg, a headless session or CI) the queue is
disabled, :meth:`put` drops updates and the callbacks' ``plot=True`` turns
into no plots (logged once); ``FigureQueue(enabled=True)`` forces it on, e.g.
to save figures from a script.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


def interactive_backend() -> bool:
    """Whether matplotlib's current backend shows windows (qtagg, tkagg, macosx, ...), not Agg or inline."""
    import matplotlib
    from matplotlib.backends import BackendFilter, backend_registry

    return matplotlib.get_backend().lower() in backend_registry.list_builtin(BackendFilter.INTERACTIVE)


class FigureQueue:
    """Figure updates from any thread, drawn on the main thread by :meth:`draw_pending`.

    Parameters
    ----------
    enabled : bool, optional
        Default: whether matplotlib's backend is interactive (:func:`interactive_backend`).
    interval : float
        Seconds between two draws by the timer of :meth:`start`.
    """

    def __init__(self, *, enabled: bool | None = None, interval: float = 0.25):
        self.enabled = interactive_backend() if enabled is None else bool(enabled)
        self.interval = float(interval)
        self._lock = threading.Lock()
        self._pending: dict[str, Callable[[], None]] = {}
        self._timer = None
        self._manager = None
        self._ipython = None

    def __repr__(self):
        return f"FigureQueue(enabled={self.enabled}, pending={sorted(self._pending)})"

    def put(self, key: str, draw: Callable[[], None]) -> None:
        """Queue ``draw()`` for figure ``key``, replacing an update not drawn yet (any thread)."""
        if self.enabled:
            with self._lock:
                self._pending[key] = draw

    def pending(self) -> list[str]:
        """The figures with an update waiting."""
        with self._lock:
            return sorted(self._pending)

    def draw_pending(self, *_args) -> int:
        """Run the queued updates (main thread only); return how many. An update's exception is logged."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("FigureQueue.draw_pending() must be called on the main thread (matplotlib is not "
                               f"thread-safe); called on {threading.current_thread().name!r}")
        with self._lock:
            jobs, self._pending = list(self._pending.items()), {}
        for key, draw in jobs:
            try:
                draw()
            except Exception:
                logger.exception("live figure %r could not be drawn", key)
        return len(jobs)

    def start(self) -> bool:
        """Draw the queued updates from now on: a GUI timer and IPython's ``post_execute`` (main thread).

        Returns whether something will draw them: False when the queue is
        disabled (a non-interactive backend) or neither a timer nor IPython
        could be set up; then call :meth:`draw_pending` yourself.
        """
        if not self.enabled:
            logger.info("live plots off: matplotlib's backend is not interactive")
            return False
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("FigureQueue.start() must be called on the main thread")
        started = False
        if self._timer is None and interactive_backend():
            try:
                import matplotlib.pyplot as plt

                # a figure manager that is never shown, only for its canvas's timer (the backend's own timer)
                self._manager = plt.new_figure_manager(0)  # num: only its window title (never shown)
                self._timer = self._manager.canvas.new_timer(interval=int(self.interval * 1000))
                self._timer.add_callback(self.draw_pending)
                self._timer.start()
            except Exception:
                logger.exception("live plots: no GUI timer; figures update after each IPython command only")
                self._timer = None
        started |= self._timer is not None
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        if shell is not None and self._ipython is None:
            shell.events.register("post_execute", self.draw_pending)
            self._ipython = shell
        return started or self._ipython is not None

    def stop(self) -> None:
        """Stop the timer and the IPython hook (the queued updates stay)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._ipython is not None:
            self._ipython.events.unregister("post_execute", self.draw_pending)
            self._ipython = None


_default: FigureQueue | None = None
_default_lock = threading.Lock()


def live_figures() -> FigureQueue:
    """The figure queue the live callbacks share unless given one (its backend checked on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FigureQueue()
        return _default
