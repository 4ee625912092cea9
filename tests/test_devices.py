"""Simulated Ophyd microprobe (:mod:`xfct_bluesky.devices.sim`) under a RunEngine.

Every run's documents are validated against event-model's schemas as they are
emitted (the ``docs`` fixture of ``conftest.py``) and counted exactly. What the
devices produced (the values put into their signals) is compared with what the
documents and the external HDF5 file carry, dtypes included.
"""

from __future__ import annotations

import ast
import copy
import inspect
import math
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from ophyd import EpicsMotor, Kind
from ophyd.utils import LimitError

from xfct_bluesky.devices import signals as signals_module
from xfct_bluesky.devices import sim as sim_module
from xfct_bluesky.devices.sim import MAP_DTYPES, RotationStage, make_sim_microprobe
from xfct_bluesky.physics import ELEMENT_SYMBOLS, small_cell
from xfct_bluesky.physics.cells import EGG_DIAMETER

SHAPE = (16, 20)  # the conftest microprobe's map (ny, nx)
N_CHANNELS = 2048
CONFIG_ATTRS = {"num_rows", "num_cols", "pixel_size", "dwell", "travel", "save_spectra"}


# --------------------------------------------------------------------------- helpers
def _key(device, attr: str) -> str:
    return getattr(device, attr).name


def _record_puts(scanner) -> dict[str, list[np.ndarray]]:
    """Copy of every array the scanner puts into its map signals, per data key, in order."""
    produced: dict[str, list[np.ndarray]] = {}
    for attr in MAP_DTYPES:
        sig = getattr(scanner, attr)
        produced[sig.name] = []

        def cb(value, *, _store=produced[sig.name], **kwargs):
            _store.append(np.array(value, copy=True))

        sig.subscribe(cb, run=False)
    return produced


def _stream_resource_path(doc: dict) -> Path:
    parsed = urlparse(doc["uri"])
    assert parsed.scheme == "file", doc["uri"]
    return Path(unquote(parsed.path))


def _check_scanner_run(mp, docs, n_events: int, produced: dict[str, list[np.ndarray]]):
    """Checks shared by every scanner run: counts, order, data keys, event payloads."""
    scanner = mp.scanner
    ny, nx = SHAPE
    counts = docs.counts()
    assert dict(counts) == {
        "start": 1, "descriptor": 1, "event": n_events,
        "stream_resource": 1, "stream_datum": n_events, "stop": 1,
    }
    names = docs.names()
    assert names[0] == "start" and names[-1] == "stop"
    assert names.index("descriptor") < names.index("event")
    assert names.index("descriptor") < names.index("stream_resource") < names.index("stream_datum")
    (stop,) = docs.of("stop")
    assert stop["exit_status"] == "success"
    assert stop["num_events"] == {"primary": n_events}

    (desc,) = docs.of("descriptor")
    keys = desc["data_keys"]
    for attr, dtype in MAP_DTYPES.items():
        dk = keys[_key(scanner, attr)]
        assert dk["dtype"] == "array"
        assert dk["dtype_numpy"] == dtype == np.dtype(dtype).str
        assert dk["shape"] == [ny, nx]
        assert "external" not in dk
    spectra_key = keys[scanner.spectra_key]
    assert spectra_key["external"] == "STREAM:"
    assert spectra_key["shape"] == [ny, nx, N_CHANNELS]
    assert spectra_key["dtype_numpy"] == "<u4"
    # every array key carries dtype_numpy in np.dtype.str form
    for name, dk in keys.items():
        if dk["dtype"] == "array":
            assert dk["dtype_numpy"] == np.dtype(dk["dtype_numpy"]).str, name
    assert set(desc["configuration"][scanner.name]["data"]) == {_key(scanner, a) for a in CONFIG_ATTRS}

    events = docs.of("event")
    assert [ev["seq_num"] for ev in events] == list(range(1, n_events + 1))
    for i, ev in enumerate(events):
        assert ev["descriptor"] == desc["uid"]
        assert scanner.spectra_key not in ev["data"]  # external: announced by StreamDatum only
        for attr, dtype in MAP_DTYPES.items():
            name = _key(scanner, attr)
            value = ev["data"][name]
            assert isinstance(value, np.ndarray), name
            assert value.dtype.str == dtype, name
            assert value.shape == (ny, nx), name
            np.testing.assert_array_equal(value, produced[name][i], err_msg=name)
    # the last event holds what the signals hold now
    for attr in MAP_DTYPES:
        np.testing.assert_array_equal(events[-1]["data"][_key(scanner, attr)], getattr(scanner, attr).get())

    (resource,) = docs.of("stream_resource")
    assert resource["data_key"] == scanner.spectra_key
    assert resource["run_start"] == docs.of("start")[0]["uid"]
    for i, datum in enumerate(docs.of("stream_datum")):
        assert datum["stream_resource"] == resource["uid"]
        assert datum["descriptor"] == desc["uid"]
        assert datum["indices"] == {"start": i, "stop": i + 1}
        assert datum["seq_nums"] == {"start": i + 1, "stop": i + 2}
    return desc, events, resource


