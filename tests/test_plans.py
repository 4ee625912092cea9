"""Plans under a RunEngine with the simulated microprobe, and through a real Tiled server.

Every document is schema-validated by the ``docs`` fixture; counts are exact.
Bad arguments must be refused before anything moves or any document exists.
"""

from __future__ import annotations

import contextlib
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from bluesky.simulators import summarize_plan
from bluesky.utils import RunEngineInterrupted

from xfct_bluesky.physics.dose import dose_per_projection
from xfct_bluesky.plans import (
    DetectorTimeout,
    dwell_pair_series,
    estimate_tomo,
    tomo_angles,
    xfct_tomo,
    xrf_fly_map,
)

SHAPE = (12, 16)
PIXEL = 300e-9


def _primary_events(docs):
    return docs.events("primary")


def _assert_run_counts(docs, n_maps):
    c = docs.counts()
    assert c["start"] == 1 and c["stop"] == 1
    assert c["descriptor"] == 2  # baseline + primary
    assert sorted(d["name"] for d in docs.of("descriptor")) == ["baseline", "primary"]
    assert c["event"] == n_maps + 2  # two baseline readings
    assert c["stream_resource"] == 1 and c["stream_datum"] == n_maps
    stop = docs.of("stop")[0]
    assert stop["exit_status"] == "success"
    assert stop["num_events"] == {"baseline": 2, "primary": n_maps}


# ---------------------------------------------------------------------------- angles
def test_tomo_angles_orders():
    seq = tomo_angles(12, 180, "sequential")
    np.testing.assert_allclose(seq, np.arange(12) * 15.0)
    inter = tomo_angles(12, 180, "interlaced")
    np.testing.assert_allclose(np.sort(inter), seq)
    first = np.sort(inter[:3])
    assert first[0] == 0 and first[-1] >= 90  # the first loop already spans the range
    gold = tomo_angles(50, 180, "golden")
    assert len(np.unique(np.round(gold, 9))) == 50
    assert gold.min() >= 0 and gold.max() < 180
    np.testing.assert_allclose(gold[1], 180 * (np.sqrt(5) - 1) / 2)


# ---------------------------------------------------------------------------- runs
@pytest.mark.parametrize("order", ["sequential", "interlaced", "golden"])
def test_xfct_tomo_documents_and_metadata(RE, docs, microprobe, order):
    mp = microprobe
    n = 8
    est = estimate_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=n, total_dose=2e6, order=order)
    (uid,) = RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=n, total_dose=2e6, order=order,
                          md={"sample": "cell 7"}))
    _assert_run_counts(docs, n)
    start = docs.of("start")[0]
    assert start["uid"] == uid
    assert start["plan_name"] == "xfct_tomo"
    assert start["plan_args"]["order"] == order and start["plan_args"]["total_dose"] == 2e6
    assert start["hints"] == {"dimensions": [([mp.rotation.name], "primary")]}
    assert start["theta_key"] == mp.rotation.name
    np.testing.assert_allclose(start["angles"], tomo_angles(n, 180, order))
    assert start["n_angles"] == n and start["shape"] == list(SHAPE) and start["pixel_size"] == PIXEL
    assert start["total_dose"] == pytest.approx(2e6, rel=1e-9)
    assert start["dose_per_projection"] == pytest.approx(2e6 / n, rel=1e-9)
    assert start["dwell"] == pytest.approx(est.dwell, rel=1e-12)
    assert start["estimated_duration"] == pytest.approx(est.duration) and est.duration > 0
    assert start["energy"] == 10.2 and start["flux"] == 5e9 and start["spot_size"] == [700e-9, 500e-9]
    assert start["sample"] == "cell 7"  # md overrides the simulated default
    assert start["simulation"]["seed"] == 0
    events = _primary_events(docs)
    np.testing.assert_allclose([e["data"][mp.rotation.name] for e in events], tomo_angles(n, 180, order))
    assert all(e["data"][mp.scanner.map_dwell.name] == pytest.approx(est.dwell) for e in events)
    assert mp.truth.offsets.shape == (n, 2)


def test_xfct_tomo_with_dwell_and_explicit_angles(RE, docs, microprobe):
    angles = [0.0, 10.0, 45.0, 170.0]
    RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, angles=angles, dwell=2e-3))
    _assert_run_counts(docs, 4)
    start = docs.of("start")[0]
    assert start["order"] == "explicit"
    assert start["total_dose"] == pytest.approx(4 * dose_per_projection(2e-3, PIXEL), rel=1e-12)
    np.testing.assert_allclose([e["data"][microprobe.rotation.name] for e in _primary_events(docs)], angles)


