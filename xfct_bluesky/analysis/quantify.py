"""Quantification: element areal densities (ug/cm^2) from a thin-film standard, concentrations from DPC.

Areal densities, XRF-Maps' method (``src/core/process_whole.cpp`` ``perform_quantification``,
``src/quantification/models/quantification_model.cpp``, ``src/data_struct/detector.cpp``):

1. A thin-film standard of certified areal densities ``w_e`` (ug/cm^2; the AXO film at 2-ID-E, whose
   ``maps_standardinfo.txt`` :func:`read_standard_info` reads) is mapped and fitted. Each of its elements
   gets a *sensitivity*: counts per second of live time, per ug/cm^2, per I0 count per second of real
   time (XRF-Maps' ``e_cal_ratio``: counts over live time, over weight x I0 rate),

       S_e = sum_pixels c_e / (w_e sum_pixels (I0 / t_real) t_live).

2. One scale ``p`` is fitted to the standard's ``S_e`` (unweighted least squares of ``S_e - p Y_e``,
   XRF-Maps' ``minimize_quantification``), along the *quantification curve*

       Y_e = 1e-6 sum_lines sigma_l(E0) T_window(E_l) T_path(E_l) A_sensor(E_l)      (per ug/cm^2)

   with ``sigma_l`` each line's production cross-section at the beam energy ``E0`` (xraylib
   ``CS_FluorLine_Kissel_Cascade``, cm^2/g, cascade and Coster-Kronig included), ``T`` the transmissions
   of the detector's Be window and of the flight path, ``A`` the absorption in its Si sensor
   (:class:`DetectorResponse`). ``p`` is photons on the specimen per I0 count times the detector's solid
   angle over 4 pi. An element the standard lacks gets ``S_e = p Y_e``.
3. A map's areal density is ``a_e = c_e / (S_e (I0 / t_real) t_live)``: the live time corrects the dead
   time (:func:`areal_density`).

XRF-Maps' curve is ``p x absorption x T_Be x T_Ge x yield x (1 - T_Si) x T_air``: the shell's
photoabsorption (its jump ratio's share) times the shell's fluorescence yield, with every transmission
taken at the K-alpha1 (L-alpha1, M-alpha1) energy. Here each line of the family counts at its own
energy with its own cross-section, because the fit counts the whole family's photons
(:func:`~.fitting.fit_spectra`).

Concentration (Holzner et al. 2010; Kosior et al. 2012: phase contrast gives the mass the metal is
diluted in): the DPC x and y maps are the probe-blurred gradients of the optical path; integrated in
Fourier space (:func:`~.dpc.optical_path`: Frankot-Chellappa, which is the real part of Kottler et al.'s
complex integration ``F[g_x + i g_y] / (i (k_x + i k_y))``) they give the phase shift
``phi = 2 pi opd / lambda`` and the projected mass ``m = opd / (delta/rho)`` with ``delta/rho`` of the
specimen's bulk composition at the beam energy (xraylib ``Refractive_Index_Re``; :func:`projected_mass`).
The metal's mass over it is the concentration in ug/g = ppm, or mmol/kg (:func:`concentration`), in 2D,
and voxel by voxel in 3D from the metal's and the mass's reconstructions of the same geometry.

References
----------
XRF-Maps, AdvancedPhotonSource/XRF-Maps (A. Glowacki et al.); S. Vogt, "MAPS: a set of software tools for
analysis and visualization of 3D X-ray fluorescence data sets", J. Phys. IV 104:635 (2003),
doi:10.1051/jp4:20030160. T. Schoonjans et al., Spectrochim. Acta B 66:776 (2011),
doi:10.1016/j.sab.2011.09.011 (xraylib). C. Holzner et al., "Zernike phase contrast in scanning
microscopy with X-rays", Nat. Phys. 6:883 (2010), doi:10.1038/nphys1765. E. Kosior et al., "Combined use
of hard X-ray phase contrast imaging and X-ray fluorescence microscopy for sub-cellular metal
quantification", J. Struct. Biol. 177:239 (2012), doi:10.1016/j.jsb.2011.12.005. C. Kottler et al., "A
two-directional approach for grating based differential phase contrast imaging using hard X-rays",
Opt. Express 15:1175 (2007), doi:10.1364/OE.15.001175.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..physics import constants as C
from ..validate import between, negatives, one_of, positive, real
from .dpc import optical_path
from .fitting.lines import line_family, parse_family, xraylib_module

__all__ = [
    "PROTEIN", "ArealDensity", "Concentration", "DetectorResponse", "ProjectedMass", "StandardCalibration",
    "StandardInfo", "areal_density", "calibrate_standard", "concentration", "delta_per_density",
    "projected_mass", "read_standard_info",
]

#: Model protein of the physics sheet (Howells et al. 2009): the default bulk composition of a cell.
PROTEIN = "H48.6C32.9N8.9O8.9S0.6"
#: Flight-path gases: (xraylib formula, density g/cm^3 at 1 atm, 20 C), as the physics sheet computes them.
PATH_GASES = {"helium": ("He", 1.664e-4), "air": ("N78O21Ar1", 1.205e-3)}
_BE_DENSITY, _SI_DENSITY = 1.848, 2.33  # g/cm^3
#: Largest window, sensor and flight path (m) taken: beyond them a value is in the wrong unit.
_DETECTOR_LIMITS = {"window": 1e-3, "sensor": 5e-3, "path_length": 1.0}


# ------------------------------------------------------------------------------------- the detector ---
@dataclass(frozen=True)
class DetectorResponse:
    """What the detector passes of a fluorescence line: Be window, flight path, Si sensor.

    Defaults are the simulator's Vortex-EM (physics sheet: 12.5 um Be, 350 um Si, 15 mm of helium).

    Parameters
    ----------
    window : float
        Be window thickness (m); 0 for none.
    sensor : float or None
        Si sensor thickness (m); None for a sensor that absorbs every photon (XRF-Maps'
        ``DET_CHIP_THICKNESS: 0``).
    path_length : float
        Flight path from specimen to window (m).
    path_gas : {"helium", "air"}
    """

    window: float = 12.5e-6
    sensor: float | None = 350e-6
    path_length: float = 15e-3
    path_gas: str = "helium"

    def __post_init__(self):
        fix = "Give metres: 12.5 um is 12.5e-6."
        for name, high in _DETECTOR_LIMITS.items():
            value = getattr(self, name)
            if name == "sensor" and value is None:
                continue
            v = between(name, value, 0.0, high, open_low=name == "sensor", fix=fix, unit=" m")
            object.__setattr__(self, name, v)
        one_of("path_gas", self.path_gas, tuple(PATH_GASES))

    def efficiency(self, energy) -> np.ndarray:
        """Fraction (0-1) of photons of ``energy`` (keV) emitted towards the detector that it records."""
        xrl = xraylib_module()
        e = np.atleast_1d(np.asarray(energy, dtype=float))
        gas, density = PATH_GASES[self.path_gas]
        out = np.empty(e.shape)
        for i, v in enumerate(e.ravel()):
            t = math.exp(-xrl.CS_Total(4, v) * _BE_DENSITY * self.window * 100)
            t *= math.exp(-xrl.CS_Total_CP(gas, v) * density * self.path_length * 100)
            if self.sensor is not None:
                t *= -math.expm1(-xrl.CS_Photo(14, v) * _SI_DENSITY * self.sensor * 100)
            out.flat[i] = t
        return out.reshape(np.shape(energy))

    @classmethod
    def from_maps_override(cls, override) -> DetectorResponse:
        """The response an XRF-Maps override file describes (:func:`~.fitting.read_maps_override`).

        ``BE_WINDOW_THICKNESS`` and ``DET_CHIP_THICKNESS`` (um; 0: no window, a fully absorbing sensor)
        and ``AIRPATH`` (um of air; missing or 0: none), as XRF-Maps reads them.
        """
        raw = override.raw

        def microns(key: str) -> float:
            values = raw.get(key) or ["0"]
            try:
                return float(values[-1] or 0) * 1e-6
            except ValueError:
                raise ValueError(f"{override.path.name}: {key}: {values[-1]!r} is not a number (um)") from None

        material = (raw.get("DETECTOR_MATERIAL") or ["1"])[-1].strip()
        if material not in ("", "1"):
            raise ValueError(f"{override.path.name}: DETECTOR_MATERIAL: {material!r} is not 1 (Si); a Ge "
                             "detector's dead layer and escape are not modelled here")
        sensor = microns("DET_CHIP_THICKNESS")
        return cls(window=microns("BE_WINDOW_THICKNESS"), sensor=sensor or None,
                   path_length=microns("AIRPATH"), path_gas="air")


def _response(name: str, incident_energy: float, detector: DetectorResponse) -> float:
    """Y_e: detected photons of family ``name`` per incident photon per ug/cm^2, over 4 pi."""
    xrl = xraylib_module()
    family = line_family(name, incident_energy)
    cross = [xrl.CS_FluorLine_Kissel_Cascade(family.z, getattr(xrl, f"{label}_LINE"), family.incident_energy)
             for label in family.labels]
    return 1e-6 * float(np.dot(cross, detector.efficiency(family.energies)))


# ------------------------------------------------------------------------------- the standard file ---
@dataclass(frozen=True)
class StandardInfo:
    """One standard of a ``maps_standardinfo.txt``: its scan file and certified areal densities (ug/cm^2)."""

    filename: str
    areal_densities: dict[str, float]


_TAG = re.compile(r"^(FILENAME|ELEMENTS_IN_STANDARD|WEIGHT):(.*)$")


def read_standard_info(path) -> tuple[StandardInfo, ...]:
    """Read XRF-Maps' ``maps_standardinfo.txt``: every standard it lists, in order.

    Each standard is a ``FILENAME:`` line, an ``ELEMENTS_IN_STANDARD:`` line (comma-separated family
    names, ``Ca`` or ``Au_L``) and a ``WEIGHT:`` line (their areal densities, ug/cm^2) that closes it;
    other lines (XRF-Maps' indented explanations) are ignored, as XRF-Maps' ``load_quantification_
    standardinfo`` does.

    Raises
    ------
    ValueError
        A WEIGHT line before its FILENAME and ELEMENTS, names and weights of different number, a weight
        that is not a number > 0, an unknown element, or no standard at all; the message names the line.
    """
    path = Path(path)
    standards, filename, names = [], None, None
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        match = _TAG.match(line)
        if not match:
            continue
        tag, value = match.group(1), match.group(2).strip()
        where = f"{path.name} line {number}"
        if tag == "FILENAME":
            filename = value
        elif tag == "ELEMENTS_IN_STANDARD":
            names = [part.strip() for part in value.split(",") if part.strip()]
            for name in names:
                try:
                    parse_family(name)
                except ValueError as err:
                    raise ValueError(f"{where}: {err}") from None
        else:
            if not filename or names is None:
                raise ValueError(f"{where}: WEIGHT comes before the standard's FILENAME and ELEMENTS_IN_STANDARD "
                                 "lines; each standard is FILENAME, ELEMENTS_IN_STANDARD, then WEIGHT")
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if len(parts) != len(names):
                raise ValueError(f"{where}: {len(parts)} weights for {len(names)} elements ({', '.join(names)}); "
                                 "give one areal density (ug/cm^2) per element, in the same order")
            weights = {}
            for name, part in zip(names, parts, strict=True):
                try:
                    weights[name] = float(part)
                except ValueError:
                    raise ValueError(f"{where}: WEIGHT {part!r} of {name} is not a number; give its areal density "
                                     "in ug/cm^2") from None
                if not (math.isfinite(weights[name]) and weights[name] > 0):
                    raise ValueError(f"{where}: WEIGHT {part} of {name}; allowed: an areal density > 0 ug/cm^2")
            standards.append(StandardInfo(filename, weights))
            filename, names = None, None
    if not standards:
        raise ValueError(f"{path.name} lists no standard (no FILENAME / ELEMENTS_IN_STANDARD / WEIGHT lines); "
                         "is it an XRF-Maps maps_standardinfo.txt?")
    return tuple(standards)


# ------------------------------------------------------------------------------------ normalisation ---
def _sigma(name: str, c: np.ndarray, sigma) -> np.ndarray:
    """The standard errors of ``c``, the counts of ``name``: given, else Poisson's sqrt(counts)."""
    if sigma is None or name not in sigma:
        return np.sqrt(np.maximum(c, 0.0))
    s = real(f"sigma[{name!r}]", sigma[name]).astype(float)
    if s.shape != c.shape:
        raise ValueError(f"sigma[{name!r}] has shape {s.shape}, its counts {c.shape}; give one sigma per pixel")
    return s


def _maps(counts, sigma):
    """(counts, sigma or None) mappings from a SpectrumFit or from mappings of name to array."""
    if hasattr(counts, "counts") and hasattr(counts, "sigma") and not isinstance(counts, Mapping):
        return dict(counts.counts), (dict(counts.sigma) if sigma is None else sigma)
    if not isinstance(counts, Mapping):
        raise ValueError(
            f"counts is a {type(counts).__name__}; allowed: a SpectrumFit (fit_spectra's result) or a mapping "
            "of line family ('Zn', 'Au_L') to its counts per pixel")
    return dict(counts), sigma


def _exposure(shape, i0, live_time, real_time) -> np.ndarray:
    """(I0 / t_real) t_live per pixel (I0 counts per second of real time, times live seconds)."""
    arrays = {}
    for name, value, fix in (
            ("i0", i0, "Give the I0 counts of each pixel (the upstream ion chamber's scaler)."),
            ("live_time", live_time, "Give the fluorescence detector's live time per pixel in seconds."),
            ("real_time", real_time, "Give the I0 scaler's counting time per pixel in seconds (the dwell).")):
        a = real(name, value).astype(float)
        found = negatives(name, a)
        if found or not np.isfinite(a).all():
            raise ValueError(f"{found or f'{name} has NaN or infinite values'}; allowed: finite values >= 0. {fix}")
        try:
            arrays[name] = np.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"{name} has shape {a.shape}, the counts {shape}; give one value per pixel "
                             "(or one for all)") from None
    if np.any((arrays["real_time"] == 0) & (arrays["i0"] > 0)):
        raise ValueError("real_time is 0 where i0 is not; allowed: real_time > 0 s. Give the counting time")
    rate = np.divide(arrays["i0"], arrays["real_time"], out=np.zeros(shape), where=arrays["real_time"] > 0)
    live = arrays["live_time"]
    if np.any(live > arrays["real_time"] * 1.05 + 1e-9):
        bad = np.unravel_index(int(np.argmax(live - arrays["real_time"])), shape) if shape else ()
        raise ValueError(f"live_time exceeds real_time (at pixel {tuple(int(i) for i in bad)}: "
                         f"{float(live[bad]):g} s > {float(arrays['real_time'][bad]):g} s); the live time is the "
                         "real time less the dead time: check which is which, and that both are in seconds")
    return rate * live


