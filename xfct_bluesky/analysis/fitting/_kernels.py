"""Compiled per-pixel kernels of the spectrum fit (numba): Poisson maximum likelihood, NNLS, Fisher inverse.

Poisson maximum likelihood on a fixed non-negative basis B (n_fit x K)
minimises, for counts y >= 0,

    f(a) = c . a - sum_{j: y_j > 0} y_j log(B_j . a),   a >= 0,   c = B^T 1,

a convex function whose minimiser has c . a = sum_j y_j. Only the channels
with counts enter the sum, so a pixel of a few tens of counts costs tens of
channels, not the n_fit of a dense fit. The solver is a projected Newton
method (Bertsekas, SIAM J. Control Optim. 20:221, 1982): components at zero
with a positive gradient are held there, the rest take a Newton step on the
exact Hessian of the counted channels, damped on its diagonal by
1e-3 c_k / a_k (the curvature a component would have if its counts were its
own: it keeps the step finite along directions no count supports), projected on
a >= 0 and shortened by backtracking until f decreases (Armijo); where no
such step lowers f, ten EM (multiplicative) updates, which always do. It
stops when the Newton decrement -g . d (the decrease of f still available,
in units of log-likelihood) is below ``tol`` (1e-8 puts each amplitude within
1e-4 of a standard error of the optimum), or when no step lowers f and the
projected gradient vanishes (an optimum along directions no count
constrains).

NNLS (``method="nnls"``) minimises |B a - y|^2 over a >= 0 through the normal
equations: Lawson & Hanson's active-set algorithm (Solving Least Squares
Problems, 1974, ch. 23) on the fixed Gram matrix G = B^T B and h = B^T y, so a
pixel costs O(K^3) after one matrix product for all pixels.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_DAMPING = 1e-3
_ARMIJO = 1e-4
_MIN_STEP = 1e-12
#: Flags of a pixel's fit.
CONVERGED, MAX_ITER, LINE_SEARCH = 0, 1, 2


@numba.njit(cache=True, fastmath=False, nogil=True)
def _cholesky_solve(H, g, free, nf, L, d):
    """Solve H_FF d_F = -g_F for the free components (indices free[:nf]); False if not positive definite."""
    for i in range(nf):
        for j in range(i + 1):
            s = H[free[i], free[j]]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            if i == j:
                if s <= 0.0:
                    return False
                L[i, i] = math.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    # forward: L z = -g ; back: L^T d = z
    for i in range(nf):
        s = -g[free[i]]
        for k in range(i):
            s -= L[i, k] * d[k]
        d[i] = s / L[i, i]
    for i in range(nf - 1, -1, -1):
        s = d[i]
        for k in range(i + 1, nf):
            s -= L[k, i] * d[k]
        d[i] = s / L[i, i]
    return True


@numba.njit(cache=True, nogil=True)
def _objective(Bn, c, yv, nnz, a, mu):
    """f(a) = c . a - sum y log(B a) over the counted channels, filling ``mu``; inf if some mu <= 0."""
    K = a.size
    f = 0.0
    for n in range(nnz):
        s = 0.0
        for k in range(K):
            s += Bn[n, k] * a[k]
        if s <= 0.0:
            return math.inf
        mu[n] = s
        f -= yv[n] * math.log(s)
    for k in range(K):
        f += c[k] * a[k]
    return f


@numba.njit(cache=True, nogil=True)
def _em_steps(Bn, c, yv, nnz, a, mu, r, n_steps):
    """``n_steps`` EM (multiplicative) updates a_k <- a_k sum_j (y_j / mu_j) B_jk / c_k; returns f."""
    K = a.size
    for _ in range(n_steps):
        for k in range(K):
            r[k] = 0.0
        for n in range(nnz):
            q = yv[n] / mu[n]
            for k in range(K):
                r[k] += q * Bn[n, k]
        for k in range(K):
            a[k] *= r[k] / c[k]
        _objective(Bn, c, yv, nnz, a, mu)
    return _objective(Bn, c, yv, nnz, a, mu)


@numba.njit(cache=True, fastmath=False, nogil=True)
def _fit_one(B, c, row, a0, start, max_iter, tol, a, idx, yv, Bn, mu, mu_new, g, H, L, d, a_new, free):
    """Poisson ML for one spectrum ``row`` (n_fit,) into ``a`` (K,), from ``start`` (K,) where it fits every
    counted channel, else from the composition ``a0`` scaled to the counts; returns (deviance, iterations,
    flag)."""
    n_fit, K = B.shape
    nnz = 0
    total = 0.0
    for j in range(n_fit):
        v = row[j]
        if v > 0:
            idx[nnz] = j
            yv[nnz] = v
            total += v
            nnz += 1
    if nnz == 0:
        for k in range(K):
            a[k] = 0.0
        return 0.0, 0, CONVERGED
    for n in range(nnz):
        for k in range(K):
            Bn[n, k] = B[idx[n], k]
    floor = 1e-9 * total
    tol = max(tol, 1e-13 * total)  # f is a sum of ~total terms: its rounding error
    for k in range(K):
        a[k] = start[k]
    f = _objective(Bn, c, yv, nnz, a, mu)
    if not math.isfinite(f):
        ca0 = 0.0
        for k in range(K):
            ca0 += c[k] * a0[k]
        for k in range(K):
            a[k] = a0[k] * total / ca0
        f = _objective(Bn, c, yv, nnz, a, mu)
    flag = MAX_ITER
    it = 0
    for it in range(1, max_iter + 1):
        # gradient, and the Hessian of the counted channels
        for k in range(K):
            g[k] = c[k]
            for m in range(K):
                H[k, m] = 0.0
        for n in range(nnz):
            r = yv[n] / mu[n]
            w = r / mu[n]
            for k in range(K):
                bk = Bn[n, k]
                if bk == 0.0:
                    continue
                g[k] -= r * bk
                wk = w * bk
                for m in range(k + 1):
                    H[k, m] += wk * Bn[n, m]
        nf = 0
        for k in range(K):
            if a[k] > 0.0 or g[k] < 0.0:
                free[nf] = k
                nf += 1
        for i in range(nf):
            k = free[i]
            for j in range(i):
                H[free[j], k] = H[k, free[j]]
            H[k, k] += _DAMPING * c[k] / max(a[k], floor) + 1e-300
        if nf == 0:
            flag = CONVERGED
            break
        if not _cholesky_solve(H, g, free, nf, L, d):
            for i in range(nf):  # not positive definite (rounding): a scaled gradient step
                k = free[i]
                d[i] = -g[k] / H[k, k]
        decrement = 0.0
        for i in range(nf):
            decrement -= g[free[i]] * d[i]
        if decrement < tol:
            flag = CONVERGED
            break
        # projected backtracking line search
        alpha = 1.0
        accepted = False
        while alpha > _MIN_STEP:
            for k in range(K):  # held components stay where they are (at 0)
                a_new[k] = a[k]
            for i in range(nf):
                k = free[i]
                v = a[k] + alpha * d[i]
                a_new[k] = max(0.0, v)
            f_new = _objective(Bn, c, yv, nnz, a_new, mu_new)  # inf where some channel's model is <= 0
            if f_new < math.inf:
                slope = 0.0
                for k in range(K):
                    slope += g[k] * (a_new[k] - a[k])
                if f_new <= f + _ARMIJO * slope:
                    accepted = True
                    break
            alpha *= 0.5
        if not accepted:
            # no Newton step lowers f (a projection against the bounds): EM steps, which always do
            f_em = _em_steps(Bn, c, yv, nnz, a, mu, g, 10)
            if not f_em < f - 1e-12 * abs(f):
                # at an optimum along a direction no count constrains: converged if the projected
                # gradient vanishes (KKT), else a genuine failure
                for k in range(K):
                    g[k] = c[k]
                for n in range(nnz):
                    r = yv[n] / mu[n]
                    for k in range(K):
                        g[k] -= r * Bn[n, k]
                worst = 0.0
                for k in range(K):
                    pg = g[k] if a[k] > floor else min(g[k], 0.0)
                    worst = max(worst, abs(pg) / c[k])
                flag = CONVERGED if worst < 1e-4 else LINE_SEARCH
                break
            f = f_em
            continue
        for k in range(K):
            a[k] = a_new[k]
        for n in range(nnz):
            mu[n] = mu_new[n]
        f = f_new
    dev = 0.0
    for n in range(nnz):
        dev += yv[n] * math.log(yv[n] / mu[n])
    ca = 0.0
    for k in range(K):
        ca += c[k] * a[k]
    dev = 2.0 * (ca - total + dev)
    return dev, it, flag


@numba.njit(cache=True, nogil=True)
def workspace(n_fit, K):
    """A thread's arrays for :func:`_fit_one`: idx, yv, Bn, mu, mu_new, g, H, L, d, a_new, free, and ``a``."""
    return (np.empty(n_fit, np.int64), np.empty(n_fit), np.empty((n_fit, K)), np.empty(n_fit), np.empty(n_fit),
            np.empty(K), np.empty((K, K)), np.empty((K, K)), np.empty(K), np.empty(K), np.empty(K, np.int64),
            np.empty(K))


