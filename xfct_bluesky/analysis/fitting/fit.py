"""Per-pixel spectrum fitting: element counts by Poisson maximum likelihood on a calibrated, fixed basis.

:func:`fit_spectra` does what XRF-Maps, PyXRF and PyMca do for a map, in two
stages (see ``shared/reference/fitting-notes.md``):

1. the summed spectrum calibrates the model (:func:`.calibrate.calibrate`: a
   nonlinear Poisson fit of the energy axis, widths, scatter and tails), or a
   given :class:`~.model.Calibration` is used as it is;
2. the model is frozen into one shape per line family, the elastic and
   Compton peaks, pile-up and the background (:func:`.model.build_basis`),
   and every pixel's amplitudes are fitted on it.

Unlike those tools, stage 2 maximises the Poisson likelihood with every
amplitude >= 0 (:mod:`._sparse` reads each pixel's raw counts once, no float64
copy of the map, keeping its counted channels for the solver of
:mod:`._kernels`): weights that depend on the data (sigma = sqrt(y),
1/(1+y)), clipping and per-pixel background subtraction bias a fit at a few
counts per pixel by 5-30 % (Cash 1979; Humphrey, Liu & Buote 2009), while the
Poisson ML is asymptotically unbiased and efficient, and in our tests reaches
the Cramer-Rao bound at 0.3 and 3 Zn counts per pixel. A background that the
map's mean pixel cannot determine (to 3 standard errors) is held at its share
of each pixel's counts (``hold_background``): fitted free, the bound pushes it
up and it takes counts from the lines under it. Every
pixel also gets standard errors, from the Fisher information at its estimate

    I_kl = sum_j B_jk B_jl / mu_j,    sigma_k = sqrt((I^-1)_kk),

over all fitted channels (a second compiled pass over the estimates, each
pair of components summed over the channels both are nonzero on, in float32:
to ~1e-7 relative), and its Poisson deviance.
``method="nnls"`` gives the unweighted non-negative least squares of PyXRF /
scikit-beam (without their SNIP background) on the same basis, for
comparison; ``method="linear"`` the fixed-weight linear estimator
(the Poisson ML linearised at the map's mean spectrum), exactly unbiased at
any count, for pixels summed downstream.

References
----------
W. Cash, ApJ 228:939 (1979), doi:10.1086/156922. P. J. Humphrey, W. Liu and
D. A. Buote, "chi^2 and Poissonian data: biases even in the high-count
regime", ApJ 693:822 (2009), doi:10.1088/0004-637X/693/1/822. XRF-Maps
(AdvancedPhotonSource/XRF-Maps); PyXRF (NSLS2/PyXRF) and scikit-beam
``skbeam/core/fitting/xrf_model.py``; PyMca ``FastXRFLinearFit`` (V. A. Sole
et al., Spectrochim. Acta B 62:63, 2007, doi:10.1016/j.sab.2006.12.002).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..._warnings import warn
from ...validate import real
from .calibrate import DEFAULT_FREE, CalibrationFit, SpectrumProfile, calibrate
from .lines import line_family, parse_family
from .model import Calibration, SpectrumBasis, build_basis, parse_pileup

__all__ = ["METHODS", "SpectrumFit", "SpectrumFitWarning", "fit_spectra"]

logger = logging.getLogger(__name__)

#: Per-pixel methods: non-negative Poisson maximum likelihood, the linear estimator with the summed
#: spectrum's Poisson weights, unweighted non-negative least squares.
METHODS = ("poisson", "linear", "nnls")
#: Background models of the per-pixel fit.
BACKGROUNDS = ("summed", "splines", "none")
#: Expected counts below this (per channel) are taken as this in the Fisher information.
MU_FLOOR = 1e-8
#: The Poisson fit frees each pixel's background amplitude where the map's mean pixel would determine it to at
#: least this many standard errors; below, the >= 0 bound would bind in many pixels, and the background is held.
HOLD_BELOW = 3.0


class SpectrumFitWarning(UserWarning):
    """A fit result to treat with care: pixels not converged, or a summed spectrum the model misses."""


@dataclass(frozen=True, eq=False)
class SpectrumFit:
    """Fitted counts of a stack of spectra (:func:`fit_spectra`).

    Every map has the shape of the spectra without their channel axis.

    Attributes
    ----------
    counts : dict of str to numpy.ndarray
        Photons of each element's line family per pixel (all its K, L or M lines detected, escape peaks
        included, before dead-time correction), by family name (``"Zn"``, ``"Au_L"``).
    sigma : dict of str to numpy.ndarray
        Standard error of every component's amplitude (elements, ``"elastic"``, ``"compton"``, pile-up,
        background), from the Fisher information at the estimate. Where an estimate is 0 and nothing
        else is expected near its lines, the information grows without bound and sigma goes to 0 (a
        pixel without counts has sigma ~ 0): Poisson errors at zero counts are not Gaussian.
    amplitudes : dict of str to numpy.ndarray
        Every component's fitted photons, elements included.
    deviance : numpy.ndarray
        Poisson deviance of each pixel over the fitted channels.
    calibration : Calibration
        The calibration of the basis.
    calibration_fit : CalibrationFit or None
        The summed-spectrum fit that gave it (None when the calibration was given and not refined).
    basis : SpectrumBasis
        The fixed basis of the per-pixel fit.
    method : str
        ``"poisson"``, ``"linear"`` or ``"nnls"``.
    iterations : numpy.ndarray
        Solver iterations per pixel.
    converged : numpy.ndarray
        Whether each pixel's solver met its tolerance.
    summed_amplitudes : dict of str to float
        The components' counts in the summed spectrum (its linear fit on the per-pixel basis).
    held : tuple of str
        Components the per-pixel fit held at their share of each pixel's counts instead of fitting
        (``hold_background`` of :func:`fit_spectra`): their ``sigma`` is NaN.
    """

    counts: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    amplitudes: dict[str, np.ndarray]
    deviance: np.ndarray
    calibration: Calibration
    calibration_fit: CalibrationFit | None
    basis: SpectrumBasis = field(repr=False)
    method: str
    iterations: np.ndarray = field(repr=False)
    converged: np.ndarray = field(repr=False)
    summed_amplitudes: dict[str, float] = field(repr=False)
    held: tuple[str, ...] = ()

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.counts)

    @property
    def elastic(self) -> np.ndarray:
        """Photons in the elastic (Rayleigh) peak per pixel."""
        return self.amplitudes["elastic"]

    @property
    def compton(self) -> np.ndarray:
        """Photons in the Compton peak per pixel."""
        return self.amplitudes["compton"]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.deviance.shape

    def model(self, index) -> np.ndarray:
        """Expected spectrum (n_channels,) of the pixel at ``index``, zero outside the fitted channels."""
        a = [self.amplitudes[n][index] for n in self.basis.names]
        return self.basis.expected_full(np.asarray(a, float))

    def components(self, index) -> dict[str, np.ndarray]:
        """Each component's expected spectrum (n_channels,) at pixel ``index``."""
        out = {}
        for k, name in enumerate(self.basis.names):
            a = np.zeros(len(self.basis.names))
            a[k] = self.amplitudes[name][index]
            out[name] = self.basis.expected_full(a)
        return out


