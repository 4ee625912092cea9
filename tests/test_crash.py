"""A crash of the acquiring process loses at most the map in flight (issue 12, item 1).

The acquisition runs in a subprocess (``acquire_until_killed.py``) writing to
a real Tiled server over HTTP on loopback, with the session's journaled
TiledWriter; the test kills it with SIGKILL in the middle of a tomography,
recovers the run from the journal and the HDF5 file, checks every map
emitted before the kill against what the process reported, and resumes the
tomography with only the missing angles.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

HERE = Path(__file__).parent
KILL_AFTER = 3  # projections reported before the kill (of 7: acquire_until_killed.py)


@pytest.fixture(scope="module")
def server(shared_tiled):
    return shared_tiled.server, shared_tiled.catalog, shared_tiled.data_dir


def _acquire_and_kill(uri: str, root: Path) -> tuple[str, list[dict]]:
    """Start the acquisition, read its reports until KILL_AFTER projections, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, str(HERE / "acquire_until_killed.py"), uri, str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reports = []
        while len(reports) < KILL_AFTER + 1:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the acquisition ended before the kill:\n{proc.stderr.read()[-3000:]}")
            reports.append(json.loads(line))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return reports[0]["start"], reports[1:]


def test_kill_9_mid_tomography_then_recover_and_resume(server):
    from bluesky import RunEngine

    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import small_cell
    from xfct_bluesky.plans import xfct_tomo
    from xfct_bluesky.storage import (
        load_spectra,
        load_tomo,
        make_tiled_writer,
        recover_journal,
    )

    srv, cat, root = server
    earlier = set((root / "assets").glob("*.h5"))  # the suite's server: other modules' spectra are there too
    uid, reported = _acquire_and_kill(srv.uri, root)
    journal = root / "journal"
    assert (journal / f"{uid}.jsonl").exists()
    assert not cat[uid].metadata.get("stop"), "the dead process cannot have stored a stop document"
    with pytest.raises(ValueError, match=r"no 'primary' events in Tiled and no stop document.*xfct-bluesky recover"):
        load_tomo(cat[uid])  # was KeyError: "Key 'microprobe_rotation' not found"

    results = recover_journal(journal, cat)
    assert [(r[1], r[2].split(":")[0]) for r in results] == [(uid, "recovered")]
    assert not list(journal.glob("*.jsonl")) and (journal / "recovered" / f"{uid}.jsonl").exists()

    run = cat[uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail" and stop["reason"].startswith("acquisition process died")
    tomo = load_tomo(run)
    n = tomo.theta.size
    # every projection reported before the kill is there; at most one more (emitted after the last report read)
    assert KILL_AFTER <= n <= KILL_AFTER + 1 and stop["num_events"]["primary"] == n
    assert tomo.metadata["sample"] == "crash test"
    for report, theta, zn in zip(reported, tomo.theta, tomo.maps["microprobe_scanner_Zn"], strict=False):
        assert theta == pytest.approx(report["theta"])
        assert hashlib.sha256(np.asarray(zn, dtype=float).tobytes()).hexdigest() == report["zn"]
    spectra = load_spectra(run, "microprobe_scanner_spectra")
    assert spectra.shape[:3] == (n, 16, 20) and spectra.sum() > 0
    (h5_path,) = set((root / "assets").glob("*.h5")) - earlier  # the one file the killed process wrote
    with h5py.File(h5_path, "r") as h5:  # readable without swmr=True once recovered
        shapes = []
        h5.visititems(lambda name, obj: shapes.append(obj.shape) if isinstance(obj, h5py.Dataset) else None)
        assert shapes and shapes[0][0] >= n and shapes[0][1:3] == (16, 20)

    # resume: only the missing angles, in a new run linked to the recovered one
    RE = RunEngine({})
    RE.subscribe(make_tiled_writer(cat, root / "backup", journal_directory=journal))
    mp = make_sim_microprobe(shape=(16, 20), pixel_size=300e-9, seed=0, specimen=small_cell(5e-6),
                             hdf5_directory=root / "assets")
    (resumed_uid,) = RE(xfct_tomo(mp, resume=uid, catalog=cat))
    resumed = load_tomo(cat[resumed_uid])
    assert resumed.metadata["resumed_from"] == uid
    planned = np.asarray(run.metadata["start"]["angles"])
    both = np.concatenate([tomo.theta, resumed.theta])
    assert both.size == planned.size  # each planned angle exactly once
    np.testing.assert_allclose(np.sort(both), np.sort(planned), atol=1e-6)
    assert not list(journal.glob("*.jsonl")), "a run stored whole leaves no journal behind"


def _docs_of_a_run(RE, microprobe):
    from xfct_bluesky.plans import xrf_fly_map

    docs = []
    token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(xrf_fly_map(microprobe, shape=(16, 20), pixel_size=300e-9, dwell=1e-4))
    RE.unsubscribe(token)
    return docs


def _journal_of_a_dead_run(directory: Path, RE, microprobe) -> str:
    """Write into ``directory`` the journal a run leaves when its process dies before the stop; its uid."""
    from event_model import NumpyEncoder

    directory.mkdir()
    docs = [(n, d) for n, d in _docs_of_a_run(RE, microprobe) if n != "stop"]
    uid = docs[0][1]["uid"]
    (directory / f"{uid}.jsonl").write_text(
        "".join(json.dumps({"name": n, "doc": d}, cls=NumpyEncoder) + "\n" for n, d in docs))
    return uid


def test_journal_is_deleted_once_the_run_is_stored_and_kept_when_the_writer_fails(tmp_path, RE, microprobe):
    from xfct_bluesky.storage import JournaledWriter, RunJournal

    stored = []
    journal = RunJournal(tmp_path / "journal")
    RE.subscribe(JournaledWriter(lambda name, doc: stored.append(name), journal))
    (uid,) = RE(__import__("xfct_bluesky.plans", fromlist=["xrf_fly_map"]).xrf_fly_map(
        microprobe, shape=(16, 20), pixel_size=300e-9, dwell=1e-4))
    assert stored[0] == "start" and stored[-1] == "stop"
    assert not journal.path(uid).exists()

    def refuse_stop(name, doc):
        if name == "stop":
            raise ConnectionError("Tiled went away at the stop document")

    journal2 = RunJournal(tmp_path / "journal2")
    writer = JournaledWriter(refuse_stop, journal2)
    docs = _docs_of_a_run(RE, microprobe)
    with pytest.raises(ConnectionError):
        for name, doc in docs:
            writer(name, doc)
    kept = [json.loads(line)["name"] for line in journal2.path(docs[0][1]["uid"]).read_text().splitlines()]
    assert kept == [name for name, _ in docs]


def test_recover_drops_a_line_cut_by_the_crash_and_skips_a_run_in_progress(server, RE, microprobe):
    from event_model import NumpyEncoder

    from xfct_bluesky.storage import RunJournal, load_tomo, recover_journal

    _, cat, root = server
    directory = root / "journal-cut"
    directory.mkdir()
    docs = [(n, d) for n, d in _docs_of_a_run(RE, microprobe) if n != "stop"]
    uid = docs[0][1]["uid"]
    lines = [json.dumps({"name": n, "doc": d}, cls=NumpyEncoder) for n, d in docs]
    assert docs[-1][0] == "event"  # the end-of-run baseline, cut in half by the "crash"
    (directory / f"{uid}.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])

    live = RunJournal(directory)  # a run still being acquired holds its file's lock
    live("start", {**docs[0][1], "uid": "live-run"})
    try:
        results = {r[1] or r[0].stem: r[2] for r in recover_journal(directory, cat)}
        assert results["live-run"].startswith("in progress") and (directory / "live-run.jsonl").exists()
    finally:
        live.finish("live-run", stored=True)
    stop = cat[uid].metadata["stop"]
    assert results[uid].startswith("recovered: 2 events") and stop["num_events"] == {"primary": 1, "baseline": 1}
    assert stop["exit_status"] == "fail" and load_tomo(cat[uid]).theta.size == 1


def test_recover_refuses_a_journal_damaged_before_its_end(server, tmp_path):
    from xfct_bluesky.storage import recover_journal

    _, cat, _ = server
    (tmp_path / "bad.jsonl").write_text('{"name": "start", "doc": {}}\nnot json\n{"name": "stop", "doc": {}}\n')
    ((path, uid, outcome),) = recover_journal(tmp_path, cat)
    assert uid is None and "line 2: not a JSON document" in outcome and path.exists()


def test_a_document_that_cannot_be_stored_aborts_the_run_naming_it(tmp_path):
    from xfct_bluesky.storage import RunJournal

    journal = RunJournal(tmp_path)
    with pytest.raises(TypeError, match="start document of run 'u1' cannot be stored"):
        journal("start", {"uid": "u1", "time": 0.0, "x": 1 + 2j})
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_session_stores_the_runs_a_crash_left_when_it_starts(server, RE, microprobe, caplog):

    from xfct_bluesky.session import _recover_dead_runs

    _, cat, root = server
    directory = root / "journal-session"
    uid = _journal_of_a_dead_run(directory, RE, microprobe)
    (directory / "damaged.jsonl").write_text("not json\n{}\n")
    with caplog.at_level("INFO", logger="xfct_bluesky.session"):
        _recover_dead_runs(directory, cat)
    by_level = {r.levelname: r.getMessage() for r in caplog.records if r.name == "xfct_bluesky.session"}
    assert f"run {uid}" in by_level["WARNING"] and "recovered: 3 events" in by_level["WARNING"]
    assert "damaged.jsonl" in by_level["ERROR"] and "not a JSON document" in by_level["ERROR"]
    assert cat[uid].metadata["stop"]["exit_status"] == "fail"


def test_xfct_bluesky_recover_stores_the_journal_and_says_what_it_did(server, RE, microprobe, capsys):

    from xfct_bluesky.cli import main

    srv, cat, root = server
    directory = root / "journal-cli"
    uid = _journal_of_a_dead_run(directory, RE, microprobe)
    base, _, query = srv.uri.partition("?")
    key = dict(part.split("=", 1) for part in query.split("&"))["api_key"]
    assert main(["recover", str(directory), "--uri", base, "--api-key", key]) == 0
    out = capsys.readouterr().out
    assert f"{uid[:8]}  recovered: 3 events, exit status fail" in out and "1 run(s) stored, 0 kept" in out
    assert cat[uid].metadata["stop"]["reason"].startswith("acquisition process died")
    assert main(["recover", str(directory), "--uri", base, "--api-key", key]) == 0
    assert "no journal files in" in capsys.readouterr().out
