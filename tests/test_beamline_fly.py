"""The fly scan on 2-ID-E's record layouts over Channel Access: the SIS3820 MCS (``2xfm:mcs:``) and the xMAP's
MCA mapping mode (``dxpXMAP2xfm3:``), stepped per pixel by the IOC's trigger source and read out per line,
make the same events and external HDF5 spectra as the simulated fly raster, every count and spectrum the
simulator's; a pixel lost or a line read out late is reported with its figures, never filled in."""

from __future__ import annotations

import time

import numpy as np
import pytest
from servers import running_ioc

from xfct_bluesky.beamline import load_beamline
from xfct_bluesky.devices.channels import release

SHAPE = (3, 4)
PIXEL = 0.6e-6  # m
DWELL = 0.02  # s per pixel
MARGIN = 2.0  # s a line may take beyond its pixels (the IOC simulates each pixel: ~70 ms on a loaded host)
DELAY = 5.0  # s the late line's readout is held back


@pytest.fixture(scope="module")
def ioc(tmp_path_factory):
    with running_ioc(["--beamline", "aps-2ide", "--seed", "0"],
                     tmp_path_factory.mktemp("beamline-fly") / "ioc.log") as info:
        yield info


@pytest.fixture(scope="module")
def fly_device(ioc):
    """The flyer of ``make_beamline_devices`` (its ``fly`` component), alone: the other records take long to
    connect and test_beamline_ioc.py covers them."""
    from xfct_bluesky.devices.beamline_fly import fly_raster_component
    from xfct_bluesky.devices.epics import use_control_layer

    use_control_layer()
    cpt = fly_raster_component(load_beamline("aps-2ide"))
    device = cpt.cls("", name="beamline_fly", **cpt.kwargs)
    device.wait_for_connection(timeout=30)
    yield device
    release(device)


@pytest.fixture
def flyer(fly_device, tmp_path):
    from xfct_bluesky.physics import MicroprobeSimulator, mouse_egg

    sim = MicroprobeSimulator(mouse_egg(seed=0), seed=0)
    fly = fly_device
    fly.hdf5_directory = tmp_path
    fly.i0_efficiency, fly.dpc_efficiency = sim.i0_efficiency, sim.dpc.efficiency
    fly.line_margin = MARGIN
    for sig, value in ((fly.num_rows, SHAPE[0]), (fly.num_cols, SHAPE[1]), (fly.pixel_size, PIXEL),
                       (fly.dwell, DWELL)):
        sig.put(value)
    return fly


def _simulated_map(fly):
    """What the simulator gives for each pixel of the flown map, called as the IOC calls it: one point per
    pixel, in the order of the lines and pixels, at the pixel's centre, for |step| / VELO seconds."""
    from xfct_bluesky.physics import MicroprobeSimulator, mouse_egg

    sim = MicroprobeSimulator(mouse_egg(seed=0), seed=0)
    geo = fly.last_geometry
    bounds = geo["start"] + np.arange(SHAPE[1] + 1) * geo["step"]
    out = []
    for y in geo["ys"]:
        row = []
        for k in range(SHAPE[1]):
            dwell = abs(bounds[k + 1] - bounds[k]) / geo["velocity"]
            beam = (-y * 1e-3, -(bounds[k] + bounds[k + 1]) / 2 * 1e-3)  # m; the zone plate at 0
            row.append((dwell, sim.point(dwell, 0.0, map_center=beam, spectra=True)))
        out.append(row)
    return sim, out