# ------------------------------------------------------------------------------------------ checks ---
def _check_energy(energy, n_channels: int) -> np.ndarray:
    e = real("energy", energy).astype(float)
    if e.ndim != 1:
        raise ValueError(f"energy has shape {e.shape}; allowed: one energy (keV) per channel, shape ({n_channels},)")
    if e.size != n_channels:
        raise ValueError(f"energy has {e.size} values but the spectra have {n_channels} channels (their last "
                         "axis); allowed: one energy (keV) per channel. If the channel axis of the spectra is "
                         "not the last, move it there (np.moveaxis(spectra, axis, -1))")
    if not np.all(np.isfinite(e)):
        bad = int(np.flatnonzero(~np.isfinite(e))[0])
        raise ValueError(f"energy[{bad}] = {e[bad]!r} is not finite; allowed: finite energies in keV")
    step = np.diff(e)
    if np.any(step <= 0):
        bad = int(np.flatnonzero(step <= 0)[0])
        raise ValueError(f"energy is not increasing: energy[{bad}] = {e[bad]:g} keV, energy[{bad + 1}] = "
                         f"{e[bad + 1]:g} keV; allowed: strictly increasing channel energies (keV). Reverse the "
                         "spectra's channels if the axis runs downwards")
    if e[-1] > 1000:
        raise ValueError(f"energy runs to {e[-1]:g}: give keV, not eV (divide by 1000)")
    return e


