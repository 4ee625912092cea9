"""Specimens of the field's classic sparse-angle XRF tomographies (not cells).

:func:`wire_capillary` is the kind of specimen many real microprobe
tomographies image: a glass capillary or rod some millimetre wide with thin
metal wires and particles stuck to it far from the rotation axis, measured at
24-60 angles over 180 degrees with pixels of about a micrometre. Between two
angles 5 degrees apart a feature 700 px from the axis moves some 60 px, so
neighbouring projections no longer look alike and pairwise registration
fails; alignment has to match reprojections instead
(:mod:`xfct_bluesky.analysis.refine`).

Everything is analytic (exact chords at any angle), in the geometry of
:mod:`xfct_bluesky.physics.specimen`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..validate import between, integer, positive
from ..validate import seed as validate_seed
from .specimen import AnalyticSpecimen, Ellipsoids, HollowCylinder, Material

#: Borosilicate-like glass (2.2 g/cm^3) with some Ca and K, per cm^3 of wall (ug); beta 1.5e-8 and
#: delta 4.5e-6 at 10 keV (mu about 15 /cm).
GLASS = Material(density=2.2, elements={"Ca": 2.0e3, "K": 1.0e3}, delta_per_density=4.5e-6 / 2.2,
                 beta_per_density=1.5e-8 / 2.2)
#: A metal wire's absorption (mu about 500 /cm at 10 keV, beta 4.8e-7); its Cu content is set
#: apart (``wire_cu``), so that it gives counts a detector can take rather than a pure metal's.
WIRE = Material(density=8.9, delta_per_density=2.0e-5 / 8.9, beta_per_density=4.8e-7 / 8.9)
#: An iron-oxide-like mineral grain (mu about 300 /cm, beta 2.9e-7).
MINERAL = Material(density=5.0, delta_per_density=1.2e-5 / 5.0, beta_per_density=2.9e-7 / 5.0)


def wire_capillary(
    diameter: float = 1.4e-3,
    *,
    wall: float = 20e-6,
    height: float = 1e-3,
    n_wires: int = 3,
    wire_diameter: float = 8e-6,
    n_particles: int = 10,
    particle_diameter: float = 6e-6,
    rows_span: float = 6e-6,
    wire_cu: float = 2.0e4,
    particle_fe: float = 6.0e4,
    seed: int = 0,
) -> AnalyticSpecimen:
    """A glass capillary with Cu-bearing wires and Fe-rich particles on its wall.

    Parameters
    ----------
    diameter : float
        Outer diameter of the capillary (m); 1.4 mm fills most of a 1600 px
        field of 1 um pixels.
    wall : float
        Wall thickness (m).
    height : float
        Length along the rotation axis (m); longer than any field, so the
        field always cuts it vertically, as in a real rod.
    n_wires : int
        Wires parallel to the axis, just inside the wall (the strong
        features far from the axis).
    wire_diameter : float
        Their diameter (m).
    n_particles : int
        Particles spread at radii 0.3-0.95 of the capillary's and within
        ``rows_span`` of the centre vertically (they give the vertical
        structure that the wires, uniform along the axis, do not).
    particle_diameter : float
        Their diameter (m).
    rows_span : float
        Vertical half-range (m) of the particles' centres: keep it inside
        the field (minus the runout and the particles' size), or the field
        cuts them vertically and no alignment is exact.
    wire_cu, particle_fe : float
        Cu in the wires and Fe in the particles (ug/cm^3): 2e4 and 6e4 give
        some 10^2-10^3 counts per pixel at 10 ms, as a real wire does.
    seed : int
        Seeds the placements.
    """
    diameter = positive("diameter", diameter, fix="Give the capillary's outer diameter in metres, e.g. 1.4e-3.",
                        unit=" m")
    wall = between("wall", wall, 0, diameter / 2, open_low=True, open_high=True, unit=" m",
                   fix="The capillary's wall, thinner than half its diameter.")
    n_wires = integer("n_wires", n_wires, low=0, fix="Give how many wires, e.g. 6.")
    n_particles = integer("n_particles", n_particles, low=0, fix="Give how many particles, e.g. 20.")
    rng = np.random.default_rng(validate_seed("seed", seed))
    R = diameter / 2
    comps = [HollowCylinder(R, R - wall, GLASS, name="capillary")]
    if n_wires:
        phi = rng.uniform(0, 2 * math.pi) + np.arange(n_wires) * 2 * math.pi / n_wires
        phi += rng.uniform(-0.3, 0.3, n_wires)
        rad = (R - wall - wire_diameter) * rng.uniform(0.93, 0.99, n_wires)
        centers = np.stack([rad * np.cos(phi), np.zeros(n_wires), rad * np.sin(phi)], axis=1)
        semi = np.tile([wire_diameter / 2, height / 2, wire_diameter / 2], (n_wires, 1))
        comps.append(Ellipsoids(centers, semi, replace(WIRE, elements={"Cu": wire_cu}), name="wires"))
    if n_particles:
        phi = rng.uniform(0, 2 * math.pi, n_particles)
        rad = R * rng.uniform(0.3, 0.95, n_particles)
        y = rng.uniform(-rows_span, rows_span, n_particles)
        centers = np.stack([rad * np.cos(phi), y, rad * np.sin(phi)], axis=1)
        d = particle_diameter * rng.uniform(0.7, 1.3, n_particles)
        comps.append(Ellipsoids(centers, np.repeat(d[:, None] / 2, 3, axis=1),
                                replace(MINERAL, elements={"Fe": particle_fe}), name="particles"))
    return AnalyticSpecimen(comps, radius=R, name=f"wire capillary {diameter * 1e3:.1f} mm",
                            info={"diameter": diameter, "n_wires": n_wires, "n_particles": n_particles,
                                  "seed": seed})
