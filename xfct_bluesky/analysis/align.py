"""Align tomography projections onto a common rotation axis with DPC.

Method
------
Projections are ordered by angle and each is registered (upsampled-DFT cross
correlation, :func:`~xfct_bluesky.analysis.registration.register`) against
its neighbours at several angular separations ``d`` (1, 2, 4, ... steps).
Each registration measures ``s[k+d] - s[k]``; all shifts ``s`` are then
solved jointly by weighted least squares, with outliers rejected. Because
every projection is tied to many others, errors do not accumulate as they
would along a chain of neighbour registrations (a random walk of
``sigma * sqrt(n)`` over hundreds of projections).

Between two projections ``delta`` apart, features at depth ``w`` (along the
beam) move by ``w * delta``; a cross-correlation follows the texture's mean
depth, i.e. the motion of its centroid, which is a sinusoid
``a + b cos(theta) + c sin(theta)`` in angle. That sinusoid, like the
eccentricity of the stage, only moves the reconstructed object, so it is left
in the shifts (it is removed when comparing with truth, see
:func:`alignment_error`). Vertical shifts have no such term.

Sign convention
---------------
``shifts[k]`` (dy, dx) in pixels moves projection ``k`` onto the common
axis: ``apply_shifts(stack, shifts)``. A projection recorded with the
specimen displaced by ``offset`` needs ``shift = -offset``.

References
----------
Guizar-Sicairos, Thurman & Fienup (2008), Opt. Lett. 33, 156,
doi:10.1364/OL.33.000156.
Hong et al., the founding paper (DPC for XRF tomography alignment).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .registration import register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_projections`.

    Attributes
    ----------
    shifts : (n, 2) array
        (dy, dx) in pixels that move each projection (input order) onto the
        common rotation axis.
    theta : (n,) array
        Angles (deg), input order.
    center : float
        Rotation axis column (px, 0-based) in the aligned projections, from
        the 180-degree mirror pair (NaN when the angles do not span ~180).
    sinusoid : (3,) array
        Best-fit a + b cos(theta) + c sin(theta) of the horizontal shifts (px).
    pairs : (m, 2) int array
        Input indices (i, j) of every registration used.
    measured : (m, 2) array
        Their measured s[j] - s[i].
    residuals : (m, 2) array
        Measured minus solved, px; large values flag a bad registration.
    psr : (m,) array
        Peak-to-sidelobe ratio of each registration.
    used : (m,) bool array
        Registrations kept after outlier rejection.
    """

    shifts: np.ndarray
    theta: np.ndarray
    center: float
    sinusoid: np.ndarray
    pairs: np.ndarray
    measured: np.ndarray
    residuals: np.ndarray
    psr: np.ndarray
    used: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def rms_residual(self) -> np.ndarray:
        """RMS of the kept registrations' residuals (dy, dx), px: the alignment's self-consistency."""
        r = self.residuals[self.used]
        return np.sqrt(np.mean(r**2, axis=0)) if len(r) else np.full(2, np.nan)


def _check_stack(stack, theta):
    stack = np.asarray(stack)
    theta = np.asarray(theta, dtype=float).ravel()
    if stack.ndim != 3:
        raise ValueError(f"projections must be a 3D (n_angles, ny, nx) stack; got shape {stack.shape}")
    if stack.shape[0] != theta.size:
        raise ValueError(
            f"{stack.shape[0]} projections but {theta.size} angles; give one angle (deg) per projection"
        )
    if theta.size < 2:
        raise ValueError(f"{theta.size} projection(s): alignment needs at least 2")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta contains NaN or infinity; give finite angles in degrees")
    if not np.all(np.isfinite(stack)):
        raise ValueError("projections contain NaN or infinity; replace them (e.g. by 0) before aligning")
    return stack, theta


def _separations(n: int, max_separation: int) -> list[int]:
    out, d = [], 1
    while d <= min(max_separation, n - 1):
        out.append(d)
        d *= 2
    return out


