"""Sub-pixel image registration by upsampled-DFT cross-correlation.

Our implementation of the algorithm of Guizar-Sicairos, Thurman & Fienup
(2008): the cross-correlation (CC) of two images is computed once on the
pixel grid by FFT, and its peak is then refined on a grid 1/``upsample`` px
fine, evaluated only in a small neighbourhood of the peak by a
matrix-multiply DFT of the product spectrum. It is built for the low-count
maps of dose-fractionated XRF tomography:

* the plain (unnormalized) CC is the default, which stays accurate at
  0.5-5 counts per pixel where phase correlation fails;
* means are subtracted (and a taper optionally applied) before correlating;
* float32 throughout, ``scipy.fft`` real transforms with ``workers``;
* stacks: many moving images against one reference (whose FFT is computed
  once) or pairwise, in batches, with the DFT kernels cached.

Public functions: :func:`register` (shifts and peak quality),
:func:`cross_correlation` (the CC image, e.g. 6x upsampled as in the DPC
alignment paper) and :func:`cc_fwhm` (width of a CC peak along x, y and the
45-degree line).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import fft as _fft

__all__ = ["CCWidth", "Registration", "cc_fwhm", "cross_correlation", "register"]

NORMALIZATIONS = (None, "phase")
WINDOWS = (None, "hann", "tukey")
#: Half-width (px) of the box around the peak left out of the sidelobe
#: statistics of the PSR (an 11 x 11 box, as in Bolme et al. 2010).
PSR_EXCLUDE = 5
#: Pixels (images x ny x nx) processed per batch of a stack (at least
#: _BATCH_MIN images). 2^19 measured fastest at 96^2 and 230^2 (stacks of 96,
#: 2-core EPYC): 1.55x faster per pair than 2^16 at 96^2, where the Python and
#: BLAS-call overhead of each batch dominates; beyond 2^20 the batch leaves the
#: caches and 230^2 slows down.
_BATCH_PIXELS = 1 << 19
_BATCH_MIN = 4
_TUKEY_ALPHA = 0.25


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register`.

    For a pair of images the fields are a (2,) array and scalars; for a
    stack of ``n`` registrations they gain a leading axis of length ``n``.

    Attributes
    ----------
    shift : (2,) or (n, 2) float array
        (dy, dx) in pixels that registers ``moving`` onto ``reference``
        (scikit-image's convention: ``scipy.ndimage.shift(moving, shift)``
        overlays ``reference``), to within 1/upsample px.
    peak : float or (n,) array
        Height of the CC peak. For ``normalization=None`` it is the
        correlation coefficient of the two (mean-subtracted, windowed)
        images at the best shift, 1 for identical images, near 0 for
        unrelated ones; for ``"phase"`` the phase-correlation peak, 1 for a
        pure translation (integer shift), smaller with noise.
    fwhm : (2,) or (n, 2) float array
        Full width at half maximum (y, x) of the CC peak, px, measured on
        the band-limited CC through the sub-pixel peak; NaN where the CC
        does not fall below half the peak within half the image.
    psr : float or (n,) array
        Peak-to-sidelobe ratio: (peak - mean) / std of the pixel-grid CC
        outside an 11 x 11 px box around the peak. Above ~10 the peak is
        well above the noise; below ~5 distrust the shift.
    """

    shift: np.ndarray
    peak: np.ndarray | float
    fwhm: np.ndarray
    psr: np.ndarray | float


class CCWidth(NamedTuple):
    """FWHM of a CC peak in original pixels (see :func:`cc_fwhm`)."""

    x: float
    y: float
    diagonal: float


# ---------------------------------------------------------- threading ---
@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController

        return ThreadpoolController()
    except Exception:  # threadpoolctl missing or unable to inspect the BLAS: leave it alone
        return None


def _one_blas_thread():
    """Context limiting the BLAS to one thread, if threadpoolctl is installed.

    Our matrix products are small (at most ~17 x 230 x 116): a second BLAS
    thread gains nothing, and when the other cores are busy OpenBLAS's
    spin-waiting threads make every product many times slower.
    """
    controller = _blas_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


# --------------------------------------------------------------- checks ---
def _check_upsample(upsample, *, integer: bool = True):
    bad = isinstance(upsample, bool) or not isinstance(upsample, numbers.Real)
    if not bad:
        bad = not math.isfinite(upsample) or upsample < 1 or (integer and upsample != int(upsample))
    if bad:
        kind = "an integer" if integer else "a number"
        raise ValueError(
            f"upsample={upsample!r} is not allowed; give {kind} >= 1 "
            "(1/upsample px precision, e.g. 20 or 100; 1 for whole pixels)"
        )
    return int(upsample) if integer else float(upsample)


