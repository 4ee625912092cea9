"""What the simulated devices share: map dtypes, and where the probe is and whether there is beam."""

from __future__ import annotations

# The map signals (names, dtypes, units) are specified once, in .spec; re-exported here for older imports.
from .spec import MAP_DTYPES, MAP_UNITS, with_units  # noqa: E402, F401

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
