"""Parallel-beam tomographic reconstruction of a whole volume at once.

Filtered back-projection (FBP), SIRT and MLEM/OSEM in numpy and scipy
only, on the projector of :mod:`xfct_bluesky.analysis.projector` (its
docstring gives the geometry: ``projections`` is the ``(n_angles, n_rows,
n_cols)`` stack as acquired, ``theta`` in degrees, the result the ``(n_rows,
n_cols, n_cols)`` volume, :func:`skimage.transform.radon`'s convention). The
centre-of-rotation search is in :mod:`.center`, the quality metrics in
:mod:`.metrics`; both are re-exported here.

:func:`fbp`, :func:`sirt` and :func:`mlem` refuse angles that see the
specimen from one direction only, and warn (:class:`ReconstructionWarning`)
about a limited angular range (a missing wedge) and repeated angles, with
the consequence (:func:`~.angles.angle_problems`); MLEM refuses
negative counts naming the index of the lowest.

Public functions: :func:`project`, :func:`backproject`, :func:`fbp`,
:func:`sirt`, :func:`mlem`, :func:`find_center`, :func:`nrmse`,
:func:`ssim`, :func:`poisson_log_likelihood`, :func:`clear_cache`,
:func:`center_from_tomopy` / :func:`center_to_tomopy` (tomopy counts the
axis column from the detector's edge: see the projector's docstring).
"""

from __future__ import annotations

import logging

import numpy as np

from ..validate import counts, integer, one_of
from .angles import angle_problems, check_angles, looks_like_radians
from .center import CENTER_METHODS, find_center
from .exceptions import ReconstructionWarning
from .filtering import FILTERS  # the FBP filter, shared with the centre search
from .metrics import nrmse, poisson_log_likelihood, ssim
from .projector import (
    PROJECTORS,
    backproject,
    center_from_tomopy,
    center_to_tomopy,
    check_center,
    check_stack,
    check_volume_like,
    choose_projector,
    clear_cache,
    operator,
    project,
)

__all__ = [
    "CENTER_METHODS", "FILTERS", "PROJECTORS", "ReconstructionWarning", "backproject", "center_from_tomopy",
    "center_to_tomopy", "clear_cache", "fbp", "find_center",
    "mlem", "nrmse", "poisson_log_likelihood", "project", "sirt", "ssim",
]

logger = logging.getLogger(__name__)


def _check_angles(theta, what: str) -> None:
    """Refuse angles from a single direction; warn about a missing wedge or repeated angles (once per
    entry point: not inside :func:`~.angles.angles_checked`). Angles that look like radians have
    been logged as such by the stack check, the likelier mistake than a 6-degree scan."""
    if looks_like_radians(theta):
        angle_problems(theta)  # still refuse a single direction
        return
    check_angles(theta, ReconstructionWarning, what, stacklevel=4)


def fbp(projections, theta, *, center=None, filter="ramp", projector="auto", overwrite_input=False) -> np.ndarray:
    """Filtered back-projection of a whole stack.

    Parameters
    ----------
    projections : (n_angles, n_rows, n_cols) array_like
        Stack as acquired (line integrals: counts maps, or -log of
        transmission), or a 2D ``(n_angles, n_cols)`` sinogram.
    theta : (n_angles,) array_like
        Angles in degrees, evenly covering 180 or 360 degrees.
    center : float, optional
        Detector column of the rotation axis, in ``[0, n_cols - 1]``;
        default ``(n_cols - 1) / 2``.
    filter : {"ramp", "shepp-logan", "cosine", "hamming", "hann"}
        The ramp (Ram-Lak) filter, or the ramp apodised by a window that
        goes from 1 at zero frequency to, at the Nyquist frequency, 0.64
        (Shepp-Logan, ``sinc``), 0 (cosine), 0.08 (Hamming) or 0 (Hann).
    projector : {"auto", "matrix", "matrix-free"}
        The cached sparse system matrix (fastest where it fits in memory),
        the same distance-driven weights computed on the fly by numba
        kernels on all cores (memory of the volume and data only), or
        ``"auto"``: the matrix where its estimate fits under
        :data:`.projector.MATRIX_BUDGET` (2 GiB), matrix-free otherwise;
        the choice is logged. The results agree to float32 rounding.
    overwrite_input : bool
        Let the filter write into ``projections`` (when it is a
        C-contiguous float32 array, destroyed then; as ``scipy.fft``'s
        ``overwrite_x``): the peak memory is then the data and the volume,
        not one more copy of the data. Default False: the caller's array is
        never changed.

    Returns
    -------
    volume : (n_rows, n_cols, n_cols) float32 ndarray
        The reconstruction, in units of projection value per pixel (a 2D
        slice for a 2D sinogram).

    See Also
    --------
    sirt, mlem : iterative reconstructions, better with few angles or counts.

    Notes
    -----
    Every row is zero-padded to the next power of 2 >= ``2 * n_cols``,
    filtered by FFT with the spatially sampled ramp (Kak & Slaney, ch. 3;
    it has no DC offset, unlike ``|f|`` sampled in frequency), times the
    window, and back-projected by the transpose of the distance-driven
    projector, weighted ``pi / n_angles`` (angles assumed evenly spread over
    180 or 360 degrees). The ramp keeps the full resolution and the most
    noise; for low-count fluorescence maps "shepp-logan" or "cosine" are the
    usual compromise and "hann" the smoothest.

    References
    ----------
    .. [1] A. C. Kak and M. Slaney, *Principles of Computerized Tomographic
       Imaging*, IEEE Press (1988), ch. 3; SIAM Classics (2001),
       doi:10.1137/1.9780898719277.
    """
    stack, theta, was_2d = check_stack(projections, theta)
    one_of("filter", filter, FILTERS)
    _check_angles(theta, "FBP")
    n_cols = stack.shape[2]
    op = operator(projector, n_cols, theta, check_center(center, n_cols))
    vol = op.volume_out(op.back_filtered(stack, filter, np.pi / theta.size, overwrite=bool(overwrite_input)))
    return vol[0] if was_2d else vol


