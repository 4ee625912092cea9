"""What the data say about how to align them, and how consistent an alignment leaves them.

Every function here takes a background-subtracted stack ``(n_angles, ny,
nx)`` of line integrals (fluorescence counts, ``-log`` of transmission, DPC y
or a phase) and angles in degrees, and never modifies it.

* The Helgason-Ludwig conditions of parallel-beam projections give two
  alignments that need no reconstruction and no similar neighbours: the
  centre of mass of every projection of a specimen seen whole follows a
  sinusoid ``a + b cos(theta) + c sin(theta)`` in angle (``a`` is the
  rotation axis), and the mass in every row is the same at every angle.
  :func:`com_alignment` and :func:`vertical_from_profiles` use them.
* :func:`survey` measures what decides the method: the angular step, the
  specimen's radius about the axis, the parallax between neighbours, how
  alike neighbouring projections are, and signal at the field's edges.
* :func:`reprojection_error` is the consistency figure: reconstruct the
  aligned stack (filtered back-projection), reproject it at the measured
  angles, and compare, low-passed to the frequencies the angles sample;
  :func:`reproject` and :func:`default_sigma` are the two halves of it that
  projection matching (:mod:`.refine`) uses too.

References
----------
S. Helgason (1965), Acta Math. 113, 153; D. Ludwig (1966), Commun. Pure
Appl. Math. 19, 49 (the moment conditions). D. Gursoy et al. (2017), Sci.
Rep. 7, 11818, doi:10.1038/s41598-017-12141-9 (reprojection consistency).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import tomo
from .angles import angles_checked, angular_steps
from .registration import register
from .shifts import apply_shifts, fit_sinusoid

logger = logging.getLogger(__name__)

#: Edge signal (fraction of a projection's peak column mean) above which the field cuts the specimen
#: (when it is also 5 noise sigmas above the background).
EDGE_FRACTION = 0.1
#: Columns at each edge that count as "the field's edge" (at least 2).
EDGE_WIDTH = 0.015


def background(stack: np.ndarray) -> float:
    """A robust background level: the median over angles of the 3rd-percentile column mean."""
    prof = stack.mean(axis=1)
    return float(np.median(np.percentile(prof, 3, axis=1)))


def bin_columns(stack: np.ndarray, factor: int) -> np.ndarray:
    """Sum ``factor`` neighbouring columns (the rightmost remainder is dropped); float32."""
    if factor == 1:
        return np.asarray(stack, np.float32)
    n, ny, nx = stack.shape
    m = nx // factor
    return stack[:, :, : m * factor].reshape(n, ny, m, factor).sum(axis=-1, dtype=np.float32)


def shift_margins(shifts, factor: int = 1) -> tuple[int, int]:
    """(rows, columns) at the edges that ``shifts`` (dy, dx px) fill from outside, in a grid binned by ``factor``."""
    shifts = np.asarray(shifts, float)
    return (int(math.ceil(np.abs(shifts[:, 0]).max())) + 1,
            int(math.ceil(np.abs(shifts[:, 1]).max() / factor)) + 1)


def binned_center(center: float, factor: int) -> float:
    """A column position in the binned grid of :func:`bin_columns`."""
    return (center - (factor - 1) / 2) / factor


# -------------------------------------------------------- no reconstruction ---
@dataclass(frozen=True)
class CentreOfMass:
    """Result of :func:`com_alignment`: horizontal shifts from the centre-of-mass sinusoid."""

    dx: np.ndarray  #: (n,) px moving each projection's centre of mass onto the sinusoid
    center: float  #: the sinusoid's constant: the rotation axis column
    residual: float  #: RMS (px) of the centres of mass about the sinusoid before the shifts
    measured: np.ndarray  #: (n,) the centres of mass (column, px)


def com_alignment(stack: np.ndarray, theta) -> CentreOfMass:
    """Align horizontally by the centre of mass of every projection (specimen seen whole).

    The centre of mass ``m(theta)`` of a parallel projection of a specimen
    inside the field is ``axis + X cos(theta) + Z sin(theta)``; runout adds
    to it. The robust least-squares sinusoid through ``m`` (3 passes, points
    beyond 4 robust sigmas dropped) is the runout-free path, and ``fit - m``
    the shift. Exact for noiseless, untruncated line integrals; the noise is
    the spread of the specimen over its total signal.
    """
    theta = np.asarray(theta, float)
    prof = stack.sum(axis=1, dtype=np.float64)
    total = prof.sum(axis=1)
    if np.any(total <= 0):
        raise ValueError("a projection has no signal above the background: the centre of mass is undefined")
    x = np.arange(stack.shape[2])
    m = prof @ x / total
    t = np.radians(theta)
    A = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)
    keep = np.ones(t.size, bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(A[keep], m[keep], rcond=None)
        r = m - A @ coef
        s = 1.4826 * np.median(np.abs(r[keep])) + 1e-6
        new = np.abs(r) <= 4 * s + 0.5
        if new.sum() < 4 or np.array_equal(new, keep):
            break
        keep = new
    fit = A @ coef
    return CentreOfMass(fit - m, float(coef[0]), float(np.sqrt(np.mean((m - fit) ** 2))), m)


def _register_1d(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Shifts (n,) moving each profile of ``moving`` (n, L) onto ``reference`` (L,), to 1/100 px.

    The profiles are registered as images one column wide, repeated over 4
    columns (:func:`~xfct_bluesky.analysis.registration.register`, upsampled DFT).
    """
    ref = np.repeat(reference.astype(np.float32)[:, None], 4, axis=1)
    mov = np.repeat(moving.astype(np.float32)[:, :, None], 4, axis=2)
    shift = np.atleast_2d(register(ref, mov, upsample=100, window="tukey").shift)[:, 0].astype(float)
    return np.nan_to_num(shift, nan=0.0)  # a profile without structure (NaN) tells no vertical shift