# ----------------------------------------------------------------------------------- the calibration ---
@dataclass(frozen=True)
class StandardCalibration:
    """Sensitivities measured on a standard, and the quantification curve through them.

    Sensitivities are counts / (ug/cm^2 x I0 rate x live time): counts per live second, per ug/cm^2,
    per I0 count per real second (XRF-Maps' ``e_cal_ratio``).

    Attributes
    ----------
    measured, measured_sigma : dict of str to float
        Each standard element's sensitivity and its standard error (counting statistics of the standard).
    areal_densities : dict of str to float
        The certified areal densities (ug/cm^2) used.
    scale, scale_sigma : float
        ``p`` of the curve ``S_e = p Y_e`` (photons on the specimen per I0 count x solid angle / 4 pi),
        and its standard error from the measured sigma.
    incident_energy : float
        Beam energy (keV) of the cross-sections.
    detector : DetectorResponse
    """

    measured: dict[str, float]
    measured_sigma: dict[str, float]
    areal_densities: dict[str, float]
    scale: float
    scale_sigma: float
    incident_energy: float
    detector: DetectorResponse
    _responses: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def response(self, name: str) -> float:
        """Y_e of family ``name``: detected photons per incident photon per ug/cm^2, over 4 pi."""
        if name not in self._responses:
            self._responses[name] = _response(name, self.incident_energy, self.detector)
        return self._responses[name]

    def curve(self, name: str) -> float:
        """Sensitivity of family ``name`` on the quantification curve, ``p Y_e``."""
        return self.scale * self.response(name)

    @property
    def deviations(self) -> dict[str, float]:
        """How far each standard element falls from the curve: measured / curve - 1."""
        return {name: s / self.curve(name) - 1 for name, s in self.measured.items()}

    @property
    def scatter(self) -> float:
        """rms of :attr:`deviations` about the curve (relative; 0 with a single element)."""
        d = np.array(list(self.deviations.values()))
        return float(np.sqrt(np.mean(d**2))) if d.size > 1 else 0.0

    def sensitivity(self, name: str) -> float:
        """The sensitivity to quantify ``name`` with: measured if the standard holds it, else the curve's."""
        return self.measured[name] if name in self.measured else self.curve(name)

    def sigma(self, name: str) -> float:
        """Standard error of :meth:`sensitivity`; off the standard, the curve's scatter and scale error."""
        if name in self.measured:
            return self.measured_sigma[name]
        return self.curve(name) * math.hypot(self.scatter, self.scale_sigma / self.scale)