def test_a_fly_map_on_the_mcs_and_the_xmap_mapping_is_the_simulators(flyer, RE, docs):
    """3 lines x 4 pixels: the events and the HDF5 spectra of the simulated fly raster, each pixel's counts
    (I0, the four segments, the clock) and spectrum (the elements' sum) the simulator's."""
    import bluesky.plans as bp
    import h5py

    from xfct_bluesky.devices.spec import MAPS

    t0 = time.monotonic()
    RE(bp.count([flyer]))
    took = time.monotonic() - t0
    assert took < 20, took
    (event,) = docs.events()
    data = event["data"]
    name = flyer.name
    assert {f"{name}_{m.name}" for m in MAPS} | {f"{name}_map_dwell"} == set(data)
    desc = docs.of("descriptor")[0]["data_keys"]
    assert desc[f"{name}_spectra"]["shape"] == [*SHAPE, 2048] and desc[f"{name}_spectra"]["external"] == "STREAM:"
    assert desc[f"{name}_i0"]["units"] == "counts"
    (resource,) = docs.of("stream_resource")
    (datum,) = docs.of("stream_datum")
    assert datum["indices"] == {"start": 0, "stop": 1}
    with h5py.File(resource["uri"].removeprefix("file://"), "r") as f:
        spectra = f[resource["parameters"]["dataset"]][0]
    _, expected = _simulated_map(flyer)
    windows = flyer.roi_windows()
    for j, row in enumerate(expected):
        for k, (dwell, res) in enumerate(row):
            at = (j, k)
            assert data[f"{name}_i0"][j][k] == res.maps["i0"][0, 0], at
            for q in ("q1", "q2", "q3", "q4"):
                assert data[f"{name}_{q}"][j][k] == res.maps[q][0, 0], (at, q)
            np.testing.assert_array_equal(spectra[j, k], res.spectra[0, 0])
            for m in ("dpc_x", "dpc_y", "dpc_diag", "transmission"):
                assert data[f"{name}_{m}"][j][k] == pytest.approx(float(res.maps[m][0, 0]), rel=1e-6), (at, m)
            for sym, (lo, hi) in windows.items():
                assert data[f"{name}_{sym}"][j][k] == res.maps[sym][0, 0] == spectra[j, k, lo:hi].sum(), (at, sym)
            tick = 320e-9  # the xMAP's real- and live-time counters
            assert data[f"{name}_live_time"][j][k] == pytest.approx(float(res.maps["live_time"][0, 0]), abs=tick)
            assert data[f"{name}_real_time"][j][k] == pytest.approx(dwell, abs=tick)
            assert data[f"{name}_ocr"][j][k] == pytest.approx(spectra[j, k].sum() / dwell, rel=1e-4)
    assert data[f"{name}_map_dwell"] == DWELL
    assert len({data[f"{name}_i0"][j][k] for j in range(3) for k in range(4)}) > 1  # Poisson, not a constant
    clock = np.asarray(flyer.mcs.mcas.mca1.spectrum.get())[:SHAPE[1]]
    assert (clock == round(50e6 * expected[-1][0][0])).all()  # channel 1: the 50 MHz clock per pixel
    # the stages are back where they stood
    assert flyer.fast.position == pytest.approx(flyer.last_geometry["x0"])
    assert flyer.slow.position == pytest.approx(flyer.last_geometry["y0"])


def test_the_new_classes_connect_to_the_pv_names_the_real_fly_scan_recorded(fly_device):
    """The MCS channels, its NuseAll/PresetReal/ElapsedReal/Prescale, both EraseStarts: the names 2-ID-E's fly
    scan (2xfm_0011.mda) records; the mapping-mode PVs are under the xMAP prefix its files record."""
    from pathlib import Path

    from xfct_bluesky.importers import read_mda

    m = read_mda(Path(__file__).parent / "data" / "xrf-maps-2ide" / "mda" / "2xfm_0011.mda")
    recorded = {pv.name for pv in m.extra_pvs}
    for scan in m.scans:
        recorded |= {x.name for x in (*scan.positioners, *scan.detectors, *scan.triggers)}
    used = {getattr(w.item, attr, None) for w in fly_device.walk_signals() for attr in ("pvname", "setpoint_pvname")}
    key = {"2xfm:mcs:EraseStart", "2xfm:mcs:NuseAll", "2xfm:mcs:PresetReal", "2xfm:mcs:ElapsedReal",
           "2xfm:mcs:Prescale", "dxpXMAP2xfm3:EraseStart", "2xfm:m13.VAL", "dxpXMAP2xfm3:mca1.CALO",
           "dxpXMAP2xfm3:mca1.R0LO", "dxpXMAP2xfm3:mca1.R0HI", "dxpXMAP2xfm3:mca1.R0NM",
           *(f"2xfm:mcs:mca{n}.VAL" for n in range(1, 33))}
    assert key <= used, sorted(key - used)
    assert key <= recorded, sorted(key - recorded)
    mapping = {"CollectMode", "PixelsPerRun", "PixelsPerBuffer", "image1:ArrayData", "StopAll", "Acquiring"}
    assert {f"dxpXMAP2xfm3:{s}" for s in mapping} <= used
    # the trigger source is the simulated IOC's own, not a 2-ID-E record
    assert not any(pv.startswith("SIM:") for pv in recorded)


