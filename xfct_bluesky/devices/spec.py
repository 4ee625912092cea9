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
    MapSpec("real_time", "<f4", "s", "RealTime", "fluorescence detector real (counting) time per pixel"),
    MapSpec("icr", "<f4", "counts/s", "ICR", "fluorescence detector input count rate per pixel"),
    MapSpec("ocr", "<f4", "counts/s", "OCR", "fluorescence detector output count rate per pixel"),
    *(MapSpec(sym, "<u4", "counts", sym, f"{sym} fluorescence counts in its ROI window") for sym in ELEMENT_SYMBOLS),
)

MAP_DTYPES: dict[str, str] = {m.name: m.dtype for m in MAPS}
#: Data-key units: the maps', the dwell readback's and the spectra's.
MAP_UNITS: dict[str, str] = {**{m.name: m.units for m in MAPS}, "map_dwell": "s", "spectra": "counts"}
#: Map name -> (PV suffix under ``Fly:Map:``, dtype), for the IOC.
MAP_PVS: dict[str, tuple[str, str]] = {m.name: (m.pv, m.dtype) for m in MAPS}
#: The maps the fluorescence detector's processor reports besides its ROIs (Xspress3/XIA statistics), which
#: the simulator's physics derives from the Vortex's count rates (:func:`._sim_common.mca_statistics`).
MCA_STATISTICS: tuple[str, ...] = ("real_time", "icr", "ocr")
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


def mca_description(vortex) -> dict[str, Any]:
    """What a run records of the MCA with its spectra (data key extras and HDF5 attributes), JSON-ready.

    ``energy_calibration``: ``{offset, gain, quadratic}`` in keV, E(i) = offset + gain i + quadratic i^2 for
    channel i from 0, as the mca record's CALO/CALS/CALQ (and PyXRF's e_offset/e_linear/e_quadratic), the
    layout :func:`xfct_bluesky.callbacks.fit.energy_axis` reads; ``roi_windows``: element -> [low, high) keV
    of its ROI map; ``dead_time``: the model, its tau (s) and the correction that undoes it.
    ``vortex`` is a :class:`~xfct_bluesky.physics.detectors.VortexModel`.
    """
    return {
        "energy_calibration": {**vortex.energy_calibration, "units": "keV"},
        "roi_windows": {sym: [float(lo), float(hi)] for sym, (lo, hi) in vortex.roi_windows_kev().items()},
        "dead_time": {"model": "paralyzable", "tau": float(vortex.dead_time), "units": "s",
                      "live_fraction": "live_time / real_time = OCR / ICR = exp(-ICR tau)",
                      "correction": "counts x real_time / live_time"},
    }


def mca_hdf5_metadata(description: dict[str, Any], n_channels: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(attributes of the spectra dataset, extra datasets) saying in the HDF5 file what :func:`mca_description` says.

    Attributes ``calibration_offset``, ``calibration_gain``, ``calibration_quadratic`` (keV, E(i) = offset +
    gain i + quadratic i^2) with ``energy_units``, and ``roi_windows``/``dead_time`` as JSON; datasets under
    ``/entry/instrument/fluorescence``: ``energy_calibration`` [offset, gain, quadratic] (XRF-Maps'
    ``MAPS/Spectra/Energy_Calibration`` order) and ``energy``, each channel's energy (NXfluo), in keV.
    """
    import numpy as np

    cal = description["energy_calibration"]
    coeffs = [float(cal["offset"]), float(cal["gain"]), float(cal.get("quadratic", 0.0))]
    i = np.arange(int(n_channels), dtype=float)
    attrs = {"calibration_offset": coeffs[0], "calibration_gain": coeffs[1], "calibration_quadratic": coeffs[2],
             "energy_units": "keV", "calibration": "E(i) = offset + gain i + quadratic i^2 keV, channel i from 0",
             "roi_windows": description["roi_windows"], "dead_time": description["dead_time"]}
    group = "/entry/instrument/fluorescence"
    datasets = {f"{group}/energy_calibration": (np.array(coeffs), {"units": "keV"}),
                f"{group}/energy": (coeffs[0] + i * (coeffs[1] + i * coeffs[2]), {"units": "keV"})}
    return attrs, datasets
