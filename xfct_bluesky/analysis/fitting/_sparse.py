"""Compiled readers of the raw counts (numba): no float64 copy of the map, one solver for every dtype.

The map stays as it was recorded (any integer or float dtype). :func:`compact`
reads rows p0 .. p1 - 1 once over the fitted channels and keeps only the
counted ones: for row i its channel numbers (``idx``) and counts (``yv``,
float64) from i * n_fit, ``nnzs[i]`` of them. This small kernel is compiled
per dtype; the solvers of :mod:`._kernels` take the compacted rows, so they
are compiled once (their compilation is most of a first fit's time, ~30 s).
:func:`column_sums` gives the summed spectrum and counts NaN and negative
values in one pass.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["column_sums", "compact"]


@numba.njit(cache=True, parallel=True, nogil=True)
def compact(Y, p0, p1, ch0, n_fit, nnzs, totals, idx, yv):
    """Rows p0 .. p1 - 1 of the raw map ``Y`` (N, n_channels), channels ch0 .. ch0 + n_fit - 1, compacted: row
    i's counted (> 0) channels (numbered from 0 at ch0) into ``idx[i * n_fit:]`` (int32), their counts into
    ``yv`` there (float64), their number into ``nnzs[i]`` and their sum into ``totals[i]``.

    One pass over the raw row, which is what it costs (the map streams from memory); each row's slots in
    ``idx`` and ``yv`` are written only as far as it has counts."""
    for i in numba.prange(p1 - p0):
        counts = Y[p0 + i, ch0:ch0 + n_fit]
        base = i * n_fit
        s = 0
        t = 0.0
        for j in range(counts.size):
            v = counts[j]
            if v > 0:
                y = float(v)
                idx[base + s] = j
                yv[base + s] = y
                t += y
                s += 1
        nnzs[i] = s
        totals[i] = t


@numba.njit(cache=True, parallel=True, nogil=True)
def column_sums(Y, n_chunks):
    """(sum over rows of ``Y`` (N, n_channels) in float64, count of non-finite values, count of negatives)."""
    N, n_ch = Y.shape
    partial = np.zeros((n_chunks, n_ch))
    bad = np.zeros(n_chunks, np.int64)
    neg = np.zeros(n_chunks, np.int64)
    step = (N + n_chunks - 1) // n_chunks
    for t in numba.prange(n_chunks):
        acc = partial[t]
        for p in range(t * step, min(N, (t + 1) * step)):
            row = Y[p]
            for j in range(n_ch):
                v = float(row[j])
                acc[j] += v
                if not math.isfinite(v):
                    bad[t] += 1
                elif v < 0:
                    neg[t] += 1
    out = np.zeros(n_ch)
    for t in range(n_chunks):
        for j in range(n_ch):
            out[j] += partial[t, j]
    return out, bad.sum(), neg.sum()
