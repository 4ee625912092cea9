"""LiveDPCAlignment under a RunEngine: accurate, off the RunEngine's thread, published as a derived run."""

from __future__ import annotations

import json
import logging

import event_model
import numpy as np
import pytest

from xfct_bluesky.analysis.align import alignment_error
from xfct_bluesky.callbacks.alignment import LiveDPCAlignment
from xfct_bluesky.devices.sim import make_sim_microprobe
from xfct_bluesky.physics import RunoutModel, small_cell
from xfct_bluesky.plans import xfct_tomo


@pytest.fixture
def mp(tmp_path):
    return make_sim_microprobe(shape=(36, 44), seed=4, specimen=small_cell(6e-6, seed=4), hdf5_directory=tmp_path,
                               runout=RunoutModel(eccentricity=1e-6, seed=4), save_spectra=False)


def _validated(collected):
    def emit(name, doc):
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        collected.append((name, doc))

    return emit


def test_live_alignment_tracks_the_runout(RE, docs, mp):
    derived = []
    live = LiveDPCAlignment(emit=_validated(derived))
    RE.subscribe(live)
    (uid,) = RE(xfct_tomo(mp, shape=(36, 44), pixel_size=300e-9, n_angles=36, dwell=3e-3, order="golden"))
    assert live.wait(60)  # the worker has aligned it (the RunEngine never waited)
    assert live.errors == []
    result = live.results[uid]
    theta, shifts = result["theta"], result["shifts"]
    assert shifts.shape == (36, 2)
    err = alignment_error(shifts, theta, mp.truth.offsets)
    assert np.all(err < 0.15), err  # measured ~0.05 px
    assert np.ptp(mp.truth.offsets[:, 1]) > 3  # there was real runout to correct
    # the derived run: start linked to the raw run, one event per projection, stop
    names = [n for n, _ in derived]
    assert names[0] == "start" and names[-1] == "stop" and names.count("event") == 36
    start = derived[0][1]
    assert start["raw_uid"] == uid and start["plan_name"] == "dpc_alignment"
    events = [d for n, d in derived if n == "event"]
    np.testing.assert_allclose([e["data"]["dx"] for e in events], shifts[:, 1])
    assert result["derived_uid"] == start["uid"]
    # the final alignment (align_projections on the run's maps) and its figures, stored with the derived run
    summary = start["alignment"]
    assert summary == result["summary"] and start["field"] == "dpc_diag"
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary  # plain JSON, no numpy types
    assert summary["method"] in ("pairwise", "matching") and summary["applied"] is True
    assert "error" not in summary and isinstance(summary["warnings"], list)
    before, after = summary["consistency"]["before"], summary["consistency"]["after"]
    assert isinstance(before, float) and isinstance(after, float)
    assert after <= before, summary  # the simulated stack is well aligned: more consistent after

    # replaying the stored documents gives the same shifts
    replay = LiveDPCAlignment()
    for name, doc in docs:
        replay(name, doc)
    assert replay.wait(60)
    np.testing.assert_allclose(replay.results[uid]["shifts"], shifts, atol=1e-9)

    # a run that names no sample (a beamline's records: only the simulated microprobes set one) gets a
    # derived run without it; regression: its start document carried sample=None, which event-model refuses
    assert docs.of("start")[0]["sample"] is not None
    anonymous = []
    unnamed = LiveDPCAlignment(emit=_validated(anonymous))
    for name, doc in docs:
        unnamed(name, {k: v for k, v in doc.items() if k != "sample"} if name == "start" else doc)
    assert unnamed.wait(60) and unnamed.errors == []
    assert anonymous[0][0] == "start" and "sample" not in anonymous[0][1] and anonymous[-1][0] == "stop"


def test_live_alignment_refuses_an_unknown_method():
    with pytest.raises(ValueError, match=r"method='bogus'.*'auto', 'pairwise', 'matching'"):
        LiveDPCAlignment(method="bogus")


def test_live_alignment_never_raises(caplog):
    live = LiveDPCAlignment()
    with caplog.at_level(logging.ERROR):
        live("start", {"uid": "x", "time": 0, "n_angles": 2})
        live("descriptor", {"uid": "d", "name": "primary", "run_start": "x", "time": 0,
                            "data_keys": {"m_dpc_diag": {"shape": [4, 4], "dtype": "array", "source": ""},
                                          "m_rotation": {"shape": [], "dtype": "number", "source": ""}}})
        live("event", {"uid": "e", "descriptor": "d", "seq_num": 1, "time": 0, "data": {}, "timestamps": {}})
        live("stop", {"uid": "s", "run_start": "x", "time": 0, "exit_status": "success"})
        assert live.wait(10)
    assert live.errors  # the bad event was logged and kept, not raised
    assert "LiveDPCAlignment" in caplog.text
