"""Specimens: analytic bodies with exact line integrals, and voxel volumes.

Geometry convention
-------------------
Specimen coordinates (x, y, z) in metres; ``y`` is the vertical rotation axis.
At rotation angle ``theta`` (degrees) the beam travels along the lab ``z`` and
the projection coordinates are

    u = x cos(theta) + z sin(theta)      (horizontal, image columns)
    v = y                                (vertical, image rows)

so the slice plane (x, z) maps onto tomopy's (x, y) slice with the usual
sinogram coordinate ``s = x cos(theta) + y sin(theta)``.

Projected quantities
--------------------
Every specimen projects to the same set of quantities (:data:`QUANTITIES`):
areal mass ``mass`` (g/cm^2) of protein-like matter, optical path decrement
``opd`` = integral of delta dz (m; the phase delay is -2 pi opd / lambda),
absorption ``mu_t`` = integral of mu dz (dimensionless), and one areal density
per element (ug/cm^2).

Internally a specimen is a sum of *basis* maps (one per component) times a
coefficient matrix, so that the probe blur, which is linear, is applied to a
few basis maps instead of every quantity.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..validate import non_negative, positive
from . import constants as C

logger = logging.getLogger(__name__)

ELEMENT_SYMBOLS: tuple[str, ...] = tuple(C.ELEMENTS)
QUANTITIES: tuple[str, ...] = ("mass", "opd", "mu_t", *ELEMENT_SYMBOLS)
#: Index of each of QUANTITIES in a stack of them (the first axis of Projection.from_stack's array).
QUANTITY_INDEX = {q: i for i, q in enumerate(QUANTITIES)}


@dataclass(frozen=True)
class Projection:
    """Projected quantities of a specimen on a grid (arrays of shape (nv, nu))."""

    mass: np.ndarray
    opd: np.ndarray
    mu_t: np.ndarray
    elements: dict[str, np.ndarray]

    @classmethod
    def from_stack(cls, stack: np.ndarray) -> Projection:
        return cls(
            mass=stack[QUANTITY_INDEX["mass"]],
            opd=stack[QUANTITY_INDEX["opd"]],
            mu_t=stack[QUANTITY_INDEX["mu_t"]],
            elements={s: stack[QUANTITY_INDEX[s]] for s in ELEMENT_SYMBOLS},
        )


# --------------------------------------------------------------- materials ---
@dataclass(frozen=True)
class Material:
    """Composition of a body per unit of its geometric measure.

    For a continuous body the measure is the chord length (cm): ``density`` is
    in g/cm^3 and ``elements`` in ug/cm^3. For point particles the measure is
    the number of particles per cm^2: ``density`` is then the mass of one
    particle (g) and ``elements`` its content (ug).

    Optical constants are those of protein unless given (delta and beta per
    g/cm^3 of density; see physics sheet section 3).
    """

    density: float = 0.0
    elements: Mapping[str, float] = field(default_factory=dict)
    delta_per_density: float = C.PROTEIN_DELTA_PER_DENSITY
    beta_per_density: float = C.PROTEIN_BETA_PER_DENSITY

    def __post_init__(self):
        for sym, val in self.elements.items():
            C.element(sym)
            non_negative(f"elements[{sym!r}]", val, fix="Give the element's content: ug/cm^3 of a body, ug per particle.")

    def coefficients(self, energy_kev: float) -> np.ndarray:
        """Quantity vector (len(QUANTITIES),) per unit of measure."""
        vec = np.zeros(len(QUANTITIES))
        mass = self.density  # g/cm^2 per unit measure
        vec[QUANTITY_INDEX["mass"]] = mass
        # integral of delta dz in m = k_delta * (areal mass in g/cm^2) / 100
        vec[QUANTITY_INDEX["opd"]] = self.delta_per_density * mass / 100.0
        mu_per_density = 4 * math.pi * self.beta_per_density / C.wavelength(energy_kev)  # 1/m per g/cm^3
        vec[QUANTITY_INDEX["mu_t"]] = mu_per_density * mass / 100.0
        for sym, val in self.elements.items():
            vec[QUANTITY_INDEX[sym]] += val
        return vec


PROTEIN = Material  # alias for readability in factories


# -------------------------------------------------------------- components ---
def _frame(theta_deg: float):
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    e_u = np.array([c, 0.0, s])
    e_v = np.array([0.0, 1.0, 0.0])
    d = np.array([-s, 0.0, c])
    return e_u, e_v, d


class Ellipsoids:
    """Sharp ellipsoids of one material, with exact chord lengths.

    Parameters
    ----------
    centers : (n, 3) array, m
    semi_axes : (n, 3) array, m
    material : Material
    rotations : (n, 3, 3) array, optional
        Body-to-specimen rotation matrices (columns are the body axes).
    """

    kind = "fine"

    def __init__(self, centers, semi_axes, material: Material, rotations=None, name: str = "ellipsoids"):
        self.centers = np.atleast_2d(np.asarray(centers, dtype=float))
        self.semi_axes = np.atleast_2d(np.asarray(semi_axes, dtype=float))
        if self.centers.shape != self.semi_axes.shape or self.centers.shape[1] != 3:
            raise ValueError("centers and semi_axes must both have shape (n, 3)")
        if np.any(self.semi_axes <= 0) or not np.all(np.isfinite(self.semi_axes)):
            raise ValueError("semi_axes must be finite and > 0 (m)")
        n = len(self.centers)
        rot = np.broadcast_to(np.eye(3), (n, 3, 3)) if rotations is None else np.asarray(rotations, float)
        # quadric M = R diag(1/a^2) R^T
        self.M = np.einsum("nij,nj,nkj->nik", rot, 1.0 / self.semi_axes**2, rot)
        self.material = material
        self.name = name

    def projected(self, theta_deg: float):
        """Per-ellipsoid projected ellipse: centre (u, v), 2x2 form N, and scale 2/sqrt(A)."""
        e_u, e_v, d = _frame(theta_deg)
        P = np.stack([e_u, e_v], axis=1)  # (3, 2)
        A = np.einsum("i,nij,j->n", d, self.M, d)
        Mpp = np.einsum("ia,nij,jb->nab", P, self.M, P)
        Mpd = np.einsum("ia,nij,j->na", P, self.M, d)
        N = Mpp - Mpd[:, :, None] * Mpd[:, None, :] / A[:, None, None]
        uc = self.centers @ e_u
        vc = self.centers @ e_v
        return uc, vc, N, 2.0 / np.sqrt(A)

    def add_chords(self, theta_deg: float, u: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
        """Add chord lengths (cm) on the regular grid ``u`` x ``v`` into ``out`` (nv, nu)."""
        uc, vc, N, scale = self.projected(theta_deg)
        hu, hv = u[1] - u[0], v[1] - v[0]
        det = N[:, 0, 0] * N[:, 1, 1] - N[:, 0, 1] ** 2
        half_u = np.sqrt(N[:, 1, 1] / det)  # extent of the ellipse w^T N w <= 1
        half_v = np.sqrt(N[:, 0, 0] / det)
        for k in range(len(uc)):
            i0 = max(int(math.floor((vc[k] - half_v[k] - v[0]) / hv)), 0)
            i1 = min(int(math.ceil((vc[k] + half_v[k] - v[0]) / hv)) + 1, len(v))
            j0 = max(int(math.floor((uc[k] - half_u[k] - u[0]) / hu)), 0)
            j1 = min(int(math.ceil((uc[k] + half_u[k] - u[0]) / hu)) + 1, len(u))
            if i0 >= i1 or j0 >= j1:
                continue
            du = u[j0:j1] - uc[k]
            dv = (v[i0:i1] - vc[k])[:, None]
            q = N[k, 0, 0] * du**2 + 2 * N[k, 0, 1] * du * dv + N[k, 1, 1] * dv**2
            out[i0:i1, j0:j1] += (100.0 * scale[k]) * np.sqrt(np.clip(1.0 - q, 0.0, None))


class HollowCylinder:
    """A capillary: hollow cylinder parallel to the rotation axis (exact chords)."""

    kind = "fine"

    def __init__(self, outer_radius: float, inner_radius: float, material: Material, center_xz=(0.0, 0.0),
                 name: str = "capillary"):
        if not 0 <= inner_radius < outer_radius:
            raise ValueError(f"need 0 <= inner_radius < outer_radius, got {inner_radius!r}, {outer_radius!r}")
        self.ro, self.ri = float(outer_radius), float(inner_radius)
        self.center_xz = np.asarray(center_xz, dtype=float)
        self.material = material
        self.name = name

    def add_chords(self, theta_deg: float, u: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
        e_u, _, _ = _frame(theta_deg)
        uc = self.center_xz[0] * e_u[0] + self.center_xz[1] * e_u[2]
        x = u - uc
        t = 2 * (np.sqrt(np.clip(self.ro**2 - x**2, 0, None)) - np.sqrt(np.clip(self.ri**2 - x**2, 0, None)))
        out += 100.0 * t[None, :]


class Particles:
    """Point-like particles (smaller than the probe), deposited by cloud-in-cell.

    The measure is particles per cm^2, so the material gives per-particle mass
    (g) and element content (ug). ``weights`` scales each particle (size
    distribution); the projection conserves the total exactly.
    """

    kind = "fine"

    def __init__(self, positions, material: Material, weights=None, name: str = "particles"):
        self.positions = np.atleast_2d(np.asarray(positions, dtype=float))
        n = len(self.positions)
        self.weights = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        self.material = material
        self.name = name

    def add_chords(self, theta_deg: float, u: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
        if len(self.positions) == 0:
            return
        e_u, _, _ = _frame(theta_deg)
        pu = self.positions[:, 0] * e_u[0] + self.positions[:, 2] * e_u[2]
        pv = self.positions[:, 1]
        hu, hv = u[1] - u[0], v[1] - v[0]
        nv, nu = out.shape
        fu = (pu - u[0]) / hu
        fv = (pv - v[0]) / hv
        iu = np.floor(fu).astype(np.int64)
        iv = np.floor(fv).astype(np.int64)
        keep = (iu >= 0) & (iu < nu - 1) & (iv >= 0) & (iv < nv - 1)
        iu, iv, fu, fv, w = iu[keep], iv[keep], fu[keep] - iu[keep], fv[keep] - iv[keep], self.weights[keep]
        flat = iv * nu + iu
        area_cm2 = abs(hu * hv) * 1e4
        w = w / area_cm2
        acc = np.bincount(flat, w * (1 - fu) * (1 - fv), minlength=nu * nv)
        acc += np.bincount(flat + 1, w * fu * (1 - fv), minlength=nu * nv)
        acc += np.bincount(flat + nu, w * (1 - fu) * fv, minlength=nu * nv)
        acc += np.bincount(flat + nu + 1, w * fu * fv, minlength=nu * nv)
        out += acc[: nu * nv].reshape(nv, nu)


class GaussianBlobs:
    """Smooth isotropic Gaussian blobs: exact projections and exact probe blur.

    The 3D field is ``sum_b amplitude_b * exp(-|r - c_b|^2 / (2 s_b^2))`` times
    the material (peak concentration per unit amplitude). A Gaussian's line
    integral is a 2D Gaussian, and its convolution with the Gaussian probe is
    again Gaussian, so blurred maps and their gradients are evaluated directly
    at the pixel centres (separably, as a matrix product) with no fine grid.
    """

    kind = "smooth"

    def __init__(self, centers, sigmas, material: Material, amplitudes=None, name: str = "blobs"):
        self.centers = np.atleast_2d(np.asarray(centers, dtype=float))
        self.sigmas = np.asarray(sigmas, dtype=float) * np.ones(len(self.centers))
        self.amplitudes = np.ones(len(self.centers)) if amplitudes is None else np.asarray(amplitudes, float)
        self.material = material
        self.name = name

    def blurred(self, theta_deg: float, x: np.ndarray, y: np.ndarray, var_x: float, var_y: float):
        """Projected and blurred measure (cm) at pixel centres, with d/dx and d/dy (cm/m).

        ``x`` (nx,) and ``y`` (ny,) are specimen-frame coordinates (m).
        Returns three (ny, nx) arrays.
        """
        e_u, _, _ = _frame(theta_deg)
        uc = self.centers[:, 0] * e_u[0] + self.centers[:, 2] * e_u[2]
        vc = self.centers[:, 1]
        s2 = self.sigmas**2
        vx, vy = s2 + var_x, s2 + var_y
        # integral measure: a * (2 pi)^{3/2} s^3 ; 2D profile normalised per axis
        weight = 100.0 * self.amplitudes * (2 * math.pi) ** 1.5 * self.sigmas**3 / (2 * math.pi * np.sqrt(vx * vy))
        dx = x[None, :] - uc[:, None]  # (nb, nx)
        dy = y[None, :] - vc[:, None]  # (nb, ny)
        gx = np.exp(-(dx**2) / (2 * vx[:, None]))
        gy = np.exp(-(dy**2) / (2 * vy[:, None]))
        val = (gy * weight[:, None]).T @ gx
        ddx = (gy * weight[:, None]).T @ (gx * (-dx / vx[:, None]))
        ddy = (gy * (-dy / vy[:, None]) * weight[:, None]).T @ gx
        return val, ddx, ddy

    def add_chords(self, theta_deg: float, u: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
        """Unblurred projection on a grid (for ground truth)."""
        val, _, _ = self.blurred(theta_deg, u, v, 0.0, 0.0)
        out += val


# --------------------------------------------------------------- specimens ---
class Specimen(abc.ABC):
    """Base class: a specimen projects to basis maps times a coefficient matrix."""

    name = "specimen"

    @abc.abstractmethod
    def fine_basis(self, theta_deg, u, v, energy_kev):
        """Return (basis (nb, nv, nu), coefficients (nq, nb)) on the regular grid u x v."""

    def smooth_terms(self, theta_deg, x, y, var_x, var_y, energy_kev):
        """Return analytic blurred (values (nq, ny, nx), dopd/dx, dopd/dy) or None."""
        return None

    def project(self, theta_deg: float, u, v, energy_kev: float = C.BEAM_ENERGY_KEV) -> Projection:
        """Exact (unblurred) projection on the grid ``u`` x ``v`` (m, regular, >= 2 points each)."""
        u = np.atleast_1d(np.asarray(u, float))
        v = np.atleast_1d(np.asarray(v, float))
        if u.ndim != 1 or v.ndim != 1 or len(u) < 2 or len(v) < 2:
            raise ValueError(f"u and v must be 1D regular grids of >= 2 points; got shapes {u.shape}, {v.shape}")
        basis, coef = self.fine_basis(theta_deg, u, v, energy_kev)
        stack = np.tensordot(coef, basis, axes=(1, 0)) if len(basis) else np.zeros((len(QUANTITIES), len(v), len(u)))
        smooth = self.smooth_terms(theta_deg, u, v, 0.0, 0.0, energy_kev)
        if smooth is not None:
            stack = stack + smooth[0]
        return Projection.from_stack(stack)


class AnalyticSpecimen(Specimen):
    """A specimen made of analytic components (exact at any angle).

    Parameters
    ----------
    components : sequence
        :class:`Ellipsoids`, :class:`HollowCylinder`, :class:`Particles`,
        :class:`GaussianBlobs`.
    radius : float
        Radius (m) of a cylinder about the rotation axis that contains the
        specimen (used to size fields and check coverage).
    """

    def __init__(self, components: Sequence, *, radius: float, name: str = "specimen", info: dict | None = None):
        self.components = list(components)
        self.radius = float(radius)
        self.name = name
        self.info = dict(info or {})

    def fine_basis(self, theta_deg, u, v, energy_kev):
        fine = [c for c in self.components if c.kind == "fine"]
        basis = np.zeros((len(fine), len(v), len(u)))
        for k, comp in enumerate(fine):
            comp.add_chords(theta_deg, u, v, basis[k])
        coef = np.stack([c.material.coefficients(energy_kev) for c in fine], axis=1) if fine else np.zeros(
            (len(QUANTITIES), 0)
        )
        return basis, coef

    def smooth_terms(self, theta_deg, x, y, var_x, var_y, energy_kev):
        smooth = [c for c in self.components if c.kind == "smooth"]
        if not smooth:
            return None
        vals = np.zeros((len(QUANTITIES), len(y), len(x)))
        gx = np.zeros((len(y), len(x)))
        gy = np.zeros((len(y), len(x)))
        for comp in smooth:
            coef = comp.material.coefficients(energy_kev)
            val, ddx, ddy = comp.blurred(theta_deg, x, y, var_x, var_y)
            vals += coef[:, None, None] * val[None]
            gx += coef[QUANTITY_INDEX["opd"]] * ddx
            gy += coef[QUANTITY_INDEX["opd"]] * ddy
        return vals, gx, gy


class VoxelSpecimen(Specimen):
    """A user's specimen given as voxel volumes.

    Parameters
    ----------
    density : (ny, nz, nx) array
        Protein-like mass density (g/cm^3). Axis 0 is the rotation axis (y),
        each slice (z, x) is centred on the axis.
    voxel_size : float
        Voxel edge (m).
    elements : dict of symbol -> (ny, nz, nx) array
        Element concentrations (ug/cm^3).
    """

    def __init__(self, density, voxel_size: float, elements: Mapping[str, np.ndarray] | None = None,
                 name: str = "voxel specimen"):
        self.density = np.asarray(density, dtype=float)
        if self.density.ndim != 3:
            raise ValueError(f"density must be a 3D (ny, nz, nx) array, got shape {self.density.shape}")
        self.voxel_size = positive("voxel_size", voxel_size, fix="Give the voxel edge in metres, e.g. 100e-9.")
        self.elements = {}
        for sym, vol in (elements or {}).items():
            C.element(sym)
            vol = np.asarray(vol, dtype=float)
            if vol.shape != self.density.shape:
                raise ValueError(f"element {sym} volume has shape {vol.shape}, expected {self.density.shape}")
            self.elements[sym] = vol
        ny, nz, nx = self.density.shape
        self.radius = 0.5 * math.hypot(nz, nx) * self.voxel_size
        self.name = name

    @classmethod
    def from_hdf5(cls, path: str | Path, voxel_size: float | None = None) -> VoxelSpecimen:
        """Read ``/density`` and ``/elements/<symbol>`` (attribute ``voxel_size`` in m)."""
        import h5py

        with h5py.File(path, "r") as f:
            density = f["density"][()]
            vs = voxel_size if voxel_size is not None else f.attrs.get("voxel_size", f["density"].attrs.get("voxel_size"))
            if vs is None:
                raise ValueError(f"{path}: no voxel_size attribute; pass voxel_size= in metres")
            elements = {k: v[()] for k, v in f["elements"].items()} if "elements" in f else {}
        return cls(density, float(vs), elements, name=Path(path).stem)

    def _native_projection(self, theta_deg: float) -> np.ndarray:
        """Quantities on the native (ny, nx) grid: rotate each slice and sum along z."""
        from scipy import ndimage

        vols = [self.density] + [self.elements[s] for s in self.elements]
        out = []
        for vol in vols:
            # specimen rotates by theta about y: lab u = x cos + z sin.
            rot = ndimage.rotate(vol, theta_deg, axes=(2, 1), reshape=False, order=1, mode="constant")
            out.append(rot.sum(axis=1) * self.voxel_size * 100.0)  # measure in (unit)*cm
        return np.stack(out)

    def fine_basis(self, theta_deg, u, v, energy_kev):
        from scipy import ndimage

        native = self._native_projection(theta_deg)
        ny, nz, nx = self.density.shape
        # native pixel centres: (k - (n-1)/2) * voxel_size
        iu = u / self.voxel_size + (nx - 1) / 2
        iv = v / self.voxel_size + (ny - 1) / 2
        VV, UU = np.meshgrid(iv, iu, indexing="ij")
        basis = np.stack([ndimage.map_coordinates(m, [VV, UU], order=1, mode="constant") for m in native])
        coef = np.zeros((len(QUANTITIES), len(native)))
        coef[:, 0] = Material(density=1.0).coefficients(energy_kev)
        for k, sym in enumerate(self.elements, start=1):
            coef[QUANTITY_INDEX[sym], k] = 1.0
        return basis, coef


def voxelize(specimen: AnalyticSpecimen, shape: tuple[int, int, int], voxel_size: float,
             supersample: int = 2) -> VoxelSpecimen:
    """Sample an analytic specimen's sharp components onto voxels (brute force, for tests).

    Each voxel gets the mean over ``supersample``^3 points of the components'
    indicator functions times their materials. Particles are deposited by
    nearest voxel, Gaussian blobs sampled at points.
    """
    ny, nz, nx = shape
    s = supersample
    h = voxel_size / s

    def axis(n):
        return (np.arange(n * s) - (n * s - 1) / 2) * h

    y, z, x = axis(ny), axis(nz), axis(nx)
    density = np.zeros((ny * s, nz * s, nx * s))
    elems = {sym: np.zeros_like(density) for sym in ELEMENT_SYMBOLS}
    Y, Z, X = np.meshgrid(y, z, x, indexing="ij")
    pts = np.stack([X, Y, Z], axis=-1)
    for comp in specimen.components:
        mat = comp.material
        if isinstance(comp, Ellipsoids):
            for k in range(len(comp.centers)):
                d = pts - comp.centers[k]
                inside = np.einsum("...i,ij,...j->...", d, comp.M[k], d) <= 1.0
                density[inside] += mat.density
                for sym, c in mat.elements.items():
                    elems[sym][inside] += c
        elif isinstance(comp, HollowCylinder):
            r2 = (X - comp.center_xz[0]) ** 2 + (Z - comp.center_xz[1]) ** 2
            inside = (r2 <= comp.ro**2) & (r2 >= comp.ri**2)
            density[inside] += mat.density
            for sym, c in mat.elements.items():
                elems[sym][inside] += c
        elif isinstance(comp, GaussianBlobs):
            f = np.zeros_like(density)
            for k in range(len(comp.centers)):
                d2 = ((pts - comp.centers[k]) ** 2).sum(-1)
                f += comp.amplitudes[k] * np.exp(-d2 / (2 * comp.sigmas[k] ** 2))
            density += f * mat.density
            for sym, c in mat.elements.items():
                elems[sym] += f * c
        elif isinstance(comp, Particles):
            vol_cm3 = (h * 100) ** 3
            idx = np.round(comp.positions[:, [1, 2, 0]] / h + (np.array(density.shape) - 1) / 2).astype(int)
            ok = np.all((idx >= 0) & (idx < np.array(density.shape)), axis=1)
            for arr, per in [(density, mat.density)] + [(elems[s_], c) for s_, c in mat.elements.items()]:
                np.add.at(arr, tuple(idx[ok].T), per * comp.weights[ok] / vol_cm3)
    # average supersamples
    def down(a):
        return a.reshape(ny, s, nz, s, nx, s).mean(axis=(1, 3, 5))

    elements = {sym: down(a) for sym, a in elems.items() if np.any(a)}
    return VoxelSpecimen(down(density), voxel_size, elements, name=f"voxelized {specimen.name}")
