"""The second fluorescence-detector option: an Xspress3 in NSLS-II's areaDetector layout, named by a beamline
configuration, served by the IOC from the simulator and read by the Xspress3 class over Channel Access."""

from __future__ import annotations

import numpy as np
import pytest
from servers import running_ioc

from xfct_bluesky.beamline import BeamlineConfigError, load_beamline
from xfct_bluesky.devices.channels import release

PREFIX = "XF:05IDD-ES{Xsp:1}:"  # NSLS-II SRX's Xspress3, as nslsii's examples name it
EXPOSURE = 0.05


def _config_text() -> str:
    text = load_beamline("aps-2ide").path.read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("fluorescence:"))
    return text.replace(line, f'  fluorescence: {{xspress3: "{PREFIX}", channels: 4}}')


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("xspress3") / "xspress3.yaml"
    path.write_text(_config_text())
    return path


@pytest.fixture(scope="module")
def xspress3(config_path, tmp_path_factory):
    from xfct_bluesky.devices.epics import use_control_layer
    from xfct_bluesky.devices.xspress3 import xspress3_class

    with running_ioc(["--beamline", str(config_path), "--seed", "0"], config_path.parent / "ioc.log"):
        use_control_layer()
        det = xspress3_class(4)(PREFIX, name="xs3")
        det.wait_for_connection(timeout=30)
        yield det
        release(det)


def test_the_configuration_names_an_xspress3(config_path, tmp_path):
    config = load_beamline(config_path)
    assert config.roles["fluorescence"][:2] == ("xspress3", PREFIX)
    pvs = {pv for _, pv in config.pvs("fluorescence")}
    assert {f"{PREFIX}det1:Acquire", f"{PREFIX}MCA4:ArrayData", f"{PREFIX}C1SCA:9:Value_RBV"} <= pvs
    bad = tmp_path / "bad.yaml"
    bad.write_text(_config_text().replace(", channels: 4", ""))
    with pytest.raises(BeamlineConfigError, match=r"roles\.fluorescence\.channels: missing; give the Xspress3's"):
        load_beamline(bad)


def test_one_frame_is_the_simulators_point(xspress3, RE, docs):
    """bp.count on the Xspress3: the four channels' spectra sum to the simulator's, each ROI total is its
    window of the channel's spectrum, the dead-time factor real / live."""
    import bluesky.plans as bp

    from xfct_bluesky.physics import MicroprobeSimulator, mouse_egg

    xspress3.cam.acquire_time.put(EXPOSURE, wait=True)
    RE(bp.count([xspress3]))
    (event,) = docs.events()
    data = event["data"]
    assert "xs3_channels_channel_1_mca_array_data" in data, sorted(data)
    sim = MicroprobeSimulator(mouse_egg(seed=0), seed=0)
    res = sim.point(EXPOSURE, 0.0, map_center=(0.0, 0.0), spectra=True)
    spectra = [np.asarray(data[f"xs3_channels_channel_{n}_mca_array_data"]) for n in range(1, 5)]
    total = np.sum(spectra, axis=0)
    np.testing.assert_array_equal(total[:2048], res.spectra[0, 0])
    assert min(s.sum() for s in spectra) > 0
    for n, spectrum in enumerate(spectra, start=1):
        roi = getattr(xspress3.channels, f"channel_{n}").mcarois.mcaroi01
        lo, size = int(roi.min_x.get()), int(roi.size_x.get())
        assert data[f"xs3_channels_channel_{n}_mcarois_mcaroi01_total_rbv"] == spectrum[lo:lo + size].sum()
        assert data[f"xs3_channels_channel_{n}_sca_all_good"] == spectrum.sum()
        live = float(res.maps["live_time"][0, 0])
        assert data[f"xs3_channels_channel_{n}_sca_dt_factor"] == pytest.approx(EXPOSURE / live)
    assert str(xspress3.channels.channel_1.mcarois.mcaroi01.roi_name.get()) == sim.vortex.elements[0]