# ------------------------------------------------------------ iterative ---
def _start(x0, shape, op, *, nonneg=False) -> np.ndarray | None:
    if x0 is None:
        return None
    arr = check_volume_like(x0, shape, "x0", nonneg=nonneg)
    return op.volume_in(arr.reshape((-1,) + shape[-2:]))


def _safe_inverse(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values)
    np.divide(1.0, values, out=out, where=values > 0)
    return out


def sirt(projections, theta, *, iterations=100, center=None, nonneg=True, mask=None, x0=None,
         projector="auto") -> np.ndarray:
    """Simultaneous iterative reconstruction technique (SIRT) of a whole stack.

    Parameters
    ----------
    projections : (n_angles, n_rows, n_cols) array_like
        Stack as acquired, or a 2D ``(n_angles, n_cols)`` sinogram.
    theta : (n_angles,) array_like
        Angles in degrees (any set, need not be even).
    iterations : int
        Number of updates, >= 1. SIRT converges slowly: tens to hundreds.
    center : float, optional
        Detector column of the rotation axis; default ``(n_cols - 1) / 2``.
    nonneg : bool
        Clip negative voxels to zero after every update (default True).
    mask : None, "circle" or bool array, optional
        Voxels to reconstruct, ``(n_cols, n_cols)`` for every slice or
        ``(n_rows, n_cols, n_cols)``; the others are held at zero.
        ``"circle"``: the disc inscribed in the slice.
    x0 : array_like, optional
        Start, shaped like the result; default zeros.
    projector : {"auto", "matrix", "matrix-free"}
        The projector, as in :func:`fbp`.

    Returns
    -------
    volume : (n_rows, n_cols, n_cols) float32 ndarray

    See Also
    --------
    mlem : for photon counts (Poisson noise).
    fbp : direct reconstruction.

    Notes
    -----
    The update is ``x <- x + C A^T R (p - A x)`` with ``R`` and ``C`` the
    inverse row and column sums of the projector ``A`` (Gilbert 1972; the
    form astra-toolbox and TomoPy implement). It minimises the ``R``-weighted
    least-squares misfit and, started at zero and stopped early, acts as a
    regulariser: fewer iterations are smoother.

    References
    ----------
    .. [1] P. Gilbert, "Iterative methods for the three-dimensional
       reconstruction of an object from projections", J. Theor. Biol. 36,
       105-117 (1972), doi:10.1016/0022-5193(72)90180-4.
    """
    stack, theta, was_2d = check_stack(projections, theta)
    iterations = integer("iterations", iterations, low=1, fix="SIRT converges slowly: give tens to hundreds, e.g. 100.")
    _check_angles(theta, "SIRT")
    _, n_rows, n_cols = stack.shape
    op = operator(projector, n_cols, theta, check_center(center, n_cols))
    weights = op.mask(mask, n_rows)
    shape = (n_rows, n_cols, n_cols) if not was_2d else (n_cols, n_cols)
    x = _start(x0, shape, op)
    if x is None:
        x = op.zeros(n_rows)
    if weights is not None:
        x *= weights
    b = op.data_in(stack)
    r_inv = _safe_inverse(op.ray_sums)
    c_inv = _safe_inverse(op.pixel_sums)
    for _ in range(iterations):
        residual = op.forward(x)
        np.subtract(b, residual, out=residual)
        residual *= r_inv
        update = op.back(residual)
        update *= c_inv
        x += update
        if nonneg:
            np.maximum(x, 0, out=x)
        if weights is not None:
            x *= weights
    vol = op.volume_out(x)
    return vol[0] if was_2d else vol


def _subset_order(subsets: int) -> list[int]:
    """Subsets in bit-reversed order, so consecutive ones are far apart in angle."""
    bits = max(1, (subsets - 1).bit_length())
    order = sorted(range(1 << bits), key=lambda i: int(format(i, f"0{bits}b")[::-1], 2))
    return [i for i in order if i < subsets]


