"""The package's warnings, which a thread (a live callback's worker, a Dask task) can collect for itself.

``warnings.catch_warnings`` changes the process's filters and ``showwarning``
and puts them back on exit (before Python 3.14, which adds context-aware
warnings). Two threads inside it at once undo each other: the first to leave
restores the filters the second was relying on, so the second's warnings
escape its record (under ``-W error``, as in the test suite, they are raised
and its analysis is lost), and the last to leave installs the other's
``showwarning`` for good. So the package warns through :func:`warn`: inside
:func:`collected`, on the calling thread (and in its context only), the
warning is appended to that thread's list; anywhere else it is an ordinary
``warnings.warn``. Warnings from other libraries are not collected: they go
through Python's filters as they would from any thread.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["collected", "warn"]

_sink: ContextVar[list[warnings.WarningMessage] | None] = ContextVar("xfct_bluesky_warnings", default=None)


def warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 1) -> None:
    """``warnings.warn(message, category, stacklevel)``, or kept in the list of the :func:`collected` block the
    calling context is in (with the file and line ``stacklevel`` names)."""
    sink = _sink.get()
    if sink is None:
        warnings.warn(message, category, stacklevel=stacklevel + 1)
        return
    try:
        frame = sys._getframe(stacklevel)
        where = frame.f_code.co_filename, frame.f_lineno
    except ValueError:  # fewer frames than stacklevel: as warnings.warn, the interpreter's
        where = "sys", 1
    sink.append(warnings.WarningMessage(message, category, *where))


@contextmanager
def collected() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the package's warnings issued in this block by this thread (nested blocks keep their own)."""
    sink: list[warnings.WarningMessage] = []
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)