def test_xrf_fly_map(RE, docs, microprobe):
    mp = microprobe
    (uid,) = RE(xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3, theta=30.0, md={"sample": "s"}))
    _assert_run_counts(docs, 1)
    start = docs.of("start")[0]
    assert start["plan_name"] == "xrf_fly_map" and start["total_dose"] == pytest.approx(
        dose_per_projection(1e-3, PIXEL))
    (event,) = _primary_events(docs)
    assert event["data"][mp.rotation.name] == 30.0
    assert np.asarray(event["data"][mp.scanner.Zn.name]).shape == SHAPE
    assert mp.rotation.position == 0.0 and mp.shutter.state.get() == "closed"


def test_dwell_pair_series(RE, docs, microprobe):
    mp = microprobe
    RE(dwell_pair_series(mp, shape=SHAPE, pixel_size=PIXEL, theta=20.0))
    _assert_run_counts(docs, 4)
    events = _primary_events(docs)
    np.testing.assert_allclose([e["data"][mp.scanner.map_dwell.name] for e in events], [3e-3, 3e-3, 30e-3, 30e-3])
    assert all(e["data"][mp.rotation.name] == 20.0 for e in events)
    start = docs.of("start")[0]
    assert start["dwells"] == [3e-3, 30e-3] and start["repeats"] == 2
    assert start["total_dose"] == pytest.approx(2 * (dose_per_projection(3e-3, PIXEL) + dose_per_projection(
        30e-3, PIXEL)))
    # 10x the dwell gives ~10x the Zn counts
    zn = [np.asarray(e["data"][mp.scanner.Zn.name]).sum() for e in events]
    assert 5 < (zn[2] + zn[3]) / max(zn[0] + zn[1], 1) < 20


def test_the_messages_of_the_scan_skeleton(RE, docs, microprobe):
    """bluesky's scan_nd with our per-step hook: the shutter opens after the start's baseline, each axis moves
    only when it changes, and the end closes the shutter, then returns the stage through messages."""
    mp = microprobe
    mp.rotation.set(5.0).wait()
    msgs = []
    RE.msg_hook = msgs.append
    RE(dwell_pair_series(mp, dwells=(1e-3, 2e-3), shape=SHAPE, pixel_size=PIXEL, theta=20.0))
    commands = [(m.command, getattr(m.obj, "name", None), m.args[:1]) for m in msgs]
    sets = [c for c in commands if c[0] == "set"]
    assert [c for c in sets if c[1] == mp.rotation.name] == [("set", mp.rotation.name, (20.0,)),
                                                             ("set", mp.rotation.name, (5.0,))]  # there, back
    dwell_sets = [c[2][0] for c in sets if c[1] == mp.scanner.dwell.name]
    assert dwell_sets == [1e-3, 1e-3, 2e-3]  # configured, then the first step and the third
    opened = commands.index(("set", mp.shutter.name, ("open",)))
    first_save = commands.index(("save", None, ()))  # the start's baseline
    first_trigger = commands.index(("trigger", mp.scanner.name, ()))
    assert commands.index(("open_run", None, ())) < first_save < opened < first_trigger
    assert sets[-2:] == [("set", mp.shutter.name, ("close",)), ("set", mp.rotation.name, (5.0,))]
    assert commands.index(("close_run", None, ())) < commands.index(("set", mp.shutter.name, ("close",)))
    n_maps = sum(c[0] == "trigger" and c[1] == mp.scanner.name for c in commands)
    assert n_maps == 4 and len(docs.events("primary")) == 4
    # a checkpoint before each map's moves and after its save: a pause never repeats a stored map
    saves = [i for i, c in enumerate(commands) if c[0] == "save"][1:-1]  # the maps' (not the baselines')
    assert all(commands[i + 1][0] == "checkpoint" for i in saves)


# ---------------------------------------------------------------------------- cleanup
def test_cleanup_after_success(RE, microprobe):
    mp = microprobe
    mp.rotation.set(5.0).wait()
    RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=3, dwell=1e-3))
    assert mp.rotation.position == 5.0
    assert mp.shutter.state.get() == "closed"


