"""Refine an alignment by projection matching: register each projection to a reprojection.

Pairwise registration (:func:`~xfct_bluesky.analysis.align.align_projections`)
measures how the texture moves between nearby angles. In a thick specimen
(the whole 75 um egg) features at different depths move by different amounts
(parallax), so the measured moves are not exactly additive and leave a
non-sinusoidal error of ~0.2 px horizontally, whatever the dose. Projection
matching (Gursoy et al. 2017) removes it: the aligned projections are
reconstructed (FBP), the volume reprojected at every angle, and each
projection registered against its own reprojection; repeat.

Two details make it converge here:

* the projections and reprojections are low-passed (Gaussian, ``sigma`` px)
  before registering: at high spatial frequencies the reprojection at one
  angle is mostly made of its angular neighbours (too few angles to be
  consistent there), which only reproduces the pairwise solution, while the
  low frequencies are well sampled and pin each projection absolutely;
* each correction has the sinusoid a + b cos(theta) + c sin(theta) removed
  horizontally and its mean vertically: those only move the object, and
  left in they drift from one iteration to the next.

With few angles (36 over 180 degrees of a 1600 px specimen) two more are
needed (``guard=True``, ``support``, as
:func:`~xfct_bluesky.analysis.align.align_projections` calls it):

* the reconstruction is masked to the specimen's support before
  reprojecting (outside it the streaks of few angles add a false signal);
* a step is kept only if it lowers the low-passed misfit between the stack
  and its reprojection, else it is halved from the best point
  (backtracking): the loop's own fixed point lies some 0.2-0.3 px from the
  truth there (streaks, and the projection's own share of its
  reprojection), and unguarded it drifts on to 1-5 px from a good start.

Binning columns (``levels``) makes the early iterations cheap; binning
beyond ~500 columns costs accuracy (a sharp wire narrower than the bin
loses its place in it), hence :func:`default_levels`.

The maps matched must be a consistent tomographic dataset: DPC y (the
derivative along the rotation axis commutes with projection), a phase
integrated from DPC, or fluorescence; not DPC x or diagonal DPC, whose
derivative direction turns with the angle.

References
----------
D. Gursoy, Y. P. Hong, K. He, K. Hujsak, S. Yoo, S. Chen, Y. Li, M. Ge,
L. M. Miller, Y. S. Chu, V. De Andrade, K. He, O. Cossairt, A. K.
Katsaggelos, C. Jacobsen (2017), Sci. Rep. 7, 11818, doi:10.1038/s41598-017-12141-9.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..validate import integer, real
from ..validate import shifts as check_shifts
from .angles import check_angles, check_theta
from .center import find_center
from .consistency import (
    bin_columns,
    binned_center,
    default_sigma,
    interior,
    relative_misfit,
    reproject,
    shift_margins,
)
from .exceptions import AlignmentWarning
from .registration import is_blank, register
from .shifts import apply_shifts, remove_sinusoid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refinement:
    """Result of :func:`refine_alignment`.

    Attributes
    ----------
    shifts : (n, 2) array
        Refined (dy, dx) px, same convention as the input shifts.
    steps : (iterations, 2) array
        RMS of each iteration's correction (dy, dx) in full-resolution px:
        it falls to the noise level (~0.02 px) when converged.
    levels : (iterations,) int array
        The column binning of each iteration (coarse to fine).
    converged : bool
        The last iteration's correction was below ``tolerance``.
    center : float
        The rotation-axis column used (px, full resolution).
    """

    shifts: np.ndarray
    steps: np.ndarray
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    converged: bool = False
    center: float = float("nan")

    @property
    def iterations(self) -> int:
        return len(self.steps)


#: Fewest rows for which the vertical shifts are refined too: in a thin slab the
#: rows shifted in and out of the field bias the vertical registration against
#: the reprojection (0.06 to 0.9 px on 24 rows), while pairwise registration
#: needs no volume.
MIN_ROWS_VERTICAL = 64


def default_levels(nx: int, *, start_known: bool = True) -> tuple[int, ...]:
    """Column binnings, coarse to fine, ending at the coarsest that keeps at least 512 columns.

    Binning sums columns, so a sharp feature narrower than the bin loses
    its position within it; 512 columns keep a 1600 px field's wires. From
    a good start (the centre of mass) one coarser level finds the basin;
    from zero, three.
    """
    finest = 1
    while nx // (finest * 2) >= 512:
        finest *= 2
    out = [finest]
    for _ in range(2 if start_known else 4):
        if nx // (out[0] * 2) < 64:
            break
        out.insert(0, out[0] * 2)
    return tuple(out[-2:]) if start_known else tuple(out)


def refine_alignment(projections, theta, shifts, *, center: float | None = None, iterations: int = 6,
                     sigma: float | None = None, tolerance: float = 0.01, upsample: int = 20,
                     vertical: bool | None = None, levels=(1,), nonneg: bool = False,
                     support: float | None = None, max_step: float | None = None,
                     guard: bool = False) -> Refinement:
    """Projection-matching refinement of ``shifts`` for a consistent projection stack.

    Parameters
    ----------
    projections : (n, ny, nx) array
        E.g. DPC y maps, fluorescence counts, -log of transmission (see
        the module notes on which maps qualify), background-subtracted.
    theta : (n,) array
        Angles in degrees, spanning about 180.
    shifts : (n, 2) array
        Starting (dy, dx) px, e.g. ``align_projections(...).shifts``.
    center : float, optional
        Rotation-axis column of the aligned projections; default
        :func:`~xfct_bluesky.analysis.tomo.find_center` on them.
    iterations : int
        At most this many reconstruct-reproject-register rounds per level (>= 1).
    sigma : float, optional
        Gaussian low-pass (px, full resolution) before registering; default
        :func:`default_sigma` (``nx / 35``, at least 1.5).
    tolerance : float
        Go to the next level (or stop) when the RMS correction falls below
        this (px, full resolution).
    upsample : int
        Registration precision 1/upsample px (full resolution).
    vertical : bool, optional
        Refine the vertical shifts too; default only for fields of at least
        ``MIN_ROWS_VERTICAL`` rows (otherwise they are kept as given).
    levels : sequence of int
        Column binnings, coarse to fine (e.g. ``(16, 8)``; see
        :func:`default_levels`): the coarse levels find the basin cheaply.
    nonneg : bool
        Clip the reconstruction at zero before reprojecting (counts,
        absorption; not DPC y, which is signed). Off by default: with few
        angles the clipped streaks bias the match.
    support : float, optional
        Radius (px, full resolution) about the axis outside which the
        reconstruction is set to zero before reprojecting (the specimen's
        radius plus a margin); default none.
    max_step : float, optional
        Largest correction (px) one iteration may make to one projection;
        larger ones (a registration caught by a wrong peak) are scaled
        back to it. Default ``4 * sigma``.
    guard : bool
        Keep a step only if it lowers the low-passed misfit between the
        stack and its reprojection; otherwise halve it from the best point
        (backtracking) until it is below ``tolerance``. Projection matching
        with few angles otherwise drifts (each reprojection holds the
        projection itself, and its streaks): its fixed point is not the
        misfit's minimum. Off by default (on the whole egg at 90 angles the
        unguarded loop is 0.02 px better); ``align_projections`` sets it.

    Returns
    -------
    Refinement
    """
    stack = real("projections", projections).astype(np.float32, copy=False)
    if stack.ndim != 3:
        raise ValueError(f"projections must be a 3D (n, ny, nx) stack; got shape {stack.shape}")
    theta = check_theta(theta, stack.shape[0])
    shifts = check_shifts(shifts, theta.size, name="start shifts")
    blank = np.flatnonzero(is_blank(stack))
    if blank.size:
        raise ValueError(f"projections {blank.tolist()} have no signal (constant: a closed shutter or a beam dump?); "
                         "allowed: projections with signal, which a reprojection can be matched to. Leave them out "
                         "(align_projections does, and gives them NaN shifts)")
    check_angles(theta, AlignmentWarning, "projection matching")
    iterations = integer("iterations", iterations, low=1, fix="Give the rounds per level, e.g. 6.")
    levels = tuple(int(b) for b in levels)
    if not levels or any(b < 1 or stack.shape[2] // b < 8 for b in levels):
        raise ValueError(f"levels={levels!r}: allowed column binnings >= 1 that leave at least 8 columns "
                         f"of the {stack.shape[2]}, coarse to fine, e.g. (4, 2, 1)")
    ny, nx = stack.shape[1:]
    sigma = default_sigma(nx) if sigma is None else float(sigma)
    vertical = ny >= MIN_ROWS_VERTICAL if vertical is None else bool(vertical)
    max_step = 4 * sigma if max_step is None else float(max_step)
    if center is None or not np.isfinite(center):
        center = float(find_center(apply_shifts(stack, shifts), theta))
    fill = _fill_mode(stack)
    steps, done, converged = [], [], False
    for b in levels:
        binned = bin_columns(stack, b)
        c_b = binned_center(center, b)
        if not 0 <= c_b <= binned.shape[2] - 1:
            raise ValueError(f"center {center} is outside the field binned by {b}; give a column inside it")
        smooth = (0, min(sigma, 8.0), max(sigma / b, 1.0))
        scale = np.array([1.0, float(b)])
        converged = False
        best, last = (np.inf, shifts.copy()), None
        for _ in range(iterations):
            aligned = apply_shifts(binned, shifts / scale, mode=fill)
            reprojected = reproject(aligned, theta, c_b, support=None if support is None else support / b,
                                    nonneg=nonneg)
            ref_lp = ndimage.gaussian_filter(reprojected, smooth)
            mov_lp = ndimage.gaussian_filter(aligned, smooth)
            if guard:
                err = _misfit(mov_lp, ref_lp, shifts, b)
                if err > best[0]:  # the last step overshot: halve it from the best point (backtracking)
                    last = last * 0.5
                    rms = np.sqrt(np.mean(last**2, axis=0))
                    logger.info("projection matching (columns binned %d): misfit rose %.5f -> %.5f, step halved "
                                "to RMS dy %.3f, dx %.3f px", b, best[0], err, *rms)
                    if rms.max() < tolerance:
                        shifts = best[1].copy()
                        converged = True
                        break
                    shifts = best[1] + last
                    steps.append(rms)
                    done.append(b)
                    continue
                best = (err, shifts.copy())
            step = np.atleast_2d(register(ref_lp, mov_lp, upsample=int(min(upsample * b, 400)),
                                          window="tukey").shift)
            step = np.nan_to_num(step, nan=0.0)  # no correlation peak (NaN): no correction this round
            step = _robust(step.astype(float) * scale, limit=max_step)
            step[:, 1] = remove_sinusoid(step[:, 1], theta)  # object motion: not the alignment's business
            step[:, 0] = step[:, 0] - step[:, 0].mean() if vertical else 0.0
            rms = np.sqrt(np.mean(step**2, axis=0))
            if rms.max() < tolerance:
                converged = True
                break
            shifts = shifts + step
            last = step
            steps.append(rms)
            done.append(b)
            logger.info("projection matching (columns binned %d): correction RMS dy %.3f px, dx %.3f px", b, *rms)
        else:
            if guard and np.isfinite(best[0]):
                shifts = best[1].copy()  # out of iterations: the most consistent point seen
    return Refinement(shifts, np.array(steps).reshape(-1, 2), np.array(done, int), converged, float(center))


def _robust(step: np.ndarray, limit: float) -> np.ndarray:
    """Scale back corrections longer than ``limit`` px (a registration caught by a wrong peak)."""
    norm = np.linalg.norm(step, axis=1)
    over = norm > limit
    if np.any(over):
        logger.info("projection matching: %d correction(s) over %.1f px scaled back (largest %.1f px)",
                    int(over.sum()), limit, float(norm.max()))
        step[over] *= (limit / norm[over])[:, None]
    return step


def _misfit(data: np.ndarray, model: np.ndarray, shifts: np.ndarray, b: int) -> float:
    """Relative misfit of low-passed data and reprojection, best scale, away from the shifted-in edges."""
    rows, cols = shift_margins(shifts, b)
    err = relative_misfit(interior(data, rows, cols), interior(model, rows, cols))
    return 0.0 if np.isnan(err) else err


def _fill_mode(stack: np.ndarray) -> str:
    """How to fill rows shifted in from outside: "nearest" for a specimen cut by the field's top or bottom
    (a rod: its rows continue), "constant" (zero) for one seen whole vertically."""
    rows = np.abs(stack).mean(axis=(0, 2))
    edge = max(rows[:2].mean(), rows[-2:].mean())
    return "nearest" if edge > 0.1 * rows.max() else "constant"
