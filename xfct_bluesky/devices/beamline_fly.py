"""The fly scan on a beamline's real records: an SIS3820 MCS and the xMAP's mapping mode, stepped per pixel.

:class:`BeamlineFlyRaster` flies a map as a microprobe does, line by line: for each line it moves the
slow stage to the line and the fast one to its run-up, arms the MCS (``NuseAll`` = pixels,
``ChannelAdvance`` External, ``EraseStart``), the xMAP in MCA mapping (``CollectMode``,
``PixelsPerRun``, ``PixelsPerBuffer``, ``EraseStart``) and the trigger source (a position compare:
one pulse per pixel boundary), moves the fast stage across the line at pixel / dwell, waits until
both have the line's pixels, and reads them out: the MCS's mca records (``.VAL``, ``.NORD``) and the
xMAP's buffer (``image1:ArrayData``, decoded by :mod:`.xmap_buffer`). The lines make the same maps,
with the same data keys, as the simulated and the EPICS ``FlyRaster`` (:mod:`.spec`: DPC, transmission,
I0, quadrants, live and real time, ICR, OCR, one ROI map per element) and the full spectra (summed over
the detector elements) go to one HDF5 file announced with StreamResource/StreamDatum (the existing
:class:`~xfct_bluesky.storage.hdf5.StreamHDF5Writer`, as the simulated FlyRaster writes them).

A line is never filled in: a line whose pixels do not all arrive within its timeout (pixels x dwell,
the run-up and run-out, and ``line_margin``) stops the MCS, the xMAP and the trigger and fails the
acquisition with :class:`LineError`, which gives the line, the pixels expected and got (the MCS's
``CurrentChannel``/``.NORD`` and the xMAP buffer's pixel count) and the time waited.

The classes: :class:`SIS3820MCS` (the SIS3820's records, epics-modules/mca ``SIS38XX.template``; the
components of BCDA-APS apstools' ``Struck3820``: ophyd has no MCS class), :class:`XMAPMapping`
(ophyd's ``EpicsDXPMapping`` with the system's start/stop, the NDStdArrays plugin and mca1's ROIs and
calibration), :class:`PositionCompare` (the simulated IOC's trigger source; a beamline's own trigger
hardware needs a class with these components). :func:`make_beamline_microprobe` assembles the plans'
microprobe (:class:`BeamlineMicroprobe`: rotation, zone plate, shutter, this raster as ``scanner``) on a
configuration's records, so ``xfct_tomo`` and the other plans run on them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO, Signal
from ophyd import DynamicDeviceComponent as DDC
from ophyd import FormattedComponent as FCpt
from ophyd.mca import EpicsDXPMapping
from ophyd.status import DeviceStatus

from ..physics.microprobe import check_dwell, check_field
from ..physics.specimen import ELEMENT_SYMBOLS
from .checks import connect_records
from .signals import ArraySignal
from .sim import Shutter
from .spec import MAP_DTYPES, map_components, with_units
from .xmap_buffer import decode_buffer

logger = logging.getLogger(__name__)

__all__ = ["SIS3820MCS", "BeamlineFlyRaster", "LineError", "PositionCompare", "XMAPMapping"]

#: Seconds a command (a put, a short move) may take before the line counts as failed.
COMMAND_TIMEOUT = 10.0
#: Metres per motor EGU the fly raster understands.
EGU_METRES = {"mm": 1e-3, "um": 1e-6, "microns": 1e-6, "nm": 1e-9, "m": 1.0}


class _Stopped(RuntimeError):
    """The map was stopped (a RunEngine pause, suspension or stop) between or within lines."""


class LineError(RuntimeError):
    """A line of a fly scan that did not arrive whole: ``line``, ``expected``, ``got`` (pixels), ``waited``
    and ``timeout`` (s) say which and how; nothing of it was filled in."""

    def __init__(self, message: str, *, line: int, expected: int, got: int, waited: float, timeout: float):
        super().__init__(message)
        self.line, self.expected, self.got, self.waited, self.timeout = line, expected, got, waited, timeout


# --------------------------------------------------------------- records ---
class McsChannel(Device):
    """One input of the MCS, its mca record: counts per channel (pixel) and how many were read."""

    spectrum = Cpt(EpicsSignalRO, ".VAL", kind="normal")
    num_read = Cpt(EpicsSignalRO, ".NORD", kind="normal")


class SIS3820MCS(Device):
    """An SIS3820 multichannel scaler (the PVs of epics-modules/mca ``SIS38XX.template``, as apstools'
    ``Struck3820`` reads them), with its 32 inputs ``mcas.mca1`` .. ``mcas.mca32``."""

    erase_start = Cpt(EpicsSignal, "EraseStart", kind="omitted")
    start_all = Cpt(EpicsSignal, "StartAll", kind="omitted")
    stop_all = Cpt(EpicsSignal, "StopAll", kind="omitted")
    erase_all = Cpt(EpicsSignal, "EraseAll", kind="omitted")
    acquiring = Cpt(EpicsSignalRO, "Acquiring", kind="omitted")
    channels_used = Cpt(EpicsSignal, "NuseAll", kind="config")
    current_channel = Cpt(EpicsSignalRO, "CurrentChannel", kind="omitted")
    channel_advance = Cpt(EpicsSignal, "ChannelAdvance", string=True, kind="config")
    dwell_time = Cpt(EpicsSignal, "Dwell", kind="config")
    preset_real_time = Cpt(EpicsSignal, "PresetReal", kind="config")
    elapsed_real_time = Cpt(EpicsSignalRO, "ElapsedReal", kind="omitted")
    prescale = Cpt(EpicsSignal, "Prescale", kind="config")
    channel_max = Cpt(EpicsSignalRO, "MaxChannels", kind="config")
    model = Cpt(EpicsSignalRO, "Model", string=True, kind="config")
    mcas = DDC({f"mca{n}": (McsChannel, f"mca{n}", {"kind": "omitted"}) for n in range(1, 33)}, kind="omitted")


class NDStdArraysReadout(Device):
    """An areaDetector NDStdArrays plugin: the last NDArray's data and its counter."""

    array_data = Cpt(EpicsSignalRO, "ArrayData", kind="omitted")
    array_counter = Cpt(EpicsSignalRO, "ArrayCounter_RBV", kind="omitted")
    array_size0 = Cpt(EpicsSignalRO, "ArraySize0_RBV", kind="omitted")