# --------------------------------------------------------------------------- 1. scanner runs
def test_count_scanner_documents(RE, docs, microprobe):
    mp = microprobe
    produced = _record_puts(mp.scanner)
    (uid,) = RE(bp.count([mp.scanner]))
    assert docs.of("start")[0]["uid"] == uid
    _check_scanner_run(mp, docs, 1, produced)
    assert mp.truth.offsets.shape == (1, 2)
    assert mp.truth.thetas == [0.0]


def test_list_scan_rotation_documents(RE, docs, microprobe):
    mp = microprobe
    angles = [0.0, 30.0, 60.0]
    produced = _record_puts(mp.scanner)
    RE(bp.list_scan([mp.scanner], mp.rotation, angles))
    desc, events, _ = _check_scanner_run(mp, docs, len(angles), produced)

    # the rotation readback (named like EpicsMotor's: the motor's own name) equals the request
    assert desc["data_keys"][mp.rotation.name]["dtype"] == "number"
    assert [ev["data"][mp.rotation.name] for ev in events] == angles
    assert [ev["data"][mp.rotation.user_setpoint.name] for ev in events] == angles
    assert mp.rotation.position == angles[-1]

    # ground truth: one offset per projection acquired, in acquisition order
    truth = mp.truth
    assert truth.thetas == angles
    assert truth.offsets.shape == (len(angles), 2)
    pixel = mp.scanner.pixel_size.get()
    offsets_m = truth.offsets * pixel
    # jitter is 10 nm rms and drift negligible: each row sits on its own angle's runout
    np.testing.assert_allclose(offsets_m, truth.runout.systematic(np.array(angles)), atol=60e-9, rtol=0)
    # exactly: replaying the seeded runout at the recorded (angle, start time) sequence
    replay = copy.deepcopy(truth.runout)
    replay.reset()
    expected = np.array([replay.sample(t, s) for t, s in zip(truth.thetas, truth.times, strict=True)])
    np.testing.assert_allclose(offsets_m, expected, rtol=1e-12, atol=1e-18)
    assert truth.times == sorted(truth.times) and len(set(truth.times)) == len(angles)


def test_reconfigured_shape_between_runs(RE, docs, microprobe):
    """The descriptor follows num_rows/num_cols, not the shape of the previous map."""
    mp = microprobe
    RE(bp.count([mp.scanner]))
    docs.clear()
    mp.scanner.num_rows.put(8)
    mp.scanner.num_cols.put(12)
    RE(bp.count([mp.scanner]))
    (desc,) = docs.of("descriptor")
    assert desc["data_keys"][mp.scanner.Zn.name]["shape"] == [8, 12]
    assert desc["data_keys"][mp.scanner.spectra_key]["shape"] == [8, 12, N_CHANNELS]
    (ev,) = docs.of("event")
    assert ev["data"][mp.scanner.Zn.name].shape == (8, 12)