def vertical_from_profiles(stack: np.ndarray, *, iterations: int = 3) -> np.ndarray:
    """Vertical shifts (n,) from the rows' mass, which rotation does not change.

    Each projection's vertical profile (its rows summed) is registered
    against the mean of the profiles aligned so far, three times. Works at
    any angular step and for specimens longer than the field (a rod), as
    long as each row is seen whole horizontally; zero where the specimen
    has no vertical structure.
    """
    prof = stack.sum(axis=2, dtype=np.float64)
    n, ny = prof.shape
    if ny < 4:
        return np.zeros(n)
    dy = np.zeros(n)
    rows = np.arange(ny, dtype=float)
    for _ in range(iterations):
        aligned = np.stack([np.interp(rows - dy[k], rows, prof[k]) for k in range(n)])
        ref = aligned.mean(axis=0)
        if np.std(ref) <= 1e-12:
            return np.zeros(n)
        dy = dy + _register_1d(ref, aligned)
        dy -= dy.mean()
    return dy


# ---------------------------------------------------------------- survey ---
@dataclass(frozen=True)
class Survey:
    """What :func:`survey` measured; every figure is in the warnings and reasons it feeds."""

    step: float  #: median angular step (deg), angles folded into [0, 180)
    max_gap: float  #: largest angular gap (deg)
    n_distinct: int  #: distinct angles in [0, 180)
    radius: float  #: specimen radius about the axis (px)
    center: float  #: rotation axis column used for the radius (px)
    parallax: float  #: radius x step (px): how far apart a feature at the edge moves between neighbours
    similarity: float  #: median correlation of angular neighbours (low-passed, 1 = identical)
    edge: np.ndarray  #: (n,) signal at the field's edges / the projection's peak column sum
    truncated_angles: int  #: projections whose edge signal exceeds EDGE_FRACTION

    @property
    def truncated(self) -> bool:
        return self.truncated_angles > 0

    def as_dict(self) -> dict:
        return {"angular_step_deg": round(self.step, 3), "largest_gap_deg": round(self.max_gap, 3),
                "distinct_angles": self.n_distinct, "radius_px": round(self.radius, 1),
                "parallax_px": round(self.parallax, 2), "neighbour_similarity": round(self.similarity, 3),
                "edge_signal_max": round(float(self.edge.max()), 4), "truncated_angles": self.truncated_angles}