class MappingROI(Device):
    """One ROI of an mca record: its name and channels LO..HI (inclusive)."""

    label = Cpt(EpicsSignalRO, "NM", string=True, kind="config")
    lo_chan = Cpt(EpicsSignalRO, "LO", kind="config")
    hi_chan = Cpt(EpicsSignalRO, "HI", kind="config")


class ElementRecord(Device):
    """The first element's mca record as the map needs it: the energy calibration and the ROIs."""

    calibration_offset = Cpt(EpicsSignalRO, ".CALO", kind="config")
    calibration_slope = Cpt(EpicsSignalRO, ".CALS", kind="config")
    calibration_quadratic = Cpt(EpicsSignalRO, ".CALQ", kind="config")
    num_channels = Cpt(EpicsSignalRO, ".NUSE", kind="config")
    rois = DDC({f"roi{i}": (MappingROI, f".R{i}", {"kind": "config"}) for i in range(len(ELEMENT_SYMBOLS))},
               kind="config")


class XMAPMapping(EpicsDXPMapping):
    """An xMAP system in MCA mapping mode: ophyd's ``EpicsDXPMapping`` (CollectMode, PixelsPerRun,
    PixelsPerBuffer, ... with ``_RBV``), the run's start and stop, the buffers read out through the
    NDStdArrays plugin ``image1:``, and ``mca1``'s calibration and ROIs."""

    erase_start = Cpt(EpicsSignal, "EraseStart", kind="omitted")
    stop_all = Cpt(EpicsSignal, "StopAll", kind="omitted")
    acquiring = Cpt(EpicsSignalRO, "Acquiring", kind="omitted")
    image1 = Cpt(NDStdArraysReadout, "image1:", kind="omitted")
    mca1 = Cpt(ElementRecord, "mca1", kind="config")


class PositionCompare(Device):
    """The trigger source of the simulated beamline IOC (``SIM:PosComp:``): NumPixels + 1 pulses at
    Start + k Step of the fast stage, to the MCS's channel advance and the xMAP's gate."""

    start = Cpt(EpicsSignal, "Start", kind="config")
    step = Cpt(EpicsSignal, "Step", kind="config")
    num_pixels = Cpt(EpicsSignal, "NumPixels", kind="config")
    arm = Cpt(EpicsSignal, "Arm", kind="omitted")
    pulse_count = Cpt(EpicsSignalRO, "PulseCount_RBV", kind="omitted")
    axis = Cpt(EpicsSignalRO, "Axis_RBV", string=True, kind="config")


