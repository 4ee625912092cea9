"""The focused probe: a zone-plate focus modelled as an anisotropic Gaussian."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import constants as C
from ..validate import finite, positive

FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


@dataclass(frozen=True)
class Probe:
    """Beam energy, flux and focal spot.

    Parameters
    ----------
    energy_kev : float
        Photon energy (keV); the paper used 10.2 keV.
    flux : float
        Focused flux (photons/s); the paper had about 5e9.
    fwhm : (float, float)
        Focal-spot FWHM (m), (horizontal, vertical). The paper's 700 nm x
        500 nm is source-demagnification limited [physics sheet section 0].
    zone_plate_diameter, outer_zone_width : float
        Zone plate (m); they set the numerical aperture NA = lambda / (2 dr_N)
        that scales the DPC response and the defocus broadening.
    """

    energy_kev: float = C.BEAM_ENERGY_KEV
    flux: float = C.FLUX
    fwhm: tuple[float, float] = C.PROBE_FWHM
    zone_plate_diameter: float = C.ZONE_PLATE_DIAMETER
    outer_zone_width: float = C.ZONE_PLATE_OUTER_ZONE

    def __post_init__(self):
        positive("energy_kev", self.energy_kev, fix="The paper used 10.2 keV.", unit=" keV")
        positive("flux", self.flux, fix="The paper had about 5e9 photons/s.", unit=" photons/s")
        if len(self.fwhm) != 2:
            raise ValueError(f"fwhm={self.fwhm!r} must be (horizontal, vertical) in metres, e.g. (700e-9, 500e-9)")
        for w in self.fwhm:
            positive("fwhm", w, fix="Give the spot FWHM in metres, e.g. (700e-9, 500e-9).", unit=" m")

    @property
    def wavelength(self) -> float:
        return C.wavelength(self.energy_kev)

    @property
    def numerical_aperture(self) -> float:
        """NA = lambda / (2 dr_N) (0.76 mrad for the paper's zone plate)."""
        return self.wavelength / (2 * self.outer_zone_width)

    @property
    def focal_length(self) -> float:
        return self.zone_plate_diameter * self.outer_zone_width / self.wavelength

    def sigma(self, defocus: float = 0.0) -> tuple[float, float]:
        """Gaussian sigma (m), (horizontal, vertical), at ``defocus`` (m) from focus.

        Away from focus the converging cone of half-angle NA adds a uniform disc
        of radius NA*|z|, i.e. a variance (NA z)^2 / 4 on each axis.
        """
        z = finite("defocus", defocus, fix="Give the zone-plate defocus in metres.", unit=" m")
        extra = (self.numerical_aperture * z) ** 2 / 4
        sx, sy = (w / FWHM_PER_SIGMA for w in self.fwhm)
        return math.sqrt(sx * sx + extra), math.sqrt(sy * sy + extra)

    def photons_per_pixel(self, dwell: float) -> float:
        return self.flux * dwell