def _check_option(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
    return value


def _check_workers(workers):
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers == 0:
        raise ValueError(f"workers={workers!r}: give a non-zero integer (-1 = all CPUs) or None")
    return int(workers)


def _workers(workers, k):
    """scipy.fft threads: as given, else all CPUs for a batch and one for a single image."""
    if workers is not None:
        return workers
    return -1 if k > 1 else 1


def _as_images(name, value):
    """``value`` as an array of 2D images (no copy: views and broadcasts are kept)."""
    a = np.asarray(value)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} has dtype {a.dtype}; give a real-valued numeric image")
    if np.iscomplexobj(a):
        raise ValueError(f"{name} is complex ({a.dtype}); give real-valued images")
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {a.shape}; give one image (ny, nx) or a stack (n, ny, nx)")
    n = a.shape[0] if a.ndim == 3 else None
    if a.ndim == 3 and a.shape[0] > 1 and a.strides[0] == 0:
        # np.broadcast_to of one image: transform that image once
        a = a[:1]
    return a, n


def _roi_slices(roi, shape) -> tuple[slice, slice]:
    """(slice_y, slice_x) of ``roi`` for images of ``shape`` (ny, nx)."""
    ny, nx = shape
    if roi is None:
        return slice(0, ny), slice(0, nx)
    if isinstance(roi, tuple) and len(roi) == 2 and all(isinstance(s, slice) for s in roi):
        out = []
        for s, n, axis in zip(roi, (ny, nx), "yx"):
            start, stop, step = s.indices(n)
            if step != 1:
                raise ValueError(f"roi {axis} slice {s!r} has step {step}; give a contiguous slice (step 1)")
            if stop - start < 2:
                raise ValueError(
                    f"roi={roi!r} selects {max(stop - start, 0)} px along {axis} of images {shape}; "
                    "give a region at least 2 x 2 px inside the image"
                )
            out.append(slice(start, stop))
        return out[0], out[1]
    mask = np.asarray(roi)
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(
            f"roi of type {type(roi).__name__} (shape {getattr(mask, 'shape', None)}, dtype "
            f"{getattr(mask, 'dtype', None)}) is not allowed; give (slice_y, slice_x) or a 2D boolean mask"
        )
    if mask.shape != (ny, nx):
        raise ValueError(f"roi mask has shape {mask.shape} but the images are {shape}; give a mask of the image shape")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("roi mask selects no pixels (all False); give a mask with a region at least 2 x 2 px")
    sy, sx = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    if sy.stop - sy.start < 2 or sx.stop - sx.start < 2:
        raise ValueError(
            f"roi mask's bounding box is {sy.stop - sy.start} x {sx.stop - sx.start} px; "
            "give a region at least 2 x 2 px"
        )
    return sy, sx


def _check_pair(reference, moving, roi):
    ref, n_ref = _as_images("reference", reference)
    mov, n_mov = _as_images("moving", moving)
    if ref.shape[-2:] != mov.shape[-2:]:
        raise ValueError(
            f"reference images are {ref.shape[-2:]} but moving images are {mov.shape[-2:]}; "
            "give images of the same shape (crop or pad them)"
        )
    if n_ref is not None and n_mov is not None and n_ref != n_mov:
        raise ValueError(
            f"reference stack has {n_ref} images but moving stack has {n_mov}; "
            "give stacks of equal length (pairwise) or a single 2D reference"
        )
    if min(ref.shape[-2:]) < 2:
        raise ValueError(f"images are {ref.shape[-2:]} px; registration needs at least 2 x 2 px")
    sl = _roi_slices(roi, ref.shape[-2:])
    return ref, mov, sl, n_ref, n_mov


# -------------------------------------------------------- preparation ---
@functools.lru_cache(maxsize=64)
def _window(kind, ny, nx) -> np.ndarray:
    def one(n):
        if kind == "hann":
            return np.hanning(n + 2)[1:-1]  # never exactly 0 at the border pixels
        # Tukey: cosine taper over alpha/2 of the length at each end, flat in between
        w = np.ones(n)
        m = int(_TUKEY_ALPHA * (n - 1) / 2)
        if m > 0:
            t = np.arange(m) / m
            w[:m] = 0.5 * (1 - np.cos(np.pi * (t + 1 / m) / (1 + 1 / m)))
            w[n - m:] = w[:m][::-1]
        return w

    w = np.outer(one(ny), one(nx)).astype(np.float32)
    w.setflags(write=False)
    return w


def _prepare(parts, sl, window) -> np.ndarray:
    """The images of ``parts`` cropped into one float32 stack (k, ny, nx), means subtracted, window applied.

    The means only need to be close (the product spectrum's DC term is
    zeroed anyway): they keep the float32 FFT's rounding, which scales with
    the DC term, away from the signal.
    """
    ny, nx = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    counts = [1 if a.ndim == 2 else a.shape[0] for a in parts]
    out = np.empty((sum(counts), ny, nx), np.float32)
    i = 0
    for a, c in zip(parts, counts):
        out[i : i + c] = a[..., sl[0], sl[1]]
        i += c
    k, n = out.shape[0], ny * nx
    mean = np.matmul(out.reshape(k, n), np.ones(n, np.float32)) / np.float32(n)  # BLAS gemv
    out -= mean[:, None, None]
    if window is not None:
        out *= _window(window, ny, nx)
    return out