# --------------------------------------------------------------------------- 2. point detectors
def test_dpc_scan_scalars(RE, docs, microprobe):
    mp = microprobe
    RE(bp.scan([mp.dpc], mp.zone_plate.x, -1, 1, 3))
    assert dict(docs.counts()) == {"start": 1, "descriptor": 1, "event": 3, "stop": 1}
    (desc,) = docs.of("descriptor")
    quads = ("q1", "q2", "q3", "q4")
    for attr in (*quads, "total", "dpc_x", "dpc_y", "dpc_diag"):
        assert desc["data_keys"][_key(mp.dpc, attr)]["shape"] == []
    events = docs.of("event")
    assert [ev["data"][mp.zone_plate.x.name] for ev in events] == [-1.0, 0.0, 1.0]
    for ev in events:
        data = ev["data"]
        q = [data[_key(mp.dpc, k)] for k in quads]
        assert all(np.ndim(v) == 0 for v in data.values())
        assert min(q) > 0
        assert data[_key(mp.dpc, "total")] == sum(q)
        for k in ("dpc_x", "dpc_y", "dpc_diag"):
            assert -1 <= data[_key(mp.dpc, k)] <= 1
    # the DPC point measurement does not record a projection
    assert mp.truth.offsets.shape == (0, 2)


def test_mca_count_spectrum_and_rois(RE, docs, microprobe):
    mp = microprobe
    mca = mp.mca
    RE(bp.count([mca]))
    assert dict(docs.counts()) == {"start": 1, "descriptor": 1, "event": 1, "stop": 1}
    (desc,) = docs.of("descriptor")
    spec_key = desc["data_keys"][mca.spectrum.name]
    assert spec_key["shape"] == [N_CHANNELS]
    assert spec_key["dtype_numpy"] == "<u4"
    config = desc["configuration"][mca.name]["data"]

    (ev,) = docs.of("event")
    data = ev["data"]
    spectrum = data[mca.spectrum.name]
    assert spectrum.shape == (N_CHANNELS,)
    assert spectrum.dtype.str == "<u4"
    assert spectrum.sum() > 0

    real = data[mca.elapsed_real_time.name]
    live = data[mca.elapsed_live_time.name]
    assert real == config[mca.preset_real_time.name] == 1.0
    assert 0 < live <= real
    assert data[mca.dead_time.name] == pytest.approx(100 * (1 - live / real))

    for i, sym in enumerate(ELEMENT_SYMBOLS):
        roi = getattr(mca.rois, f"roi{i}")
        assert config[roi.label.name] == sym
        lo, hi = config[roi.lo_chan.name], config[roi.hi_chan.name]
        # EPICS mca record convention: channels lo_chan..hi_chan inclusive
        # (VortexModel.roi_window is the half-open [lo, hi + 1))
        assert (lo, hi + 1) == mp.simulator.vortex.roi_window(sym)
        assert 0 <= lo <= hi < N_CHANNELS
        assert roi.count.name == f"{mca.name}_{sym}"
        assert data[roi.count.name] == int(spectrum[lo : hi + 1].sum()), sym
    assert data[f"{mca.name}_Zn"] > 0


# --------------------------------------------------------------------------- 3. external spectra
def test_hdf5_spectra_match_roi_maps(RE, docs, microprobe):
    mp = microprobe
    angles = [0.0, 45.0]
    RE(bp.list_scan([mp.scanner], mp.rotation, angles))
    (resource,) = docs.of("stream_resource")
    assert resource["mimetype"] == "application/x-hdf5"
    path = _stream_resource_path(resource)
    assert path.parent == Path(mp.scanner.hdf5_directory).resolve()
    events = docs.of("event")
    with h5py.File(path, "r") as f:
        dset = f[resource["parameters"]["dataset"]]
        assert dset.shape == (len(angles), *SHAPE, N_CHANNELS)
        assert dset.dtype == np.dtype("<u4")
        spectra = dset[()]
    vortex = mp.simulator.vortex
    for i, ev in enumerate(events):
        for sym in ELEMENT_SYMBOLS:
            lo, hi = vortex.roi_window(sym)
            np.testing.assert_array_equal(
                spectra[i, :, :, lo:hi].sum(axis=-1), ev["data"][_key(mp.scanner, sym)], err_msg=sym
            )
        assert ev["data"][_key(mp.scanner, "Zn")].sum() > 0
    assert not np.array_equal(spectra[0], spectra[1])


