"""EPICS classes (:mod:`xfct_bluesky.devices.epics`) against the project's IOC (:mod:`xfct_bluesky.ioc`).

A module fixture starts ``python -m xfct_bluesky.ioc`` on loopback, on a free
CA server port and under a random prefix, and stops it by its PID at the end.
The plans run unchanged against the EPICS microprobe and must give exactly
the maps, angles and spectra of the in-process simulation with the same seed.
Every document is schema-validated (the ``docs`` fixture of ``conftest.py``).
"""

from __future__ import annotations

import ast
import inspect
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from ophyd.utils import LimitError
from servers import running_ioc, socket_addresses

from xfct_bluesky.callbacks.fit import energy_axis
from xfct_bluesky.devices.channels import release
from xfct_bluesky.devices.sim import MAP_DTYPES, make_sim_microprobe
from xfct_bluesky.physics import ELEMENT_SYMBOLS
from xfct_bluesky.plans import dwell_pair_series, xfct_tomo, xrf_fly_map

SHAPE = (12, 16)
PIXEL = 300e-9
DWELL = 1e-3
PREFIX = f"XFCTT{uuid.uuid4().hex[:6]}:"
COMPONENTS = ("rotation", "zone_plate", "shutter", "mca", "dpc", "scanner")


# --------------------------------------------------------------------------- the IOC
def _signal(suffix: str, **kwargs):
    from ophyd import EpicsSignal

    return EpicsSignal(PREFIX + suffix, name=suffix.replace(":", "_").replace(".", "_"), **kwargs)


@pytest.fixture(scope="module")
def ioc(tmp_path_factory):
    """The microprobe IOC (seed 0, 12 x 16 maps) on loopback; CA env set for this process and the IOC."""
    from xfct_bluesky.devices.epics import use_control_layer

    data_dir = tmp_path_factory.mktemp("ioc-data")
    args = ["--prefix", PREFIX, "--seed", "0", "--shape", str(SHAPE[0]), str(SHAPE[1]), "--pixel-size", str(PIXEL),
            "--dwell", str(DWELL), "--data-dir", str(data_dir)]  # no --interfaces: the default must be loopback
    with running_ioc(args, data_dir.parent / "ioc.log") as info:
        use_control_layer("caproto")
        probe = _signal("Fly:NumRows")
        try:
            probe.wait_for_connection(timeout=10)
        except TimeoutError:
            pytest.fail(f"no PV of the IOC connected:\n{info['log'].read_text()}")
        release(probe)
        yield {"prefix": PREFIX, "data_dir": data_dir, **info}


@pytest.fixture(scope="module")
def mp(ioc):
    """The EPICS microprobe, connected to the test IOC."""
    from xfct_bluesky.devices.epics import make_epics_microprobe

    device = make_epics_microprobe(ioc["prefix"], connection_timeout=20)
    yield device
    release(device)


def _reset_simulation():
    """A fresh simulator in the IOC (seed 0), as a fresh ``make_sim_microprobe`` has."""
    reset = _signal("Sim:Reset", put_complete=True)
    reset.wait_for_connection(timeout=5)
    reset.set(1).wait(timeout=30)
    release(reset)


def _wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _changes(values, *, initial) -> list:
    """The successive distinct values after ``initial`` (repeats of a value collapsed)."""
    out = [initial]
    for value in values:
        if value != out[-1]:
            out.append(value)
    return [int(v) for v in out[1:]]


def _run_docs(RE, docs, plan) -> list[tuple[str, dict]]:
    """Run ``plan``; return its (validated) documents and clear the collector."""
    RE(plan)
    assert not docs.invalid
    out = list(docs.docs)
    docs.clear()
    return out


def _of(run_docs, name):
    return [doc for n, doc in run_docs if n == name]


def _stream_resource_path(doc: dict) -> Path:
    parsed = urlparse(doc["uri"])
    assert parsed.scheme == "file", doc["uri"]
    return Path(unquote(parsed.path))