def _spectra(parts, sl, window, workers):
    """rfft2 (k, ny, nx//2+1) of the prepared images of ``parts`` ((name, images) pairs,
    stacked in order) and their energies (k,) without the mean.

    The energies come from the spectra (Parseval, DC left out), which also
    catches NaN and infinity without another pass over the images.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf are reported below
        a = _prepare([images for _, images in parts], sl, window)
        k, ny, nx = a.shape
        F = _fft.rfft2(a, workers=_workers(workers, k))
        v = F.reshape(k, -1).view(np.float32)
        total = np.matmul(v[:, None, :], v[:, :, None])[:, 0, 0].astype(np.float64)  # sum |F|^2, half spectrum
        edge = np.abs(F[:, :, 0]) ** 2
        energy = 2 * total - edge.sum(axis=1, dtype=np.float64) - edge[:, 0].astype(np.float64)
        if nx % 2 == 0:
            energy -= (np.abs(F[:, :, -1]) ** 2).sum(axis=1, dtype=np.float64)
        energy /= ny * nx
    if not np.isfinite(energy).all():
        i, bad = 0, []
        for name, images in parts:
            c = 1 if images.ndim == 2 else images.shape[0]
            if not np.isfinite(energy[i : i + c]).all():
                bad.append(name)
            i += c
        raise ValueError(
            f"{' and '.join(bad)} contains NaN or infinity (or values beyond float32's range) in the "
            "registered region; replace them (e.g. by 0 or the mean) first"
        )
    return F, np.maximum(energy, 0.0)


# ------------------------------------------------------------ kernels ---
@functools.lru_cache(maxsize=128)
def _freqs(n: int, half: bool):
    """(frequencies in cycles/px, weights) of a full or half (rfft) axis of length n."""
    if not half:
        return np.fft.fftfreq(n), np.ones(n)
    f = np.fft.rfftfreq(n)
    w = np.full(f.size, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return f, w


@functools.lru_cache(maxsize=128)
def _region_kernel(n: int, half: bool, step: float, h: int) -> np.ndarray:
    """(2h+1, len(f)) complex64 w_k exp(2 pi i f_k j step), j = -h..h; transposed if ``half``."""
    f, w = _freqs(n, half)
    j = np.arange(-h, h + 1) * step
    k = (w[None, :] * np.exp(2j * np.pi * j[:, None] * f[None, :])).astype(np.complex64)
    if half:
        k = np.ascontiguousarray(k.T)  # (len(f), 2h+1): the right-hand factor
    k.setflags(write=False)
    return k


def _cis(t) -> np.ndarray:
    """complex64 exp(2 pi i t) of phases ``t`` in cycles (float64).

    The phase is reduced modulo 1 in float64, then cos and sin are taken in
    float32 (vectorized, ~1e-7 accurate).
    """
    t = t - np.rint(t)
    t *= 2 * np.pi
    t = t.astype(np.float32)
    out = np.empty(t.shape, np.complex64)
    np.cos(t, out=out.real)
    np.sin(t, out=out.imag)
    return out


def _ramp(n: int, half: bool, centers) -> np.ndarray:
    """(k, len(f)) complex64: exp(2 pi i f c) for each centre c (px)."""
    return _cis(np.multiply.outer(centers, _freqs(n, half)[0]))


@functools.lru_cache(maxsize=64)
def _yx_freqs(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed y frequencies then non-negative x frequencies, and a mask of the y ones."""
    f = np.concatenate([_freqs(ny, False)[0], _freqs(nx, True)[0]])
    is_y = np.arange(f.size) < ny
    f.setflags(write=False)
    is_y.setflags(write=False)
    return f, is_y


def _ramps(ny: int, nx: int, cy, cx) -> tuple[np.ndarray, np.ndarray]:
    """exp(2 pi i f c) along y (k, ny) and along the half x axis (k, nx//2+1), in one pass."""
    f, is_y = _yx_freqs(ny, nx)
    r = _cis(np.where(is_y, cy[:, None], cx[:, None]) * f)
    return r[:, :ny], r[:, ny:]


#: Refinement stages grow the upsampling by about this ratio: 10 (fewer,
#: larger stages, less Python overhead) for images below _LARGE pixels,
#: 5 (more, smaller stages, less arithmetic) for larger ones.
_STAGE_RATIOS = (10.0, 5.0)
_LARGE = 1 << 14


@functools.lru_cache(maxsize=32)
def _stages(upsample: int, pixels: int) -> tuple[tuple[float, int], ...]:
    """(grid factor, half-width in grid steps) of each refinement stage.

    The first stage spans +-0.75 px around the pixel-grid peak (as in
    Guizar-Sicairos et al.); each later one spans +-0.75 step of the stage
    before (whose maximum is within +-0.5 step of the true one). The last
    stage searches the same 1/upsample grid as one (1.5 upsample)^2 region
    would, with far fewer points: at upsample 100, 7^2 + 9^2 + 9^2 (large
    images) or 17^2 + 17^2 instead of 151^2. The plan depends only on the
    image size, so a stack gives exactly the results of a loop of pairs.
    """
    if upsample <= 1:
        return ()
    ratio = _STAGE_RATIOS[pixels >= _LARGE]
    count = max(1, math.ceil(math.log(upsample) / math.log(ratio) - 1e-9))
    factors = [upsample ** ((i + 1) / count) for i in range(count)]
    factors[-1] = float(upsample)
    out, prev = [], None
    for u in factors:
        h = math.ceil(0.75 * u - 1e-9) if prev is None else math.ceil(0.75 * u / prev - 1e-9)
        out.append((u, max(h, 1)))
        prev = u
    return tuple(out)


