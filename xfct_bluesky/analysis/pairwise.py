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

from dataclasses import dataclass, field

import numpy as np

from .registration import is_blank, register


@dataclass(frozen=True)
class PairwiseSolution:
    """The joint solution of the pairwise registrations (see :class:`~.align.Alignment`).

    ``excluded`` maps the index of every projection the solve could not
    place (its shift NaN) to the reason.
    """

    shifts: np.ndarray
    pairs: np.ndarray
    measured: np.ndarray
    residuals: np.ndarray
    psr: np.ndarray
    used: np.ndarray
    excluded: dict = field(default_factory=dict)


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
    excluded = {int(k): NO_SIGNAL for k in np.flatnonzero(is_blank(stack, roi=roi))}
    while True:  # once, unless projections are left out: then their neighbours are registered with each other
        order = np.argsort(theta, kind="stable")
        order = order[~np.isin(order, list(excluded))]
        pairs, measured, psr, peaks, weight, valid = _register_neighbours(
            stack, theta, order, max_separation, max_angle, upsample=upsample, normalization=normalization,
            roi=roi, window=window)
        new = {int(k): (f"none of its {int(m.sum())} registrations has a correlation peak (no shift correlates it "
                        "with its neighbours)")
               for k in order if (m := _of(pairs, k)).any() and not (m & valid).any()}
        used, low = _without_peak(order, pairs, peaks, valid)  # a registration without a peak (NaN) is never used
        new.update(low)
        if not new:
            break
        excluded.update(new)
    for _ in range(3):
        shifts = solve_shifts(n, pairs[used], measured[used], weight[used])
        residuals = measured - (shifts[pairs[:, 1]] - shifts[pairs[:, 0]])
        r = np.linalg.norm(residuals, axis=1)
        if not used.any():
            break
        new_used = r <= _threshold(r[used], outlier_threshold)  # False for NaN: invalid registrations
        if np.array_equal(new_used, used) or new_used.sum() < np.isfinite(shifts[:, 0]).sum() - 1 \
                or _placed(n, pairs[new_used]).sum() < _placed(n, pairs[used]).sum():
            break  # converged, or the rejection would leave projections without a place
        used = new_used
    for k in np.flatnonzero(~np.isfinite(shifts[:, 0])):
        excluded.setdefault(int(k), "its registrations tie it only to projections apart from the others, "
                                    "so its shift relative to them is unknown")
    return PairwiseSolution(shifts, pairs, measured, residuals, psr, used, dict(sorted(excluded.items())))


def _register_neighbours(stack, theta, order, max_separation, max_angle, **options):
    """(pairs, measured, psr, peak, weight, valid) of the registrations of the projections ``order``
    (sorted by angle) with their neighbours 1, 2, 4, ... places apart."""
    sorted_theta = theta[order]
    step = np.median(np.diff(sorted_theta)) if order.size > 2 else (np.ptp(sorted_theta) if order.size else 0.0)
    pairs, measured, psr, peak, weight, valid = [np.zeros((0, 2), int)], [np.zeros((0, 2))], [], [], [], []
    for d in _separations(order.size, max_separation):
        i, j = order[:-d], order[d:]
        # next neighbours whatever their angle apart: else a wide gap leaves groups with no tie to each other
        ok = (np.abs(theta[j] - theta[i]) <= max(max_angle, step * 1.01)) | (d == 1)
        if not np.any(ok):
            continue
        i, j = i[ok], j[ok]
        res = register(stack[i], stack[j], **options)
        # register(reference=P_i, moving=P_j) is the shift moving P_j onto P_i: s_j - s_i
        pairs.append(np.stack([i, j], axis=1))
        measured.append(np.atleast_2d(res.shift))
        psr.append(np.atleast_1d(res.psr))
        peak.append(np.atleast_1d(res.peak))
        weight.append(np.full(len(i), 1.0 / d))
        valid.append(np.atleast_1d(res.valid))
    return (np.concatenate(pairs), np.concatenate(measured).astype(float),
            *(np.concatenate([np.zeros(0), *x]).astype(float) for x in (psr, peak, weight)),
            np.concatenate([np.zeros(0, bool), *valid]))