def _assert_same_run(epics_docs, sim_docs, n_maps):
    """Same documents, data keys and data (maps equal, dtypes included); timestamps and uids aside."""
    counts = {}
    for name, _ in epics_docs:
        counts[name] = counts.get(name, 0) + 1
    assert counts == {"start": 1, "descriptor": 2, "event": n_maps + 2, "stream_resource": 1,
                      "stream_datum": n_maps, "stop": 1}
    assert [n for n, _ in epics_docs] == [n for n, _ in sim_docs]
    (e_start,), (s_start,) = _of(epics_docs, "start"), _of(sim_docs, "start")
    for key in ("plan_name", "shape", "pixel_size", "dwell", "energy", "flux", "spot_size", "theta_key", "quantities",
                "detectors", "motors", "hints", "dose_per_projection", "total_dose", "estimated_duration",
                "units", "angles", "num_points"):
        assert e_start.get(key) == s_start.get(key), key
    for e_desc, s_desc in zip(_of(epics_docs, "descriptor"), _of(sim_docs, "descriptor"), strict=True):
        assert e_desc["name"] == s_desc["name"]
        assert set(e_desc["data_keys"]) == set(s_desc["data_keys"])
        for key, s_dk in s_desc["data_keys"].items():
            e_dk = e_desc["data_keys"][key]
            for field in ("dtype", "shape", "dtype_numpy", "external"):
                assert e_dk.get(field) == s_dk.get(field), (key, field)
            if "energy_calibration" in s_dk:  # the EPICS spectra's, from the mca record's CALO/CALS/CALQ/EGU PVs
                assert e_dk.get("energy_calibration") == s_dk["energy_calibration"], key
    for e_ev, s_ev in zip(_of(epics_docs, "event"), _of(sim_docs, "event"), strict=True):
        assert set(e_ev["data"]) == set(s_ev["data"])
        for key, s_value in s_ev["data"].items():
            e_value = e_ev["data"][key]
            if isinstance(s_value, np.ndarray):
                assert isinstance(e_value, np.ndarray) and e_value.dtype == s_value.dtype, key
            np.testing.assert_array_equal(e_value, s_value, err_msg=key)
    (e_res,), (s_res,) = _of(epics_docs, "stream_resource"), _of(sim_docs, "stream_resource")
    for key in ("data_key", "mimetype", "parameters"):
        assert e_res[key] == s_res[key], key
    for e_dat, s_dat in zip(_of(epics_docs, "stream_datum"), _of(sim_docs, "stream_datum"), strict=True):
        assert e_dat["indices"] == s_dat["indices"] and e_dat["seq_nums"] == s_dat["seq_nums"]
        assert e_dat["stream_resource"] == e_res["uid"]
    (e_stop,), (s_stop,) = _of(epics_docs, "stop"), _of(sim_docs, "stop")
    assert e_stop["exit_status"] == "success" and e_stop["num_events"] == s_stop["num_events"]
    # the spectra: the IOC's HDF5 file holds what the simulation's holds
    dataset = e_res["parameters"]["dataset"]
    with h5py.File(_stream_resource_path(e_res), "r") as fe, h5py.File(_stream_resource_path(s_res), "r") as fs:
        spectra = fe[dataset][()]
        assert spectra.shape == (n_maps, *SHAPE, 2048) and spectra.dtype == np.dtype("<u4")
        np.testing.assert_array_equal(spectra, fs[dataset][()])
    return spectra


