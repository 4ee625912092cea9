"""The fly-scan controller of the microprobe IOC: map waveforms, the HDF5 writer of spectra, simulation control."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from ..devices._sim_common import mca_statistics
from ..devices.spec import mca_description, mca_hdf5_metadata
from ..physics.microprobe import check_travel
from ._common import (
    HDF5_DATASET,
    MAP_PVS,
    MAX_MAP_PIXELS,
    in_thread,
    ioc_root,
    long_string,
    to_wire,
)

logger = logging.getLogger("xfct_bluesky.ioc")


# --------------------------------------------------------------- fly scanner ---
def _map_waveforms() -> type[PVGroup]:
    ns: dict[str, object] = {"__doc__": "One flattened (ny * nx, row-major) waveform per map of the last acquisition."}
    for key, (suffix, dtype) in MAP_PVS.items():
        wire = ChannelType.FLOAT if np.dtype(dtype).kind == "f" else ChannelType.LONG
        ns[key] = pvproperty(name=suffix, value=np.zeros(0, "<f4" if wire == ChannelType.FLOAT else "<i4"),
                             dtype=wire, max_length=MAX_MAP_PIXELS, read_only=True, max_subscription_backlog=10)
    return type("MapWaveforms", (PVGroup,), ns)


MapWaveforms = _map_waveforms()


class HDF5Group(PVGroup):
    """Spectra to HDF5, as an areaDetector HDF5 plugin in Stream mode.

    ``Capture`` 1 opens ``FilePath/FileName_<8 hex>.h5`` (SWMR) with a
    resizable dataset of frames (ny, nx, channels) at ``DatasetName_RBV``;
    each map while capturing appends one frame (``NumCaptured_RBV``);
    ``Capture`` 0 closes the file. ``FilePath`` must lie under the IOC's data
    folder (``--data-dir``).
    """

    file_path = long_string("FilePath")
    file_name = long_string("FileName", "xfct")
    full_file_name = long_string("FullFileName_RBV", read_only=True)
    file_path_exists = pvproperty(name="FilePathExists_RBV", value=0, read_only=True)
    capture = pvproperty(name="Capture", value=0)
    capture_rbv = pvproperty(name="Capture_RBV", value=0, read_only=True)
    num_captured = pvproperty(name="NumCaptured_RBV", value=0, read_only=True)
    dataset = long_string("DatasetName_RBV", HDF5_DATASET, read_only=True)
    frame_shape = pvproperty(name="FrameShape_RBV", value=[0, 0, 0], max_length=3, read_only=True)
    chunk_shape = pvproperty(name="ChunkShape_RBV", value=[0, 0, 0, 0], max_length=4, read_only=True)
    swmr_mode = pvproperty(name="SWMRMode_RBV", value=1, read_only=True)
    write_status = pvproperty(name="WriteStatus", value="Write OK", enum_strings=("Write OK", "Write error"),
                              dtype=ChannelType.ENUM, read_only=True)
    write_message = long_string("WriteMessage", read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writer = None

    def _allowed(self, path: str) -> Path:
        root = Path(ioc_root(self).options["data_dir"]).resolve()
        target = Path(path).expanduser().resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"FilePath {path!r} is outside the IOC's data folder {str(root)!r}; give a folder "
                             "under it (or restart the IOC with another --data-dir)")
        return target

    async def _report(self, message: str = "") -> None:
        await self.write_status.write("Write error" if message else "Write OK")
        await self.write_message.write(message)
        if message:
            logger.error("%s: %s", self.prefix, message)

    @file_path.putter
    async def file_path(self, instance, value):
        try:
            target = self._allowed(value)
            await in_thread(target.mkdir, parents=True, exist_ok=True)
        except (ValueError, OSError) as exc:
            await self.file_path_exists.write(0)
            await self._report(str(exc))
            return value
        await self.file_path_exists.write(1)
        await self._report()
        return str(target)

    @capture.putter
    async def capture(self, instance, value):
        if value and self.writer is None:
            try:
                await self.open_file()
            except Exception as exc:  # noqa: BLE001 - reported in WriteStatus/WriteMessage; the put must complete
                await self._report(f"could not open the HDF5 file: {type(exc).__name__}: {exc}")
                return 0
        elif not value:
            await self.close_file()
        return 1 if self.writer is not None else 0

    async def open_file(self) -> None:
        from ..storage.hdf5 import StreamHDF5Writer

        root = ioc_root(self)
        directory = self._allowed(str(self.file_path.value))
        scanner = root.scanner
        frame = (int(scanner.num_rows.value), int(scanner.num_cols.value), root.simulator.vortex.n_channels)
        vortex = root.simulator.vortex  # the file says how channels map to keV, as the simulated FlyRaster's
        attrs, datasets = mca_hdf5_metadata(mca_description(vortex), vortex.n_channels)
        writer = StreamHDF5Writer(directory, data_key="spectra", dtype="<u4", frame_shape=frame,
                                  dataset=HDF5_DATASET, source=f"ca://{self.prefix}", attrs=attrs, datasets=datasets)
        path = await in_thread(writer.open, name=str(self.file_name.value) or "xfct")
        self.writer = writer
        await self.full_file_name.write(str(path))
        await self.frame_shape.write(list(frame))
        await self.chunk_shape.write(list(writer.chunks))
        await self.swmr_mode.write(int(writer.swmr))
        await self.num_captured.write(0)
        await self.capture_rbv.write(1)
        await self._report()

    async def close_file(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            await in_thread(writer.close)
        await self.capture_rbv.write(0)

    async def append(self, spectra) -> None:
        count = await in_thread(self.writer.write, spectra)
        await self.num_captured.write(int(count))


class ScannerGroup(PVGroup):
    """Fly-scan controller: a put of 1 to ``Acquire`` flies one map; the put completes when it is published.

    The map is taken at the stage positions of the moment (rotation, zone
    plate), with the configured shape, pixel size and dwell, the shutter and
    the ring current deciding whether there is beam; the spectra's channel
    calibration is served as the mca record's ``mca1.CALO``, ``CALS``, ``CALQ``
    and ``EGU``. A map that cannot be
    taken (bad configuration) ends with ``DetectorState_RBV`` = Error and the
    reason in ``StatusMessage_RBV``; a put of 0 to ``Acquire`` while flying
    aborts the map (Aborted: nothing published or written).
    """

    num_rows = pvproperty(name="NumRows", value=32)
    num_cols = pvproperty(name="NumCols", value=32)
    pixel_size = pvproperty(name="PixelSize", value=300e-9, units="m")
    dwell = pvproperty(name="Dwell", value=3e-3, units="s")
    travel = pvproperty(name="Travel", value=100e-6, units="m")
    save_spectra = pvproperty(name="SaveSpectra", value=1)
    acquire = pvproperty(name="Acquire", value=0)
    acquire_busy = pvproperty(name="Acquire_RBV", value=0, read_only=True)
    detector_state = pvproperty(name="DetectorState_RBV", value="Idle", dtype=ChannelType.ENUM,
                                enum_strings=("Idle", "Acquire", "Error", "Aborted"), read_only=True)
    status_message = long_string("StatusMessage_RBV", read_only=True)
    map_dwell = pvproperty(name="MapDwell_RBV", value=0.0, units="s", read_only=True)
    map_shape = pvproperty(name="MapShape_RBV", value=[0, 0], max_length=2, read_only=True)
    line_overhead = pvproperty(name="LineOverhead_RBV", value=0.0, units="s", read_only=True)
    max_pixels = pvproperty(name="MaxPixels_RBV", value=MAX_MAP_PIXELS, read_only=True)
    num_channels = pvproperty(name="NumChannels_RBV", value=2048, read_only=True)
    # how the spectra's channels map to energy, as the mca record's fields: E(i) = CALO + CALS i + CALQ i^2 (EGU)
    calibration_offset = pvproperty(name="mca1.CALO", value=0.0, precision=6, read_only=True)
    calibration_slope = pvproperty(name="mca1.CALS", value=0.01, precision=6, read_only=True)
    calibration_quadratic = pvproperty(name="mca1.CALQ", value=0.0, precision=9, read_only=True)
    calibration_units = pvproperty(name="mca1.EGU", value="keV", dtype=ChannelType.STRING, read_only=True)

    maps = SubGroup(MapWaveforms, prefix="Map:")
    hdf5 = SubGroup(HDF5Group, prefix="HDF1:")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._abort: asyncio.Event | None = None
        self._one_at_a_time: asyncio.Lock | None = None

    @acquire.putter
    async def acquire(self, instance, value):
        if not value:
            if self._abort is not None:
                self._abort.set()
            return 0
        if self._one_at_a_time is None:
            self._one_at_a_time = asyncio.Lock()
        async with self._one_at_a_time:
            abort = self._abort = asyncio.Event()
            await self.acquire_busy.write(1)
            await self.detector_state.write("Acquire")
            await self.status_message.write("Acquiring")
            try:
                state, message = await self._fly(abort)
            except Exception as exc:  # reported in the state PVs; the put itself must complete
                logger.exception("%s: acquisition failed", instance.pvname)
                state, message = "Error", f"{type(exc).__name__}: {exc}"
            await self.status_message.write(message)
            await self.detector_state.write(state)
            await self.acquire_busy.write(0)
        return 0

    def _check(self, root, shape, pixel_size, dwell, spectra, map_center) -> tuple:
        """The simulator's checks and the stage travel: what ``FlyRaster.check_configuration`` checks."""
        shape, pixel, dwell = root.simulator.check_map(shape, pixel_size, dwell, spectra=spectra)
        if shape[0] * shape[1] > MAX_MAP_PIXELS:
            raise ValueError(f"a {shape[0]}x{shape[1]} map has {shape[0] * shape[1]} pixels, more than the "
                             f"{MAX_MAP_PIXELS} of the map waveforms; use a smaller shape")
        check_travel(shape, pixel, map_center, float(self.travel.value))
        if spectra:
            frame = (*shape, root.simulator.vortex.n_channels)
            if tuple(self.hdf5.writer.frame_shape) != frame:
                raise ValueError(f"the HDF5 file takes frames of {tuple(self.hdf5.writer.frame_shape)}, this map "
                                 f"would give {frame}; stop and restart the capture (unstage and stage the scanner)")
        return shape, pixel, dwell

    async def _fly(self, abort: asyncio.Event) -> tuple[str, str]:
        root = ioc_root(self)
        spectra = self.hdf5.writer is not None
        theta, map_center, defocus = root.probe_geometry()
        beam = root.beam_on()
        shape = (int(self.num_rows.value), int(self.num_cols.value))
        try:
            shape, pixel, dwell = self._check(root, shape, float(self.pixel_size.value), float(self.dwell.value),
                                              spectra, map_center)
        except ValueError as exc:
            return "Error", str(exc)
        async with root.simulator_lock:
            started = asyncio.get_running_loop().time()
            sim = root.simulator
            res = await in_thread(sim.simulate_map, shape, pixel, dwell, theta, map_center=map_center, defocus=defocus,
                                   spectra=spectra, beam_on=beam)
            res.maps.update(mca_statistics(sim, res, beam))  # real time, ICR, OCR, as the simulated FlyRaster
            if root.options.get("realtime"):
                remaining = res.duration - (asyncio.get_running_loop().time() - started)
                try:
                    await asyncio.wait_for(abort.wait(), max(remaining, 0.0))
                except TimeoutError:
                    pass
            if abort.is_set():
                sim.truth.discard_last()
                return "Aborted", (f"the map at theta={theta:.3f} deg was aborted and thrown away; "
                                   "nothing was published or written")
            for key, (_, dtype) in MAP_PVS.items():
                await getattr(self.maps, key).write(to_wire(res.maps[key], dtype))
            await self.map_shape.write(list(shape))
            await self.map_dwell.write(float(res.dwell))
            if spectra:
                await self.hdf5.append(res.spectra)
            res.spectra = None
            await root.sim_control.num_maps.write(len(sim.truth.thetas))
        return "Idle", f"map {shape[0]}x{shape[1]} at theta={theta:.3f} deg done"


# ---------------------------------------------------------------- simulation ---
class SimControlGroup(PVGroup):
    """The simulation behind the PVs (not hardware): its seed, a reset, what it has done."""

    seed = pvproperty(name="Seed", value=0)
    reset_cmd = pvproperty(name="Reset", value=0)
    realtime = pvproperty(name="Realtime", value=0)
    num_maps = pvproperty(name="NumMaps_RBV", value=0, read_only=True)
    specimen = long_string("Specimen_RBV", read_only=True)

    @reset_cmd.putter
    async def reset_cmd(self, instance, value):
        if value:
            root = ioc_root(self)
            try:
                await root.reset_simulator(int(self.seed.value))
            except Exception:  # reported in the log; the put itself must complete
                logger.exception("%s: reset failed", instance.pvname)
        return 0

    @realtime.putter
    async def realtime(self, instance, value):
        ioc_root(self).options["realtime"] = bool(value)
        return 1 if value else 0
