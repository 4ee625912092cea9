"""Beamline configuration files: roles -> records, read and checked.

The file (YAML)::

    beamline: APS 2-ID-E              # a name, for the log and the check's header
    prefix: ""                        # optional: "{prefix}" in any PV name below is replaced by it
    sources: [...]                    # optional: where the names come from (free text)
    beam:                             # optional: the beam the plans record (no record gives it)
      energy_kev: 10.2                #   keV
      flux: 5.0e+9                    #   photons/s on the sample
      spot_fwhm: [700.0e-9, 500.0e-9] #   m, horizontal and vertical FWHM of the focal spot
    roles:
      rotation: {motor: "2xfm:m53", source: "..."}
      i0: {counter: "2xfm:scaler3_cts1.B", fly: "2xfm:mcs:mca2.VAL"}
      fluorescence: {xmap: "dxpXMAP2xfm3:", elements: 4}
      # or an Xspress3 through areaDetector (NSLS-II's layout): {xspress3: "XF:05IDD-ES{Xsp:1}:", channels: 4}
      ...

Each role names exactly one *kind* of record (:data:`KINDS`), among those
:data:`ROLES` allows for it, and may add ``fly`` (counters: the fly scan's
MCS array), ``elements`` (an XIA system: its detector elements), ``channels`` (an Xspress3: its channels),
``source`` and ``note`` (free text). The PV names a kind uses are
:meth:`BeamlineConfig.pvs`.

The ``beam`` section (:data:`BEAM_RANGES`) states what no record of a microprobe gives: the beam's energy,
flux and focal spot, which the plans record and compute the dose from. With it, and the records of a fly
raster (the counters' MCS ``fly`` arrays and an xMAP), :func:`check_microprobe` passes and
``Session(beamline=..., microprobe="beamline")`` builds the plans' microprobe on the records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..validate import between, integer

__all__ = ["BEAM_RANGES", "CONFIGS", "KINDS", "MICROPROBE_COUNTERS", "ROLES", "BeamlineConfig", "BeamlineConfigError",
           "RoleSpec", "check_microprobe", "config_path", "fast_axis", "load_beamline", "mcs_layout"]


class BeamlineConfigError(ValueError):
    """A beamline configuration file that cannot be used: the message names the file, the key and the fix."""


@dataclass(frozen=True)
class RoleSpec:
    """What a role is, and the kinds of record that may fill it."""

    kinds: tuple[str, ...]
    required: bool
    description: str


_MOTOR = ("motor",)
_COUNT = ("counter", "signal")
ROLES: MappingProxyType[str, RoleSpec] = MappingProxyType({
    "rotation": RoleSpec(_MOTOR, True, "the tomography rotation stage (deg)"),
    "zone_plate_x": RoleSpec(_MOTOR, True, "zone plate x: scans the beam across the sample"),
    "zone_plate_y": RoleSpec(_MOTOR, True, "zone plate y"),
    "zone_plate_z": RoleSpec(_MOTOR, True, "zone plate z: the focus"),
    "sample_x": RoleSpec(_MOTOR, False, "sample stage x (a beamline that scans the sample)"),
    "sample_y": RoleSpec(_MOTOR, False, "sample stage y"),
    "i0": RoleSpec(_COUNT, True, "incident flux per pixel (upstream ion chamber)"),
    "dpc_a": RoleSpec(_COUNT, True, "segmented transmission detector, segment A (DPC)"),
    "dpc_b": RoleSpec(_COUNT, True, "segment B"),
    "dpc_c": RoleSpec(_COUNT, True, "segment C"),
    "dpc_d": RoleSpec(_COUNT, True, "segment D"),
    "fluorescence": RoleSpec(("xmap", "mca", "xspress3"), True, "the fluorescence detector's electronics"),
    "scaler": RoleSpec(("scaler",), False, "the scaler record counted at each step of a step scan"),
    "ring_current": RoleSpec(("signal",), False, "storage-ring current (mA)"),
    "shutter": RoleSpec(("signal",), False, "the shutter's command PV"),
})
"""Every role a configuration may fill: its allowed kinds, whether it must be filled, what it is."""

KINDS: MappingProxyType[str, str] = MappingProxyType({
    "motor": "a synApps motor record (ophyd EpicsMotor): its name, without a field",
    "counter": "a PV holding one count (or rate) per pixel of a step scan, e.g. a scaler channel",
    "signal": "a single PV",
    "scaler": "an EPICS scaler record (ophyd ScalerCH): its name, without a field",
    "xmap": "an XIA xMAP/DXP system (ophyd EpicsDXPMultiElementSystem): its prefix, with 'elements'",
    "mca": "one EPICS mca record (ophyd EpicsMCA): its name, without a field",
    "xspress3": "an Xspress3 through areaDetector, NSLS-II's layout: its prefix, with 'channels'",
})
"""Every kind of record a role may name, as the file spells it."""

_EXTRAS = {"counter": ("fly",), "signal": ("fly",), "xmap": ("elements",), "xspress3": ("channels",)}
_FREE_TEXT = ("source", "note")
_TOP = ("beamline", "prefix", "sources", "beam", "roles")

BEAM_RANGES: MappingProxyType[str, tuple[float, float, str, str]] = MappingProxyType({
    "energy_kev": (1.0, 100.0, " keV", "Give the beam energy in keV, e.g. 10.2 (2-ID-E in the founding paper)."),
    "flux": (1e3, 1e15, " photons/s", "Give the focused flux on the sample in photons/s, e.g. 5.0e+9."),
    "spot_fwhm": (1e-9, 1e-3, " m", ("Give the focal spot's FWHM in metres, horizontal then vertical, "
                                     "e.g. [700.0e-9, 500.0e-9].")),
})
"""The ``beam`` section's keys: (lowest, highest, unit, fix); ``spot_fwhm`` is two such numbers (h, v)."""

