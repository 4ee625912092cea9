"""Fault tolerance of a night-long tomography: each fault, and what the user is left with.

pause/resume, a beam dump (suspender), a hung detector (retries), the Tiled
server killed mid-scan (backup + ``xfct-bluesky replay``), resuming an
interrupted tomography with only its missing angles, and a move beyond a
stage's limits refused before anything happens.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted
from ophyd.status import Status

from xfct_bluesky.plans import DetectorTimeout, beam_loss_suspender, xfct_tomo

SHAPE = (12, 16)
PIXEL = 300e-9
#: Seconds a map may take before the plan counts it hung: a 12 x 16 map is computed in ~0.05 s, but its first
#: one (and any on a machine busy with other work) took over 0.2 s, which made an answering detector "hung".
HUNG = 1.0


def _primary_events(docs):
    return docs.events("primary")


def _thetas(docs, mp):
    return [e["data"][mp.rotation.name] for e in _primary_events(docs)]


def _assert_every_angle_once(docs, mp, angles):
    events = _primary_events(docs)
    assert [e["seq_num"] for e in events] == list(range(1, len(angles) + 1))  # none lost, none twice
    np.testing.assert_allclose(sorted(_thetas(docs, mp)), sorted(angles), atol=1e-9)
    assert len(mp.truth.offsets) == len(angles)  # the ground truth has one row per stored map
    assert docs.of("stop")[-1]["exit_status"] == "success"


# ---------------------------------------------------------------- pause and resume
@pytest.mark.parametrize("defer", [True, False], ids=["deferred", "immediate"])
def test_pause_and_resume_lose_and_repeat_nothing(RE, docs, microprobe, defer):
    mp = microprobe
    n = 8
    pause_at = {2, 3, 5}  # several pauses, one right after another

    def pause_after(name, doc):
        # from another thread, as a user's Ctrl-C; lands anywhere between messages
        if name == "event" and doc["seq_num"] in pause_at:
            pause_at.discard(doc["seq_num"])
            threading.Thread(target=RE.request_pause, kwargs={"defer": defer}).start()

    RE.subscribe(pause_after)
    pauses = 0
    try:
        RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=n, dwell=1e-3))
    except RunEngineInterrupted:
        while RE.state == "paused":
            pauses += 1
            try:
                RE.resume()
            except RunEngineInterrupted:
                continue
    assert pauses >= 1  # the test did pause the scan
    start = docs.of("start")[0]
    _assert_every_angle_once(docs, mp, start["angles"])
    assert len(docs.of("start")) == 1  # still one run


# ---------------------------------------------------------------- beam loss
def test_beam_loss_suspends_closes_the_shutter_and_repeats_the_projection(RE, docs, microprobe, caplog, capsys):
    mp = microprobe
    mp.realtime = True  # maps take their real time (16 x 20 px x 4 ms ~ 1.3 s), so the dump lands mid-map
    RE.install_suspender(beam_loss_suspender(mp, threshold=10.0, resume_threshold=50.0, sleep=0.2))
    shutter_log: list[tuple[float, str]] = []
    mp.shutter.state.subscribe(lambda value, **kw: shutter_log.append((time.monotonic(), value)), run=False)
    dump: dict[str, float] = {}

    def beam_dump():
        dump["t0"] = time.monotonic()  # before the put: the suspender may close the shutter before put returns
        mp.beam_current.put(0.05)  # mA: the beam is gone
        # the beam stays away until the suspender has closed the shutter (at most 10 s on a loaded machine)
        deadline = dump["t0"] + 10
        while time.monotonic() < deadline and not any(v == "closed" and t >= dump["t0"] for t, v in shutter_log):
            time.sleep(0.05)
        time.sleep(0.2)
        mp.beam_current.put(100.0)
        dump["t1"] = time.monotonic()

    def dump_during_second_map(name, doc):
        if name == "event" and doc["seq_num"] == 1 and _primary_events(docs):
            threading.Timer(0.3, beam_dump).start()

    RE.subscribe(dump_during_second_map)
    n = 3
    RE(xfct_tomo(mp, shape=(16, 20), pixel_size=PIXEL, n_angles=n, dwell=4e-3))
    _assert_every_angle_once(docs, mp, docs.of("start")[0]["angles"])
    # the shutter was closed during the dump and opened again before the repeated projection
    during = [v for t, v in shutter_log if dump["t0"] <= t <= dump["t1"]]
    assert "closed" in during, shutter_log
    after = [v for t, v in shutter_log if t > dump["t1"]]
    assert after[0] == "open" and after[-1] == "closed", shutter_log  # reopened; the plan's cleanup closed it
    # every stored projection had beam: the interrupted one was thrown away and taken again
    i0 = [np.asarray(e["data"][f"{mp.scanner.name}_i0"]).mean() for e in _primary_events(docs)]
    assert min(i0) > 0.8 * max(i0), i0
    # the user is told: the RunEngine says why it suspended, the scanner which map it threw away
    assert "beam lost (microprobe_beam_current < 10)" in capsys.readouterr().out
    assert sum("interrupted and thrown away" in r.getMessage() for r in caplog.records) == 1


def test_beam_loss_suspender_refuses_bad_thresholds(microprobe):
    with pytest.raises(ValueError, match=r"resume_threshold=5.0 is below threshold=10.0"):
        beam_loss_suspender(microprobe, threshold=10, resume_threshold=5)
    with pytest.raises(ValueError, match=r"threshold=nan is not finite; allowed: a finite number >= 0"):
        beam_loss_suspender(microprobe, threshold=float("nan"))


# ---------------------------------------------------------------- hung detector
def _hang_on(mp, monkeypatch, calls_that_hang):
    """Make the scanner's trigger return a status that never finishes on the given calls (1-based)."""
    real = mp.scanner.trigger
    calls = {"n": 0}

    def trigger():
        calls["n"] += 1
        if calls["n"] in calls_that_hang:
            return Status(obj=mp.scanner)  # a detector that never answers
        return real()

    monkeypatch.setattr(mp.scanner, "trigger", trigger)
    return calls


