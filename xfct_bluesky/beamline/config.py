"""Beamline configuration files: roles -> records, read and checked.

The file (YAML)::

    beamline: APS 2-ID-E              # a name, for the log and the check's header
    prefix: ""                        # optional: "{prefix}" in any PV name below is replaced by it
    sources: [...]                    # optional: where the names come from (free text)
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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..validate import integer

__all__ = ["CONFIGS", "KINDS", "ROLES", "BeamlineConfig", "BeamlineConfigError", "RoleSpec", "config_path",
           "fast_axis", "load_beamline", "mcs_layout"]


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
_TOP = ("beamline", "prefix", "sources", "roles")
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
                          notes={r: e["note"] for r, (_, _, e) in roles.items() if "note" in e})


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
