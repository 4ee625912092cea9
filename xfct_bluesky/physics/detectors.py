"""Detector models: the segmented transmission detector and the Vortex SDD.

Segmented detector (physics sheet sections 3-4)
-----------------------------------------------
The bright-field disc (angular radius NA, central-stop ratio r) is shifted on
the detector by epsilon = alpha / NA, where alpha is the probe-weighted mean
deflection (the gradient of the blurred optical path). For |epsilon| << 1 the
fraction of the disc on each quadrant is

    q1 (+x, +y) = 1/4 + ( ex + ey) / (pi (1 + r))
    q2 (-x, +y) = 1/4 + (-ex + ey) / (pi (1 + r))
    q3 (-x, -y) = 1/4 + (-ex - ey) / (pi (1 + r))
    q4 (+x, -y) = 1/4 + ( ex - ey) / (pi (1 + r))

so that difference over sum gives DPC_x = (4/pi) ex / (1 + r) and the
diagonal (q1 - q3)/(q1 + q3) = (4 sqrt 2 / pi) e_45 / (1 + r) for a shift
e_45 along the bisector, the geometric gains of the sheet. The detector
integrates charge at this flux; its noise is the photon shot noise.

Vortex (physics sheet sections 1, 2, 4)
---------------------------------------
Expected spectra are sums of Gaussian lines (K-alpha1, K-alpha2, K-beta1 of
each element), elastic and Compton scatter, a flat incomplete-charge shelf
under every peak and a constant background, with the MAPS 2-ID-E resolution
sigma^2 = (offset / 2.3548)^2 + 2.96 fanoprime E. Counts are Poisson and
thinned by a paralyzable dead time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from ..validate import integer, non_negative, one_of, positive
from . import constants as C
from .specimen import ELEMENT_SYMBOLS

QUADRANTS = ("q1", "q2", "q3", "q4")


@dataclass(frozen=True)
class SegmentedDetectorModel:
    """Quadrant transmission detector.

    Parameters
    ----------
    central_stop_ratio : float
        Inner radius of the bright-field annulus over its outer radius (0-0.9).
    efficiency : float
        Fraction of transmitted photons absorbed (0.89 for 300 um Si at 10.2 keV).
    """

    central_stop_ratio: float = 0.4
    efficiency: float = 0.89

    def __post_init__(self):
        if not 0 <= self.central_stop_ratio < 0.95:
            raise ValueError(f"central_stop_ratio={self.central_stop_ratio!r} must be in [0, 0.95)")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency={self.efficiency!r} must be in (0, 1]")

    @property
    def gain_x(self) -> float:
        """DPC_x per unit epsilon_x: (4/pi)/(1+r)."""
        return 4 / math.pi / (1 + self.central_stop_ratio)

    @property
    def gain_diagonal(self) -> float:
        """Diagonal DPC per unit shift along the bisector: (4 sqrt 2/pi)/(1+r)."""
        return 4 * math.sqrt(2) / math.pi / (1 + self.central_stop_ratio)

    def fractions(self, eps_x, eps_y) -> np.ndarray:
        """Quadrant fractions, (4, ...) for q1..q4, clipped to [0, 1/2]."""
        k = 1 / (math.pi * (1 + self.central_stop_ratio))
        ex, ey = np.asarray(eps_x), np.asarray(eps_y)
        f = np.stack([0.25 + k * (ex + ey), 0.25 + k * (-ex + ey), 0.25 + k * (-ex - ey), 0.25 + k * (ex - ey)])
        return np.clip(f, 0.0, 0.5)

    def sample(self, transmitted, eps_x, eps_y, rng: np.random.Generator) -> np.ndarray:
        """Poisson quadrant counts (4, ...) uint32 for ``transmitted`` photons per pixel."""
        lam = self.fractions(eps_x, eps_y) * (np.asarray(transmitted) * self.efficiency)[None]
        return rng.poisson(lam).astype(np.uint32)

    @staticmethod
    def dpc(q: np.ndarray) -> dict[str, np.ndarray]:
        """DPC x, y, diagonal (float32) and the sum from quadrant counts (4, ...): the analysis' own
        :func:`~xfct_bluesky.analysis.dpc.dpc_from_segments`, so the simulator's maps are what a beamline's
        counts give (imported at call time: the simulator does not load the analysis package otherwise)."""
        from ..analysis.dpc import dpc_from_segments

        q = np.asarray(q, dtype=np.float64)
        maps = dpc_from_segments(q[0], q[1], q[2], q[3])
        return {"dpc_x": maps.x, "dpc_y": maps.y, "dpc_diag": maps.diagonal, "sum": q.sum(axis=0)}

    def diagonal_noise(self, detected) -> np.ndarray:
        """Shot-noise sigma of the diagonal DPC: sqrt(4ab/(a+b)^3), a = b = detected/4."""
        a = np.asarray(detected, dtype=float) / 4
        return np.sqrt(4 * a * a / (2 * a) ** 3)


def _resolution_sigma(energy_kev, offset=C.VORTEX_FWHM_OFFSET, fanoprime=C.VORTEX_FANOPRIME):
    e = np.asarray(energy_kev, dtype=float)
    return np.sqrt((offset / 2.3548) ** 2 + e * 2.96 * fanoprime)


@dataclass
class VortexModel:
    """Energy-dispersive silicon drift detector (SII Vortex-EM).

    Parameters
    ----------
    n_channels : int
        MCA channels (2048).
    channel_width : float
        keV per channel (0.01: 0-20.48 keV).
    distance, area : float
        Sample-detector distance and active area (m); 15 mm and 50 mm^2.
    path : {"helium", "air"}
        Flight path; sets the low-energy transmission (sensitivity table).
    dead_time : float
        Paralyzable dead time (s) at 2 us shaping: 2-4 us.
    shelf_fraction : float
        Fraction of each peak's counts in a flat incomplete-charge shelf from 0
        to the peak energy (peak/background 10^3-10^4).
    background_cps : float
        Constant background (cps over the whole spectrum at 5e9 photons/s, scales
        with flux): Zn/Cu in apertures and mounts.
    air_scatter_mass : float
        Areal mass (g/cm^2) of air/windows that scatter into the detector.
    self_absorption : bool
        Apply the sheet's mean self-absorption of each line in the cell.
    roi_width_fwhm : float
        Half-width of each element's ROI window in units of the line FWHM (1
        as in Hong et al.).
    elements : tuple of str
        Elements with ROIs.
    """

    n_channels: int = 2048
    channel_width: float = 0.01
    distance: float = C.VORTEX_DISTANCE
    area: float = C.VORTEX_AREA
    path: str = "helium"
    dead_time: float = 3e-6
    shelf_fraction: float = 5e-3
    background_cps: float = 0.5
    air_scatter_mass: float = 1e-3
    self_absorption: bool = True
    roi_width_fwhm: float = 1.0
    elements: tuple[str, ...] = ELEMENT_SYMBOLS
    energy_kev: float = C.BEAM_ENERGY_KEV
    _shapes: np.ndarray = field(init=False, repr=False)
    _cdf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        one_of("path", self.path, ("helium", "air"), fix="The gas between the specimen and the Vortex.")
        integer("n_channels", self.n_channels, low=64, high=16384, fix="The Vortex has 2048.")
        positive("channel_width", self.channel_width, fix="Use 0.01 keV/channel.", unit=" keV")
        positive("distance", self.distance, fix="Use 15e-3 m.", unit=" m")
        positive("area", self.area, fix="Use 50e-6 m^2.", unit=" m^2")
        non_negative("dead_time", self.dead_time, fix="Use 2e-6 to 4e-6 s.", unit=" s")
        for sym in self.elements:
            C.element(sym)
        self.elements = tuple(self.elements)
        self._build()

    # -- spectral shapes ---------------------------------------------------
    @property
    def component_names(self) -> tuple[str, ...]:
        return (*self.elements, "elastic", "compton", "background")

    @property
    def energies(self) -> np.ndarray:
        """Channel centre energies (keV)."""
        return (np.arange(self.n_channels) + 0.5) * self.channel_width

    def _gauss_bins(self, e0, sigma):
        edges = np.arange(self.n_channels + 1) * self.channel_width
        return np.diff(ndtr((edges - e0) / sigma))

    def _peak(self, e0, sigma):
        shape = (1 - self.shelf_fraction) * self._gauss_bins(e0, sigma)
        edges = np.arange(self.n_channels + 1) * self.channel_width
        shelf = np.clip(np.minimum(edges[1:], e0) - edges[:-1], 0, None) / e0
        return shape + self.shelf_fraction * shelf

    def _build(self):
        shapes = []
        for sym in self.elements:
            el = C.ELEMENTS[sym]
            s = (2 / 3) * self._peak(el.ka1, _resolution_sigma(el.ka1))
            s += (1 / 3) * self._peak(el.ka2, _resolution_sigma(el.ka2))
            s += el.kb_over_ka * self._peak(el.kb1, _resolution_sigma(el.kb1))
            shapes.append(s / (1 + el.kb_over_ka))
        shapes.append(self._peak(self.energy_kev, _resolution_sigma(self.energy_kev)))
        sig_c = _resolution_sigma(C.COMPTON_ENERGY_KEV) * C.COMPTON_FWHM_CORR
        shapes.append(self._peak(C.COMPTON_ENERGY_KEV * self.energy_kev / C.BEAM_ENERGY_KEV, sig_c))
        shapes.append(np.full(self.n_channels, 1.0 / self.n_channels))
        self._shapes = np.array(shapes)  # (n_comp, n_channels); each sums to <= 1
        cdf = np.cumsum(self._shapes, axis=1)
        self._cdf = cdf / cdf[:, -1:]

    @property
    def shapes(self) -> np.ndarray:
        """Normalised spectral shape of each component, (n_comp, n_channels)."""
        return self._shapes

    def roi_window(self, symbol: str) -> tuple[int, int]:
        """Channel range [lo, hi) of an element's K-alpha window (line +- roi_width FWHM)."""
        el = C.element(symbol)
        fwhm = 2.3548 * float(_resolution_sigma(el.ka))
        lo = int(round((el.ka - self.roi_width_fwhm * fwhm) / self.channel_width))
        hi = int(round((el.ka + self.roi_width_fwhm * fwhm) / self.channel_width))
        return max(lo, 0), min(hi, self.n_channels)

    # -- rates ---------------------------------------------------------------
    @property
    def solid_angle_fraction(self) -> float:
        return C.solid_angle_fraction(self.area, self.distance)

    def element_sensitivity(self, symbol: str, flux: float) -> float:
        """Detected K (alpha + beta) cps per ug/cm^2 at ``flux``."""
        el = C.element(symbol)
        emitted = flux * el.atoms_per_ug * el.sigma_ka * 1e-24 * (1 + el.kb_over_ka)
        t = el.self_transmission if self.self_absorption else 1.0
        return emitted * self.solid_angle_fraction * el.detector_efficiency(self.path) * t

    def rates(self, areal: dict[str, np.ndarray], mass: np.ndarray, flux: float) -> np.ndarray:
        """Expected detected cps per component, (n_comp, ...), before dead time.

        ``areal`` maps element symbol to ug/cm^2; ``mass`` is g/cm^2.
        """
        mass = np.asarray(mass, dtype=float)
        out = np.empty((len(self.component_names), *mass.shape))
        for k, sym in enumerate(self.elements):
            out[k] = self.element_sensitivity(sym, flux) * areal[sym]
        omega_scale = self.solid_angle_fraction / C.solid_angle_fraction(C.VORTEX_AREA, C.VORTEX_DISTANCE)
        scattering = flux * (mass + self.air_scatter_mass) * omega_scale
        out[-3] = C.SCATTER_ELASTIC_PER_MASS * scattering
        out[-2] = C.SCATTER_COMPTON_PER_MASS * scattering
        out[-1] = self.background_cps * flux / C.FLUX  # beam-induced (apertures, mounts)
        return out

    def live_fraction(self, rates: np.ndarray) -> np.ndarray:
        """exp(-ICR tau) for a paralyzable detector; ``rates`` (n_comp, ...)."""
        return np.exp(-rates.sum(axis=0) * self.dead_time)

    def count_statistics(self, rates: np.ndarray, dwell: float) -> dict[str, np.ndarray]:
        """Real time (s), input and output count rates (1/s) per pixel for component ``rates`` (n_comp, ...).

        The statistics an Xspress3 or XIA processor reports with each spectrum: ICR is the rate of photons
        reaching the detector, OCR = ICR x live fraction the rate of those recorded, and the real time the
        dwell; with :meth:`live_fraction` the live time is real time x OCR / ICR.
        """
        icr = np.asarray(rates, dtype=float).sum(axis=0)
        return {"real_time": np.full(icr.shape, float(dwell)), "icr": icr, "ocr": icr * self.live_fraction(rates)}

    @property
    def energy_calibration(self) -> dict[str, float]:
        """E (keV) of channel i = offset + gain i + quadratic i^2, i from 0: the mca record's CALO/CALS/CALQ.

        The channel centres of :attr:`energies`: offset half a channel, gain the channel width.
        """
        return {"offset": 0.5 * self.channel_width, "gain": self.channel_width, "quadratic": 0.0}

    def roi_windows_kev(self) -> dict[str, tuple[float, float]]:
        """Each element's ROI window as channel edges in keV, [low, high): channels :meth:`roi_window`."""
        out = {}
        for sym in self.elements:
            lo, hi = self.roi_window(sym)
            out[sym] = (lo * self.channel_width, hi * self.channel_width)
        return out

    def expected_spectrum(self, rates: np.ndarray, dwell: float) -> np.ndarray:
        """Mean recorded spectrum (..., n_channels) for component ``rates`` (n_comp, ...)."""
        live = self.live_fraction(rates)
        counts = rates * (dwell * live)[None]
        return np.moveaxis(np.tensordot(self._shapes.T, counts, axes=(1, 0)), 0, -1)

    def expected_rois(self, rates: np.ndarray, dwell: float) -> dict[str, np.ndarray]:
        """Mean recorded ROI counts per element for component ``rates`` (n_comp, ...)."""
        lam = rates * (dwell * self.live_fraction(rates))[None]
        roi = np.tensordot(self.roi_fractions().T, lam, axes=(1, 0))
        return {sym: roi[j] for j, sym in enumerate(self.elements)}

    def roi_fractions(self) -> np.ndarray:
        """(n_comp, n_elements): fraction of each component's counts in each ROI."""
        cum = np.concatenate([np.zeros((len(self._shapes), 1)), np.cumsum(self._shapes, axis=1)], axis=1)
        out = np.empty((len(self._shapes), len(self.elements)))
        for j, sym in enumerate(self.elements):
            lo, hi = self.roi_window(sym)
            out[:, j] = cum[:, hi] - cum[:, lo]
        return out

    # -- sampling --------------------------------------------------------------
    def sample(self, rates: np.ndarray, dwell: float, rng: np.random.Generator, spectra: bool = True):
        """Poisson-sampled ROI counts, and optionally full spectra.

        Parameters
        ----------
        rates : (n_comp, ny, nx) expected cps per component.
        dwell : float, s.
        spectra : bool
            If True, every detected photon gets a channel and the ROI counts are
            sums over the spectrum windows; otherwise ROI counts are drawn
            directly (same distribution when the windows do not overlap).

        Returns
        -------
        rois : dict symbol -> (ny, nx) uint32
        spectra : (ny, nx, n_channels) uint32 or None
        live_time : (ny, nx) float32, s
        """
        live = self.live_fraction(rates)
        lam = rates * (dwell * live)[None]
        shape = lam.shape[1:]
        if not spectra:
            roi_lam = np.tensordot(self.roi_fractions().T, lam, axes=(1, 0))
            counts = rng.poisson(roi_lam).astype(np.uint32)
            return {s: counts[j] for j, s in enumerate(self.elements)}, None, (dwell * live).astype(np.float32)
        npix = int(np.prod(shape))
        n = rng.poisson(lam.reshape(len(lam), npix))
        pix_parts, chan_parts = [], []
        for k in range(len(lam)):
            nk = n[k]
            total = int(nk.sum())
            if total == 0:
                continue
            pix_parts.append(np.repeat(np.arange(npix, dtype=np.int64), nk))
            chan_parts.append(np.searchsorted(self._cdf[k], rng.random(total), side="right"))
        spec = np.zeros(npix * self.n_channels, dtype=np.uint32)
        n_el = len(self.elements)
        rois_flat = np.zeros((npix, n_el), dtype=np.uint32)
        if pix_parts:
            pix = np.concatenate(pix_parts)
            chan = np.minimum(np.concatenate(chan_parts), self.n_channels - 1)
            np.add.at(spec, pix * self.n_channels + chan, np.uint32(1))  # typed scalar: numpy's fast path (35x)
            # ROI = sum of the spectrum over each window, counted from the events
            for j, sym in enumerate(self.elements):
                lo, hi = self.roi_window(sym)
                sel = (chan >= lo) & (chan < hi)
                rois_flat[:, j] = np.bincount(pix[sel], minlength=npix)
        spec = spec.reshape(*shape, self.n_channels)
        rois = {sym: rois_flat[:, j].reshape(shape) for j, sym in enumerate(self.elements)}
        return rois, spec, (dwell * live).astype(np.float32)
