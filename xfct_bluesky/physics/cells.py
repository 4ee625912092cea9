"""Specimen factories: a freeze-dried mouse egg in a capillary, and smaller cells.

The structure is what decides the founding paper's result (see issue 2):

* a freeze-dried cytoplasm that is granular below the spot size: a fraction
  of its mass sits in sub-probe granules whose number is set so that the
  probe-averaged projected density fluctuates by ``granularity`` (relative rms)
  through the centre; this texture gives DPC its sharp cross-correlation peak;
* a spindle with chromosomes near the cortex (denser, phosphorus-rich);
* Zn-rich cortical granules just under the surface (about 8000 x 1e6 Zn atoms
  in a mouse egg, Que et al. 2015);
* Zn spread through the cytoplasm with smooth variations on a 3-6 um scale
  (``zn_texture`` relative rms in projection through the centre); this gives
  the broad (20-30 px) Zn cross-correlation peak;
* Fe and Cu at a tenth of Zn each; P, S, Cl, K, Ca as fractions of dry mass;
* a methylcellulose capillary centred on the rotation axis.

All totals scale with the cell's volume, so a 10 um cell has the same
concentrations and per-pixel counts per unit thickness as the 75 um egg.
"""

from __future__ import annotations

import math

import numpy as np

from ..validate import between, non_negative, positive
from ..validate import seed as validate_seed
from . import constants as C
from .specimen import (
    AnalyticSpecimen,
    Ellipsoids,
    GaussianBlobs,
    HollowCylinder,
    Material,
    Particles,
)

#: Mass fractions of dry mass for the light elements [E] (typical cell values).
DRY_MASS_FRACTIONS = {"P": 0.010, "S": 0.008, "Cl": 0.004, "K": 0.005, "Ca": 0.0005}

EGG_DIAMETER = 75e-6
EGG_ZN_ATOMS = 6e10  # Kim et al. 2010, Que et al. 2015 (physics sheet section 2)
EGG_CORTICAL_GRANULES = 8000
CORTICAL_GRANULE_ZN_ATOMS = 1e6


def _fwhm_to_sigma(fwhm):
    return fwhm / (2 * math.sqrt(2 * math.log(2)))