# --------------------------------------------------------------------------- devices
def test_release_leaves_nothing_on_the_shared_channel(ioc):
    """``release`` takes a destroyed signal's PV off caproto's shared PV (its connection and access callbacks)
    and off the shared monitor at once; ``destroy()`` alone leaves both until the garbage collector runs, which
    is when caproto's callback table changed size under a device being built (CI, stop 25)."""
    def registrations(sig):
        pv = sig._read_pv
        shared = pv._caproto_pv
        mine = [ref for handler in (shared.connection_state_callback, shared.access_rights_callback)
                for ref in handler.callbacks.values() if getattr(ref(), "__self__", None) is pv]
        sub = pv._auto_monitor_sub  # one for both PVs: caproto shares a monitor of the same name and mask
        return len(mine), 0 if sub is None else sum(getattr(ref(), "__self__", None) is pv
                                                      for ref in sub.callbacks.values())

    kept, freed = _signal("Fly:NumRows"), _signal("Fly:NumRows")
    for sig in (kept, freed):
        sig.wait_for_connection(timeout=5)
        sig.subscribe(lambda **kw: None)
        assert registrations(sig) == (2, 1)
    kept.destroy()
    release(freed)
    assert registrations(kept) == (2, 1)  # what the garbage collector is left to undo, at a time of its choosing
    assert registrations(freed) == (0, 0)
    release(kept)  # not left to the collector either
    assert registrations(kept) == (0, 0)


def test_describe_matches_simulation(mp, tmp_path):
    sim = make_sim_microprobe(shape=SHAPE, pixel_size=PIXEL, seed=0, hdf5_directory=tmp_path)
    for attr in COMPONENTS:
        e_dev, s_dev = getattr(mp, attr), getattr(sim, attr)
        assert set(s_dev.component_names) <= set(e_dev.component_names), attr
        assert set(e_dev.read_attrs) == set(s_dev.read_attrs), attr
        assert set(e_dev.configuration_attrs) == set(s_dev.configuration_attrs), attr
        for method in ("describe", "describe_configuration"):
            e_desc, s_desc = getattr(e_dev, method)(), getattr(s_dev, method)()
            assert set(e_desc) == set(s_desc), (attr, method)
            for key, s_dk in s_desc.items():
                assert e_desc[key]["dtype"] == s_dk["dtype"], key
                assert e_desc[key]["shape"] == s_dk["shape"], key
                assert e_desc[key].get("dtype_numpy") == s_dk.get("dtype_numpy"), key
    assert set(sim.component_names) <= set(mp.component_names)
    assert set(mp.describe()) == set(sim.describe())
    assert set(mp.describe_configuration()) == set(sim.describe_configuration())
    assert mp.beam_parameters() == sim.beam_parameters()
    assert mp.scanner.expected_shape() == SHAPE
    assert mp.scanner.map_duration(SHAPE, DWELL) == sim.scanner.map_duration(SHAPE, DWELL)
    assert mp.mca.dxp.prefix == PREFIX + "MCA:dxp1:"
    assert mp.mca.dxp.peaking_time.get() == 2.0  # the dxp record set is served, and connected


def test_motor_move_dmov_movn_transitions(mp):
    rot = mp.rotation
    assert rot.position == 0.0 and rot.motor_done_move.get() == 1
    seen = {"dmov": [], "movn": [], "rbv": []}
    tokens = [(sig, sig.subscribe(lambda value, _key=key, **kw: seen[_key].append(value), run=False))
              for sig, key in ((rot.motor_done_move, "dmov"), (rot.motor_is_moving, "movn"),
                               (rot.user_readback, "rbv"))]
    try:
        t0 = time.monotonic()
        rot.set(6.0).wait(timeout=10)
        elapsed = time.monotonic() - t0
        _wait_for(lambda: seen["movn"][-1:] == [0], what="MOVN=0")
    finally:
        for sig, token in tokens:
            sig.unsubscribe(token)
    # the caproto layer may deliver a value twice (time and ctrl subscriptions): compare the changes
    assert _changes(seen["dmov"], initial=1) == [0, 1] and _changes(seen["movn"], initial=0) == [1, 0]
    assert rot.position == 6.0 and rot.user_setpoint.get() == 6.0
    # moved at VELO (30 deg/s): 0.2 s, with readbacks on the way
    assert elapsed >= 0.8 * 6.0 / rot.velocity.get()
    assert len([v for v in seen["rbv"] if 0 < v < 6]) >= 3 and seen["rbv"][-1] == 6.0
    assert rot.motor_egu.get() == "deg" and rot.egu == "deg"
    rot.set(0.0).wait(timeout=10)
    assert rot.position == 0.0


