"""One specification of the microprobe's map signals, from which every layer is built.

Each map a fly scan publishes (DPC, transmission, I0, the quadrants, live time, one ROI map per element)
is named once here with its dtype, its units and the PV suffix it has over Channel Access. The simulated
``FlyRaster`` (:mod:`.sim_scanner`) and the EPICS one (:mod:`.epics_scanner`) take their components from
:func:`map_components`, the caproto IOC (:mod:`xfct_bluesky.ioc`) its waveform PVs from :data:`MAP_PVS`,
and the descriptors their ``units`` from :data:`MAP_UNITS`, so a map added or changed here changes
everywhere at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..physics.specimen import ELEMENT_SYMBOLS


@dataclass(frozen=True)
class MapSpec:
    """A map signal: component (and data-key suffix) name, numpy dtype, units, PV suffix under ``Fly:Map:``."""

    name: str
    dtype: str
    units: str
    pv: str
    description: str


#: Every map of a fly scan, in the order the devices read them. uint32 maps travel over CA as DBR_LONG.
MAPS: tuple[MapSpec, ...] = (
    MapSpec("dpc_x", "<f4", "", "DPCX", "horizontal DPC: (q1 - q2 - q3 + q4) / sum of the quadrants"),
    MapSpec("dpc_y", "<f4", "", "DPCY", "vertical DPC: (q1 + q2 - q3 - q4) / sum of the quadrants"),
    MapSpec("dpc_diag", "<f4", "", "DPCDiag", "diagonal DPC: (q1 - q3) / (q1 + q3)"),
    MapSpec("transmission", "<f4", "", "Transmission", "transmitted over incident photons"),
    MapSpec("i0", "<u4", "counts", "I0", "incident photons per pixel (upstream ion chamber)"),
    *(MapSpec(q, "<u4", "counts", q.upper(), f"segmented detector quadrant {q[1]}") for q in ("q1", "q2", "q3", "q4")),
    MapSpec("live_time", "<f4", "s", "LiveTime", "fluorescence detector live time per pixel"),
    *(MapSpec(sym, "<u4", "counts", sym, f"{sym} fluorescence counts in its ROI window") for sym in ELEMENT_SYMBOLS),
)

MAP_DTYPES: dict[str, str] = {m.name: m.dtype for m in MAPS}
#: Data-key units: the maps', the dwell readback's and the spectra's.
MAP_UNITS: dict[str, str] = {**{m.name: m.units for m in MAPS}, "map_dwell": "s", "spectra": "counts"}
#: Map name -> (PV suffix under ``Fly:Map:``, dtype), for the IOC.
MAP_PVS: dict[str, tuple[str, str]] = {m.name: (m.pv, m.dtype) for m in MAPS}
#: Storage-ring current (mA) below which there is no beam (a beam dump), for the simulated devices and the IOC.
BEAM_OFF_CURRENT = 1.0


def map_components(name: str, signal_class, *, pv_prefix: str | None = None) -> Any:
    """A Device class holding one ``signal_class`` component per map of :data:`MAPS` (kind "normal").

    ``pv_prefix`` (e.g. ``"Map:"``): an EPICS signal class, given ``pv_prefix + spec.pv`` as its suffix;
    None: a soft signal class. Either is given ``dtype=spec.dtype``. The scanners subclass it. (ophyd is
    imported here, not at module level: the IOC reads this module's tables without it.)
    """
    from ophyd import Component as Cpt
    from ophyd.device import create_device_from_components

    components = {
        m.name: (Cpt(signal_class, pv_prefix + m.pv, dtype=m.dtype, kind="normal", doc=m.description)
                 if pv_prefix is not None else Cpt(signal_class, dtype=m.dtype, kind="normal", doc=m.description))
        for m in MAPS
    }
    return create_device_from_components(name, docstring=f"The map signals of {__name__}.MAPS.", **components)


def with_units(desc: dict, device) -> dict:
    """``desc`` (a scanner's describe()) with each map's, the dwell's and the spectra's ``units``."""
    prefix = f"{device.name}_"
    for key, spec in desc.items():
        unit = MAP_UNITS.get(key.removeprefix(prefix))
        if unit is not None:
            spec.setdefault("units", unit)
    return desc