#: The counter roles the plans' fly raster reads from the MCS (each needs its ``fly`` array).
MICROPROBE_COUNTERS = ("i0", "dpc_a", "dpc_b", "dpc_c", "dpc_d")
_NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_PV = re.compile(r"^[A-Za-z0-9_:.\-\[\]<>;{}$]+$")

#: The record fields a kind's PVs are made of: motor -> the fields of ophyd's EpicsMotor the plans use;
#: scaler -> count, preset time, mode; an mca record -> spectrum, times and the energy calibration.
MOTOR_FIELDS = (".VAL", ".RBV", ".DMOV", ".MOVN", ".STOP", ".EGU", ".HLM", ".LLM", ".VELO", ".DESC")
SCALER_FIELDS = (".CNT", ".TP", ".CONT")
MCA_FIELDS = (".VAL", ".ELTM", ".ERTM", ".PRTM", ".NUSE", ".CALO", ".CALS", ".CALQ")
XMAP_SYSTEM = ("EraseStart", "StopAll", "Acquiring", "ElapsedReal", "PresetReal", "CollectMode")
XMAP_ELEMENT = ("dxp{n}:InputCountRate", "dxp{n}:OutputCountRate")
XSPRESS3_SYSTEM = ("det1:Acquire", "det1:Acquire_RBV", "det1:AcquireTime", "det1:NumImages", "det1:TriggerMode",
                   "det1:ERASE", "det1:DetectorState_RBV")
XSPRESS3_CHANNEL = ("MCA{n}:ArrayData", "MCASUM{n}:ArrayData", "C{n}SCA:3:Value_RBV", "C{n}SCA:4:Value_RBV",
                    "C{n}SCA:9:Value_RBV", "MCA{n}ROI:1:Total_RBV")

CONFIGS: MappingProxyType[str, str] = MappingProxyType({
    "aps-2ide": "APS 2-ID-E (XFM), from the PV names of its own scan files",
    "sim-ioc": "the simulated microprobe IOC (xfct-bluesky ioc / python -m xfct_bluesky.ioc)",
})
"""The checked-in configurations, by name (``--beamline aps-2ide`` or a path)."""


