"""Radiation dose to the specimen (physics sheet section 6).

D = (mu_en / rho) * Phi * E0 with fluence Phi = F t / Delta^2: when the beam is
larger than the pixel the mean fluence is unchanged.
"""

from __future__ import annotations

from ..validate import positive
from . import constants as C


def dose_per_projection(
    dwell: float,
    pixel_size: float,
    *,
    flux: float = C.FLUX,
    energy_kev: float = C.BEAM_ENERGY_KEV,
    mu_en_rho: float = C.PROTEIN_MU_EN_RHO,
) -> float:
    """Skin dose (Gy) of one fly-scanned projection.

    Parameters
    ----------
    dwell : float
        Per-pixel dwell (s).
    pixel_size : float
        Pixel size (m).
    flux : float
        Photons/s.
    energy_kev : float
        Photon energy (keV).
    mu_en_rho : float
        Mass energy-absorption coefficient (cm^2/g); protein at 10.2 keV is 3.555.

    Examples
    --------
    >>> round(dose_per_projection(3e-3, 300e-9) / 1e4, 2)   # 9.7e4 Gy in the sheet
    9.68
    """
    dwell = positive("dwell", dwell, fix="Give the per-pixel dwell in seconds, e.g. 3e-3.", unit=" s")
    pixel_size = positive("pixel_size", pixel_size, fix="Give the pixel size in metres, e.g. 300e-9.", unit=" m")
    fluence = flux * dwell / (pixel_size * 100) ** 2  # photons / cm^2
    return mu_en_rho * fluence * energy_kev * C.KEV_J * 1e3  # J/kg


def dwell_for_dose(dose: float, pixel_size: float, *, flux: float = C.FLUX,
                   energy_kev: float = C.BEAM_ENERGY_KEV, mu_en_rho: float = C.PROTEIN_MU_EN_RHO) -> float:
    """Per-pixel dwell (s) that gives ``dose`` (Gy) in one projection; the beam as in :func:`dose_per_projection`."""
    dose = positive("dose", dose, fix="Give the dose in Gy, e.g. 9.7e4.", unit=" Gy")
    return dose / dose_per_projection(1.0, pixel_size, flux=flux, energy_kev=energy_kev, mu_en_rho=mu_en_rho)
