"""The filter of filtered back-projection, shared by :func:`~.tomo.fbp` and the centre search (:mod:`.center`).

:func:`filter_response` is the ramp (Ram-Lak, sampled in space: Kak & Slaney, ch. 3) times a window;
:func:`filter_rays` filters every projection row by FFT (float32) and lays the result out as the projector's
rays, which the matrix-free back-projector reads as they are (bins first).
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
    return _fft.irfft(spec, n=n_fft, axis=-1, workers=_WORKERS, overwrite_x=True)  # spec is ours: no copy


def _response(name: str, n_cols: int, scale: float) -> tuple[int, np.ndarray]:
    n_fft = max(64, 1 << (2 * n_cols - 1).bit_length())
    return n_fft, (filter_response(name, n_fft) * scale).astype(np.float32)


def filter_rays(stack: np.ndarray, name: str, scale: float, shifts=None, *, out=None) -> np.ndarray:
    """Ramp-filter every projection row and lay the result out as rays, (n_angles * n_cols, k).

    Parameters
    ----------
    stack : (n_angles, k, n_cols) float32 array
        The projections.
    name : str
        The filter (one of :data:`FILTERS`).
    scale : float
        Factor of the filter (FBP's ``pi / n_angles``).
    shifts : (n_cols,) array, optional
        Translations (px, one per column of the output) of the filtered
        rows, ``out(col) = filtered(col + shift)``: used by the centre
        search to move the axis without a new matrix.
    out : (n_angles * n_cols * k,) float32 array, optional
        Where to write the result (a C-contiguous buffer of that many
        elements, returned reshaped); it may be ``stack``'s own memory
        when ``stack`` is C-contiguous, since every batch of angles is read
        before its rays are written (the FBP of a stack the caller gave up
        saves a copy of the data so).

    Returns
    -------
    (n_angles * n_cols, k) float32 array
        Ray-major (bins first): row ``a * n_cols + col`` holds column ``col``
        of angle ``a`` for the ``k`` rows side by side.

    Notes
    -----
    The FFT runs in float32 (``scipy.fft`` keeps single precision) on
    :data:`_FILTER_BATCH` angles at a time, so its temporaries (padded
    to ``n_fft`` and complex) are a few MB whatever the stack.
    """
    na, k, nc = stack.shape
    n_fft, response = _response(name, nc, scale)
    if shifts is not None:
        f = np.fft.rfftfreq(n_fft)
        response = (response * np.exp(2j * np.pi * np.outer(shifts, f))).astype(np.complex64)
    if out is None:
        rays = np.empty((na, nc, k), np.float32)
    else:
        if out.dtype != np.float32 or out.size != na * nc * k or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of {na * nc * k} elements, got "
                             f"{out.dtype} {out.shape}")
        rays = out.reshape(na, nc, k)
    for a0 in range(0, na, _FILTER_BATCH):
        filtered = _filtered(stack[a0:a0 + _FILTER_BATCH], response, n_fft)
        for i in range(0, k, BLOCK):
            rays[a0:a0 + _FILTER_BATCH, :, i:i + BLOCK] = filtered[:, i:i + BLOCK, :nc].transpose(0, 2, 1)
    return rays.reshape(na * nc, k)