@numba.njit(cache=True, parallel=True, nogil=True)
def poisson_fit(B, c, Y, a0, start, max_iter, tol, A, dev, iters, flags):
    """Poisson ML of every row of ``Y`` (N, n_fit) on ``B`` (n_fit, K), from ``start`` (N, K) (or ``a0``
    scaled to each row's counts where a start misses a counted channel); into ``A`` (N, K), ``dev``,
    ``iters``, ``flags`` (N,)."""
    N = Y.shape[0]
    n_fit, K = B.shape
    block = 64
    n_blocks = (N + block - 1) // block
    for b in numba.prange(n_blocks):
        idx, yv, Bn, mu, mu_new, g, H, L, d, a_new, free, a = workspace(n_fit, K)
        for p in range(b * block, min(N, (b + 1) * block)):
            dv, it, fl = _fit_one(B, c, Y[p], a0, start[p], max_iter, tol, a, idx, yv, Bn, mu, mu_new, g, H, L,
                                  d, a_new, free)
            for k in range(K):
                A[p, k] = a[k]
            dev[p] = dv
            iters[p] = it
            flags[p] = fl


@numba.njit(cache=True, parallel=True, nogil=True)
def poisson_deviance(B, Y, A, dev):
    """Poisson deviance 2 sum_j [mu_j - y_j + y_j log(y_j / mu_j)] of each row of ``Y`` at ``A`` (inf where a
    channel with counts is expected to have none)."""
    N = Y.shape[0]
    n_fit, K = B.shape
    for p in numba.prange(N):
        s = 0.0
        for j in range(n_fit):
            m = 0.0
            for k in range(K):
                m += B[j, k] * A[p, k]
            y = Y[p, j]
            s += m - y
            if y > 0:
                s += y * math.log(y / m) if m > 0 else math.inf
        dev[p] = 2.0 * s


