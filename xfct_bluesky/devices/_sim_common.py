"""What the simulated devices share: map dtypes, and where the probe is and whether there is beam."""

from __future__ import annotations

from ..physics.specimen import ELEMENT_SYMBOLS

#: Map keys (component names of the scanner) and their dtypes.
MAP_DTYPES: dict[str, str] = {
    "dpc_x": "<f4",
    "dpc_y": "<f4",
    "dpc_diag": "<f4",
    "transmission": "<f4",
    "i0": "<u4",
    "q1": "<u4",
    "q2": "<u4",
    "q3": "<u4",
    "q4": "<u4",
    "live_time": "<f4",
    **{sym: "<u4" for sym in ELEMENT_SYMBOLS},
}

#: Map keys -> units, for every data key's ``units`` (event-model's data-key field). DPC signals are
#: differences over sums of the quadrants and transmission a ratio: dimensionless ("").
MAP_UNITS: dict[str, str] = {
    "dpc_x": "", "dpc_y": "", "dpc_diag": "", "transmission": "",
    "i0": "counts", "q1": "counts", "q2": "counts", "q3": "counts", "q4": "counts", "live_time": "s",
    **{sym: "counts" for sym in ELEMENT_SYMBOLS},
    "map_dwell": "s", "spectra": "counts",
}


def with_units(desc: dict, device) -> dict:
    """``desc`` (a scanner's describe()) with each map's, the dwell's and the spectra's ``units``."""
    prefix = f"{device.name}_"
    for key, spec in desc.items():
        unit = MAP_UNITS.get(key.removeprefix(prefix))
        if unit is not None:
            spec.setdefault("units", unit)
    return desc


#: Storage-ring current (mA) below which the simulated beam is off (a beam dump).
BEAM_OFF_CURRENT = 1.0


def _beam_on(device) -> bool:
    root = device.root
    shutter = getattr(root, "shutter", None)
    current = getattr(root, "beam_current", None)
    ring_up = current is None or float(current.get()) >= BEAM_OFF_CURRENT
    return ring_up and (shutter is None or shutter.is_open)


def _position_m(motor) -> float:
    return motor.position * 1e-6  # um -> m


def _probe_geometry(device):
    """(theta deg, centre (y, x) m, defocus m) from the microprobe's stages."""
    root = device.root
    theta = root.rotation.position if hasattr(root, "rotation") else 0.0
    zp = getattr(root, "zone_plate", None)
    if zp is None:
        return theta, (0.0, 0.0), 0.0
    return theta, (_position_m(zp.y), _position_m(zp.x)), _position_m(zp.z)
