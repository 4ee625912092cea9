"""Resolution measured the way the field does: Fourier ring/shell correlation, and closeness to a reference.

:func:`fourier_ring_correlation` (2D) and :func:`fourier_shell_correlation`
(3D) correlate two independent measurements of the same object (two noise
realisations, the even and the odd angles of a tomography) ring by ring in
Fourier space and give the half-bit (van Heel & Schatz 2005) and 1/7
threshold curves; :func:`resolution` reads off where the correlation first
falls below a threshold, or says why it cannot. :func:`compare_to_reference`
gives NRMSE and SSIM against a known object after the best scale and rigid
shift (the package's own registration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as _fft
from scipy import ndimage

from ..validate import integer, one_of, positive, real
from .metrics import nrmse as _nrmse
from .metrics import ssim as _ssim
from .registration import register as _register

__all__ = [
    "Comparison",
    "FourierCorrelation",
    "Resolution",
    "compare_to_reference",
    "fourier_ring_correlation",
    "fourier_shell_correlation",
    "half_bit_threshold",
    "resolution",
]

WINDOWS = ("tukey", "hann", None)
CRITERIA = ("half-bit", "1/7")
#: Fraction of each side the default Tukey window tapers (1/8 at each end), as in FIRE (Nieuwenhuizen et al. 2013).
TUKEY_ALPHA = 0.25
#: Smallest side an image or volume may have: 4 rings are the least a crossing can be read from.
_MIN_SIDE = 8
#: The smallest side SSIM's 7-pixel window needs.
_SSIM_SIDE = 7


# ------------------------------------------------------------ results ---
@dataclass(frozen=True)
class FourierCorrelation:
    """Result of :func:`fourier_ring_correlation` / :func:`fourier_shell_correlation`: one entry per ring.

    Attributes
    ----------
    correlation : (rings,) float array
        The normalised cross-correlation of the two spectra over each ring
        (shell), -1..1; 0 where either image has no power in the ring.
    frequency : (rings,) float array
        Mean spatial frequency of the ring's Fourier samples, cycles per
        pixel (0.5 is Nyquist).
    frequency_per_m : (rings,) float array or None
        ``frequency / pixel_size``, cycles per metre, when ``pixel_size`` was given.
    n_samples : (rings,) int array
        Fourier samples in the ring (both halves of the Hermitian spectrum),
        the ``n`` of the half-bit threshold.
    half_bit : (rings,) float array
        The half-bit threshold at each ring (:func:`half_bit_threshold`).
    one_seventh : (rings,) float array
        The fixed 1/7 threshold.
    pixel_size : float or None
        Metres per pixel, as given.
    window : str or None
        The apodisation applied before the FFT.
    """

    correlation: np.ndarray
    frequency: np.ndarray
    frequency_per_m: np.ndarray | None
    n_samples: np.ndarray
    half_bit: np.ndarray
    one_seventh: np.ndarray
    pixel_size: float | None
    window: str | None


@dataclass(frozen=True)
class Resolution:
    """Result of :func:`resolution`.

    Attributes
    ----------
    status : {"crossed", "at Nyquist", "no signal"}
        "crossed": the correlation falls below the threshold, at ``frequency``.
        "at Nyquist": it never does; the images agree up to the highest
        frequency sampled, so the resolution is limited by the pixel (at
        best 2 px, the Nyquist period) and not measured here.
        "no signal": it is below the threshold already at the first ring;
        the two images share nothing above the noise.
    valid : bool
        True only for "crossed": then the numbers below are a measurement,
        otherwise they are NaN (``None`` per metre) and ``reason`` says why.
    frequency : float
        First crossing, cycles per pixel, linearly interpolated between the
        rings on either side of it.
    resolution_px : float
        ``1 / frequency``: the period (pixels) of the finest resolved detail.
    frequency_per_m, resolution_m : float or None
        The same per metre and in metres, when ``pixel_size`` was given.
    criterion : str
        The threshold used ("half-bit" or "1/7").
    reason : str
        Why there is no measurement ("" when ``valid``).
    """

    status: str
    valid: bool
    frequency: float
    resolution_px: float
    frequency_per_m: float | None
    resolution_m: float | None
    criterion: str
    reason: str = ""


@dataclass(frozen=True)
class Comparison:
    """Result of :func:`compare_to_reference`.

    Attributes
    ----------
    nrmse : float
        RMS of ``scale * shifted image - reference`` over the RMS of the
        reference, in the overlap (0 for a perfect match).
    ssim : float
        Structural similarity (scikit-image, data range of the reference),
        in the overlap (1 for a perfect match).
    scale : float
        The least-squares factor applied to the (shifted) image.
    shift : (ndim,) float array
        The shift (px per axis) applied to the image to register it onto the
        reference (``scipy.ndimage.shift(image, shift)`` overlays it); zeros
        when ``register`` was False.
    overlap : tuple of slice
        The region compared: the field less the pixels the shift wrapped in.
    """

    nrmse: float
    ssim: float
    scale: float
    shift: np.ndarray
    overlap: tuple


# ---------------------------------------------------------- threshold ---
def half_bit_threshold(n_samples) -> np.ndarray:
    """The half-bit threshold of van Heel & Schatz (2005) for rings of ``n_samples`` Fourier samples.

    ``T(n) = (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))``:
    the correlation at which a ring carries half a bit of information per
    sample, with a 3-sigma allowance for rings of few samples. 1 at ``n = 1``,
    0.1716 for large rings (a signal-to-noise ratio of 0.2071).

    Parameters
    ----------
    n_samples : array_like of numbers >= 1

    Returns
    -------
    float array of the shape of ``n_samples``.
    """
    n = real("n_samples", n_samples).astype(np.float64)
    if n.size and not (np.isfinite(n).all() and n.min() >= 1):
        raise ValueError(f"n_samples hold values below 1 or not finite (min {np.nanmin(n):g}); allowed: >= 1 "
                         "Fourier samples per ring")
    root = np.sqrt(n)
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


# ---------------------------------------------------------- FRC / FSC ---
def fourier_ring_correlation(a, b, *, pixel_size=None, rings=None, window="tukey") -> FourierCorrelation:
    """Fourier ring correlation of two 2D images: their agreement at each spatial frequency.

    Parameters
    ----------
    a, b : (ny, nx) array_like
        Two independent measurements of the same object (two noise
        realisations; reconstructions from the even and the odd angles),
        real, finite, the same shape, each side >= 8 px; never modified.
    pixel_size : float, optional
        Metres per pixel (> 0); adds frequencies per metre, and a
        resolution in metres to :func:`resolution`.
    rings : int, optional
        Rings between 0 and Nyquist (0.5 cycles/px), each ``0.5 / rings``
        wide; 2..``min(shape) // 2``. Default ``min(shape) // 2``: one
        Fourier pixel of the shorter axis per ring.
    window : {"tukey", "hann", None}
        Apodisation before the FFT; see Notes.

    Returns
    -------
    FourierCorrelation
        Correlation, frequencies, samples and the two thresholds per ring;
        pass it to :func:`resolution`.

    Raises
    ------
    ValueError
        Images that are not 2D (use :func:`fourier_shell_correlation` for
        volumes), of different shapes, smaller than 8 px a side, complex or
        not finite; a bad ``pixel_size``, ``rings`` or ``window``.

    See Also
    --------
    fourier_shell_correlation : the same for volumes.
    resolution : where the correlation crosses a threshold.

    Notes
    -----
    For each ring ``r`` of Fourier samples ``k`` with ``|k|`` within half a
    ring width of ``r``'s centre,
    ``FRC(r) = sum Re(A(k) B*(k)) / sqrt(sum |A(k)|^2 sum |B(k)|^2)``
    [1]_ [2]_. For ``a = s + n1``, ``b = s + n2`` with independent noise,
    its expectation is ``SNR / (1 + SNR)``, ``SNR`` being the ring's signal
    over noise power. The mean of each image (window-weighted, so that the
    window's own spectrum leaves with it) is subtracted, and the DC term is
    left out: the mean of two noise images would otherwise correlate
    perfectly. Frequencies beyond Nyquist along the diagonal (the corners of
    the spectrum) are left out, as usual.

    Choosing ``window``: the FFT treats the field as periodic, so a
    specimen cut by the field's edges adds a cross of edge power that
    correlates between the two images at every frequency and inflates the
    FRC. A taper to zero at the borders removes it. The default is the
    Tukey window of FIRE [3]_ (cosine edges over 1/8 of each side, flat in
    between): it keeps most of the field at full weight. A window also
    correlates neighbouring Fourier samples, so fewer of a ring's samples
    are independent than the threshold's ``n`` assumes: by the factor
    ``N sum w^4 / (sum w^2)^2`` per axis, 1.16 for this Tukey window but 1.93
    for a Hann window over the whole field (3.7 in 2D), which makes noise
    cross a half-bit threshold more often. Use ``"hann"`` (as PyNX's FSC
    does) only when the specimen fills the field to its edges and the
    edge cross dominates; use ``None`` when the images are periodic (a whole
    cell in background, a simulation) -- then every Fourier sample is
    independent and the thresholds hold exactly.

    References
    ----------
    .. [1] W. O. Saxton and W. Baumeister, "The correlation averaging of a
           regularly arranged bacterial cell envelope protein," J. Microsc.
           127, 127-138 (1982). :DOI:`10.1111/j.1365-2818.1982.tb00405.x`
    .. [2] M. van Heel and M. Schatz, "Fourier shell correlation threshold
           criteria," J. Struct. Biol. 151, 250-262 (2005).
           :DOI:`10.1016/j.jsb.2005.05.009`
    .. [3] R. P. J. Nieuwenhuizen, K. A. Lidke, M. Bates, D. L. Puig,
           D. Grünwald, S. Stallinga and B. Rieger, "Measuring image
           resolution in optical nanoscopy," Nat. Methods 10, 557-562
           (2013). :DOI:`10.1038/nmeth.2448`

    Examples
    --------
    A texture blurred by a Gaussian of 1.5 px at 100 counts/px, imaged
    twice; the analytic half-bit crossing is at 4.51 px:

    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> obj = 100 * (1 + ndimage.gaussian_filter(rng.normal(0, 0.6, (64, 64)), 1.5, mode="wrap"))
    >>> frc = fourier_ring_correlation(rng.poisson(obj), rng.poisson(obj), pixel_size=300e-9, window=None)
    >>> res = resolution(frc)
    >>> res.status, round(res.resolution_px, 1)
    ('crossed', 4.5)
    """
    return _correlate("fourier_ring_correlation", 2, a, b, pixel_size, rings, window)


def fourier_shell_correlation(a, b, *, pixel_size=None, rings=None, window="tukey") -> FourierCorrelation:
    """Fourier shell correlation of two 3D volumes: :func:`fourier_ring_correlation` with shells for rings.

    Parameters
    ----------
    a, b : (nz, ny, nx) array_like
        Two independent reconstructions of the same object (e.g. from the
        even and the odd angles), real, finite, the same shape, each side
        >= 8 voxels; never modified.
    pixel_size : float, optional
        Metres per voxel (> 0).
    rings : int, optional
        Shells between 0 and Nyquist, 2..``min(shape) // 2`` (default).
    window : {"tukey", "hann", None}
        Apodisation before the FFT (see :func:`fourier_ring_correlation`).

    Returns
    -------
    FourierCorrelation
        One entry per shell; pass it to :func:`resolution`.

    See Also
    --------
    fourier_ring_correlation : definitions, Notes and References.
    """
    return _correlate("fourier_shell_correlation", 3, a, b, pixel_size, rings, window)


def _window(kind, shape) -> np.ndarray | None:
    """The separable apodisation window of ``shape``, or None."""
    if kind is None:
        return None
    # Imported here: scipy.signal takes 1.2 s to import (its docstrings parsed), and every process that imports
    # xfct_bluesky.analysis (the simulator's DPC, each command) would pay it for a window it may never draw.
    from scipy.signal import windows as _windows

    w = np.ones(shape)
    for axis, n in enumerate(shape):
        one = _windows.tukey(n, TUKEY_ALPHA) if kind == "tukey" else _windows.hann(n + 2)[1:-1]
        w = w * one.reshape([n if i == axis else 1 for i in range(len(shape))])
    return w


def _check_images(func, ndim, a, b):
    """``a``, ``b`` as float64 arrays of ``ndim`` dimensions, the same shape, finite, or ValueError."""
    a, b = real("a", a), real("b", b)
    other = {2: "fourier_shell_correlation (volumes)", 3: "fourier_ring_correlation (images)"}[ndim]
    for name, x in (("a", a), ("b", b)):
        if x.ndim != ndim:
            raise ValueError(f"{name} has shape {x.shape}; {func} takes {ndim}D arrays. Use {other}"
                             if x.ndim in (2, 3) else
                             f"{name} has shape {x.shape}; {func} takes {ndim}D arrays")
    if a.shape != b.shape:
        raise ValueError(f"a has shape {a.shape} and b {b.shape}; give arrays of the same shape (crop them)")
    if min(a.shape) < _MIN_SIDE:
        raise ValueError(f"the arrays are {a.shape}; allowed: at least {_MIN_SIDE} px a side (4 rings)")
    for name, x in (("a", a), ("b", b)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} holds NaN/inf values; allowed: finite values. Replace them (e.g. by 0 "
                             "outside the reconstruction circle)")
    return a.astype(np.float64), b.astype(np.float64)


def _correlate(func, ndim, a, b, pixel_size, rings, window) -> FourierCorrelation:
    a, b = _check_images(func, ndim, a, b)
    shape = a.shape
    one_of("window", window, WINDOWS, fix="Use 'tukey' (default), 'hann' or None (periodic images).")
    n_max = min(shape) // 2
    rings = n_max if rings is None else integer("rings", rings, low=2, high=n_max,
                                                 fix=f"Give at most min(shape) // 2 = {n_max} rings.")
    if pixel_size is not None:
        pixel_size = positive("pixel_size", pixel_size, unit=" m", fix="Give metres per pixel, e.g. 300e-9.")
    w = _window(window, shape)
    spectra = []
    for x in (a, b):
        if w is None:
            x = x - x.mean()
        else:
            x = (x - (x * w).sum() / w.sum()) * w
        spectra.append(_fft.rfftn(x))
    fa, fb = spectra
    # |k| in cycles per pixel on the half spectrum; the last axis holds only k >= 0
    freqs = [_fft.fftfreq(n) for n in shape[:-1]] + [_fft.rfftfreq(shape[-1])]
    k2 = np.zeros(fa.shape)
    for axis, f in enumerate(freqs):
        k2 = k2 + (f ** 2).reshape([f.size if i == axis else 1 for i in range(ndim)])
    radius = np.sqrt(k2)
    # samples off the last axis' 0 and Nyquist planes stand for themselves and their conjugate
    twice = np.full(fa.shape[-1], 2.0)
    twice[0] = 1.0
    if shape[-1] % 2 == 0:
        twice[-1] = 1.0
    weight = np.broadcast_to(twice, fa.shape)
    dk = 0.5 / rings
    index = np.rint(radius / dk).astype(np.intp).ravel()
    keep = (index >= 1) & (index <= rings)
    index, wt = index[keep] - 1, weight.ravel()[keep]

    def ring_sum(values):
        return np.bincount(index, weights=wt * values.ravel()[keep], minlength=rings)

    cross = ring_sum((fa * np.conj(fb)).real)
    power_a, power_b = ring_sum(np.abs(fa) ** 2), ring_sum(np.abs(fb) ** 2)
    n = np.bincount(index, weights=wt, minlength=rings)
    frequency = ring_sum(radius) / n
    denom = np.sqrt(power_a * power_b)
    correlation = np.divide(cross, denom, out=np.zeros(rings), where=denom > 0)
    n_samples = np.rint(n).astype(np.int64)
    return FourierCorrelation(
        correlation=np.clip(correlation, -1.0, 1.0),
        frequency=frequency,
        frequency_per_m=None if pixel_size is None else frequency / pixel_size,
        n_samples=n_samples,
        half_bit=half_bit_threshold(n_samples),
        one_seventh=np.full(rings, 1.0 / 7.0),
        pixel_size=pixel_size,
        window=window,
    )


# --------------------------------------------------------- resolution ---
def resolution(frc_result: FourierCorrelation, criterion: str = "half-bit") -> Resolution:
    """The first frequency at which a Fourier ring/shell correlation falls below a threshold.

    Parameters
    ----------
    frc_result : FourierCorrelation
        From :func:`fourier_ring_correlation` or :func:`fourier_shell_correlation`.
    criterion : {"half-bit", "1/7"}
        ``"half-bit"`` (default): van Heel & Schatz's curve, right for two
        independent half-datasets whichever their size. ``"1/7"``: the
        fixed threshold of Rosenthal & Henderson (2003), which estimates the
        resolution of the *combined* data from two half-datasets.

    Returns
    -------
    Resolution
        ``status`` "crossed" with the frequency and the resolution (px, and
        metres when the pixel size is known); or "at Nyquist" (never falls
        below: finer than the pixels can tell) or "no signal" (below the
        threshold from the first ring), with NaN numbers and a ``reason``.

    Raises
    ------
    TypeError
        ``frc_result`` is not a FourierCorrelation.
    ValueError
        An unknown ``criterion``.

    Notes
    -----
    The crossing is the first ring whose correlation is below the
    threshold, the frequency found by linear interpolation of
    ``correlation - threshold`` between it and the ring before. Noisy curves
    can dip below and come back; the first crossing is the field's
    convention (it does not pick the most favourable one).

    The half-bit curve is about 1.6 standard deviations of pure noise at
    the first ring (8 samples in 2D), so independent noise is not always
    told apart: in our tests 35 of 40 pairs of 64 x 64 Poisson images gave
    "no signal", the other 5 a "crossing" within the first rings (a
    resolution coarser than a quarter of the field). Distrust a crossing
    in the first few rings.

    References
    ----------
    .. [1] M. van Heel and M. Schatz, J. Struct. Biol. 151, 250-262 (2005).
           :DOI:`10.1016/j.jsb.2005.05.009`
    .. [2] P. B. Rosenthal and R. Henderson, "Optimal determination of
           particle orientation, absolute hand, and contrast loss in
           single-particle electron cryomicroscopy," J. Mol. Biol. 333,
           721-745 (2003). :DOI:`10.1016/j.jmb.2003.07.013`
    """
    if not isinstance(frc_result, FourierCorrelation):
        raise TypeError(f"frc_result is a {type(frc_result).__name__}; give the FourierCorrelation that "
                         "fourier_ring_correlation or fourier_shell_correlation returns")
    criterion = one_of("criterion", criterion, CRITERIA, fix="'half-bit' for two half-datasets (the default).")
    threshold = frc_result.half_bit if criterion == "half-bit" else frc_result.one_seventh
    f = frc_result.frequency
    excess = frc_result.correlation - threshold
    below = np.flatnonzero(excess < 0)
    px = frc_result.pixel_size

    def invalid(status, reason):
        return Resolution(status, False, math.nan, math.nan, None, None, criterion, reason)

    if below.size == 0:
        bound = f" ({2 * px:g} m)" if px is not None else ""
        return invalid("at Nyquist", f"the correlation stays above the {criterion} threshold up to "
                       f"{f[-1]:.3g} cycles/px: the images agree as finely as the pixels sample them, so the "
                       f"resolution is at best the Nyquist period, 2 px{bound}, and not measured; sample finer")
    i = int(below[0])
    if i == 0:
        return invalid("no signal", f"the correlation is below the {criterion} threshold already at the first "
                       f"ring ({frc_result.correlation[0]:.3g} < {threshold[0]:.3g} at {f[0]:.3g} cycles/px): the "
                       "two images share nothing above the noise (independent noise, or misregistered)")
    t = excess[i - 1] / (excess[i - 1] - excess[i])
    freq = float(f[i - 1] + t * (f[i] - f[i - 1]))
    return Resolution(
        status="crossed",
        valid=True,
        frequency=freq,
        resolution_px=1.0 / freq,
        frequency_per_m=None if px is None else freq / px,
        resolution_m=None if px is None else px / freq,
        criterion=criterion,
    )


# ---------------------------------------------------------- reference ---
def compare_to_reference(image, reference, *, register: bool = True, upsample: int = 100) -> Comparison:
    """NRMSE and SSIM of an image (or volume) against a known reference, after the best scale and shift.

    Parameters
    ----------
    image : (ny, nx) or (nz, ny, nx) array_like
        The measurement, e.g. a reconstruction in counts; never modified.
    reference : array_like
        The known object (a phantom), the same shape; not all zero.
    register : bool
        Find and apply the rigid shift that best overlays ``image`` on
        ``reference`` (default); False compares them as they lie.
    upsample : int
        The shift is found to 1/``upsample`` px (>= 1).

    Returns
    -------
    Comparison
        NRMSE, SSIM, the scale and the shift found, and the region compared.

    Raises
    ------
    ValueError
        Arrays that are not 2D or 3D, of different shapes, not finite; an
        image or reference without signal; a registration that found no
        shift (the reason is given).

    Notes
    -----
    The shift comes from the package's registration
    (:func:`~xfct_bluesky.analysis.registration.register`: the whole-pixel
    cross-correlation peak, refined by upsampled DFT); for a volume, from
    registering the sums along z (giving y, x) and along y (giving z). It
    is applied in Fourier space, exact for band-limited data, which wraps
    the field around: the pixels that wrapped in are left out of the
    comparison (``overlap``). The scale is then the least-squares factor
    ``sum(i r) / sum(i i)`` over the overlap, which takes a
    reconstruction in counts onto a phantom in its own units. SSIM is
    scikit-image's (imported only here; in the ``test`` and ``bench``
    extras), over the whole array, 3D for a volume, with the reference's
    data range.
    """
    img, ref = real("image", image), real("reference", reference)
    if img.ndim not in (2, 3):
        raise ValueError(f"image has shape {img.shape}; allowed: a 2D image or a 3D volume")
    if img.shape != ref.shape:
        raise ValueError(f"image has shape {img.shape} and reference {ref.shape}; give arrays of the same shape")
    for name, x in (("image", img), ("reference", ref)):
        if not np.isfinite(x).all():
            raise ValueError(f"{name} holds NaN/inf values; allowed: finite values")
    upsample = integer("upsample", upsample, low=1, fix="Give e.g. 100 (shifts to 0.01 px).")
    img, ref = img.astype(np.float64), ref.astype(np.float64)
    if not np.any(ref):
        raise ValueError("reference is all zero: nothing to compare with (NRMSE is undefined)")
    shift = np.zeros(img.ndim)
    if register:
        shift = _rigid_shift(img, ref, upsample)
        img = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(img), shift)).real
    overlap = tuple(slice(math.ceil(d), n) if d > 0 else slice(0, n - math.ceil(-d))
                    for d, n in zip(shift, img.shape))
    i, r = img[overlap], ref[overlap]
    if min(r.shape) < _SSIM_SIDE:
        raise ValueError(f"the overlap after the shift {tuple(np.round(shift, 2))} px is {r.shape}; SSIM needs at "
                         f"least {_SSIM_SIDE} px a side. Give larger arrays, or register=False")
    energy = float((i * i).sum())
    if energy == 0:
        raise ValueError("image is all zero where it overlaps the reference: no scale fits it")
    scale = float((i * r).sum()) / energy
    i = scale * i
    return Comparison(
        nrmse=_nrmse(i, r),
        ssim=_ssim(i, r, data_range=float(r.max() - r.min()) or 1.0),
        scale=scale,
        shift=shift,
        overlap=overlap,
    )


def _rigid_shift(img, ref, upsample) -> np.ndarray:
    """The (ndim,) shift registering ``img`` onto ``ref``: 2D directly, 3D from sums along z and along y."""
    pairs = [(ref, img)] if img.ndim == 2 else [(ref.sum(axis=0), img.sum(axis=0)), (ref.sum(axis=1), img.sum(axis=1))]
    found = []
    for r, m in pairs:
        reg = _register(r, m, upsample=upsample)
        if not reg.valid:
            raise ValueError(f"no shift registers image onto reference: {reg.reason}. Give images with a "
                             "common feature, or register=False")
        found.append(np.asarray(reg.shift, float))
    if img.ndim == 2:
        return found[0]
    return np.array([found[1][0], found[0][0], found[0][1]])