@dataclass(frozen=True)
class BeamlineConfig:
    """A checked configuration: ``roles`` maps each filled role to ``(kind, name, extras)``."""

    beamline: str
    path: Path
    roles: dict[str, tuple[str, str, dict[str, Any]]]
    sources: tuple[str, ...] = ()
    prefix: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    beam: dict[str, Any] | None = None
    """The ``beam`` section, checked: ``energy_kev``, ``flux``, ``spot_fwhm`` ([h, v] m); None without one."""

    def record(self, role: str) -> str:
        """The record (or PV, or prefix) that fills ``role``; KeyError naming the filled roles if it is not."""
        if role not in self.roles:
            raise KeyError(f"role {role!r} is not in {self.path}: it fills {', '.join(self.roles)}")
        return self.roles[role][1]

    def pvs(self, role: str | None = None) -> list[tuple[str, str]]:
        """``(role, PV)`` for every PV the roles' records use (of ``role`` only, if given), in file order."""
        out = []
        for name, (kind, record, extras) in self.roles.items():
            if role is not None and name != role:
                continue
            if kind == "motor":
                names = [record + f for f in MOTOR_FIELDS]
            elif kind == "scaler":
                names = [record + f for f in SCALER_FIELDS]
            elif kind == "mca":
                names = [record + f for f in MCA_FIELDS]
            elif kind == "xmap":
                names = [record + s for s in XMAP_SYSTEM]
                for n in range(1, extras["elements"] + 1):
                    names += [record + s.format(n=n) for s in XMAP_ELEMENT]
                    names += [f"{record}mca{n}{f}" for f in MCA_FIELDS]
            elif kind == "xspress3":
                names = [record + s for s in XSPRESS3_SYSTEM]
                for n in range(1, extras["channels"] + 1):
                    names += [record + s.format(n=n) for s in XSPRESS3_CHANNEL]
            else:  # counter, signal: the PV itself, and the fly scan's array if given
                names = [record] + ([extras["fly"]] if "fly" in extras else [])
            out += [(name, pv) for pv in names]
        return out


def config_path(name_or_path: str | Path) -> Path:
    """A checked-in configuration's file (by its name in :data:`CONFIGS`), or the path given."""
    if str(name_or_path) in CONFIGS:
        return Path(str(resources.files(__package__) / f"{name_or_path}.yaml"))
    return Path(name_or_path)


def _fail(path, key: str, problem: str, fix: str) -> BeamlineConfigError:
    return BeamlineConfigError(f"{path}: {key}: {problem}; {fix}")


def _pv(path, key: str, value, prefix: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, key, f"{value!r} is not a PV name", "write the record's name as a string, e.g. '2xfm:m53'")
    name = value.strip().replace("{prefix}", prefix)
    if not _PV.match(name):
        raise _fail(path, key, f"{value!r} is not a PV name (spaces or other characters EPICS names do not use)",
                    "write the record's name exactly as the IOC serves it")
    return name