# ------------------------------------------------------------ the flyer ---
class BeamlineFlyRaster(map_components("BeamlineFlyMaps", ArraySignal)):  # the maps: one spec, devices/spec.py
    """Fly-scan raster on the MCS and the xMAP's mapping mode, line by line (module docstring).

    The configuration and the reading are the simulated ``FlyRaster``'s: ``num_rows``, ``num_cols``,
    ``pixel_size`` (m), ``dwell`` (s per pixel), ``travel`` (m, half-range of the fast stage about where it
    stands), ``save_spectra``; ``trigger()`` flies one map centred where the stages stand and completes
    when its last line is read (or fails with :class:`LineError`); ``read()`` gives the maps (ny, nx) and
    ``map_dwell``; staged with ``save_spectra``, the spectra (ny, nx, channels) go to HDF5 (data key
    ``<name>_spectra``).

    Parameters
    ----------
    mcs_prefix, xmap_prefix, trigger_prefix : str
        The MCS (``2xfm:mcs:``), the xMAP system (``dxpXMAP2xfm3:``), the trigger source.
    channels : dict
        MCS input of each counter role: ``i0`` and ``dpc_a`` .. ``dpc_d`` (``{"i0": 2, "dpc_a": 11, ...}``).
    fast_motor, slow_motor : str
        Motor records of the fast (x) and slow (y) axes.
    elements : int
        Detector elements of the xMAP module (at most 4).
    i0_efficiency, dpc_efficiency : float
        The ion chamber's and the segmented detector's efficiencies: transmission = segments' sum /
        (I0 / i0_efficiency x dpc_efficiency), the beamline's calibration.
    line_margin : float
        Seconds a line may take beyond its pixels x dwell and the run-up and run-out.
    hdf5_directory : path, optional
        Folder of the spectra files (default: the data folder's assets).
    """

    num_rows = Cpt(Signal, value=3, kind="config")
    num_cols = Cpt(Signal, value=4, kind="config")
    pixel_size = Cpt(Signal, value=600e-9, kind="config")  # m
    dwell = Cpt(Signal, value=20e-3, kind="config")  # s per pixel
    travel = Cpt(Signal, value=1e-3, kind="config")  # m, half-range of the fast stage
    save_spectra = Cpt(Signal, value=True, kind="config")
    map_dwell = Cpt(Signal, value=0.0, kind="normal")

    mcs = FCpt(SIS3820MCS, "{self._mcs_prefix}", kind="omitted")
    xmap = FCpt(XMAPMapping, "{self._xmap_prefix}", kind="omitted")
    pixel_trigger = FCpt(PositionCompare, "{self._trigger_prefix}", kind="omitted")
    fast = FCpt(EpicsMotor, "{self._fast_motor}", kind="omitted")
    slow = FCpt(EpicsMotor, "{self._slow_motor}", kind="omitted")

    def __init__(self, prefix="", *, mcs_prefix: str, xmap_prefix: str, trigger_prefix: str, channels: dict,
                 fast_motor: str, slow_motor: str, elements: int = 4, i0_efficiency: float = 1.0,
                 dpc_efficiency: float = 1.0, line_margin: float = 5.0, hdf5_directory=None, **kwargs):
        missing = [r for r in ("i0", "dpc_a", "dpc_b", "dpc_c", "dpc_d") if r not in channels]
        if missing:
            raise ValueError(f"channels={channels!r} lacks {', '.join(missing)}: the fly raster reads I0 and the "
                             "four DPC segments from the MCS; give each its input, e.g. {'i0': 2, 'dpc_a': 11, ...}")
        if not 1 <= int(elements) <= 4:
            raise ValueError(f"elements={elements!r}: allowed 1..4 (one xMAP module); give the detector's elements")
        if not line_margin > 0:
            raise ValueError(f"line_margin={line_margin!r}: allowed seconds > 0, e.g. 5")
        self._mcs_prefix, self._xmap_prefix, self._trigger_prefix = mcs_prefix, xmap_prefix, trigger_prefix
        self._fast_motor, self._slow_motor = fast_motor, slow_motor
        super().__init__(prefix, **kwargs)
        self.channels = dict(channels)
        self.elements = int(elements)
        self.i0_efficiency, self.dpc_efficiency = float(i0_efficiency), float(dpc_efficiency)
        self.line_margin = float(line_margin)
        self.hdf5_directory = hdf5_directory
        self._writer = None
        self._stop = threading.Event()  # the map in flight's (each trigger makes its own)
        self._flying: threading.Thread | None = None
        self.last_geometry: dict | None = None

    # -- configuration ------------------------------------------------------
    def expected_shape(self) -> tuple[int, int]:
        return int(self.num_rows.get()), int(self.num_cols.get())

    @property
    def spectra_key(self) -> str:
        return f"{self.name}_spectra"

    def metres_per_egu(self, motor) -> float:
        egu = str(motor.motor_egu.get()).strip()
        if egu not in EGU_METRES:
            raise ValueError(f"{motor.prefix}.EGU = {egu!r}: the fly raster moves stages in {', '.join(EGU_METRES)}; "
                             "set the motor record's EGU")
        return EGU_METRES[egu]

    def check_field(self, shape, pixel_size) -> tuple[tuple[int, int], float]:
        """A field (shape, pixel size m), checked against the MCS's channels and the fast stage's travel."""
        shape, pixel = check_field(shape, pixel_size)
        most = int(self.mcs.channel_max.get())
        if shape[1] > most:
            raise ValueError(f"{self.name}: a line of {shape[1]} pixels is more than the {most} channels of the MCS "
                             f"{self.mcs.prefix}; use at most {most} columns")
        half = (shape[1] / 2 + 1) * pixel  # the line and its run-up and run-out
        if half > float(self.travel.get()):
            raise ValueError(f"{self.name}: a line of {shape[1]} pixels of {pixel:g} m needs +-{half:g} m of the fast "
                             f"stage, more than its travel {float(self.travel.get()):g} m; use fewer or smaller pixels")
        return shape, pixel

    def check_configuration(self) -> None:
        self.check_field(self.expected_shape(), self.pixel_size.get())
        check_dwell(self.dwell.get())

    def line_timeout(self, nx: int, dwell: float) -> float:
        """Seconds a line may take: its pixels x dwell, one pixel of run-up and one of run-out, the margin."""
        return (nx + 2) * float(dwell) + self.line_margin

    def map_duration(self, shape, dwell) -> float:
        ny, nx = shape
        return ny * ((nx + 2) * float(dwell) + 1.0)  # about a second per line for the moves and the readout

    # -- staging and external data -------------------------------------------
    def stage(self):
        self.check_configuration()
        self._windows = self.roi_windows()
        staged = super().stage()
        if self.save_spectra.get():
            from ..storage.folder import ASSETS_SUBDIR, default_data_dir
            from ..storage.hdf5 import StreamHDF5Writer

            directory = Path(self.hdf5_directory or default_data_dir() / ASSETS_SUBDIR)
            directory.mkdir(parents=True, exist_ok=True)
            ny, nx = self.expected_shape()
            n = int(self.xmap.mca1.num_channels.get())
            self._writer = StreamHDF5Writer(directory, data_key=self.spectra_key, dtype="<u4",
                                            frame_shape=(ny, nx, n), source=f"ca://{self.xmap.prefix}image1:",
                                            attrs={"energy_calibration": self.energy_calibration()})
            self._writer.open(name=self.name)
        return staged

    def unstage(self):
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._writer = None
        return super().unstage()

    def roi_windows(self) -> dict[str, tuple[int, int]]:
        """Element -> channels [lo, hi) of its ROI map, from mca1's ROIs (``.R<i>NM``, ``LO``, ``HI``)."""
        found = {}
        for name in self.xmap.mca1.rois.component_names:
            roi = getattr(self.xmap.mca1.rois, name)
            label = str(roi.label.get()).strip()
            if label:
                found[label] = (int(roi.lo_chan.get()), int(roi.hi_chan.get()) + 1)
        missing = [s for s in ELEMENT_SYMBOLS if s not in found]
        if missing:
            raise ValueError(f"{self.xmap.mca1.prefix}: no ROI named {', '.join(missing)} (ROIs: {sorted(found)}); "
                             "name an ROI of mca1 after each element the maps hold (.R<i>NM, LO, HI)")
        return {s: found[s] for s in ELEMENT_SYMBOLS}

    def energy_calibration(self) -> dict:
        mca = self.xmap.mca1
        return {"offset": float(mca.calibration_offset.get()), "gain": float(mca.calibration_slope.get()),
                "quadratic": float(mca.calibration_quadratic.get()), "units": "keV"}

    def describe(self):
        desc = super().describe()
        if self._writer is not None:
            desc.update(self._writer.describe_key())
            desc[self.spectra_key]["energy_calibration"] = self.energy_calibration()
        return with_units(desc, self)

    def collect_asset_docs(self, index=None):
        if self._writer is not None:
            yield from self._writer.collect_asset_docs(index)

    def get_index(self) -> int:
        return self._writer.get_index() if self._writer is not None else 0

    # -- acquisition ----------------------------------------------------------
    def trigger(self):
        """Fly one map centred where the stages stand, line by line; fails with :class:`LineError` (or any
        error of the records) and never publishes a map with a line missing.

        A map stopped by :meth:`pause` (a RunEngine pause or suspension) or :meth:`stop` is thrown away and
        its status completes without error, as the simulated twin's: the RunEngine has given up on it and
        takes it again after resuming.
        """
        self.check_configuration()
        status = DeviceStatus(self)
        # this map's stop: a map stopped and thrown away keeps its own set, so it cannot fly on when the
        # RunEngine, resumed, triggers the map again; and the new map starts once the old one has stopped its
        # records and stages (its cleanup would otherwise stop the new map's MCS and xMAP)
        stop = self._stop = threading.Event()
        previous = self._flying

        def fly():
            if previous is not None:
                previous.join()
            try:
                self._publish(*self._fly(stop))
            except _Stopped as exc:
                logger.warning("%s: %s", self.name, exc)
                status.set_finished()
            except Exception as exc:  # noqa: BLE001 - reported through the status, never lost
                logger.error("%s: %s", self.name, exc)
                status.set_exception(exc)
            else:
                status.set_finished()

        self._flying = threading.Thread(target=fly, name=f"{self.name}-fly", daemon=True)
        self._flying.start()
        return status

    def stop(self, *, success=False):
        self._stop.set()

    def pause(self):
        self._stop.set()

    def resume(self):
        pass

    def _fly(self, stop: threading.Event):
        ny, nx = self.expected_shape()
        dwell = float(self.dwell.get())
        fast, slow = self.fast, self.slow
        scale = self.metres_per_egu(fast)
        if self.metres_per_egu(slow) != scale:
            raise ValueError(f"{fast.prefix} and {slow.prefix} are in different units; the raster needs one")
        step = float(self.pixel_size.get()) / scale
        x0, y0 = float(fast.user_readback.get()), float(slow.user_readback.get())
        speed = float(fast.velocity.get())
        start = x0 - nx / 2 * step
        ys = [y0 + (j - (ny - 1) / 2) * step for j in range(ny)]
        self.last_geometry = {"start": start, "step": step, "velocity": step / dwell, "ys": ys, "x0": x0, "y0": y0}
        lines = []
        self._arm_map(nx, step)
        try:
            for j, y in enumerate(ys):
                if stop.is_set():
                    raise _Stopped(f"the map was stopped before line {j} and thrown away; nothing was published")
                lines.append(self._fly_line(j, y, start, step, dwell, nx, speed, stop))
        finally:
            fast.velocity.put(speed, wait=True)
            for motor, home in ((fast, x0), (slow, y0)):
                motor.set(home).wait(COMMAND_TIMEOUT)
        return lines, dwell

    def _arm_map(self, nx: int, step: float) -> None:
        """What every line of the map shares: the MCS's channels and external advance, the xMAP's MCA mapping
        (gated by the trigger, one buffer per line), the trigger's pixels."""
        mcs, xmap, trig = self.mcs, self.xmap, self.pixel_trigger
        mcs.channels_used.put(nx, wait=True)
        mcs.channel_advance.put("External", wait=True)
        xmap.collect_mode.put(1, wait=True)  # MCA mapping
        xmap.pixel_advance_mode.put(0, wait=True)  # Gate: the trigger source's pulses
        xmap.pixels_per_run.put(nx, wait=True)
        xmap.pixels_per_buffer.put(nx, wait=True)  # one buffer per line
        trig.step.put(step, wait=True)
        trig.num_pixels.put(nx, wait=True)

    def _fly_line(self, j: int, y: float, start: float, step: float, dwell: float, nx: int, speed: float,
                  stop: threading.Event):
        mcs, xmap, trig, fast, slow = self.mcs, self.xmap, self.pixel_trigger, self.fast, self.slow
        fast.velocity.put(speed, wait=True)
        moves = [slow.set(y), fast.set(start - step)]
        for st in moves:
            st.wait(COMMAND_TIMEOUT)
        counter = int(xmap.image1.array_counter.get(use_monitor=False))
        mcs.erase_start.put(1, wait=True)
        xmap.erase_start.put(1, wait=True)
        trig.start.put(start, wait=True)
        trig.arm.put(1, wait=True)
        fast.velocity.put(step / dwell, wait=True)
        t0 = time.monotonic()
        move = fast.set(start + (nx + 1) * step)
        timeout = self.line_timeout(nx, dwell)
        while True:
            mcs_done = str(mcs.acquiring.get(use_monitor=False)) in ("0", "Done")
            xmap_done = int(xmap.image1.array_counter.get(use_monitor=False)) > counter \
                and not int(xmap.acquiring.get(use_monitor=False))
            if mcs_done and xmap_done:
                break
            waited = time.monotonic() - t0
            if waited > timeout or stop.is_set():
                raise self._line_failed(j, nx, dwell, waited, timeout, stopped=stop.is_set())
            time.sleep(0.005)
        waited = time.monotonic() - t0
        move.wait(COMMAND_TIMEOUT)
        counts = {}
        for role, n in {"clock": 1, **self.channels}.items():
            channel = getattr(mcs.mcas, f"mca{n}")
            used = int(channel.num_read.get(use_monitor=False))
            if used != nx:
                raise LineError(f"{self.name}: line {j}: the MCS {mcs.prefix}mca{n} ({role}) read {used} of {nx} "
                                f"pixels after {waited:.2f} s; the line was not filled in",
                                line=j, expected=nx, got=used, waited=waited, timeout=timeout)
            counts[role] = np.asarray(channel.spectrum.get(use_monitor=False))[:nx].astype(np.int64).astype(np.uint32)
        buffer = decode_buffer(xmap.image1.array_data.get(use_monitor=False))
        if buffer.num_pixels != nx or buffer.first_pixel != 0:
            raise LineError(f"{self.name}: line {j}: the xMAP buffer holds {buffer.num_pixels} of {nx} pixels from "
                            f"pixel {buffer.first_pixel} (expected 0) after {waited:.2f} s; the line was not filled in",
                            line=j, expected=nx, got=buffer.num_pixels, waited=waited, timeout=timeout)
        if buffer.errors:
            raise LineError(f"{self.name}: line {j}: the xMAP buffer reports errors ({buffer.errors}: a channel over "
                            "65535 counts in a pixel); use a shorter dwell", line=j, expected=nx, got=nx,
                            waited=waited, timeout=timeout)
        return counts, buffer

    def _line_failed(self, j, nx, dwell, waited, timeout, *, stopped=False) -> Exception:
        """Stop the MCS, the xMAP and the trigger; the error naming what arrived (read after the stop)."""
        mcs, xmap, trig = self.mcs, self.xmap, self.pixel_trigger
        got_mcs = int(mcs.current_channel.get(use_monitor=False))
        acquiring = str(mcs.acquiring.get(use_monitor=False)) not in ("0", "Done")
        counter = int(xmap.image1.array_counter.get(use_monitor=False))
        for sig in (trig.arm, mcs.stop_all, xmap.stop_all):
            sig.put(0 if sig is trig.arm else 1, wait=True)
        self.fast.stop()
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while int(xmap.image1.array_counter.get(use_monitor=False)) == counter and time.monotonic() < deadline:
            time.sleep(0.01)
        got_xmap = decode_buffer(xmap.image1.array_data.get(use_monitor=False)).num_pixels \
            if int(xmap.image1.array_counter.get(use_monitor=False)) > counter else 0
        if stopped:
            return _Stopped(f"the map was stopped in line {j} and thrown away; nothing was published")
        got = min(got_mcs, got_xmap)
        if got_mcs == nx and acquiring:
            why = (f"late: all {nx} pixels were counted (MCS CurrentChannel {got_mcs}) but the line was not read "
                   f"out within its timeout")
        else:
            why = f"short: {got} of {nx} pixels (MCS CurrentChannel {got_mcs}, xMAP buffer {got_xmap} pixels)"
        return LineError(f"{self.name}: line {j} {why}; waited {waited:.2f} s, timeout {timeout:.2f} s ({nx} pixels "
                         f"x {dwell:g} s dwell, run-up and run-out, {self.line_margin:g} s margin). The map was "
                         "stopped and nothing of it published; the line was not filled in",
                         line=j, expected=nx, got=got, waited=waited, timeout=timeout)

    def _publish(self, lines, dwell) -> None:
        from ..analysis.dpc import dpc_from_segments

        def stack(role):
            return np.stack([counts[role] for counts, _ in lines])

        i0 = stack("i0")
        quad = np.stack([stack(r) for r in ("dpc_a", "dpc_b", "dpc_c", "dpc_d")])
        spectra = np.stack([buf.spectra[:, :self.elements].sum(axis=1) for _, buf in lines])  # (ny, nx, channels)
        real = np.stack([buf.real_time[:, :self.elements].mean(axis=1) for _, buf in lines])
        live = np.stack([buf.live_time[:, :self.elements].mean(axis=1) for _, buf in lines])
        icr = np.stack([buf.input_counts[:, :self.elements].sum(axis=1) for _, buf in lines]) / real
        ocr = np.stack([buf.output_counts[:, :self.elements].sum(axis=1) for _, buf in lines]) / real
        dpc = dpc_from_segments(*quad.astype(np.float64))
        incident = i0.astype(np.float64) / self.i0_efficiency * self.dpc_efficiency
        transmission = np.zeros(i0.shape, np.float32)
        np.divide(quad.astype(np.float64).sum(axis=0), incident, out=transmission, where=incident > 0,
                  casting="unsafe")
        maps = {"dpc_x": dpc.x, "dpc_y": dpc.y, "dpc_diag": dpc.diagonal, "transmission": transmission, "i0": i0,
                "q1": quad[0], "q2": quad[1], "q3": quad[2], "q4": quad[3], "live_time": live, "real_time": real,
                "icr": icr, "ocr": ocr}
        windows = getattr(self, "_windows", None) or self.roi_windows()
        for sym, (lo, hi) in windows.items():
            maps[sym] = spectra[:, :, lo:hi].sum(axis=2)
        ts = time.time()
        self.map_dwell.put(float(dwell), timestamp=ts)
        for key in MAP_DTYPES:
            getattr(self, key).put(maps[key], timestamp=ts)
        if self._writer is not None:
            self._writer.write(spectra.astype("<u4"))


