"""The 2-ID-E record layout over Channel Access: the IOC serves the checked-in configuration's records
(motor, scaler, xMAP), ``xfct-bluesky check`` finds every PV, ophyd's classes connect to the names the
real scan files record, and a bluesky step scan on them measures exactly what the simulator gives."""

from __future__ import annotations

import numpy as np
import pytest
from servers import running_ioc

from xfct_bluesky import cli
from xfct_bluesky.beamline import load_beamline
from xfct_bluesky.devices.channels import release

DWELL = 0.05


@pytest.fixture(scope="module")
def ioc(tmp_path_factory):
    with running_ioc(["--beamline", "aps-2ide", "--seed", "0"],
                     tmp_path_factory.mktemp("beamline-ioc") / "ioc.log") as info:
        yield info


@pytest.fixture(scope="module")
def devices(ioc):
    from xfct_bluesky.devices.beamline import make_beamline_devices

    device = make_beamline_devices(load_beamline("aps-2ide"), connect=30)
    yield device
    release(device)


def test_check_finds_every_pv_of_the_2ide_configuration(ioc, capsys):
    assert cli.main(["check", "--beamline", "aps-2ide", "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert "all 120 PVs answered. Nothing was moved." in out
    assert "2xfm:m53.DESC" in out and "dxpXMAP2xfm3:mca4.CALS" in out


def test_check_names_what_does_not_answer(ioc, capsys, tmp_path):
    text = load_beamline("aps-2ide").path.read_text().replace('"2xfm:m53"', '"2xfm:m99"')
    (tmp_path / "typo.yaml").write_text(text)
    assert cli.main(["check", "--beamline", str(tmp_path / "typo.yaml"), "--timeout", "2"]) == 1
    out = capsys.readouterr().out
    assert "MISSING 2xfm:m99.VAL" in out and "(roles: rotation)" in out and "Nothing was moved." in out


def test_the_classes_connect_to_the_names_the_real_files_record(devices):
    """Each role's key PVs, as ophyd's classes spell them, are PVs 2-ID-E's own MDA files record."""
    from pathlib import Path

    from xfct_bluesky.importers import read_mda

    recorded = set()
    for path in sorted((Path(__file__).parent / "data" / "xrf-maps-2ide" / "mda").glob("*.mda")):
        m = read_mda(path)
        recorded |= {pv.name for pv in m.extra_pvs}
        for scan in m.scans:
            recorded |= {x.name for x in (*scan.positioners, *scan.detectors, *scan.triggers)}
    used = set()
    for walk in devices.walk_signals():
        for attr in ("pvname", "setpoint_pvname"):
            used.add(getattr(walk.item, attr, None))
    key = {"2xfm:m53.VAL", "2xfm:m24.VAL", "2xfm:m24.RBV", "2xfm:m13.VAL", "2xfm:m13.RBV", "2xfm:scaler3.CNT",
           "2xfm:scaler3_cts1.B", "2xfm:scaler3_cts3.C", "S:SRcurrentAI", "dxpXMAP2xfm3:EraseStart",
           *(f"dxpXMAP2xfm3:mca{n}.{f}" for n in range(1, 5) for f in ("VAL", "ELTM", "ERTM", "CALO", "CALS")),
           *(f"dxpXMAP2xfm3:dxp{n}:{f}CountRate" for n in range(1, 5) for f in ("Input", "Output"))}
    assert key <= used, sorted(key - used)
    assert key <= recorded, sorted(key - recorded)


def test_a_step_scan_on_the_real_layout_measures_what_the_simulator_gives(devices, RE, docs):
    """A 3 x 3 grid of the sample stage (2xfm:m13, 2xfm:m24, mm), the scaler and the xMAP counting 50 ms at each
    point: the documents are valid (``docs``), and every count is the simulator's for that point (the same seed,
    the same calls in the same order as the IOC's: the scaler's, then the xMAP's)."""
    import bluesky.plans as bp

    from xfct_bluesky.physics import MicroprobeSimulator, mouse_egg

    devices.scaler.preset_time.put(DWELL)
    devices.fluorescence.preset_real_time.put(DWELL)
    RE(bp.grid_scan([devices.scaler, devices.fluorescence, devices.i0], devices.sample_y, -0.0006, 0.0006, 3,
                    devices.sample_x, -0.0006, 0.0006, 3))
    events = docs.events()
    assert len(events) == 9
    sim = MicroprobeSimulator(mouse_egg(seed=0), seed=0)
    for event in events:
        data = event["data"]
        beam = (-data["beamline_sample_y"] * 1e-3, -data["beamline_sample_x"] * 1e-3)  # m; the zone plate at 0
        scaler = sim.point(DWELL, 0.0, map_center=beam, spectra=False)
        xmap = sim.point(DWELL, 0.0, map_center=beam, spectra=True)
        assert data["i0"] == scaler.maps["i0"][0, 0] and data["clock"] == pytest.approx(1e7 * DWELL)
        assert data["beamline_i0"] == pytest.approx(data["i0"] / DWELL)  # the cts record holds the rate
        for role, q in (("dpc_a", "q1"), ("dpc_b", "q2"), ("dpc_c", "q3"), ("dpc_d", "q4")):
            assert data[role] == scaler.maps[q][0, 0], role
        spectra = [np.asarray(data[f"beamline_fluorescence_mcas_mca{n}_spectrum"]) for n in range(1, 5)]
        np.testing.assert_array_equal(np.sum(spectra, axis=0), xmap.spectra[0, 0])  # the four elements' sum
        assert min(s.sum() for s in spectra) > 0
        live = data["beamline_fluorescence_mcas_mca1_elapsed_live_time"]
        assert live == pytest.approx(float(xmap.maps["live_time"][0, 0])) and 0 < live <= DWELL
    assert len({e["data"]["i0"] for e in events}) > 1  # Poisson counts, not a constant
    config = next(d for d in docs.of("descriptor"))["configuration"]["beamline_fluorescence"]["data"]
    cal = sim.vortex.energy_calibration
    assert config["beamline_fluorescence_mcas_mca1_calibration_slope"] == pytest.approx(cal["gain"])
    assert config["beamline_fluorescence_mcas_mca1_calibration_offset"] == pytest.approx(cal["offset"])


def test_a_session_connects_the_configurations_records(ioc):
    from xfct_bluesky.session import Session

    with Session(store=False, live=False, persistent_md=False, journal=False, beamline="aps-2ide") as session:
        assert session.beamline.connected and session.beamline_config.beamline == "APS 2-ID-E"
        assert session.beamline.rotation.prefix == "2xfm:m53" and session.microprobe is None
        assert session.beamline.scaler.preset_time.get() > 0
