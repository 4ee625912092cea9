"""The live callbacks never block the RunEngine, never mix runs, never draw off the main thread.

Issue 14: with the profile's live alignment and reconstruction, a one-map run right after a tomography
waited for the tomography's reconstruction (``LiveReconstruction.start`` joined the previous worker), the
reconstruction read the alignment callback's attributes (so the result depended on subscription order),
the workers drew with matplotlib and wrote into the TiledWriter the RunEngine was feeding.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings

import numpy as np
import pytest
from bluesky import RunEngine

from xfct_bluesky.callbacks import (
    FigureQueue,
    LiveDPCAlignment,
    LiveMaps,
    LiveReconstruction,
    LiveWorker,
    SerialEmitter,
    is_tomography,
)
from xfct_bluesky.plans import dwell_pair_series, xfct_tomo, xrf_fly_map

SHAPE = (16, 20)
PIXEL = 300e-9


def _slow_reconstruction(monkeypatch, seconds: float) -> None:
    """Make the final reconstruction take ``seconds`` longer (the live callback imports it at each run)."""
    from xfct_bluesky import reconstruction

    original = reconstruction.reconstruct_maps

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    monkeypatch.setattr(reconstruction, "reconstruct_maps", slow)


def _pipeline(worker: LiveWorker, sink, *, alignment_first: bool = True, **recon):
    """A reconstruction fed by an alignment, both emitting through one SerialEmitter around ``sink``."""
    writer = SerialEmitter(sink)
    rec = LiveReconstruction(emit=writer, elements=("Zn",), iterations=3, worker=worker, **recon)
    align = LiveDPCAlignment(emit=[writer, rec], worker=worker)
    return writer, align, rec, ([align, rec] if alignment_first else [rec, align])


def _one_map(RE, mp, realtime: bool = True) -> float:
    """Seconds of one 16 x 20 map at 5 ms per pixel, paced in real time as on the beamline (1.6 s of dwell).

    The dwell dominates, as on the beamline: the simulation's own CPU time (~0.15 s), which a busy worker
    slows down when the cores are short, stays within the tolerance even if doubled.
    """
    mp.realtime = realtime
    try:
        t0 = time.perf_counter()
        RE(xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=5e-3))
        return time.perf_counter() - t0
    finally:
        mp.realtime = False


# ------------------------------------------------------------------ (a) the RunEngine never waits
def test_a_map_right_after_a_tomography_takes_as_long_as_alone(microprobe, monkeypatch):
    """The 3 s reconstruction of a tomography runs while the next map is taken; that map is not slowed."""
    _slow_reconstruction(monkeypatch, 3.0)
    worker, derived = LiveWorker("test-live-a"), []
    writer, align, rec, callbacks = _pipeline(worker, lambda name, doc: derived.append((name, doc)))
    RE = RunEngine({})
    RE.subscribe(writer)
    for cb in callbacks:
        RE.subscribe(cb)
    _one_map(RE, microprobe, realtime=False)  # warm-up
    alone = sorted(_one_map(RE, microprobe) for _ in range(3))[1]  # the median of three
    assert worker.wait(10)

    (tomo,) = RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=6, dwell=1e-3))
    after = _one_map(RE, microprobe)
    assert tomo not in rec.results  # the map was taken while the tomography was being reconstructed
    assert after <= 1.10 * alone, f"a map took {after:.3f} s right after a tomography, {alone:.3f} s alone"

    assert worker.wait(60)
    assert rec.results[tomo]["alignment_source"] == "live dpc alignment"
    assert align.errors == [] and rec.errors == []
    assert [(d["plan_name"], d["raw_uid"]) for n, d in derived if n == "start" and "raw_uid" in d] == [
        ("dpc_alignment", tomo), ("xfct_reconstruction", tomo)]


# ------------------------------------------------------------------ (b) two runs never mix
def _runs(docs):
    """{run uid: its documents, in order} of a stream of interleaved runs' documents."""
    runs, owner = {}, {}  # owner: descriptor or stream resource uid -> run uid
    for name, doc in docs:
        if name == "start":
            uid = doc["uid"]
        elif name in ("descriptor", "stream_resource"):
            uid = owner[doc["uid"]] = doc["run_start"]
        elif name in ("event", "event_page"):
            uid = owner[doc["descriptor"]]
        elif name == "stream_datum":
            uid = owner[doc["stream_resource"]]
        else:  # stop
            uid = doc["run_start"]
        runs.setdefault(uid, []).append((name, doc))
    return runs


