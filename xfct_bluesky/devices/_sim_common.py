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