def test_motor_limits_refused(mp):
    rot = mp.rotation
    assert rot.limits == (-360.0, 360.0)
    with pytest.raises(LimitError, match="outside the travel limits"):
        rot.move(400.0)
    assert rot.position == 0.0
    # a client that skips the check: the record refuses the target (LVIO), keeps VAL, moves nothing
    val, lvio = _signal("Rot.VAL"), _signal("Rot.LVIO")
    try:
        val.put(400.0, wait=True)
        assert lvio.get(use_monitor=False) == 1
        assert val.get(use_monitor=False) == 0.0
        assert rot.user_readback.get(use_monitor=False) == 0.0
        assert rot.motor_done_move.get(use_monitor=False) == 1
    finally:
        release(val)
        release(lvio)
    # HLM/LLM are the limits ophyd checks
    rot.high_limit_travel.put(90.0)
    try:
        _wait_for(lambda: rot.limits == (-360.0, 90.0), what="the new limits")
        with pytest.raises(LimitError):
            rot.move(100.0)
    finally:
        rot.high_limit_travel.put(360.0)
        _wait_for(lambda: rot.limits == (-360.0, 360.0), what="the limits restored")
    assert rot.position == 0.0


def test_motor_stop(mp):
    zx = mp.zone_plate.x  # 100 um/s
    status = zx.move(1000.0, wait=False)
    time.sleep(0.3)
    zx.stop()
    _wait_for(lambda: zx.motor_done_move.get(use_monitor=False) == 1, what="DMOV=1 after STOP")
    _wait_for(lambda: status.done, what="the move's status")  # EpicsMotor ends it on DMOV=1
    stopped = zx.user_readback.get(use_monitor=False)
    assert 0 < stopped < 1000.0
    assert zx.user_setpoint.get(use_monitor=False) == stopped  # VAL := RBV, as the record does
    assert zx.motor_is_moving.get(use_monitor=False) == 0
    time.sleep(0.1)
    assert zx.user_readback.get(use_monitor=False) == stopped  # and it stays there
    zx.set(0.0).wait(timeout=30)
    assert zx.position == 0.0


def test_motor_set_current_position(mp):
    """SET mode (EpicsMotor.set_current_position): the position is redefined, OFF and the limits follow."""
    zz = mp.zone_plate.z
    zz.set_current_position(5.0)
    try:
        _wait_for(lambda: zz.position == 5.0, what="the new position")
        assert zz.user_offset.get(use_monitor=False) == 5.0
        _wait_for(lambda: zz.limits == (-4995.0, 5005.0), what="the shifted limits")
        assert zz.motor_done_move.get(use_monitor=False) == 1  # nothing moved
    finally:
        zz.set_current_position(0.0)
    _wait_for(lambda: zz.position == 0.0 and zz.limits == (-5000.0, 5000.0), what="the old definition")
    assert zz.user_offset.get(use_monitor=False) == 0.0


def test_count_and_scan_point_detectors(RE, docs, mp):
    mca, dpc = mp.mca, mp.dpc
    run = _run_docs(RE, docs, bp.count([dpc, mca]))
    assert [n for n, _ in run] == ["start", "descriptor", "event", "stop"]
    (ev,) = _of(run, "event")
    data = ev["data"]
    quads = [data[getattr(dpc, q).name] for q in ("q1", "q2", "q3", "q4")]
    assert all(isinstance(q, int) and q > 0 for q in quads)
    assert data[dpc.total.name] == sum(quads)
    assert all(-1 <= data[getattr(dpc, k).name] <= 1 for k in ("dpc_x", "dpc_y", "dpc_diag"))
    spectrum = data[mca.spectrum.name]
    assert spectrum.shape == (2048,) and spectrum.dtype.str == "<u4" and spectrum.sum() > 0
    real, live = data[mca.elapsed_real_time.name], data[mca.elapsed_live_time.name]
    assert real == mca.preset_real_time.get() == 1.0 and 0 < live <= real
    assert data[mca.dead_time.name] == pytest.approx(100 * (1 - live / real))
    (desc,) = _of(run, "descriptor")
    config = desc["configuration"][mca.name]["data"]
    for i, sym in enumerate(ELEMENT_SYMBOLS):
        roi = getattr(mca.rois, f"roi{i}")
        assert roi.count.name == f"{mca.name}_{sym}" and config[roi.label.name] == sym
        lo, hi = config[roi.lo_chan.name], config[roi.hi_chan.name]
        assert data[roi.count.name] == int(spectrum[lo: hi + 1].sum()), sym

    zx = mp.zone_plate.x
    try:
        run = _run_docs(RE, docs, bp.scan([dpc], zx, -1, 1, 3))
    finally:
        zx.set(0.0).wait(timeout=10)
    events = _of(run, "event")
    assert [ev["data"][zx.name] for ev in events] == [-1.0, 0.0, 1.0]
    assert all(ev["data"][dpc.total.name] > 0 for ev in events)