# ------------------------------------------------------- the plans' microprobe ---
class SoftShutter(Shutter):
    """The shutter of a configuration that names none: the simulated microprobe's, whose ``set('open'/'close')``
    completes at once and only records the command in ``state`` (the beam is whatever the beamline's own
    shutter makes it)."""


class CommandShutter(SoftShutter):
    """A shutter on one command PV (the configuration's ``shutter`` role): 1 opens, 0 closes (put completion)."""

    command = Cpt(EpicsSignal, "", kind="omitted")

    def set(self, value):
        status = super().set(value)
        return self.command.set(1 if self.is_open else 0, timeout=COMMAND_TIMEOUT) & status


class BeamlineMicroprobe(Device):
    """The plans' microprobe on a beamline's records: ``rotation``, ``zone_plate`` (x, y, z), ``shutter`` and
    ``scanner`` (a :class:`BeamlineFlyRaster`); made by :func:`make_beamline_microprobe`.

    ``beam_parameters()`` gives the beam the plans record (energy, flux, spot), as the beamline states it
    (the records of a microprobe do not say its flux and spot).
    """

    def __init__(self, prefix="", *, beam: dict, **kwargs):
        super().__init__(prefix, **kwargs)
        self._beam = beam

    def beam_parameters(self) -> dict:
        """Energy (keV), flux (photons/s) and spot FWHM (m, [h, v]) for the plans' metadata."""
        return {"energy_kev": self._beam["energy_kev"], "flux": self._beam["flux"],
                "spot_fwhm": list(self._beam["spot_fwhm"])}

    def collect_asset_docs(self, index=None):
        yield from self.scanner.collect_asset_docs(index)

    def get_index(self) -> int:
        return self.scanner.get_index()