@pytest.fixture
def fault(fly_device):
    from ophyd import EpicsSignal

    sigs = {name: EpicsSignal(f"SIM:Fault:{name}", name=name) for name in ("Line", "DropPixel", "DelayLine")}
    for sig in sigs.values():
        sig.wait_for_connection(timeout=10)
    yield sigs
    sigs["DropPixel"].put(-1, wait=True)
    sigs["DelayLine"].put(0.0, wait=True)
    sigs["Line"].put(-1, wait=True)
    for sig in sigs.values():
        release(sig)


def _fails_with_line_error(flyer):
    from xfct_bluesky.devices.beamline_fly import LineError

    flyer.stage()
    try:
        status = flyer.trigger()
        with pytest.raises(Exception):  # noqa: B017 - the status's own exception is checked below
            status.wait(30)
        err = status.exception()
    finally:
        flyer.unstage()
    assert isinstance(err, LineError), err
    return err


def test_a_lost_pixel_is_reported_short_never_filled(flyer, fault):
    fault["DropPixel"].put(2, wait=True)
    fault["Line"].put(1, wait=True)
    before = flyer.i0.timestamp
    err = _fails_with_line_error(flyer)
    assert (err.line, err.expected, err.got) == (1, 4, 3)
    assert err.waited >= err.timeout == pytest.approx(6 * DWELL + MARGIN)
    message = str(err)
    assert "line 1 short: 3 of 4 pixels" in message and "MCS CurrentChannel 3" in message
    assert "xMAP buffer 3 pixels" in message and f"timeout {6 * DWELL + MARGIN:.2f} s" in message and "not filled in" in message
    assert flyer.i0.timestamp == before  # nothing was published


def test_a_late_line_is_reported_late(flyer, fault):
    fault["DelayLine"].put(DELAY, wait=True)
    fault["Line"].put(2, wait=True)
    err = _fails_with_line_error(flyer)
    assert (err.line, err.expected) == (2, 4), str(err)
    assert "line 2 late: all 4 pixels were counted" in str(err)
    assert err.timeout < err.waited < DELAY


def test_a_stopped_map_is_thrown_away_without_failing_the_status(flyer):
    """As the simulated twin: a RunEngine pause or stop throws the map away; its status completes, nothing is
    published (the RunEngine takes it again after resuming)."""
    before = flyer.i0.timestamp
    status = flyer.trigger()
    flyer.stop()
    status.wait(30)
    assert status.success and flyer.i0.timestamp == before



def test_a_map_stopped_then_taken_again_at_once_is_published_once(flyer):
    """What a RunEngine resumed after a suspension does: stop the map in flight and trigger it again at once.
    The stopped map stays stopped (it was flying on, and writing a second HDF5 frame, when the new trigger
    reset a shared stop flag) and the new one flies after the old one has stopped its records: one map
    published, one frame written."""
    flyer.stage()
    try:
        before = flyer.i0.timestamp
        first = flyer.trigger()
        flyer.stop()
        second = flyer.trigger()
        first.wait(60)
        second.wait(60)
        assert first.success and second.success
        assert flyer.i0.timestamp > before  # the second map was published
        assert flyer.get_index() == 1  # and only it: one frame of spectra
        assert np.asarray(flyer.i0.get()).shape == SHAPE
    finally:
        flyer.unstage()