def _check_spectra(spectra) -> np.ndarray:
    a = real("spectra", spectra)
    if a.ndim < 1 or a.shape[-1] < 16:
        raise ValueError(f"spectra have shape {a.shape}; allowed: (..., n_channels) with the channels last and "
                         "at least 16 of them")
    return a


def _check_elements(elements, incident_energy: float) -> tuple[str, ...]:
    if isinstance(elements, str):
        elements = [elements]
    names = tuple(elements)
    if not names:
        raise ValueError("elements is empty; allowed: line families such as ('Ca', 'Fe', 'Zn', 'Au_L')")
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"elements lists {name!r} twice; give each line family once")
        seen.add(name)
        parse_family(name)
        line_family(name, incident_energy)
    return names


def _channels(cal: Calibration, energy_range, n_channels: int) -> slice:
    lo, hi = energy_range
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
        raise ValueError(f"energy_range={energy_range!r}; allowed: (low, high) keV with 0 <= low < high")
    first = max(int(np.ceil(cal.channel_of(lo))), 0)
    last = min(int(np.floor(cal.channel_of(hi))), n_channels - 1)
    if last - first + 1 < 32:
        e0, e1 = cal.energy(0), cal.energy(n_channels - 1)
        raise ValueError(f"energy_range={tuple(energy_range)!r} keV covers {max(last - first + 1, 0)} channels of "
                         f"the spectra ({e0:.3g} to {e1:.3g} keV); allowed: a range of at least 32 channels "
                         "inside the energy axis")
    return slice(first, last + 1)


def summed_spectrum(a2: np.ndarray) -> np.ndarray:
    """The summed spectrum (float64), refusing NaN and negative counts with where they are."""
    import numba

    from ._sparse import column_sums

    summed, n_bad, n_negative = column_sums(a2, 2 * numba.get_num_threads())
    if n_bad:
        where = np.argwhere(~np.isfinite(a2))
        first = tuple(int(v) for v in where[0])
        raise ValueError(f"spectra hold {n_bad} values that are NaN or infinite (the first at pixel {first[0]}, "
                         f"channel {first[1]}); allowed: finite counts. Drop the pixels not acquired (an aborted "
                         "scan's NaN) or fill them with 0")
    if n_negative:
        p, j = np.unravel_index(int(np.argmin(a2)), a2.shape)
        raise ValueError(f"spectra have negative counts ({n_negative} values, the lowest {a2[p, j]:g} at pixel "
                         f"{p}, channel {j}); allowed: counts >= 0. Fit the raw counts, before any background "
                         "subtraction")
    return summed


def native_counts(a2: np.ndarray) -> np.ndarray:
    """``a2`` as the kernels take it: a native-endian integer or float32/64 array (a copy only if not)."""
    if a2.dtype.isnative and (a2.dtype.kind in "iu" or a2.dtype in (np.float32, np.float64)):
        return a2
    return a2.astype(np.float64)


