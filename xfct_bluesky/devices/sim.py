"""Simulated microprobe: Ophyd devices backed by :mod:`xfct_bluesky.physics`.

The classes here carry the same names and component names as the EPICS
classes of :mod:`xfct_bluesky.devices.epics`, so plans cannot tell them apart:

========================  ==================================================
``RotationStage``         theta (deg), a motor with EpicsMotor's components;
                          its runout lives in the simulator (ground truth)
``ZonePlateStage``        x, y (beam position, um) and z (defocus, um)
``Shutter``               open / close
``VortexMCA``             spectrum, preset/elapsed real time, live time,
                          dead time, element ROIs (EpicsMCA names)
``SegmentedDPCDetector``  quadrant counts q1..q4, total, DPC x, y, diagonal
``FlyRaster``             a triggerable detector: ``trigger()`` flies one map
                          at the current stage positions, ``read()`` gives the
                          2D maps, full spectra go to HDF5 (StreamResource)
``Microprobe``            rotation, zone_plate, shutter, mca, dpc, scanner
========================  ==================================================

Build one with :func:`make_sim_microprobe`. Simulated time runs as fast as
the CPU allows unless ``realtime=True``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd import DynamicDeviceComponent as DDC
from ophyd.status import DeviceStatus, Status

from ..physics import MicroprobeSimulator
from ..physics.specimen import ELEMENT_SYMBOLS
from .checks import check_travel
from .signals import ArraySignal, SimMotor

logger = logging.getLogger(__name__)

#: Map keys (component names of the scanner) and their dtypes.
MAP_DTYPES: dict[str, str] = {
    "dpc_x": "<f4",
    "dpc_y": "<f4",
    "dpc_diag": "<f4",
    "transmission": "<f4",
    "i0": "<u4",
    "q1": "<u4",
    "q2": "<u4",
    "q3": "<u4",
    "q4": "<u4",
    "live_time": "<f4",
    **{sym: "<u4" for sym in ELEMENT_SYMBOLS},
}


# ----------------------------------------------------------------- stages ---
class RotationStage(SimMotor):
    """Rotation stage, theta in degrees (EpicsMotor component names)."""

    def __init__(self, prefix="", *, name, limits=(-360.0, 360.0), velocity=30.0, **kwargs):
        super().__init__(prefix, name=name, egu="deg", limits=limits, velocity=velocity, **kwargs)

    @property
    def truth(self):
        """The simulator's ground truth (runout offsets of every projection)."""
        return self.root.simulator.truth


class ZonePlateStage(Device):
    """Zone-plate stage: x, y move the beam (um), z defocuses it (um)."""

    x = Cpt(SimMotor, "X", egu="um", limits=(-2000.0, 2000.0), velocity=100.0, kind="normal")
    y = Cpt(SimMotor, "Y", egu="um", limits=(-2000.0, 2000.0), velocity=100.0, kind="normal")
    z = Cpt(SimMotor, "Z", egu="um", limits=(-5000.0, 5000.0), velocity=100.0, kind="normal")


class Shutter(Device):
    """Fast shutter: ``set('open')`` / ``set('close')``; state 'open' or 'closed'."""

    state = Cpt(Signal, value="closed", kind="normal")

    def set(self, value):
        value = str(value).lower()
        if value not in ("open", "close", "closed"):
            raise ValueError(f"{self.name}: {value!r} is not a shutter command; use 'open' or 'close'")
        self.state.put("open" if value == "open" else "closed")
        st = Status(obj=self)
        st.set_finished()
        return st

    @property
    def is_open(self) -> bool:
        return self.state.get() == "open"


# -------------------------------------------------------------- detectors ---
#: Storage-ring current (mA) below which the simulated beam is off (a beam dump).
BEAM_OFF_CURRENT = 1.0


def _beam_on(device) -> bool:
    root = device.root
    shutter = getattr(root, "shutter", None)
    current = getattr(root, "beam_current", None)
    ring_up = current is None or float(current.get()) >= BEAM_OFF_CURRENT
    return ring_up and (shutter is None or shutter.is_open)


def _position_m(motor) -> float:
    return motor.position * 1e-6  # um -> m