def test_a_hung_detector_is_retried(RE, docs, microprobe, monkeypatch, caplog):
    mp = microprobe
    calls = _hang_on(mp, monkeypatch, {2, 3})  # the 2nd map hangs twice, then answers
    RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3, detector_timeout=HUNG, retries=2))
    assert calls["n"] == 6
    _assert_every_angle_once(docs, mp, docs.of("start")[0]["angles"])
    assert sum("no map within 1 s" in r.getMessage() for r in caplog.records) == 2


def test_a_detector_that_stays_hung_stops_the_plan_and_keeps_the_data(RE, docs, microprobe, monkeypatch):
    mp = microprobe
    calls = _hang_on(mp, monkeypatch, set(range(3, 100)))  # dead from the 3rd map on
    with pytest.raises(DetectorTimeout, match=r"no map within 1 s at theta=90.000 deg after 2 tries") as info:
        RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3, detector_timeout=HUNG, retries=1))
    assert "resume=" in str(info.value)
    assert calls["n"] == 4  # 2 good maps, then the 3rd and its one retry
    assert len(_primary_events(docs)) == 2  # what was acquired is in the run
    stop = docs.of("stop")[0]
    assert stop["exit_status"] == "fail", stop
    assert "no map within 1 s at theta=90.000 deg" in stop["reason"], stop["reason"]
    assert mp.shutter.state.get() == "closed"


@pytest.mark.parametrize("kwargs, message", [
    ({"retries": -1}, r"retries=-1: allowed an integer >= 0"),
    ({"retries": 1.5}, r"retries=1.5: allowed an integer >= 0"),
    ({"detector_timeout": 0}, r"detector_timeout=0: allowed None \(automatic\) or seconds > 0"),
])
def test_bad_retry_options_are_refused_before_anything(RE, docs, microprobe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3, **kwargs))
    assert len(docs) == 0


# ---------------------------------------------------------------- limits
def test_a_move_beyond_the_rotation_limits_is_refused_before_the_plan_starts(RE, docs, microprobe):
    from xfct_bluesky.plans import xrf_fly_map

    mp = microprobe
    mp.rotation.low_limit_travel.put(-10.0)  # a cable-limited stage: -10..100 deg
    mp.rotation.high_limit_travel.put(100.0)
    with pytest.raises(ValueError, match=r"angles span \[0, 150\] deg, beyond the rotation stage limits "
                                         r"\[-10, 100\] deg"):
        RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, angles=[0.0, 150.0], dwell=1e-3))
    with pytest.raises(Exception, match=r"150"):  # ophyd's LimitError names the value and the limits
        RE(xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3, theta=150.0))
    assert len(docs) == 0 and mp.rotation.position == 0.0


# ---------------------------------------------------------------- resume an interrupted tomography
@pytest.fixture
def tiled_catalog(shared_tiled):
    """The suite's Tiled server on loopback (embedded, SQLite): its runs container."""
    return shared_tiled.catalog