def calibrate_standard(counts, areal_densities: Mapping[str, float], *, i0, live_time, real_time,
                       sigma: Mapping[str, np.ndarray] | None = None, incident_energy: float | None = None,
                       detector: DetectorResponse | None = None) -> StandardCalibration:
    """Sensitivities of the standard's elements and the quantification curve through them.

    Parameters
    ----------
    counts : SpectrumFit or mapping of str to array
        The standard's fitted counts per pixel (:func:`~.fitting.fit_spectra`, before dead-time
        correction), by family name.
    areal_densities : mapping of str to float
        Certified areal densities (ug/cm^2) of the standard's elements (:func:`read_standard_info`).
    i0 : array
        I0 counts per pixel.
    live_time, real_time : array or float
        Fluorescence live time and I0 counting (real) time per pixel (s).
    sigma : mapping of str to array, optional
        Standard errors of ``counts`` (default: a SpectrumFit's, or Poisson ``sqrt(counts)``).
    incident_energy : float, optional
        Beam energy (keV); default a SpectrumFit's calibrated one.
    detector : DetectorResponse, optional
        Window, path and sensor of the detector (default :class:`DetectorResponse`'s Vortex-EM).

    Returns
    -------
    StandardCalibration

    Raises
    ------
    ValueError
        An element of ``areal_densities`` without counts, a density <= 0, an element's counts summing to
        0 or less, no I0, negative times or I0, shapes that differ, a family the beam does not excite.
    """
    fit_energy = getattr(getattr(counts, "calibration", None), "incident_energy", None)
    counts, sigma = _maps(counts, sigma)
    energy = incident_energy if incident_energy is not None else fit_energy
    if energy is None:
        raise ValueError("incident_energy is needed with counts given as a mapping: give the beam energy in keV")
    energy = positive("incident_energy", energy, fix="Give the beam energy in keV (10.2 at 2-ID-E).", unit=" keV")
    detector = DetectorResponse() if detector is None else detector
    if not isinstance(detector, DetectorResponse):
        raise ValueError(
            f"detector is a {type(detector).__name__}; give a DetectorResponse (window, sensor, path)")
    if not areal_densities:
        raise ValueError("areal_densities is empty; give the standard's certified ug/cm^2 per element")
    missing = [name for name in areal_densities if name not in counts]
    if missing:
        raise ValueError(f"no counts for {missing}, which areal_densities lists; the counts hold "
                         f"{sorted(counts)}. Fit the standard with every element it holds")
    measured, errors, weights = {}, {}, {}
    n = None
    for name, w in areal_densities.items():
        w = positive(f"areal_densities[{name!r}]", w, fix="Give the certified areal density in ug/cm^2.",
                     unit=" ug/cm^2")
        c = real(f"counts[{name!r}]", counts[name]).astype(float)
        if n is None or n.shape != c.shape:
            n = _exposure(c.shape, i0, live_time, real_time)
            if not n.sum() > 0:
                raise ValueError("i0 x live_time is 0 in every pixel of the standard: no beam was measured. Give "
                                 "the I0 counts and live times of the standard's own map")
        total = float(c.sum())
        if not total > 0:
            raise ValueError(f"the standard's {name} counts sum to {total:g}; allowed: > 0. Is {name} in this "
                             "standard, and were its lines inside the fitted energy range?")
        denominator = w * float(n.sum())
        measured[name] = total / denominator
        errors[name] = float(np.sqrt(np.sum(_sigma(name, c, sigma) ** 2))) / denominator
        weights[name] = w
    y = np.array([_response(name, energy, detector) for name in measured])
    if not np.all(y > 0):
        bad = [name for name, v in zip(measured, y, strict=True) if not v > 0]
        raise ValueError(f"{bad}: no detected fluorescence at {energy:g} keV through this detector; check the "
                         "incident energy and the detector's window and path")
    s = np.array(list(measured.values()))
    ds = np.array(list(errors.values()))
    # XRF-Maps fits p by unweighted least squares of S_e - p Y_e: closed form for one parameter
    scale = float(s @ y / (y @ y))
    scale_sigma = float(np.sqrt(np.sum((y * ds) ** 2)) / (y @ y))
    return StandardCalibration(measured, errors, weights, scale, scale_sigma, energy, detector,
                               dict(zip(measured, y.tolist(), strict=True)))


