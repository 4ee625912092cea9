"""What the devices share: map dtypes, and where the probe is (the EPICS scanner too) and whether there is beam."""

from __future__ import annotations

# The map signals (names, dtypes, units) are specified once, in .spec; re-exported here for older imports.
from .spec import BEAM_OFF_CURRENT, MAP_DTYPES, MAP_UNITS, MCA_STATISTICS, with_units  # noqa: F401 (re-exported)


def mca_statistics(simulator, result, beam_on: bool = True) -> dict:
    """Real time, ICR and OCR maps (:data:`.spec.MCA_STATISTICS`) of a simulated map ``result``.

    From the Vortex's count rates at the map's noiseless quantities (``result.expected``), which are the
    rates its live time was made from: the simulated FlyRaster and the IOC add them to ``result.maps``.
    """
    q = result.expected
    flux = simulator.probe.flux if beam_on else 0.0
    rates = simulator.vortex.rates(q.elements, q.mass, flux)
    stats = simulator.vortex.count_statistics(rates, result.dwell)
    return {key: stats[key].astype(MAP_DTYPES[key]) for key in MCA_STATISTICS}


def beam_on(device) -> bool:
    """Whether photons reach the specimen: the shutter (if any) open and the ring current (if any) up."""
    root = device.root
    shutter = getattr(root, "shutter", None)
    current = getattr(root, "beam_current", None)
    ring_up = current is None or float(current.get()) >= BEAM_OFF_CURRENT
    return ring_up and (shutter is None or shutter.is_open)


def _position_m(motor) -> float:
    return motor.position * 1e-6  # um -> m


def probe_geometry(device) -> tuple[float, tuple[float, float], float]:
    """(theta deg, map centre (y, x) m, defocus m) from the microprobe's stages (zeros without a zone plate)."""
    root = device.root
    theta = root.rotation.position if hasattr(root, "rotation") else 0.0
    zp = getattr(root, "zone_plate", None)
    if zp is None:
        return theta, (0.0, 0.0), 0.0
    return theta, (_position_m(zp.y), _position_m(zp.x)), _position_m(zp.z)
