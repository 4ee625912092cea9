"""Compiled per-pixel fits that read the raw counts (numba): no float64 copy of the map.

The fits (defined in :mod:`._kernels`, beside the solver they call) read a
pixel's row of the raw array (any integer or float dtype) over the fitted
channels. The Poisson fit copies it into a
thread-local buffer of its counted channels, computes its start (the linear
estimate with the mean spectrum's weights, a sum over the counted channels
only, clipped at 0 and blended with the mean composition), runs the projected
Newton method of :func:`._kernels._newton` (sparse in the counted channels)
and computes the pixel's standard errors, all in one pass; the linear
estimator is a sum over the counted channels too. :func:`column_sums` gives
the summed spectrum and counts NaN and negative values in one pass.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# the fits live in ._kernels with the functions they call: numba's cache of a kernel is invalidated by changes
# to its own file only, so a kernel here calling ._kernels could run stale code after an edit there
from ._kernels import linear_fit_raw as linear_fit
from ._kernels import poisson_fit_raw as poisson_fit

__all__ = ["column_sums", "linear_fit", "poisson_fit"]


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
