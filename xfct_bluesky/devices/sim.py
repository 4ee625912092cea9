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

``FlyRaster`` lives in :mod:`.sim_scanner` (re-exported here). Build one
with :func:`make_sim_microprobe`. Simulated time runs as fast as
the CPU allows unless ``realtime=True``.
"""

from __future__ import annotations

import logging
import threading

from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd import DynamicDeviceComponent as DDC
from ophyd.status import DeviceStatus, Status

from ..physics import MicroprobeSimulator
from ..physics.specimen import ELEMENT_SYMBOLS
from ._sim_common import BEAM_OFF_CURRENT, MAP_DTYPES, beam_on, probe_geometry  # noqa: F401 (re-exported)
from .signals import ArraySignal, SimMotor
from .sim_scanner import FlyRaster

logger = logging.getLogger(__name__)


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
        theta, map_center, defocus = probe_geometry(self)
        self._configure_rois(sim.vortex)
        res = sim.point(preset, theta, map_center=map_center, defocus=defocus, beam_on=beam_on(self))
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
        theta, map_center, defocus = probe_geometry(self)
        res = sim.point(preset, theta, map_center=map_center, defocus=defocus, beam_on=beam_on(self), spectra=False)
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

