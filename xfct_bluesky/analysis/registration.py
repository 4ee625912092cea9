"""Sub-pixel image registration by upsampled-DFT cross-correlation.

Our implementation of the algorithm of Guizar-Sicairos, Thurman & Fienup
(2008): the cross-correlation (CC) of two images is computed once on the
pixel grid by FFT, and its peak is then refined on a grid 1/``upsample`` px
fine, evaluated only in a small neighbourhood of the peak by a
matrix-multiply DFT of the product spectrum. It is built for the low-count
maps of dose-fractionated XRF tomography:

* the plain (unnormalized) CC is the default, which stays accurate at
  0.5-5 counts per pixel where phase correlation fails;
* means are subtracted (and a taper optionally applied) before correlating;
* float32 throughout, ``scipy.fft`` real transforms with ``workers``;
* stacks: many moving images against one reference (whose FFT is computed
  once) or pairwise, in batches, with the DFT kernels cached.

Public functions: :func:`register` (shifts and peak quality) here;
:func:`cross_correlation` (the CC image, e.g. 6x upsampled as in the DPC
alignment paper) and :func:`cc_fwhm` (width of a CC peak along x, y and the
45-degree line) live in :mod:`.ccimage` and are re-exported. The input
checks and spectra are in ``_regprep``, the matrix-multiply DFT in
``_regdft``, the peak's PSR and FWHM in ``_regpeak``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as _fft

from ._regdft import evaluate_region, stages
from ._regpeak import PSR_EXCLUDE, peak_fwhm, peak_psr  # noqa: F401 (PSR_EXCLUDE: part of this module's API)
from ._regprep import (
    FLAT_RTOL,
    as_images,
    check_options,
    check_pair,
    fft_workers,
    flat_images,
    one_blas_thread,
    roi_slices,
    spectra,
)
from .ccimage import CCWidth, cc_fwhm, cross_correlation

__all__ = ["FLAT_RTOL", "CCWidth", "Registration", "cc_fwhm", "cross_correlation", "is_blank", "register"]

#: Pixels (images x ny x nx) processed per batch of a stack (at least
#: _BATCH_MIN images). 2^19 measured fastest at 96^2 and 230^2 (stacks of 96,
#: 2-core EPYC): 1.55x faster per pair than 2^16 at 96^2, where the Python and
#: BLAS-call overhead of each batch dominates; beyond 2^20 the batch leaves the
#: caches and 230^2 slows down.
_BATCH_PIXELS = 1 << 19
_BATCH_MIN = 4


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register`.

    For a pair of images the fields are a (2,) array and scalars; for a
    stack of ``n`` registrations they gain a leading axis of length ``n``.

    Attributes
    ----------
    shift : (2,) or (n, 2) float array
        (dy, dx) in pixels that registers ``moving`` onto ``reference``
        (scikit-image's convention: ``scipy.ndimage.shift(moving, shift)``
        overlays ``reference``), to within 1/upsample px.
    peak : float or (n,) array
        Height of the CC peak. For ``normalization=None`` it is the
        correlation coefficient of the two (mean-subtracted, windowed)
        images at the best shift, 1 for identical images, near 0 for
        unrelated ones; for ``"phase"`` the phase-correlation peak, 1 for a
        pure translation (integer shift), smaller with noise.
    fwhm : (2,) or (n, 2) float array
        Full width at half maximum (y, x) of the CC peak, px, measured on
        the band-limited CC through the sub-pixel peak; NaN where the CC
        does not fall below half the peak within half the image.
    psr : float or (n,) array
        Peak-to-sidelobe ratio: (peak - mean) / std of the pixel-grid CC
        outside an 11 x 11 px box around the peak. Above ~10 the peak is
        well above the noise; below ~5 distrust the shift.
    valid : bool or (n,) bool array
        False where there is nothing to register (see ``reason``): then
        ``shift``, ``fwhm`` and ``psr`` are NaN and ``peak`` 0, never a number
        that looks like a measurement.
    reason : str or tuple of str
        Why a registration is not valid ("" where it is): "reference has no
        signal", "moving has no signal" (constant in the registered region:
        zeros, a closed shutter, a beam dump), "no shift correlates the
        images" (the CC is nowhere positive).
    """

    shift: np.ndarray
    peak: np.ndarray | float
    fwhm: np.ndarray
    psr: np.ndarray | float
    valid: np.ndarray | bool = True
    reason: tuple | str = ""