def _beam(energy_kev, flux, spot_fwhm) -> dict:
    from ..validate import positive

    energy = positive("energy_kev", energy_kev, fix="Give the beam energy in keV, e.g. 10.", unit=" keV")
    flux = positive("flux", flux, fix="Give the flux on the sample in photons/s, e.g. 1e9.", unit=" photons/s")
    try:
        spot = [positive(f"spot_fwhm[{i}]", v, fix="Give the focal spot FWHM in m, e.g. (300e-9, 300e-9).",
                         unit=" m") for i, v in enumerate(spot_fwhm)]
    except TypeError:
        raise ValueError(f"spot_fwhm={spot_fwhm!r}: allowed (horizontal, vertical) FWHM in m, e.g. "
                         "(300e-9, 300e-9)") from None
    if len(spot) != 2:
        raise ValueError(f"spot_fwhm={spot_fwhm!r}: allowed two numbers (horizontal, vertical) in m, e.g. "
                         "(300e-9, 300e-9)")
    return {"energy_kev": energy, "flux": flux, "spot_fwhm": spot}


def fly_raster_component(config, *, kind: str = "omitted", **kwargs):
    """A component :class:`BeamlineFlyRaster` on ``config``'s MCS (its counters' ``fly`` arrays) and xMAP,
    the fast axis :func:`~xfct_bluesky.beamline.config.fast_axis`; None without MCS arrays or xMAP.
    ``kwargs`` go to the flyer (``i0_efficiency``, ``line_margin``, ``hdf5_directory`` ...)."""
    from ..beamline.config import fast_axis, mcs_layout
    from ..ioc.beamline_fly import TRIGGER_PREFIX

    layout = mcs_layout(config)
    if layout is None or config.roles.get("fluorescence", ("",))[0] != "xmap":
        return None
    fast = fast_axis(config)
    slow = "sample_y" if fast == "sample_x" else "zone_plate_y"
    _, xmap, extras = config.roles["fluorescence"]
    return Cpt(BeamlineFlyRaster, "", kind=kind, mcs_prefix=layout[0], channels=layout[1], xmap_prefix=xmap,
               trigger_prefix=kwargs.pop("trigger_prefix", TRIGGER_PREFIX), fast_motor=config.record(fast),
               slow_motor=config.record(slow), elements=min(extras["elements"], 4), **kwargs)


