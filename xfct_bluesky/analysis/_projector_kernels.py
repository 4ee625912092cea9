"""Compiled matrix-free projector (numba): the distance-driven weights of :func:`.projector.system_matrix`
computed on the fly.

The weights are those of the cached matrix, term by term: the same float64
expressions for the footprint of pixel ``[iy, ix]`` at an angle (centre
``s``, width ``w = max(|cos|, |sin|)``, its two bins ``j0``, ``j0 + 1``),
the same cut-off (weights <= ``_MIN_WEIGHT`` and bins off the detector are
left out) and the same rounding of each weight to float32; sums run in
float64. :func:`forward` is parallel over angles (each thread owns its
angle's detector rows), :func:`back` over the rows of pixels ``iy`` (each
thread owns those rows of every slice), so neither needs atomics, and both
use the same weights, so they are exact transposes of each other up to
rounding. A weight row is computed once per (angle, pixel row) and applied
to every slice. Scratch memory per thread: one ``(n_slices, n_cols)``
float64 accumulator.

Compiled on first use (or loaded from numba's cache), so importing
:mod:`.projector` stays cheap.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Weights at or below this (relative to a full bin) are left out, as in the matrix.
_MIN_WEIGHT = 1e-6


@numba.njit(cache=True, nogil=True)
def _row_weights(cos, sin, center, iy, n, i0, i1, w0, w1):
    """Bins and weights of the pixels of row ``iy`` at one angle (the matrix's formulas, see the module)."""
    c_vol = (n - 1) / 2
    width = max(abs(cos), abs(sin))
    half = width / 2
    for ix in range(n):
        s = center + (ix - c_vol) * cos + (c_vol - iy) * sin
        left = s - half
        right = s + half
        j0 = math.floor(left + 0.5)
        edge = j0 + 0.5
        a0 = (min(right, edge) - left) / width
        a1 = max(right - edge, 0.0) / width
        j = int(j0)
        if a0 > _MIN_WEIGHT and 0 <= j < n:
            i0[ix] = j
            w0[ix] = np.float32(a0)
        else:
            i0[ix] = 0
            w0[ix] = np.float32(0.0)
        if a1 > _MIN_WEIGHT and 0 <= j + 1 < n:
            i1[ix] = j + 1
            w1[ix] = np.float32(a1)
        else:
            i1[ix] = 0
            w1[ix] = np.float32(0.0)


@numba.njit(cache=True, parallel=True, nogil=True)
def forward(volume, cos, sin, center, out):
    """``out[a, k, :] = A_a volume[k]``: volume (n_slices, n, n) float32, out (n_angles, n_slices, n) float32."""
    n_slices, n, _ = volume.shape
    for a in numba.prange(cos.size):
        acc = np.zeros((n_slices, n), np.float64)
        i0 = np.empty(n, np.int64)
        i1 = np.empty(n, np.int64)
        w0 = np.empty(n, np.float32)
        w1 = np.empty(n, np.float32)
        for iy in range(n):
            _row_weights(cos[a], sin[a], center, iy, n, i0, i1, w0, w1)
            for k in range(n_slices):
                for ix in range(n):
                    v = volume[k, iy, ix]
                    acc[k, i0[ix]] += w0[ix] * v
                    acc[k, i1[ix]] += w1[ix] * v
        for k in range(n_slices):
            for j in range(n):
                out[a, k, j] = acc[k, j]


@numba.njit(cache=True, parallel=True, nogil=True)
def back(stack, cos, sin, center, out):
    """``out[k] = sum_a A_a^T stack[a, k]``: stack (n_angles, n_slices, n) float32, out (n_slices, n, n) float32."""
    n_angles, n_slices, n = stack.shape
    for iy in numba.prange(n):
        acc = np.zeros((n_slices, n), np.float64)
        i0 = np.empty(n, np.int64)
        i1 = np.empty(n, np.int64)
        w0 = np.empty(n, np.float32)
        w1 = np.empty(n, np.float32)
        for a in range(n_angles):
            _row_weights(cos[a], sin[a], center, iy, n, i0, i1, w0, w1)
            for k in range(n_slices):
                for ix in range(n):
                    acc[k, ix] += w0[ix] * stack[a, k, i0[ix]] + w1[ix] * stack[a, k, i1[ix]]
        for k in range(n_slices):
            for ix in range(n):
                out[k, iy, ix] = acc[k, ix]