# ------------------------------------------------------------------------------------ areal density ---
@dataclass(frozen=True)
class ArealDensity:
    """Areal density maps (ug/cm^2) with their standard errors.

    ``values`` and ``sigma`` by family name; NaN where no beam was measured (I0 x live time = 0).
    ``sensitivity`` holds the sensitivity each was quantified with.
    """

    values: dict[str, np.ndarray]
    sigma: dict[str, np.ndarray]
    sensitivity: dict[str, float]


def areal_density(counts, calibration: StandardCalibration, *, i0, live_time, real_time,
                  sigma: Mapping[str, np.ndarray] | None = None, elements=None) -> ArealDensity:
    """Areal densities (ug/cm^2) from fitted counts: ``c / (S (I0 / t_real) t_live)``.

    Parameters
    ----------
    counts : SpectrumFit or mapping of str to array
        Fitted counts per pixel by family name (before dead-time correction).
    calibration : StandardCalibration
        From :func:`calibrate_standard`: the standard's sensitivity for its elements, the curve's for others.
    i0, live_time, real_time : array or float
        As in :func:`calibrate_standard`, for this map.
    sigma : mapping of str to array, optional
        Standard errors of ``counts`` (default: a SpectrumFit's, or Poisson ``sqrt(counts)``).
    elements : sequence of str, optional
        Families to quantify (default: all in ``counts``).

    Returns
    -------
    ArealDensity
        float64 maps; sigma combines the counts' error and the sensitivity's,
        ``sigma_a^2 = (sigma_c / (S n))^2 + (a sigma_S / S)^2`` with ``n = (I0 / t_real) t_live``. I0
        and the times are taken as exact (an ion chamber's counts are not photon counts).
    """
    if not isinstance(calibration, StandardCalibration):
        raise ValueError(
            f"calibration is a {type(calibration).__name__}; give calibrate_standard's result")
    counts, sigma = _maps(counts, sigma)
    names = tuple(counts) if elements is None else ((elements,) if isinstance(elements, str) else tuple(elements))
    unknown = [name for name in names if name not in counts]
    if unknown:
        raise ValueError(f"elements {unknown} have no counts; the counts hold {sorted(counts)}")
    values, errors, used = {}, {}, {}
    n = None
    for name in names:
        c = real(f"counts[{name!r}]", counts[name]).astype(float)
        if n is None or n.shape != c.shape:
            n = _exposure(c.shape, i0, live_time, real_time)
        s = calibration.sensitivity(name)
        ds = calibration.sigma(name)
        sc = _sigma(name, c, sigma)
        denominator = s * n
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(n > 0, c / denominator, np.nan)
            err = np.where(n > 0, np.hypot(sc / denominator, a * ds / s), np.nan)
        values[name], errors[name], used[name] = a, err, s
    return ArealDensity(values, errors, used)


