"""Pairwise registration of neighbouring projections, solved jointly: the fine-angle aligner.

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
in the shifts. Vertical shifts have no such term. It works while neighbouring
projections look alike: features at radius ``R`` px move ``R * delta`` px
apart (the parallax), which must stay within a few pixels; beyond that
(sparse angles, wide specimens) projection matching
(:mod:`xfct_bluesky.analysis.refine`) takes over, see
:func:`~xfct_bluesky.analysis.align.align_projections`.

References
----------
Guizar-Sicairos, Thurman & Fienup (2008), Opt. Lett. 33, 156,
doi:10.1364/OL.33.000156.
Hong et al., the founding paper (DPC for XRF tomography alignment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registration import register


@dataclass(frozen=True)
class PairwiseSolution:
    """The joint solution of the pairwise registrations (see :class:`~.align.Alignment`)."""

    shifts: np.ndarray
    pairs: np.ndarray
    measured: np.ndarray
    residuals: np.ndarray
    psr: np.ndarray
    used: np.ndarray


def _separations(n: int, max_separation: int) -> list[int]:
    out, d = [], 1
    while d <= min(max_separation, n - 1):
        out.append(d)
        d *= 2
    return out


def pairwise_alignment(stack, theta, *, upsample: int = 20, max_separation: int = 16, max_angle: float = 12.0,
                       roi=None, normalization=None, window: str | None = "tukey",
                       outlier_threshold: float = 6.0) -> PairwiseSolution:
    """Register every projection against its angular neighbours and solve all shifts jointly.

    ``stack`` (n, ny, nx) and ``theta`` (n,) as checked by
    :func:`~xfct_bluesky.analysis.align.align_projections`, whose docstring
    gives the options.
    """
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
    return PairwiseSolution(shifts, pairs, measured, residuals, psr, used)


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


def center_from_mirror(stack, theta, shifts, upsample, window=None, parity=1) -> float:
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
    from .align import apply_shifts

    aligned = apply_shifts(stack, shifts)
    res = register(aligned[i], parity * aligned[j][:, :, ::-1], upsample=upsample, window=window)
    dx = np.atleast_2d(res.shift)[:, 1]
    # the partner is A(2c - u); flipped it is A shifted right by (nx - 1 - 2c), so register
    # returns 2c - (nx - 1)
    return float((nx - 1) / 2 + np.median(dx) / 2)
