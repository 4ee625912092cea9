"""The fly scan's records in the beamline IOC: an SIS3820 MCS, the xMAP's mapping mode, a pixel trigger.

A real microprobe flies a line so: the fast stage moves at constant speed; a trigger source (a position
compare on its encoder, a softGlue or PandABox block) sends one pulse per pixel boundary to the
multichannel scaler's external channel advance and to the xMAP's gate; each pulse closes a pixel, in
the MCS (one channel of every counter input) and in the xMAP's mapping buffer (one spectrum per
detector element); at the end of the line both are read out. This module serves that, on the record
layouts of the real IOCs, backed by the simulator (one :meth:`~xfct_bluesky.physics.MicroprobeSimulator.point`
per pixel, at the pixel's centre, for the pixel's time):

=====================  ===========================================================================
records                layout followed
=====================  ===========================================================================
``<mcs>`` (2-ID-E:     epics-modules/mca ``mcaApp/Db/SIS38XX.template`` (EraseStart, StartAll,
``2xfm:mcs:``)         StopAll, EraseAll, Acquiring, NuseAll, CurrentChannel, ChannelAdvance
                       Internal/External, Dwell, PresetReal, ElapsedReal, Prescale, MaxChannels,
                       Model, Channel1Source) and one mca record per input ``mca1``..``mca32``
                       (``.VAL``, ``.NORD``, ``.NUSE``), the names 2-ID-E's fly-scan MDA file
                       records; BCDA-APS/apstools ``devices/struck3820.py`` reads the same.
                       Channel 1 counts the 50 MHz internal clock.
``<xmap>`` mapping     epics-modules/dxp ``dxpApp/Db/dxpXMAP.template``: CollectMode (MCA spectra,
                       MCA mapping, SCA mapping), PixelAdvanceMode (Gate, Sync), PixelsPerRun,
                       PixelsPerBuffer, AutoPixelsPerBuffer, BufferSize_RBV, NextPixel, with their
                       ``_RBV``; EraseStart in mapping mode starts the run, StopAll ends it.
``<xmap>image1:``      an areaDetector NDStdArrays plugin: ``ArrayData`` (the buffer's 16-bit words,
                       :mod:`xfct_bluesky.devices.xmap_buffer`), ``ArrayCounter_RBV``,
                       ``ArraySize0_RBV``, ``UniqueId_RBV``. 2-ID-E's files record the netCDF
                       plugin instead (``dxpXMAP2xfm3:netCDF1:Capture``), which writes the same
                       NDArrays to a file per line; the file plugin is not emulated.
``SIM:PosComp:``       the trigger source: a position compare on the fast stage (``Start``,
                       ``Step``, ``NumPixels``, ``Arm``, ``PulseCount_RBV``, ``Axis_RBV``), our
                       own layout (a beamline's is its softGlue, PandABox or controller).
``SIM:Fault:``         fault injection, simulation only: ``Line`` (the armed line it applies to,
                       counted from 0 since ``Line`` was last written), ``DropPixel`` (that line's
                       pixel whose closing pulse is lost: two pixels merge, the line is one short)
                       and ``DelayLine`` (seconds that line's readout is held back: a late line).
=====================  ===========================================================================

Pulses: ``Arm`` = 1 arms ``NumPixels`` + 1 pulses, at ``Start + k Step`` (k = 0 .. NumPixels) as
the fast motor's readback crosses them; pulse 0 opens the first pixel, pulse k closes pixel k - 1,
whose counts are the simulator's at ``Start + (k - 1/2) Step`` for ``|Step| / VELO`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from ..beamline.config import fast_axis, mcs_layout
from ..devices.xmap_buffer import ELEMENTS_PER_MODULE, encode_buffer
from ._common import in_thread, ioc_root, to_wire

logger = logging.getLogger("xfct_bluesky.ioc")

__all__ = ["CLOCK_HZ", "FAULT_PREFIX", "MCS_CHANNELS", "TRIGGER_PREFIX", "fly_groups"]

#: Inputs of the SIS3820 (one mca record each).
MCS_CHANNELS = 32
#: Channels (pixels) an mca record of the MCS holds.
MCS_MAX_CHANNELS = 8192
#: The SIS3820's internal reference clock, counted by channel 1 (SIS38XX.template's Channel1Source).
CLOCK_HZ = 50e6
#: Words the NDStdArrays waveform of the xMAP holds: 512 pixels of 4 x 2048 channels.
MAX_BUFFER_WORDS = 256 + 512 * (256 + ELEMENTS_PER_MODULE * 2048)
TRIGGER_PREFIX = "SIM:PosComp:"
FAULT_PREFIX = "SIM:Fault:"
_QUADRANTS = {"dpc_a": "q1", "dpc_b": "q2", "dpc_c": "q3", "dpc_d": "q4"}


def _enum(name: str, strings: tuple[str, ...], value: str | None = None, **kwargs) -> pvproperty:
    return pvproperty(name=name, value=value or strings[0], enum_strings=strings, dtype=ChannelType.ENUM, **kwargs)


# ---------------------------------------------------------------- the MCS ---
class McsChannel(PVGroup):
    """One input of the MCS as its mca record: the counts per channel (pixel) ``.VAL``, how many ``.NORD``."""

    spectrum = pvproperty(name=".VAL", value=np.zeros(1, "<i4"), dtype=ChannelType.LONG,
                          max_length=MCS_MAX_CHANNELS, read_only=True)
    nord = pvproperty(name=".NORD", value=0, read_only=True)
    nuse = pvproperty(name=".NUSE", value=MCS_MAX_CHANNELS)


class _McsBase(PVGroup):
    """An SIS3820 in MCS mode (SIS38XX.template): ``EraseStart`` erases and starts; each channel advance
    closes a channel of every input; after ``NuseAll`` channels (or ``StopAll``) ``Acquiring`` returns to
    Done and the mca records hold the counts. ``ChannelAdvance`` External: the trigger source advances it;
    Internal: every ``Dwell`` seconds, counting where the stages stand."""

    erase_start = pvproperty(name="EraseStart", value=0)
    start_all = pvproperty(name="StartAll", value=0)
    stop_all = pvproperty(name="StopAll", value=0)
    erase_all = pvproperty(name="EraseAll", value=0)
    acquiring = _enum("Acquiring", ("Done", "Acquiring"), read_only=True)
    nuse_all = pvproperty(name="NuseAll", value=2000)
    current_channel = pvproperty(name="CurrentChannel", value=0, read_only=True)
    channel_advance = _enum("ChannelAdvance", ("Internal", "External"))
    dwell = pvproperty(name="Dwell", value=0.1, precision=4, units="s")
    preset_real = pvproperty(name="PresetReal", value=0.0, precision=3, units="s")
    elapsed_real = pvproperty(name="ElapsedReal", value=0.0, precision=3, units="s", read_only=True)
    prescale = pvproperty(name="Prescale", value=1)
    max_channels = pvproperty(name="MaxChannels", value=MCS_MAX_CHANNELS, read_only=True)
    model = _enum("Model", ("SIS3801", "SIS3820"), "SIS3820", read_only=True)
    channel1_source = _enum("Channel1Source", ("Int. clock", "External"))
    software_channel_advance = pvproperty(name="SoftwareChannelAdvance", value=0)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts = np.zeros((MCS_CHANNELS, 0), np.int64)
        self.used = 0
        self.running = False
        self._internal: asyncio.Task | None = None

    @erase_start.putter
    async def erase_start(self, instance, value):
        if value:
            await self.start(erase=True)
        return 0

    @start_all.putter
    async def start_all(self, instance, value):
        if value:
            await self.start(erase=False)
        return 0

    @erase_all.putter
    async def erase_all(self, instance, value):
        if value and not self.running:
            self.counts[:] = 0
            self.used = 0
            await self.publish()
        return 0

    @stop_all.putter
    async def stop_all(self, instance, value):
        if value and self.running:
            await self.finish()
        return 0

    async def start(self, *, erase: bool) -> None:
        late = getattr(self, "_late", None)
        if late is not None and not late.done():
            late.cancel()  # a new run: the old run's readout, held back, is thrown away
        n = int(self.nuse_all.value)
        if not 1 <= n <= MCS_MAX_CHANNELS:
            logger.error("%sNuseAll = %d: allowed 1..%d channels; not started", self.prefix, n, MCS_MAX_CHANNELS)
            return
        if erase or self.counts.shape[1] != n:
            self.counts = np.zeros((MCS_CHANNELS, n), np.int64)
            self.used = 0
        self.running = True
        await self.current_channel.write(self.used)
        await self.elapsed_real.write(0.0)
        await self.acquiring.write("Acquiring")
        if self.channel_advance.value == "Internal":
            self._internal = asyncio.get_running_loop().create_task(self._advance_internally())

    async def _advance_internally(self) -> None:
        root = ioc_root(self)
        dwell = float(self.dwell.value)
        while self.running and self.used < self.counts.shape[1]:
            await asyncio.sleep(dwell)
            res = await root.pixel_point(dwell)
            await self.advance(root.mcs_counts(res, dwell))

    async def advance(self, counts: dict[int, float], *, delay: float = 0.0) -> None:
        """Close the current channel with ``counts`` (input number -> counts); the last one ends the run."""
        if not self.running or self.used >= self.counts.shape[1]:
            return
        for n, value in counts.items():
            self.counts[n - 1, self.used] = int(value)
        self.used += 1
        await self.current_channel.write(self.used)
        await self.elapsed_real.write(float(self.elapsed_real.value) + counts.get(1, 0) / CLOCK_HZ)
        if self.used == self.counts.shape[1]:
            self.running = False  # no more advances; the readout may be held back (a late line)
            if delay > 0:  # the trigger goes on; this readout comes late
                logger.warning("%s: fault injected: the readout is held back %g s", self.prefix, delay)
                self._late = asyncio.get_running_loop().create_task(self._finish_after(delay))
            else:
                await self.finish()

    async def _finish_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.finish()

    async def finish(self) -> None:
        self.running = False
        await self.publish()
        await self.acquiring.write("Done")

    async def publish(self) -> None:
        for n in range(1, MCS_CHANNELS + 1):
            mca = getattr(self, f"mca{n}")
            await mca.spectrum.write(to_wire(self.counts[n - 1, :self.used], "<u4") if self.used
                                     else np.zeros(1, "<i4"))
            await mca.nord.write(self.used)


def mcs_group() -> type[PVGroup]:
    """The SIS3820 group: :class:`_McsBase` with ``mca1`` .. ``mca32``."""
    ns = {f"mca{n}": SubGroup(McsChannel, prefix=f"mca{n}") for n in range(1, MCS_CHANNELS + 1)}
    return type("SIS3820", (_McsBase,), {"__doc__": _McsBase.__doc__, **ns})


# -------------------------------------------------------- the xMAP mapping ---
class NDStdArrays(PVGroup):
    """An NDStdArrays plugin: the last NDArray's data (the xMAP's buffer words) and its counter."""

    array_data = pvproperty(name="ArrayData", value=np.zeros(1, "<i2"), dtype=ChannelType.INT,
                            max_length=MAX_BUFFER_WORDS, read_only=True, max_subscription_backlog=2)
    array_counter = pvproperty(name="ArrayCounter_RBV", value=0, read_only=True)
    unique_id = pvproperty(name="UniqueId_RBV", value=0, read_only=True)
    size0 = pvproperty(name="ArraySize0_RBV", value=0, read_only=True)
    data_type = pvproperty(name="DataType_RBV", value="UInt16", dtype=ChannelType.STRING, read_only=True)


def _with_rbv(name: str, strings: tuple[str, ...] | None = None, value=0) -> dict[str, pvproperty]:
    attr = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if strings is None:
        return {attr: pvproperty(name=name, value=value), f"{attr}_rbv": pvproperty(name=name + "_RBV", value=value,
                                                                                     read_only=True)}
    return {attr: _enum(name, strings), f"{attr}_rbv": _enum(name + "_RBV", strings, read_only=True)}


MAPPING_SETTINGS = {"CollectMode": ("MCA spectra", "MCA mapping", "SCA mapping"),
                    "PixelAdvanceMode": ("Gate", "Sync"), "AutoPixelsPerBuffer": ("Manual", "Auto"),
                    "PixelsPerRun": None, "PixelsPerBuffer": None}


def mapping_properties() -> dict:
    """The xMAP system's mapping-mode PVs (dxpXMAP.template), for :func:`.beamline._xmap_group`; every
    setpoint's ``_RBV`` follows it."""
    ns: dict = {}
    for name, strings in MAPPING_SETTINGS.items():
        ns.update(_with_rbv(name, strings, value=1 if name.startswith("Pixels") else 0))
    ns["buffer_size"] = pvproperty(name="BufferSize_RBV", value=0, read_only=True)
    ns["next_pixel"] = pvproperty(name="NextPixel", value=0)
    ns["image1"] = SubGroup(NDStdArrays, prefix="image1:")
    for name in MAPPING_SETTINGS:
        attr = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()

        async def follow(group, instance, value, _rbv=attr + "_rbv"):
            await getattr(group, _rbv).write(value)
            return value

        ns[attr] = ns[attr].putter(follow)
    return ns