# --------------------------------------------------------------------------------- mass from the DPC ---
def delta_per_density(composition: str = PROTEIN, energy: float = C.BEAM_ENERGY_KEV) -> float:
    """delta / rho (cm^3/g) of ``composition`` (a chemical formula) at ``energy`` (keV), from xraylib."""
    energy = positive("energy", energy, fix="Give the beam energy in keV (10.2 at 2-ID-E).", unit=" keV")
    if not isinstance(composition, str):
        raise ValueError(
            f"composition={composition!r}; allowed: a chemical formula such as {PROTEIN!r}")
    try:
        return 1.0 - xraylib_module().Refractive_Index_Re(composition, energy, 1.0)
    except ValueError:
        raise ValueError(f"composition={composition!r} is not a formula xraylib reads; allowed: element symbols "
                         f"with amounts, such as {PROTEIN!r} (protein) or 'H2O'") from None


@dataclass(frozen=True)
class ProjectedMass:
    """Projected phase and mass from DPC (:func:`projected_mass`); maps of the DPC's shape.

    Attributes
    ----------
    phase : float32 array
        Phase shift 2 pi opd / lambda (rad), 0 on the background.
    optical_path : float32 array
        Optical path difference, the integral of delta dz (m).
    mass : float32 array
        Projected mass (g/cm^2) of the bulk composition.
    delta_per_density : float
        delta / rho (cm^3/g) used.
    composition : str
    energy : float
        keV.
    """

    phase: np.ndarray
    optical_path: np.ndarray
    mass: np.ndarray
    delta_per_density: float
    composition: str
    energy: float