def survey(stack: np.ndarray, theta, center: float | None = None, *, signed: bool = False) -> Survey:
    """Measure the regime of a background-subtracted stack (see :class:`Survey`).

    ``signed`` maps (DPC) are surveyed by their magnitude, and their edges
    are not tested (a derivative vanishes inside a specimen as well).
    """
    theta = np.asarray(theta, float)
    n, ny, nx = stack.shape
    step, gap, distinct = angular_steps(theta)
    prof = _column_profiles(stack, signed)
    smooth = ndimage.uniform_filter1d(prof, max(3, nx // 100), axis=1)
    edge = np.zeros(n) if signed else _edge_signal(stack, prof, smooth)
    if center is None:
        center = (nx - 1) / 2
    envelope = smooth.max(axis=0)
    on = np.flatnonzero(envelope > 0.05 * envelope.max())
    radius = float(np.max(np.abs(on - center)) + 0.5) if on.size else 0.0
    parallax = radius * math.radians(step)
    return Survey(step, gap, distinct, radius, float(center), parallax,
                  neighbour_similarity(stack, theta), edge, int(np.count_nonzero(edge > EDGE_FRACTION)))


def _column_profiles(stack: np.ndarray, signed: bool = False) -> np.ndarray:
    """(n, nx) mean of each projection's rows (of their magnitude for signed maps)."""
    return np.abs(stack).mean(axis=1, dtype=np.float64) if signed else stack.mean(axis=1, dtype=np.float64)


def _edge_signal(stack: np.ndarray, prof: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """(n,) signal in the field's edge columns over the projection's peak, 0 where within 5 noise sigmas."""
    _, ny, nx = stack.shape
    peak = np.maximum(smooth.max(axis=1), 1e-12)
    w = max(2, int(round(EDGE_WIDTH * nx)))
    d = np.diff(stack[:, :, ::max(1, nx // 256)], axis=2).ravel()
    noise = float(np.std(d)) / math.sqrt(2) / math.sqrt(w * ny)  # std, not MAD: sparse counts are mostly 0
    band = np.maximum(prof[:, :w].mean(axis=1), prof[:, -w:].mean(axis=1))
    return np.where(band > 5 * noise, band, 0.0) / peak


def cut_by_field(stack: np.ndarray) -> bool:
    """Whether the field cuts the specimen at some angle (the edge test of :func:`survey`, alone)."""
    prof = _column_profiles(stack)
    smooth = ndimage.uniform_filter1d(prof, max(3, stack.shape[2] // 100), axis=1)
    return bool(np.any(_edge_signal(stack, prof, smooth) > EDGE_FRACTION))


def neighbour_similarity(stack: np.ndarray, theta, sigma: float = 1.0) -> float:
    """Median correlation of each projection with its nearest neighbour in angle, corrected for noise.

    Both are smoothed (Gaussian, ``sigma`` px) and their Pearson correlation
    divided by the highest correlation two noisy copies of one image could
    have (signal variance over total variance, the noise estimated from
    neighbouring-pixel differences): 1 for neighbours alike but for noise,
    whatever the counts; 0 for unrelated ones.
    """
    order = np.argsort(np.asarray(theta, float), kind="stable")
    if order.size < 2:
        return 1.0
    raw = stack[order].astype(np.float32)
    s = ndimage.gaussian_filter(raw, (0, sigma, sigma))
    a = s[:-1].reshape(order.size - 1, -1)
    b = s[1:].reshape(order.size - 1, -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1)) + 1e-30
    r = float(np.median((a * b).sum(axis=1) / den))
    noise = float(np.var(np.diff(raw, axis=2))) / 2 / (4 * math.pi * sigma**2)  # white noise after the filter
    total = float(np.median(np.var(s.reshape(order.size, -1), axis=1)))
    limit = max(1.0 - noise / total, 0.05) if total > 0 else 1.0
    return float(min(r / limit, 1.0))


def informativeness(stack: np.ndarray, sigma: float = 2.0) -> float:
    """Signal-to-noise ratio of a stack after a Gaussian low-pass of ``sigma`` px.

    The noise is estimated from neighbouring-pixel differences (MAD), the
    signal is the spread of the low-passed maps; a channel with more of its
    structure above the noise aligns better.
    """
    a = np.asarray(stack, np.float32)
    d = np.diff(a, axis=2).ravel()
    if d.size > 2_000_000:
        d = d[:: d.size // 2_000_000]
    noise = 1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2)
    smooth = ndimage.gaussian_filter(a, (0, sigma, sigma))
    signal = float(np.std(smooth))
    noise_lp = noise / (2 * math.sqrt(math.pi) * sigma)
    return signal / max(noise_lp, 1e-12 * max(signal, 1e-30))


# ------------------------------------------------------------ consistency ---
def default_sigma(nx: int, diameter: float | None = None, n_angles: int | None = None) -> float:
    """The low-pass (px) under which a reprojection is made of the other angles, not the projection itself.

    A filtered back-projection reprojected at one of its own angles contains
    that projection, weighted ``pi L |f| / n`` at frequency ``f`` (``L`` the
    specimen's diameter, ``n`` the angles over 180 degrees): above
    ``f ~ n / (pi L)`` the match would only find the projection where it
    already is. ``max(1.5, nx / 35, 0.9 L / n)``: 8 px for the whole egg in
    280 px at 90 angles, 46 px for a 1600 px field at 36 angles.
    """
    sigma = max(1.5, nx / 35)
    if diameter and n_angles:
        sigma = max(sigma, 0.9 * diameter / n_angles)
    return float(sigma)


def reprojection_error(stack: np.ndarray, theta, shifts, *, center: float, sigma: float,
                       support: float | None = None, margin: int = 0, row_margin: int = 0) -> float:
    """Relative low-passed misfit of the aligned stack against its own reprojection.

    The stack shifted by ``shifts`` is reconstructed by filtered
    back-projection (Shepp-Logan), masked to ``support`` px about the axis
    (default: the circle the field sees at every angle), reprojected at
    ``theta`` (:func:`reproject`), and both
    are low-passed (Gaussian, ``sigma`` px horizontally, 1 px vertically).
    Returns ``||d - s r|| / ||d||`` over the columns at least ``margin`` px
    and the rows at least ``row_margin`` px from the edges (what the shifts
    move in from outside the field is not data), ``s`` the best scale. A consistent (aligned) stack
    gives a smaller figure than the same stack misaligned; noise and the
    angular sampling set its floor.
    """
    aligned = apply_shifts(stack, shifts, mode="nearest")
    ny, nx = aligned.shape[1:]
    if support is None:
        support = min(center, nx - 1 - center) + 0.5
    rep = reproject(aligned, theta, center, support=support)
    g = (0, min(1.0, aligned.shape[1] / 8), sigma)
    d = ndimage.gaussian_filter(aligned, g)
    p = ndimage.gaussian_filter(rep, g)
    return relative_misfit(interior(d, row_margin, margin), interior(p, row_margin, margin))


def reproject(aligned: np.ndarray, theta, center: float, *, support: float | None = None,
              nonneg: bool = False) -> np.ndarray:
    """Filtered back-projection (Shepp-Logan) of ``aligned``, masked to ``support`` px about the axis, reprojected."""
    with angles_checked():  # its callers warn about the angles once
        rec = tomo.fbp(aligned, theta, center=center, filter="shepp-logan")
    if support is not None:
        nx = aligned.shape[2]
        c = (nx - 1) / 2
        yy, xx = np.ogrid[:nx, :nx]
        rec *= ((yy - c) ** 2 + (xx - c) ** 2 <= support**2)[None]
    if nonneg:
        np.clip(rec, 0, None, out=rec)
    return tomo.project(rec, theta, center=center)


def interior(stack: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``stack`` without ``rows`` rows and ``cols`` columns at each edge (at most a half and a quarter)."""
    ny, nx = stack.shape[1:]
    r = int(max(0, min(rows, (ny - 1) // 2 - 1)))
    c = int(max(0, min(cols, nx // 4)))
    return stack[:, r:ny - r, c:nx - c]


def relative_misfit(data: np.ndarray, model: np.ndarray) -> float:
    """``||d - s m|| / ||d||`` with ``s`` the least-squares scale of the model (NaN for empty data)."""
    mm = float(np.vdot(model, model))
    s = float(np.vdot(data, model)) / mm if mm > 0 else 0.0
    dd = float(np.vdot(data, data))
    return float(np.sqrt(np.vdot(data - s * model, data - s * model) / dd)) if dd > 0 else float("nan")


def support_radius(sv: Survey) -> float:
    """Radius (px) about the axis that holds the specimen, with a 5 % (and 4 px) margin."""
    return sv.radius * 1.05 + 4


def consistency_figures(cons, theta, shifts, center: float, sv: Survey, com: CentreOfMass | None) -> dict:
    """Reprojection error of a channel without and with ``shifts``: the figures ``Alignment.consistency`` holds.

    Computed with the columns binned to about ``sigma / 4`` (the low-pass
    makes finer columns pointless), each shift set with its own rotation
    axis: the constant of the centre-of-mass sinusoid of the shifted stack
    when the specimen is seen whole, else a centre search.
    """
    nx = cons.stack.shape[2]
    if not cons.consistent:
        return {"channel": cons.name, "note": f"{cons.name} is {cons.kind}: not a line integral, no reprojection"}
    sigma = default_sigma(nx, 2 * sv.radius, sv.n_distinct)
    b = 1 << max(0, int(math.floor(math.log2(max(sigma / 4, 1)))))
    while b > 1 and nx // b < 32:
        b //= 2
    binned = bin_columns(cons.stack, b)
    scale = np.array([1.0, float(b)])
    rows, cols = shift_margins(shifts, b)
    out = {"channel": cons.name, "sigma_px": round(sigma, 2), "binning": b}
    for label, s in (("before", np.zeros_like(shifts)), ("after", shifts)):
        if com is not None:
            c = float(fit_sinusoid(com.measured + s[:, 1], theta)[0])
        elif label == "after" and np.isfinite(center):
            c = center
        else:
            c = float(tomo.find_center(apply_shifts(binned, s / scale, mode="nearest"), theta)) * b + (b - 1) / 2
        c_b = float(np.clip(binned_center(c, b), 0, binned.shape[2] - 1))
        support = None if sv.truncated else support_radius(sv) / b
        out[label] = round(reprojection_error(binned, theta, s / scale, center=c_b, sigma=max(sigma / b, 1.0),
                                              support=support, margin=cols, row_margin=rows), 5)
    return out
