"""Input checks and spectra for :mod:`xfct_bluesky.analysis.registration`.

Validation of images, options and regions of interest (clear ``ValueError``
messages naming the value, the allowed range and the fix), the taper
windows, mean subtraction and the float32 ``rfft2`` of stacks with their
energies, and the one-BLAS-thread context the small DFT products run in.
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np
from scipy import fft as _fft

from ..validate import integer, number, one_of, real

NORMALIZATIONS = (None, "phase")
WINDOWS = (None, "hann", "tukey")
_TUKEY_ALPHA = 0.25
#: An image whose values in the registered region vary by at most this fraction of its largest
#: magnitude (float32 rounding, not structure) holds no signal: zeros, a closed shutter, a beam dump.
FLAT_RTOL = 1e-6
#: The cheap first test of :func:`spectra`: only images whose energy (mean-free) is below this
#: fraction of their mean squared are tested exactly (the float32 mean of a constant is not exact).
_FLAT_SUSPECT = 1e-6


# ---------------------------------------------------------- threading ---
@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController

        return ThreadpoolController()
    except Exception:  # threadpoolctl missing or unable to inspect the BLAS: leave it alone
        return None


def one_blas_thread():
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
def check_upsample(upsample, *, whole: bool = True):
    """``upsample`` as an int >= 1 (``whole``) or a float >= 1, else ValueError naming it."""
    fix = "1/upsample px precision, e.g. 20 or 100; 1 for whole pixels"
    if whole:
        return integer("upsample", upsample, low=1, fix=fix)
    v = number("upsample", upsample, allowed="a number >= 1", fix=fix)
    if v < 1:
        raise ValueError(f"upsample={upsample!r}: allowed a number >= 1. {fix}")
    return v


def check_workers(workers):
    """``workers`` (scipy.fft threads) as a non-zero int, or None, else ValueError naming it."""
    if workers is None:
        return None
    fix = "Give the scipy.fft threads: 1, 2, ... (-1 for all CPUs), or None (automatic)"
    w = integer("workers", workers, low=-(os.cpu_count() or 1), fix=fix)
    if w == 0:
        raise ValueError(f"workers=0: allowed a non-zero integer. {fix}")
    return w


def check_options(upsample, normalization, window, workers) -> tuple[int, int | None]:
    """The options :func:`~.registration.register` and :func:`~.ccimage.cross_correlation` share, checked:
    (upsample, workers)."""
    one_of("normalization", normalization, NORMALIZATIONS)
    one_of("window", window, WINDOWS)
    return check_upsample(upsample), check_workers(workers)


def fft_workers(workers, k):
    """scipy.fft threads: as given, else all CPUs for a batch and one for a single image."""
    if workers is not None:
        return workers
    return -1 if k > 1 else 1


def as_images(name, value):
    """``value`` as an array of 2D images (no copy: views and broadcasts are kept)."""
    a = real(name, value)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {a.shape}; give one image (ny, nx) or a stack (n, ny, nx)")
    n = a.shape[0] if a.ndim == 3 else None
    if a.ndim == 3 and a.shape[0] > 1 and a.strides[0] == 0:
        # np.broadcast_to of one image: transform that image once
        a = a[:1]
    return a, n


def roi_slices(roi, shape) -> tuple[slice, slice]:
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


def check_pair(reference, moving, roi):
    ref, n_ref = as_images("reference", reference)
    mov, n_mov = as_images("moving", moving)
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
    sl = roi_slices(roi, ref.shape[-2:])
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
    return out, mean


def flat_images(images: np.ndarray, sl) -> np.ndarray:
    """(k,) bool: the images (2D or a stack) are constant in the region ``sl`` to within FLAT_RTOL."""
    a = np.asarray(images)
    region = a[..., sl[0], sl[1]].reshape(-1, (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start))
    if region.dtype == bool:
        region = region.view(np.uint8)
    lo, hi = region.min(axis=1).astype(np.float64), region.max(axis=1).astype(np.float64)
    return (hi - lo) <= FLAT_RTOL * np.maximum(np.abs(lo), np.abs(hi))


def spectra(parts, sl, window, workers):
    """rfft2 (k, ny, nx//2+1) of the prepared images of ``parts`` ((name, images) pairs,
    stacked in order), their energies (k,) without the mean, and which are flat (k,) bool.

    The energies come from the spectra (Parseval, DC left out), which also
    catches NaN and infinity without another pass over the images. Flat
    images (no signal, :func:`flat_images`) have no registration: only those whose
    energy is tiny against their mean are tested, so the test costs nothing
    for images with structure.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf are reported below
        a, mean = _prepare([images for _, images in parts], sl, window)
        k, ny, nx = a.shape
        F = _fft.rfft2(a, workers=fft_workers(workers, k))
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
    energy = np.maximum(energy, 0.0)
    flat = np.zeros(energy.size, bool)
    suspect = np.flatnonzero(energy <= _FLAT_SUSPECT * np.square(mean.astype(np.float64)))
    if suspect.size:
        images = [im if im.ndim == 3 else im[None] for _, im in parts]
        starts = np.cumsum([0] + [im.shape[0] for im in images])
        for g in suspect:
            p = int(np.searchsorted(starts, g, side="right")) - 1
            flat[g] = flat_images(images[p][g - starts[p]], sl)[0]
    return F, energy, flat
