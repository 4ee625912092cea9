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


def test_the_plans_microprobe_is_not_claimed_on_records_it_cannot_drive(monkeypatch, tmp_path):
    from xfct_bluesky.session import make_microprobe

    monkeypatch.setenv("XFCT_BLUESKY_BEAMLINE", "aps-2ide")
    monkeypatch.delenv("XFCT_BLUESKY_PREFIX", raising=False)
    with pytest.raises(ValueError, match=r"runs on the simulated IOC's records only; APS 2-ID-E's records are for "
                                         r"step scans, as session.beamline"):
        make_microprobe(tmp_path, "epics")


def test_shell_refuses_a_bad_configuration_before_ipython_starts(tmp_path, capsys):
    from xfct_bluesky import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("beamline: X\nroles:\n  rotation: {motor: 'a:m1', speed: 3}\n")
    assert cli.main(["shell", "--beamline", str(bad), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "roles.rotation.speed: unknown key" in err and "allowed here: motor, source, note" in err
    assert not (tmp_path / "data").exists()  # refused before anything was made
