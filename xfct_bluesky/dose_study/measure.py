"""How each reconstruction of the study is scored: resolution by Fourier ring correlation, NRMSE and SSIM.

Resolution (:func:`slab_resolution`): the Fourier ring correlation
(:func:`~xfct_bluesky.analysis.resolution.fourier_ring_correlation`) of
every compared slice, averaged over the slices, read off at the half-bit
threshold for the Fourier samples of all the slices together (the noise of
different detector rows is independent). The study uses it twice:

* between two independent half-datasets, the reconstructions from the even
  and from the odd projections (in acquisition order: with golden-angle
  order each half covers 180 degrees). Both use the shifts of the alignment
  of the whole dataset, so its errors are shared and do not decorrelate them;
  too few angles (Crowther) and noise do;
* between the whole dataset's reconstruction and the phantom. A noiseless
  reference correlates as ``C = sqrt(SNR / (1 + SNR))``; the study converts
  it to the half-dataset correlation it implies, ``F = C^2 / (2 - C^2)``
  (Rosenthal & Henderson 2003: the whole map has twice a half map's SNR; at
  ``F = 1/7``, ``C = 0.5``), and applies the same half-bit threshold, so that
  both numbers mean the same resolution when noise is the only error. This
  one sees the alignment's errors and the artefacts of too few angles.

NRMSE and SSIM: :func:`~xfct_bluesky.analysis.resolution.compare_to_reference`
on the compared rows after the best scale and rigid shift.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..analysis.resolution import (
    compare_to_reference,
    fourier_ring_correlation,
    half_bit_threshold,
    resolution,
)


def _rigid_shift(recon: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(vertical, y, x) px that move ``recon`` onto ``truth``: in-plane from the sums over rows, vertical
    from the sums over slice rows (:func:`~xfct_bluesky.analysis.registration.register`, 1/10 px)."""
    from ..analysis.registration import register

    inplane = register(truth.sum(axis=0), recon.sum(axis=0), upsample=10).shift
    vertical = register(truth.sum(axis=1), recon.sum(axis=1), upsample=10).shift[0]
    return float(vertical), float(inplane[0]), float(inplane[1])


def _register_to(recon: np.ndarray, truth: np.ndarray, *, fourier: bool = False) -> np.ndarray:
    """Translate ``recon`` onto ``truth`` (a rigid shift that alignment cannot fix and does not matter).

    Linear interpolation by default; ``fourier=True`` shifts in Fourier space, which keeps the fine
    detail a resolution measurement reads (linear interpolation is a low-pass filter).
    """
    from scipy import ndimage

    shift = _rigid_shift(recon, truth)
    if fourier:
        return np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(recon), shift)).real
    return ndimage.shift(recon, shift, order=1, mode="constant")


def compare(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray, *, register: bool = True) -> tuple[float, float]:
    """(NRMSE, SSIM) of a reconstruction against the phantom, after a rigid shift and the best scale, over a mask.

    The reconstruction is in counts per voxel per projection, the phantom in
    atoms per m^3: the least-squares scale factor over ``mask`` relates them.
    NRMSE is the RMS error over the mask divided by the phantom's RMS there;
    SSIM (scikit-image, data range of the phantom) is the mean over slices.
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as err:  # scikit-image is in the test and bench extras
        raise ImportError("the dose study's SSIM needs scikit-image: pip install 'xfct-bluesky[bench]'") from err

    r = _register_to(np.asarray(recon, float), truth) if register else np.asarray(recon, float)
    t = np.asarray(truth, float)
    scale = float((r[mask] * t[mask]).sum() / max((r[mask] ** 2).sum(), 1e-300))
    r = r * scale
    nrmse = float(np.sqrt(np.mean((r[mask] - t[mask]) ** 2)) / np.sqrt(np.mean(t[mask] ** 2)))
    rng = float(t.max() - t.min()) or 1.0
    ssim = float(np.mean([structural_similarity(t[k], r[k], data_range=rng) for k in range(t.shape[0])]))
    return nrmse, ssim


def slab_correlation(a: np.ndarray, b: np.ndarray, *, reference: bool = False, pixel_size: float | None = None):
    """The slices' Fourier ring correlation of two volumes (rows, ny, nx), averaged over the rows.

    The half-bit threshold is that of the Fourier samples of all the rows. ``reference=True``: ``b`` is
    noiseless (the phantom) and the correlation is converted to the half-dataset one it implies
    (module notes).
    """
    frcs = [fourier_ring_correlation(a[k], b[k], pixel_size=pixel_size) for k in range(a.shape[0])]
    corr = np.mean([f.correlation for f in frcs], axis=0)
    if reference:
        c2 = np.clip(corr, 0.0, 1.0) ** 2
        corr = np.where(corr > 0, c2 / (2.0 - c2), corr)
    n = frcs[0].n_samples * len(frcs)
    return dataclasses.replace(frcs[0], correlation=corr, n_samples=n, half_bit=half_bit_threshold(n))


def slab_resolution(a, b, *, reference: bool = False):
    """(period px or NaN, status) where :func:`slab_correlation` crosses the half-bit threshold."""
    res = resolution(slab_correlation(a, b, reference=reference))
    return (res.resolution_px if res.valid else float("nan")), res.status


def score(full: np.ndarray, even: np.ndarray, odd: np.ndarray, phantom_full: np.ndarray, rows: slice) -> dict:
    """Every number of one reconstruction: resolutions, NRMSE and SSIM over the compared ``rows``.

    ``full``, ``even``, ``odd``: the volumes from all, the even and the odd projections (same shifts and
    axis); ``phantom_full`` the phantom over every acquired row. The rigid shift is found on the whole
    volume, then the compared rows are cut out.
    """
    registered = _register_to(np.asarray(full, float), phantom_full, fourier=True)[rows]
    truth = np.asarray(phantom_full, float)[rows]
    half, half_status = slab_resolution(np.asarray(even, float)[rows], np.asarray(odd, float)[rows])
    ref, ref_status = slab_resolution(registered, truth, reference=True)
    cmp = compare_to_reference(registered, truth, register=False)
    return {"frc_half": half, "frc_half_status": half_status, "frc_phantom": ref, "frc_phantom_status": ref_status,
            "nrmse": cmp.nrmse, "ssim": cmp.ssim, "slice": registered[registered.shape[0] // 2] * cmp.scale}
