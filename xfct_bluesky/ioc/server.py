"""The microprobe IOC: every PV group under one prefix, backed by one simulator."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from caproto.server import PVGroup, SubGroup, pvproperty

from ..physics import MicroprobeSimulator
from ._common import BEAM_OFF_CURRENT, DEFAULT_PREFIX, in_thread
from .detectors import BeamGroup, DpcGroup, McaGroup, ShutterGroup
from .motor import MotorRecord, ZonePlateGroup
from .scanner import ScannerGroup, SimControlGroup

logger = logging.getLogger("xfct_bluesky.ioc")


# ---------------------------------------------------------------------- IOC ---
class MicroprobeIOC(PVGroup):
    """The XRF microprobe's PVs (see the module docstring), backed by one ``MicroprobeSimulator``.

    Parameters
    ----------
    prefix : str
        PV prefix, e.g. ``"XFCT:"``.
    seed : int
        Seeds the specimen (the simulated mouse egg), the runout and the noise,
        as ``make_sim_microprobe(seed=...)``.
    shape : (ny, nx)
        The scanner's map shape at start.
    pixel_size, dwell : float
        The scanner's pixel size (m) and dwell (s per pixel) at start.
    data_dir : path
        Folder for the HDF5 spectra (``Fly:HDF1:FilePath`` at start, and the
        only tree it may point into).
    realtime : bool
        Take as long as the hardware would (maps, MCA and DPC counts, the
        shutter). Motors always move at VELO.
    """

    rotation = SubGroup(MotorRecord, prefix="Rot", egu="deg", limits=(-360.0, 360.0), velocity=30.0,
                        description="Sample rotation theta")
    zone_plate = SubGroup(ZonePlateGroup, prefix="ZP:")
    shutter = SubGroup(ShutterGroup, prefix="Shtr:")
    beam = SubGroup(BeamGroup, prefix="Beam:")
    mca = SubGroup(McaGroup, prefix="MCA:")
    dpc = SubGroup(DpcGroup, prefix="DPC:")
    scanner = SubGroup(ScannerGroup, prefix="Fly:")
    sim_control = SubGroup(SimControlGroup, prefix="Sim:")
    beam_current = pvproperty(name="BeamCurrent", value=100.0, units="mA", precision=2)

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, seed: int = 0, shape=(32, 32), pixel_size: float = 300e-9,
                 dwell: float = 3e-3, data_dir=None, realtime: bool = False, **kwargs):
        super().__init__(prefix, **kwargs)
        if data_dir is None:
            from ..storage.server import ASSETS_SUBDIR, default_data_dir

            data_dir = default_data_dir() / ASSETS_SUBDIR
        self.options = {"seed": int(seed), "shape": tuple(int(n) for n in shape), "pixel_size": float(pixel_size),
                        "dwell": float(dwell), "data_dir": str(Path(data_dir).expanduser().resolve()),
                        "realtime": bool(realtime)}
        self.simulator = self._build_simulator(int(seed))
        self.simulator.check_map(self.options["shape"], pixel_size, dwell)
        self._simulator_lock: asyncio.Lock | None = None

    @staticmethod
    def _build_simulator(seed: int) -> MicroprobeSimulator:
        # exactly what make_sim_microprobe builds by default, so the same seed gives the same maps
        from ..physics import mouse_egg

        return MicroprobeSimulator(mouse_egg(seed=seed), seed=seed)

    @property
    def simulator_lock(self) -> asyncio.Lock:
        """One user of the simulator at a time (its random generator and clock are shared)."""
        if self._simulator_lock is None:
            self._simulator_lock = asyncio.Lock()
        return self._simulator_lock

    def probe_geometry(self) -> tuple[float, tuple[float, float], float]:
        """(theta deg, map centre (y, x) m, defocus m) from the motor readbacks, as the simulated devices compute it."""
        zp = self.zone_plate
        return self.rotation.readback, (zp.y.readback * 1e-6, zp.x.readback * 1e-6), zp.z.readback * 1e-6

    def beam_on(self) -> bool:
        return self.shutter.is_open and float(self.beam_current.value) >= BEAM_OFF_CURRENT

    async def publish_simulator(self) -> None:
        sim = self.simulator
        await self.beam.show_probe(sim.probe)
        await self.mca.configure(sim.vortex)
        await self.dpc.central_stop_ratio.write(float(sim.dpc.central_stop_ratio))
        await self.scanner.line_overhead.write(float(sim.line_overhead))
        await self.scanner.num_channels.write(int(sim.vortex.n_channels))
        cal = sim.vortex.energy_calibration  # keV
        await self.scanner.calibration_offset.write(float(cal["offset"]))
        await self.scanner.calibration_slope.write(float(cal["gain"]))
        await self.scanner.calibration_quadratic.write(float(cal.get("quadratic", 0.0)))
        await self.scanner.calibration_units.write("keV")
        await self.sim_control.seed.write(int(sim.seed))
        await self.sim_control.specimen.write(str(sim.specimen.name))
        await self.sim_control.num_maps.write(len(sim.truth.thetas))
        await self.sim_control.realtime.write(int(self.options["realtime"]), verify_value=False)

    async def reset_simulator(self, seed: int) -> None:
        async with self.simulator_lock:
            self.simulator = await in_thread(self._build_simulator, seed)
            self.options["seed"] = seed
        await self.publish_simulator()
        logger.info("simulator reset with seed %d", seed)

    @beam_current.startup
    async def beam_current(self, instance, async_lib):
        opts = self.options
        await self.scanner.num_rows.write(opts["shape"][0])
        await self.scanner.num_cols.write(opts["shape"][1])
        await self.scanner.pixel_size.write(opts["pixel_size"])
        await self.scanner.dwell.write(opts["dwell"])
        await self.scanner.hdf5.file_path.write(opts["data_dir"])
        await self.publish_simulator()
        logger.info("IOC ready: prefix %r, seed %d, data in %s", self.prefix, opts["seed"], opts["data_dir"])

    def close(self) -> None:
        """Close an open HDF5 file (at exit)."""
        writer, self.scanner.hdf5.writer = self.scanner.hdf5.writer, None
        if writer is not None:
            writer.close()
