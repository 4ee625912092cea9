"""The scanning microprobe: one fly-scanned map of every signal at one angle.

Pipeline of :meth:`MicroprobeSimulator.simulate_map`
----------------------------------------------------
1. The rotation stage's runout displaces the specimen by (dy, dx) (ground truth).
2. The specimen's sharp components are projected exactly on a fine grid
   (``oversample`` points per pixel) in the specimen's frame.
3. The probe (anisotropic Gaussian, broadened by defocus) and the fly-scan
   motion (a box of one pixel along the fast axis x) blur the maps; the
   blurred values and the gradient of the optical path at the pixel centres
   come from banded kernel matrices (exact Gaussian x box integrals), applied
   as sparse matrix products. Smooth Gaussian components are blurred
   analytically.
4. Detectors: I0 and segmented transmission detector (Poisson, quadrant
   fractions from the deflection), Vortex spectra and ROIs (Poisson, dead time).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.special import ndtr

from ..validate import finite, integer, non_negative, positive, shape2d
from ..validate import seed as validate_seed
from . import constants as C
from .detectors import SegmentedDetectorModel, VortexModel
from .dose import dose_per_projection
from .probe import Probe
from .runout import RunoutModel
from .specimen import ELEMENT_SYMBOLS, QUANTITY_INDEX, Projection, Specimen

logger = logging.getLogger(__name__)

MAP_KEYS = ("dpc_x", "dpc_y", "dpc_diag", "transmission", "i0", "q1", "q2", "q3", "q4", "live_time")


@dataclass
class MapResult:
    """One simulated fly-scanned map.

    ``maps`` holds the detector maps (``MAP_KEYS`` plus one ROI map per
    element symbol), ``spectra`` the full Vortex spectra (ny, nx, n_channels)
    or None, ``expected`` the noiseless projected quantities at the pixels.
    """

    theta: float
    shape: tuple[int, int]
    pixel_size: float
    dwell: float
    map_center: tuple[float, float]  # (y, x) in m, relative to the rotation axis
    offset: np.ndarray  # (dy, dx) in m
    start_time: float
    duration: float
    maps: dict[str, np.ndarray]
    spectra: np.ndarray | None
    expected: Projection
    dose: float

    @property
    def offset_px(self) -> np.ndarray:
        return self.offset / self.pixel_size


@dataclass
class Truth:
    """Ground truth kept by the simulator: the specimen and every projection's offset."""

    specimen: Specimen
    runout: RunoutModel
    thetas: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    offsets_m: list[np.ndarray] = field(default_factory=list)
    pixel_sizes: list[float] = field(default_factory=list)

    @property
    def offsets(self) -> np.ndarray:
        """(n, 2) true (dy, dx) offsets in pixels of the n maps acquired, in order."""
        if not self.offsets_m:
            return np.zeros((0, 2))
        return np.array([o / p for o, p in zip(self.offsets_m, self.pixel_sizes, strict=True)])

    def discard_last(self) -> None:
        """Forget the last map (an acquisition interrupted and thrown away, to be repeated)."""
        for values in (self.thetas, self.times, self.offsets_m, self.pixel_sizes):
            if values:
                values.pop()

    def clear(self) -> None:
        self.thetas.clear()
        self.times.clear()
        self.offsets_m.clear()
        self.pixel_sizes.clear()