# ------------------------------------------------------------------------------------------- fitting ---
def fit_spectra(spectra, energy, elements: Sequence[str], *, calibration: Calibration | None = None,
                refine: bool | None = None, incident_energy: float | None = None, method: str = "poisson",
                energy_range: tuple[float, float] | None = None, background: str = "summed",
                hold_background: bool | None = None, n_background: int = 6, pileup: Sequence[str] = (),
                free: Sequence[str] = DEFAULT_FREE,
                sigma: bool = True, max_iter: int = 50, tol: float = 1e-8, chunk: int = 8192) -> SpectrumFit:
    """Fit every spectrum of a map: counts of each element's line family, their errors, scatter, deviance.

    Parameters
    ----------
    spectra : array (..., n_channels)
        Counts (any integer or float dtype; not modified, not copied whole): channels last.
    energy : array (n_channels,)
        Energy (keV) of each channel's centre as stored (the MCA calibration); strictly increasing.
    elements : sequence of str
        Line families to fit: ``"Zn"`` for zinc's K lines, ``"Au_L"``, ``"Au_M"`` for L and M lines (the
        names of :mod:`xfct_bluesky.quantities`). Every element with lines in the fitted range should be
        listed: a missing one is absorbed by its neighbours.
    calibration : Calibration, optional
        Use this calibration (energy axis, widths, scatter, tails) as it is, or with ``refine=True`` as
        the start of the summed-spectrum fit. Default: fit it, starting from ``energy`` and the 2-ID-E
        detector values.
    refine : bool, optional
        Fit the calibration on the summed spectrum (default: only when ``calibration`` is None).
    incident_energy : float, optional
        Beam energy (keV) to start from when ``calibration`` is None (default 10.2).
    method : {"poisson", "linear", "nnls"}
        ``"poisson"``: non-negative Poisson maximum likelihood (default): at the Cramer-Rao bound and
        unbiased to within 1 % from a few counts of an element per pixel (-0.2 % for Zn at 3 counts);
        below that it is biased upward (at ~0.3 counts +2.6 % for Zn, +19 % for Ca under K's K-beta),
        as any estimator that is >= 0 for every spectrum is this near 0.
        ``"linear"``: the linear estimator with the Poisson weights of the map's mean spectrum,
        a = (B' M^-1 B)^-1 B' M^-1 y with M = diag(mean expected spectrum): unbiased at any count
        (amplitudes may be negative), at the bound for pixels like the mean, above it for pixels far
        from it; use it where pixels are summed afterwards (tomography, region means) at the lowest
        counts. ``"nnls"``: unweighted non-negative least squares (PyXRF's per-pixel fit).
    energy_range : (float, float), optional
        Fitted energies (keV); default 1 keV to the incident energy + 1 keV (XRF-Maps: 1 to 11 keV).
    background : {"summed", "splines", "none"}
        Per-pixel background: ``"summed"`` the summed spectrum's fitted background shape with one
        amplitude per pixel (default: one free parameter, for low counts); ``"splines"`` each of the
        ``n_background`` B-splines free per pixel; ``"none"``.
    hold_background : bool, optional
        ``method="poisson"``: hold each pixel's background at its share of the summed spectrum's counts
        times the pixel's counts instead of fitting it. Default (None): held where the map's mean pixel
        would determine its one background amplitude to fewer than :data:`HOLD_BELOW` (3) standard errors
        (Fisher information of the basis at the mean composition), fitted otherwise (and with
        ``background="splines"``). A background a pixel cannot determine is pushed up by the >= 0 bound and
        takes counts from the lines under it: on spectra with almost none (0.001 counts per pixel) a free
        one biased Zn by -1.0 % at 3 counts per pixel, a held one by -0.2 %.
    n_background : int
        B-splines of the summed spectrum's background (1-20).
    pileup : sequence of str
        Pile-up components, ``"Fe+Fe"`` (two line families joined by ``+``).
    free : sequence of str
        Calibration parameters the summed-spectrum fit adjusts (:data:`.calibrate.DEFAULT_FREE`).
    sigma : bool
        Compute the standard errors (about 40 % of a Poisson fit's time with them; skip for speed).
    max_iter, tol : int, float
        Per-pixel solver limits: iterations, and the Newton decrement (log-likelihood) at which to stop.
    chunk : int
        Pixels per block of ``method="nnls"`` (memory: about chunk x n_fit x 16 bytes).

    Returns
    -------
    SpectrumFit

    Raises
    ------
    ValueError
        Bad input: shapes, a non-monotonic energy axis, unknown or unexcited line families, negative or
        NaN counts, an energy range outside the axis. The message names the value, the range and the fix.
    CalibrationError
        The summed-spectrum fit did not converge (see :func:`.calibrate.calibrate`).

    Warns
    -----
    SpectrumFitWarning
        Pixels whose solver stopped before its tolerance; a summed spectrum the model misses (deviance per
        degree of freedom above 3), with the energies of the largest misfits.

    Notes
    -----
    ``counts`` are detected photons: divide by the live time for rates, and by I0 and a standard's
    sensitivity for areal densities (later steps of the pipeline).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(map(repr, METHODS))}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background={background!r}; allowed: {', '.join(map(repr, BACKGROUNDS))}")
    hold_background = check_hold_background(hold_background, method, background)
    if not (isinstance(n_background, int | np.integer) and 1 <= n_background <= 20):
        raise ValueError(f"n_background={n_background!r}; allowed: an integer 1-20 (6 is typical)")
    if not (isinstance(max_iter, int | np.integer) and max_iter >= 1):
        raise ValueError(f"max_iter={max_iter!r}; allowed: an integer >= 1 (50 is ample)")
    if not (isinstance(chunk, int | np.integer) and chunk >= 1):
        raise ValueError(f"chunk={chunk!r}; allowed: an integer >= 1")
    data = _check_spectra(spectra)
    n_channels = data.shape[-1]
    e = _check_energy(energy, n_channels)
    map_shape = data.shape[:-1]
    a2 = native_counts(data.reshape(-1, n_channels))
    if calibration is None:
        start = Calibration.from_energy(e, **({} if incident_energy is None else
                                              {"incident_energy": float(incident_energy)}))
        refine = True if refine is None else refine
    else:
        if not isinstance(calibration, Calibration):
            raise ValueError(f"calibration={calibration!r}; allowed: a Calibration (or None to fit one)")
        start = calibration
        refine = bool(refine)
    names = _check_elements(elements, start.incident_energy)
    for name in pileup:
        for part in parse_pileup(name):
            line_family(part, start.incident_energy)
    if energy_range is None:
        energy_range = (1.0, start.incident_energy + 1.0)
    channels = _channels(start, energy_range, n_channels)
    summed = summed_spectrum(a2)

    # stage 1: the calibration, and the summed spectrum's amplitudes on its B-spline background
    cal_fit = None
    if refine:
        cal_fit = calibrate(summed, start, names, channels=channels, free=free, pileup=pileup,
                            n_background=n_background)
        cal = cal_fit.calibration
        summed_basis, summed_a = cal_fit.basis, np.array([cal_fit.amplitudes[n] for n in cal_fit.basis.names])
        quality = cal_fit
    else:
        cal = start
        profile = SpectrumProfile(summed[channels], cal, names, n_channels, channels, pileup, n_background, ())
        dev, summed_a, summed_basis = profile(cal)
        quality = None
        dof = max(channels.stop - channels.start - int(np.count_nonzero(summed_a)), 1)
        if dev / dof > 3 and summed.sum() > 1e4:
            warn(f"the model misses the summed spectrum with this calibration: deviance {dev:.0f} over "
                 f"{dof} degrees of freedom ({dev / dof:.2f} per degree); refine the calibration "
                 "(refine=True) or check `elements`", SpectrumFitWarning, stacklevel=2)
    if quality is not None and quality.deviance_per_dof > 3 and summed.sum() > 1e4:
        worst = "; ".join(f"{en:.2f} keV" for en, _ in quality.worst_residuals())
        warn(f"the calibrated model misses the summed spectrum: {quality.deviance_per_dof:.2f} deviance "
             f"per degree of freedom, most at {worst}: a line family missing from `elements`, "
             "pile-up, or a detector artefact", SpectrumFitWarning, stacklevel=2)

    # stage 2: the per-pixel basis
    is_bg = np.array([k == "background" for k in summed_basis.kinds])
    if background == "summed":
        bg = summed_basis.matrix[:, is_bg] @ summed_a[is_bg]
        basis = build_basis(cal, names, n_channels, channels, pileup=pileup, background=bg)
        a0 = np.append(summed_a[~is_bg], summed_a[is_bg].sum()) if bg.sum() > 0 else summed_a[~is_bg]
    elif background == "splines":
        basis = summed_basis
        a0 = summed_a
    else:
        basis = build_basis(cal, names, n_channels, channels, pileup=pileup, background=np.zeros(1))
        a0 = summed_a[~is_bg]
    n_pix = a2.shape[0]
    summed_components = dict(zip(basis.names, np.asarray(a0, float).tolist(), strict=True))
    held = held_shares(summed_components, basis, n_pix, method, hold_background)
    pixels = fit_pixels(a2, basis, pixel_start(summed_components, basis, n_pix), held, method, sigma, max_iter,
                        tol, chunk)
    return fit_of_pixels(*pixels, map_shape=map_shape, basis=basis, names=names, calibration=cal,
                         calibration_fit=cal_fit, method=method, summed_amplitudes=summed_components,
                         held=held_names(basis, held), stacklevel=2)


def check_hold_background(hold_background, method: str, background: str = "summed") -> bool | None:
    """``hold_background`` as None, True or False, else ValueError; True only where a background can be held
    (``method="poisson"`` with a fitted background)."""
    if hold_background is not None and not isinstance(hold_background, bool | np.bool_):
        raise ValueError(f"hold_background={hold_background!r}; allowed: True, False or None (held where a pixel "
                         "cannot determine it)")
    if hold_background and (method != "poisson" or background == "none"):
        raise ValueError(f"hold_background=True with method={method!r}, background={background!r}: a background "
                         "is held only by method='poisson' with background='summed' or 'splines'")
    return None if hold_background is None else bool(hold_background)


def held_shares(summed_amplitudes: dict[str, float], basis: SpectrumBasis, n_pix: int, method: str,
                hold_background: bool | None = None) -> np.ndarray:
    """The share of a pixel's counts each component is held at in the per-pixel fit (K,), NaN where it is fitted.

    Only ``method="poisson"`` holds, and only background components: all of them with ``hold_background=True``;
    with None the one background amplitude of ``background="summed"`` where the mean pixel (the summed
    amplitudes over ``n_pix``) would determine it to fewer than :data:`HOLD_BELOW` standard errors (the
    Fisher information of ``basis`` at that composition). A held component's share is its part of the
    mean pixel's expected counts: each pixel gets that share of its own counts."""
    K = len(basis.names)
    held = np.full(K, np.nan)
    is_bg = np.array([kind == "background" for kind in basis.kinds])
    if method != "poisson" or hold_background is False or not is_bg.any():
        return held
    mean = np.array([summed_amplitudes[n] for n in basis.names], float) / max(n_pix, 1)
    B = basis.matrix
    total = float(B.sum(axis=0) @ mean)
    if not total > 0:
        return held
    if hold_background is None:
        if is_bg.sum() != 1:
            return held
        k = int(np.flatnonzero(is_bg)[0])
        mu = np.maximum(B @ mean, MU_FLOOR)
        info = (B / mu[:, None]).T @ B
        error = float(np.sqrt(max(np.linalg.pinv(info)[k, k], 0.0)))
        if mean[k] >= HOLD_BELOW * error:
            return held
    held[is_bg] = mean[is_bg] / total
    return held


