"""Shifts of projections: applying them, and the sinusoid that only moves the reconstructed object.

``shifts[k]`` (dy, dx) in pixels moves projection ``k`` onto the common
rotation axis (:func:`apply_shifts`). A horizontal sinusoid
``a + b cos(theta) + c sin(theta)`` in the shifts, like the stage's
eccentricity, only moves the reconstructed object (:func:`fit_sinusoid`,
:func:`remove_sinusoid`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..validate import one_of, real
from ..validate import shifts as check_shifts

__all__ = ["apply_shifts", "fit_sinusoid", "remove_sinusoid"]


def fit_sinusoid(values, theta) -> np.ndarray:
    """Least-squares (a, b, c) of values ~ a + b cos(theta) + c sin(theta), theta in degrees.

    NaN values (projections an alignment left out) are left out of the fit.
    """
    t = np.radians(np.asarray(theta, float))
    values = np.asarray(values, float)
    ok = np.isfinite(values)
    A = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)
    coef, *_ = np.linalg.lstsq(A[ok], values[ok], rcond=None)
    return coef


def remove_sinusoid(values, theta) -> np.ndarray:
    """``values`` less their best-fit sinusoid a + b cos(theta) + c sin(theta) (:func:`fit_sinusoid`)."""
    t = np.radians(np.asarray(theta, float))
    a, b, c = fit_sinusoid(values, theta)
    return np.asarray(values, float) - (a + b * np.cos(t) + c * np.sin(t))


def apply_shifts(stack, shifts, *, method: str = "linear", cval: float = 0.0, mode: str = "constant") -> np.ndarray:
    """Shift every projection by ``shifts[k]`` (dy, dx) px, once.

    Parameters
    ----------
    stack : (n, ny, nx) array
        Real values (complex input is refused).
    shifts : (n, 2) array
        Finite: NaN (a projection an alignment left out) or infinity is
        refused naming the projections, since a NaN shift would turn the
        projection into zeros; leave such projections out instead.
    method : {"linear", "fourier"}
        ``linear`` interpolation keeps counts non-negative (fluorescence);
        ``fourier`` is exact for band-limited images (DPC) but rings.
    cval : float
        Fill value for pixels shifted in from outside (linear, ``mode="constant"``).
    mode : {"constant", "nearest"}
        How pixels shifted in from outside are filled (linear): ``cval``, or
        the nearest edge pixel, which suits a specimen longer than the field
        (a rod cut by the field's top and bottom).

    Returns
    -------
    (n, ny, nx) array of the input's floating dtype (float32 for integer input).
    """
    stack = real("stack", stack)
    if stack.ndim != 3 or np.shape(shifts) != (stack.shape[0], 2):
        raise ValueError(f"need a (n, ny, nx) stack and (n, 2) shifts; got {stack.shape} and {np.shape(shifts)}")
    shifts = check_shifts(shifts, stack.shape[0])
    one_of("method", method, ("linear", "fourier"))
    one_of("mode", mode, ("constant", "nearest"))
    dtype = stack.dtype if np.issubdtype(stack.dtype, np.floating) else np.float32
    out = np.empty(stack.shape, dtype=dtype)
    for k in range(stack.shape[0]):
        img = stack[k].astype(dtype, copy=False)
        if method == "linear":
            out[k] = ndimage.shift(img, shifts[k], order=1, mode=mode, cval=cval)
        else:
            f = ndimage.fourier_shift(np.fft.fft2(img), shifts[k])
            out[k] = np.fft.ifft2(f).real
    return out
