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


MISSES = r"""
import json
import numba
from xfct_bluesky.analysis import _projector_kernels
from xfct_bluesky.analysis.compile import compile_kernels
from xfct_bluesky.analysis.fitting import _kernels, _sparse
compile_kernels(report=lambda line: None)
misses = {f"{mod.__name__}.{name}": sum(obj.stats.cache_misses.values())
          for mod in (_kernels, _sparse, _projector_kernels) for name, obj in vars(mod).items()
          if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.stats.cache_hits + obj.stats.cache_misses}
print(json.dumps(misses))
"""


def test_the_install_step_leaves_every_kernel_in_the_cache():
    """``python -m xfct_bluesky.analysis.compile`` (run by ``make install``) compiles the kernels into numba's
    cache: a process started after it loads each one it calls from there and compiles none."""
    import json

    def misses():
        out = subprocess.run([sys.executable, "-c", MISSES], check=False, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    from xfct_bluesky.analysis.compile import compile_kernels

    compile_kernels(report=lambda line: None)  # compiles whatever is not cached yet (nothing, after make install)
    after = misses()
    assert {"xfct_bluesky.analysis.fitting._kernels.poisson_fit", "xfct_bluesky.analysis.fitting._kernels.fisher_sigma",
            "xfct_bluesky.analysis.fitting._sparse.compact",
            "xfct_bluesky.analysis._projector_kernels.back_bins"} <= set(after)
    assert not any(after.values()), after
