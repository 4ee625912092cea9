"""Compiled per-pixel kernels of the spectrum fit (numba): Poisson maximum likelihood, NNLS, standard errors.

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
constrains). The last Hessian is often not needed: after a step of local
norm lambda on an unchanged free set, the decrement at the new point is
bounded from the last factor (the Hessian of the self-concordant f / min(y, 1)
changes by at most (1 - lambda)^-2 over the step; the damping by the ratio
of the old to the new amplitudes), and when that bound is below ``tol`` the
pixel is done without forming it (about one Hessian in five saved; the
estimates are those of the full test, to rounding).

Components marked ``held`` keep their starting values (a known part of the
mean: the background where no pixel can determine it): the solver's free set,
its EM steps and its optimality test leave them out, and so does the Fisher
information of the standard errors (theirs is NaN).

A pixel's counted channels come compacted (:func:`._sparse.compact`: their
channel numbers and counts, read once from the raw map of any dtype), so the
solver is compiled once, for float64, whatever the map's dtype. Its sums over
them run over arrays laid out component-major (``BnT``: K x nnz), so that they
vectorise. The standard errors (:func:`fisher_sigma`, the Fisher information
at the estimate over every fitted channel) are a second pass over the
estimates, 32 pixels at a time: each pixel's 1 / mu, then pair by pair of
components one long dot product per pixel over the channels both are nonzero
on (a line and its tail end well below the Compton peak), the pair's products
B_k B_m read once for the block, in float32 (I to ~1e-7 relative, factorised
in float64). No matrix product over all channels and no BLAS threads
competing with numba's. Most Newton steps need no objective (the logarithm of
every counted channel): a full, unprojected step of local norm <= 1/2 passes
the Armijo test by self-concordance, so only the model is computed there.

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
#: Sums over channels may be reordered (vectorised): rounding-level differences only, no NaN/inf shortcuts.
_FAST = {"reassoc", "contract"}
#: Flags of a pixel's fit.
CONVERGED, MAX_ITER, LINE_SEARCH = 0, 1, 2


@numba.njit(cache=True, fastmath=False, nogil=True)
def _cholesky_solve(H, g, free, nf, L, d):
    """Solve H_FF d_F = -g_F for the free components (indices free[:nf]); False if not positive definite.

    L holds the factor's strict lower triangle and, on its diagonal, the reciprocals of the factor's diagonal
    (a multiplication where each use would divide)."""
    for i in range(nf):  # H_FF, gathered into L's rows: the sums below run along contiguous rows
        fi = free[i]
        for j in range(i + 1):
            L[i, j] = H[fi, free[j]]
    for i in range(nf):
        Li = L[i]
        for j in range(i):
            Lj = L[j]
            s = Li[j]
            for k in range(j):
                s -= Li[k] * Lj[k]
            Li[j] = s * Lj[j]
        s = Li[i]
        for k in range(i):
            s -= Li[k] * Li[k]
        if s <= 0.0:
            return False
        Li[i] = 1.0 / math.sqrt(s)
    # forward: L z = -g ; back: L^T d = z
    for i in range(nf):
        s = -g[free[i]]
        Li = L[i]
        for k in range(i):
            s -= Li[k] * d[k]
        d[i] = s * Li[i]
    for i in range(nf - 1, -1, -1):
        s = d[i]
        for k in range(i + 1, nf):
            s -= L[k, i] * d[k]
        d[i] = s * L[i, i]
    return True


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _model(BnT, nnz, a, mu):
    """mu = B a over the counted channels; False if some mu <= 0 (outside f's domain)."""
    K = a.size
    for n in range(nnz):
        mu[n] = 0.0
    for k in range(K):
        ak = a[k]
        if ak != 0.0:  # most amplitudes of a weak pixel are 0: their columns cost nothing
            for n in range(nnz):
                mu[n] += ak * BnT[k, n]
    for n in range(nnz):
        if not mu[n] > 0.0:
            return False
    return True


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _objective(BnT, c, yv, nnz, a, mu):
    """f(a) = c . a - sum y log(B a) over the counted channels (``BnT`` (K, nnz): their rows of B, transposed),
    filling ``mu`` (:func:`_model`); inf if some mu <= 0."""
    if not _model(BnT, nnz, a, mu):
        return math.inf
    f = 0.0
    for k in range(a.size):
        f += c[k] * a[k]
    for n in range(nnz):
        f -= yv[n] * math.log(mu[n])
    return f


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _gradient(BnT, c, yv, nnz, mu, g, r):
    """g = c - B^T (y / mu) over the counted channels, leaving y / mu in ``r``."""
    K = g.size
    for n in range(nnz):
        r[n] = yv[n] / mu[n]
    for k in range(K):
        s = 0.0
        for n in range(nnz):
            s += r[n] * BnT[k, n]
        g[k] = c[k] - s


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _hessian(BnT, nnz, mu, r, free, nf, H, w, wb):
    """H_kl = sum_n B_nk B_nl y_n / mu_n^2 for the free components k, l (indices free[:nf]; ``r`` = y / mu)."""
    for n in range(nnz):
        w[n] = r[n] / mu[n]
    for i in range(nf):
        k = free[i]
        for n in range(nnz):
            wb[n] = w[n] * BnT[k, n]
        for j in range(i + 1):
            m = free[j]
            s = 0.0
            for n in range(nnz):
                s += wb[n] * BnT[m, n]
            H[k, m] = s
            H[m, k] = s


@numba.njit(cache=True, nogil=True)
def _em_steps(BnT, c, yv, nnz, a, held, mu, r, n_steps):
    """``n_steps`` EM (multiplicative) updates a_k <- a_k sum_j (y_j / mu_j) B_jk / c_k of the components not
    ``held`` (a held one is a known part of the mean, which keeps EM monotone); returns f."""
    K = a.size
    f = _objective(BnT, c, yv, nnz, a, mu) if n_steps <= 0 else 0.0
    for _ in range(n_steps):
        for n in range(nnz):
            r[n] = yv[n] / mu[n]
        for k in range(K):
            if held[k]:
                continue
            s = 0.0
            for n in range(nnz):
                s += r[n] * BnT[k, n]
            a[k] *= s / c[k]
        f = _objective(BnT, c, yv, nnz, a, mu)  # and mu at the new a, for the next step
    return f


@numba.njit(cache=True, nogil=True)
def _gather(B, idx, yv, s, nnz, BnT, y):
    """A compacted row (channels ``idx[s:s + nnz]`` of ``B`` (n_fit, K), counts ``yv[s:s + nnz]``): its basis
    rows transposed into ``BnT`` (K, >= nnz), each component's values contiguous for the sums over channels,
    and its counts into ``y``; returns the total counts."""
    K = B.shape[1]
    total = 0.0
    for n in range(nnz):
        j = idx[s + n]
        v = yv[s + n]
        y[n] = v
        total += v
        for k in range(K):
            BnT[k, n] = B[j, k]
    return total


@numba.njit(cache=True, nogil=True)
def _newton(BnT, c, yv, nnz, total, a0, held, max_iter, tol, a, ws):
    """Poisson ML of one pixel's counted channels (``BnT`` (K, nnz) their basis rows, ``yv`` their counts),
    from ``a`` (K,) where it fits every counted channel, else from the composition ``a0`` scaled to the
    counts; the estimate into ``a``. The components ``held`` (K,) keep their values of ``a`` (a known part
    of the mean: the background where a pixel cannot determine it). Returns (deviance, iterations, flag)."""
    mu, mu_new, g, H, L, d, a_new, free, r, w, wb, z, damped = ws
    K = a.size
    if nnz == 0:
        for k in range(K):
            a[k] = 0.0
        return 0.0, 0, CONVERGED
    floor = 1e-9 * total
    tol = max(tol, 1e-13 * total)  # f is a sum of ~total terms: its rounding error
    # f / min(y, 1) is self-concordant (Nesterov & Nemirovski: -y log is, for y >= 1): the Hessian moves by
    # at most (1 - lambda)^2 over a step of local norm lambda, which bounds the decrement after a step
    scale = 1.0
    for n in range(nnz):
        scale = min(scale, yv[n])
    if not _model(BnT, nnz, a, mu):
        ca0 = 0.0
        for k in range(K):
            ca0 += c[k] * a0[k]
        for k in range(K):
            if not held[k]:
                a[k] = a0[k] * total / ca0
        _model(BnT, nnz, a, mu)
    # f (its logarithms of every counted channel) is computed only where a line search needs it
    f = math.nan
    f_known = False
    _gradient(BnT, c, yv, nnz, mu, g, r)
    flag = MAX_ITER
    nf = 0
    factored = False  # L holds the factor of the last step's (damped) Hessian on the same free set
    step_norm = math.inf
    it = 0
    for it in range(1, max_iter + 2):
        same = factored
        count = 0
        for k in range(K):
            if not held[k] and (a[k] > 0.0 or g[k] < 0.0):
                if count >= nf or free[count] != k:
                    same = False
                free[count] = k
                count += 1
        same = same and count == nf
        nf = count
        if nf == 0:
            flag = CONVERGED
            break
        if same and step_norm < 0.5:
            # the decrement here from the last step's factor: g' (H + D)^-1 g with H and the damping D of
            # the last point. This point's Hessian is at least (1 - lambda)^2 times that one's
            # (self-concordance) and its damping at least rho times, rho the smallest ratio of the
            # components' old to new values; x2 for safety. Below tol, the Newton step this point would take
            # changes nothing within the tolerance: it is not computed
            est = 0.0
            rho = 1.0
            for i in range(nf):
                k = free[i]
                s = g[k]
                for m in range(i):
                    s -= L[i, m] * z[m]
                z[i] = s * L[i, i]  # the reciprocal of the factor's diagonal (_cholesky_solve)
                est += z[i] * z[i]
                rho = min(rho, damped[k] / max(a[k], floor))
            if 2.0 * est / (rho * (1.0 - step_norm) ** 2) < tol:
                it -= 1
                flag = CONVERGED
                break
        if it > max_iter:
            it -= 1
            break
        _hessian(BnT, nnz, mu, r, free, nf, H, w, wb)
        for i in range(nf):
            k = free[i]
            damped[k] = max(a[k], floor)
            H[k, k] += _DAMPING * c[k] / damped[k] + 1e-300
        factored = _cholesky_solve(H, g, free, nf, L, d)
        if not factored:
            for i in range(nf):  # not positive definite (rounding): a scaled gradient step
                k = free[i]
                d[i] = -g[k] / H[k, k]
        decrement = 0.0
        for i in range(nf):
            decrement -= g[free[i]] * d[i]
        if decrement < tol:
            flag = CONVERGED
            break
        alpha = 1.0
        accepted = False
        clipped = False
        f_new = math.nan
        if factored and decrement <= 0.25 * scale:
            # the full Newton step, if it needs no projection: its local norm t = sqrt(decrement / scale) (in
            # f / scale, the damping only shortening it) is <= 1/2, so by self-concordance it stays in f's
            # domain and f(a + d) <= f(a) - decrement + scale w(t), w(t) = -t - log(1 - t) <= 0.78 t^2
            # (Nesterov, Introductory Lectures on Convex Optimization, 2004, thm 4.1.8): the Armijo test
            # below holds, and is not computed
            inside = True
            for i in range(nf):
                if a[free[i]] + d[i] < 0.0:
                    inside = False
                    break
            if inside:
                for k in range(K):
                    a_new[k] = a[k]
                for i in range(nf):
                    a_new[free[i]] = a[free[i]] + d[i]
                accepted = _model(BnT, nnz, a_new, mu_new)
        if not accepted and not f_known:
            f = _objective(BnT, c, yv, nnz, a, mu)
            f_known = True
        # projected backtracking line search
        while not accepted and alpha > _MIN_STEP:
            for k in range(K):  # held components stay where they are (at 0)
                a_new[k] = a[k]
            clipped = False
            for i in range(nf):
                k = free[i]
                v = a[k] + alpha * d[i]
                if v < 0.0:
                    v = 0.0
                    clipped = True
                a_new[k] = v
            f_new = _objective(BnT, c, yv, nnz, a_new, mu_new)  # inf where some channel's model is <= 0
            if f_new < math.inf:
                slope = 0.0
                for k in range(K):
                    slope += g[k] * (a_new[k] - a[k])
                if f_new <= f + _ARMIJO * slope:
                    accepted = True
                    break
            alpha *= 0.5
        if not accepted:
            factored = False
            # no Newton step lowers f (a projection against the bounds): EM steps, which always do
            f_em = _em_steps(BnT, c, yv, nnz, a, held, mu, r, 10)
            _gradient(BnT, c, yv, nnz, mu, g, r)
            if not f_em < f - 1e-12 * abs(f):
                # at an optimum along a direction no count constrains: converged if the projected
                # gradient vanishes (KKT), else a genuine failure
                worst = 0.0
                for k in range(K):
                    if held[k]:
                        continue
                    pg = g[k] if a[k] > floor else min(g[k], 0.0)
                    worst = max(worst, abs(pg) / c[k])
                flag = CONVERGED if worst < 1e-4 else LINE_SEARCH
                break
            f = f_em
            f_known = True
            continue
        for k in range(K):
            a[k] = a_new[k]
        for n in range(nnz):
            mu[n] = mu_new[n]
        f = f_new
        f_known = not math.isnan(f_new)
        _gradient(BnT, c, yv, nnz, mu, g, r)
        # the step's local norm (in f / scale), for the next iteration's estimate; a clipped step is not
        # the Newton step whose factor L holds
        factored = factored and not clipped
        step_norm = alpha * math.sqrt(decrement / scale)
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
    """A thread's arrays: ``y`` (n_fit,) a pixel's counts, ``BnT`` (K, n_fit), ``a`` (K,) and the tuple
    :func:`_newton` takes (mu, mu_new, g, H, L, d, a_new, free, r, w, wb, z, damped)."""
    ws = (np.empty(n_fit), np.empty(n_fit), np.empty(K), np.empty((K, K)), np.empty((K, K)), np.empty(K),
          np.empty(K), np.empty(K, np.int64), np.empty(n_fit), np.empty(n_fit), np.empty(n_fit), np.empty(K),
          np.empty(K))
    return np.empty(n_fit), np.empty((K, n_fit)), np.empty(K), ws


@numba.njit(cache=True, parallel=True, nogil=True)
def poisson_fit(B, c, stride, nnzs, idx, yv, a0, held, start, max_iter, tol, A, dev, iters, flags):
    """Poisson ML of every compacted row p (channels ``idx[p * stride:]``, ``nnzs[p]`` of them, counts ``yv``
    there; :func:`._sparse.compact`) on ``B`` (n_fit, K), from ``start`` (N, K) (or ``a0`` scaled to the
    row's counts where a start misses a counted channel), the components ``held`` (K,) kept at their start;
    into ``A`` (N, K), ``dev``, ``iters``, ``flags``.

    Float64 whatever the raw dtype was: one compilation serves every map."""
    N = nnzs.size
    n_fit, K = B.shape
    block = 64
    n_blocks = (N + block - 1) // block
    for b in numba.prange(n_blocks):
        y, BnT, a, ws = workspace(n_fit, K)
        for p in range(b * block, min(N, (b + 1) * block)):
            nnz = nnzs[p]
            total = _gather(B, idx, yv, p * stride, nnz, BnT, y)
            for k in range(K):
                a[k] = start[p, k]
            dv, it, fl = _newton(BnT, c, y, nnz, total, a0, held, max_iter, tol, a, ws)
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


@numba.njit(cache=True, nogil=True)
def _inverse_diagonal(F, K, L, col, out):
    """diag(F^-1) of the symmetric positive ``F`` (its lower triangle read) into ``out`` (K,), by Cholesky; inf
    where F is singular."""
    for i in range(K):
        for j in range(i + 1):
            s = F[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            if i == j:
                if s <= 0.0:
                    for m in range(K):
                        out[m] = math.inf
                    return
                L[i, i] = math.sqrt(s)
            else:
                L[i, j] = s / L[j, j]
    # diag(F^-1)_k = sum_i (L^-1)_{ik}^2 ; columns of L^-1 by forward substitution
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
        out[k] = acc


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _sigma_block(BT, lo, hi, G, pairs, A, held, p0, p1, mu_floor, mu, W, F, L, col, errors):
    """Standard errors sqrt(diag(I^-1)) of pixels p0 .. p1 - 1 at their estimates ``A[p]``, I = B^T diag(1 / mu) B
    over every fitted channel with mu = max(B a, ``mu_floor``), into ``errors[p]``; I restricted to the
    components not ``held`` (a held one is part of mu, not estimated: its error is NaN).

    ``BT`` (K, n_fit) is B transposed, component k nonzero only on channels lo[k] .. hi[k] - 1; ``G`` holds
    B_k B_m of each pair q = (k, m), m <= k, over the channels both live on (``pairs[q]`` = k, m, first,
    one-past-last). First each pixel's 1 / mu into a row of ``W`` (the block's rows stay in cache), then pair
    by pair a dot product of G_q with each pixel's row: long sums over a pair's channels, its row of G read
    once for the block. ``BT``, ``G``, ``mu`` and ``W`` are float32 (twice the values per vector instruction,
    half the memory traffic): I's entries to ~1e-7 relative, which sigma keeps (the factorisation is float64)."""
    K, n_fit = BT.shape
    P = p1 - p0
    for i in range(P):
        for j in range(n_fit):
            mu[j] = 0.0
        for k in range(K):
            ak = np.float32(A[p0 + i, k])
            if ak != 0.0:  # most amplitudes of a weak pixel are 0
                src = BT[k, lo[k]:hi[k]]
                dst = mu[lo[k]:hi[k]]
                for j in range(src.size):
                    dst[j] += ak * src[j]
        w = W[i]
        for j in range(n_fit):
            w[j] = np.float32(1.0) / max(mu[j], mu_floor)
    for q in range(pairs.shape[0]):
        k, m, j0, j1 = pairs[q, 0], pairs[q, 1], pairs[q, 2], pairs[q, 3]
        g = G[q, j0:j1]
        for i in range(P):
            x = W[i, j0:j1]
            acc = np.float32(0.0)
            for j in range(g.size):
                acc += x[j] * g[j]
            F[i, k, m] = acc
    for i in range(P):
        Fi = F[i]
        for k in range(K):
            if held[k]:  # decoupled, with a unit diagonal: the others' errors are those of I without it
                for m in range(K):
                    Fi[k, m] = 0.0
                    Fi[m, k] = 0.0
                Fi[k, k] = 1.0
        out = errors[p0 + i]
        _inverse_diagonal(Fi, K, L, col, out)
        for k in range(K):
            out[k] = math.nan if held[k] else math.sqrt(out[k])


@numba.njit(cache=True, parallel=True, nogil=True)
def fisher_sigma(BT, lo, hi, G, pairs, A, held, mu_floor, errors):
    """:func:`_sigma_block` of every row of ``A`` (N, K) into ``errors`` (N, K), 32 pixels at a time (``BT``,
    ``G`` float32; ``held`` (K,) the components not estimated)."""
    N, K = A.shape
    n_fit = BT.shape[1]
    block = 32
    floor = np.float32(mu_floor)
    for b in numba.prange((N + block - 1) // block):
        mu = np.empty(n_fit, np.float32)
        W = np.empty((block, n_fit), np.float32)
        F = np.empty((block, K, K))
        L = np.empty((K, K))
        col = np.empty(K)
        p0 = b * block
        _sigma_block(BT, lo, hi, G, pairs, A, held, p0, min(N, p0 + block), floor, mu, W, F, L, col, errors)


@numba.njit(cache=True, parallel=True, nogil=True)
def linear_fit(B, Wt, W2t, c, stride, nnzs, idx, yv, want_sigma, want_dev, A, dev, errors):
    """a = W y of every compacted row (``Wt`` = W^T (n_fit, K)), with ``want_dev`` its deviance, with
    ``want_sigma`` sqrt(W^2 y) as sigma (``W2t`` = (W^2)^T)."""
    N = nnzs.size
    K = B.shape[1]
    block = 64
    for b in numba.prange((N + block - 1) // block):
        a = np.empty(K)
        e = np.empty(K)
        for p in range(b * block, min(N, (b + 1) * block)):
            s0, nnz = p * stride, nnzs[p]
            for k in range(K):
                a[k] = 0.0
                e[k] = 0.0
            total = 0.0
            for n in range(s0, s0 + nnz):
                j = idx[n]
                y = yv[n]
                total += y
                for k in range(K):
                    a[k] += Wt[j, k] * y
                if want_sigma:
                    for k in range(K):
                        e[k] += W2t[j, k] * y
            for k in range(K):
                A[p, k] = a[k]
                if want_sigma:
                    errors[p, k] = math.sqrt(max(e[k], 0.0))
            if want_dev:
                s = 0.0
                for n in range(s0, s0 + nnz):
                    j = idx[n]
                    y = yv[n]
                    m = 0.0
                    for k in range(K):
                        m += B[j, k] * a[k]
                    s += y * math.log(y / m) if m > 0 else math.inf
                for k in range(K):
                    s += c[k] * a[k]
                dev[p] = 2.0 * (s - total)