def test_cleanup_after_failure(RE, docs, microprobe, monkeypatch):
    mp = microprobe
    mp.rotation.set(5.0).wait()
    real = mp.simulator.simulate_map
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # a detector fault from the 2nd map on, through every retry
        calls["n"] += 1
        if calls["n"] >= 2:
            raise RuntimeError("detector fault (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(mp.simulator, "simulate_map", flaky)
    with pytest.raises(DetectorTimeout) as info:
        RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3, retries=1))
    assert calls["n"] == 3  # the 2nd map and its one retry
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("detector fault" in text for text in chain), chain
    assert "after 2 tries" in chain[0] and "resume=" in chain[0]
    assert mp.rotation.position == 5.0 and mp.shutter.state.get() == "closed"
    assert docs.of("stop")[0]["exit_status"] == "fail"
    assert len(_primary_events(docs)) == 1


def test_cleanup_after_abort(RE, docs, microprobe):
    mp = microprobe

    def pause_after_first(name, doc):
        # from another thread, as a user's Ctrl-C: on the RunEngine's own loop it would deadlock
        if name == "event" and doc["seq_num"] == 1 and len(_primary_events(docs)) == 1:
            threading.Thread(target=RE.request_pause).start()

    RE.subscribe(pause_after_first)
    with pytest.raises(RunEngineInterrupted):
        RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3))
    assert RE.state == "paused"
    RE.abort("test abort")
    assert mp.rotation.position == 0.0 and mp.shutter.state.get() == "closed"
    assert docs.of("stop")[0]["exit_status"] == "abort"


# ---------------------------------------------------------------------------- bad arguments
BAD = [
    (dict(n_angles=4, dwell=1e-3, total_dose=1e6), "exactly one of dwell"),
    (dict(n_angles=4), "exactly one of dwell"),
    (dict(n_angles=4, dwell=1e-3, max_dose=1e3), "over the dose budget"),
    (dict(n_angles=1, dwell=1e-3), "n_angles=1"),
    (dict(n_angles=0, dwell=1e-3), "n_angles=0"),
    (dict(angles=[-5.0, 10.0], dwell=1e-3), r"outside the angular range \[0, 180\]"),
    (dict(angles=[10.0, 200.0], dwell=1e-3), r"outside the angular range \[0, 180\]"),
    (dict(angles=[0.0, 400.0], dwell=1e-3, angular_range=360), "outside the angular range"),
    (dict(n_angles=4, dwell=1e-3, order="random"), "order='random'"),
    (dict(n_angles=4, total_dose=1.0), r"dwell=.* out of range; allowed 0.0001\.\.10 s"),
    (dict(n_angles=4, dwell=0.0), r"dwell=0.0 s is out of range"),
    (dict(n_angles=4, dwell=1e-3, shape=(16, 800)), r"reaches 120.0 um, beyond the scanning stage travel"),
]


@pytest.mark.parametrize("kwargs, message", BAD, ids=[m for _, m in BAD])
def test_bad_tomo_arguments_refused_before_anything(RE, docs, microprobe, kwargs, message):
    mp = microprobe
    mp.rotation.set(7.0).wait()
    kwargs = {"shape": SHAPE, "pixel_size": PIXEL, **kwargs}
    with pytest.raises(ValueError, match=message):
        RE(xfct_tomo(mp, **kwargs))
    assert len(docs) == 0
    assert mp.rotation.position == 7.0
    assert mp.truth.offsets.shape == (0, 2)
    assert not list(Path(mp.scanner.hdf5_directory).glob("*.h5"))


def test_rotation_limits_refused(RE, docs, microprobe):
    microprobe.rotation.low_limit_travel.put(-10.0)
    microprobe.rotation.high_limit_travel.put(90.0)
    with pytest.raises(ValueError, match=r"beyond the rotation stage limits \[-10, 90\]"):
        RE(xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3))
    assert len(docs) == 0


@pytest.mark.parametrize("plan", [
    lambda mp: dwell_pair_series(mp, dwells=(3e-3, -1.0), shape=SHAPE, pixel_size=PIXEL),
    lambda mp: xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=50.0),
    lambda mp: xrf_fly_map(mp, shape=SHAPE, pixel_size=-1.0, dwell=1e-3),
    lambda mp: xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3, theta=1000.0),
], ids=["pair-dwell", "map-dwell", "map-pixel", "map-theta"])
def test_bad_map_arguments_refused(RE, docs, microprobe, plan):
    with pytest.raises(ValueError, match="allowed|outside the travel limits"):
        RE(plan(microprobe))
    assert len(docs) == 0 and microprobe.truth.offsets.shape == (0, 2)