def test_the_xmap_buffer_layout_round_trips_and_refuses_what_it_is_not():
    """The mapping buffer's words (xmap_buffer.py, after XIA's layout as decode_xmap_buffers.pro reads it):
    what is encoded is decoded; a word that is not a buffer tag, or a short buffer, is refused naming it."""
    from xfct_bluesky.devices.xmap_buffer import (
        CLOCK_TICK,
        decode_buffer,
        encode_buffer,
    )

    rng = np.random.default_rng(1)
    spectra = rng.integers(0, 70000, size=(3, 4, 16))
    real, live = np.full((3, 4), 0.02), np.full((3, 4), 0.015)
    words = encode_buffer(spectra, real, live, np.full((3, 4), 1000), spectra.sum(axis=2), first_pixel=8,
                          buffer_number=5)
    assert words.dtype == np.uint16 and words.size == 256 + 3 * (256 + 4 * 16)
    assert tuple(words[:4]) == (0x55AA, 0xAA55, 256, 1) and words[256] == 0x33CC
    buf = decode_buffer(words.view("<i2"))  # as the CA waveform carries it
    assert (buf.num_pixels, buf.first_pixel, buf.buffer_number, buf.errors) == (3, 8, 5, 1)  # a count > 65535
    np.testing.assert_array_equal(buf.spectra, np.minimum(spectra, 0xFFFF))
    np.testing.assert_array_equal(buf.pixel_numbers, [8, 9, 10])
    np.testing.assert_allclose(buf.real_time, real, atol=CLOCK_TICK)
    np.testing.assert_array_equal(buf.output_counts, spectra.sum(axis=2))
    with pytest.raises(ValueError, match=r"not an xMAP mapping buffer: 300 words, tags \['0x0', '0x0'\]"):
        decode_buffer(np.zeros(300, np.uint16))
    with pytest.raises(ValueError, match=r"header says 3 pixels of 320 words"):
        decode_buffer(words[:-1])



def test_xfct_tomo_runs_on_the_real_layouts_through_the_session(ioc, tmp_path):
    """``Session(beamline="aps-2ide", microprobe="beamline")``: the plans' microprobe (make_beamline_microprobe) on
    2-ID-E's records, the rotation 2xfm:m53, the zone plate, the flyer on the MCS and the xMAP mapping, the beam
    from the configuration's beam section, the spectra in the session's assets folder; ``xfct_tomo`` of 2 angles
    through the session's RunEngine: one event per projection with every map, the spectra in HDF5, every document
    valid."""
    from conftest import DocumentCollector

    from xfct_bluesky.devices.beamline_fly import BeamlineMicroprobe
    from xfct_bluesky.plans import xfct_tomo
    from xfct_bluesky.session import Session

    docs = DocumentCollector()
    # live=False: 2 angles 2 degrees apart on one line are no tomography to align or reconstruct
    with Session(tmp_path, store=False, live=False, persistent_md=False, journal=False, beamline="aps-2ide",
                 microprobe="beamline") as session:
        mp = session.microprobe
        assert isinstance(mp, BeamlineMicroprobe) and mp.connected and session.beamline.connected
        assert mp.rotation.prefix == "2xfm:m53" and mp.scanner.mcs.prefix == "2xfm:mcs:"
        assert mp.beam_parameters() == {"energy_kev": 10.2, "flux": 5e9, "spot_fwhm": [700e-9, 500e-9]}
        assert mp.scanner.hdf5_directory == session.assets_dir
        session.RE.subscribe(docs)
        (uid,) = session.RE(xfct_tomo(mp, shape=(1, 17), pixel_size=PIXEL, n_angles=2, angular_range=2.0,
                                      dwell=DWELL))
        assert mp.rotation.position == pytest.approx(0.0)  # back where it started
    assert not mp.connected  # closed with the session
    assert not docs.invalid
    start = docs.of("start")[0]
    assert start["uid"] == uid and start["plan_name"] == "xfct_tomo" and start["shape"] == [1, 17]
    assert (start["energy"], start["flux"], start["spot_size"]) == (10.2, 5e9, [700e-9, 500e-9])
    events = docs.events()
    assert len(events) == 2 and len(start["angles"]) == 2
    for event, theta in zip(events, start["angles"], strict=True):
        assert event["data"]["microprobe_rotation"] == pytest.approx(theta, abs=1e-3)
        assert np.asarray(event["data"]["microprobe_scanner_Zn"]).shape == (1, 17)
        assert np.asarray(event["data"]["microprobe_scanner_i0"]).min() > 0
    assert [d["indices"] for d in docs.of("stream_datum")] == [{"start": 0, "stop": 1}, {"start": 1, "stop": 2}]
    (resource,) = docs.of("stream_resource")
    assert resource["uri"].removeprefix("file://").startswith(str(session.assets_dir))
    assert start["quantities"]["Zn"] == "microprobe_scanner_Zn"
    assert docs.of("stop")[0]["exit_status"] == "success"