def align_projections(
    projections,
    theta,
    *,
    upsample: int = 20,
    max_separation: int = 16,
    max_angle: float = 12.0,
    roi=None,
    normalization=None,
    window: str | None = "tukey",
    outlier_threshold: float = 6.0,
    find_center: bool = True,
    center_maps=None,
    center_parity: int = 1,
) -> Alignment:
    """Align a tomography's projections (DPC maps) onto a common rotation axis.

    Parameters
    ----------
    projections : (n, ny, nx) array
        One map per angle, e.g. diagonal or x DPC (or fluorescence, to compare).
    theta : (n,) array
        Angles (deg), any order (sequential, interlaced, golden).
    upsample : int
        Sub-pixel precision 1/upsample of each registration.
    max_separation : int
        Largest separation (in angle-sorted steps) registered; separations
        are 1, 2, 4, ... up to it.
    max_angle : float
        Largest angle difference (deg) registered: beyond it parallax blurs
        the cross-correlation.
    roi : tuple of slices or bool mask, optional
        Region of each projection used for registration.
    normalization : None or "phase"
        Passed to :func:`register`; None suits low counts.
    window : {"tukey", "hann", None}
        Taper applied before registering. Maps are not periodic: without a
        taper the circular cross-correlation is dragged toward zero shift by
        smooth backgrounds (the capillary, the cell's curvature), a bias of
        up to 0.7 of the true horizontal shift in simulation; Tukey brings
        same-angle pairs to 0.02-0.05 px.
    outlier_threshold : float
        Registrations whose residual exceeds this many robust standard
        deviations (and 0.5 px) are dropped and the shifts solved again.
    find_center : bool
        Estimate the rotation axis from the pair closest to 180 degrees apart.
    center_maps : (n, ny, nx) array, optional
        Maps to estimate the axis with (default ``projections``). The
        projection at theta + 180 is the mirror image of the one at theta,
        but mirroring flips the sign of d/dx: a DPC x map's partner is minus
        its mirror, and a diagonal DPC map's partner is neither. For DPC
        data give the DPC x maps with ``center_parity=-1``.
    center_parity : {1, -1}
        1 for maps that mirror (fluorescence, transmission, phase), -1 for
        maps that are derivatives along x (DPC x).

    Returns
    -------
    Alignment
    """
    stack, theta = _check_stack(projections, theta)
    n = theta.size
    order = np.argsort(theta, kind="stable")
    sorted_theta = theta[order]
    step = np.median(np.diff(sorted_theta)) if n > 2 else abs(sorted_theta[-1] - sorted_theta[0])
    pairs, measured, psr, weight = [], [], [], []
    for d in _separations(n, max_separation):
        i, j = order[:-d], order[d:]
        ok = np.abs(theta[j] - theta[i]) <= max(max_angle, step * 1.01)
        if not np.any(ok):
            continue
        i, j = i[ok], j[ok]
        res = register(stack[i], stack[j], upsample=upsample, normalization=normalization, roi=roi,
                       window=window)
        # register(reference=P_i, moving=P_j) is the shift moving P_j onto P_i: s_j - s_i
        pairs.append(np.stack([i, j], axis=1))
        measured.append(np.atleast_2d(res.shift))
        psr.append(np.atleast_1d(res.psr))
        weight.append(np.full(len(i), 1.0 / d))
    pairs = np.concatenate(pairs)
    measured = np.concatenate(measured).astype(float)
    psr = np.concatenate(psr).astype(float)
    weight = np.concatenate(weight)
    used = np.ones(len(pairs), bool)
    for _ in range(3):
        shifts = _solve(n, pairs[used], measured[used], weight[used])
        residuals = measured - (shifts[pairs[:, 1]] - shifts[pairs[:, 0]])
        r = np.linalg.norm(residuals, axis=1)
        mad = 1.4826 * np.median(np.abs(r[used] - np.median(r[used]))) + 1e-9
        new_used = r <= max(outlier_threshold * mad + np.median(r[used]), 0.5)
        if np.array_equal(new_used, used) or new_used.sum() < n - 1:
            break
        used = new_used
    sinusoid = fit_sinusoid(theta, shifts[:, 1])
    center = float("nan")
    if find_center:
        cmaps = stack if center_maps is None else np.asarray(center_maps)
        if cmaps.shape != stack.shape:
            raise ValueError(f"center_maps has shape {cmaps.shape}; expected the projections' {stack.shape}")
        if center_parity not in (1, -1):
            raise ValueError(f"center_parity={center_parity!r}: allowed 1 (mirroring maps) or -1 (d/dx maps)")
        center = _center_from_mirror(cmaps, theta, shifts, upsample, window, center_parity)
    logger.info("aligned %d projections with %d registrations (%d kept)", n, len(pairs), int(used.sum()))
    return Alignment(shifts, theta, center, sinusoid, pairs, measured, residuals, psr, used,
                     params={"upsample": upsample, "max_separation": max_separation, "max_angle": max_angle,
                             "normalization": normalization, "window": window})