# ---------------------------------------------------------------------------- summarize_plan
@pytest.mark.parametrize("make", [
    lambda mp: xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=3, dwell=1e-3),
    lambda mp: xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3),
    lambda mp: dwell_pair_series(mp, shape=SHAPE, pixel_size=PIXEL),
], ids=["tomo", "map", "pairs"])
def test_summarize_plan(RE, microprobe, make):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summarize_plan(make(microprobe))
    text = out.getvalue()
    assert "Open Run" in text and "Close Run" in text and "microprobe_shutter -> close" in text
    assert microprobe.truth.offsets.shape == (0, 2)  # nothing was acquired


# ---------------------------------------------------------------------------- through Tiled
@pytest.fixture(scope="module")
def tiled_catalog(shared_tiled):
    return shared_tiled.data_dir, shared_tiled.catalog


def test_round_trip_through_tiled(RE, docs, tmp_path, tiled_catalog):
    from tiled.queries import Key

    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import RunoutModel, small_cell
    from xfct_bluesky.storage import (
        load_spectra,
        load_tomo,
        make_tiled_writer,
        v1_broker,
    )

    root, cat = tiled_catalog
    mp = make_sim_microprobe(shape=SHAPE, seed=3, specimen=small_cell(5e-6), hdf5_directory=root / "assets",
                             runout=RunoutModel(eccentricity=0.3e-6, seed=3))
    RE.subscribe(make_tiled_writer(cat, tmp_path / "backup"))
    (uid,) = RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=5, dwell=2e-3, order="golden",
                          md={"sample": "round-trip cell"}))
    (other,) = RE(xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3, md={"sample": "other"}))

    tomo = load_tomo(cat[uid])
    np.testing.assert_allclose(tomo.theta, tomo_angles(5, 180, "golden"))
    events = _primary_events(docs)[:5]
    descriptor = next(d for d in docs.of("descriptor") if d["name"] == "primary")
    map_keys = [k for k, v in descriptor["data_keys"].items() if len(v["shape"]) == 2]
    assert sorted(tomo.maps.data_key(name) for name in tomo.maps) == sorted(map_keys)  # each map once
    for key in map_keys:
        produced = np.stack([np.asarray(e["data"][key]) for e in events])
        assert tomo.maps[key].shape == (5, *SHAPE)
        assert tomo.maps[key].dtype == np.dtype(descriptor["data_keys"][key]["dtype_numpy"])
        np.testing.assert_array_equal(tomo.maps[key], produced)
    assert tomo.maps[mp.scanner.dpc_diag.name].dtype == np.float32
    assert tomo.maps[mp.scanner.Zn.name].dtype == np.uint32

    spectra = load_spectra(cat[uid], mp.scanner.spectra_key)
    assert spectra.shape == (5, *SHAPE, 2048) and spectra.dtype == np.uint32
    import h5py

    resource = docs.of("stream_resource")[0]
    with h5py.File(resource["uri"].removeprefix("file://"), "r") as f:
        np.testing.assert_array_equal(spectra, f[resource["parameters"]["dataset"]][()])
    lo, hi = mp.simulator.vortex.roi_window("Zn")
    np.testing.assert_array_equal(spectra[..., lo:hi].sum(-1), tomo.maps[mp.scanner.Zn.name])

    found = cat.search(Key("start.plan_name") == "xfct_tomo").search(Key("start.sample") == "round-trip cell")
    assert list(found) == [uid]
    assert list(cat.search(Key("start.sample") == "other")) == [other]
    assert cat[-1].metadata["start"]["uid"] == other

    from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH

    before = DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"]["BlueskyRun"]
    table = v1_broker(cat)[uid].table()
    assert len(table) == 5
    np.testing.assert_allclose(table[mp.rotation.name].to_numpy(), tomo.theta)
    # regression: databroker's Broker must not switch every later client to the v2 run layout
    assert DEFAULT_STRUCTURE_CLIENT_DISPATCH["numpy"]["BlueskyRun"] is before
    np.testing.assert_array_equal(load_tomo(cat[uid]).theta, tomo.theta)
