"""PV groups laid out as ophyd's classes read them: the PVs a device class connects to, served as plain PVs.

:func:`ophyd_suffixes` lists the PVs of an ophyd device class from its components; :func:`_group` makes a
caproto ``PVGroup`` serving them, with the group's own (simulated) pvproperties in their place. The
beamline IOC's scaler, mca and xMAP records (:mod:`.beamline`) and the Xspress3 (:mod:`.xspress3`) are
built this way.
"""

from __future__ import annotations

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty


def ophyd_suffixes(cls) -> list[tuple[str, bool]]:
    """``(suffix, string)`` of every PV an ophyd device class connects to (lazy ones too), in order.

    Walks the class's components (sub-devices and dynamic ones); an ``EpicsSignalWithRBV`` gives its
    setpoint and ``_RBV``. Formatted components (``{self.prefix}``) are left out: their names depend
    on the instance (the scaler's channels; see :class:`ScalerRecord`).
    """
    from ophyd import DynamicDeviceComponent, EpicsSignalWithRBV, FormattedComponent
    from ophyd.signal import EpicsSignalBase

    out: list[tuple[str, bool]] = []

    def visit(kind, suffix, kwargs, prefix):
        if isinstance(kind, type) and issubclass(kind, EpicsSignalBase):
            name = prefix + suffix
            out.append((name, bool(kwargs.get("string", False))))
            if issubclass(kind, EpicsSignalWithRBV):
                out.append((name + "_RBV", bool(kwargs.get("string", False))))
        elif isinstance(kind, type) and hasattr(kind, "component_names"):  # a Device (not a soft signal)
            walk(kind, prefix + (suffix or ""))

    def walk(device_cls, prefix):
        for name in device_cls.component_names:
            cpt = getattr(device_cls, name)
            if isinstance(cpt, FormattedComponent):
                continue
            if isinstance(cpt, DynamicDeviceComponent):
                for sub, suffix, kwargs in cpt.defn.values():
                    visit(sub, suffix, kwargs, prefix)
            else:
                visit(cpt.cls, cpt.suffix or "", cpt.kwargs, prefix)

    walk(cls, "")
    seen: set[str] = set()
    return [(s, string) for s, string in out if not (s in seen or seen.add(s))]


def _plain(name: str, string: bool) -> pvproperty:
    if string:
        return pvproperty(name=name, value="", dtype=ChannelType.STRING)
    return pvproperty(name=name, value=0.0)


def _group(name: str, suffixes, ns: dict) -> type[PVGroup]:
    """A PVGroup class serving ``suffixes`` as plain PVs, with ``ns``'s pvproperties in their place."""
    taken = {prop.pvspec.name for prop in ns.values() if isinstance(prop, pvproperty)}
    body = dict(ns)
    for i, (suffix, string) in enumerate(suffixes):
        if suffix not in taken:
            body[f"pv{i}"] = _plain(suffix, string)
            taken.add(suffix)
    return type(name, (PVGroup,), body)
