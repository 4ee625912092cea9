"""The matrix-multiply DFT of Guizar-Sicairos et al. (2008): the CC near its peak.

Given a product spectrum ``P`` (half spectra, ``rfft2`` layout), the
cross-correlation is evaluated on a small grid ``step`` px fine around a
centre by two matrix products with cached kernels, and refined in stages
(:func:`stages`) instead of one large upsampled region.
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=128)
def freqs(n: int, half: bool):
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
    f, w = freqs(n, half)
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
    return _cis(np.multiply.outer(centers, freqs(n, half)[0]))


@functools.lru_cache(maxsize=64)
def _yx_freqs(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed y frequencies then non-negative x frequencies, and a mask of the y ones."""
    f = np.concatenate([freqs(ny, False)[0], freqs(nx, True)[0]])
    is_y = np.arange(f.size) < ny
    f.setflags(write=False)
    is_y.setflags(write=False)
    return f, is_y


def ramps(ny: int, nx: int, cy, cx) -> tuple[np.ndarray, np.ndarray]:
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
def stages(upsample: int, pixels: int) -> tuple[tuple[float, int], ...]:
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


def evaluate_region(P, cy, cx, step, h, ny, nx):
    """CC (k, 2h+1, 2h+1) at (cy + i step, cx + j step), from half spectra P (k, ny, nx//2+1).

    Also returns the rows' 1D spectra T (k, 2h+1, nx//2+1), unweighted:
    CC(cy + i step, x) = Re sum_kx w_kx T[i, kx] exp(2 pi i kx x / nx) / (ny nx).
    """
    ry, rx = ramps(ny, nx, cy, cx)
    A = _region_kernel(ny, False, step, h)[None] * ry[:, None, :]  # (k, m, ny)
    B = _region_kernel(nx, True, step, h)[None] * rx[:, :, None]  # (k, nxh, m), weighted
    T = np.matmul(A, P)
    return np.matmul(T, B).real, T
