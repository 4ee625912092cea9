"""The package's warnings are collected per thread: two live analyses at once keep their own.

Stop 26's CI lost a live reconstruction this way: three reconstructions of one run aligned at once on
three workers, each inside ``warnings.catch_warnings``. The first to finish put the suite's "error"
filter back while another was still inside its block, so that one's alignment warning ("not applied:
it leaves the stack less consistent") was raised instead of logged, and its volume was never made.
"""

from __future__ import annotations

import threading
import warnings

import pytest

from xfct_bluesky._warnings import collected, warn
from xfct_bluesky.analysis.exceptions import AlignmentWarning, ReconstructionWarning


def _interleaved() -> dict:
    """Thread a enters, b enters, a leaves, then b warns: the order that lost the reconstruction."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    out: dict = {}

    def a():
        try:
            with collected() as mine:
                a_in.set()
                b_in.wait(10)
                warn("from a", AlignmentWarning)
            out["a"] = [str(w.message) for w in mine]
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            out["a"] = exc
        finally:
            a_out.set()

    def b():
        try:
            a_in.wait(10)
            with collected() as mine:
                b_in.set()
                a_out.wait(10)
                warn("from b", AlignmentWarning)
                warn("b again", ReconstructionWarning)
            out["b"] = [(str(w.message), w.category) for w in mine]
        except Exception as exc:  # noqa: BLE001
            out["b"] = exc

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return out


def test_two_threads_collect_their_own_warnings_whatever_the_order_they_leave_in():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as the suite's filters, and a user's -W error
        out = _interleaved()
    assert out["a"] == ["from a"]
    assert out["b"] == [("from b", AlignmentWarning), ("b again", ReconstructionWarning)]


def test_outside_a_collecting_block_a_warning_is_an_ordinary_one_at_the_callers_line():
    with pytest.warns(AlignmentWarning, match="plain") as record:
        warn("plain", AlignmentWarning)
    assert record[0].filename == __file__


def test_another_threads_warning_is_not_taken_by_a_collecting_thread():
    inside, done = threading.Event(), threading.Event()
    kept: list = []

    def worker():
        with collected() as mine:
            inside.set()
            done.wait(10)
        kept.extend(mine)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(10)
    with pytest.warns(ReconstructionWarning, match="main thread's"):
        warn("the main thread's", ReconstructionWarning)
    done.set()
    t.join(10)
    assert kept == []


def test_a_nested_block_keeps_its_own_and_gives_the_outer_one_back():
    with collected() as outer:
        warn("first", AlignmentWarning)
        with collected() as inner:
            warn("inner", AlignmentWarning)
        warn("last", AlignmentWarning)
    assert [str(w.message) for w in outer] == ["first", "last"]
    assert [str(w.message) for w in inner] == ["inner"]
    assert outer[0].filename == __file__
