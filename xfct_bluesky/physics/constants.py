"""Physical constants and atomic data at the 2-ID-E working point (10.2 keV).

All numbers come from ``shared/reference/physics-parameters.md`` (computed
there with xraylib 4.3.0 unless flagged); they are tabulated here so that the
simulator needs numpy and scipy only.

Units: SI lengths (m), keV for photon energies, barn (1e-24 cm^2) for atomic
cross-sections, g/cm^3 for densities, ug/cm^2 for element areal densities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

AVOGADRO = 6.02214076e23
HC_KEV_M = 12.398419843e-10  # keV * m
KEV_J = 1.602176634e-16  # J per keV

#: Beam energy of the founding paper (keV) and its wavelength (m).
BEAM_ENERGY_KEV = 10.2
#: Focused flux (photons/s) of the founding paper.
FLUX = 5e9


def wavelength(energy_kev: float) -> float:
    """Photon wavelength (m) at ``energy_kev``."""
    return HC_KEV_M / energy_kev


# ------------------------------------------------------------------ optics ---
#: Zone plate of the paper: 320 um diameter, 80 nm outermost zone.
ZONE_PLATE_DIAMETER = 320e-6
ZONE_PLATE_OUTER_ZONE = 80e-9
#: Probe FWHM (m), horizontal x vertical: 700 nm x 500 nm (Hong et al. 2014) [E].
PROBE_FWHM = (700e-9, 500e-9)

# ------------------------------------------------- protein optical constants ---
# Model protein H48.6C32.9N8.9O8.9S0.6 at 10.2 keV; delta and beta scale
# linearly with density (physics sheet section 3).
PROTEIN_DELTA_PER_DENSITY = 2.88e-6 / 1.35  # per g/cm^3
PROTEIN_BETA_PER_DENSITY = 5.49e-9 / 1.35  # per g/cm^3
#: methylcellulose (capillary) [E]
METHYLCELLULOSE_DELTA_PER_DENSITY = 2.79e-6 / 1.30
METHYLCELLULOSE_BETA_PER_DENSITY = 4.46e-9 / 1.30
#: Mass energy-absorption coefficient of protein at 10.2 keV (cm^2/g), CS_Energy_CP.
PROTEIN_MU_EN_RHO = 3.555

# ---------------------------------------------------------------- scatter ---
#: Elastic and Compton scatter of protein into the Vortex (cm^2/g) at the
#: reference geometry (50 mm^2 at 15 mm, 90 deg in the polarization plane).
SCATTER_ELASTIC_PER_MASS = 7.8e-5
SCATTER_COMPTON_PER_MASS = 1.37e-4
COMPTON_ENERGY_KEV = 10.0
#: MAPS fit-file broadening of the Compton peak (physics sheet section 4).
COMPTON_FWHM_CORR = 1.57

# ------------------------------------------------------------ Vortex-EM ---
VORTEX_AREA = 50e-6  # m^2
VORTEX_DISTANCE = 15e-3  # m, reference geometry of the sensitivity table
#: MAPS 2-ID-E energy calibration: sigma^2 = (offset/2.3548)^2 + E*2.96*fanoprime (keV)
VORTEX_FWHM_OFFSET = 0.0972
VORTEX_FANOPRIME = 2.244e-4


def solid_angle_fraction(area: float, distance: float) -> float:
    """Fraction of 4 pi subtended by a disc of ``area`` (m^2) at ``distance`` (m), on axis."""
    radius = math.sqrt(area / math.pi)
    return 0.5 * (1.0 - distance / math.hypot(distance, radius))


@dataclass(frozen=True)
class Element:
    """K-shell fluorescence data of one element at 10.2 keV.

    Attributes
    ----------
    symbol, z, atomic_weight
        Identity; ``atomic_weight`` in g/mol.
    ka1, ka2, kb1 : float
        Line energies (keV).
    kb_over_ka : float
        Intensity ratio of K-beta to K-alpha emission.
    sigma_ka : float
        K-alpha fluorescence production cross-section (barn/atom), yield included.
    sensitivity_he, sensitivity_air : float
        Detected K-alpha counts per second per ug/cm^2 at 5e9 photons/s, Vortex
        50 mm^2 at 15 mm, helium or air path.
    self_transmission : float
        Mean transmission of the K-alpha line out of a freeze-dried cell
        (37.5 um of protein at 0.3 g/cm^3).
    """

    symbol: str
    z: int
    atomic_weight: float
    ka1: float
    ka2: float
    kb1: float
    kb_over_ka: float
    sigma_ka: float
    sensitivity_he: float
    sensitivity_air: float
    self_transmission: float

    @property
    def ka(self) -> float:
        """Intensity-weighted mean K-alpha energy (keV); Ka1:Ka2 = 2:1."""
        return (2.0 * self.ka1 + self.ka2) / 3.0

    @property
    def atoms_per_ug(self) -> float:
        return 1e-6 * AVOGADRO / self.atomic_weight

    def detector_efficiency(self, path: str = "helium") -> float:
        """Detection efficiency of the K-alpha line (window, sensor, flight path).

        Derived from the sensitivity table: sensitivity / (flux * atoms *
        sigma * solid angle) at the reference geometry.
        """
        sens = self.sensitivity_he if path == "helium" else self.sensitivity_air
        emitted = FLUX * self.atoms_per_ug * self.sigma_ka * 1e-24
        return sens / (emitted * solid_angle_fraction(VORTEX_AREA, VORTEX_DISTANCE))


_ELEMENT_ROWS = [
    # sym  Z  A        Ka1    Ka2    Kb1    Kb/Ka  sigKa  S_He  S_air T_self
    ("P", 15, 30.974, 2.010, 2.009, 2.136, 0.044, 109, 150, 59, 0.65),
    ("S", 16, 32.06, 2.308, 2.307, 2.464, 0.062, 172, 243, 129, 0.75),
    ("Cl", 17, 35.45, 2.622, 2.621, 2.816, 0.081, 263, 348, 225, 0.78),
    ("K", 19, 39.098, 3.314, 3.311, 3.590, 0.116, 559, 697, 532, 0.88),
    ("Ca", 20, 40.078, 3.692, 3.688, 4.013, 0.126, 788, 969, 794, 0.91),
    ("Fe", 26, 55.845, 6.404, 6.391, 7.058, 0.134, 4109, 3703, 3557, 0.98),
    ("Cu", 29, 63.546, 8.048, 8.028, 8.905, 0.134, 7524, 5938, 5818, 0.99),
    ("Zn", 30, 65.38, 8.639, 8.616, 9.572, 0.137, 8923, 6781, 6670, 0.99),
]

#: The elements the simulator knows, by symbol, in order of atomic number.
ELEMENTS: MappingProxyType[str, Element] = MappingProxyType(
    {row[0]: Element(*row) for row in _ELEMENT_ROWS}
)


def element(symbol: str) -> Element:
    """Look up an element by symbol, with a clear error for unknown ones."""
    try:
        return ELEMENTS[symbol]
    except KeyError:
        raise ValueError(
            f"unknown element {symbol!r}: the simulator knows {', '.join(ELEMENTS)}; "
            "use one of these symbols (case-sensitive, e.g. 'Zn')"
        ) from None