def projected_mass(dpc_x, dpc_y, *, pixel_size: float, numerical_aperture: float, energy: float,
                   central_stop_ratio: float = 0.4, composition: str = PROTEIN, background=None) -> ProjectedMass:
    """Phase and projected mass (g/cm^2) from the x and y DPC maps.

    Parameters
    ----------
    dpc_x, dpc_y : (..., ny, nx) array
        Difference-over-sum DPC along x and y (:func:`~.dpc.dpc_from_segments`).
    pixel_size : float
        Scan step (m).
    numerical_aperture, central_stop_ratio : float
        Probe NA (rad) and the bright-field annulus' stop ratio (:func:`~.dpc.deflection`).
    energy : float
        Beam energy (keV).
    composition : str
        Bulk composition whose delta / rho turns the optical path into mass (default :data:`PROTEIN`;
        ``"H2O"`` for ice).
    background : bool array (ny, nx), optional
        Pixels with no specimen, where the mass is 0 (the integration loses the constant). Default: the
        two columns at each side of the map, outside the specimen in a tomography field.

    Returns
    -------
    ProjectedMass

    Notes
    -----
    The integration (Frankot-Chellappa on the mirrored maps, :func:`~.dpc.integrate_gradients`) keeps
    what the gradients say and drops their curl, but integrated noise grows towards low spatial
    frequencies: the mass of a region far from the background pixels carries that error. A specimen
    mostly of another composition (lipid, the capillary's methylcellulose) scales the mass by the ratio
    of the delta / rho values.
    """
    delta_rho = delta_per_density(composition, energy)
    opd = optical_path(dpc_x, dpc_y, pixel_size=pixel_size, numerical_aperture=numerical_aperture,
                       central_stop_ratio=central_stop_ratio).astype(np.float64)
    ny, nx = opd.shape[-2:]
    if background is None:
        if nx < 8:
            raise ValueError(f"maps are {nx} px wide; the default background (two columns each side) needs "
                             "at least 8: give background= (a mask of pixels without specimen)")
        mask = np.zeros((ny, nx), bool)
        mask[:, :2] = mask[:, -2:] = True
    else:
        mask = np.asarray(background)
        if mask.dtype != bool or mask.shape != (ny, nx):
            raise ValueError(f"background has dtype {mask.dtype} and shape {mask.shape}; allowed: a bool mask of "
                             f"shape {(ny, nx)}, True where there is no specimen")
        if not mask.any():
            raise ValueError("background marks no pixel; mark pixels without specimen (True), where mass is 0")
    opd = opd - opd[..., mask].mean(axis=-1)[..., None, None]
    wavelength = C.wavelength(energy)
    return ProjectedMass(phase=(2 * math.pi / wavelength * opd).astype(np.float32),
                         optical_path=opd.astype(np.float32),
                         mass=(100.0 * opd / delta_rho).astype(np.float32),  # opd in cm over cm^3/g
                         delta_per_density=delta_rho, composition=composition, energy=float(energy))