def _probe_geometry(device):
    """(theta deg, centre (y, x) m, defocus m) from the microprobe's stages."""
    root = device.root
    theta = root.rotation.position if hasattr(root, "rotation") else 0.0
    zp = getattr(root, "zone_plate", None)
    if zp is None:
        return theta, (0.0, 0.0), 0.0
    return theta, (_position_m(zp.y), _position_m(zp.x)), _position_m(zp.z)


class _ROI(Device):
    label = Cpt(Signal, value="", kind="config")
    count = Cpt(Signal, value=0, kind="hinted")
    lo_chan = Cpt(Signal, value=0, kind="config")
    hi_chan = Cpt(Signal, value=0, kind="config")


class VortexMCA(Device):
    """Vortex SDD point spectrum (component names of ``ophyd.mca.EpicsMCA``).

    ``trigger()`` counts for ``preset_real_time`` seconds at the current beam
    position and fills the spectrum, the times and one ROI per element.
    """

    preset_real_time = Cpt(Signal, value=1.0, kind="config")
    elapsed_real_time = Cpt(Signal, value=0.0, kind="normal")
    elapsed_live_time = Cpt(Signal, value=0.0, kind="normal")
    dead_time = Cpt(Signal, value=0.0, kind="normal")  # percent
    spectrum = Cpt(ArraySignal, dtype="<u4", shape_getter=lambda: (2048,), kind="normal")
    rois = DDC({f"roi{i}": (_ROI, f"R{i}", {}) for i in range(len(ELEMENT_SYMBOLS))}, kind="normal")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for i, sym in enumerate(ELEMENT_SYMBOLS):
            roi = getattr(self.rois, f"roi{i}")
            roi.count.name = f"{self.name}_{sym}"
            roi.label.put(sym)

    def _configure_rois(self, vortex):
        for i, sym in enumerate(ELEMENT_SYMBOLS):
            lo, hi = vortex.roi_window(sym)
            roi = getattr(self.rois, f"roi{i}")
            roi.lo_chan.put(lo)
            roi.hi_chan.put(hi - 1)  # inclusive, as the EPICS mca record sums lo..hi

    def trigger(self):
        sim = self.root.simulator
        preset = float(self.preset_real_time.get())
        theta, center, defocus = _probe_geometry(self)
        self._configure_rois(sim.vortex)
        res = sim.point(preset, theta, center=center, defocus=defocus, beam_on=_beam_on(self))
        spec = res.spectra[0, 0]
        self.spectrum.put(spec)
        live = float(res.maps["live_time"][0, 0])
        self.elapsed_real_time.put(preset)
        self.elapsed_live_time.put(live)
        self.dead_time.put(100.0 * (1 - live / preset))
        for i, sym in enumerate(ELEMENT_SYMBOLS):
            getattr(self.rois, f"roi{i}").count.put(int(res.maps[sym][0, 0]))
        return _delayed_status(self, preset if self.root.realtime else 0.0)


class SegmentedDPCDetector(Device):
    """Segmented transmission detector: quadrant counts and DPC at one point."""

    preset_time = Cpt(Signal, value=0.1, kind="config")
    central_stop_ratio = Cpt(Signal, value=0.4, kind="config")
    q1 = Cpt(Signal, value=0, kind="normal")
    q2 = Cpt(Signal, value=0, kind="normal")
    q3 = Cpt(Signal, value=0, kind="normal")
    q4 = Cpt(Signal, value=0, kind="normal")
    total = Cpt(Signal, value=0, kind="normal")
    dpc_x = Cpt(Signal, value=0.0, kind="hinted")
    dpc_y = Cpt(Signal, value=0.0, kind="hinted")
    dpc_diag = Cpt(Signal, value=0.0, kind="hinted")

    def trigger(self):
        sim = self.root.simulator
        self.central_stop_ratio.put(sim.dpc.central_stop_ratio)
        preset = float(self.preset_time.get())
        theta, center, defocus = _probe_geometry(self)
        res = sim.point(preset, theta, center=center, defocus=defocus, beam_on=_beam_on(self), spectra=False)
        q = [int(res.maps[k][0, 0]) for k in ("q1", "q2", "q3", "q4")]
        for k, v in zip(("q1", "q2", "q3", "q4"), q, strict=True):
            getattr(self, k).put(v)
        self.total.put(sum(q))
        for k in ("dpc_x", "dpc_y", "dpc_diag"):
            getattr(self, k).put(float(res.maps[k][0, 0]))
        return _delayed_status(self, preset if self.root.realtime else 0.0)