@numba.njit(cache=True, nogil=True)
def _nnls_one(G, h, x, passive, s, L, d, tmp, neg_h, max_iter):
    """Lawson-Hanson NNLS in Gram form: min 0.5 x'Gx - h'x, x >= 0, into ``x``; returns iterations."""
    K = G.shape[0]
    for k in range(K):
        x[k] = 0.0
        passive[k] = False
        neg_h[k] = -h[k]
    scale = 0.0
    for k in range(K):
        scale = max(scale, abs(h[k]))
    tol = 1e-12 * max(scale, 1e-300)
    it = 0
    while it < max_iter:
        # gradient w = h - G x; the most positive inactive component enters
        best, jbest = tol, -1
        for k in range(K):
            if passive[k]:
                continue
            w = h[k]
            for m in range(K):
                w -= G[k, m] * x[m]
            if w > best:
                best, jbest = w, k
        if jbest < 0:
            break
        passive[jbest] = True
        while it < max_iter:
            it += 1
            nf = 0
            for k in range(K):
                if passive[k]:
                    tmp[nf] = k
                    nf += 1
            idx = tmp[:nf]
            if not _cholesky_solve(G, neg_h, idx, nf, L, d):
                passive[jbest] = False
                return it
            for k in range(K):
                s[k] = 0.0
            for i in range(nf):
                s[idx[i]] = d[i]
            ok = True
            for i in range(nf):
                if s[idx[i]] <= 0.0:
                    ok = False
                    break
            if ok:
                for k in range(K):
                    x[k] = s[k]
                break
            alpha = 1.0
            for i in range(nf):
                k = idx[i]
                if s[k] <= 0.0:
                    alpha = min(alpha, x[k] / (x[k] - s[k]))
            for k in range(K):
                x[k] += alpha * (s[k] - x[k])
                if passive[k] and x[k] <= 1e-15 * max(scale, 1.0):
                    passive[k] = False
                    x[k] = 0.0
    return it


@numba.njit(cache=True, parallel=True, nogil=True)
def nnls_fit(G, Hy, A, iters):
    """NNLS of every pixel from the Gram matrix ``G`` (K, K) and ``Hy`` = Y @ B (N, K), into ``A`` (N, K)."""
    N, K = Hy.shape
    for p in numba.prange(N):
        x = np.empty(K)
        passive = np.empty(K, np.bool_)
        s = np.empty(K)
        L = np.empty((K, K))
        d = np.empty(K)
        tmp = np.empty(K, np.int64)
        neg_h = np.empty(K)
        iters[p] = _nnls_one(G, Hy[p], x, passive, s, L, d, tmp, neg_h, 3 * K + 10)
        for k in range(K):
            A[p, k] = x[k]


@numba.njit(cache=True, parallel=True, nogil=True)
def inverse_diagonal(F_flat, K, out):
    """diag(F^-1) per pixel from the packed lower triangle (N, K(K+1)/2) of symmetric positive F; inf where
    F is singular."""
    N = F_flat.shape[0]
    for p in numba.prange(N):
        L = np.zeros((K, K))
        ok = True
        q = 0
        M = np.empty((K, K))
        for i in range(K):
            for j in range(i + 1):
                M[i, j] = F_flat[p, q]
                M[j, i] = F_flat[p, q]
                q += 1
        for i in range(K):
            for j in range(i + 1):
                s = M[i, j]
                for k in range(j):
                    s -= L[i, k] * L[j, k]
                if i == j:
                    if s <= 0.0:
                        ok = False
                        break
                    L[i, i] = math.sqrt(s)
                else:
                    L[i, j] = s / L[j, j]
            if not ok:
                break
        if not ok:
            for k in range(K):
                out[p, k] = math.inf
            continue
        # diag(F^-1)_k = sum_i (L^-1)_{ik}^2 ; columns of L^-1 by forward substitution
        for k in range(K):
            out[p, k] = 0.0
        col = np.empty(K)
        for k in range(K):
            for i in range(K):
                col[i] = 0.0
            col[k] = 1.0 / L[k, k]
            acc = col[k] * col[k]
            for i in range(k + 1, K):
                s = 0.0
                for m in range(k, i):
                    s -= L[i, m] * col[m]
                col[i] = s / L[i, i]
                acc += col[i] * col[i]
            out[p, k] = acc
