"""The machine-wide lock around a kernel's first call (analysis/_compile_lock.py): a second process waits
while the first compiles, then goes on; later calls in a process never wait."""

from __future__ import annotations

import subprocess
import sys
import time

from xfct_bluesky.analysis import _compile_lock

HOLD = r"""
import sys, time
from xfct_bluesky.analysis._compile_lock import first_call
with first_call("test-compile-lock"):
    print("holding", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_a_second_process_waits_for_the_first_then_a_later_call_does_not_wait():
    hold = 1.5
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(hold)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        with _compile_lock.first_call("another-kernel"):  # another kernel: its own lock, no wait
            assert time.monotonic() - t0 < 0.5 * hold
        t0 = time.monotonic()
        with _compile_lock.first_call("test-compile-lock"):  # the child's kernel: the same lock file
            waited = time.monotonic() - t0
        assert waited > 0.3 * hold, waited  # it waited for the child's "compilation"
        child2 = subprocess.Popen([sys.executable, "-c", HOLD, str(hold)], stdout=subprocess.PIPE, text=True)
        assert child2.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        with _compile_lock.first_call("test-compile-lock"):  # seen in this process: no wait
            assert time.monotonic() - t0 < hold
        child2.communicate(timeout=30)
    finally:
        child.communicate(timeout=30)
    assert child.returncode == 0 and child2.returncode == 0


def test_reentrant_in_a_thread():
    with _compile_lock.first_call("outer-key"), _compile_lock.first_call("inner-key"):
        pass  # the inner call does not wait for the lock its own thread holds