def _stream(run_docs, field, stream="primary"):
    descriptors = {d["uid"] for n, d in run_docs if n == "descriptor" and d["name"] == stream}
    return np.array([d["data"][field] for n, d in run_docs if n == "event" and d["descriptor"] in descriptors])


def test_two_tomographies_back_to_back_keep_their_own_results(microprobe, monkeypatch):
    """The second tomography's documents arrive while the first is reconstructed: each derived run is
    linked to its own raw run and holds that run's angles and shifts. (The same path into a real Tiled
    server: test_reconstruction.py::test_live_reconstruction_publishes_volumes_to_tiled_and_replays.)"""
    _slow_reconstruction(monkeypatch, 1.0)
    worker, docs = LiveWorker("test-live-b"), []
    writer, align, rec, callbacks = _pipeline(worker, lambda name, doc: docs.append((name, doc)))
    RE = RunEngine({})
    RE.subscribe(writer)  # the RunEngine's documents and the worker's derived runs: one lock
    for cb in callbacks:
        RE.subscribe(cb)
    (first,) = RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=5, dwell=1e-3))
    (second,) = RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3,
                             angles=[10.0, 55.0, 100.0, 145.0, 30.0, 75.0, 120.0]))
    assert not worker.wait(0)  # still busy with them when the RunEngine was done
    assert worker.wait(60)
    assert align.errors == [] and rec.errors == []

    runs = _runs(docs)
    derived = {(run[0][1]["plan_name"], run[0][1]["raw_uid"]): run for run in runs.values() if "raw_uid" in run[0][1]}
    assert len(runs) == 6 and len(derived) == 4
    position = {id(doc): i for i, (_, doc) in enumerate(docs)}
    for (_, raw), run in derived.items():  # each derived run went in whole, after its raw run's stop
        where = [position[id(doc)] for _, doc in run]
        assert where == list(range(where[0], where[0] + len(run)))
        assert where[0] > position[id(runs[raw][-1][1])]
    for uid, n in ((first, 5), (second, 7)):
        theta = _stream(runs[uid], microprobe.rotation.name)
        assert theta.size == n
        mine = align.results[uid]
        shifts_run = derived["dpc_alignment", uid]
        assert shifts_run[0][1]["uid"] == mine["derived_uid"]
        np.testing.assert_allclose(_stream(shifts_run, "theta"), theta)
        np.testing.assert_allclose(_stream(shifts_run, "dx"), mine["shifts"][:, 1])
        volumes = derived["xfct_reconstruction", uid]
        start = volumes[0][1]
        assert start["alignment_uid"] == mine["derived_uid"] and start["alignment_source"] == "live dpc alignment"
        np.testing.assert_allclose(_stream(volumes, "theta", "shifts"), theta)
        np.testing.assert_allclose(_stream(volumes, "dx", "shifts"), mine["shifts"][:, 1])
        assert _stream(volumes, "Zn").shape == (1, SHAPE[0], SHAPE[1], SHAPE[1])

        # the same run replayed alone through a fresh alignment: the same shifts (no state from the other run)
        alone = LiveDPCAlignment(worker=worker)
        for name, doc in runs[uid]:
            alone(name, doc)
        assert alone.wait(60) and alone.errors == []
        np.testing.assert_allclose(alone.results[uid]["shifts"], mine["shifts"], atol=1e-9)


