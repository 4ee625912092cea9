"""The filter of filtered back-projection, shared by :func:`~.tomo.fbp` and the centre search (:mod:`.center`).

:func:`filter_response` is the ramp (Ram-Lak, sampled in space: Kak & Slaney, ch. 3) times a window;
:func:`filter_rays` filters every projection row by FFT and lays the result out as the projector's rays.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as _fft

#: Slices per block of a transposing copy (numpy's are several times faster in blocks that stay in the
#: caches); the projector's layouts use the same.
BLOCK = 32

__all__ = ["FILTERS", "filter_rays", "filter_response"]

#: FBP filters: the ramp (Ram-Lak) and the ramp apodised by a window.
FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
#: scipy.fft threads for the FBP filter.
_WORKERS = 2
#: Angles filtered per FFT batch in FBP (keeps the batch in the caches).
_FILTER_BATCH = 16


def filter_response(name: str, n_fft: int) -> np.ndarray:
    """The FBP filter on ``rfftfreq(n_fft)`` (cycles per pixel): ramp x window."""
    # Ram-Lak ramp sampled in space (Kak & Slaney, ch. 3), so that its DC and
    # low frequencies are right for a finite detector.
    k = np.arange(n_fft)
    k = np.minimum(k, n_fft - k)
    h = np.zeros(n_fft)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    ramp = np.fft.rfft(h).real
    f = np.fft.rfftfreq(n_fft)  # 0 .. 0.5
    if name == "ramp":
        window = 1.0
    elif name == "shepp-logan":
        window = np.sinc(f)
    elif name == "cosine":
        window = np.cos(np.pi * f)
    elif name == "hamming":
        window = 0.54 + 0.46 * np.cos(2 * np.pi * f)
    else:  # hann
        window = 0.5 + 0.5 * np.cos(2 * np.pi * f)
    return ramp * window


def _filtered(batch: np.ndarray, response: np.ndarray, n_fft: int) -> np.ndarray:
    """One batch of projections, each row filtered by ``response`` (zero-padded to ``n_fft``)."""
    spec = _fft.rfft(batch, n=n_fft, axis=-1, workers=_WORKERS)
    spec *= response
    return _fft.irfft(spec, n=n_fft, axis=-1, workers=_WORKERS)


def _response(name: str, n_cols: int, scale: float) -> tuple[int, np.ndarray]:
    n_fft = max(64, 1 << (2 * n_cols - 1).bit_length())
    return n_fft, (filter_response(name, n_fft) * scale).astype(np.float32)


def filter_rows(stack: np.ndarray, name: str, scale: float) -> np.ndarray:
    """Ramp-filter every projection row, in the stack's own layout ``(n_angles, k, n_cols)`` (the
    matrix-free FBP's), as :func:`filter_rays` does."""
    na, _, nc = stack.shape
    n_fft, response = _response(name, nc, scale)
    out = np.empty(stack.shape, np.float32)
    for a0 in range(0, na, _FILTER_BATCH):
        out[a0:a0 + _FILTER_BATCH] = _filtered(stack[a0:a0 + _FILTER_BATCH], response, n_fft)[..., :nc]
    return out


def filter_rays(stack: np.ndarray, name: str, scale: float, shifts=None) -> np.ndarray:
    """Ramp-filter every projection row and lay the result out as rays, (n_angles * n_cols, k).

    ``shifts`` (px, optional, one per column of the output) translates the
    filtered rows so that ``out(col) = filtered(col + shift)``: used by the
    centre search to move the axis without a new matrix.
    """
    na, k, nc = stack.shape
    n_fft, response = _response(name, nc, scale)
    if shifts is not None:
        f = np.fft.rfftfreq(n_fft)
        response = (response * np.exp(2j * np.pi * np.outer(shifts, f))).astype(np.complex64)
    rays = np.empty((na, nc, k), np.float32)
    for a0 in range(0, na, _FILTER_BATCH):
        filtered = _filtered(stack[a0:a0 + _FILTER_BATCH], response, n_fft)
        for i in range(0, k, BLOCK):
            rays[a0:a0 + _FILTER_BATCH, :, i:i + BLOCK] = filtered[:, i:i + BLOCK, :nc].transpose(0, 2, 1)
    return rays.reshape(na * nc, k)