def make_beamline_microprobe(config, *, energy_kev, flux, spot_fwhm, name: str = "microprobe",
                             connect: float | None = 30.0, **flyer_kwargs) -> BeamlineMicroprobe:
    """The plans' microprobe (``xfct_tomo``, ``xrf_fly_map`` ...) on ``config``'s records.

    Parameters
    ----------
    config : BeamlineConfig
        With MCS ``fly`` arrays for I0 and the DPC segments and an xMAP (:func:`.beamline.fly_raster_component`).
    energy_kev, flux, spot_fwhm : float, float, (float, float)
        The beam the plans record and compute the dose from (keV, photons/s, m).
    connect : float or None
        Seconds to wait for every PV; None: do not wait.
    flyer_kwargs
        To the :class:`BeamlineFlyRaster` (``i0_efficiency``, ``line_margin``, ``hdf5_directory`` ...).

    Raises
    ------
    ValueError
        A beam figure that is not positive, or a configuration without the fly scan's records, before
        anything connects.
    TimeoutError
        Records that did not connect.
    """
    from .epics import StageMotor, use_control_layer

    beam = _beam(energy_kev, flux, spot_fwhm)
    scanner = fly_raster_component(config, kind="normal", **flyer_kwargs)
    if scanner is None:
        raise ValueError(f"{config.path}: no fly scan on these records: give I0 and the DPC segments 'fly' MCS "
                         "arrays (e.g. fly: '2xfm:mcs:mca2.VAL') and an xmap fluorescence detector")
    use_control_layer()
    zone_plate = type("ZonePlate", (Device,), {
        "__doc__": "The zone-plate stage on the configuration's motor records.",
        **{axis: Cpt(StageMotor, config.record(f"zone_plate_{axis}"), kind="normal") for axis in "xyz"}})
    shutter = Cpt(CommandShutter, config.record("shutter"), kind="normal") if "shutter" in config.roles \
        else Cpt(SoftShutter, "", kind="normal")
    # the storage-ring current, as the simulated microprobe's beam_current: what the beam-loss suspender watches
    ring = {"beam_current": Cpt(EpicsSignalRO, config.record("ring_current"), kind="omitted")} \
        if "ring_current" in config.roles else {}
    cls = type("BeamlineMicroprobe", (BeamlineMicroprobe,), {
        "__doc__": f"{config.beamline}: the plans' microprobe on its records.",
        "rotation": Cpt(StageMotor, config.record("rotation"), kind="normal"),
        "zone_plate": Cpt(zone_plate, "", kind="normal"), "shutter": shutter, "scanner": scanner, **ring})
    device = cls("", name=name, beam=beam)
    if connect is not None:
        connect_records(device, config, connect, "the microprobe's records")
    if "shutter" not in config.roles:
        logger.warning("%s: %s names no shutter; the plans' shutter commands are only recorded", name, config.path)
    return device