# ------------------------------------------------------------------ (c) no thread warnings, no drawing off-main
def test_no_exception_escapes_a_thread_and_figures_are_drawn_on_the_main_thread(microprobe, monkeypatch):
    import matplotlib.pyplot as plt

    escaped = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    monkeypatch.setattr(sys, "unraisablehook", escaped.append)
    figures = FigureQueue(enabled=True)  # Agg, forced on: the updates are queued, drawn by draw_pending()
    worker = LiveWorker("test-live-c")
    rec = LiveReconstruction(elements=("Zn",), iterations=2, preview_every=2, plot=True, worker=worker,
                             figures=figures)
    align = LiveDPCAlignment(emit=rec, plot=True, worker=worker, figures=figures)
    RE = RunEngine({})
    for cb in (align, rec, LiveMaps(figures=figures)):
        RE.subscribe(cb)

    def broken(name, doc):  # one malformed map reaches the reconstruction
        if name == "event" and doc["seq_num"] == 3:
            rec("event", {**doc, "data": {**doc["data"], "microprobe_scanner_Zn": "not a map"}})

    RE.subscribe(broken)
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (uid,) = RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=6, dwell=1e-3))
        assert worker.wait(60)
    assert rec.errors  # caught, logged, kept: not raised in the worker's thread
    assert align.errors == [] and uid in align.results
    assert plt.get_fignums() == []  # the worker drew nothing
    assert set(figures.pending()) == {"DPC alignment", "Live reconstruction", "xfct live maps"}
    done = []
    thread = threading.Thread(target=lambda: done.append(_raises(figures.draw_pending)))
    thread.start()
    thread.join()
    assert done == [RuntimeError]  # draw_pending refuses any thread but the main one
    assert figures.draw_pending() == 3 and figures.pending() == []
    assert {plt.figure(n).get_label() for n in plt.get_fignums()} == {"DPC alignment", "Live reconstruction",
                                                                      "xfct live maps"}
    plt.close("all")
    import gc

    gc.collect()
    assert escaped == []