# --------------------------------------------------------------------------- plans
def test_xrf_fly_map_same_as_simulation(RE, docs, mp, tmp_path):
    kwargs = {"shape": SHAPE, "pixel_size": PIXEL, "dwell": DWELL, "theta": 30.0, "md": {"sample": "s"}}
    _reset_simulation()
    epics_docs = _run_docs(RE, docs, xrf_fly_map(mp, **kwargs))
    sim = make_sim_microprobe(shape=SHAPE, pixel_size=PIXEL, seed=0, hdf5_directory=tmp_path)
    sim_docs = _run_docs(RE, docs, xrf_fly_map(sim, **kwargs))
    spectra = _assert_same_run(epics_docs, sim_docs, 1)
    primary = [d["uid"] for d in _of(epics_docs, "descriptor") if d["name"] == "primary"]
    (event,) = [e for e in _of(epics_docs, "event") if e["descriptor"] in primary]
    assert event["data"][mp.rotation.name] == 30.0
    zn = event["data"][mp.scanner.Zn.name]
    assert zn.shape == SHAPE and zn.dtype.str == "<u4" and zn.sum() > 0
    (resource,) = _of(epics_docs, "stream_resource")
    path = _stream_resource_path(resource)
    assert path.parent == Path(mp.scanner.hdf5.file_path.get()).resolve()
    # the ROI maps are sums of the spectra over the element windows
    vortex = sim.simulator.vortex
    # the descriptor says how channels map to keV, read over Channel Access, as the live fit reads it
    (desc,) = [d for d in _of(epics_docs, "descriptor") if d["name"] == "primary"]
    axis, where = energy_axis({}, desc["data_keys"][mp.scanner.spectra_key], vortex.n_channels)
    assert where.startswith("the data key's energy_calibration")
    np.testing.assert_allclose(axis, vortex.energies, atol=1e-12)
    assert mp.scanner.calibration_units.get() == "keV"
    for sym in ELEMENT_SYMBOLS:
        lo, hi = vortex.roi_window(sym)
        np.testing.assert_array_equal(spectra[0, :, :, lo:hi].sum(axis=-1), event["data"][f"{mp.scanner.name}_{sym}"])
    # cleanup ran: shutter closed, rotation back where it started
    assert mp.rotation.position == 0.0 and mp.shutter.state.get() == "closed"
    assert not mp.shutter.is_open
    mp.shutter.set("open").wait(timeout=10)