def _solve(n, pairs, measured, weight):
    """Weighted least squares for s with s[j] - s[i] = measured, gauge sum(s) = 0."""
    m = len(pairs)
    A = np.zeros((m + 1, n))
    A[np.arange(m), pairs[:, 1]] += 1.0
    A[np.arange(m), pairs[:, 0]] -= 1.0
    A[m, :] = 1.0
    w = np.sqrt(np.concatenate([weight, [1.0]]))
    b = np.concatenate([measured, np.zeros((1, 2))])
    sol, *_ = np.linalg.lstsq(A * w[:, None], b * w[:, None], rcond=None)
    return sol


def fit_sinusoid(theta, values) -> np.ndarray:
    """Least-squares (a, b, c) of values ~ a + b cos(theta) + c sin(theta), theta in degrees."""
    t = np.radians(np.asarray(theta, float))
    A = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.asarray(values, float), rcond=None)
    return coef


def remove_sinusoid(theta, values) -> np.ndarray:
    t = np.radians(np.asarray(theta, float))
    a, b, c = fit_sinusoid(theta, values)
    return np.asarray(values, float) - (a + b * np.cos(t) + c * np.sin(t))


def alignment_error(shifts, true_offsets, theta) -> np.ndarray:
    """RMS error (dy, dx) in px of ``shifts`` against ``-true_offsets``.

    Horizontally the best-fit sinusoid a + b cos + c sin of the difference is
    removed, vertically its mean: these only move the reconstructed object.
    """
    diff = np.asarray(shifts, float) + np.asarray(true_offsets, float)
    dy = diff[:, 0] - diff[:, 0].mean()
    dx = remove_sinusoid(theta, diff[:, 1])
    return np.sqrt([np.mean(dy**2), np.mean(dx**2)])


def _center_from_mirror(stack, theta, shifts, upsample, window=None, parity=1) -> float:
    """Rotation-axis column from projections about 180 degrees apart.

    The projection at theta + 180 is the mirror image (u -> -u) about the
    axis of the one at theta; registering one against the other's mirror
    gives twice the axis offset from the image centre. Every pair within 1.5
    angular steps (at least 0.5 deg) of 180 apart is used and the median
    taken, so that the parallax of an imperfect pair averages out.
    """
    n, _, nx = stack.shape
    diff = np.abs(((theta[:, None] - theta[None, :]) % 360.0) - 180.0)
    np.fill_diagonal(diff, np.inf)
    step = 180.0 / n
    i, j = np.nonzero(np.triu(diff <= max(1.5 * step, 0.5)))
    if len(i) == 0:
        return float("nan")
    aligned = apply_shifts(stack, shifts)
    res = register(aligned[i], parity * aligned[j][:, :, ::-1], upsample=upsample, window=window)
    dx = np.atleast_2d(res.shift)[:, 1]
    # the partner is A(2c - u); flipped it is A shifted right by (nx - 1 - 2c), so register
    # returns 2c - (nx - 1)
    return float((nx - 1) / 2 + np.median(dx) / 2)


def apply_shifts(stack, shifts, *, method: str = "linear", cval: float = 0.0) -> np.ndarray:
    """Shift every projection by ``shifts[k]`` (dy, dx) px, once.

    Parameters
    ----------
    stack : (n, ny, nx) array
    shifts : (n, 2) array
    method : {"linear", "fourier"}
        ``linear`` interpolation keeps counts non-negative (fluorescence);
        ``fourier`` is exact for band-limited images (DPC) but rings.
    cval : float
        Fill value for pixels shifted in from outside (linear).

    Returns
    -------
    (n, ny, nx) array of the input's floating dtype (float32 for integer input).
    """
    stack = np.asarray(stack)
    shifts = np.asarray(shifts, float)
    if stack.ndim != 3 or shifts.shape != (stack.shape[0], 2):
        raise ValueError(f"need a (n, ny, nx) stack and (n, 2) shifts; got {stack.shape} and {shifts.shape}")
    if method not in ("linear", "fourier"):
        raise ValueError(f"method={method!r}: allowed 'linear' or 'fourier'")
    dtype = stack.dtype if np.issubdtype(stack.dtype, np.floating) else np.float32
    out = np.empty(stack.shape, dtype=dtype)
    for k in range(stack.shape[0]):
        img = stack[k].astype(dtype, copy=False)
        if method == "linear":
            out[k] = ndimage.shift(img, shifts[k], order=1, mode="constant", cval=cval)
        else:
            f = ndimage.fourier_shift(np.fft.fft2(img), shifts[k])
            out[k] = np.fft.ifft2(f).real
    return out