class XmapMapping:
    """The run state of the xMAP in MCA mapping mode: pixels since ``EraseStart``, the open buffer."""

    def __init__(self, system):
        self.system = system
        self.running = False
        self.pixels = 0
        self.buffer: list[tuple] = []
        self.buffer_number = 0
        self.first_pixel = 0

    @staticmethod
    def mapping(system) -> bool:
        return system.collect_mode.value == "MCA mapping"

    async def start(self) -> None:
        late = getattr(self, "_late", None)
        if late is not None and not late.done():
            late.cancel()  # a new run: the old run's buffer, held back, is thrown away
        sys = self.system
        self.per_run = max(int(sys.pixels_per_run.value), 1)
        per_buffer = int(sys.pixels_per_buffer.value)
        self.per_buffer = self.per_run if sys.auto_pixels_per_buffer.value == "Auto" or per_buffer < 1 \
            else per_buffer
        self.running, self.pixels, self.buffer, self.first_pixel = True, 0, [], 0
        await sys.acquiring.write(1)

    async def pixel(self, spectra, real, live, icr, ocr, *, delay: float = 0.0) -> None:
        """One closed pixel: into the open buffer; a full buffer, or the run's last pixel, is read out."""
        if not self.running:
            return
        self.buffer.append((spectra, real, live, icr, ocr))
        self.pixels += 1
        last = self.pixels >= self.per_run
        if last:
            self.running = False
        if last and delay > 0:  # the trigger goes on; this readout comes late
            self._late = asyncio.get_running_loop().create_task(self._end_after(delay))
            return
        if len(self.buffer) >= self.per_buffer or last:
            await self.read_out()
        if last:
            await self.system.acquiring.write(0)

    async def _end_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.read_out()
        await self.system.acquiring.write(0)

    async def stop(self) -> None:
        """``StopAll``: the partial buffer is read out; the run ends."""
        if self.running or self.buffer:
            self.running = False
            await self.read_out()
        await self.system.acquiring.write(0)

    async def read_out(self) -> None:
        if not self.buffer:
            return
        parts = list(zip(*self.buffer, strict=True))
        words = encode_buffer(np.stack(parts[0]), np.stack(parts[1]), np.stack(parts[2]), np.stack(parts[3]),
                              np.stack(parts[4]), first_pixel=self.first_pixel, buffer_number=self.buffer_number)
        self.first_pixel += len(self.buffer)
        self.buffer_number += 1
        self.buffer = []
        image = self.system.image1
        await self.system.buffer_size.write(int(words.size))
        await image.size0.write(int(words.size))
        await image.array_data.write(words.view("<i2"))
        await image.unique_id.write(int(image.unique_id.value) + 1)
        await image.array_counter.write(int(image.array_counter.value) + 1)


