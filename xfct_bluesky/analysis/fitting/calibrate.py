"""Calibration: a nonlinear Poisson-likelihood fit of the summed spectrum, as the field's tools do first.

The summed spectrum of a map has counts enough to fix what the per-pixel fit
then holds fixed: the energy calibration (offset, gain), the resolution
(FWHM offset, Fano term), the incident energy, the Compton angle, width and
tail, the lines' tail and step. For given values of these (theta) the
amplitudes are linear, so the fit minimises the *profile* deviance

    D(theta) = min_{a >= 0} 2 sum_i [mu_i - y_i + y_i log(y_i / mu_i)],   mu = B(theta) a,

(Poisson, Cash 1979; the inner problem is the same convex fit as a pixel's)
over theta by Levenberg-Marquardt on the Poisson-weighted Gauss-Newton
(Fisher scoring) system of theta and the active amplitudes, with
forward-difference derivatives of the model in theta,
after a coarse search of the energy axis's position and scale (a stored
axis can be off by 0.1-0.2 keV) and of the incident energy, so that a start
several widths off still lands in the right basin.

Honest failure: when the optimiser stops without converging, or a parameter
ends at a limit of its search range (the data ask for a value outside it),
:func:`calibrate` raises :class:`CalibrationError` with the figures (the
deviance per degree of freedom, the parameters, which limit was hit and the
fix) and the result it has in ``.result``; it never hands back a worse
calibration quietly.

References
----------
W. Cash, "Parameter estimation in astronomy through application of the
likelihood ratio", ApJ 228:939 (1979), doi:10.1086/156922.
XRF-Maps (AdvancedPhotonSource/XRF-Maps), ``src/fitting/optimizers``: the
summed fit with NLopt, then the per-pixel fit on the frozen model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .model import Calibration, SpectrumBasis, build_basis

__all__ = ["BASIC_FREE", "DEFAULT_FREE", "CalibrationError", "CalibrationFit", "calibrate"]

logger = logging.getLogger(__name__)

#: Parameters the calibration fits unless told otherwise.
DEFAULT_FREE = ("offset", "gain", "fwhm_offset", "fanoprime", "incident_energy", "compton_angle",
                "compton_fwhm_corr", "compton_f_tail", "f_tail", "f_step")
#: What a summed spectrum of few counts (~1e4) determines: the energy axis, the resolution, the beam energy and
#: the Compton peak. The tails and the step, a fraction of a percent of each line, stay at the start's values
#: (fitted too, they wander along flat directions and the fit runs 3x longer, or does not converge).
BASIC_FREE = ("offset", "gain", "fwhm_offset", "fanoprime", "incident_energy", "compton_angle", "compton_fwhm_corr")
#: Step of each parameter in the optimiser's scaled units.
_SCALE = {"offset": 0.01, "gain": 1e-5, "quadratic": 1e-9, "fwhm_offset": 0.01, "fanoprime": 2e-5,
          "incident_energy": 0.01, "compton_angle": 1.0, "compton_fwhm_corr": 0.05, "compton_f_tail": 0.01,
          "compton_gamma": 0.1, "compton_hi_f_tail": 0.01, "compton_hi_gamma": 0.1, "f_tail": 0.01,
          "gamma": 0.1, "f_step": 0.001, "escape": 0.1}
#: Every parameter the calibration can fit (``free``).
FITTABLE = tuple(_SCALE)
#: Fractions may rightly end at zero: their lower limit is no failure.
_FRACTIONS = ("compton_f_tail", "compton_hi_f_tail", "f_tail", "f_step", "escape")


def _search_limits(start: Calibration, name: str, gain_scale: float) -> tuple[float, float]:
    """The range the fit may move parameter ``name`` over, around ``start``."""
    v = getattr(start, name)
    return {
        "offset": (v - 0.5, v + 0.5),
        "gain": (v * (1 - gain_scale), v * (1 + gain_scale)),
        "quadratic": (-1e-6, 1e-6),
        "fwhm_offset": (0.01, 0.4),
        "fanoprime": (1e-6, 2e-3),
        "incident_energy": (v - 0.5, v + 0.5),
        "compton_angle": (40.0, 170.0),
        "compton_fwhm_corr": (0.8, 5.0),
        "compton_f_tail": (0.0, 3.0),
        "compton_gamma": (0.3, 15.0),
        "compton_hi_f_tail": (0.0, 1.0),
        "compton_hi_gamma": (0.3, 15.0),
        "f_tail": (0.0, 1.0),
        "gamma": (0.3, 15.0),
        "f_step": (0.0, 0.2),
        "escape": (0.0, 5.0),
    }[name]


class CalibrationError(RuntimeError):
    """The summed-spectrum fit did not converge, or a parameter ended at a limit of its range.

    ``result`` is the :class:`CalibrationFit` reached, for inspection; do not use it as a calibration.
    """

    def __init__(self, message: str, result: CalibrationFit):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, eq=False)
class CalibrationFit:
    """The result of :func:`calibrate`.

    Attributes
    ----------
    calibration, start : Calibration
        The fitted calibration and the one the fit started from.
    free : tuple of str
        The parameters fitted.
    amplitudes : dict of str to float
        Counts of each basis component in the summed spectrum.
    deviance : float
        Poisson deviance of the fit over the fitted channels.
    n_fit : int
        Fitted channels.
    n_parameters : int
        Parameters fitted: the free calibration parameters plus the non-zero amplitudes.
    converged : bool
    message : str
        The optimiser's message.
    n_evaluations : int
        Profile-deviance evaluations (basis builds), search included.
    basis : SpectrumBasis
        The basis at the fitted calibration (background as B-splines).
    spectrum : numpy.ndarray
        The summed counts over the fitted channels.
    """

    calibration: Calibration
    start: Calibration
    free: tuple[str, ...]
    amplitudes: dict[str, float]
    deviance: float
    n_fit: int
    n_parameters: int
    converged: bool
    message: str
    n_evaluations: int
    basis: SpectrumBasis = field(repr=False)
    spectrum: np.ndarray = field(repr=False)

    @property
    def dof(self) -> int:
        """Degrees of freedom: fitted channels less fitted parameters."""
        return max(self.n_fit - self.n_parameters, 1)

    @property
    def deviance_per_dof(self) -> float:
        """Deviance per degree of freedom: near 1 when the model describes the summed spectrum."""
        return self.deviance / self.dof

    @property
    def model(self) -> np.ndarray:
        """Expected summed counts over the fitted channels."""
        return self.basis.expected([self.amplitudes[n] for n in self.basis.names])

    def worst_residuals(self, n: int = 3) -> list[tuple[float, float]]:
        """The ``n`` energies (keV) where the model misses most, with the deviance within +-1 FWHM of each."""
        y, mu = self.spectrum, self.model
        with np.errstate(divide="ignore", invalid="ignore"):
            d = 2 * (mu - y + np.where(y > 0, y * np.log(y / mu), 0.0))
        e = self.basis.energies
        width = max(round(float(self.calibration.fwhm(e.mean())) / self.calibration.gain), 1)
        smooth = np.convolve(d, np.ones(2 * width + 1), mode="same")
        out = []
        for _ in range(n):
            j = int(np.argmax(smooth))
            out.append((float(e[j]), float(smooth[j])))
            smooth[max(j - 2 * width, 0): j + 2 * width + 1] = -np.inf
        return out

    def summary(self) -> str:
        """One paragraph of figures: deviance, parameters, worst residuals."""
        cal = self.calibration
        params = ", ".join(f"{n}={getattr(cal, n):.6g}" for n in self.free)
        worst = "; ".join(f"{e:.2f} keV ({d:.0f})" for e, d in self.worst_residuals())
        return (f"deviance {self.deviance:.1f} over {self.n_fit} channels, {self.deviance_per_dof:.3f} per degree of "
                f"freedom; {params}; largest misfits at {worst}")


class SpectrumProfile:
    """The profile deviance over the free parameters, with the inner Poisson fit warm-started."""

    def __init__(self, y, start: Calibration, elements, n_channels, channels, pileup, n_background, free):
        self.y = np.ascontiguousarray(y, dtype=np.float64)[None, :]
        # its counted channels, as the per-pixel solver takes a pixel's (._sparse.compact)
        self.counted = np.flatnonzero(self.y[0] > 0).astype(np.int32)
        self.start = start
        self.elements = tuple(elements)
        self.n_channels = n_channels
        self.channels = channels
        self.pileup = tuple(pileup)
        self.n_background = n_background
        self.free = tuple(free)
        self.mid = 0.5 * (channels.start + channels.stop - 1)
        self.evaluations = 0
        self.a = None

    def calibration(self, values: dict[str, float]) -> Calibration:
        """Calibration from parameter values; ``offset`` is given as the energy at the middle channel."""
        values = dict(values)
        gain = values.get("gain", self.start.gain)
        quad = values.get("quadratic", self.start.quadratic)
        if "offset" in values:
            values["offset"] = values["offset"] - gain * self.mid - quad * self.mid**2
        return self.start.replace(**values)

    def mid_energy(self, cal: Calibration) -> float:
        return float(cal.energy(self.mid))

    def __call__(self, cal: Calibration) -> tuple[float, np.ndarray, SpectrumBasis]:
        from .._compile_lock import first_call
        from . import (
            _kernels,  # numba: compiled (or loaded from its cache) on first use
        )

        self.evaluations += 1
        basis = build_basis(cal, self.elements, self.n_channels, self.channels, pileup=self.pileup,
                            background=self.n_background)
        B = basis.matrix
        c = B.sum(axis=0)
        a0 = self.a if self.a is not None and self.a.size == B.shape[1] else np.ones(B.shape[1])
        a0 = np.maximum(a0, 1e-6 * max(float(a0.max()), 1e-300)) if a0.max() > 0 else np.ones(B.shape[1])
        A = np.empty((1, B.shape[1]))
        dev = np.empty(1)
        it = np.empty(1, np.int64)
        flag = np.empty(1, np.int64)
        with first_call(("fit", "poisson")):  # one process compiles the solver, the others load its cache
            _kernels.poisson_fit(B, c, 0, np.array([self.counted.size]), self.counted,
                                 self.y[0, self.counted], a0, np.zeros(a0.size, np.bool_), a0[None, :], 500, 1e-10,
                                 A, dev, it, flag)
        self.a = A[0].copy()
        return float(dev[0]), A[0].copy(), basis


def calibrate(spectrum, start: Calibration, elements: Sequence[str], *, channels: slice,
              free: Sequence[str] = DEFAULT_FREE, pileup: Sequence[str] = (), n_background: int = 6,
              search: bool = True, gain_range: float = 0.05, max_iter: int = 60) -> CalibrationFit:
    """Fit the calibration to a summed spectrum by Poisson likelihood (see the module notes).

    Parameters
    ----------
    spectrum : array (n_channels,)
        Summed counts.
    start : Calibration
        Where the fit starts (a stored energy axis, an XRF-Maps override file).
    elements : sequence of str
        Line families in the spectrum (``"Zn"``, ``"Au_L"``).
    channels : slice
        The fitted channels.
    free : sequence of str
        Calibration parameters to fit (:data:`DEFAULT_FREE`); the others stay at ``start``'s values.
    pileup : sequence of str
        Pile-up components (``"Fe+Fe"``).
    n_background : int
        Cubic B-splines of the background.
    search : bool
        First search the energy axis's position (+-0.3 keV), scale (+-3 %) and the incident energy
        (+-0.3 keV) on a grid.
    gain_range : float
        The gain may move by this fraction of ``start.gain``.

    Raises
    ------
    CalibrationError
        Not converged, or a parameter at a limit of its range (the message gives the figures and the fix).
    """
    y = np.asarray(spectrum, dtype=np.float64)
    n_channels = y.size
    y_fit = y[channels]
    unknown = [n for n in free if n not in FITTABLE]
    if unknown:
        raise ValueError(f"free={tuple(free)!r}: unknown parameters {unknown}; allowed: {', '.join(FITTABLE)}")
    profile = SpectrumProfile(y_fit, start, elements, n_channels, channels, pileup, n_background, free)
    values = {n: getattr(start, n) for n in free}
    if "offset" in values:
        values["offset"] = profile.mid_energy(start)
    limits = {n: _search_limits(start, n, gain_range) for n in free}
    if "offset" in limits:
        e_mid = profile.mid_energy(start)
        limits["offset"] = (e_mid - 0.5, e_mid + 0.5)

    def deviance(vals):
        # finite differences may step just outside a limit: evaluate at the limit
        vals = {n: min(max(v, limits[n][0]), limits[n][1]) for n, v in vals.items()}
        try:  # an element's edge above an incident energy tried
            return profile(profile.calibration(vals))[0]
        except ValueError:
            return 1e300

    if search:
        values = _grid_search(deviance, values, limits, start)
    names = list(values)
    lo = np.array([limits[n][0] / _SCALE[n] for n in names])
    hi = np.array([limits[n][1] / _SCALE[n] for n in names])
    x = np.clip(np.array([values[n] / _SCALE[n] for n in names]), lo, hi)

    def evaluate(x):
        vals = {n: v * _SCALE[n] for n, v in zip(names, x, strict=True)}
        try:
            return profile(profile.calibration(vals))
        except ValueError:  # an element's edge above an incident energy tried
            return math.inf, None, None

    x, converged, message = _gauss_newton(evaluate, x, lo, hi, y_fit, max_iter)
    fitted = {n: v * _SCALE[n] for n, v in zip(names, x, strict=True)}
    cal = profile.calibration(fitted)
    dev, a, basis = profile(cal)
    fit = CalibrationFit(
        calibration=cal, start=start, free=tuple(free), amplitudes=dict(zip(basis.names, a.tolist(), strict=True)),
        deviance=dev, n_fit=y_fit.size, n_parameters=len(free) + int(np.count_nonzero(a)),
        converged=converged, message=message, n_evaluations=profile.evaluations,
        basis=basis, spectrum=y_fit)
    at_limit = []
    for n in names:
        lo, hi = limits[n]
        v = fitted[n]
        tol = 1e-6 * max(abs(hi - lo), 1e-12)
        if v <= lo + tol and n not in _FRACTIONS:
            at_limit.append((n, "lower", lo))
        elif v >= hi - tol:
            at_limit.append((n, "upper", hi))
    if not converged or at_limit:
        what = f"stopped without converging ({message})" if not converged else "converged"
        limit_text = "; ".join(
            f"{n} at its {side} limit {lim:.6g}" + (" (as the energy at the middle channel)" if n == "offset" else "")
            for n, side, lim in at_limit)
        fix = ("Start closer: pass calibration=Calibration(...) with the beamline's values (e.g. "
               "Calibration.from_maps_override), check the energy axis and incident energy, and that `elements` "
               "lists the spectrum's lines")
        raise CalibrationError(f"calibration of the summed spectrum {what}"
                               f"{'; ' + limit_text if limit_text else ''}: {fit.summary()}. {fix}", fit)
    logger.info("calibration converged in %d evaluations: %s", profile.evaluations, fit.summary())
    return fit


def _grid_search(deviance, values: dict[str, float], limits, start: Calibration) -> dict[str, float]:
    """Coarse search of the axis position (the middle channel's energy), its scale and the incident energy."""
    values = dict(values)
    sigma = float(start.sigma(values.get("offset", 5.0)))
    for _ in range(1):
        if "offset" in values:
            centre = values["offset"]
            step = min(0.5 * sigma, 0.03)
            grid = centre + np.arange(-0.3, 0.3 + 1e-9, step)
            grid = grid[(grid >= limits["offset"][0]) & (grid <= limits["offset"][1])]
            values["offset"] = float(min(grid, key=lambda v: deviance({**values, "offset": v})))
        if "gain" in values:
            centre = values["gain"]
            grid = centre * (1 + np.arange(-0.03, 0.03 + 1e-9, 0.005))
            grid = grid[(grid >= limits["gain"][0]) & (grid <= limits["gain"][1])]
            values["gain"] = float(min(grid, key=lambda v: deviance({**values, "gain": v})))
        if "incident_energy" in values:
            centre = values["incident_energy"]
            grid = centre + np.arange(-0.3, 0.3 + 1e-9, 0.03)
            grid = grid[(grid >= limits["incident_energy"][0]) & (grid <= limits["incident_energy"][1])]
            values["incident_energy"] = float(min(grid, key=lambda v: deviance({**values, "incident_energy": v})))
    return values


def _gauss_newton(evaluate, x, lo, hi, y, max_iter, *, h=1e-3, rtol=1e-8):
    """Minimise the profile deviance over scaled parameters ``x`` in [lo, hi] by Levenberg-Marquardt.

    Each iteration: the model's derivatives in x by forward differences at the current amplitudes, the
    Poisson-weighted normal equations of (x, active amplitudes), damped steps until the profile deviance
    falls. Converged when an accepted step lowers it by less than ``rtol`` relatively (and 1e-4 absolutely).
    Returns (x, converged, message).
    """
    dev, a, basis = evaluate(x)
    if not math.isfinite(dev):
        return x, False, "the starting calibration cannot be evaluated"
    lam = 1e-3
    n = x.size
    for it in range(1, max_iter + 1):
        B = basis.matrix
        mu = B @ a
        w = 1.0 / np.maximum(mu, 1e-12)
        jac = np.empty((mu.size, n))
        for i in range(n):
            step = h if x[i] + h <= hi[i] else -h
            xi = x.copy()
            xi[i] += step
            _, _, basis_i = evaluate(xi)
            jac[:, i] = (basis_i.matrix @ a - mu) / step if basis_i is not None else 0.0
        active = a > 0
        X = np.hstack([jac, B[:, active]])
        G = (X * w[:, None]).T @ X
        g = (X * w[:, None]).T @ (y - mu)
        diag = np.maximum(np.diag(G), 1e-12 * max(np.diag(G).max(), 1e-300))
        for _ in range(12):
            try:
                delta = np.linalg.solve(G + lam * np.diag(diag), g)[:n]
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            x_new = np.clip(x + delta, lo, hi)
            dev_new, a_new, basis_new = evaluate(x_new)
            if dev_new < dev:
                break
            lam *= 4
        else:
            return x, True, f"no step lowers the deviance further ({it} iterations)"
        gain = dev - dev_new
        x, dev, a, basis = x_new, dev_new, a_new, basis_new
        lam = max(lam / 3, 1e-9)
        if gain < max(rtol * dev, 1e-4):
            return x, True, f"deviance changed by {gain:.2g} in the last step ({it} iterations)"
    return x, False, f"{max_iter} iterations without convergence"