def mlem(projections, theta, *, iterations=50, subsets=1, center=None, mask=None, x0=None,
         projector="auto") -> np.ndarray:
    """Maximum-likelihood expectation maximisation (MLEM), or OSEM with ``subsets > 1``.

    Parameters
    ----------
    projections : (n_angles, n_rows, n_cols) array_like
        Non-negative stack as acquired (photon counts, or any non-negative
        line integrals), or a 2D ``(n_angles, n_cols)`` sinogram.
    theta : (n_angles,) array_like
        Angles in degrees.
    iterations : int
        Passes over all the data, >= 1.
    subsets : int
        1 for MLEM; ``S > 1`` for OSEM: the angles, sorted, are dealt into
        ``S`` interleaved subsets (every S-th angle), visited in bit-reversed
        order, one update each. In ``[1, n_angles]``.
    center : float, optional
        Detector column of the rotation axis; default ``(n_cols - 1) / 2``.
    mask : None, "circle" or bool array, optional
        Voxels to reconstruct (see :func:`sirt`); the others stay zero.
    x0 : array_like, optional
        Non-negative start shaped like the result; default a uniform slice
        whose projections have the measured total counts.
    projector : {"auto", "matrix", "matrix-free"}
        The projector, as in :func:`fbp`.

    Returns
    -------
    volume : (n_rows, n_cols, n_cols) float32 ndarray
        Non-negative.

    See Also
    --------
    sirt, fbp, poisson_log_likelihood

    Notes
    -----
    The update (Shepp & Vardi 1982) is
    ``x <- x / (A^T 1) * A^T (p / (A x))``: for Poisson counts ``p`` each
    iteration increases the likelihood (see :func:`poisson_log_likelihood`),
    and a positive start stays non-negative. Rays whose expected count is 0
    contribute nothing. The iterations are the regulariser: the likelihood
    keeps rising as noise is fitted, so stop early (20-100 for MLEM).
    OSEM (Hudson & Larkin 1994) with ``S`` subsets costs the same per
    iteration and converges about ``S`` times faster early on, but does
    not converge to the maximum; keep ``n_angles / S`` >= ~8.

    References
    ----------
    .. [1] L. A. Shepp and Y. Vardi, "Maximum likelihood reconstruction for
       emission tomography", IEEE Trans. Med. Imaging 1, 113-122 (1982),
       doi:10.1109/TMI.1982.4307558.
    .. [2] H. M. Hudson and R. S. Larkin, "Accelerated image reconstruction
       using ordered subsets of projection data", IEEE Trans. Med. Imaging
       13, 601-609 (1994), doi:10.1109/42.363108.
    """
    stack, theta, was_2d = check_stack(projections, theta)
    iterations = integer("iterations", iterations, low=1, fix="Give the passes over the data, e.g. 20 (stop early: "
                                                                 "they are the regulariser).")
    n_angles, n_rows, n_cols = stack.shape
    subsets = integer("subsets", subsets, low=1, high=n_angles, fix="1 is MLEM; OSEM has at most one subset per "
                                                                      "angle, keep n_angles / subsets >= ~8.")
    counts("projections", stack[:, 0] if was_2d else stack,
                 fix="MLEM models photon counts: clip fitted maps with np.clip(projections, 0, None), or use sirt")
    _check_angles(theta, "OSEM" if subsets > 1 else "MLEM")
    center = check_center(center, n_cols)
    shape = (n_rows, n_cols, n_cols) if not was_2d else (n_cols, n_cols)
    if subsets == 1:
        parts = [np.arange(n_angles)]
    else:
        order = np.argsort(np.mod(theta, 180.0), kind="stable")
        parts = [np.sort(order[s::subsets]) for s in _subset_order(subsets)]
    kind = choose_projector(projector, n_cols, n_angles)  # one choice for all subsets (they share the memory)
    ops = [operator(projector, n_cols, theta[idx], center, kind=kind) for idx in parts]
    op = ops[0]
    weights = op.mask(mask, n_rows)
    data = [o.data_in(stack if subsets == 1 else stack[idx]) for o, idx in zip(ops, parts)]
    sens_inv = [_safe_inverse(o.pixel_sums) for o in ops]
    seen = sum(o.pixel_sums for o in ops) > 0  # voxels no ray sees stay at zero
    x = _start(x0, shape, op, nonneg=True)
    if x is None:
        # uniform start (inside the mask) whose projections hold the measured counts:
        # sum(A x) = level * sum_pixels(A^T 1 * x)
        x = np.broadcast_to(seen if weights is None else seen * weights, op.volume_shape(n_rows)).astype(np.float32)
        total_x = sum(o.weighted_sums(o.pixel_sums, x) for o in ops)
        total_b = stack.sum(axis=(0, 2), dtype=np.float64)
        level = np.zeros(n_rows)
        np.divide(total_b, total_x, out=level, where=total_x > 0)
        op.scale_slices(x, level)
    else:
        x *= seen
        if weights is not None:
            x *= weights
    for _ in range(iterations):
        for o, b, s_inv in zip(ops, data, sens_inv):
            expected = o.forward(x)
            ratio = np.zeros_like(expected)
            np.divide(b, expected, out=ratio, where=expected > 0)
            update = o.back(ratio)
            update *= s_inv
            x *= update
    vol = op.volume_out(x)
    return vol[0] if was_2d else vol