def test_resume_takes_only_the_missing_angles_and_links_the_first_run(RE, docs, microprobe, monkeypatch,
                                                                     tiled_catalog):
    from xfct_bluesky.storage import load_tomo, make_tiled_writer

    mp, cat = microprobe, tiled_catalog
    RE.subscribe(make_tiled_writer(cat))
    calls = _hang_on(mp, monkeypatch, set(range(4, 100)))  # the detector dies after 3 maps
    with pytest.raises(DetectorTimeout):
        RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=6, dwell=1e-3, order="interlaced",
                     detector_timeout=HUNG, retries=0, md={"sample": "egg 3"}))
    first = docs.of("start")[0]
    assert len(load_tomo(cat[first["uid"]]).theta) == 3
    monkeypatch.undo()  # the detector is repaired
    assert calls["n"] == 4

    (uid2,) = RE(xfct_tomo(mp, resume=first["uid"], catalog=cat))
    second = cat[uid2].metadata["start"]
    assert second["resumed_from"] == first["uid"] and second["sample"] == "egg 3"
    assert second["planned_angles"] == first["angles"]
    assert second["shape"] == first["shape"] and second["dwell"] == first["dwell"]
    stored = load_tomo(cat[first["uid"]]).theta  # the first run after the resume, read once (not once per angle)
    missing = [a for a in first["angles"] if a not in stored]
    np.testing.assert_allclose(second["angles"], missing)  # in the planned (interlaced) order
    both = np.concatenate([stored, load_tomo(cat[uid2]).theta])
    np.testing.assert_allclose(np.sort(both), np.sort(first["angles"]))  # every angle exactly once
    assert len(mp.truth.offsets) == 6

    # a run given as a node works too, and a complete tomography has nothing to resume
    with pytest.raises(ValueError, match=r"already has all 2 angles; nothing to resume"):
        uid3 = RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=2, dwell=1e-3))[0]
        RE(xfct_tomo(mp, resume=cat[uid3]))


def test_resume_refuses_what_it_cannot_do(RE, docs, microprobe, tiled_catalog):
    from xfct_bluesky.plans import xrf_fly_map
    from xfct_bluesky.storage import make_tiled_writer

    mp, cat = microprobe, tiled_catalog
    RE.subscribe(make_tiled_writer(cat))
    (map_uid,) = RE(xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3))
    n_docs = len(docs)
    with pytest.raises(ValueError, match=r"is a 'xrf_fly_map' run, not an xfct_tomo"):
        RE(xfct_tomo(mp, resume=map_uid, catalog=cat))
    with pytest.raises(ValueError, match=r"is a uid: give catalog="):
        RE(xfct_tomo(mp, resume=map_uid))
    with pytest.raises(ValueError, match=r"no such run in the catalog"):
        RE(xfct_tomo(mp, resume="0123456789abcdef", catalog=cat))
    with pytest.raises(ValueError, match=r"got also \['dwell', 'shape'\]: omit them"):
        RE(xfct_tomo(mp, resume=map_uid, catalog=cat, shape=SHAPE, dwell=1e-3))
    assert len(docs) == n_docs  # nothing emitted


# ---------------------------------------------------------------- the Tiled server killed mid-scan
def test_server_killed_mid_scan_nothing_lost_and_replayed(RE, docs, microprobe, tmp_path):
    import signal

    import stamina
    from servers import kill_server, start_server
    from tiled.client import from_uri

    from xfct_bluesky import cli
    from xfct_bluesky.storage import (
        embedded_server,
        load_tomo,
        make_tiled_writer,
        runs_container,
    )

    data, backup = tmp_path / "data", tmp_path / "data" / "backup"
    proc, url = start_server(data, tmp_path / "serve.log")
    key = (data / "api_key").read_text().strip()
    client = from_uri(url, api_key=key)
    try:
        RE.subscribe(make_tiled_writer(runs_container(client), backup, batch_size=1))  # written as it goes

        def kill_after_second(name, doc):
            if name == "event" and len(_primary_events(docs)) == 2 and proc.poll() is None:
                kill_server(proc, signal.SIGKILL)  # no goodbye: a crashed server

        RE.subscribe(kill_after_second)
        with stamina.set_testing(True, attempts=1):  # tiled's retries, without their back-off
            (uid,) = RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=5, dwell=1e-3))
    finally:
        client.context.close()
    assert proc.returncode is not None and docs.of("stop")[0]["exit_status"] == "success"  # the scan finished
    (kept,) = backup.glob("*.jsonl")
    assert kept.name == f"{uid.split('-')[0]}.jsonl"

    # the server is back on the same folder (in this process: a second ``serve`` subprocess would cost three
    # more interpreter start-ups, xfct-bluesky, tiled serve and tiled catalog init, for the same catalog)
    with embedded_server(data) as server:
        url, _, query = server.uri.partition("?")
        key = dict(part.split("=", 1) for part in query.split("&"))["api_key"]
        assert cli.main(["replay", str(backup), "--uri", url, "--api-key", key]) == 0
        assert not list(backup.glob("*.jsonl")) and (backup / "replayed" / kept.name).is_file()  # moved, kept
        assert cli.main(["replay", str(backup), "--uri", url, "--api-key", key]) == 0  # again: nothing to do
        client = from_uri(url, api_key=key)
        try:
            run = runs_container(client)[uid]
            assert run.metadata["stop"]["exit_status"] == "success"
            tomo = load_tomo(run)
            events = _primary_events(docs)
            assert len(tomo.theta) == len(events) == 5
            zn = f"{microprobe.scanner.name}_Zn"
            np.testing.assert_array_equal(tomo.maps[zn], np.stack([e["data"][zn] for e in events]))
        finally:
            client.context.close()