def test_xfct_tomo_same_as_simulation(RE, docs, mp, tmp_path):
    kwargs = {"shape": SHAPE, "pixel_size": PIXEL, "n_angles": 4, "dwell": DWELL}
    rot = mp.rotation
    rot.velocity.set(720.0).wait(timeout=5)  # deg/s: the motion is not what this test is about
    try:
        _reset_simulation()
        epics_docs = _run_docs(RE, docs, xfct_tomo(mp, **kwargs))
    finally:
        rot.velocity.set(30.0).wait(timeout=5)
    sim = make_sim_microprobe(shape=SHAPE, pixel_size=PIXEL, seed=0, hdf5_directory=tmp_path)
    sim.rotation.velocity.put(720.0)  # the same estimated duration in the start document
    sim_docs = _run_docs(RE, docs, xfct_tomo(sim, **kwargs))
    _assert_same_run(epics_docs, sim_docs, 4)
    primary = [d["uid"] for d in _of(epics_docs, "descriptor") if d["name"] == "primary"]
    events = [e for e in _of(epics_docs, "event") if e["descriptor"] in primary]
    np.testing.assert_allclose([e["data"][rot.name] for e in events], [0.0, 45.0, 90.0, 135.0])
    maps = {key: np.stack([e["data"][getattr(mp.scanner, key).name] for e in events]) for key in MAP_DTYPES}
    assert maps["Zn"].shape == (4, *SHAPE) and maps["dpc_x"].dtype.str == "<f4"
    assert not np.array_equal(maps["Zn"][0], maps["Zn"][1])  # different angles, different maps
    assert rot.position == 0.0
    mp.shutter.set("open").wait(timeout=10)


def test_dwell_pair_series_same_as_simulation(RE, docs, mp, tmp_path):
    kwargs = {"shape": SHAPE, "pixel_size": PIXEL, "theta": 20.0}
    mp.rotation.velocity.set(720.0).wait(timeout=5)
    try:
        _reset_simulation()
        epics_docs = _run_docs(RE, docs, dwell_pair_series(mp, **kwargs))
    finally:
        mp.rotation.velocity.set(30.0).wait(timeout=5)
    sim = make_sim_microprobe(shape=SHAPE, pixel_size=PIXEL, seed=0, hdf5_directory=tmp_path)
    sim_docs = _run_docs(RE, docs, dwell_pair_series(sim, **kwargs))
    _assert_same_run(epics_docs, sim_docs, 4)
    primary = [d["uid"] for d in _of(epics_docs, "descriptor") if d["name"] == "primary"]
    events = [e for e in _of(epics_docs, "event") if e["descriptor"] in primary]
    np.testing.assert_allclose([e["data"][mp.scanner.map_dwell.name] for e in events], [3e-3, 3e-3, 30e-3, 30e-3])
    assert mp.scanner.dwell.get() == 30e-3
    mp.scanner.dwell.set(DWELL).wait(timeout=5)
    mp.shutter.set("open").wait(timeout=10)


def test_bad_field_refused_before_anything(RE, docs, mp):
    for bad in ({"shape": (250, 250), "pixel_size": 1e-6}, {"shape": (401, 400), "pixel_size": 100e-9}):
        with pytest.raises(ValueError, match="travel|pixels"):
            RE(xrf_fly_map(mp, dwell=DWELL, **bad))
        assert len(docs) == 0
    assert mp.scanner.expected_shape() == SHAPE and mp.rotation.position == 0.0


# --------------------------------------------------------------------------- the IOC
def test_ioc_reports_a_map_it_cannot_take(mp):
    scanner = mp.scanner
    acquire = _signal("Fly:Acquire", put_complete=True)
    try:
        scanner.dwell.set(-1.0).wait(timeout=5)  # past the client's check, straight to the IOC
        acquire.set(1).wait(timeout=10)  # the put completes (a failed put would hang the client)
        assert scanner.detector_state.get(use_monitor=False) == "Error"
        assert "dwell" in scanner.status_message.get(use_monitor=False)
        with pytest.raises(ValueError, match="dwell"):
            scanner.trigger()  # the device refuses it before the IOC sees it
    finally:
        scanner.dwell.set(DWELL).wait(timeout=5)
        release(acquire)
    status = scanner.trigger()
    status.wait(timeout=10)
    assert status.success and scanner.read()[scanner.Zn.name]["value"].shape == SHAPE