def _box_gauss(x, half_box, sigma):
    """Gaussian (sigma) convolved with a unit-area box of half-width ``half_box``."""
    if half_box == 0:
        return np.exp(-0.5 * (x / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
    return (ndtr((x + half_box) / sigma) - ndtr((x - half_box) / sigma)) / (2 * half_box)


def _box_gauss_derivative(x, half_box, sigma):
    if half_box == 0:
        return -x / sigma**2 * _box_gauss(x, 0, sigma)
    g = lambda t: np.exp(-0.5 * (t / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)  # noqa: E731
    return (g(x + half_box) - g(x - half_box)) / (2 * half_box)


def check_field(shape, pixel_size) -> tuple[tuple[int, int], float]:
    """A map's (shape, pixel size) as (ny, nx) ints and metres, else ValueError: what every scanner (simulated,
    EPICS, the IOC's) refuses alike."""
    shape = shape2d("shape", shape, fix="Give (ny, nx) in pixels, e.g. (230, 230).")
    pixel_size = positive("pixel_size", pixel_size, fix="Give the pixel size in metres, e.g. 300e-9.", unit=" m")
    if pixel_size > 100e-6:
        raise ValueError(f"pixel_size={pixel_size!r} m is larger than 100 um; give metres (300 nm is 300e-9)")
    return shape, pixel_size


def check_dwell(dwell) -> float:
    """A dwell in seconds per pixel, > 0 and at most 10 s, else ValueError."""
    dwell = positive("dwell", dwell, fix="Give the per-pixel dwell in seconds, e.g. 3e-3.", unit=" s")
    if dwell > 10:
        raise ValueError(f"dwell={dwell!r} s is above 10 s per pixel; give seconds (3 ms is 3e-3)")
    return dwell


def check_travel(shape, pixel: float, map_center, travel: float, *, name: str = "") -> None:
    """Refuse a field (``shape`` px of ``pixel`` m centred at ``map_center`` (y, x) m) beyond +-``travel`` m of
    the scanning stage; ``name`` (the device's) leads the message."""
    half = max(shape) * pixel / 2
    reach = max(abs(map_center[0]), abs(map_center[1])) + half
    if reach > travel:
        raise ValueError(
            f"{name + ': ' if name else ''}a {shape[0]}x{shape[1]} field of {pixel * 1e9:.0f} nm pixels centred at "
            f"({map_center[0] * 1e6:.1f}, {map_center[1] * 1e6:.1f}) um reaches {reach * 1e6:.1f} um, beyond the "
            f"scanning stage travel of +-{travel * 1e6:.1f} um; use fewer or smaller pixels or re-centre"
        )


class MicroprobeSimulator:
    """Pure-numpy simulator of the 2-ID-E-like XRF microprobe with DPC.

    Parameters
    ----------
    specimen : Specimen
        Default :func:`~xfct_bluesky.physics.cells.mouse_egg`.
    probe : Probe
    runout : RunoutModel
    dpc : SegmentedDetectorModel
    vortex : VortexModel
    seed : int
        Seeds the detector noise (the runout has its own seed, default the same).
    oversample : int
        Fine-grid points per pixel for the sharp components (3).
    i0_efficiency : float
        Counts per incident photon of the upstream ion chamber.
    line_overhead : float
        Seconds per fly-scan line spent turning around.
    memory_limit : float
        Bytes one map may use (spectra and fine grid); larger fields are refused.
    """

    def __init__(
        self,
        specimen: Specimen | None = None,
        *,
        probe: Probe | None = None,
        runout: RunoutModel | None = None,
        dpc: SegmentedDetectorModel | None = None,
        vortex: VortexModel | None = None,
        seed: int = 0,
        oversample: int = 3,
        i0_efficiency: float = 1e-3,
        line_overhead: float = 0.0,
        memory_limit: float = 4e9,
    ):
        if specimen is None:
            from .cells import mouse_egg

            specimen = mouse_egg(seed=seed)
        self.specimen = specimen
        self.probe = probe or Probe()
        self.runout = runout if runout is not None else RunoutModel(seed=seed)
        self.dpc = dpc or SegmentedDetectorModel()
        self.vortex = vortex or VortexModel(energy_kev=self.probe.energy_kev)
        self.oversample = integer("oversample", oversample, low=1, high=8,
                                  fix="Fine samples per pixel and axis; 3 is accurate.")
        self.i0_efficiency = positive("i0_efficiency", i0_efficiency, fix="Use about 1e-3.")
        self.line_overhead = non_negative("line_overhead", line_overhead, fix="Use 0 or a few ms.", unit=" s")
        self.memory_limit = float(memory_limit)
        self.seed = validate_seed("seed", seed)
        self.rng = np.random.default_rng([self.seed, 0x4E4F4953])
        self.clock = 0.0
        self.truth = Truth(specimen, self.runout)
        self._kernel_cache: dict = {}

    # ------------------------------------------------------------------ API ---
    def map_duration(self, shape, dwell: float) -> float:
        ny, nx = shape
        return ny * (nx * dwell + self.line_overhead)

    def check_map(self, shape, pixel_size, dwell, *, spectra: bool = True) -> tuple[tuple[int, int], float, float]:
        """Validate map arguments (:func:`check_field`, :func:`check_dwell`, the memory); return them normalised."""
        shape, pixel_size = check_field(shape, pixel_size)
        dwell = check_dwell(dwell)
        need = self.map_memory(shape, pixel_size, spectra=spectra)
        if need > self.memory_limit:
            raise ValueError(
                f"a {shape[0]}x{shape[1]} map needs about {need / 1e9:.1f} GB "
                f"(limit {self.memory_limit / 1e9:.1f} GB, spectra={'on' if spectra else 'off'}); "
                "use a smaller shape, turn spectra off, or raise memory_limit"
            )
        return shape, pixel_size, dwell

    def map_memory(self, shape, pixel_size, *, spectra: bool = True) -> float:
        ny, nx = shape
        sx, _ = self.probe.sigma()
        margin = 2 * (4 * sx + pixel_size) / pixel_size
        fine = (ny + margin) * (nx + margin) * self.oversample**2 * 8 * 8
        spec = ny * nx * self.vortex.n_channels * 4 * (2 if spectra else 0)
        events = ny * nx * 200 * 16 if spectra else 0
        return fine + spec + events

    def dose(self, dwell: float, pixel_size: float) -> float:
        """Dose (Gy) of one projection."""
        return dose_per_projection(dwell, pixel_size, flux=self.probe.flux, energy_kev=self.probe.energy_kev)

    def simulate_map(
        self,
        shape,
        pixel_size: float,
        dwell: float,
        theta: float = 0.0,
        *,
        map_center: tuple[float, float] = (0.0, 0.0),
        defocus: float = 0.0,
        spectra: bool = True,
        record: bool = True,
        beam_on: bool = True,
    ) -> MapResult:
        """Fly-scan one map at rotation angle ``theta`` (degrees).

        Parameters
        ----------
        shape : (ny, nx)
        pixel_size : float, m
        dwell : float, s per pixel
        theta : float, degrees
        map_center : (y, x)
            Map centre (m) relative to the rotation axis (zone-plate stage).
        defocus : float
            Zone-plate defocus (m).
        spectra : bool
            Produce full spectra (slower) or ROI counts only.
        record : bool
            Advance the clock and the runout, and keep the truth.
        beam_on : bool
            False when the shutter is closed: no photons reach the specimen.
        """
        shape, pixel_size, dwell = self.check_map(shape, pixel_size, dwell, spectra=spectra)
        theta = finite("theta", theta, fix="Give the rotation angle in degrees.", unit=" deg")
        cy = finite("map_center y", map_center[0], fix="Give the map centre in metres.", unit=" m")
        cx = finite("map_center x", map_center[1], fix="Give the map centre in metres.", unit=" m")
        ny, nx = shape
        start = self.clock
        if record:
            offset = self.runout.sample(theta, start)
        else:
            offset = self.runout.systematic(theta)
        sx, sy = self.probe.sigma(defocus)
        # pixel centres in the specimen frame (specimen displaced by +offset)
        x = cx + (np.arange(nx) - (nx - 1) / 2) * pixel_size - offset[1]
        y = cy + (np.arange(ny) - (ny - 1) / 2) * pixel_size - offset[0]
        quantities, grad_x, grad_y = self._blurred(theta, x, y, pixel_size, sx, sy)
        expected = Projection.from_stack(quantities)
        maps = self._detect(quantities, grad_x, grad_y, dwell, spectra, beam_on)
        spec = maps.pop("_spectra")
        duration = self.map_duration(shape, dwell)
        if record:
            self.clock += duration
            self.truth.thetas.append(theta)
            self.truth.times.append(start)
            self.truth.offsets_m.append(np.asarray(offset, float))
            self.truth.pixel_sizes.append(pixel_size)
        return MapResult(theta, shape, pixel_size, dwell, (cy, cx), np.asarray(offset, float), start, duration,
                         maps, spec, expected, self.dose(dwell, pixel_size) if beam_on else 0.0)

    def point(self, dwell: float, theta: float = 0.0, *, map_center=(0.0, 0.0), defocus: float = 0.0,
              beam_on: bool = True, spectra: bool = True):
        """Counts of a single stationary point at ``map_center`` (y, x) m (for the standalone detectors)."""
        # a 1x1 "map" of 100 nm: the fly-scan box is then negligible against the spot
        return self.simulate_map((1, 1), 100e-9, dwell, theta, map_center=map_center, defocus=defocus,
                                 spectra=spectra, record=False, beam_on=beam_on)

    # ---------------------------------------------------------- internals ---
    def _kernels(self, n_pix, n_fine, h, offset0, pixel_size, sigma, box):
        """Sparse (n_fine, n_pix) value and derivative kernels along one axis.

        Fine sample k sits at ``offset0 + k h`` relative to the first pixel centre.
        """
        key = (n_pix, n_fine, round(h * 1e12), round(offset0 * 1e12), round(pixel_size * 1e12),
               round(sigma * 1e12), box)
        hit = self._kernel_cache.get(key)
        if hit is not None:
            return hit
        half_box = pixel_size / 2 if box else 0.0
        reach = 5 * sigma + half_box + h
        rows, cols, val, der = [], [], [], []
        width = int(math.ceil(reach / h))
        for j in range(n_pix):
            center_k = (j * pixel_size - offset0) / h
            k = np.arange(int(math.floor(center_k)) - width, int(math.ceil(center_k)) + width + 1)
            k = k[(k >= 0) & (k < n_fine)]
            d = offset0 + k * h - j * pixel_size
            rows.append(k)
            cols.append(np.full(len(k), j))
            val.append(_box_gauss(d, half_box, sigma) * h)
            der.append(_box_gauss_derivative(d, half_box, sigma) * h)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        # derivative w.r.t. pixel position = - derivative w.r.t. fine offset d
        K = sparse.csr_matrix((np.concatenate(val), (rows, cols)), shape=(n_fine, n_pix))
        D = sparse.csr_matrix((-np.concatenate(der), (rows, cols)), shape=(n_fine, n_pix))
        if len(self._kernel_cache) > 32:
            self._kernel_cache.clear()
        self._kernel_cache[key] = (K, D)
        return K, D

    def _blurred(self, theta, x, y, pixel_size, sx, sy):
        h = pixel_size / self.oversample
        mx = 5 * sx + pixel_size / 2 + 2 * h
        my = 5 * sy + 2 * h
        nuf = int(math.ceil((x[-1] - x[0] + 2 * mx) / h)) + 1
        nvf = int(math.ceil((y[-1] - y[0] + 2 * my) / h)) + 1
        u = x[0] - mx + np.arange(nuf) * h
        v = y[0] - my + np.arange(nvf) * h
        basis, coef = self.specimen.fine_basis(theta, u, v, self.probe.energy_kev)
        Kx, Dx = self._kernels(len(x), nuf, h, -mx, pixel_size, sx, True)
        Ky, Dy = self._kernels(len(y), nvf, h, -my, pixel_size, sy, False)
        nb = len(basis)
        nq = len(coef)
        quantities = np.zeros((nq, len(y), len(x)))
        grad_x = np.zeros((len(y), len(x)))
        grad_y = np.zeros((len(y), len(x)))
        if nb:
            # rows: (nvf, nb*nuf) -> Ky^T @ . -> (ny, nb*nuf)
            stacked = basis.transpose(1, 0, 2).reshape(nvf, nb * nuf)
            r = (Ky.T @ stacked).reshape(len(y), nb, nuf).reshape(len(y) * nb, nuf)
            blurred = (Kx.T @ r.T).T.reshape(len(y), nb, len(x)).transpose(1, 0, 2)
            quantities += np.tensordot(coef, blurred, axes=(1, 0))
            opd = np.tensordot(coef[QUANTITY_INDEX["opd"]], basis, axes=(0, 0))  # (nvf, nuf)
            grad_x += (Dx.T @ (Ky.T @ opd).T).T
            grad_y += (Kx.T @ (Dy.T @ opd).T).T
        smooth = self.specimen.smooth_terms(theta, x, y, sx**2 + pixel_size**2 / 12, sy**2, self.probe.energy_kev)
        if smooth is not None:
            quantities += smooth[0]
            grad_x += smooth[1]
            grad_y += smooth[2]
        return quantities, grad_x, grad_y

    def _detect(self, q, grad_x, grad_y, dwell, spectra, beam_on=True):
        rng = self.rng
        probe = self.probe
        n_inc = probe.photons_per_pixel(dwell) if beam_on else 0.0
        flux = probe.flux if beam_on else 0.0
        shape = q.shape[1:]
        i0 = rng.poisson(n_inc * self.i0_efficiency, size=shape).astype(np.uint32)
        mu_t = q[QUANTITY_INDEX["mu_t"]]
        transmitted = n_inc * np.exp(-mu_t)
        na = probe.numerical_aperture
        quad = self.dpc.sample(transmitted, grad_x / na, grad_y / na, rng)
        dpc = self.dpc.dpc(quad)
        incident_detected = i0.astype(np.float64) / self.i0_efficiency * self.dpc.efficiency
        transmission = np.zeros(shape, np.float32)
        np.divide(dpc["sum"], incident_detected, out=transmission, where=incident_detected > 0, casting="unsafe")
        areal = {s: q[QUANTITY_INDEX[s]] for s in ELEMENT_SYMBOLS}
        rates = self.vortex.rates(areal, q[QUANTITY_INDEX["mass"]], flux)
        rois, spec, live = self.vortex.sample(rates, dwell, rng, spectra=spectra)
        maps = {
            "dpc_x": dpc["dpc_x"],
            "dpc_y": dpc["dpc_y"],
            "dpc_diag": dpc["dpc_diag"],
            "transmission": transmission,
            "i0": i0,
            "q1": quad[0],
            "q2": quad[1],
            "q3": quad[2],
            "q4": quad[3],
            "live_time": live,
        }
        maps.update(rois)
        maps["_spectra"] = spec
        return maps


def expected_counts(sim: MicroprobeSimulator, result: MapResult) -> dict[str, np.ndarray]:
    """Noiseless per-pixel expectations of a map: Zn K-alpha, transmitted photons, DPC noise."""
    q = result.expected
    n_inc = sim.probe.photons_per_pixel(result.dwell)
    transmitted = n_inc * np.exp(-q.mu_t)
    detected = transmitted * sim.dpc.efficiency
    out = {"transmitted": transmitted, "dpc_diag_noise": sim.dpc.diagonal_noise(detected)}
    rates = sim.vortex.rates(q.elements, q.mass, sim.probe.flux)
    for s, roi in sim.vortex.expected_rois(rates, result.dwell).items():
        out[f"{s}_roi"] = roi
    for s in ELEMENT_SYMBOLS:
        el = C.ELEMENTS[s]
        out[f"{s}_ka"] = sim.vortex.element_sensitivity(s, sim.probe.flux) / (1 + el.kb_over_ka) * q.elements[s] \
            * result.dwell
    return out
