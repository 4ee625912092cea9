"""The Session: one front door for RunEngine, data folder, Tiled, writer, journal and live analysis."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from xfct_bluesky.plans import xfct_tomo
from xfct_bluesky.session import Session
from xfct_bluesky.storage import derived_runs, load_tomo


def test_a_session_stores_journals_and_analyses_a_tomography_then_stops_its_server(tmp_path):
    data = tmp_path / "data"
    with Session(data, microprobe="sim", beam_loss={"threshold": 1.0, "sleep": 0.1}) as s:
        assert set(s.callbacks) == {"writer", "live_spectrum_fit", "live_alignment", "live_reconstruction"}
        assert len(s.RE.suspenders) == 1  # the beam-loss suspender on the microprobe's ring current
        assert s.writer.lock is s.derived_writer.lock  # tiled's tables take one append at a time
        (uid,) = s.RE(xfct_tomo(s.microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=8, dwell=1e-3,
                                md={"sample": "session cell"}))
        s.wait(120)
        tomo = load_tomo(s.catalog[uid])
        assert tomo.maps["Zn"].shape == (8, 16, 20) and tomo.metadata["sample"] == "session cell"
        derived = {r.metadata["start"]["plan_name"]: r for r in derived_runs(s.derived, uid)}
        assert set(derived) == {"live_spectrum_fit", "dpc_alignment", "xfct_reconstruction"}  # linked by raw_uid
        # the session's reconstruction used the fit's Zn maps (its spectra fitted live)
        assert derived["xfct_reconstruction"].metadata["start"]["element_maps"] == {"Zn": "fitted spectra"}
        assert len(s.catalog) == 1 and s.catalog[-1].metadata["start"]["uid"] == uid  # cat[-1]: the scan
        shifts = np.asarray(derived["xfct_reconstruction"]["shifts"]["dx"].read())
        np.testing.assert_allclose(shifts, np.asarray(derived["dpc_alignment"]["primary"]["dx"].read()))
        for journal in (data / "journal", data / "journal" / "derived"):  # journaled, then cleared once stored
            assert journal.is_dir() and not list(journal.glob("*.jsonl"))
        uri = s.server.uri
        assert s.RE.md["scan_id"] == 1
    with pytest.raises(httpx.TransportError):  # the embedded server stopped with the session
        httpx.get(uri, timeout=2)
    with Session(data, live=False) as again:  # RE.md persists across sessions: scan ids go on
        assert again.RE.md["scan_id"] == 1 and len(again.catalog) == 1 and len(again.derived) == 3


def test_a_session_without_storage_runs_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("XFCT_BLUESKY_DATA", str(tmp_path / "never"))
    from xfct_bluesky.devices.sim import make_sim_microprobe

    def microprobe(session):  # a factory: built once the session knows its folders
        return make_sim_microprobe(shape=(16, 20), pixel_size=300e-9, save_spectra=False)

    with Session(store=False, live=False, persistent_md=False, microprobe=microprobe) as s:
        assert s.catalog is None and s.writer is None and set(s.callbacks) == set()
        docs = []
        s.subscribe("keep", lambda name, doc: docs.append(name))
        s.RE(xfct_tomo(s.microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=2, dwell=1e-3))
    assert docs[0] == "start" and docs[-1] == "stop"
    assert not (tmp_path / "never").exists()  # nothing written into a data folder


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"microprobe": "simulated"}, "microprobe='simulated': allowed 'sim', 'epics'"),
    ({"read_only": True}, "read_only=True reads the catalog only"),
    ({"elements": "Zn"}, "one string, not a list of elements"),
])
def test_bad_session_options_are_refused_before_anything_starts(tmp_path, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Session(tmp_path / "data", **kwargs)
    assert not (tmp_path / "data").exists()


def test_replay_stores_a_derived_runs_backup_into_the_derived_container(tmp_path, capsys):
    """A derived run kept in ``backup/derived`` (the server was away when the live analysis published it)
    goes back into the derived container, not among the scans."""
    import json

    import event_model

    from xfct_bluesky import cli

    data = tmp_path / "data"
    bundle = event_model.compose_run(metadata={"plan_name": "dpc_alignment", "raw_uid": "0" * 36})
    desc = bundle.compose_descriptor(name="primary", data_keys={
        "dx": {"source": "alignment", "dtype": "number", "shape": []}})
    docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc),
            ("event", desc.compose_event(data={"dx": 0.5}, timestamps={"dx": 0.0})),
            ("stop", bundle.compose_stop())]
    (data / "backup" / "derived").mkdir(parents=True)
    path = data / "backup" / "derived" / f"{bundle.start_doc['uid']}.jsonl"
    path.write_text("".join(json.dumps({"name": n, "doc": d}) + "\n" for n, d in docs))
    assert cli.main(["replay", "--data-dir", str(data)]) == 0
    assert "1 run(s) stored" in capsys.readouterr().out
    with Session(data, read_only=True, live=False) as s:
        assert len(s.catalog) == 0
        (run,) = derived_runs(s.derived, "0" * 36, "dpc_alignment")
        assert float(np.asarray(run["primary"]["dx"].read())[0]) == 0.5


def test_re_abort_is_logged_in_one_line_without_the_plans_traceback(tmp_path, caplog):
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky.utils import RunEngineInterrupted
    from ophyd.sim import det

    from xfct_bluesky.session import make_run_engine

    RE = make_run_engine(tmp_path)

    def paused_count():
        yield from bp.count([det], num=2, md={"sample": "aborted"})  # a first, complete run
        yield from bp.count([det], num=1, per_shot=lambda dets: (yield from bps.pause()))

    with pytest.raises(RunEngineInterrupted):
        RE(paused_count())
    with caplog.at_level("INFO", logger="bluesky"):
        RE.abort("the user's request")
    aborted = [r for r in caplog.records if "aborted" in r.getMessage().lower()]
    assert aborted and all(r.exc_info is None and "Traceback" not in caplog.text for r in aborted)
    assert aborted[-1].getMessage() == "Run aborted by RE.abort(): cleanup ran, exit_status 'abort'"