# ------------------------------------------------------------ the trigger ---
class PositionCompare(PVGroup):
    """A position compare on the fast stage: ``Arm`` = 1 sends ``NumPixels`` + 1 pulses at ``Start + k Step``
    as the motor's readback crosses them (module docstring); ``Arm`` returns to 0 after the last, or on a
    put of 0. Each pulse goes to the MCS's external channel advance and the xMAP's gate."""

    start = pvproperty(name="Start", value=0.0, precision=6)
    step = pvproperty(name="Step", value=1e-3, precision=6)
    num_pixels = pvproperty(name="NumPixels", value=1)
    arm = pvproperty(name="Arm", value=0)
    pulse_count = pvproperty(name="PulseCount_RBV", value=0, read_only=True)
    axis = pvproperty(name="Axis_RBV", value="", dtype=ChannelType.STRING, read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._task: asyncio.Task | None = None
        self.lines = 0

    @arm.startup
    async def arm(self, instance, async_lib):
        """Warm the simulator's caches on a copy (its first point takes seconds; the copy leaves the
        simulator's random state as it was), so that the first line is not late."""
        import copy

        sim = ioc_root(self).simulator
        await in_thread(lambda: copy.deepcopy(sim).point(1e-3, spectra=True))

    @arm.putter
    async def arm(self, instance, value):
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if not value:
            return 0
        n, step = int(self.num_pixels.value), float(self.step.value)
        if n < 1 or step == 0:
            logger.error("%sArm refused: NumPixels = %d (allowed >= 1), Step = %g (allowed non-zero)",
                         self.prefix, n, step)
            return 0
        line = self.lines
        self.lines += 1
        root = ioc_root(self)
        await self.axis.write(root.config.record(fast_axis(root.config)))
        await self.pulse_count.write(0)
        self._task = asyncio.get_running_loop().create_task(self._pulses(line, float(self.start.value), step, n))
        return 1

    async def _pulses(self, line: int, start: float, step: float, n: int) -> None:
        root = ioc_root(self)
        motor = root.fast_motor()
        drop, delay = root.faults.for_line(line)
        sign = 1.0 if step > 0 else -1.0
        k, opened, count = 0, None, 0
        try:
            while k <= n:
                position = motor.readback
                while k <= n and (position - (start + k * step)) * sign >= 0:
                    boundary = start + k * step
                    if opened is not None and k - 1 == drop:
                        logger.warning("%s: fault injected: line %d loses the pulse closing pixel %d", self.prefix,
                                       line, drop)
                    elif opened is None:
                        opened = boundary
                    else:
                        velocity = float(motor.motor.field_inst.velocity.value)
                        await root.fly_pixel((opened + boundary) / 2, abs(boundary - opened) / velocity,
                                             delay=delay if k == n else 0.0)
                        opened = boundary
                    count += 1
                    await self.pulse_count.write(count)
                    k += 1
                await asyncio.sleep(0.002)
        except Exception:  # reported in the log; the line then times out in the client, reported there
            logger.exception("%s: the pulse train of line %d failed", self.prefix, line)
        finally:
            await self.arm.write(0, verify_value=False)


class FaultGroup(PVGroup):
    """Faults injected into one line (simulation only; module docstring)."""

    line = pvproperty(name="Line", value=-1)
    drop_pixel = pvproperty(name="DropPixel", value=-1)
    delay_line = pvproperty(name="DelayLine", value=0.0, units="s")

    @line.putter
    async def line(self, instance, value):
        ioc_root(self).trigger.lines = 0  # lines count from here
        return value

    def for_line(self, line: int) -> tuple[int | None, float]:
        """(the pixel whose closing pulse is lost or None, seconds the readout is held back) for ``line``."""
        if int(self.line.value) != line:
            return None, 0.0
        drop = int(self.drop_pixel.value)
        return (drop if drop >= 0 else None), max(float(self.delay_line.value), 0.0)


def fly_groups(config) -> dict:
    """The beamline IOC's fly-scan groups for ``config`` (none without MCS arrays): ``mcs``, ``trigger``,
    ``faults``; the counters' ``fly`` PVs are then the MCS's own mca records."""
    layout = mcs_layout(config)
    if layout is None:
        return {}
    prefix, _ = layout
    return {"mcs": SubGroup(mcs_group(), prefix=prefix),
            "trigger": SubGroup(PositionCompare, prefix=TRIGGER_PREFIX),
            "faults": SubGroup(FaultGroup, prefix=FAULT_PREFIX)}


class FlyBeamline:
    """What the fly groups call in the IOC (a mixin of :class:`.beamline._BeamlineBase`)."""

    def fast_motor(self):
        return getattr(self, fast_axis(self.config))

    async def pixel_point(self, dwell: float, fast_position: float | None = None):
        """The simulator's counts for ``dwell`` s where the stages stand, the fast axis at ``fast_position``."""
        return await self._point(dwell, spectra=True, override={fast_axis(self.config): fast_position}
                                 if fast_position is not None else None)

    def mcs_counts(self, res, dwell: float) -> dict[int, float]:
        _, channels = mcs_layout(self.config)
        values = {"i0": res.maps["i0"][0, 0], **{role: res.maps[q][0, 0] for role, q in _QUADRANTS.items()}}
        return {1: round(CLOCK_HZ * dwell), **{n: float(values[role]) for role, n in channels.items()}}

    async def fly_pixel(self, fast_position: float, dwell: float, *, delay: float = 0.0) -> None:
        """One pixel closed by the trigger: the simulator's counts into the MCS and the xMAP's mapping buffer."""
        from ..devices._sim_common import mca_statistics

        res = await self.pixel_point(dwell, fast_position)
        await self.mcs.advance(self.mcs_counts(res, dwell), delay=delay)
        system = self.fluorescence
        mapping = getattr(system, "mapping_state", None)  # an xMAP's; an Xspress3 has no mapping buffers here
        if mapping is None or not (XmapMapping.mapping(system) and mapping.running):
            return
        n = system.elements
        spectrum = np.asarray(res.spectra[0, 0]).astype(np.int64)
        shares = np.stack([self._rng.multinomial(int(c), [1 / n] * n) for c in spectrum], axis=1)  # (n, channels)
        stats = mca_statistics(self.simulator, res)
        live = float(res.maps["live_time"][0, 0])
        icr = float(stats["icr"][0, 0])
        spectra = np.zeros((ELEMENTS_PER_MODULE, spectrum.size), np.int64)
        spectra[:n] = shares
        ones = np.ones(ELEMENTS_PER_MODULE)
        await mapping.pixel(spectra, ones * dwell, ones * live, np.rint(ones * icr * dwell / n).astype(np.int64),
                            spectra.sum(axis=1), delay=delay)

    async def start_mapping(self, system) -> None:
        await system.mapping_state.start()