def _evaluate_region(P, cy, cx, step, h, ny, nx):
    """CC (k, 2h+1, 2h+1) at (cy + i step, cx + j step), from half spectra P (k, ny, nx//2+1).

    Also returns the rows' 1D spectra T (k, 2h+1, nx//2+1), unweighted:
    CC(cy + i step, x) = Re sum_kx w_kx T[i, kx] exp(2 pi i kx x / nx) / (ny nx).
    """
    ry, rx = _ramps(ny, nx, cy, cx)
    A = _region_kernel(ny, False, step, h)[None] * ry[:, None, :]  # (k, m, ny)
    B = _region_kernel(nx, True, step, h)[None] * rx[:, :, None]  # (k, nxh, m), weighted
    T = np.matmul(A, P)
    return np.matmul(T, B).real, T


# ---------------------------------------------------------- core pass ---
def _batch_register(Rf, Mf, ny, nx, upsample, normalization, energy, workers, reuse_mf):
    """Register one batch of spectra (broadcast over the leading axis).

    ``Mf`` is overwritten by the product spectrum unless ``reuse_mf``.
    """
    if reuse_mf or Mf.shape[0] < Rf.shape[0]:
        P = Rf * np.conj(Mf)
    else:
        P = np.conjugate(Mf, out=Mf)  # our temporary: no new array
        P *= Rf
    k = P.shape[0]
    rows = np.arange(k)
    P[:, 0, 0] = 0  # correlate mean-free images even after a window
    if normalization == "phase":
        # unit modulus, except below float32 rounding of the largest term (scaled, not amplified to 1)
        mag = np.abs(P)
        np.maximum(mag, np.finfo(np.float32).eps * mag.max(axis=(1, 2), keepdims=True), out=mag)
        P /= mag
    cc = _fft.irfft2(P, s=(ny, nx), workers=_workers(workers, k))
    flat = cc.reshape(k, -1)
    idx = flat.argmax(axis=1)
    py, px = np.divmod(idx, nx)
    peak = flat[rows, idx].astype(float)
    sy = (py - ny * (py > ny // 2)).astype(float)
    sx = (px - nx * (px > nx // 2)).astype(float)
    row = None
    for u, h in _stages(upsample, ny * nx):
        step = 1.0 / u
        region, T = _evaluate_region(P, np.rint(sy * u) * step, np.rint(sx * u) * step, step, h, ny, nx)
        region = region.reshape(k, -1)
        j = region.argmax(axis=1)
        jy, jx = np.divmod(j, 2 * h + 1)
        sy = np.rint(sy * u) * step + (jy - h) * step
        sx = np.rint(sx * u) * step + (jx - h) * step
        peak = region[rows, j] / (ny * nx)
        row = T[rows, jy]  # the 1D spectrum of CC(sy, x)
    fwhm = _fwhm(P, sy, sx, peak, ny, nx, row)
    psr = _psr(flat, py, px, peak, ny, nx)
    if normalization is None:
        norm = peak / np.where(energy > 0, energy, np.inf)
    else:
        norm = peak
    return np.stack([sy, sx], axis=1), norm, fwhm, psr


@functools.lru_cache(maxsize=64)
def _psr_box(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    hy, hx = min(PSR_EXCLUDE, (ny - 1) // 2), min(PSR_EXCLUDE, (nx - 1) // 2)
    oy, ox = np.meshgrid(np.arange(-hy, hy + 1), np.arange(-hx, hx + 1), indexing="ij")
    return oy.ravel(), ox.ravel()


def _psr(flat, py, px, peak, ny, nx) -> np.ndarray:
    """(peak - mean) / std of the pixel-grid CC ``flat`` (k, ny*nx) outside the box around (py, px)."""
    k = flat.shape[0]
    oy, ox = _psr_box(ny, nx)
    count = ny * nx - oy.size
    if count < 2:
        return np.full(k, np.nan)
    box = flat[np.arange(k)[:, None], ((py[:, None] + oy) % ny) * nx + (px[:, None] + ox) % nx]
    # the CC sums to zero (the product spectrum's DC term is zeroed)
    mean = -box.sum(axis=1, dtype=np.float64) / count
    s2 = np.matmul(flat[:, None, :], flat[:, :, None])[:, 0, 0] - (box * box).sum(axis=1)
    var = s2.astype(np.float64) / count - mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, (peak - mean) / np.sqrt(np.maximum(var, 0.0)), np.nan)


#: Distances (px) from the peak at which the FWHM profiles are sampled:
#: every 0.1 px to 3 px, every 0.25 px to 8 px, then every pixel.
_FWHM_STEPS = ((3.0, 0.1), (8.0, 0.25))
_DIR_AXIS = np.array([1, 1, 0, 0])  # directions +x, -x, +y, -y: their axis (0 = y, 1 = x)


@functools.lru_cache(maxsize=64)
def _line_tables(ny: int, nx: int):
    """Constant tables of :func:`_fwhm` for (ny, nx) images."""
    nh = max(ny, nx) // 2 + 1
    t = [0.0]
    for stop, step in _FWHM_STEPS:
        t.extend(np.arange(t[-1] + step, stop + step / 2, step))
    t.extend(np.arange(t[-1] + 1, max(ny, nx) // 2 + 0.5))
    t = np.array(t)
    fr = np.zeros((4, nh))  # frequencies of the folded 1D spectra along each direction
    for d, axis in enumerate(_DIR_AXIS):
        f, _ = _freqs(ny if axis == 0 else nx, True)
        fr[d, : f.size] = f
    kern = np.exp(2j * np.pi * t[None, :, None] * fr[:, None, :]).astype(np.complex64)  # (4, L, nh)
    valid = t[None, :] <= np.where(_DIR_AXIS == 1, nx // 2, ny // 2)[:, None]  # (4, L)
    fold = (-np.arange(ny // 2 + 1)) % ny
    wx = _freqs(nx, True)[1].astype(np.float32)
    wy = _freqs(ny, True)[1].astype(np.float32)
    tables = (t, fr, kern, valid, fold, wx, wy)
    for a in tables:
        a.setflags(write=False)
    return tables


def _fwhm(P, sy, sx, peak, ny, nx, row=None) -> np.ndarray:
    """FWHM (k, 2) (y, x) in px of the CC peaks at (sy, sx).

    The band-limited CC is evaluated along the lines through the sub-pixel
    peak (+x, -x, +y, -y) at fixed distances: every 0.1 px up to 3 px,
    every 0.25 px to 8 px, then every pixel; each half-maximum crossing is
    interpolated linearly between the two samples around it. The lines'
    1D spectra are folded onto non-negative frequencies (the lines are
    real), the -x and -y directions use their conjugates, and all four are
    evaluated with one matrix product per direction. ``row``, the 1D
    spectrum of CC(sy, x) if already known (the last refinement stage's),
    saves a pass over ``P``.
    """
    k = P.shape[0]
    t, fr, kern, valid, fold, wx, wy = _line_tables(ny, nx)
    nyh, nxh, nh = ny // 2 + 1, nx // 2 + 1, fr.shape[1]
    # 1D spectra of CC(sy, x) and CC(y, sx): CC = Re sum_{f >= 0} line e^{2 pi i f t} / N
    ry, rx = _ramps(ny, nx, sy, sx)
    if row is None:
        row = np.matmul(ry[:, None, :], P)[:, 0, :]
    col = np.matmul(P, (rx * wx)[:, :, None])[:, :, 0]  # (k, ny), signed ky
    lines = np.zeros((k, 4, nh), np.complex64)
    lines[:, 0, :nxh] = row * wx * rx  # centred on sx
    lines[:, 2, :nyh] = 0.5 * (col[:, :nyh] + np.conj(col[:, fold])) * wy * ry[:, :nyh]  # Hermitian part, on sy
    lines[:, 1::2] = np.conj(lines[:, 0::2])  # the -x and -y walks
    prof = np.matmul(kern, lines.transpose(1, 2, 0)).real.transpose(2, 0, 1) / np.float32(ny * nx)  # (k, 4, L)
    half = (peak / 2)[:, None, None]
    below = (prof < half) & valid
    below[..., 0] = False
    found = below.any(axis=2) & (half[..., 0] > 0)
    i1 = np.maximum(below.argmax(axis=2), 1)
    kk, dd = np.indices(i1.shape)
    p0, p1 = prof[kk, dd, i1 - 1], prof[kk, dd, i1]
    with np.errstate(divide="ignore", invalid="ignore"):
        side = t[i1 - 1] + (t[i1] - t[i1 - 1]) * np.clip((p0 - half[..., 0]) / (p0 - p1), 0, 1)
    side = np.where(found, side, np.nan)
    return np.stack([side[:, 2] + side[:, 3], side[:, 0] + side[:, 1]], axis=1)


# ------------------------------------------------------------- public ---
def register(
    reference,
    moving,
    *,
    upsample: int = 20,
    normalization: str | None = None,
    roi=None,
    window: str | None = None,
    workers: int | None = None,
) -> Registration:
    """Sub-pixel translation between images by upsampled-DFT cross-correlation.

    Parameters
    ----------
    reference : (ny, nx) or (n, ny, nx) array
        Reference image, or one reference per moving image (pairwise).
        Real-valued (counts or floats); never modified.
    moving : (ny, nx) or (n, ny, nx) array
        Image(s) to register onto ``reference``; never modified. A stack
        against a 2D reference reuses the reference's FFT.
        ``np.broadcast_to``-ed (read-only, zero-stride) inputs are fine.
    upsample : int, >= 1
        Shifts are found on a grid 1/``upsample`` px fine (1: whole pixels).
        20 suits alignment; 100 costs little more.
    normalization : {None, "phase"}
        ``None`` (default): plain cross-correlation of the mean-subtracted
        images. ``"phase"``: phase correlation (the product spectrum divided
        by its modulus). See Notes.
    roi : (slice_y, slice_x) or (ny, nx) bool array, optional
        Register only this region of every image; a mask is replaced by its
        bounding box. At least 2 x 2 px.
    window : {None, "hann", "tukey"}
        Taper applied after subtracting the means. ``None`` (default) keeps
        every pixel's weight (best when the field's borders are background,
        as around a whole cell); ``"tukey"`` (25 % cosine edges) or
        ``"hann"`` suppress the false zero-shift peak that the wrap-around
        edges of a region cut out of a larger specimen can produce.
    workers : int, optional
        Threads for ``scipy.fft``, -1 for all CPUs. Default: all CPUs for
        stacks, one for a pair (threads only slow a single small FFT).

    Returns
    -------
    Registration
        ``shift`` (dy, dx) registering ``moving`` onto ``reference``, plus
        the peak height, FWHM and peak-to-sidelobe ratio; (n, ...) for stacks.

    Raises
    ------
    ValueError
        Shapes that differ, NaN or infinite pixels, an empty ``roi``,
        ``upsample`` < 1 or not an integer, an unknown ``normalization`` or
        ``window``.

    See Also
    --------
    cross_correlation : the CC image itself.
    skimage.registration.phase_cross_correlation : the same sign convention.

    Notes
    -----
    The CC is computed by real FFTs on the pixel grid; its maximum (the
    largest value, not the largest modulus: an anticorrelation is not a
    match) is refined by evaluating the band-limited CC with a
    matrix-multiply DFT [1]_ on successively finer grids around the
    previous maximum: +-0.75 px for the first, +-0.75 step of the previous
    grid after that, ending on the 1/``upsample`` grid (e.g. 1/4.6, 1/21.5,
    1/100 px with 9 x 9 points each for a 230 x 230 image; 1/10 and 1/100
    with 17 x 17 for small ones). This finds the maximum that one
    (1.5 ``upsample``)^2-point region would, at a fraction of the cost.
    Shifts are modulo the image size: a shift beyond half the field is
    reported as its negative alias. ``fwhm`` samples the band-limited CC
    along y and x through the sub-pixel peak; ``psr`` follows [5]_.

    Stacks are processed in batches of a few images (they stay in the CPU
    caches), with the DFT kernels cached, and give exactly the results of a
    loop over pairs. The BLAS is held to one thread during the call when
    threadpoolctl is installed: the matrices are small, and OpenBLAS's
    spinning threads make them many times slower when the other cores are
    busy (the limit is process-wide while it lasts).

    Choosing ``normalization``: phase correlation [2]_ whitens the spectrum,
    so every spatial frequency votes equally. That sharpens the peak and
    resists slowly varying illumination, but at low counts most frequencies
    hold only Poisson noise, which then outvotes the signal: at 0.5
    counts/px phase correlation's RMS error can reach tens of pixels (10.6
    px against 0.8 px for the plain CC on a smooth 128 x 128 texture in our
    tests), as with scikit-image's default. The plain CC weights each frequency by
    its power, which is nearly the matched filter for shot noise; use it
    for fluorescence and low-dose maps (the normal case here) and for DPC.
    Try ``"phase"`` only for high-SNR images with different backgrounds.

    The DPC alignment paper [3]_ registered 96 x 96 sub-regions with 6x
    upsampling; a DPC pair at 3 ms gives a CC peak of about 1.5 px FWHM,
    Zn fluorescence about 25 px. Dose fractionation [4]_ is what makes the
    per-projection counts this low.

    References
    ----------
    .. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient
           subpixel image registration algorithms," Opt. Lett. 33, 156-158
           (2008). :DOI:`10.1364/OL.33.000156`
    .. [2] C. D. Kuglin and D. C. Hines, "The phase correlation image
           alignment method," Proc. IEEE Int. Conf. Cybernetics and Society,
           163-165 (1975).
    .. [3] Y. P. Hong, S.-C. Gleber, T. V. O'Halloran, E. L. Que, R. Bleher,
           S. Vogt, T. K. Woodruff and C. Jacobsen, "Alignment of low-dose
           X-ray fluorescence tomography images using differential phase
           contrast," J. Synchrotron Rad. 21, 229-234 (2014).
           :DOI:`10.1107/S1600577513029512`
    .. [4] R. Hegerl and W. Hoppe, "Influence of electron noise on
           three-dimensional image reconstruction," Z. Naturforsch. 31a,
           1717-1721 (1976)  (the dose fractionation theorem).
    .. [5] D. S. Bolme, J. R. Beveridge, B. A. Draper and Y. M. Lui, "Visual
           object tracking using adaptive correlation filters," CVPR 2010,
           2544-2550 (peak-to-sidelobe ratio).
           :DOI:`10.1109/CVPR.2010.5539960`

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> ref = ndimage.gaussian_filter(rng.random((64, 64)), 2, mode="wrap")
    >>> spectrum = ndimage.fourier_shift(np.fft.fft2(ref), (1.5, -2.25))
    >>> mov = np.fft.ifft2(spectrum).real  # ref moved by (+1.5, -2.25) px
    >>> register(ref, mov, upsample=20).shift
    array([-1.5 ,  2.25])
    """
    upsample = _check_upsample(upsample)
    _check_option("normalization", normalization, NORMALIZATIONS)
    _check_option("window", window, WINDOWS)
    workers = _check_workers(workers)
    ref, mov, sl, n_ref, n_mov = _check_pair(reference, moving, roi)
    with _one_blas_thread():
        return _register(ref, mov, sl, n_ref, n_mov, upsample, normalization, window, workers)


def _register(ref, mov, sl, n_ref, n_mov, upsample, normalization, window, workers) -> Registration:
    """:func:`register` after the checks."""
    pair = n_ref is None and n_mov is None
    n = 1 if pair else max(m for m in (n_ref, n_mov) if m is not None)
    ny, nx = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    single_ref = ref.ndim == 2 or ref.shape[0] == 1
    single_mov = mov.ndim == 2 or mov.shape[0] == 1

    if single_ref and single_mov:  # one FFT call for both
        F, E = _spectra([("reference", ref), ("moving", mov)], sl, window, workers)
        (Rf0, Mf0), (Er0, Em0) = (F[:1], F[1:]), (E[:1], E[1:])
    elif single_ref:
        Rf0, Er0 = _spectra([("reference", ref)], sl, window, workers)
    elif single_mov:
        Mf0, Em0 = _spectra([("moving", mov)], sl, window, workers)
    batch = max(_BATCH_MIN, _BATCH_PIXELS // (ny * nx))
    out = []
    for b0 in range(0, 1 if single_ref and single_mov else n, batch):
        b1 = min(n, b0 + batch)
        Rf, Er = (Rf0, Er0) if single_ref else _spectra([("reference", ref[b0:b1])], sl, window, workers)
        Mf, Em = (Mf0, Em0) if single_mov else _spectra([("moving", mov[b0:b1])], sl, window, workers)
        energy = np.sqrt(Er * Em)
        reuse = single_mov and not single_ref
        out.append(_batch_register(Rf, Mf, ny, nx, upsample, normalization, energy, workers, reuse))
    if n == 0:
        shift, peak, fwhm, psr = np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), np.zeros(0)
    else:
        shift, peak, fwhm, psr = (np.concatenate(parts) for parts in zip(*out))
        if single_ref and single_mov and n > 1:
            shift, peak, fwhm, psr = (np.repeat(x, n, axis=0) for x in (shift, peak, fwhm, psr))
    if pair:
        return Registration(shift[0], float(peak[0]), fwhm[0], float(psr[0]))
    return Registration(shift, peak, fwhm, psr)


def cross_correlation(
    reference,
    moving,
    *,
    upsample: int = 1,
    normalization: str | None = None,
    roi=None,
    window: str | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """The cross-correlation image of two images, optionally upsampled.

    Parameters
    ----------
    reference, moving : (ny, nx) arrays
        Real-valued images of the same shape; never modified.
    upsample : int, >= 1
        The product spectrum is zero-padded into an array ``upsample`` times
        larger on each axis before the inverse FFT (6 in the DPC alignment
        paper), sampling the CC every 1/upsample px.
    normalization, roi, window, workers
        As in :func:`register`.

    Returns
    -------
    cc : (upsample * ny, upsample * nx) float32 array
        CC of the mean-subtracted images, ``fftshift``-ed: element
        ``(upsample * ny // 2, upsample * nx // 2)`` is zero shift and the
        peak at element (i, j) means a shift ((i - upsample*ny//2) /
        upsample, (j - upsample*nx//2) / upsample) px in the convention of
        :func:`register`. For ``normalization=None`` values are the
        correlation coefficient (1 for identical images).

    See Also
    --------
    register, cc_fwhm

    Notes
    -----
    Zero-padding costs an FFT of the full upsampled array, fine for
    pictures; :func:`register` finds the same peak far faster. The Nyquist
    row and column of even-sized axes are split equally between the
    positive and negative frequency so that the interpolated CC is real.

    References
    ----------
    .. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, Opt. Lett. 33,
           156-158 (2008). :DOI:`10.1364/OL.33.000156`
    """
    upsample = _check_upsample(upsample)
    _check_option("normalization", normalization, NORMALIZATIONS)
    _check_option("window", window, WINDOWS)
    workers = _check_workers(workers)
    ref, mov, sl, n_ref, n_mov = _check_pair(reference, moving, roi)
    if n_ref is not None or n_mov is not None:
        raise ValueError(
            f"cross_correlation takes two 2D images; got shapes {np.shape(reference)} and {np.shape(moving)}"
        )
    ny, nx = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    with _one_blas_thread():
        F, E = _spectra([("reference", ref), ("moving", mov)], sl, window, workers)
    P = F[0] * np.conj(F[1])
    Er, Em = E[:1], E[1:]
    P[0, 0] = 0
    if normalization == "phase":
        mag = np.abs(P)
        np.maximum(mag, np.finfo(np.float32).eps * mag.max(), out=mag)
        P /= mag
        scale = 1.0
    else:
        energy = math.sqrt(float(Er[0]) * float(Em[0]))
        scale = 1.0 / energy if energy > 0 else 0.0
    Ny, Nx = upsample * ny, upsample * nx
    if upsample > 1:
        big = np.zeros((Ny, Nx // 2 + 1), np.complex64)
        hy = ny // 2
        pos = (ny + 1) // 2  # rows 0..pos-1 are the non-negative frequencies (without Nyquist)
        ncol = nx // 2 + 1
        big[:pos, :ncol] = P[:pos]
        big[Ny - (ny - pos):, :ncol] = P[pos:]
        if ny % 2 == 0:  # split the Nyquist row between +ny/2 and -ny/2
            big[hy, :ncol] = 0.5 * P[hy]
            big[Ny - hy, :ncol] = 0.5 * P[hy]
        if nx % 2 == 0:  # the irfft doubles column nx/2 by symmetry now: halve it
            big[:, nx // 2] *= 0.5
        P = big
        scale *= upsample * upsample
    cc = _fft.irfft2(P, s=(Ny, Nx), workers=_workers(workers, 1))
    cc *= np.float32(scale)
    return _fft.fftshift(cc).astype(np.float32, copy=False)


def _crossing(profile, half) -> float:
    """Distance (samples) from profile[0] (the peak) to its first fall below ``half``."""
    below = np.flatnonzero(profile < half)
    if below.size == 0:
        return math.nan
    i = below[0]
    p0, p1 = profile[i - 1], profile[i]
    return (i - 1) + float((p0 - half) / (p0 - p1))


def cc_fwhm(cc, upsample: float = 1) -> CCWidth:
    """Full width at half maximum of a cross-correlation peak.

    Measured through the CC's largest element along x (the row), y (the
    column) and the 45-degree line (+x, +y together: the q1-q3 DPC
    direction), with linear interpolation of the half-maximum crossings.

    Parameters
    ----------
    cc : (ny, nx) array
        A CC image such as :func:`cross_correlation` returns (mean-subtracted
        images, so that the half maximum is half the peak value).
    upsample : float, >= 1
        Samples per original pixel of ``cc``; widths are divided by it.

    Returns
    -------
    CCWidth
        ``(x, y, diagonal)`` FWHM in original pixels (the diagonal one is
        measured along the line, sqrt(2) px per diagonal step); NaN where
        the profile does not fall below half maximum inside ``cc``.

    Notes
    -----
    Linear interpolation between samples overestimates the width of a
    peak only a few samples wide (2 % for 3 samples FWHM): measure narrow
    peaks such as DPC's (1.5 px) on an upsampled CC, e.g.
    ``cross_correlation(a, b, upsample=6)``, as the DPC alignment paper did.
    :attr:`Registration.fwhm` is measured on the band-limited CC directly.

    Examples
    --------
    A Gaussian of 3 px FWHM, sampled every pixel and every 1/6 px:

    >>> sigma = 3 / (2 * np.sqrt(2 * np.log(2)))
    >>> y, x = np.mgrid[-20:21, -20:21]
    >>> round(cc_fwhm(np.exp(-(x**2 + y**2) / (2 * sigma**2))).x, 2)
    3.06
    >>> y, x = np.mgrid[-120:121, -120:121] / 6
    >>> w = cc_fwhm(np.exp(-(x**2 + y**2) / (2 * sigma**2)), upsample=6)
    >>> round(w.x, 2), round(w.y, 2), round(w.diagonal, 2)
    (3.0, 3.0, 3.0)
    """
    upsample = _check_upsample(upsample, integer=False)
    c = np.asarray(cc, dtype=np.float64)
    if c.ndim != 2 or min(c.shape) < 3:
        raise ValueError(f"cc has shape {np.shape(cc)}; give a 2D CC image at least 3 x 3")
    if not np.isfinite(c).all():
        raise ValueError("cc contains NaN or infinity")
    i, j = np.unravel_index(np.argmax(c), c.shape)
    half = c[i, j] / 2
    if not half > 0:
        return CCWidth(math.nan, math.nan, math.nan)
    ny, nx = c.shape
    d_lo, d_hi = min(i, j), min(ny - 1 - i, nx - 1 - j)
    diag = np.array([c[i + t, j + t] for t in range(-d_lo, d_hi + 1)])
    widths = []
    for profile, centre in ((c[i, :], j), (c[:, j], i), (diag, d_lo)):
        w = _crossing(profile[centre:], half) + _crossing(profile[centre::-1], half)
        widths.append(w)
    wx, wy, wd = widths
    return CCWidth(float(wx / upsample), float(wy / upsample), float(wd * math.sqrt(2) / upsample))