# --------------------------------------------------------------------------- 4. shutter
def test_closed_shutter_gives_zero_maps(RE, docs, microprobe):
    mp = microprobe
    mp.shutter.set("close").wait()
    assert not mp.shutter.is_open
    RE(bp.count([mp.scanner]))
    (ev,) = docs.of("event")
    for attr in MAP_DTYPES:
        value = ev["data"][_key(mp.scanner, attr)]
        if attr in ("live_time", "real_time"):  # the detector still counts (nothing) for the dwell
            np.testing.assert_allclose(value, mp.scanner.dwell.get(), rtol=1e-6)
        else:
            assert not value.any(), attr
    (resource,) = docs.of("stream_resource")
    with h5py.File(_stream_resource_path(resource), "r") as f:
        assert not f[resource["parameters"]["dataset"]][()].any()

    docs.clear()
    mp.shutter.set("open").wait()
    RE(bp.count([mp.scanner]))
    (ev,) = docs.of("event")
    for attr in ("i0", "q1", "q2", "q3", "q4", "transmission"):
        assert ev["data"][_key(mp.scanner, attr)].all(), attr
    assert ev["data"][_key(mp.scanner, "Zn")].sum() > 0  # few counts per pixel: some pixels are 0


def test_shutter_rejects_unknown_command(microprobe):
    with pytest.raises(ValueError, match="'half'"):
        microprobe.shutter.set("half")
    assert microprobe.shutter.is_open


# --------------------------------------------------------------------------- 5. motors
@pytest.mark.parametrize("target", [400.0, -360.5])
def test_motor_limits_refused_before_moving(microprobe, target):
    rot = microprobe.rotation
    rot.set(10).wait(1)
    with pytest.raises(LimitError) as info:
        rot.set(target)
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert f"{target:g}" in msg and "-360" in msg and "360" in msg and rot.name in msg
    assert rot.position == 10.0
    assert rot.user_setpoint.get() == 10.0
    assert not rot.moving


def test_motor_limits_refused_in_plan(RE, docs, microprobe):
    mp = microprobe
    with pytest.raises(LimitError):
        RE(bp.list_scan([mp.scanner], mp.rotation, [0, 30, 400]))
    assert mp.rotation.position == 30.0  # stopped at the last valid angle, never beyond
    assert len(docs.of("event")) == 2
    assert docs.of("stop")[0]["exit_status"] == "fail"


@pytest.mark.parametrize("bad", [math.nan, math.inf, "ten", True])  # True was taken as 1 um
def test_motor_non_numbers_refused(microprobe, bad):
    x = microprobe.zone_plate.x
    with pytest.raises(ValueError, match=r"position=.* (is not finite|not a number); allowed: a finite position"):
        x.set(bad)
    assert x.position == 0.0


def test_motor_set_moves(microprobe):
    rot = microprobe.rotation
    status = rot.set(30)
    status.wait(1)
    assert status.success
    assert rot.position == 30.0
    assert rot.user_setpoint.get() == 30.0
    assert rot.read()[rot.name]["value"] == 30.0
    assert not rot.moving and rot.motor_done_move.get() == 1


def test_realtime_motor_takes_distance_over_velocity(microprobe):
    x = microprobe.zone_plate.x
    x.realtime = True
    x.velocity.put(100.0)  # um/s: 5 um take 50 ms
    t0 = time.monotonic()
    status = x.set(5.0)
    assert not status.done
    assert x.moving and x.motor_done_move.get() == 0
    status.wait(2)
    elapsed = time.monotonic() - t0
    assert status.success and x.position == 5.0 and not x.moving
    assert 0.045 <= elapsed < 1.0


def test_realtime_scanner_takes_map_duration(microprobe):
    mp = microprobe
    mp.realtime = True
    mp.scanner.num_rows.put(2)
    mp.scanner.num_cols.put(5)
    mp.scanner.dwell.put(0.01)  # 10 pixels of 10 ms: 100 ms
    t0 = time.monotonic()
    status = mp.scanner.trigger()
    status.wait(5)
    assert status.success
    assert time.monotonic() - t0 >= 0.095


