"""Quality of a registration's peak: peak-to-sidelobe ratio and FWHM along x and y."""

from __future__ import annotations

import functools

import numpy as np

from ._regdft import freqs, ramps

#: Half-width (px) of the box around the peak left out of the sidelobe
#: statistics of the PSR (an 11 x 11 box, as in Bolme et al. 2010).
PSR_EXCLUDE = 5


@functools.lru_cache(maxsize=64)
def _psr_box(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    hy, hx = min(PSR_EXCLUDE, (ny - 1) // 2), min(PSR_EXCLUDE, (nx - 1) // 2)
    oy, ox = np.meshgrid(np.arange(-hy, hy + 1), np.arange(-hx, hx + 1), indexing="ij")
    return oy.ravel(), ox.ravel()


def peak_psr(flat, py, px, peak, ny, nx) -> np.ndarray:
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
    """Constant tables of :func:`peak_fwhm` for (ny, nx) images."""
    nh = max(ny, nx) // 2 + 1
    t = [0.0]
    for stop, step in _FWHM_STEPS:
        t.extend(np.arange(t[-1] + step, stop + step / 2, step))
    t.extend(np.arange(t[-1] + 1, max(ny, nx) // 2 + 0.5))
    t = np.array(t)
    fr = np.zeros((4, nh))  # frequencies of the folded 1D spectra along each direction
    for d, axis in enumerate(_DIR_AXIS):
        f, _ = freqs(ny if axis == 0 else nx, True)
        fr[d, : f.size] = f
    kern = np.exp(2j * np.pi * t[None, :, None] * fr[:, None, :]).astype(np.complex64)  # (4, L, nh)
    valid = t[None, :] <= np.where(_DIR_AXIS == 1, nx // 2, ny // 2)[:, None]  # (4, L)
    fold = (-np.arange(ny // 2 + 1)) % ny
    wx = freqs(nx, True)[1].astype(np.float32)
    wy = freqs(ny, True)[1].astype(np.float32)
    tables = (t, fr, kern, valid, fold, wx, wy)
    for a in tables:
        a.setflags(write=False)
    return tables


def peak_fwhm(P, sy, sx, peak, ny, nx, row=None) -> np.ndarray:
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
    ry, rx = ramps(ny, nx, sy, sx)
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
