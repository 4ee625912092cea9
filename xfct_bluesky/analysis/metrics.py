"""How close a reconstruction is: NRMSE, SSIM, and the Poisson log-likelihood MLEM climbs."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln


# ------------------------------------------------------------- metrics ---
def nrmse(recon, truth, mask=None) -> float:
    """Normalised RMS error: RMS of ``recon - truth`` over RMS of ``truth``.

    Parameters
    ----------
    recon, truth : array_like
        Same shape.
    mask : bool array_like, optional
        Elements to compare, broadcastable to the shape (e.g. a
        ``(n_cols, n_cols)`` disc for a volume); default all.

    Returns
    -------
    float
        0 for a perfect reconstruction, 1 for an all-zero one.
    """
    r = np.asarray(recon, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"recon has shape {r.shape} and truth {t.shape}; they must be equal")
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, dtype=bool), t.shape)
        r, t = r[m], t[m]
    norm = math.sqrt(np.mean(t * t)) if t.size else 0.0
    if norm == 0:
        raise ValueError("truth is all zero (in the mask): the normalised RMS error is undefined")
    return math.sqrt(np.mean((r - t) ** 2)) / norm


def ssim(recon, truth, *, data_range=None) -> float:
    """Structural similarity of ``recon`` to ``truth``, by scikit-image.

    Parameters
    ----------
    recon, truth : array_like
        Same shape, 2D or 3D.
    data_range : float, optional
        Default ``truth.max() - truth.min()``.

    Returns
    -------
    float
        1 for identical images.

    Notes
    -----
    A thin wrapper of :func:`skimage.metrics.structural_similarity`;
    scikit-image is imported only here (it is in the ``test`` and ``bench``
    extras).
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ssim needs scikit-image: pip install 'xfct-bluesky[test]' "
                          "(or scikit-image)") from exc
    r = np.asarray(recon, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"recon has shape {r.shape} and truth {t.shape}; they must be equal")
    if data_range is None:
        data_range = float(t.max() - t.min())
    return float(structural_similarity(r, t, data_range=data_range))


def poisson_log_likelihood(projections, estimate_projections) -> float:
    """Poisson log-likelihood of measured counts given expected ones.

    Parameters
    ----------
    projections : array_like
        Measured counts, >= 0 (need not be integers).
    estimate_projections : array_like
        Expected counts, same shape, >= 0 (e.g. :func:`project` of a
        reconstruction).

    Returns
    -------
    float
        ``sum(p log(q) - q - log(p!))`` (with ``log(p!) = gammaln(p + 1)``),
        in float64; ``-inf`` if some ``q`` is 0 where ``p > 0``.

    Notes
    -----
    MLEM increases this at every iteration (Shepp & Vardi 1982).
    """
    p = np.asarray(projections, dtype=np.float64)
    q = np.asarray(estimate_projections, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"projections have shape {p.shape} and estimate_projections {q.shape}; "
                         "they must be equal")
    for name, arr in (("projections", p), ("estimate_projections", q)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} hold NaN/inf values; all must be finite")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} have negative values (min {arr.min():g}); Poisson counts are >= 0")
    if np.any((q == 0) & (p > 0)):
        return -math.inf
    log_q = np.zeros_like(q)
    np.log(q, out=log_q, where=q > 0)
    return float(np.sum(p * log_q - q - gammaln(p + 1)))
