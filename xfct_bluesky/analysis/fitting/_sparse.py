"""Compiled per-pixel fits that read the raw counts (numba): no float64 copy of the map.

Every kernel here reads a pixel's row of the raw array (any integer or
float dtype) over the fitted channels. The Poisson fit copies it into a
thread-local buffer, computes its start (the linear estimate with the mean
spectrum's weights, a sum over the counted channels only, clipped at 0 and
blended with the mean composition) and runs the projected Newton method of
:func:`._kernels._fit_one` (sparse in the counted channels); the linear
estimator is a sum over the counted channels too. :func:`column_sums` gives
the summed spectrum and counts NaN and negative values in one pass.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._kernels import _fit_one, workspace


@numba.njit(cache=True, parallel=True, nogil=True)
def poisson_fit(B, c, Wt, a0, Y, ch0, max_iter, tol, A, dev, iters, flags):
    """Non-negative Poisson ML of every row of the raw ``Y`` (N, n_channels) over channels ch0 .. ch0 + n_fit
    on ``B`` (n_fit, K) (:func:`._kernels._fit_one`), from the linear estimate of weights ``Wt`` (n_fit, K),
    clipped at 0 and blended with the mean composition ``a0``; into ``A`` (N, K), ``dev``, ``iters``,
    ``flags`` (N,)."""
    N = Y.shape[0]
    n_fit, K = B.shape
    ca0 = 0.0
    for k in range(K):
        ca0 += c[k] * a0[k]
    block = 64
    n_blocks = (N + block - 1) // block
    for b in numba.prange(n_blocks):
        row = np.empty(n_fit)
        start = np.empty(K)
        idx, yv, Bn, mu, mu_new, g, H, L, d, a_new, free, a = workspace(n_fit, K)
        for p in range(b * block, min(N, (b + 1) * block)):
            raw = Y[p]
            total = 0.0
            for k in range(K):
                start[k] = 0.0
            for j in range(n_fit):
                v = float(raw[ch0 + j])
                row[j] = v
                if v > 0:
                    total += v
                    for k in range(K):
                        start[k] += Wt[j, k] * v
            for k in range(K):
                start[k] = max(start[k], 0.0) + 0.1 * total / ca0 * a0[k]
            dv, it, fl = _fit_one(B, c, row, a0, start, max_iter, tol, a, idx, yv, Bn, mu, mu_new, g, H, L, d,
                                  a_new, free)
            for k in range(K):
                A[p, k] = a[k]
            dev[p] = dv
            iters[p] = it
            flags[p] = fl


@numba.njit(cache=True, parallel=True, nogil=True)
def linear_fit(B, c, W, W2, Y, ch0, want_sigma, A, dev, errors):
    """a = W y of every raw row of ``Y`` (counted channels only), its deviance, and sqrt(W^2 y) as sigma."""
    N = Y.shape[0]
    n_fit, K = B.shape
    for p in numba.prange(N):
        row = Y[p]
        total = 0.0
        for k in range(K):
            A[p, k] = 0.0
            if want_sigma:
                errors[p, k] = 0.0
        for j in range(n_fit):
            y = float(row[ch0 + j])
            if y > 0:
                total += y
                for k in range(K):
                    A[p, k] += W[k, j] * y
                    if want_sigma:
                        errors[p, k] += W2[k, j] * y
        s = 0.0
        for j in range(n_fit):
            y = float(row[ch0 + j])
            if y > 0:
                m = 0.0
                for k in range(K):
                    m += B[j, k] * A[p, k]
                s += y * math.log(y / m) if m > 0 else math.inf
        for k in range(K):
            s += c[k] * A[p, k]
            if want_sigma:
                errors[p, k] = math.sqrt(max(errors[p, k], 0.0))
        dev[p] = 2.0 * (s - total)


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