def _role(path, role: str, entry, prefix: str) -> tuple[str, str, dict[str, Any]]:
    spec = ROLES[role]
    where = f"roles.{role}"
    if isinstance(entry, str):
        raise _fail(path, where, f"a bare name {entry!r}",
                    f"say which kind of record it is: {{{spec.kinds[0]}: {entry!r}}} (allowed: {', '.join(spec.kinds)})")
    if not isinstance(entry, dict):
        raise _fail(path, where, f"{entry!r} is not a mapping", f"write {{{spec.kinds[0]}: NAME}}")
    kinds = [k for k in entry if k in KINDS]
    if len(kinds) != 1:
        raise _fail(path, where, f"names {len(kinds)} kinds of record ({', '.join(kinds) or 'none'})",
                    f"give exactly one of {', '.join(spec.kinds)}")
    kind = kinds[0]
    if kind not in spec.kinds:
        raise _fail(path, f"{where}.{kind}", f"a {kind} cannot be the {role} ({spec.description})",
                    f"use one of {', '.join(spec.kinds)}")
    allowed = (kind, *_EXTRAS.get(kind, ()), *_FREE_TEXT)
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise _fail(path, f"{where}.{unknown[0]}", "unknown key", f"allowed here: {', '.join(allowed)}")
    extras: dict[str, Any] = {}
    if kind == "xmap":
        if "elements" not in entry:
            raise _fail(path, f"{where}.elements", "missing", "give the number of detector elements, e.g. 4")
        try:
            extras["elements"] = integer(f"{where}.elements", entry["elements"], low=1, high=64,
                                         fix="Give the number of detector elements (a whole number).")
        except (TypeError, ValueError) as err:
            raise BeamlineConfigError(f"{path}: {err}") from None
    if kind == "xspress3":
        if "channels" not in entry:
            raise _fail(path, f"{where}.channels", "missing", "give the Xspress3's number of channels, e.g. 4")
        try:
            extras["channels"] = integer(f"{where}.channels", entry["channels"], low=1, high=16,
                                         fix="Give the Xspress3's number of channels (a whole number).")
        except (TypeError, ValueError) as err:
            raise BeamlineConfigError(f"{path}: {err}") from None
    if "fly" in entry:
        extras["fly"] = _pv(path, f"{where}.fly", entry["fly"], prefix)
    for key in _FREE_TEXT:
        if key in entry:
            extras[key] = str(entry[key])
    return kind, _pv(path, f"{where}.{kind}", entry[kind], prefix), extras


def _beam_number(path, key: str, value, low: float, high: float, unit: str, fix: str) -> float:
    # PyYAML reads 5e9 and 700e-9 (no dot) as strings: a plain number written so is taken as one
    if isinstance(value, str) and _NUMBER.match(value):
        value = float(value)
    try:
        return between(key, value, low, high, unit=unit, fix=fix)
    except ValueError as err:
        raise BeamlineConfigError(f"{path}: {err}") from None


def _beam_section(path, entry) -> dict[str, Any] | None:
    """The ``beam`` section checked: each figure in its :data:`BEAM_RANGES`; None if the file has none."""
    if entry is None:
        return None
    example = "beam: {energy_kev: 10.2, flux: 5.0e+9, spot_fwhm: [700.0e-9, 500.0e-9]}"
    if not isinstance(entry, dict):
        raise _fail(path, "beam", f"{entry!r} is not a mapping", f"write e.g. '{example}'")
    allowed = (*BEAM_RANGES, *_FREE_TEXT)
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise _fail(path, f"beam.{unknown[0]}", "unknown key", f"allowed here: {', '.join(allowed)}")
    missing = [k for k in BEAM_RANGES if k not in entry]
    if missing:
        raise _fail(path, f"beam.{missing[0]}", "missing",
                    f"the beam section gives {', '.join(BEAM_RANGES)}, e.g. '{example}'")
    beam: dict[str, Any] = {}
    for key in ("energy_kev", "flux"):
        beam[key] = _beam_number(path, f"beam.{key}", entry[key], *BEAM_RANGES[key])
    spot = entry["spot_fwhm"]
    low, high, unit, fix = BEAM_RANGES["spot_fwhm"]
    if not isinstance(spot, list) or len(spot) != 2:
        raise _fail(path, "beam.spot_fwhm", f"{spot!r} is not two numbers (horizontal, vertical)",
                    f"allowed [h, v], each {low:g}..{high:g}{unit}. {fix}")
    beam["spot_fwhm"] = [_beam_number(path, f"beam.spot_fwhm[{i}]", v, low, high, unit, fix)
                         for i, v in enumerate(spot)]
    return beam


