"""One process compiles a numba kernel; the others on the machine load it from numba's cache.

The kernels are compiled on first use, per argument types, and kept in numba's on-disk cache
(``cache=True``). Processes that start together on a fresh install (the workers of a Dask LocalCluster, a
session and its queue server's worker, the test suite's pytest-xdist workers) otherwise all compile the same
kernels at once: the fitting kernels take over a minute each time on a 2-core machine, and two such
compilations side by side each take twice as long. :func:`first_call` serialises the first call of a kernel
for given argument types across processes with an advisory lock (``fcntl.flock``) on a file beside the
cache, one file per kernel and argument types (different kernels still compile side by side): the first process compiles and writes the cache, the next ones find it there and load it in a
second. Later calls in the same process pass without touching the lock.

Where the lock cannot be taken (no ``fcntl``, a read-only installation, a lock held longer than
:data:`WAIT` seconds by a process that hangs), the call goes ahead unlocked: the result is the same, only
the compilation may be repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path

#: Seconds a process waits for another one's compilation before it compiles for itself.
WAIT = 600.0

_seen: set = set()
_guard = threading.Lock()
_held = threading.local()


def _lock_path() -> Path:
    from numba.core import config

    cache_dir = getattr(config, "CACHE_DIR", "") or ""
    return Path(cache_dir) if cache_dir else Path(__file__).resolve().parent / "__pycache__"


@contextlib.contextmanager
def first_call(key: Hashable) -> Iterator[None]:
    """Hold the machine-wide compile lock while this process calls a kernel for ``key`` the first time.

    ``key`` names the kernel and what its compiled version depends on (the argument dtypes). Reentrant
    in a thread: a kernel called while the lock is held does not wait for itself.
    """
    with _guard:
        first = key not in _seen
    if not first or getattr(_held, "depth", 0):
        yield
        return
    fd = _acquire(key)
    _held.depth = 1
    try:
        yield
        with _guard:
            _seen.add(key)
    finally:
        _held.depth = 0
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _acquire(key: Hashable) -> int | None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, compile as before
        return None
    try:
        path = _lock_path()
        path.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(repr(key).encode()).hexdigest()[:16]  # one lock per kernel and dtypes: others
        fd = os.open(path / f"xfct-compile-{digest}.lock", os.O_RDWR | os.O_CREAT, 0o644)  # compile meanwhile
    except OSError:  # a read-only installation: nothing to share either
        return None
    deadline = time.monotonic() + WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.1)
        except OSError:
            os.close(fd)
            return None
