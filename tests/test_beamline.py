"""Beamline configurations: the checked-in 2-ID-E one against the real scan files it was written from,
bad files refused naming the key and the fix, and ``xfct-bluesky check`` against the simulated IOC."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from xfct_bluesky.beamline import CONFIGS, ROLES, BeamlineConfigError, load_beamline

DATA = Path(__file__).parent / "data" / "xrf-maps-2ide"


@pytest.fixture(scope="module")
def mda_names():
    """Every PV name the three real MDA files record, by where: positioners, detectors, triggers, extra PVs
    (with their values, for .DESC)."""
    from xfct_bluesky.importers import read_mda

    names = {"positioner": set(), "detector": set(), "trigger": set(), "extra": {}}
    for path in sorted((DATA / "mda").glob("*.mda")):
        m = read_mda(path)
        for scan in m.scans:
            names["positioner"].update(p.name for p in scan.positioners)
            names["detector"].update(d.name for d in scan.detectors)
            names["trigger"].update(t.name for t in scan.triggers)
        names["extra"].update((pv.name, pv.value) for pv in m.extra_pvs)
    return names


@pytest.fixture(scope="module")
def override():
    """The beamline's own table of its scaler and detector PVs (XRF-Maps' fit-parameter override file)."""
    table = {}
    for line in (DATA / "maps_fit_parameters_override.txt").read_text(errors="replace").splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*):\s*(\S+:\S+)\s*$", line)
        if m:
            table[m.group(1)] = m.group(2)
    return table


def test_every_checked_in_configuration_loads_and_fills_the_required_roles():
    for name in CONFIGS:
        config = load_beamline(name)
        assert all(role in config.roles for role, spec in ROLES.items() if spec.required), name
        assert len({pv for _, pv in config.pvs()}) == len(config.pvs()), f"{name}: a PV listed twice"


def test_the_2ide_motors_are_the_records_its_files_name_and_describe(mda_names):
    config = load_beamline("aps-2ide")
    extra = mda_names["extra"]
    described = {"rotation": "tomo rotation", "zone_plate_x": "ZP X", "zone_plate_y": "ZP Y", "zone_plate_z": "ZP Z",
                 "sample_x": "samX", "sample_y": "Sample Y"}
    for role, description in described.items():
        kind, record, _ = config.roles[role]
        assert kind == "motor"
        assert f"{record}.VAL" in extra, (role, record)
        assert extra[f"{record}.DESC"] == description, (role, record, extra.get(f"{record}.DESC"))
    assert extra["2xfm:m53.EGU"] == "degrees"  # the rotation is in degrees, as the plans' theta
    # the sample stage is what the step scans move: the positioners of the 2016 standard's scan
    assert {f"{config.record('sample_x')}.VAL", f"{config.record('sample_y')}.VAL"} <= mda_names["positioner"]
    # the scaler counted at each step is the one the scan triggers
    assert f"{config.record('scaler')}.CNT" in mda_names["trigger"]


def test_the_2ide_counters_are_the_beamlines_own_scaler_table(mda_names, override):
    config = load_beamline("aps-2ide")
    roles = {"i0": "US_IC", "dpc_a": "CFG_2", "dpc_b": "CFG_3", "dpc_c": "CFG_4", "dpc_d": "CFG_5",
             "ring_current": "SRCURRENT"}
    for role, maps_name in roles.items():
        _, pv, extras = config.roles[role]
        assert pv == override[maps_name], (role, pv, override[maps_name])
        assert pv in mda_names["detector"], (role, pv)  # recorded per pixel in the step scans
        if "fly" in extras:  # ... and per pixel as an MCS channel in the fly scan (MAPS' renaming)
            assert extras["fly"] in mda_names["detector"], (role, extras["fly"])


def test_the_2ide_fluorescence_pvs_are_the_xmap_records_its_files_read(mda_names, override):
    config = load_beamline("aps-2ide")
    kind, prefix, extras = config.roles["fluorescence"]
    assert (kind, extras["elements"]) == ("xmap", 4)
    recorded = mda_names["detector"] | set(mda_names["extra"]) | mda_names["trigger"]
    for n in range(1, 5):
        for pv in (f"{prefix}mca{n}.VAL", f"{prefix}mca{n}.ELTM", f"{prefix}mca{n}.ERTM", f"{prefix}mca{n}.CALO",
                   f"{prefix}mca{n}.CALS", f"{prefix}mca{n}.CALQ", f"{prefix}dxp{n}:InputCountRate",
                   f"{prefix}dxp{n}:OutputCountRate"):
            assert pv in recorded, pv
            assert pv in {p for _, p in config.pvs("fluorescence")}, pv
    assert f"{prefix}EraseStart" in mda_names["trigger"]
    assert override["ICR1"].startswith(prefix) and override["ELT1"].startswith(prefix)
    # every PV the configuration lists is a record the beamline has: named somewhere in its files,
    # but for the fields any record of that type has and the files had no reason to record
    records = {name.split(".")[0] for name in recorded} | {name.rsplit(":", 1)[0] + ":" for name in recorded}
    for role, pv in config.pvs():
        assert pv.split(".")[0] in records or pv.startswith(prefix), (role, pv)


def _beam(energy="10.2", flux="5.0e+9", spot="[7.0e-7, 5.0e-7]") -> str:
    """A file whose beam section has these figures (checked before its roles)."""
    return f"beamline: X\nbeam: {{energy_kev: {energy}, flux: {flux}, spot_fwhm: {spot}}}\nroles: {{}}\n"


@pytest.mark.parametrize(("text", "key", "fix"), [
    ("beamline: X\nroles: {}\nextra: 1\n", "extra: unknown key", "allowed at the top level"),
    ("roles: {}\n", "beamline: missing", "name the beamline"),
    ("beamline: X\nroles:\n  rotaton: {motor: 'a:m1'}\n", "roles.rotaton: unknown role", "the roles are"),
    ("beamline: X\nroles:\n  rotation: {motor: 'a:m1'}\n", "roles.zone_plate_x: missing", "every configuration fills"),
    ("beamline: X\nroles:\n  rotation: 'a:m1'\n", "roles.rotation: a bare name", "{motor: 'a:m1'}"),
    ("beamline: X\nroles:\n  rotation: {signal: 'a:m1'}\n", "roles.rotation.signal: a signal cannot be the rotation",
     "use one of motor"),
    ("beamline: X\nroles:\n  rotation: {motor: 'a:m1', signal: 'b'}\n", "names 2 kinds", "exactly one of motor"),
    ("beamline: X\nroles:\n  rotation: {motor: 'a m1'}\n", "roles.rotation.motor: 'a m1' is not a PV name",
     "exactly as the IOC serves it"),
    ("beamline: X\nroles:\n  rotation: {motor: 'a:m1', speed: 3}\n", "roles.rotation.speed: unknown key",
     "allowed here: motor, source, note"),
    ("beamline: X\nroles: [1, 2\n", "not YAML", "fix the line"),
    (_beam(energy="0.5"), "beam.energy_kev=0.5: allowed 1..100 keV", "Give the beam energy in keV"),
    (_beam(energy="'ten'"), "beam.energy_kev='ten' is a string, not a number; allowed: 1..100 keV",
     "Give the beam energy"),
    (_beam(flux="5"), "beam.flux=5: allowed 1000..1e+15 photons/s", "in photons/s, e.g. 5.0e+9"),
    (_beam(spot="[700, 500]"), "beam.spot_fwhm[0]=700: allowed 1e-09..0.001 m", "in metres, horizontal then"),
    (_beam(spot="7.0e-7"), "beam.spot_fwhm: 7e-07 is not two numbers (horizontal, vertical)",
     "allowed [h, v], each 1e-09..0.001 m"),
    ("beamline: X\nbeam: {energy_kev: 10.2, flux: 5.0e+9}\nroles: {}\n", "beam.spot_fwhm: missing",
     "the beam section gives energy_kev, flux, spot_fwhm"),
    ("beamline: X\nbeam: {energy: 10.2}\nroles: {}\n", "beam.energy: unknown key",
     "allowed here: energy_kev, flux, spot_fwhm, source, note"),
    ("beamline: X\nbeam: 10.2\nroles: {}\n", "beam: 10.2 is not a mapping", "write e.g. 'beam: {energy_kev"),
])
def test_a_bad_file_is_refused_naming_the_key_and_the_fix(tmp_path, text, key, fix):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BeamlineConfigError) as err:
        load_beamline(path)
    assert str(path) in str(err.value) and key in str(err.value) and fix in str(err.value), str(err.value)


def test_an_xmap_needs_its_number_of_elements(tmp_path):
    text = load_beamline("aps-2ide").path.read_text()
    for bad, said in (("elements: 4", "roles.fluorescence.elements: missing"),
                      ("elements: 0", "roles.fluorescence.elements=0: allowed an integer in 1..64")):
        path = tmp_path / "x.yaml"
        path.write_text(text.replace(", elements: 4", "" if bad == "elements: 4" else ", " + bad))
        with pytest.raises(BeamlineConfigError, match=re.escape(said)):
            load_beamline(path)


def test_the_prefix_of_the_simulated_ioc_is_replaced():
    config = load_beamline("sim-ioc", prefix="ABC:")
    assert config.record("rotation") == "ABC:Rot"
    assert all(pv.startswith("ABC:") for _, pv in config.pvs())
    assert load_beamline("sim-ioc").record("rotation") == "XFCT:Rot"


def test_the_2ide_beam_is_the_founding_papers_and_its_files_agree(mda_names, override):
    """The beam section of aps-2ide.yaml: the founding paper's beam at 2-ID-E (10.2 keV, 5e9 photons/s, a 700 x 500 nm
    spot: the simulator's constants, from the same paper); the scan files' undulator readout and the fit file's
    incident energy agree with the energy."""
    from xfct_bluesky.beamline.config import check_microprobe
    from xfct_bluesky.physics import constants as C

    config = load_beamline("aps-2ide")
    assert config.beam == {"energy_kev": C.BEAM_ENERGY_KEV, "flux": C.FLUX, "spot_fwhm": list(C.PROBE_FWHM)}
    assert check_microprobe(config) == {"energy_kev": 10.2, "flux": 5e9, "spot_fwhm": (700e-9, 500e-9)}
    undulator = float(mda_names["extra"]["ID02ds:Energy.VAL"][0])  # keV, "Average Energy Readout"
    assert undulator == pytest.approx(config.beam["energy_kev"], rel=0.02)
    text = (DATA / "maps_fit_parameters_override.txt").read_text(errors="replace")
    low, high = (float(re.search(rf"^COHERENT_SCT_ENERGY_{k}:\s*(\S+)", text, re.MULTILINE).group(1))
                 for k in ("MIN", "MAX"))
    assert low <= config.beam["energy_kev"] <= high


def test_plain_yaml_numbers_are_numbers(tmp_path):
    """PyYAML reads ``5e9`` (no dot) as a string: the beam section takes it as the number it is written as."""
    text = load_beamline("aps-2ide").path.read_text()
    text = text.replace("flux: 5.0e+9", "flux: 5e9").replace("[700.0e-9, 500.0e-9]", "[700e-9, 0.5e-6]")
    (tmp_path / "b.yaml").write_text(text)
    assert load_beamline(tmp_path / "b.yaml").beam == {"energy_kev": 10.2, "flux": 5e9, "spot_fwhm": [700e-9, 500e-9]}


def test_the_plans_microprobe_is_refused_on_records_without_a_beam_or_a_fly_raster(monkeypatch, tmp_path):
    """Session(microprobe="beamline") checks the configuration when it is made, before anything connects: no beam
    section, no MCS fly arrays, no xMAP, no configuration at all are each refused naming the key and the fix."""
    from xfct_bluesky.session import Session, make_microprobe

    for name in ("XFCT_BLUESKY_BEAMLINE", "XFCT_BLUESKY_HARDWARE", "XFCT_BLUESKY_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    text = load_beamline("aps-2ide").path.read_text()
    no_beam = tmp_path / "no-beam.yaml"
    no_beam.write_text(text[:text.index("beam:\n")] + text[text.index("roles:\n"):])
    assert load_beamline(no_beam).beam is None  # optional for the records (session.beamline, step scans) ...
    with pytest.raises(BeamlineConfigError) as err:  # ... needed for the plans' microprobe
        Session(tmp_path / "data", store=False, beamline=no_beam, microprobe="beamline")
    said = str(err.value)
    assert str(no_beam) in said and "the plans' microprobe (microprobe='beamline') cannot be built" in said
    assert "beam: missing" in said and "add 'beam: {energy_kev: 10.2, flux: 5.0e+9, spot_fwhm:" in said
    assert "fly" not in said.split("beam: missing")[1]  # the records are complete: only the beam is named

    no_fly = tmp_path / "no-fly.yaml"
    no_fly.write_text(text.replace(', fly: "2xfm:mcs:mca12.VAL"', "").replace(', fly: "2xfm:mcs:mca13.VAL"', ""))
    with pytest.raises(BeamlineConfigError, match=re.escape("roles.dpc_b.fly: missing, also roles.dpc_c.fly (the "
                                                            "plans' fly raster reads I0 and the four DPC segments")):
        Session(tmp_path / "data", store=False, beamline=no_fly, microprobe="beamline")

    with pytest.raises(BeamlineConfigError) as err:  # the simulated IOC's layout: its own microprobe is "epics"
        Session(tmp_path / "data", store=False, beamline="sim-ioc", microprobe="beamline")
    said = str(err.value)
    assert "beam: missing" in said and "roles.i0.fly: missing" in said
    assert "roles.fluorescence: an mca (the plans' fly raster reads an xMAP's mapping mode)" in said
    assert "its own microprobe is microprobe='epics'" in said

    with pytest.raises(ValueError, match=r"microprobe='beamline' builds the plans' microprobe on a beamline "
                                         r"configuration's records, and none is given: give beamline='aps-2ide'"):
        Session(tmp_path / "data", store=False, microprobe="beamline")
    with pytest.raises(ValueError, match=r"XFCT_BLUESKY_HARDWARE=beamline .* set XFCT_BLUESKY_BEAMLINE"):
        make_microprobe(tmp_path, "beamline")
    monkeypatch.setenv("XFCT_BLUESKY_BEAMLINE", str(no_beam))
    with pytest.raises(BeamlineConfigError, match="beam: missing"):
        make_microprobe(tmp_path, "beamline")
    assert not (tmp_path / "data").exists() and not (tmp_path / "assets").exists()  # refused before anything


def test_the_epics_microprobe_is_not_claimed_on_records_it_cannot_drive(monkeypatch, tmp_path):
    """"epics" is the simulated IOC's own layout; another beamline's records take "beamline"."""
    from xfct_bluesky.session import make_microprobe

    monkeypatch.setenv("XFCT_BLUESKY_BEAMLINE", "aps-2ide")
    monkeypatch.delenv("XFCT_BLUESKY_PREFIX", raising=False)
    with pytest.raises(ValueError, match=r"XFCT_BLUESKY_HARDWARE=epics drives the simulated IOC's own layout .* not "
                                         r"APS 2-ID-E's records .* set XFCT_BLUESKY_HARDWARE=beamline"):
        make_microprobe(tmp_path, "epics")


def test_shell_refuses_a_bad_configuration_before_ipython_starts(tmp_path, capsys):
    from xfct_bluesky import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("beamline: X\nroles:\n  rotation: {motor: 'a:m1', speed: 3}\n")
    assert cli.main(["shell", "--beamline", str(bad), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "roles.rotation.speed: unknown key" in err and "allowed here: motor, source, note" in err
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_shell_refuses_a_microprobe_the_configuration_cannot_carry_before_ipython_starts(tmp_path, capsys,
                                                                                         monkeypatch):
    """`shell --beamline` checks the microprobe it will make: "beamline" on the simulated IOC's layout (no beam, no
    MCS), "epics" on 2-ID-E's records; both refused before IPython, naming the fix."""
    from xfct_bluesky import cli

    monkeypatch.delenv("XFCT_BLUESKY_PREFIX", raising=False)
    monkeypatch.setenv("XFCT_BLUESKY_HARDWARE", "beamline")
    assert cli.main(["shell", "--beamline", "sim-ioc", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "beam: missing" in err and "roles.i0.fly: missing" in err
    monkeypatch.delenv("XFCT_BLUESKY_HARDWARE")
    assert cli.main(["shell", "--epics", "--beamline", "aps-2ide", "--data-dir", str(tmp_path / "data")]) == 2
    assert "set XFCT_BLUESKY_HARDWARE=beamline" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