def _uniform_in_sphere(rng, n, radius):
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = radius * rng.random(n) ** (1 / 3)
    return d * r[:, None]


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def cell(
    diameter: float = EGG_DIAMETER,
    *,
    seed: int = 0,
    density: float = 0.3,
    granule_fraction: float = 0.3,
    granularity: float = 0.03,
    zn_atoms: float | None = None,
    zn_texture: float = 0.3,
    zn_blob_fwhm: tuple[float, float] = (3e-6, 6e-6),
    zn_cortical_fraction: float = EGG_CORTICAL_GRANULES * CORTICAL_GRANULE_ZN_ATOMS / EGG_ZN_ATOMS,
    fe_cu_over_zn: float = 0.1,
    spindle: bool = True,
    capillary: bool = True,
    capillary_diameter: float | None = None,
    probe_fwhm: tuple[float, float] = C.PROBE_FWHM,
    name: str | None = None,
) -> AnalyticSpecimen:
    """A freeze-dried cell in a capillary, built from analytic components.

    Parameters
    ----------
    diameter : float
        Cell diameter (m). 75e-6 is a mouse MII egg.
    seed : int
        Seed for every random placement (reproducible specimen).
    density : float
        Mean dry-mass density of the freeze-dried cell (g/cm^3); physics
        sheet: 0.15-0.3.
    granule_fraction : float
        Fraction of the cytoplasm's mass in sub-probe granules (0..1).
    granularity : float
        Relative rms of the probe-averaged projected mass through the centre
        due to the granules; 0 gives a smooth cytoplasm.
    zn_atoms : float, optional
        Total Zn atoms; default 6e10 scaled by volume from the 75 um egg.
    zn_texture : float
        Relative rms of the projected Zn through the centre from smooth 3-6 um
        variations; 0 gives uniform Zn.
    zn_blob_fwhm : (float, float)
        Range of the FWHM (m) of the smooth Zn variations.
    zn_cortical_fraction : float
        Fraction of Zn in cortical granules.
    fe_cu_over_zn : float
        Fe and Cu atoms each, relative to Zn.
    spindle, capillary : bool
        Include the spindle with chromosomes, and the capillary.
    capillary_diameter : float, optional
        Outer diameter (m) of the capillary; default twice the cell's (150 um
        for the egg, whose walls then lie outside a 69 um field).
    probe_fwhm : (float, float)
        Probe FWHM used to set the granule count for ``granularity``.
    """
    diameter = positive("diameter", diameter, fix="Give the cell diameter in metres, e.g. 75e-6.", unit=" m")
    density = positive("density", density, fix="Freeze-dried cells are 0.15-0.3 g/cm^3.", unit=" g/cm^3")
    between("granule_fraction", granule_fraction, 0, 1, open_high=True,
            fix="The volume fraction of the granules, e.g. 0.3.")
    granularity = non_negative("granularity", granularity, fix="Use 0 for a smooth cytoplasm, ~0.03 for granular.")
    zn_texture = non_negative("zn_texture", zn_texture, fix="Use 0 for uniform Zn, ~0.3 for the egg.")
    rng = np.random.default_rng(validate_seed("seed", seed))
    R = diameter / 2
    scale = diameter / EGG_DIAMETER
    V_cm3 = 4 / 3 * math.pi * (R * 100) ** 3
    L = 2 * R  # central chord
    if zn_atoms is None:
        zn_atoms = EGG_ZN_ATOMS * scale**3
    zn = C.ELEMENTS["Zn"]
    zn_ug = zn_atoms / zn.atoms_per_ug
    comps = []

    # --- cytoplasm continuum: (1 - f) of the mass; light elements as dry-mass fractions
    f = granule_fraction if granularity > 0 else 0.0
    rho_c = (1 - f) * density
    zn_rest = zn_ug * (1 - zn_cortical_fraction)
    zn_base_frac = 0.1 if zn_texture > 0 else 1.0
    elements = {s: frac * rho_c * 1e6 for s, frac in DRY_MASS_FRACTIONS.items()}
    elements["Zn"] = zn_rest * zn_base_frac / V_cm3
    for sym in ("Fe", "Cu"):
        el = C.ELEMENTS[sym]
        elements[sym] = fe_cu_over_zn * zn_atoms / el.atoms_per_ug / V_cm3
    comps.append(Ellipsoids([[0, 0, 0]], [[R, R, R]], Material(density=rho_c, elements=elements), name="cytoplasm"))

    # --- sub-probe granules carrying the other f of the mass
    info = {"diameter": diameter, "zn_atoms": zn_atoms, "seed": seed}
    if f > 0:
        sx, sy = (_fwhm_to_sigma(w) for w in probe_fwhm)
        n_per_m3 = f**2 / (granularity**2 * L * 4 * math.pi * sx * sy)
        n = int(round(n_per_m3 * 4 / 3 * math.pi * R**3))
        pos = _uniform_in_sphere(rng, n, R * 0.995)
        w = rng.lognormal(0.0, 0.3, n)
        w /= w.mean()
        m = f * density * V_cm3 / n
        comps.append(Particles(pos, Material(density=m, elements={s: fr * m * 1e6 for s, fr in
                                                                   DRY_MASS_FRACTIONS.items()}), w,
                               name="granules"))
        info["granules"] = n

    # --- smooth Zn variations: Gaussian blobs, number set by zn_texture
    if zn_texture > 0:
        s_lo, s_hi = (_fwhm_to_sigma(w) * 1.0 for w in zn_blob_fwhm)
        s_mean = 0.5 * (s_lo + s_hi)
        rel_blob = zn_texture / (1 - zn_base_frac)
        n_per_m3 = (1 / (2 * rel_blob * s_mean)) ** 2 / (math.pi * L)
        nb = max(int(round(n_per_m3 * 4 / 3 * math.pi * R**3)), 1)
        sig = rng.uniform(s_lo, s_hi, nb)
        centers = _uniform_in_sphere(rng, nb, max(R - s_mean, R * 0.5))
        total_measure_cm3 = np.sum((2 * math.pi) ** 1.5 * (sig * 100) ** 3)
        c_peak = zn_rest * (1 - zn_base_frac) / total_measure_cm3
        comps.append(GaussianBlobs(centers, sig, Material(elements={"Zn": c_peak}), name="zn_variations"))
        info["zn_blobs"] = nb

    # --- cortical granules: Zn-rich vesicles 0.3-2 um under the surface
    n_cg = max(int(round(EGG_CORTICAL_GRANULES * scale**2)), 1)
    if zn_cortical_fraction > 0:
        d = rng.normal(size=(n_cg, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        depth = rng.uniform(0.3e-6, 2.0e-6, n_cg) * min(1.0, scale * 4)
        pos = d * (R - depth)[:, None]
        vesicle_mass = 1.0 * (4 / 3 * math.pi * (0.25e-4) ** 3)  # 0.5 um vesicle at 1 g/cm^3
        comps.append(Particles(pos, Material(density=vesicle_mass,
                                             elements={"Zn": zn_ug * zn_cortical_fraction / n_cg}),
                               name="cortical_granules"))
        info["cortical_granules"] = n_cg

    # --- spindle and chromosomes near the cortex
    if spindle:
        direction = np.array([0.6, 0.25, 0.76])
        direction /= np.linalg.norm(direction)
        c_sp = direction * (R - 12e-6 * scale)
        rot = _random_rotation(rng)
        comps.append(Ellipsoids([c_sp], [[5e-6 * scale, 10e-6 * scale, 5e-6 * scale]],
                                Material(density=0.05 * density / 0.3), [rot], name="spindle"))
        n_chr = 20
        plate = rng.normal(size=(n_chr, 3)) * np.array([3e-6, 0.3e-6, 3e-6]) * scale
        centers = c_sp + plate @ rot.T
        axes = np.tile([0.4e-6, 1.2e-6, 0.4e-6], (n_chr, 1)) * max(scale, 0.2)
        rots = [rot @ _random_rotation(rng) for _ in range(n_chr)]
        comps.append(Ellipsoids(centers, axes,
                                Material(density=0.4, elements={"P": 0.04 * 0.4 * 1e6}), rots,
                                name="chromosomes"))

    # --- methylcellulose capillary (OD = 2 x cell diameter, wall 10 um for the egg)
    outer = R
    if capillary:
        outer = (capillary_diameter or 4 * R) / 2
        wall = 10e-6 * scale
        comps.append(HollowCylinder(outer, outer - wall, Material(
            density=1.30,
            delta_per_density=C.METHYLCELLULOSE_DELTA_PER_DENSITY,
            beta_per_density=C.METHYLCELLULOSE_BETA_PER_DENSITY)))
    return AnalyticSpecimen(comps, radius=outer, name=name or f"cell {diameter * 1e6:.0f} um", info=info)


def mouse_egg(seed: int = 0, *, zn_atoms: float | None = None, zn_texture: float = 0.3, capillary: bool = True,
              name: str = "mouse egg (simulated)") -> AnalyticSpecimen:
    """The founding paper's specimen: a freeze-dried mouse MII egg (75 um, 6e10 Zn); the options as in
    :func:`cell` (which takes every other)."""
    return cell(EGG_DIAMETER, seed=seed, zn_atoms=zn_atoms, zn_texture=zn_texture, capillary=capillary, name=name)


def small_cell(diameter: float = 8e-6, seed: int = 0, *, zn_atoms: float | None = None, zn_texture: float = 0.3,
               capillary: bool = True, capillary_diameter: float | None = None,
               name: str | None = None) -> AnalyticSpecimen:
    """A small cell for fast tests (same concentrations as the egg); the options as in :func:`cell`.

    Its capillary is three cell diameters wide (``capillary_diameter``
    default), so that fields of 1.5-2 cell diameters (typical of tests) keep
    the walls out of view, as a 230 px field does for the egg.
    """
    return cell(diameter, seed=seed, zn_atoms=zn_atoms, zn_texture=zn_texture, capillary=capillary,
                capillary_diameter=3 * diameter if capillary_diameter is None else capillary_diameter,
                name=name or f"small cell {diameter * 1e6:.0f} um")