# --------------------------------------------------------------------------- 6. scanner configuration
@pytest.mark.parametrize(
    "setup, value",
    [
        (lambda mp: mp.scanner.num_cols.put(1000), "reaches 150.0 um"),  # 1000 x 300 nm: half field 150 um
        (lambda mp: mp.zone_plate.x.set(150).wait(1), "(0.0, 150.0) um reaches 153.0 um"),  # centre beyond travel
    ],
    ids=["field", "centre"],
)
def test_field_beyond_travel_refused(RE, docs, microprobe, setup, value):
    mp = microprobe
    setup(mp)
    with pytest.raises(ValueError, match="travel") as info:
        RE(bp.count([mp.scanner]))
    msg = str(info.value)
    assert value in msg
    assert "+-100.0 um" in msg  # the travel
    # refused at stage(), before the run opened: no document at all, no file written
    assert sum(docs.counts().values()) == 0, docs.counts()
    assert not list(Path(mp.scanner.hdf5_directory).glob("*.h5"))
    assert mp.truth.offsets.shape == (0, 2)  # nothing acquired
    # the same check runs on a bare trigger, synchronously
    with pytest.raises(ValueError, match="travel"):
        mp.scanner.trigger()


@pytest.mark.parametrize("dwell", [0.0, -1e-3, math.nan])
def test_bad_dwell_refused(RE, docs, microprobe, dwell):
    mp = microprobe
    mp.scanner.dwell.put(dwell)
    with pytest.raises(ValueError, match="dwell"):
        RE(bp.count([mp.scanner]))
    assert docs.counts()["event"] == 0
    assert mp.truth.offsets.shape == (0, 2)


def test_bad_dwell_refused_at_build(tmp_path):
    with pytest.raises(ValueError, match="dwell=0"):
        make_sim_microprobe(shape=(4, 4), dwell=0, specimen=small_cell(5e-6), hdf5_directory=tmp_path)