def test_a_beam_loss_on_the_ring_current_record_suspends_and_resumes_the_tomography(ioc, tmp_path):
    """``Session(..., microprobe="beamline", beam_loss=...)``: the microprobe's ``beam_current`` is the
    configuration's ring-current record (2-ID-E's ``S:SRcurrentAI``); the ring current dropped to 5 mA over
    Channel Access in the middle of the tomography suspends it (shutter closed), and back at 100 mA it resumes
    (shutter open) and finishes with each angle once."""
    import threading

    from ophyd import EpicsSignal

    from xfct_bluesky.plans import xfct_tomo
    from xfct_bluesky.session import Session

    ring = EpicsSignal("S:SRcurrentAI", name="ring")
    ring.wait_for_connection(timeout=10)
    shutter_states, events, seen = [], [], threading.Event()
    with Session(tmp_path, store=False, live=False, persistent_md=False, journal=False, beamline="aps-2ide",
                 microprobe="beamline", beam_loss={"threshold": 10, "sleep": 0.5}) as session:
        mp = session.microprobe
        assert mp.beam_current.get() == pytest.approx(100.0)  # the IOC's S:SRcurrentAI
        (suspender,) = session.RE.suspenders
        assert suspender._sig is mp.beam_current
        mp.shutter.state.subscribe(lambda value, **kw: shutter_states.append(value), run=False)

        primary = set()

        def on_doc(name, doc):
            if name == "descriptor" and doc["name"] == "primary":
                primary.add(doc["uid"])
            elif name == "event" and doc["descriptor"] in primary:
                events.append(doc["data"]["microprobe_rotation"])
                seen.set()

        session.RE.subscribe(on_doc)
        tripped = []

        def beam_dump():
            seen.wait(120)
            if not events:  # the scan ended without a projection (its own failure is reported)
                return
            time.sleep(0.3)  # into the next map (~1 s of IOC time), as a beam dump would come
            ring.put(5.0, wait=True)
            deadline = time.monotonic() + 60
            while not suspender.tripped and time.monotonic() < deadline:
                time.sleep(0.05)
            tripped.append(suspender.tripped)
            while "closed" not in shutter_states[1:] and time.monotonic() < deadline:  # the pre-plan ran
                time.sleep(0.05)
            ring.put(100.0, wait=True)

        dump = threading.Thread(target=beam_dump, daemon=True)
        dump.start()
        try:
            session.RE(xfct_tomo(mp, shape=(1, 17), pixel_size=PIXEL, n_angles=3, angular_range=4.0, dwell=DWELL))
        finally:
            seen.set()
            dump.join(60)
            ring.put(100.0, wait=True)
        assert tripped == [True], "the ring current at 5 mA did not trip the suspender"
        assert not suspender.tripped
    # opened for the scan, closed at the beam loss, opened again to resume, closed at the end
    assert shutter_states[-1] == "closed" and ["open", "closed", "open"] == [
        s for i, s in enumerate(shutter_states) if i == 0 or s != shutter_states[i - 1]][:3]
    assert len(set(np.round(events, 3))) == 3 and len(events) == 3  # each angle once: the map cut, thrown away
    release(ring)
