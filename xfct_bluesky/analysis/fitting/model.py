"""The detector's response to a line, the energy calibration, and the fixed basis of a spectrum fit.

Expected counts in channel ``i`` are a sum of components, each an amplitude
(photons) times a shape that integrates to one over all energies::

    mu_i = sum_k a_k B_ik

Channel ``i`` is centred on E(i) = offset + gain i + quadratic i^2 (keV, i
from 0: the EPICS MCA's CALO/CALS/CALQ and XRF-Maps' CAL_OFFSET/CAL_SLOPE/
CAL_QUAD) and spans E(i - 1/2) .. E(i + 1/2); shapes are integrated over the
channel (differences of cumulative distributions), not sampled at its centre.

One line of energy E0 (a fluorescence line, the elastic peak) is a Gaussian
with the detector's resolution

    sigma^2 = (fwhm_offset / 2.3548)^2 + 2.96 fanoprime E0      (keV; XRF-Maps, MAPS)

plus a low-energy exponential tail (fraction ``f_tail``, decay length
``gamma`` sigma, convolved with the Gaussian) and a flat step to 0 keV
(fraction ``f_step``, the incomplete charge collection), the three weighted
1 : f_tail : f_step; then a fraction P(E0) of it moves 1.74 keV down into a
Gaussian Si escape peak (:func:`.lines.si_escape_probability`, scaled by
``escape``). The Compton peak is the same at the Compton energy of
``compton_angle`` with its width multiplied by ``compton_fwhm_corr``, its own
low tail (``compton_f_tail``, ``compton_gamma``) and a high tail
(``compton_hi_f_tail``, ``compton_hi_gamma``). An element's shape is the sum
of its family's lines (:func:`.lines.line_family`) weighted by their
intensities, so its amplitude is the count of the whole family's photons. A
pile-up component ``"Fe+Fe"`` is a Gaussian at every sum of two lines of the
two families, weighted by the products of their intensities. The background
is a few cubic B-splines spread evenly over the fitted energies (non-negative,
smooth), each normalised to one over the fitted channels.

Sources: XRF-Maps ``src/fitting/models/gaussian_model.cpp`` (peak, step, tail,
elastic and Compton peaks; the parameter names and the 2-ID-E values of its
``maps_fit_parameters_override.txt``); PyXRF / scikit-beam
``skbeam/core/fitting/lineshapes.py`` (``gaussian_tail``, ``compton``); PyMca's
hypermet (``SpecfitFuns.hypermet``); P. Van Espen, "Spectrum evaluation", in
Handbook of X-Ray Spectrometry, 2nd ed. (Dekker, 2002), p. 287. Differences
from XRF-Maps: channel-integrated shapes, unit integrals (amplitudes in
photons, not peak heights), the same tail and step for every line (XRF-Maps
gives a tail to K-beta lines only), escape peaks on every line.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from scipy.special import log_ndtr, ndtr

from ...physics import constants as C
from .lines import compton_energy, line_family, si_escape_energy, si_escape_probability

__all__ = ["Calibration", "SpectrumBasis", "build_basis"]

_FWHM_PER_SIGMA = 2.3548
_SQRT_2PI = math.sqrt(2 * math.pi)

#: Allowed range of each Calibration parameter: (low, high), checked on construction.
LIMITS: dict[str, tuple[float, float]] = {
    "offset": (-5.0, 5.0),
    "gain": (1e-4, 1.0),
    "quadratic": (-1e-4, 1e-4),
    "fwhm_offset": (0.0, 1.0),
    "fanoprime": (0.0, 0.05),
    "incident_energy": (0.5, 200.0),
    "compton_angle": (1.0, 179.0),
    "compton_fwhm_corr": (0.5, 10.0),
    "compton_f_tail": (0.0, 5.0),
    "compton_gamma": (0.1, 20.0),
    "compton_hi_f_tail": (0.0, 5.0),
    "compton_hi_gamma": (0.1, 20.0),
    "f_tail": (0.0, 2.0),
    "gamma": (0.1, 20.0),
    "f_step": (0.0, 1.0),
    "escape": (0.0, 10.0),
}
_UNITS = {"offset": "keV", "gain": "keV/channel", "quadratic": "keV/channel^2", "fwhm_offset": "keV",
          "incident_energy": "keV", "compton_angle": "deg"}


@dataclass(frozen=True)
class Calibration:
    """Energy calibration and detector response: everything the basis of a fit depends on but the elements.

    Defaults are the 2-ID-E values of XRF-Maps' override file (the simulator's too) at 10 eV per channel.

    Parameters
    ----------
    offset, gain, quadratic : float
        Channel ``i`` is centred on ``offset + gain i + quadratic i^2`` (keV, keV/channel, keV/channel^2).
    fwhm_offset : float
        Resolution FWHM at 0 keV (keV).
    fanoprime : float
        Fano term: sigma^2 = (fwhm_offset / 2.3548)^2 + 2.96 fanoprime E (keV).
    incident_energy : float
        Beam energy (keV): the elastic peak, and the energy line intensities are computed at.
    compton_angle : float
        Scattering angle (degrees) giving the Compton peak's energy.
    compton_fwhm_corr : float
        Compton width over the detector resolution at its energy.
    compton_f_tail, compton_gamma : float
        Compton low-energy tail: weight relative to its Gaussian, decay length in its sigma.
    compton_hi_f_tail, compton_hi_gamma : float
        Compton high-energy tail, likewise.
    f_tail, gamma : float
        Low-energy tail of every other line: weight relative to the Gaussian, decay length in sigma.
    f_step : float
        Flat step from every line down to 0 keV, weight relative to the Gaussian.
    escape : float
        Scale of the Si escape probability (1: Reed & Ware's; 0: no escape peaks).
    """

    offset: float = 0.005
    gain: float = 0.01
    quadratic: float = 0.0
    fwhm_offset: float = C.VORTEX_FWHM_OFFSET
    fanoprime: float = C.VORTEX_FANOPRIME
    incident_energy: float = C.BEAM_ENERGY_KEV
    compton_angle: float = 90.0
    compton_fwhm_corr: float = C.COMPTON_FWHM_CORR
    compton_f_tail: float = 0.05
    compton_gamma: float = 3.0
    compton_hi_f_tail: float = 0.0
    compton_hi_gamma: float = 3.0
    f_tail: float = 0.003
    gamma: float = 2.21
    f_step: float = 0.003
    escape: float = 1.0

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ValueError(  # noqa: TRY004 - as the package does for every bad argument
                    f"Calibration.{f.name}={value!r} is not a number; allowed: a float")
            low, high = LIMITS[f.name]
            unit = f" {_UNITS[f.name]}" if f.name in _UNITS else ""
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"Calibration.{f.name}={value!r}{unit} is out of range; allowed: {low:g} to "
                                 f"{high:g}{unit}. Check the units (keV, keV per channel, degrees)")
            object.__setattr__(self, f.name, float(value))

    # -- channels and widths -------------------------------------------------------------------------
    def energy(self, channels) -> np.ndarray:
        """Energy (keV) at (fractional) channel numbers ``channels``."""
        c = np.asarray(channels, dtype=float)
        return self.offset + c * (self.gain + c * self.quadratic)

    def sigma(self, energy) -> np.ndarray:
        """Detector resolution (Gaussian sigma, keV) at ``energy`` (keV)."""
        e = np.clip(np.asarray(energy, dtype=float), 0.0, None)
        return np.sqrt((self.fwhm_offset / _FWHM_PER_SIGMA) ** 2 + 2.96 * self.fanoprime * e)

    def fwhm(self, energy) -> np.ndarray:
        """Detector resolution FWHM (keV) at ``energy`` (keV)."""
        return _FWHM_PER_SIGMA * self.sigma(energy)

    @property
    def compton_energy(self) -> float:
        """Energy (keV) of the Compton peak."""
        return compton_energy(self.incident_energy, self.compton_angle)

    def replace(self, **changes) -> Calibration:
        """A copy with ``changes`` (checked like the constructor's arguments)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, float]:
        """Every parameter by name (plain floats: for metadata and JSON)."""
        return asdict(self)

    @classmethod
    def from_energy(cls, energy, **kwargs) -> Calibration:
        """The calibration whose channel centres are ``energy`` (keV per channel): offset, gain, quadratic.

        Raises
        ------
        ValueError
            ``energy`` is not a quadratic function of the channel number to within 1 % of a channel.
        """
        e = np.asarray(energy, dtype=float)
        ch = np.arange(e.size, dtype=float)
        quad, gain, offset = np.polyfit(ch, e, 2) if e.size > 2 else (0.0, *np.polyfit(ch, e, 1))
        residual = np.abs(np.polyval([quad, gain, offset], ch) - e).max()
        if residual > 0.01 * abs(gain):
            raise ValueError(f"energy is not a quadratic function of the channel number (off by up to "
                             f"{residual * 1e3:.3g} eV, {residual / abs(gain):.2g} channels); allowed: an MCA "
                             "calibration offset + gain i + quadratic i^2. Give the energy of every channel of "
                             "the spectra, or pass calibration=Calibration(offset=..., gain=..., quadratic=...)")
        if abs(quad) < 1e-12 * abs(gain):
            quad = 0.0
        return cls(offset=float(offset), gain=float(gain), quadratic=float(quad), **kwargs)

    def channel_of(self, energy: float) -> float:
        """The (fractional) channel number centred on ``energy`` (keV)."""
        if self.quadratic == 0.0:
            return (energy - self.offset) / self.gain
        a, b, c = self.quadratic, self.gain, self.offset - energy
        return (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)


# ----------------------------------------------------------------------------------------- shapes ---
def _gauss_cdf(t, sigma):
    return ndtr(t / sigma)


def _tail_cdf(t, sigma, gamma):
    """CDF of a Gaussian (sigma) minus an exponential of mean gamma sigma: the low-energy tail of a peak."""
    return ndtr(t / sigma) + np.exp(t / (gamma * sigma) + 0.5 / gamma**2 + log_ndtr(-t / sigma - 1 / gamma))


def _step_integral(t, sigma):
    """Antiderivative of ndtr(-t / sigma): a unit step from the peak down, smoothed by the resolution."""
    u = t / sigma
    return t * ndtr(-u) - sigma * np.exp(-0.5 * u * u) / _SQRT_2PI


def _line_shapes(edges, e0, sigma, weights, f_tail, gamma, f_step, *, hi_tail=0.0, hi_gamma=1.0):
    """Sum over lines of weight x normalised (Gaussian + tails + step) integrated over channels (n_edges - 1,).

    Each line is evaluated exactly within 8 sigma of its energy; below that window its Gaussian is zero
    (to 1e-15), its tail the pure exponential and its step the full height, so a line costs its window
    only.
    """
    edges = np.asarray(edges, float)
    widths = np.diff(edges)
    out = np.zeros(widths.size)
    norm = 1.0 + f_tail + f_step + hi_tail
    for energy, s, w in zip(np.atleast_1d(e0), np.atleast_1d(sigma), np.atleast_1d(weights), strict=True):
        if w == 0:
            continue
        reach_hi = 8 * s + (40 * hi_gamma * s if hi_tail > 0 else 0.0)
        lo = int(np.searchsorted(edges, energy - 8 * s))
        hi = int(np.searchsorted(edges, energy + reach_hi))
        lo, hi = max(lo - 1, 0), min(hi + 1, edges.size)
        if hi - lo >= 2:
            t = edges[lo:hi] - energy
            cdf = _gauss_cdf(t, s)
            if f_tail > 0:
                cdf = cdf + f_tail * _tail_cdf(t, s, gamma)
            if hi_tail > 0:
                cdf = cdf + hi_tail * (1.0 - _tail_cdf(-t, s, hi_gamma))
            window = np.diff(cdf)
            if f_step > 0:
                total = -_step_integral(-energy, s)  # the step's integral from 0 keV up
                window = window + f_step / total * np.diff(_step_integral(t, s))
            out[lo:hi - 1] += w / norm * window
        if lo > 0:  # below the window: the tail's exponential and the step's full height
            below = np.zeros(lo)
            if f_tail > 0:
                t = edges[:lo + 1] - energy
                below += f_tail * np.diff(np.exp(np.maximum(t / (gamma * s) + 0.5 / gamma**2, -745.0)))
            if f_step > 0:
                below += f_step / (-_step_integral(-energy, s)) * widths[:lo]
            out[:lo] += w / norm * below
    return out


def _with_escape(edges, cal: Calibration, energies, weights, sigma, **shape):
    """Shapes of lines (energies, weights) with their Si escape peaks, over the channels between ``edges``."""
    energies = np.asarray(energies, float)
    weights = np.asarray(weights, float)
    p = cal.escape * si_escape_probability(energies) if cal.escape > 0 else np.zeros(energies.shape)
    p = np.clip(p, 0.0, 1.0)
    out = _line_shapes(edges, energies, sigma, weights * (1 - p), **shape)
    if np.any(p > 0):
        e_esc = energies - si_escape_energy()
        keep = (p > 0) & (e_esc > 0)
        out = out + _line_shapes(edges, e_esc[keep], cal.sigma(e_esc[keep]), (weights * p)[keep], 0.0, 1.0, 0.0)
    return out


def element_shape(edges, cal: Calibration, family: str) -> np.ndarray:
    """Shape of a line family over the channels between ``edges`` (keV): integrates to 1 over all energies."""
    fam = line_family(family, cal.incident_energy)
    return _with_escape(edges, cal, fam.energies, fam.weights, cal.sigma(fam.energies),
                        f_tail=cal.f_tail, gamma=cal.gamma, f_step=cal.f_step)


def elastic_shape(edges, cal: Calibration) -> np.ndarray:
    e = np.array([cal.incident_energy])
    return _with_escape(edges, cal, e, [1.0], cal.sigma(e), f_tail=cal.f_tail, gamma=cal.gamma, f_step=cal.f_step)


def compton_shape(edges, cal: Calibration) -> np.ndarray:
    e = np.array([cal.compton_energy])
    return _with_escape(edges, cal, e, [1.0], cal.sigma(e) * cal.compton_fwhm_corr, f_tail=cal.compton_f_tail,
                        gamma=cal.compton_gamma, f_step=cal.f_step, hi_tail=cal.compton_hi_f_tail,
                        hi_gamma=cal.compton_hi_gamma)


def pileup_shape(edges, cal: Calibration, first: str, second: str) -> np.ndarray:
    """Gaussians at every sum of a line of ``first`` and one of ``second``, weighted by their intensities."""
    a = line_family(first, cal.incident_energy)
    b = line_family(second, cal.incident_energy)
    energies = (a.energies[:, None] + b.energies[None, :]).ravel()
    weights = (a.weights[:, None] * b.weights[None, :]).ravel()
    return _line_shapes(edges, energies, cal.sigma(energies), weights, 0.0, 1.0, 0.0)


def background_splines(energies: np.ndarray, n: int) -> np.ndarray:
    """(n_channels, n) cubic B-splines spread evenly over ``energies``, each summing to 1 (n = 1: a constant)."""
    # scipy.interpolate takes 0.3 s to import: only when needed
    from scipy.interpolate import BSpline

    if n == 1:
        return np.full((energies.size, 1), 1.0 / energies.size)
    degree = min(3, n - 1)
    lo, hi = float(energies.min()), float(energies.max())
    inner = np.linspace(lo, hi, n - degree + 1)
    knots = np.concatenate([[lo] * degree, inner, [hi] * degree])
    x = np.clip(energies, lo, hi)
    design = BSpline.design_matrix(x, knots, degree).toarray()
    return design / design.sum(axis=0, keepdims=True)


# ------------------------------------------------------------------------------------------ basis ---
def parse_pileup(name: str) -> tuple[str, str]:
    """The two families of a pile-up component ``"Fe+Fe"`` (XRF-Maps writes ``Fe_Fe``; ``+`` keeps ``Au_L``)."""
    parts = name.split("+") if isinstance(name, str) else []
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"pileup component {name!r}; allowed: two line families joined by '+', e.g. 'Fe+Fe', "
                         "'Ca+Au_L'")
    return parts[0], parts[1]


@dataclass(frozen=True, eq=False)
class SpectrumBasis:
    """The fixed shapes a spectrum is fitted with, over the fitted channels.

    Attributes
    ----------
    names : tuple of str
        Component names: the line families in the order given, ``"elastic"``, ``"compton"``, the pile-up
        components (``"Fe+Fe"``), then ``"background"`` or ``"background_0"`` ...
    kinds : tuple of str
        ``"element"``, ``"elastic"``, ``"compton"``, ``"pileup"`` or ``"background"``, per component.
    matrix : numpy.ndarray
        (n_fit, n_components) float64: expected counts per channel per unit amplitude.
    channels : slice
        The fitted channels of the full spectrum (``start:stop``).
    n_channels : int
        Channels of the full spectrum.
    calibration : Calibration
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)
    channels: slice
    n_channels: int
    calibration: Calibration

    @property
    def energies(self) -> np.ndarray:
        """Centre energy (keV) of each fitted channel."""
        return self.calibration.energy(np.arange(self.channels.start, self.channels.stop))

    @property
    def in_range(self) -> np.ndarray:
        """Fraction of each component's counts inside the fitted channels (column sums)."""
        return self.matrix.sum(axis=0)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def expected(self, amplitudes) -> np.ndarray:
        """Expected counts (..., n_fit) for amplitudes (..., n_components)."""
        return np.asarray(amplitudes, dtype=float) @ self.matrix.T

    def expected_full(self, amplitudes) -> np.ndarray:
        """Expected counts (..., n_channels) over the whole spectrum, zero outside the fitted channels."""
        a = np.asarray(amplitudes, dtype=float)
        out = np.zeros((*a.shape[:-1], self.n_channels))
        out[..., self.channels] = self.expected(a)
        return out


@functools.lru_cache(maxsize=16)
def _line_columns(cal: Calibration, elements: tuple[str, ...], pileup: tuple[str, ...], start: int,
                  stop: int) -> np.ndarray:
    """(n_fit, n_lines) read-only shapes of the line families, elastic, Compton and pile-up over channels
    start:stop: cached, as a live fit builds the same basis for every projection."""
    idx = np.arange(start, stop)
    edges = cal.energy(np.append(idx - 0.5, idx[-1] + 0.5))
    cols = [element_shape(edges, cal, name) for name in elements]
    cols += [elastic_shape(edges, cal), compton_shape(edges, cal)]
    cols += [pileup_shape(edges, cal, *parse_pileup(name)) for name in pileup]
    out = np.stack(cols, axis=1)
    out.flags.writeable = False
    return out


def build_basis(calibration: Calibration, elements: Sequence[str], n_channels: int, channels: slice, *,
                pileup: Sequence[str] = (), background: int | np.ndarray = 1) -> SpectrumBasis:
    """The fixed basis for ``elements`` (line-family names) at ``calibration`` over ``channels``.

    Parameters
    ----------
    background : int or array
        Number of B-spline background components (1: one constant), or one background shape over the
        fitted channels (normalised here; an all-zero shape gives no background component).
    """
    cal = calibration
    idx = np.arange(channels.start, channels.stop)
    edges = cal.energy(np.append(idx - 0.5, idx[-1] + 0.5))
    lines = _line_columns(cal, tuple(elements), tuple(pileup), int(channels.start), int(channels.stop))
    cols, names, kinds = list(lines.T), list(elements), ["element"] * len(elements)
    names += ["elastic", "compton", *pileup]
    kinds += ["elastic", "compton", *["pileup"] * len(pileup)]
    if isinstance(background, int | np.integer):
        splines = background_splines(cal.energy(idx), int(background))
        for j in range(splines.shape[1]):
            cols.append(splines[:, j])
            names.append("background" if splines.shape[1] == 1 else f"background_{j}")
            kinds.append("background")
    else:
        shape = np.asarray(background, float)
        if shape.sum() > 0:
            cols.append(shape / shape.sum())
            names.append("background")
            kinds.append("background")
    matrix = np.ascontiguousarray(np.stack(cols, axis=1))
    inside = matrix.sum(axis=0)
    empty = [n for n, v in zip(names, inside, strict=True) if not v > 1e-6]
    if empty:
        lo, hi = float(edges[0]), float(edges[-1])
        raise ValueError(f"{', '.join(map(repr, empty))}: no counts expected between {lo:.3g} and {hi:.3g} keV, the "
                         "fitted energies (their lines lie outside); remove them, or widen energy_range")
    return SpectrumBasis(tuple(names), tuple(kinds), matrix, slice(int(channels.start), int(channels.stop)),
                         int(n_channels), cal)