def held_names(basis: SpectrumBasis, held: np.ndarray) -> tuple[str, ...]:
    """The names of the components :func:`held_shares` holds."""
    return tuple(n for n, h in zip(basis.names, held, strict=True) if not np.isnan(h))


def pixel_start(summed_amplitudes: dict[str, float], basis: SpectrumBasis, n_pix: int) -> np.ndarray:
    """Each pixel's starting amplitudes: the summed spectrum's per pixel, none below 1e-3 of the largest."""
    a0 = np.array([summed_amplitudes[n] for n in basis.names], float) / max(n_pix, 1)
    return np.maximum(a0, 1e-3 * max(float(a0.max()), 1e-12))


def fit_of_pixels(amplitudes, deviance, iterations, flags, errors, *, map_shape, basis: SpectrumBasis, names,
                  calibration, calibration_fit, method: str, summed_amplitudes, held: tuple[str, ...] = (),
                  stacklevel: int = 2) -> SpectrumFit:
    """The :class:`SpectrumFit` of the per-pixel solver's flat results (pixels, ...), in ``map_shape``; warns
    (:class:`SpectrumFitWarning`, ``stacklevel`` as the caller would give ``warnings.warn``) of pixels that
    stopped before the tolerance. Serial fits and fits over blocks of rows (:mod:`xfct_bluesky.distributed`)
    end here."""
    n_pix = amplitudes.shape[0]
    converged = flags == 0
    if not converged.all():
        bad = np.flatnonzero(~converged)
        warn(f"{bad.size} of {n_pix} pixels stopped before the solver's tolerance (the first at flat "
             f"index {int(bad[0])}, {int(iterations[bad[0]])} iterations); raise max_iter, or check "
             "those spectra", SpectrumFitWarning, stacklevel=stacklevel + 1)
    amps = {n: amplitudes[:, k].reshape(map_shape) for k, n in enumerate(basis.names)}
    sig = {n: errors[:, k].reshape(map_shape) for k, n in enumerate(basis.names)} if errors is not None else {}
    return SpectrumFit(
        counts={n: amps[n] for n in names}, sigma=sig, amplitudes=amps, deviance=deviance.reshape(map_shape),
        calibration=calibration, calibration_fit=calibration_fit, basis=basis, method=method,
        iterations=iterations.reshape(map_shape), converged=converged.reshape(map_shape),
        summed_amplitudes=summed_amplitudes, held=tuple(held))