#: Why a projection constant in the registered region is left out.
NO_SIGNAL = "no signal: constant in the registered region (all zeros: a closed shutter or a beam dump?)"
#: A projection whose registrations peak (median correlation) below this fraction of the others' has no
#: real correlation peak: 0.10 against 0.92 for noise among 3 ms DPC maps of 32 x 32 px, while a
#: projection with one such neighbour out of two keeps about half of the typical peak. Where the
#: maps themselves are noise-like (few counts: Zn peaks at 0.18, noise at 0.11) nothing is left out.
PEAK_FRACTION = 0.4


def _of(pairs, k) -> np.ndarray:
    """The registrations (rows of ``pairs``) projection ``k`` takes part in."""
    return (pairs[:, 0] == k) | (pairs[:, 1] == k)


def _threshold(r, outlier_threshold) -> float:
    """Residual (px) beyond which a registration is an outlier: ``outlier_threshold`` robust sigmas
    above the median (at least 0.5 px)."""
    r = r[np.isfinite(r)]
    if not r.size:
        return 0.5
    mad = 1.4826 * np.median(np.abs(r - np.median(r))) + 1e-9
    return max(outlier_threshold * mad + np.median(r), 0.5)


def _without_peak(order, pairs, peak, used) -> tuple[np.ndarray, dict[int, str]]:
    """(used, {projection: reason}): leave out, worst first, projections whose registrations have no real peak.

    A projection without signal in common with its neighbours (noise, a map
    unlike every neighbour) still registers somewhere, and alike with each
    of its neighbours (they look alike): its registrations agree with each
    other, so only the height of their peak tells it apart. The projection
    whose registrations peak lowest (median) is left out while that median
    is below ``PEAK_FRACTION`` of the median peak of all kept registrations,
    and the others are measured again without it (its neighbours lose a
    low peak each).
    """
    used = used.copy()
    out = {}
    candidates = [int(k) for k in order]
    while len(candidates) > 2 and used.any():
        typical = float(np.median(peak[used]))
        medians = [(float(np.median(peak[m])), k, int(m.sum()))
                   for k in candidates if (m := _of(pairs, k) & used).any()]
        if not medians:
            break
        low, k, count = min(medians)
        if not low < PEAK_FRACTION * typical:
            break
        out[k] = (f"its {count} registrations peak at a correlation of {low:.2f} (median), against {typical:.2f} for "
                  f"the others (at least {PEAK_FRACTION:g} of it needed): no real correlation peak (noise, or a map "
                  "unlike its neighbours)")
        used &= ~_of(pairs, k)
        candidates.remove(k)
    return used, out


def _placed(n, pairs) -> np.ndarray:
    """(n,) bool: the projections in the largest group that ``pairs`` ties together."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, int).reshape(-1, 2)
    if not len(pairs):
        return np.zeros(n, bool)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    linked = np.zeros(n, bool)
    linked[pairs.ravel()] = True
    sizes = np.bincount(label[linked], minlength=label.max() + 1)
    return linked & (label == np.argmax(sizes))


def solve_shifts(n, pairs, measured, weight) -> np.ndarray:
    """(n, 2) shifts ``s`` by weighted least squares of ``s[j] - s[i] = measured`` over ``pairs`` (i, j), with
    ``weight`` per pair and the gauge sum(s) = 0; the live alignment solves its graph with it too.

    Only the projections tied together by ``pairs`` into the largest group
    are solved for (a group apart has an unknown offset from it): the others
    are NaN, never a number the data do not determine.
    """
    pairs = np.asarray(pairs, int).reshape(-1, 2)
    out = np.full((n, 2), np.nan)
    if n == 1:
        out[:] = 0.0
        return out
    keep = _placed(n, pairs)
    if not keep.any():
        return out
    index = np.cumsum(keep) - 1
    rows = keep[pairs[:, 0]]
    pairs, measured, weight = index[pairs[rows]], np.asarray(measured, float)[rows], np.asarray(weight, float)[rows]
    m, k = len(pairs), int(keep.sum())
    A = np.zeros((m + 1, k))
    A[np.arange(m), pairs[:, 1]] += 1.0
    A[np.arange(m), pairs[:, 0]] -= 1.0
    A[m, :] = 1.0
    w = np.sqrt(np.concatenate([weight, [1.0]]))
    b = np.concatenate([measured, np.zeros((1, 2))])
    sol, *_ = np.linalg.lstsq(A * w[:, None], b * w[:, None], rcond=None)
    out[keep] = sol
    return out