def test_pause_aborts_the_map_in_flight(mp):
    """A RunEngine pause or suspension calls pause(): the IOC throws the map away; the status completes
    without error (the RunEngine has given up on it and repeats the map), as the simulated twin's."""
    scanner = mp.scanner
    realtime, num_maps = _signal("Sim:Realtime"), _signal("Sim:NumMaps_RBV")
    realtime.set(1).wait(timeout=5)  # maps take their duration: 12 x 16 x 10 ms = 1.9 s
    scanner.dwell.set(10e-3).wait(timeout=5)
    try:
        before = num_maps.get(use_monitor=False)
        status = scanner.trigger()
        _wait_for(lambda: scanner.acquire_busy.get(use_monitor=False) == 1, what="the map in flight")
        time.sleep(0.2)
        scanner.pause()
        status.wait(timeout=5)
        assert status.success
        assert scanner.detector_state.get(use_monitor=False) == "Aborted"
        assert num_maps.get(use_monitor=False) == before  # thrown away: the simulator forgets it
    finally:
        realtime.set(0).wait(timeout=5)
        scanner.dwell.set(DWELL).wait(timeout=5)
        release(realtime)
        release(num_maps)
    status = scanner.trigger()
    status.wait(timeout=10)
    assert status.success


def test_hdf5_path_outside_the_ioc_data_dir_refused(mp, ioc):
    scanner = mp.scanner
    scanner.hdf5_directory = "/"
    try:
        with pytest.raises(RuntimeError, match="outside the IOC's data folder"):
            scanner.stage()
        assert scanner.hdf5.capture_rbv.get(use_monitor=False) == 0
        assert scanner.hdf5.file_path_exists.get(use_monitor=False) == 0
    finally:
        scanner.hdf5_directory = None
        scanner.hdf5.file_path.put(str(ioc["data_dir"]), wait=True)
    assert scanner.hdf5.file_path_exists.get(use_monitor=False) == 1
    sub = ioc["data_dir"] / "sub"
    scanner.hdf5_directory = sub
    try:
        scanner.stage()
        try:
            assert Path(scanner.hdf5.full_file_name.get(use_monitor=False)).parent == sub.resolve()
        finally:
            scanner.unstage()
    finally:
        scanner.hdf5_directory = None
        scanner.hdf5.file_path.put(str(ioc["data_dir"]), wait=True)


def test_every_component_has_explicit_kind():
    from xfct_bluesky.devices import epics, epics_scanner

    trees = [ast.parse(inspect.getsource(module)) for module in (epics, epics_scanner)]
    checked = 0
    for cls in (n for tree in trees for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
                func = stmt.value.func
                if isinstance(func, ast.Name) and func.id in {"Cpt", "DDC", "Component", "FCpt"}:
                    assert "kind" in {k.arg for k in stmt.value.keywords}, f"{cls.name}.{stmt.targets[0].id}"
                    checked += 1
    assert checked > 50


def test_ioc_refuses_a_remote_interface_without_allow_remote(capsys):
    import argparse

    from xfct_bluesky.ioc import add_arguments, main_from_args

    parser = add_arguments(argparse.ArgumentParser())
    assert main_from_args(parser.parse_args(["--interfaces", "0.0.0.0"])) == 2
    assert "--allow-remote" in capsys.readouterr().err
    args = parser.parse_args([])
    assert args.interfaces == ["127.0.0.1"] and args.prefix == "XFCT:" and not args.allow_remote


def test_no_ioc_under_the_prefix_times_out_with_a_hint(ioc):
    from xfct_bluesky.devices.epics import make_epics_microprobe

    with pytest.raises(TimeoutError, match="Is its IOC running"):
        make_epics_microprobe(f"NOIOC{uuid.uuid4().hex[:6]}:", connection_timeout=1.0)


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
def test_ioc_binds_loopback_by_default(ioc):
    sockets = socket_addresses(ioc["pid"])
    tcp = [s for s in sockets if s[0] == "tcp"]
    assert any(port == ioc["port"] for _, _, port in tcp), sockets  # its CA server port is among them
    assert sockets and all(addr.startswith("127.") for _, addr, _ in sockets), sockets