# --------------------------------------------------------------------------- 7. reproducibility
def _maps_of(seed: int, tmp_path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    mp = make_sim_microprobe(shape=(8, 10), seed=seed, specimen=small_cell(5e-6, seed=seed),
                             hdf5_directory=tmp_path)
    mp.rotation.set(20).wait(1)
    mp.scanner.trigger().wait(10)
    return {a: getattr(mp.scanner, a).get().copy() for a in MAP_DTYPES}, mp.truth.offsets


def test_same_seed_same_maps(tmp_path):
    maps_a, off_a = _maps_of(3, tmp_path)
    maps_b, off_b = _maps_of(3, tmp_path)
    for attr in MAP_DTYPES:
        np.testing.assert_array_equal(maps_a[attr], maps_b[attr], err_msg=attr)
    np.testing.assert_array_equal(off_a, off_b)


def test_different_seeds_differ(tmp_path):
    maps_a, off_a = _maps_of(3, tmp_path)
    maps_b, off_b = _maps_of(4, tmp_path)
    for attr in ("i0", "q1", "Zn"):
        assert not np.array_equal(maps_a[attr], maps_b[attr]), attr
    assert not np.array_equal(off_a, off_b)


# --------------------------------------------------------------------------- 8. components
@pytest.mark.parametrize("module", [sim_module, signals_module], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_component_has_explicit_kind(module):
    tree = ast.parse(inspect.getsource(module))
    checked = 0
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
                func = stmt.value.func
                if isinstance(func, ast.Name) and func.id in {"Cpt", "DDC", "Component", "FCpt"}:
                    kwargs = {k.arg for k in stmt.value.keywords}
                    assert "kind" in kwargs, f"{cls.name}.{stmt.targets[0].id} has no explicit kind"
                    checked += 1
    assert checked > 10


def test_scanner_kinds(microprobe):
    scanner = microprobe.scanner
    for attr in MAP_DTYPES:
        assert getattr(scanner, attr).kind == Kind.normal, attr
    for attr in CONFIG_ATTRS:
        assert getattr(scanner, attr).kind == Kind.config, attr
    # the maps, plus possibly scalar readbacks; nothing hinted (2D maps are not for live plots)
    assert set(MAP_DTYPES) <= set(scanner.read_attrs)
    for attr in scanner.read_attrs:
        assert getattr(scanner, attr).kind == Kind.normal, attr
    arrays = {name for name in scanner.component_names
              if isinstance(getattr(scanner, name), signals_module.ArraySignal)}
    assert arrays == set(MAP_DTYPES)
    assert set(scanner.configuration_attrs) == CONFIG_ATTRS


def _epics_attrs(kind: Kind) -> set[str]:
    """Component names of ``ophyd.EpicsMotor`` read (normal/hinted) or configured by default."""
    defaults = {Kind.normal: EpicsMotor._default_read_attrs, Kind.config: EpicsMotor._default_configuration_attrs}
    if defaults[kind] is not None:
        return set(defaults[kind])
    return {name for name, cpt in EpicsMotor._sig_attrs.items() if cpt.kind & kind}


@pytest.mark.parametrize("path", ["rotation", "zone_plate.x", "zone_plate.y", "zone_plate.z"])
def test_motors_have_epics_motor_names(microprobe, path):
    motor = microprobe
    for part in path.split("."):
        motor = getattr(motor, part)
    assert motor.user_readback.name == motor.name
    assert motor.hints == {"fields": [motor.name]}
    assert set(motor.read_attrs) == _epics_attrs(Kind.normal) == {"user_readback", "user_setpoint"}
    assert set(motor.configuration_attrs) == _epics_attrs(Kind.config)
    assert set(motor.component_names) <= set(EpicsMotor.component_names)
    for name in motor.component_names:
        assert type(motor)._sig_attrs[name].kind == EpicsMotor._sig_attrs[name].kind, name


def test_rotation_stage_class_matches_epics_motor():
    assert set(RotationStage.component_names) <= set(EpicsMotor.component_names)
    for required in ("user_readback", "user_setpoint", "velocity", "motor_egu", "motor_done_move",
                     "high_limit_travel", "low_limit_travel", "motor_stop"):
        assert required in RotationStage.component_names


# --------------------------------------------------------------------------- 9. simulators
def test_summarize_plan(RE, microprobe, capsys):
    from bluesky.simulators import summarize_plan

    mp = microprobe
    summarize_plan(bp.count([mp.scanner]))
    out = capsys.readouterr().out
    assert "Open Run" in out and mp.scanner.name in out and "Close Run" in out
    assert mp.truth.offsets.shape == (0, 2)  # nothing was triggered
    (uid,) = RE(bp.count([mp.scanner]))  # the plan still runs for real afterwards
    assert isinstance(uid, str)


def test_check_limits(RE, microprobe):
    from bluesky.simulators import check_limits

    mp = microprobe
    check_limits(bp.list_scan([mp.scanner], mp.rotation, [0, 30, 60]))
    with pytest.raises(LimitError):
        check_limits(bp.list_scan([mp.scanner], mp.rotation, [0, 400]))
    assert mp.rotation.position == 0.0


# --------------------------------------------------------------------------- 10. defaults
def test_default_microprobe_is_the_egg():
    t0 = time.perf_counter()
    mp = make_sim_microprobe()
    assert time.perf_counter() - t0 < 1.0
    specimen = mp.truth.specimen
    assert specimen is mp.simulator.specimen
    assert "mouse egg" in specimen.name
    assert specimen.info["diameter"] == EGG_DIAMETER
    assert mp.scanner.expected_shape() == (32, 32)
    assert mp.shutter.is_open


def test_trigger_outside_plan_without_spectra():
    mp = make_sim_microprobe()
    calls = []
    simulate_map = mp.simulator.simulate_map

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return simulate_map(*args, **kwargs)

    mp.simulator.simulate_map = spy
    status = mp.scanner.trigger()
    status.wait(10)
    assert status.success
    assert [c["spectra"] for c in calls] == [False]  # unstaged: no spectra computed
    assert mp.scanner.spectra_key not in mp.scanner.describe()
    assert list(mp.scanner.collect_asset_docs()) == []
    assert mp.scanner.get_index() == 0
    reading = mp.scanner.read()
    zn = reading[mp.scanner.Zn.name]["value"]
    assert zn.shape == (32, 32) and zn.dtype.str == "<u4" and zn.sum() > 0
    assert mp.truth.offsets.shape == (1, 2)