def _delayed_status(device, delay: float):
    st = DeviceStatus(device)
    if delay > 0:
        timer = threading.Timer(delay, st.set_finished)
        timer.daemon = True
        timer.start()
    else:
        st.set_finished()
    return st


class FlyRaster(Device):
    """Fly-scan raster: one triggered acquisition is one whole 2D map.

    Configuration: ``num_rows``, ``num_cols``, ``pixel_size`` (m), ``dwell``
    (s per pixel), ``travel`` (m, half-range of the scanning stage),
    ``save_spectra``. ``read()`` returns the maps (DPC x/y/diagonal,
    transmission, I0, quadrants, live time, one ROI map per element) and
    ``map_dwell``, the dwell the map was acquired with; the
    full spectra (ny, nx, n_channels) are written to an HDF5 file under
    ``hdf5_directory`` and announced with StreamResource/StreamDatum
    documents (data key ``<name>_spectra``).
    """

    num_rows = Cpt(Signal, value=32, kind="config")
    num_cols = Cpt(Signal, value=32, kind="config")
    pixel_size = Cpt(Signal, value=300e-9, kind="config")  # m
    dwell = Cpt(Signal, value=3e-3, kind="config")  # s per pixel
    travel = Cpt(Signal, value=100e-6, kind="config")  # m, half-range of the scanning stage
    save_spectra = Cpt(Signal, value=True, kind="config")

    map_dwell = Cpt(Signal, value=0.0, kind="normal")  # s per pixel of the last map (readback)
    dpc_x = Cpt(ArraySignal, dtype=MAP_DTYPES["dpc_x"], kind="normal")
    dpc_y = Cpt(ArraySignal, dtype=MAP_DTYPES["dpc_y"], kind="normal")
    dpc_diag = Cpt(ArraySignal, dtype=MAP_DTYPES["dpc_diag"], kind="normal")
    transmission = Cpt(ArraySignal, dtype=MAP_DTYPES["transmission"], kind="normal")
    i0 = Cpt(ArraySignal, dtype=MAP_DTYPES["i0"], kind="normal")
    q1 = Cpt(ArraySignal, dtype=MAP_DTYPES["q1"], kind="normal")
    q2 = Cpt(ArraySignal, dtype=MAP_DTYPES["q2"], kind="normal")
    q3 = Cpt(ArraySignal, dtype=MAP_DTYPES["q3"], kind="normal")
    q4 = Cpt(ArraySignal, dtype=MAP_DTYPES["q4"], kind="normal")
    live_time = Cpt(ArraySignal, dtype=MAP_DTYPES["live_time"], kind="normal")
    P = Cpt(ArraySignal, dtype="<u4", kind="normal")
    S = Cpt(ArraySignal, dtype="<u4", kind="normal")
    Cl = Cpt(ArraySignal, dtype="<u4", kind="normal")
    K = Cpt(ArraySignal, dtype="<u4", kind="normal")
    Ca = Cpt(ArraySignal, dtype="<u4", kind="normal")
    Fe = Cpt(ArraySignal, dtype="<u4", kind="normal")
    Cu = Cpt(ArraySignal, dtype="<u4", kind="normal")
    Zn = Cpt(ArraySignal, dtype="<u4", kind="normal")

    def __init__(self, *args, hdf5_directory=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hdf5_directory = hdf5_directory
        self._writer = None
        self._acquiring = threading.Lock()
        self._interrupt: threading.Event | None = None
        self._unread = False  # a map published but not read into an event yet
        self.last_result = None

    # -- configuration ------------------------------------------------------
    def expected_shape(self) -> tuple[int, int]:
        return int(self.num_rows.get()), int(self.num_cols.get())

    @property
    def spectra_key(self) -> str:
        return f"{self.name}_spectra"

    def check_field(self, shape, pixel_size) -> tuple[tuple[int, int], float]:
        """Validate a field (shape, pixel size) against memory and stage travel; return it normalised."""
        sim = self.root.simulator
        shape, pixel, _ = sim.check_map(shape, pixel_size, 1e-3, spectra=bool(self.save_spectra.get()))
        _, center, _ = _probe_geometry(self)
        check_travel(self.name, shape, pixel, center, float(self.travel.get()))
        return shape, pixel

    def check_configuration(self) -> None:
        """Raise ValueError for a configured map the stage or the memory cannot do."""
        self.check_field(self.expected_shape(), self.pixel_size.get())
        self.root.simulator.check_map(self.expected_shape(), self.pixel_size.get(), self.dwell.get(),
                                      spectra=bool(self.save_spectra.get()))

    def map_duration(self, shape, dwell) -> float:
        """Seconds to fly one map."""
        return self.root.simulator.map_duration(shape, dwell)

    # -- staging and external data -------------------------------------------
    def stage(self):
        # refuse a bad configuration before the run opens a file or emits a document
        self.check_configuration()
        staged = super().stage()
        if self.save_spectra.get():
            from ..storage.hdf5 import StreamHDF5Writer
            from ..storage.tiled import ASSETS_SUBDIR, default_data_dir

            directory = Path(self.hdf5_directory or default_data_dir() / ASSETS_SUBDIR)
            directory.mkdir(parents=True, exist_ok=True)
            ny, nx = self.expected_shape()
            self._writer = StreamHDF5Writer(
                directory, data_key=self.spectra_key, dtype="<u4",
                frame_shape=(ny, nx, self.root.simulator.vortex.n_channels), source="sim://xfct-bluesky/vortex",
            )
            self._writer.open(name=self.name)
        return staged

    def unstage(self):
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._writer = None
        return super().unstage()

    def describe(self):
        desc = super().describe()
        if self._writer is not None:
            desc.update(self._writer.describe_key())
        return desc

    def collect_asset_docs(self, index=None):
        if self._writer is not None:
            yield from self._writer.collect_asset_docs(index)

    def get_index(self) -> int:
        return self._writer.get_index() if self._writer is not None else 0

    # -- acquisition ----------------------------------------------------------
    def trigger(self):
        """Fly one map at the current stage positions; maps are published when it completes.

        A map interrupted by :meth:`pause` (a RunEngine pause or suspension,
        e.g. a beam dump) or :meth:`stop` is thrown away: nothing is published
        or written, and the RunEngine repeats it after resuming. Its status
        then completes without error, so that a status the RunEngine has
        already given up on cannot fail the run later.
        """
        self.check_configuration()
        status = DeviceStatus(self)
        theta, center, defocus = _probe_geometry(self)
        beam = _beam_on(self)
        interrupt = self._interrupt = threading.Event()
        t0 = time.monotonic()

        def acquire():
            try:
                with self._acquiring:
                    res = self._simulate(theta, center, defocus, beam)
                    if self.root.realtime:
                        interrupt.wait(max(res.duration - (time.monotonic() - t0), 0.0))
                    if interrupt.is_set():
                        self.root.simulator.truth.discard_last()
                        logger.warning("%s: the map at theta=%.3f deg was interrupted and thrown away",
                                       self.name, theta)
                    else:
                        self._publish(res)
                        self._unread = True
            except Exception as exc:  # reported through the status, never lost
                logger.exception("%s: acquisition failed", self.name)
                status.set_exception(exc)
            else:
                status.set_finished()

        threading.Thread(target=acquire, name=f"{self.name}-fly", daemon=True).start()
        return status

    def pause(self):
        """Interrupt the map in flight (the RunEngine calls this on a pause or suspension).

        A map finished but not yet read is dropped from the ground truth too:
        the RunEngine rewinds and takes it again, so ``truth.offsets`` keeps
        one row per map that reaches an event.
        """
        if self._interrupt is not None:
            self._interrupt.set()
        with self._acquiring:  # let a map being computed see the interrupt and throw itself away
            if self._unread:
                self.root.simulator.truth.discard_last()
                self._unread = False

    def read(self):
        reading = super().read()
        self._unread = False
        return reading

    def resume(self):
        pass

    def stop(self, *, success=False):
        self.pause()

    def _simulate(self, theta, center, defocus, beam):
        sim = self.root.simulator
        return sim.simulate_map(self.expected_shape(), self.pixel_size.get(), self.dwell.get(), theta,
                                center=center, defocus=defocus, spectra=self._writer is not None, beam_on=beam)

    def _publish(self, res):
        ts = time.time()
        self.map_dwell.put(float(res.dwell), timestamp=ts)
        for key in MAP_DTYPES:
            getattr(self, key).put(res.maps[key], timestamp=ts)
        if self._writer is not None:
            self._writer.write(res.spectra)
        res.spectra = None  # on disk; do not keep 100s of MB in memory
        self.last_result = res


class Microprobe(Device):
    """The scanning XRF microprobe as one Device."""

    rotation = Cpt(RotationStage, "Rot", kind="normal")
    zone_plate = Cpt(ZonePlateStage, "ZP:", kind="normal")
    shutter = Cpt(Shutter, "Shtr:", kind="normal")
    mca = Cpt(VortexMCA, "MCA:", kind="normal")
    dpc = Cpt(SegmentedDPCDetector, "DPC:", kind="normal")
    scanner = Cpt(FlyRaster, "Fly:", kind="normal")
    #: storage-ring current (mA): the beam-loss suspender watches it; below 1 mA there is no beam
    beam_current = Cpt(Signal, value=100.0, kind="omitted")

    def __init__(self, prefix="", *, simulator: MicroprobeSimulator, realtime: bool = False, **kwargs):
        self.simulator = simulator
        self.realtime = realtime
        super().__init__(prefix, **kwargs)

    @property
    def truth(self):
        """Ground truth: ``.specimen``, and ``.offsets`` (n, 2) true (dy, dx) in pixels."""
        return self.simulator.truth

    def beam_parameters(self) -> dict:
        """Energy (keV), flux (photons/s) and spot FWHM (m, [h, v]) for plans' metadata."""
        probe = self.simulator.probe
        return {"energy_kev": probe.energy_kev, "flux": probe.flux, "spot_fwhm": list(probe.fwhm)}

    def simulation_metadata(self) -> dict:
        """What a simulated run needs to be reproduced."""
        sim = self.simulator
        return {"seed": sim.seed, "specimen": sim.specimen.name, "specimen_info": dict(getattr(sim.specimen,
                "info", {})), "runout_seed": sim.runout.seed, "oversample": sim.oversample}

    # let bp.count([microprobe]) carry the scanner's external spectra
    def collect_asset_docs(self, index=None):
        yield from self.scanner.collect_asset_docs(index)

    def get_index(self) -> int:
        return self.scanner.get_index()


def make_sim_microprobe(
    shape: tuple[int, int] = (32, 32),
    pixel_size: float = 300e-9,
    seed: int = 0,
    *,
    dwell: float = 3e-3,
    name: str = "microprobe",
    realtime: bool = False,
    specimen=None,
    hdf5_directory=None,
    save_spectra: bool = True,
    **physics,
) -> Microprobe:
    """Build a simulated microprobe.

    Parameters
    ----------
    shape : (ny, nx)
        Map shape the scanner starts with.
    pixel_size : float
        Pixel size (m).
    seed : int
        Seeds the specimen, the runout and the detector noise.
    dwell : float
        Per-pixel dwell (s) the scanner starts with.
    realtime : bool
        Pace moves and acquisitions in real time (default: as fast as the CPU).
    specimen : Specimen, optional
        Default: the mouse egg of the founding paper.
    hdf5_directory : path, optional
        Where the spectra files go (must be readable by the Tiled server);
        default ``<data dir>/assets``.
    **physics
        Passed to :class:`~xfct_bluesky.physics.MicroprobeSimulator`
        (``probe``, ``runout``, ``dpc``, ``vortex``, ``oversample``, ...).

    Returns
    -------
    Microprobe
        with components ``rotation``, ``zone_plate``, ``shutter``, ``mca``,
        ``dpc``, ``scanner``, the simulator as ``.simulator`` and the ground
        truth as ``.truth``.
    """
    if specimen is None:
        from ..physics import mouse_egg

        specimen = mouse_egg(seed=seed)
    sim = MicroprobeSimulator(specimen, seed=seed, **physics)
    shape, pixel_size, dwell = sim.check_map(shape, pixel_size, dwell, spectra=save_spectra)
    mp = Microprobe("SIM:", name=name, simulator=sim, realtime=realtime)
    for motor in (mp.rotation, mp.zone_plate.x, mp.zone_plate.y, mp.zone_plate.z):
        motor.realtime = realtime
    mp.scanner.hdf5_directory = hdf5_directory
    mp.scanner.num_rows.put(shape[0])
    mp.scanner.num_cols.put(shape[1])
    mp.scanner.pixel_size.put(pixel_size)
    mp.scanner.dwell.put(dwell)
    mp.scanner.save_spectra.put(bool(save_spectra))
    mp.mca._configure_rois(sim.vortex)
    mp.shutter.set("open")
    return mp