# ----------------------------------------------------------------------------------- concentration ---
@dataclass(frozen=True)
class Concentration:
    """Metal mass over total mass: ``ppm`` (ug/g) and mmol/kg; NaN where the mass is below ``min_mass``.

    Attributes
    ----------
    ppm : float64 array
    sigma_ppm : float64 array or None
        From the metal's standard error only (the DPC mass's is not propagated).
    element : str
    atomic_weight : float
        g/mol (xraylib).
    min_mass : float
        The mass threshold used (units of the mass given).
    """

    ppm: np.ndarray
    sigma_ppm: np.ndarray | None
    element: str
    atomic_weight: float
    min_mass: float

    @property
    def mmol_per_kg(self) -> np.ndarray:
        """mmol of the metal per kg of mass: ppm (mg/kg) / atomic weight (mg/mmol)."""
        return self.ppm / self.atomic_weight


def concentration(metal, mass, *, element: str, metal_sigma=None, min_mass: float | None = None) -> Concentration:
    """Concentration of a metal in the specimen's mass, per pixel (2D) or per voxel (3D).

    Parameters
    ----------
    metal : array
        The metal's areal density (ug/cm^2, :func:`areal_density`), or its reconstructed density.
    mass : array
        Projected mass (g/cm^2, :func:`projected_mass`), or its reconstruction, same shape and geometry
        (the same algorithm, angles, centre and voxel size, so that the units of length cancel).
    element : str
        The metal's family name (``"Zn"``), for its atomic weight.
    metal_sigma : array, optional
        Standard error of ``metal``.
    min_mass : float, optional
        Mass below which the ratio is NaN (outside the specimen it is noise over noise). Default: a tenth
        of the mass's 99th percentile.

    Returns
    -------
    Concentration
    """
    _, z, _ = parse_family(element)
    m = real("metal", metal).astype(float)
    rho = real("mass", mass).astype(float)
    if m.shape != rho.shape:
        raise ValueError(f"metal has shape {m.shape} and mass {rho.shape}; give maps (or volumes) of the same "
                         "geometry: reconstruct both with the same angles, centre and size")
    if min_mass is None:
        top = float(np.nanpercentile(rho, 99)) if np.isfinite(rho).any() else 0.0
        if not top > 0:
            raise ValueError("mass is nowhere > 0: no specimen in the mass map, or its sign is flipped (check the "
                             "DPC directions)")
        min_mass = 0.1 * top
    min_mass = positive("min_mass", min_mass, fix="Give the mass (units of `mass`) below which to leave pixels out.")
    with np.errstate(divide="ignore", invalid="ignore"):
        ppm = np.where(rho >= min_mass, m / rho, np.nan)
        sigma = None
        if metal_sigma is not None:
            s = real("metal_sigma", metal_sigma).astype(float)
            if s.shape != m.shape:
                raise ValueError(f"metal_sigma has shape {s.shape}, metal {m.shape}; give one sigma per pixel")
            sigma = np.where(rho >= min_mass, s / rho, np.nan)
    return Concentration(ppm, sigma, element, float(xraylib_module().AtomicWeight(z)), min_mass)