def _supports(B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's first and one-past-last nonzero row (0, 0 for a zero column): the channels it lives on."""
    nonzero = B != 0
    any_ = nonzero.any(axis=0)
    lo = np.where(any_, nonzero.argmax(axis=0), 0)
    hi = np.where(any_, B.shape[0] - nonzero[::-1].argmax(axis=0), 0)
    return lo.astype(np.int64), hi.astype(np.int64)


def _fisher_operands(B: np.ndarray):
    """(BT, lo, hi, G, pairs) for :func:`._kernels.fisher_sigma`: B transposed in float32 (values below 1e-30 of
    the largest set to 0: float32 keeps no denormals at speed), each component's support on it, and for each
    pair of components k >= m the channels both live on (``pairs[q]`` = k, m, first, one-past-last) with
    B_k B_m there (``G[q]``, float32, zero elsewhere)."""
    BT = np.ascontiguousarray(B.T)
    BT = np.where(np.abs(BT) >= 1e-30 * np.abs(BT).max(initial=0.0), BT, 0.0)
    lo, hi = _supports(BT.T)
    K = BT.shape[0]
    pairs = np.array([(k, m, max(lo[k], lo[m]), max(min(hi[k], hi[m]), max(lo[k], lo[m])))
                      for k in range(K) for m in range(k + 1)], np.int64).reshape(-1, 4)
    G = BT[pairs[:, 0]] * BT[pairs[:, 1]]
    G = np.where(np.abs(G) >= 1e-30 * np.abs(G).max(initial=0.0), G, 0.0)
    return BT.astype(np.float32), lo, hi, G.astype(np.float32), pairs


def fit_pixels(a2, basis: SpectrumBasis, a0, held, method, want_sigma, max_iter, tol, chunk):
    """The per-pixel stage of :func:`fit_spectra` (and of each block of ``distributed.fit_on_cluster``): every
    row of ``a2`` (pixels, channels; :func:`native_counts`) fitted on the fixed ``basis`` from the starts ``a0``
    (:func:`pixel_start`), the components with a share in ``held`` (:func:`held_shares`) held at it. Returns
    (amplitudes, deviances, iterations, flags, errors or None), as :func:`fit_of_pixels` takes them."""
    # numba: compiled (or loaded from its cache) on first use; one process on the machine compiles a kernel,
    # the others load it (first_call)
    from .._compile_lock import first_call
    from . import _kernels

    B = np.ascontiguousarray(basis.matrix, dtype=np.float64)
    K = B.shape[1]
    a0 = np.asarray(a0, np.float64)
    held = np.asarray(held, np.float64)
    is_held = ~np.isnan(held)
    if method != "poisson" and is_held.any():
        raise ValueError(f"method={method!r} holds no component; only 'poisson' does")
    n_pix = a2.shape[0]
    A = np.empty((n_pix, K))
    dev = np.empty(n_pix)
    iters = np.zeros(n_pix, np.int64)
    flags = np.zeros(n_pix, np.int64)
    errors = np.full((n_pix, K), np.nan) if want_sigma else np.empty((0, K))
    if method == "nnls":  # dense: the Gram matrix once, each chunk's rows in float64
        gram = B.T @ B
        with first_call(("fit", method)):
            for i0 in range(0, n_pix, chunk):
                i1 = min(i0 + chunk, n_pix)
                Y = np.ascontiguousarray(a2[i0:i1, basis.channels], dtype=np.float64)
                _kernels.nnls_fit(gram, Y @ B, A[i0:i1], iters[i0:i1])
                _kernels.poisson_deviance(B, Y, A[i0:i1], dev[i0:i1])
    else:
        _fit_compacted(a2, B, a0, held, basis.channels.start, method, want_sigma, max_iter, tol, chunk, A, dev,
                       iters, flags, errors)
    if want_sigma and method != "linear":
        # the standard errors, I = B' diag(1 / mu) B over every fitted channel at the estimate: each pair of
        # components summed over the channels both live on (lines and their tails end)
        with first_call(("fit", "sigma")):
            _kernels.fisher_sigma(*_fisher_operands(B), A, is_held, MU_FLOOR, errors)
    return A, dev, iters, flags, (errors if want_sigma else None)


def _fit_compacted(a2, B, a0, held, ch0, method, want_sigma, max_iter, tol, chunk, A, dev, iters, flags, errors):
    """The linear or Poisson fit of the raw rows ``a2``, compacted to their counted channels a chunk at a time
    (a small kernel per dtype); the solvers are compiled once, for float64. Into ``A``, ``dev``, ``iters``,
    ``flags`` and (linear) ``errors``; the Poisson fit holds each component with a share in ``held`` at that
    share of the row's counts."""
    from .._compile_lock import first_call
    from . import _kernels, _sparse

    n_pix, (n_fit, K) = a2.shape[0], B.shape
    c = B.sum(axis=0)
    # weights from the mean spectrum: W = (B' M^-1 B)^-1 B' M^-1, M = diag(B a0); the Poisson fit starts from
    # this linear estimate, each component raised to at least 1 % of the mean composition scaled to the
    # pixel's counts (positive, so free in the first Newton step; the rest of the estimate untouched)
    inv_mu = 1.0 / np.maximum(B @ a0, MU_FLOOR)
    scaled = (B * inv_mu[:, None]).T  # (K, n_fit)
    try:
        weights = np.linalg.solve(scaled @ B, scaled)
    except np.linalg.LinAlgError:  # components the mean spectrum cannot tell apart: the least-norm weights
        weights = np.linalg.lstsq(scaled @ B, scaled, rcond=None)[0]
    Wt = np.ascontiguousarray(weights.T)
    W2t = Wt**2
    ca0 = float(c @ a0)
    is_held = ~np.isnan(held)
    rows = max(1, min(chunk, n_pix, 2048))  # the compacted rows take up to 12 bytes per channel, touched where counted
    nnzs, totals = np.empty(rows, np.int64), np.empty(rows)
    idx, yv = np.empty(rows * n_fit, np.int32), np.empty(rows * n_fit)
    with first_call(("compact", a2.dtype.str, a2.flags.c_contiguous)):
        _sparse.compact(a2, 0, min(1, n_pix), ch0, n_fit, nnzs, totals, idx, yv)
    with first_call(("fit", method)):
        for i0 in range(0, n_pix, rows):
            i1 = min(i0 + rows, n_pix)
            n = i1 - i0
            _sparse.compact(a2, i0, i1, ch0, n_fit, nnzs, totals, idx, yv)
            if method == "linear":  # var(a_k) = sum_j W_kj^2 mu_j, estimated without bias by sum_j W_kj^2 y_j
                _kernels.linear_fit(B, Wt, W2t, c, n_fit, nnzs[:n], idx, yv, want_sigma, True, A[i0:i1],
                                    dev[i0:i1], errors[i0:i1] if want_sigma else errors)
            else:
                start = np.empty((n, K))
                _kernels.linear_fit(B, Wt, W2t, c, n_fit, nnzs[:n], idx, yv, False, False, start, dev[i0:i1],
                                    errors)
                start = np.maximum(start, (0.01 / ca0) * totals[:n, None] * a0)
                start[:, is_held] = totals[:n, None] * held[is_held]
                _kernels.poisson_fit(B, c, n_fit, nnzs[:n], idx, yv, a0, is_held, start, max_iter, tol, A[i0:i1],
                                     dev[i0:i1], iters[i0:i1], flags[i0:i1])