# ---------------------------------------------------------- core pass ---
def _batch_register(Rf, Mf, ny, nx, upsample, normalization, energy, workers, reuse_mf):
    """Register one batch of spectra (broadcast over the leading axis).

    ``Mf`` is overwritten by the product spectrum unless ``reuse_mf``.
    """
    if reuse_mf or Mf.shape[0] < Rf.shape[0]:
        P = Rf * np.conj(Mf)
    else:
        P = np.conjugate(Mf, out=Mf)  # our temporary: no new array
        P *= Rf
    k = P.shape[0]
    rows = np.arange(k)
    P[:, 0, 0] = 0  # correlate mean-free images even after a window
    if normalization == "phase":
        # unit modulus, except below float32 rounding of the largest term (scaled, not amplified to 1)
        mag = np.abs(P)
        np.maximum(mag, np.finfo(np.float32).eps * mag.max(axis=(1, 2), keepdims=True), out=mag)
        np.reciprocal(mag, out=mag)
        parts = P.view(np.float32)
        parts.shape = (*P.shape, 2)  # (re, im) pairs in place: raises rather than copies
        parts *= mag[..., None]  # real products, cheaper than complex division
    cc = _fft.irfft2(P, s=(ny, nx), workers=fft_workers(workers, k))
    flat = cc.reshape(k, -1)
    idx = flat.argmax(axis=1)
    py, px = np.divmod(idx, nx)
    peak = flat[rows, idx].astype(float)
    sy = (py - ny * (py > ny // 2)).astype(float)
    sx = (px - nx * (px > nx // 2)).astype(float)
    row = None
    for u, h in stages(upsample, ny * nx):
        step = 1.0 / u
        region, T = evaluate_region(P, np.rint(sy * u) * step, np.rint(sx * u) * step, step, h, ny, nx)
        region = region.reshape(k, -1)
        j = region.argmax(axis=1)
        jy, jx = np.divmod(j, 2 * h + 1)
        sy = np.rint(sy * u) * step + (jy - h) * step
        sx = np.rint(sx * u) * step + (jx - h) * step
        peak = region[rows, j] / (ny * nx)
        row = T[rows, jy]  # the 1D spectrum of CC(sy, x)
    fwhm = peak_fwhm(P, sy, sx, peak, ny, nx, row)
    psr = peak_psr(flat, py, px, peak, ny, nx)
    if normalization is None:
        norm = peak / np.where(energy > 0, energy, np.inf)
    else:
        norm = peak
    return np.stack([sy, sx], axis=1), norm, fwhm, psr


def _validity(shift, peak, fwhm, psr, flat_ref, flat_mov):
    """NaN (and peak 0) where nothing was registered; the (valid, reason) of every registration."""
    no_peak = ~(peak > 0)
    invalid = flat_ref | flat_mov | no_peak
    reason = np.where(flat_ref & flat_mov, "reference and moving have no signal (constant in the registered region)",
                      np.where(flat_ref, "reference has no signal (constant in the registered region)",
                               np.where(flat_mov, "moving has no signal (constant in the registered region)",
                                        np.where(no_peak, "no shift correlates the images (the cross-correlation "
                                                          "is nowhere positive)", ""))))
    if invalid.any():
        shift, fwhm = shift.copy(), fwhm.copy()
        shift[invalid], fwhm[invalid] = np.nan, np.nan
        peak, psr = np.where(invalid, 0.0, peak), np.where(invalid, np.nan, psr)
    return shift, peak, fwhm, psr, ~invalid, reason


# ------------------------------------------------------------- public ---
def is_blank(images, *, roi=None):
    """Whether an image, or each image of a stack, holds no signal to register.

    An image is blank when it is constant in ``roi`` (the whole image by
    default) to within ``FLAT_RTOL`` of its largest magnitude: all zeros from
    a closed shutter or a beam dump, a constant fill. :func:`register` gives
    such images no shift (NaN, ``valid`` False); this tells them apart
    beforehand, e.g. to leave them out of an alignment.

    Parameters
    ----------
    images : (ny, nx) or (n, ny, nx) array
    roi : as in :func:`register`

    Returns
    -------
    bool, or (n,) bool array for a stack.
    """
    a, n = as_images("images", images)
    flat = flat_images(a, roi_slices(roi, a.shape[-2:]))
    return bool(flat[0]) if n is None else np.broadcast_to(flat, (n,)).copy()


def register(
    reference,
    moving,
    *,
    upsample: int = 20,
    normalization: str | None = None,
    roi=None,
    window: str | None = None,
    workers: int | None = None,
) -> Registration:
    """Sub-pixel translation between images by upsampled-DFT cross-correlation.

    Parameters
    ----------
    reference : (ny, nx) or (n, ny, nx) array
        Reference image, or one reference per moving image (pairwise).
        Real-valued (counts or floats); never modified.
    moving : (ny, nx) or (n, ny, nx) array
        Image(s) to register onto ``reference``; never modified. A stack
        against a 2D reference reuses the reference's FFT.
        ``np.broadcast_to``-ed (read-only, zero-stride) inputs are fine.
    upsample : int, >= 1
        Shifts are found on a grid 1/``upsample`` px fine (1: whole pixels).
        20 suits alignment; 100 costs little more.
    normalization : {None, "phase"}
        ``None`` (default): plain cross-correlation of the mean-subtracted
        images. ``"phase"``: phase correlation (the product spectrum divided
        by its modulus). See Notes.
    roi : (slice_y, slice_x) or (ny, nx) bool array, optional
        Register only this region of every image; a mask is replaced by its
        bounding box. At least 2 x 2 px.
    window : {None, "hann", "tukey"}
        Taper applied after subtracting the means. ``None`` (default) keeps
        every pixel's weight (best when the field's borders are background,
        as around a whole cell); ``"tukey"`` (25 % cosine edges) or
        ``"hann"`` suppress the false zero-shift peak that the wrap-around
        edges of a region cut out of a larger specimen can produce.
    workers : int, optional
        Threads for ``scipy.fft``, -1 for all CPUs. Default: all CPUs for
        stacks, one for a pair (threads only slow a single small FFT).

    Returns
    -------
    Registration
        ``shift`` (dy, dx) registering ``moving`` onto ``reference``, plus
        the peak height, FWHM and peak-to-sidelobe ratio; (n, ...) for stacks.
        Where there is nothing to register (an image without signal, or no
        shift at which the images correlate) ``valid`` is False, ``reason``
        says why, and the shift is NaN: see Notes.

    Raises
    ------
    ValueError
        Shapes that differ, NaN or infinite pixels, an empty ``roi``,
        ``upsample`` < 1 or not an integer, an unknown ``normalization`` or
        ``window``.

    See Also
    --------
    cross_correlation : the CC image itself.
    skimage.registration.phase_cross_correlation : the same sign convention.

    Notes
    -----
    The CC is computed by real FFTs on the pixel grid; its maximum (the
    largest value, not the largest modulus: an anticorrelation is not a
    match) is refined by evaluating the band-limited CC with a
    matrix-multiply DFT [1]_ on successively finer grids around the
    previous maximum: +-0.75 px for the first, +-0.75 step of the previous
    grid after that, ending on the 1/``upsample`` grid (e.g. 1/4.6, 1/21.5,
    1/100 px with 9 x 9 points each for a 230 x 230 image; 1/10 and 1/100
    with 17 x 17 for small ones). This finds the maximum that one
    (1.5 ``upsample``)^2-point region would, at a fraction of the cost.
    Shifts are modulo the image size: a shift beyond half the field is
    reported as its negative alias. ``fwhm`` samples the band-limited CC
    along y and x through the sub-pixel peak; ``psr`` follows [5]_.

    No signal, no shift: an image constant in the registered region
    (peak-to-peak at most ``FLAT_RTOL`` of its largest magnitude: all zeros
    from a closed shutter or a beam dump) has no cross-correlation peak, and
    neither has a pair whose CC is nowhere positive; their shift is NaN
    (``valid`` False) instead of the arbitrary grid position the maximum of
    a flat CC would give (``[-1.1, -1.1]`` at upsample 20). Two images that
    have signal but no feature in common (noise against a specimen) are not
    told apart here: alone, their peak looks like that of a true pair of
    noisy maps (PSR 2.5-5.4 against 2.8-7 for 32 x 32 px maps, correlation
    0.1-0.15 against 0.1-0.2 for few-count Zn). Among many registrations it
    stands out: :func:`~xfct_bluesky.analysis.pairwise.pairwise_alignment`
    leaves out a projection whose registrations peak far below the others'
    (0.10 against 0.92 for noise among 3 ms DPC maps).

    Stacks are processed in batches of a few images (they stay in the CPU
    caches), with the DFT kernels cached, and give exactly the results of a
    loop over pairs. The BLAS is held to one thread during the call when
    threadpoolctl is installed: the matrices are small, and OpenBLAS's
    spinning threads make them many times slower when the other cores are
    busy (the limit is process-wide while it lasts).

    Choosing ``normalization``: phase correlation [2]_ whitens the spectrum,
    so every spatial frequency votes equally. That sharpens the peak and
    resists slowly varying illumination, but at low counts most frequencies
    hold only Poisson noise, which then outvotes the signal: at 0.5
    counts/px phase correlation's RMS error can reach tens of pixels (10.6
    px against 0.8 px for the plain CC on a smooth 128 x 128 texture in our
    tests), as with scikit-image's default. The plain CC weights each frequency by
    its power, which is nearly the matched filter for shot noise; use it
    for fluorescence and low-dose maps (the normal case here) and for DPC.
    Try ``"phase"`` only for high-SNR images with different backgrounds.

    The DPC alignment paper [3]_ registered 96 x 96 sub-regions with 6x
    upsampling; a DPC pair at 3 ms gives a CC peak of about 1.5 px FWHM,
    Zn fluorescence about 25 px. Dose fractionation [4]_ is what makes the
    per-projection counts this low.

    References
    ----------
    .. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient
           subpixel image registration algorithms," Opt. Lett. 33, 156-158
           (2008). :DOI:`10.1364/OL.33.000156`
    .. [2] C. D. Kuglin and D. C. Hines, "The phase correlation image
           alignment method," Proc. IEEE Int. Conf. Cybernetics and Society,
           163-165 (1975).
    .. [3] Y. P. Hong, S.-C. Gleber, T. V. O'Halloran, E. L. Que, R. Bleher,
           S. Vogt, T. K. Woodruff and C. Jacobsen, "Alignment of low-dose
           X-ray fluorescence tomography images using differential phase
           contrast," J. Synchrotron Rad. 21, 229-234 (2014).
           :DOI:`10.1107/S1600577513029512`
    .. [4] R. Hegerl and W. Hoppe, "Influence of electron noise on
           three-dimensional image reconstruction," Z. Naturforsch. 31a,
           1717-1721 (1976)  (the dose fractionation theorem).
    .. [5] D. S. Bolme, J. R. Beveridge, B. A. Draper and Y. M. Lui, "Visual
           object tracking using adaptive correlation filters," CVPR 2010,
           2544-2550 (peak-to-sidelobe ratio).
           :DOI:`10.1109/CVPR.2010.5539960`

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> ref = ndimage.gaussian_filter(rng.random((64, 64)), 2, mode="wrap")
    >>> spectrum = ndimage.fourier_shift(np.fft.fft2(ref), (1.5, -2.25))
    >>> mov = np.fft.ifft2(spectrum).real  # ref moved by (+1.5, -2.25) px
    >>> register(ref, mov, upsample=20).shift
    array([-1.5 ,  2.25])
    """
    upsample, workers = check_options(upsample, normalization, window, workers)
    ref, mov, sl, n_ref, n_mov = check_pair(reference, moving, roi)
    with one_blas_thread():
        return _register(ref, mov, sl, n_ref, n_mov, upsample, normalization, window, workers)


def _register(ref, mov, sl, n_ref, n_mov, upsample, normalization, window, workers) -> Registration:
    """:func:`register` after the checks."""
    pair = n_ref is None and n_mov is None
    n = 1 if pair else max(m for m in (n_ref, n_mov) if m is not None)
    ny, nx = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    single_ref = ref.ndim == 2 or ref.shape[0] == 1
    single_mov = mov.ndim == 2 or mov.shape[0] == 1

    if single_ref and single_mov:  # one FFT call for both
        F, E, Z = spectra([("reference", ref), ("moving", mov)], sl, window, workers)
        (Rf0, Mf0), (Er0, Em0), (Zr0, Zm0) = (F[:1], F[1:]), (E[:1], E[1:]), (Z[:1], Z[1:])
    elif single_ref:
        Rf0, Er0, Zr0 = spectra([("reference", ref)], sl, window, workers)
    elif single_mov:
        Mf0, Em0, Zm0 = spectra([("moving", mov)], sl, window, workers)
    batch = max(_BATCH_MIN, _BATCH_PIXELS // (ny * nx))
    out = []
    for b0 in range(0, 1 if single_ref and single_mov else n, batch):
        b1 = min(n, b0 + batch)
        Rf, Er, Zr = (Rf0, Er0, Zr0) if single_ref else spectra([("reference", ref[b0:b1])], sl, window, workers)
        Mf, Em, Zm = (Mf0, Em0, Zm0) if single_mov else spectra([("moving", mov[b0:b1])], sl, window, workers)
        energy = np.sqrt(Er * Em)
        reuse = single_mov and not single_ref
        res = _batch_register(Rf, Mf, ny, nx, upsample, normalization, energy, workers, reuse)
        k = len(res[1])
        out.append(_validity(*res, np.broadcast_to(Zr, k), np.broadcast_to(Zm, k)))
    if n == 0:
        shift, peak, fwhm, psr = np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), np.zeros(0)
        valid, reason = np.zeros(0, bool), np.zeros(0, str)
    else:
        shift, peak, fwhm, psr, valid, reason = (np.concatenate(parts) for parts in zip(*out))
        if single_ref and single_mov and n > 1:
            shift, peak, fwhm, psr, valid, reason = (np.repeat(x, n, axis=0)
                                                     for x in (shift, peak, fwhm, psr, valid, reason))
    if pair:
        return Registration(shift[0], float(peak[0]), fwhm[0], float(psr[0]), bool(valid[0]), str(reason[0]))
    return Registration(shift, peak, fwhm, psr, valid, tuple(str(r) for r in reason))