def _raises(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test looks at the type
        return type(exc)
    return None


# ------------------------------------------------------------------ (d) subscription order
def test_the_subscription_order_does_not_change_the_volumes(microprobe):
    """Three pipelines on one RunEngine run: alignment then reconstruction, reconstruction then alignment
    (each on its own worker), and a reconstruction with no alignment, which aligns with DPC itself."""
    kept = {}
    pipelines = {}
    RE = RunEngine({})
    for label, first in (("alignment first", True), ("reconstruction first", False)):
        kept[label] = []
        _, align, rec, callbacks = _pipeline(LiveWorker(label), lambda n, d, k=kept[label]: k.append((n, d)),
                                             alignment_first=first)
        pipelines[label] = (align, rec, callbacks)
    alone = LiveReconstruction(elements=("Zn",), iterations=3, worker=LiveWorker("alone"))
    RE.subscribe(pipelines["reconstruction first"][2][0])
    RE.subscribe(pipelines["alignment first"][2][0])
    RE.subscribe(alone)
    RE.subscribe(pipelines["reconstruction first"][2][1])
    RE.subscribe(pipelines["alignment first"][2][1])
    (uid,) = RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=6, dwell=1e-3, order="golden"))
    results = {}
    for label, (align, rec, _) in pipelines.items():
        assert rec.wait(60) and align.errors == [] and rec.errors == []
        results[label] = rec.results[uid]
        assert results[label]["alignment_source"] == "live dpc alignment"
        np.testing.assert_array_equal(results[label]["reconstruction"].shifts, align.results[uid]["shifts"])
    a, b = (results[k]["reconstruction"].volumes for k in ("alignment first", "reconstruction first"))
    assert set(a) == set(b) == {"Zn", "phase"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert alone.wait(60) and alone.errors == [] and alone.results[uid]["alignment_source"] == "dpc"


# ------------------------------------------------------------------ what is a tomography
def test_runs_that_are_not_tomographies_are_skipped(microprobe, caplog):
    """``dwell_pair_series`` (four maps at one angle) was "reconstructed"; a single map was aligned."""
    worker, derived = LiveWorker("test-live-skip"), []
    _, align, rec, callbacks = _pipeline(worker, lambda name, doc: derived.append((name, doc)))
    RE = RunEngine({})
    for cb in callbacks:
        RE.subscribe(cb)
    with caplog.at_level("INFO", logger="xfct_bluesky.callbacks"):
        uids = [*RE(dwell_pair_series(microprobe, shape=SHAPE, pixel_size=PIXEL, dwells=(1e-3, 2e-3))),
                *RE(xrf_fly_map(microprobe, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3))]
        assert worker.wait(30)
    assert derived == [] and align.results == {} and rec.results == {}
    assert align.errors == [] and rec.errors == []
    for uid in uids:
        assert f"LiveReconstruction: run {uid[:8]}" in caplog.text
    assert "(dwell_pair_series) is not a tomography" in caplog.text


@pytest.mark.parametrize("start, expected", [
    ({"plan_name": "xfct_tomo", "n_angles": 4}, True),
    ({"plan_name": "import", "angles": [0.0, 90.0]}, True),  # an imported tomography
    ({"plan_name": "import", "theta": 12.0}, False),  # an imported map
    ({"plan_name": "import", "angles": [5.0, 5.0]}, False),
    ({"plan_name": "xrf_fly_map", "num_points": 1, "hints": {"dimensions": [(["mp_rotation"], "primary")]}}, False),
    ({"plan_name": "dwell_pair_series", "theta": 0.0, "num_points": 4,
      "hints": {"dimensions": [(["mp_scanner_map_dwell"], "primary")]}}, False),
    ({"plan_name": "list_scan", "num_points": 2, "hints": {"dimensions": [(["theta"], "primary")]}}, True),
    ({"plan_name": "count", "num_points": 5, "hints": {"dimensions": [(["time"], "primary")]}}, False),
    ({"plan_name": "xfct_reconstruction", "raw_uid": "x"}, False),
])
def test_a_tomography_is_known_from_its_start_document(start, expected):
    assert is_tomography(start) is expected


# ------------------------------------------------------------------ the pieces
def test_the_worker_runs_in_order_and_holds_a_run_until_every_member_is_done():
    worker, order = LiveWorker("test-live-worker"), []
    a, b = object(), object()
    worker.open_run("r", a)
    worker.open_run("r", b)

    def stop_of(member, label):
        if label == "b":  # b's work waits for a, which has not processed the stop yet
            worker.after_run("r", lambda: order.append("after r"))
        order.append(label)
        worker.close_run("r", member)

    worker.submit(stop_of, b, "b")
    worker.submit(time.sleep, 0.2)
    worker.submit(stop_of, a, "a")
    assert worker.wait(10)
    assert order == ["b", "a", "after r"]
    worker.after_run("r", lambda: order.append("closed"))  # a run no one is in: at once
    assert order[-1] == "closed"
    worker.submit(lambda: order.append(_raises(worker.wait)))
    assert worker.wait(10) and order[-1] is RuntimeError  # waiting on itself would never return
    worker.submit(time.sleep, 0.3)
    assert worker.wait(0.01) is False and worker.wait(10) is True


def test_the_emitter_lets_one_caller_in_at_a_time_and_a_run_in_whole():
    inside, seen, overlaps = [], [], []

    def sink(name, doc):
        if inside:
            overlaps.append((name, doc))
        inside.append(1)
        time.sleep(0.002)
        seen.append(doc["n"])
        inside.pop()

    emitter = SerialEmitter(sink)
    run = [("event", {"n": f"derived {i}"}) for i in range(20)]
    thread = threading.Thread(target=emitter.emit_run, args=(run,))
    thread.start()
    for i in range(20):
        emitter("event", {"n": f"raw {i}"})
    thread.join()
    assert overlaps == []
    derived = [i for i, n in enumerate(seen) if n.startswith("derived")]
    assert derived == list(range(derived[0], derived[0] + 20))  # the derived run went in whole
    assert SerialEmitter.around(emitter) is emitter