def load_beamline(name_or_path: str | Path, *, prefix: str | None = None) -> BeamlineConfig:
    """Read and check a beamline configuration (a path, or a name in :data:`CONFIGS`).

    Parameters
    ----------
    name_or_path : str or pathlib.Path
        The YAML file, or ``"aps-2ide"`` / ``"sim-ioc"``.
    prefix : str, optional
        Replaces the file's ``prefix`` in every ``{prefix}`` of its PV names (the simulated IOC's
        configuration is written so, for an IOC started with ``--prefix``).

    Raises
    ------
    BeamlineConfigError
        The file is missing, not YAML, or a key is unknown, missing or wrong: the message names the
        file, the key (``roles.i0.counter``) and the fix. Nothing connects before it is checked.
    """
    import yaml

    path = config_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        known = ", ".join(CONFIGS)
        raise BeamlineConfigError(f"{path}: cannot read the beamline configuration ({err.strerror}); give a YAML "
                                  f"file or one of the checked-in configurations: {known}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BeamlineConfigError(f"{path}: not YAML ({err}); fix the line it names") from None
    if not isinstance(data, dict):
        raise _fail(path, "(top level)", "not a mapping", f"write the keys {', '.join(_TOP)}")
    unknown = [k for k in data if k not in _TOP]
    if unknown:
        raise _fail(path, str(unknown[0]), "unknown key", f"allowed at the top level: {', '.join(_TOP)}")
    if not isinstance(data.get("beamline"), str) or not data["beamline"].strip():
        raise _fail(path, "beamline", "missing", "name the beamline, e.g. 'beamline: APS 2-ID-E'")
    file_prefix = data.get("prefix") or ""
    if not isinstance(file_prefix, str):
        raise _fail(path, "prefix", f"{file_prefix!r} is not a string", "write it in quotes, e.g. 'XFCT:'")
    used_prefix = file_prefix if prefix is None else prefix
    roles_in = data.get("roles")
    if not isinstance(roles_in, dict):
        raise _fail(path, "roles", "missing or not a mapping", "list the roles, e.g. 'roles: {rotation: {motor: ...}}'")
    unknown = [r for r in roles_in if r not in ROLES]
    if unknown:
        raise _fail(path, f"roles.{unknown[0]}", "unknown role", f"the roles are: {', '.join(ROLES)}")
    beam = _beam_section(path, data.get("beam"))
    roles = {r: _role(path, r, entry, used_prefix) for r, entry in roles_in.items() if entry is not None}
    missing = [r for r, spec in ROLES.items() if spec.required and r not in roles]
    if missing:
        raise _fail(path, f"roles.{missing[0]}", f"missing ({ROLES[missing[0]].description})",
                    f"every configuration fills {', '.join(r for r, s in ROLES.items() if s.required)}")
    sources = data.get("sources") or []
    if isinstance(sources, str):
        sources = [sources]
    return BeamlineConfig(beamline=data["beamline"].strip(), path=path, roles=roles,
                          sources=tuple(str(s) for s in sources), prefix=used_prefix,
                          notes={r: e["note"] for r, (_, _, e) in roles.items() if "note" in e}, beam=beam)


def check_microprobe(config) -> dict[str, Any]:
    """The beam of the plans' microprobe on ``config``'s records, or a refusal naming all that is missing.

    The plans' microprobe (:func:`~xfct_bluesky.devices.beamline_fly.make_beamline_microprobe`) needs the
    ``beam`` section, the rotation and zone-plate motors, and a fly raster: an MCS ``fly`` array for each
    of :data:`MICROPROBE_COUNTERS`, on one MCS, and an ``xmap`` fluorescence detector. Nothing connects.

    Parameters
    ----------
    config : BeamlineConfig
        From :func:`load_beamline`.

    Returns
    -------
    dict
        ``energy_kev``, ``flux``, ``spot_fwhm``: the keyword arguments of ``make_beamline_microprobe``.

    Raises
    ------
    BeamlineConfigError
        Naming the file, each missing key or role and its fix.
    """
    problems = []
    if config.beam is None:
        problems.append("beam: missing (no record gives the beam's energy, flux and spot, which the plans record "
                        "and compute the dose from); add 'beam: {energy_kev: 10.2, flux: 5.0e+9, spot_fwhm: "
                        "[700.0e-9, 500.0e-9]}' with the beamline's own figures")
    for role in ("rotation", "zone_plate_x", "zone_plate_y", "zone_plate_z"):
        if role not in config.roles:
            problems.append(f"roles.{role}: missing ({ROLES[role].description}); give its motor record, "
                            "e.g. {motor: '2xfm:m53'}")
    no_fly = [r for r in MICROPROBE_COUNTERS if "fly" not in config.roles.get(r, ("", "", {}))[2]]
    if no_fly:
        also = f", also {', '.join(f'roles.{r}.fly' for r in no_fly[1:])}" if no_fly[1:] else ""
        problems.append(f"roles.{no_fly[0]}.fly: missing{also} (the plans' fly raster reads I0 and the four DPC "
                        "segments from an MCS); give each its MCS channel array, e.g. "
                        "i0: {counter: ..., fly: '2xfm:mcs:mca2.VAL'}")
    else:
        try:
            mcs_layout(config)
        except ValueError as err:
            problems.append(str(err).removeprefix(f"{config.path}: "))
    kind = config.roles.get("fluorescence", ("none",))[0]
    if kind != "xmap":
        article = "an" if kind[0] in "aeimx" else "a"
        problems.append(f"roles.fluorescence: {article} {kind} (the plans' fly raster reads an xMAP's mapping mode); "
                        "give {xmap: PREFIX, elements: N}, or run step scans on session.beamline")
    if problems:
        if config.prefix and config.roles.get("rotation", ("", ""))[1] == f"{config.prefix}Rot":
            problems.append("these are the simulated IOC's records: its own microprobe is microprobe='epics'")
        raise BeamlineConfigError(f"{config.path}: the plans' microprobe (microprobe='beamline') cannot be built on "
                                  f"{config.beamline}'s records: " + "; and ".join(problems))
    return {"energy_kev": config.beam["energy_kev"], "flux": config.beam["flux"],
            "spot_fwhm": tuple(config.beam["spot_fwhm"])}


_FLY_ARRAY = re.compile(r"^(?P<prefix>.+:)mca(?P<n>\d+)\.VAL$")


def mcs_layout(config) -> tuple[str, dict[str, int]] | None:
    """(MCS prefix, {role: channel}) from the counters' ``fly`` arrays (``2xfm:mcs:mca2.VAL``: channel 2 of
    the MCS ``2xfm:mcs:``); None if no role has one.

    Raises
    ------
    ValueError
        A ``fly`` array that is not an MCS channel's ``mca<n>.VAL``, channels of different MCSs, a
        channel outside 2..32 (1 is the clock) or used twice.
    """
    found = {role: extras["fly"] for role, (_, _, extras) in config.roles.items() if "fly" in extras}
    if not found:
        return None
    prefixes, channels = set(), {}
    for role, pv in found.items():
        m = _FLY_ARRAY.match(pv)
        if m is None:
            raise ValueError(f"{config.path}: roles.{role}.fly = {pv!r}: allowed an MCS channel's array "
                             "'<mcs>mca<n>.VAL', e.g. '2xfm:mcs:mca2.VAL'")
        n = int(m["n"])
        if not 2 <= n <= 32 or n in channels.values():
            raise ValueError(f"{config.path}: roles.{role}.fly = {pv!r}: channel {n} is the clock, out of "
                             f"2..{32} or used twice; give each counter its own MCS channel")
        prefixes.add(m["prefix"])
        channels[role] = n
    if len(prefixes) != 1:
        raise ValueError(f"{config.path}: the fly arrays name {len(prefixes)} MCSs ({', '.join(sorted(prefixes))}); "
                         "the fly scan reads one: give every counter's fly array on the same MCS")
    return prefixes.pop(), channels


def fast_axis(config) -> str:
    """The motor role the fly scan moves at constant speed: the sample stage's x, else the zone plate's."""
    return "sample_x" if "sample_x" in config.roles else "zone_plate_x"
