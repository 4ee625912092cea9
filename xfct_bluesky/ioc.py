"""Channel Access IOC of the XRF microprobe, backed by the physics simulator.

``python -m xfct_bluesky.ioc --prefix XFCT:`` serves, under the prefix, every
PV that :mod:`xfct_bluesky.devices.epics` connects to. Behind the PVs runs the
same :class:`~xfct_bluesky.physics.MicroprobeSimulator` as
:func:`~xfct_bluesky.devices.sim.make_sim_microprobe` (the simulated mouse egg,
the same seed), so a plan run against the EPICS classes gives the same maps as
the in-process simulation with the same seed and settings.

PVs under the prefix ``P``
--------------------------
=============================  =====================================================
``P Rot``                      motor record, theta (deg): .VAL .RBV .DMOV .MOVN .STOP
                               .HLM .LLM .HLS .LLS .LVIO .VELO .ACCL .EGU .DESC .PREC
                               .OFF .DIR .SET .FOFF .CNEN .TDIR (caproto motor fields)
``P ZP:X`` ``ZP:Y`` ``ZP:Z``   motor records, zone-plate stage (um)
``P Shtr:``                    ``Cmd`` (close/open), ``State_RBV`` (closed/open)
``P BeamCurrent``              storage-ring current (mA); below 1 mA there is no beam
``P Beam:``                    ``Energy_RBV`` (keV), ``Flux_RBV`` (photons/s),
                               ``SpotFWHMH_RBV``, ``SpotFWHMV_RBV`` (m)
``P MCA:mca1``                 XIA mca record of the Vortex: .VAL (spectrum) .NUSE
                               .PRTM .PLTM .ERTM .ELTM .DTIM .BG .MODE .STOP
                               .R0-.R7 (one ROI per element: count, N, LO, HI, NM,
                               BG, IP, P) and mca.db's EraseStart, Start, Stop, ...
``P MCA:dxp1:``                the dxp parameters ophyd's ``EpicsDXP`` uses
``P DPC:``                     ``PresetTime``, ``Acquire``, ``Q1``-``Q4``, ``Total``,
                               ``DPCX``, ``DPCY``, ``DPCDiag``, ``CentralStopRatio_RBV``
``P Fly:``                     fly-scan controller: ``NumRows``, ``NumCols``,
                               ``PixelSize`` (m), ``Dwell`` (s), ``Travel`` (m),
                               ``SaveSpectra``, ``Acquire`` (put 1 and wait: one map),
                               ``Acquire_RBV``, ``DetectorState_RBV``,
                               ``StatusMessage_RBV``, ``MapDwell_RBV``,
                               ``MapShape_RBV``, ``LineOverhead_RBV``,
                               ``MaxPixels_RBV``, ``NumChannels_RBV``
``P Fly:Map:``                 one flattened (ny*nx) waveform per map: ``DPCX``,
                               ``DPCY``, ``DPCDiag``, ``Transmission``, ``I0``,
                               ``Q1``-``Q4``, ``LiveTime``, ``P`` ``S`` ``Cl`` ``K``
                               ``Ca`` ``Fe`` ``Cu`` ``Zn``
``P Fly:HDF1:``                full spectra to HDF5, as an areaDetector HDF5 plugin:
                               ``FilePath``, ``FileName``, ``FullFileName_RBV``,
                               ``FilePathExists_RBV``, ``Capture``, ``Capture_RBV``,
                               ``NumCaptured_RBV``, ``DatasetName_RBV``,
                               ``FrameShape_RBV``, ``ChunkShape_RBV``,
                               ``SWMRMode_RBV``, ``WriteStatus``, ``WriteMessage``
``P Sim:``                     the simulation only: ``Seed``, ``Reset`` (put 1: a fresh
                               simulator, as if the IOC had just started),
                               ``Realtime`` (0/1, as ``--realtime``),
                               ``NumMaps_RBV``, ``Specimen_RBV``
=============================  =====================================================

Unsigned counts (maps, spectra) travel as the bit pattern of DBR_LONG
(``uint32.view(int32)``): exact for every count; the EPICS classes view them
back as ``<u4``. Quadrant, ROI and DPC point counts are DBR_DOUBLE (exact
integers up to 2**53), as the mca record's ROI sums are.

Commands that a client waits on (``Fly:Acquire``, ``MCA:mca1EraseStart``,
``DPC:Acquire``, ``Shtr:Cmd``, ``Fly:HDF1:Capture``) never fail the put: a
problem is reported in ``DetectorState_RBV``/``StatusMessage_RBV`` or
``WriteStatus``/``WriteMessage`` (a failed put with completion would leave a
caproto client waiting forever).

Loopback only by default: the server binds 127.0.0.1 and sends its beacons
there; another interface needs ``--allow-remote``. Clients use
``EPICS_CA_ADDR_LIST=127.0.0.1 EPICS_CA_AUTO_ADDR_LIST=NO``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import logging
import math
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, PvpropertyDouble, SubGroup, pvproperty

from .physics import ELEMENT_SYMBOLS, MAP_KEYS, MicroprobeSimulator

logger = logging.getLogger("xfct_bluesky.ioc")  # also when run as __main__

DEFAULT_PREFIX = "XFCT:"
#: Pixels a map may have: the length of every map waveform (400 x 400; the paper's maps are 230 x 230).
MAX_MAP_PIXELS = 400 * 400
#: Storage-ring current (mA) below which there is no beam (as ``devices.sim.BEAM_OFF_CURRENT``).
BEAM_OFF_CURRENT = 1.0
#: Seconds per motor-record update while moving.
MOTOR_TICK = 0.02
#: Seconds the shutter blades take, in real-time mode.
SHUTTER_TIME = 0.01
#: Characters of the long-string (char waveform) PVs: paths and messages.
LONG_STRING = 4096
#: Path of the spectra inside the HDF5 files.
HDF5_DATASET = "/entry/data/spectra"
#: ROIs of the mca record: one per element, in this order.
N_ROIS = len(ELEMENT_SYMBOLS)

#: Map key -> (PV suffix under ``Fly:Map:``, dtype the map has). uint32 maps travel as DBR_LONG bit patterns.
MAP_PVS: dict[str, tuple[str, str]] = {
    "dpc_x": ("DPCX", "<f4"),
    "dpc_y": ("DPCY", "<f4"),
    "dpc_diag": ("DPCDiag", "<f4"),
    "transmission": ("Transmission", "<f4"),
    "i0": ("I0", "<u4"),
    "q1": ("Q1", "<u4"),
    "q2": ("Q2", "<u4"),
    "q3": ("Q3", "<u4"),
    "q4": ("Q4", "<u4"),
    "live_time": ("LiveTime", "<f4"),
    **{sym: (sym, "<u4") for sym in ELEMENT_SYMBOLS},
}
assert set(MAP_PVS) == set(MAP_KEYS) | set(ELEMENT_SYMBOLS)


def _long_string(name: str, value: str = "", **kwargs) -> pvproperty:
    """A char-waveform string PV (DBR_STRING stops at 40 characters; paths are longer)."""
    return pvproperty(name=name, value=value, dtype=ChannelType.CHAR, max_length=LONG_STRING,
                      string_encoding="utf-8", **kwargs)


def _to_wire(values, dtype: str) -> np.ndarray:
    """A map or spectrum as the flat array its waveform carries (uint32 as int32 bit patterns)."""
    arr = np.asarray(values)
    if np.dtype(dtype).kind == "u":
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint32).max):
            raise ValueError(f"counts in [{arr.min()}, {arr.max()}] do not fit uint32")
        return arr.astype("<u4").ravel().view("<i4")
    return arr.astype(dtype).ravel()


def _root(group: PVGroup) -> MicroprobeIOC:
    while group.parent is not None:
        group = group.parent
    return group  # type: ignore[return-value]


async def _in_thread(func, *args, **kwargs):
    """Run blocking work (the simulator, h5py) off the event loop, so the IOC keeps answering."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))


# ------------------------------------------------------------------ motors ---
class _MotorValue(PvpropertyDouble):
    """The motor record's VAL: the record itself refuses an out-of-limit target (LVIO), never the put."""

    async def verify_value(self, value):
        # caproto's numeric check would fail the put beyond the control limits; the motor record
        # instead keeps its old target and raises LVIO, which MotorRecord's putter does.
        return await self.putter(self, value)


class MotorRecord(PVGroup):
    """One motor record whose fields behave as the synApps motor record's, for what EpicsMotor uses.

    A put to VAL inside [LLM, HLM] sets DMOV=0 and MOVN=1 before the put
    completes, moves RBV at VELO (updates every ``MOTOR_TICK`` s), writes the
    exact target and then MOVN=0, DMOV=1. A target outside the limits is
    refused as the record does: LVIO=1, VAL keeps the old target, nothing
    moves. STOP stops the motor (VAL := RBV where it comes to rest). A new VAL while
    moving retargets without a DMOV transition. With SET=Set a put to VAL
    redefines the position (OFF changes, the user limits follow) without
    moving. HLM/LLM are VAL's control limits, which ophyd's EpicsMotor reads
    as its ``limits``. Moves run at constant VELO; only a STOP decelerates
    (over ACCL seconds) before DMOV returns to 1.
    """

    motor = pvproperty(value=0.0, name="", record="motor", dtype=_MotorValue, precision=4,
                       doc="motor record")

    def __init__(self, *args, egu: str, limits: tuple[float, float], velocity: float, description: str,
                 precision: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        self._egu = egu
        self._limits = (float(limits[0]), float(limits[1]))
        self._velocity = float(velocity)
        self._description = description
        self._precision = int(precision)
        self._target = 0.0
        self._moving = False
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._pending: asyncio.Task | None = None  # limits posted after a SET-mode redefinition

    @property
    def readback(self) -> float:
        """RBV, the user position."""
        return float(self.motor.field_inst.user_readback_value.value)

    @motor.startup
    async def motor(self, instance, async_lib):
        fields = instance.field_inst
        self._wake, self._lock = asyncio.Event(), asyncio.Lock()
        await instance.write_metadata(precision=self._precision, units=self._egu)
        for prop in fields.pvdb.values():
            if hasattr(prop, "precision"):
                await prop.write_metadata(precision=self._precision)
        await fields.description.write(self._description)
        await fields.engineering_units.write(self._egu)
        await fields.velocity.write(self._velocity)
        await fields.motor_step_size.write(1e-5)
        await fields.enable_control.write("Enable")
        await fields.user_low_limit.write(self._limits[0])
        await fields.user_high_limit.write(self._limits[1])
        await fields.dial_low_limit.write(self._limits[0])
        await fields.dial_high_limit.write(self._limits[1])
        await self._set_readback(fields, float(instance.value))
        await fields.motor_is_moving.write(0)
        await fields.done_moving_to_value.write(1)
        await self._motion_loop(instance)

    @motor.putter
    async def motor(self, instance, value):
        fields = instance.field_inst
        value = float(value)
        if str(fields.set_use_switch.value) in ("Set", "1"):
            return await self._redefine(fields, value)
        low, high = float(fields.user_low_limit.value), float(fields.user_high_limit.value)
        if not math.isfinite(value) or (low < high and not low <= value <= high):
            await fields.limit_violation.write(1)
            logger.warning("%s: target %r %s is outside the limits [%g, %g]; not moving",
                           instance.pvname, value, self._egu, low, high)
            return instance.value  # the record keeps its old target
        await fields.limit_violation.write(0)
        await fields.dial_desired_value.write(self._dial(fields, value))
        async with self._lock:
            self._target = value
            if not self._moving:
                self._moving = True
                await fields.done_moving_to_value.write(0)
                await fields.motor_is_moving.write(1)
            self._wake.set()
        return value

    @motor.fields.stop.putter
    async def motor(fields, instance, value):
        group = fields.parent.group
        if value:
            group._stop_requested = True
            group._wake.set()
            if not group._moving:  # a stop at rest only drops a pending target
                group._stop_requested = False
                await fields.parent.write(group.readback, verify_value=False)
        return 0

    @motor.fields.user_high_limit.putter
    async def motor(fields, instance, value):
        # VAL's control limits are what ophyd reads as the motor's limits; update them before HLM posts
        await fields.parent.write_metadata(upper_ctrl_limit=float(value))

    @motor.fields.user_low_limit.putter
    async def motor(fields, instance, value):
        await fields.parent.write_metadata(lower_ctrl_limit=float(value))

    @motor.fields.velocity.putter
    async def motor(fields, instance, value):
        if not (math.isfinite(value) and value > 0):
            logger.warning("%s.VELO=%r refused: allowed a speed > 0; keeping %g", fields.parent.pvname, value,
                           instance.value)
            return instance.value

    @staticmethod
    def _dial(fields, user: float) -> float:
        """user = dial * (+1 for DIR=Pos, -1 for Neg) + OFF, inverted."""
        sign = -1.0 if str(fields.user_direction.value) in ("Neg", "1") else 1.0
        return (user - float(fields.user_offset.value)) * sign

    async def _set_readback(self, fields, value: float) -> None:
        dial = self._dial(fields, value)
        await fields.user_readback_value.write(value)
        await fields.dial_readback_value.write(dial)
        step = float(fields.motor_step_size.value) or 1e-5
        await fields.raw_readback_value.write(round(dial / step))

    async def _redefine(self, fields, value: float) -> float:
        """SET mode: the position becomes ``value`` without moving; OFF and the user limits follow."""
        delta = value - self.readback
        await fields.user_offset.write(float(fields.user_offset.value) + delta)
        await self._set_readback(fields, value)
        self._target = value
        high, low = float(fields.user_high_limit.value) + delta, float(fields.user_low_limit.value) + delta

        async def post_limits():
            # after VAL has posted its new value: a client (ophyd) re-reads VAL's control limits when
            # HLM/LLM change, and a VAL monitor arriving after that would bring back cached old limits
            await asyncio.sleep(MOTOR_TICK)
            await fields.user_high_limit.write(high)
            await fields.user_low_limit.write(low)

        self._pending = asyncio.get_running_loop().create_task(post_limits())
        return value

    async def _decelerate(self, fields) -> None:
        """After STOP: slow down over ACCL seconds (half the speed on average), not past the target."""
        position, target = self.readback, self._target
        accl = max(float(fields.seconds_to_velocity.value), 0.0)
        distance = min(abs(target - position), float(fields.velocity.value) * accl / 2)
        steps = max(1, round(accl / MOTOR_TICK))
        if distance == 0:
            return
        for k in range(1, steps + 1):
            await asyncio.sleep(MOTOR_TICK)
            await self._set_readback(fields, position + math.copysign(distance * k / steps, target - position))

    async def _motion_loop(self, instance) -> None:
        fields = instance.field_inst
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                if self._stop_requested:
                    await self._decelerate(fields)
                    break
                target, position = self._target, self.readback
                diff = target - position
                if diff == 0:
                    break
                step = float(fields.velocity.value) * MOTOR_TICK
                new = target if abs(diff) <= step else position + math.copysign(step, diff)
                await fields.direction_of_travel.write(1 if diff > 0 else 0)
                await self._set_readback(fields, new)
                if new != target:
                    try:
                        await asyncio.wait_for(self._wake.wait(), MOTOR_TICK)
                    except TimeoutError:
                        pass
                    self._wake.clear()
            async with self._lock:
                if self._stop_requested:
                    self._stop_requested = False
                    self._target = self.readback
                    await instance.write(self.readback, verify_value=False)
                elif self._target != self.readback:
                    continue  # retargeted while finishing: keep moving, DMOV stays 0
                self._moving = False
                await fields.motor_is_moving.write(0)
                await fields.done_moving_to_value.write(1)


class ZonePlateGroup(PVGroup):
    """Zone-plate stage: x, y move the beam, z defocuses it (um)."""

    x = SubGroup(MotorRecord, prefix="X", egu="um", limits=(-2000.0, 2000.0), velocity=100.0,
                 description="Zone plate X (beam x)")
    y = SubGroup(MotorRecord, prefix="Y", egu="um", limits=(-2000.0, 2000.0), velocity=100.0,
                 description="Zone plate Y (beam y)")
    z = SubGroup(MotorRecord, prefix="Z", egu="um", limits=(-5000.0, 5000.0), velocity=100.0,
                 description="Zone plate Z (defocus)")


# ----------------------------------------------------------- shutter, beam ---
class ShutterGroup(PVGroup):
    """Fast shutter: put ``Cmd`` (completes once ``State_RBV`` follows)."""

    command = pvproperty(name="Cmd", value="open", enum_strings=("close", "open"), dtype=ChannelType.ENUM)
    state = pvproperty(name="State_RBV", value="open", enum_strings=("closed", "open"), dtype=ChannelType.ENUM,
                       read_only=True)

    @property
    def is_open(self) -> bool:
        return str(self.state.value) == "open"

    @command.putter
    async def command(self, instance, value):
        if _root(self).options.get("realtime"):
            await asyncio.sleep(SHUTTER_TIME)
        await self.state.write("open" if str(value) == "open" else "closed")
        return value


class BeamGroup(PVGroup):
    """Beam parameters the plans record (energy, flux, spot)."""

    energy = pvproperty(name="Energy_RBV", value=0.0, units="keV", precision=3, read_only=True)
    flux = pvproperty(name="Flux_RBV", value=0.0, units="ph/s", read_only=True)
    spot_fwhm_h = pvproperty(name="SpotFWHMH_RBV", value=0.0, units="m", read_only=True)
    spot_fwhm_v = pvproperty(name="SpotFWHMV_RBV", value=0.0, units="m", read_only=True)

    async def show_probe(self, probe) -> None:
        await self.energy.write(float(probe.energy_kev))
        await self.flux.write(float(probe.flux))
        await self.spot_fwhm_h.write(float(probe.fwhm[0]))
        await self.spot_fwhm_v.write(float(probe.fwhm[1]))


# --------------------------------------------------------------- the Vortex ---
# (name, kind, value, enum strings): "rw" = X and X_RBV (ophyd's EpicsSignalWithRBV), "w" = X, "ro" = X only
_DXP_PARAMETERS: tuple[tuple[str, str, object, tuple[str, ...] | None], ...] = (
    ("PresetMode", "rw", "Real time", ("No preset", "Real time", "Live time", "Events", "Triggers")),
    ("LiveTimeOutput", "rw", "Live time", ("Live time", "Trigger live time")),
    ("ElapsedLiveTime", "w", 0.0, None),
    ("ElapsedRealTime", "w", 0.0, None),
    ("ElapsedTriggerLiveTime", "w", 0.0, None),
    ("TriggerPeakingTime", "rw", 0.1, None),
    ("TriggerThreshold", "rw", 1.0, None),
    ("TriggerGapTime", "rw", 0.0, None),
    ("TriggerOutput", "rw", "Enabled", ("Disabled", "Enabled")),
    ("MaxWidth", "rw", 1.0, None),
    ("PeakingTime", "rw", 2.0, None),
    ("EnergyThreshold", "rw", 0.5, None),
    ("GapTime", "rw", 0.15, None),
    ("BaselineCutPercent", "rw", 5.0, None),
    ("BaselineCutEnable", "rw", 1, None),
    ("BaselineFilterLength", "rw", 128, None),
    ("BaselineThreshold", "rw", 1.0, None),
    ("BaselineEnergyArray", "w", [0.0] * 1024, None),
    ("BaselineHistogram", "w", [0.0] * 1024, None),
    ("PreampGain", "rw", 2.0, None),
    ("DetectorPolarity", "rw", 1, None),
    ("ResetDelay", "rw", 10.0, None),
    ("DecayTime", "rw", 50.0, None),
    ("MaxEnergy", "rw", 20.48, None),
    ("ADCPercentRule", "rw", 5.0, None),
    ("Triggers", "ro", 0, None),
    ("Events", "ro", 0, None),
    ("Overflows", "ro", 0, None),
    ("Underflows", "ro", 0, None),
    ("InputCountRate", "ro", 0.0, None),
    ("OutputCountRate", "ro", 0.0, None),
    ("MCABinWidth_RBV", "ro", 0.01, None),
    ("CalibrationEnergy_RBV", "ro", 0.0, None),
    ("CurrentPixel", "w", 0, None),
    ("DynamicRange_RBV", "ro", 40.0, None),
    ("PresetEvents", "rw", 0, None),
    ("PresetTriggers", "rw", 0, None),
    ("TraceData", "w", [0] * 1024, None),
    ("TraceMode", "rw", "ADC", ("ADC", "ADC average", "Fast filter", "Slow filter")),
    ("TraceTimeArray", "w", [0.0] * 1024, None),
    ("TraceTime", "rw", 0.1, None),
)


def _dxp_group() -> type[PVGroup]:
    """The dxp parameters of ophyd's ``EpicsDXP`` (settings kept, not simulated: the Vortex model is fixed)."""

    def mirror(rbv_attr):
        async def put(group, instance, value):
            await getattr(group, rbv_attr).write(value)
            return value

        return put

    ns: dict[str, object] = {"__doc__": "XIA dxp parameters of the Vortex (one channel)."}
    for name, kind, value, enums in _DXP_PARAMETERS:
        attr = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
        kwargs: dict[str, object] = {"value": value}
        if enums is not None:
            kwargs.update(enum_strings=enums, dtype=ChannelType.ENUM)
        if isinstance(value, list):
            kwargs.update(max_length=len(value), max_subscription_backlog=10)
        prop = pvproperty(name=name, read_only=kind == "ro", **kwargs)
        if kind == "rw":
            ns[f"{attr}_rbv"] = pvproperty(name=f"{name}_RBV", read_only=True, **kwargs)
            prop = prop.putter(mirror(f"{attr}_rbv"))
        ns[attr] = prop
    return type("DXPGroup", (PVGroup,), ns)


DXPGroup = _dxp_group()


class _McaRecord(PVGroup):
    """The XIA mca record ``mca1`` of the Vortex (fields as PV names ``mca1.FIELD``) and mca.db's extras.

    A put to ``mca1EraseStart`` counts for PRTM seconds at the current beam
    position and completes when the spectrum, the times and the ROI sums
    (channels LO..HI inclusive, as the record sums them) are posted.
    """

    spectrum = pvproperty(name="mca1.VAL", value=np.zeros(2048, "<i4"), dtype=ChannelType.LONG,
                          max_length=2048, read_only=True, max_subscription_backlog=10)
    background = pvproperty(name="mca1.BG", value=np.zeros(2048, "<i4"), dtype=ChannelType.LONG,
                            max_length=2048, read_only=True, max_subscription_backlog=10)
    channels_used = pvproperty(name="mca1.NUSE", value=2048, read_only=True)
    channels_max = pvproperty(name="mca1.NMAX", value=2048, read_only=True)
    preset_real_time = pvproperty(name="mca1.PRTM", value=1.0, units="s", precision=3)
    preset_live_time = pvproperty(name="mca1.PLTM", value=0.0, units="s", precision=3)
    elapsed_real_time = pvproperty(name="mca1.ERTM", value=0.0, units="s", precision=3, read_only=True)
    elapsed_live_time = pvproperty(name="mca1.ELTM", value=0.0, units="s", precision=3, read_only=True)
    dead_time = pvproperty(name="mca1.DTIM", value=0.0, units="%", precision=2, read_only=True)
    mode = pvproperty(name="mca1.MODE", value="PHA", enum_strings=("PHA", "MCS", "List"), dtype=ChannelType.ENUM)
    stop_field = pvproperty(name="mca1.STOP", value=0)
    acquiring = pvproperty(name="mca1.ACQG", value=0, read_only=True)
    # mca.db
    erase_start = pvproperty(name="mca1EraseStart", value=0)
    start_cmd = pvproperty(name="mca1Start", value=0)
    stop_cmd = pvproperty(name="mca1Stop", value=0)
    erase_cmd = pvproperty(name="mca1Erase", value=0)
    check_acquiring = pvproperty(name="mca1CheckACQG", value=0)
    client_wait = pvproperty(name="mca1ClientWait", value=0)
    enable_wait = pvproperty(name="mca1EnableWait", value=0)
    read_cmd = pvproperty(name="mca1Read", value=0)
    set_client_wait = pvproperty(name="mca1SetClientWait", value=0)
    status_pv = pvproperty(name="mca1Status", value=0)
    when_acq_stops = pvproperty(name="mca1WhenAcqStops", value=0)
    why1 = pvproperty(name="mca1Why1", value=0)
    why2 = pvproperty(name="mca1Why2", value=0)
    why3 = pvproperty(name="mca1Why3", value=0)
    why4 = pvproperty(name="mca1Why4", value=0)

    dxp = SubGroup(DXPGroup, prefix="dxp1:")

    def roi(self, i: int, field: str):
        return getattr(self, f"roi{i}_{field}")

    async def configure(self, vortex) -> None:
        """ROI windows and labels of the Vortex model; channel count; dxp calibration."""
        for i, sym in enumerate(ELEMENT_SYMBOLS):
            lo, hi = vortex.roi_window(sym)
            await self.roi(i, "label").write(sym)
            await self.roi(i, "lo").write(int(lo))
            await self.roi(i, "hi").write(int(hi) - 1)  # inclusive
        await self.channels_used.write(int(vortex.n_channels))
        await self.dxp.mca_bin_width_rbv.write(float(vortex.channel_width))
        await self.dxp.max_energy.write(float(vortex.channel_width * vortex.n_channels))

    @erase_start.putter
    async def erase_start(self, instance, value):
        if value:
            root = _root(self)
            try:
                await self.acquiring.write(1)
                await self._count(root)
            except Exception:  # reported in the log; the put itself must complete
                logger.exception("%s: acquisition failed", instance.pvname)
            finally:
                await self.acquiring.write(0)
        return 0

    async def _count(self, root) -> None:
        preset = float(self.preset_real_time.value)
        theta, center, defocus = root.probe_geometry()
        async with root.simulator_lock:
            res = await _in_thread(root.simulator.point, preset, theta, center=center, defocus=defocus,
                                   beam_on=root.beam_on())
        if root.options.get("realtime"):
            await asyncio.sleep(preset)
        spectrum = np.asarray(res.spectra[0, 0])
        live = float(res.maps["live_time"][0, 0])
        await self.spectrum.write(_to_wire(spectrum, "<u4"))
        await self.elapsed_real_time.write(preset)
        await self.elapsed_live_time.write(live)
        await self.dead_time.write(100.0 * (1 - live / preset))
        for i in range(N_ROIS):
            lo, hi = int(self.roi(i, "lo").value), int(self.roi(i, "hi").value)
            total = float(spectrum[max(lo, 0): hi + 1].sum()) if hi >= lo else 0.0
            await self.roi(i, "count").write(total)
            await self.roi(i, "net").write(total)


def _mca_group() -> type[PVGroup]:
    ns: dict[str, object] = {"__doc__": _McaRecord.__doc__}
    for i in range(N_ROIS):
        ns[f"roi{i}_count"] = pvproperty(name=f"mca1.R{i}", value=0.0, read_only=True)
        ns[f"roi{i}_net"] = pvproperty(name=f"mca1.R{i}N", value=0.0, read_only=True)
        ns[f"roi{i}_lo"] = pvproperty(name=f"mca1.R{i}LO", value=0)
        ns[f"roi{i}_hi"] = pvproperty(name=f"mca1.R{i}HI", value=0)
        ns[f"roi{i}_label"] = pvproperty(name=f"mca1.R{i}NM", value="", dtype=ChannelType.STRING)
        ns[f"roi{i}_bg"] = pvproperty(name=f"mca1.R{i}BG", value=0)
        ns[f"roi{i}_ip"] = pvproperty(name=f"mca1.R{i}IP", value=0)
        ns[f"roi{i}_preset"] = pvproperty(name=f"mca1.R{i}P", value=0.0)
    return type("McaGroup", (_McaRecord,), ns)


McaGroup = _mca_group()


# ------------------------------------------------------------- DPC detector ---
class DpcGroup(PVGroup):
    """Segmented transmission detector at one point: put ``Acquire`` and wait."""

    preset_time = pvproperty(name="PresetTime", value=0.1, units="s", precision=3)
    central_stop_ratio = pvproperty(name="CentralStopRatio_RBV", value=0.0, precision=3, read_only=True)
    acquire = pvproperty(name="Acquire", value=0)
    q1 = pvproperty(name="Q1", value=0.0, read_only=True)
    q2 = pvproperty(name="Q2", value=0.0, read_only=True)
    q3 = pvproperty(name="Q3", value=0.0, read_only=True)
    q4 = pvproperty(name="Q4", value=0.0, read_only=True)
    total = pvproperty(name="Total", value=0.0, read_only=True)
    dpc_x = pvproperty(name="DPCX", value=0.0, precision=5, read_only=True)
    dpc_y = pvproperty(name="DPCY", value=0.0, precision=5, read_only=True)
    dpc_diag = pvproperty(name="DPCDiag", value=0.0, precision=5, read_only=True)

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            try:
                await self._count(_root(self))
            except Exception:  # reported in the log; the put itself must complete
                logger.exception("%s: acquisition failed", instance.pvname)
        return 0

    async def _count(self, root) -> None:
        preset = float(self.preset_time.value)
        theta, center, defocus = root.probe_geometry()
        async with root.simulator_lock:
            res = await _in_thread(root.simulator.point, preset, theta, center=center, defocus=defocus,
                                   beam_on=root.beam_on(), spectra=False)
        if root.options.get("realtime"):
            await asyncio.sleep(preset)
        quads = [int(res.maps[k][0, 0]) for k in ("q1", "q2", "q3", "q4")]
        for prop, count in zip((self.q1, self.q2, self.q3, self.q4), quads, strict=True):
            await prop.write(float(count))
        await self.total.write(float(sum(quads)))
        for key in ("dpc_x", "dpc_y", "dpc_diag"):
            await getattr(self, key).write(float(res.maps[key][0, 0]))


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

    file_path = _long_string("FilePath")
    file_name = _long_string("FileName", "xfct")
    full_file_name = _long_string("FullFileName_RBV", read_only=True)
    file_path_exists = pvproperty(name="FilePathExists_RBV", value=0, read_only=True)
    capture = pvproperty(name="Capture", value=0)
    capture_rbv = pvproperty(name="Capture_RBV", value=0, read_only=True)
    num_captured = pvproperty(name="NumCaptured_RBV", value=0, read_only=True)
    dataset = _long_string("DatasetName_RBV", HDF5_DATASET, read_only=True)
    frame_shape = pvproperty(name="FrameShape_RBV", value=[0, 0, 0], max_length=3, read_only=True)
    chunk_shape = pvproperty(name="ChunkShape_RBV", value=[0, 0, 0, 0], max_length=4, read_only=True)
    swmr_mode = pvproperty(name="SWMRMode_RBV", value=1, read_only=True)
    write_status = pvproperty(name="WriteStatus", value="Write OK", enum_strings=("Write OK", "Write error"),
                              dtype=ChannelType.ENUM, read_only=True)
    write_message = _long_string("WriteMessage", read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writer = None

    def _allowed(self, path: str) -> Path:
        root = Path(_root(self).options["data_dir"]).resolve()
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
            await _in_thread(target.mkdir, parents=True, exist_ok=True)
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
        from .storage.hdf5 import StreamHDF5Writer

        root = _root(self)
        directory = self._allowed(str(self.file_path.value))
        scanner = root.scanner
        frame = (int(scanner.num_rows.value), int(scanner.num_cols.value), root.simulator.vortex.n_channels)
        writer = StreamHDF5Writer(directory, data_key="spectra", dtype="<u4", frame_shape=frame,
                                  dataset=HDF5_DATASET, source=f"ca://{self.prefix}")
        path = await _in_thread(writer.open, name=str(self.file_name.value) or "xfct")
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
            await _in_thread(writer.close)
        await self.capture_rbv.write(0)

    async def append(self, spectra) -> None:
        count = await _in_thread(self.writer.write, spectra)
        await self.num_captured.write(int(count))


class ScannerGroup(PVGroup):
    """Fly-scan controller: a put of 1 to ``Acquire`` flies one map; the put completes when it is published.

    The map is taken at the stage positions of the moment (rotation, zone
    plate), with the configured shape, pixel size and dwell, the shutter and
    the ring current deciding whether there is beam. A map that cannot be
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
    status_message = _long_string("StatusMessage_RBV", read_only=True)
    map_dwell = pvproperty(name="MapDwell_RBV", value=0.0, units="s", read_only=True)
    map_shape = pvproperty(name="MapShape_RBV", value=[0, 0], max_length=2, read_only=True)
    line_overhead = pvproperty(name="LineOverhead_RBV", value=0.0, units="s", read_only=True)
    max_pixels = pvproperty(name="MaxPixels_RBV", value=MAX_MAP_PIXELS, read_only=True)
    num_channels = pvproperty(name="NumChannels_RBV", value=2048, read_only=True)

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

    def _check(self, root, shape, pixel_size, dwell, spectra, center) -> tuple:
        """The simulator's checks and the stage travel: what ``FlyRaster.check_configuration`` checks."""
        shape, pixel, dwell = root.simulator.check_map(shape, pixel_size, dwell, spectra=spectra)
        if shape[0] * shape[1] > MAX_MAP_PIXELS:
            raise ValueError(f"a {shape[0]}x{shape[1]} map has {shape[0] * shape[1]} pixels, more than the "
                             f"{MAX_MAP_PIXELS} of the map waveforms; use a smaller shape")
        half = max(shape) * pixel / 2
        travel = float(self.travel.value)
        reach = max(abs(center[0]), abs(center[1])) + half
        if reach > travel:
            raise ValueError(
                f"a {shape[0]}x{shape[1]} field of {pixel * 1e9:.0f} nm pixels centred at "
                f"({center[0] * 1e6:.1f}, {center[1] * 1e6:.1f}) um reaches {reach * 1e6:.1f} um, beyond the "
                f"scanning stage travel of +-{travel * 1e6:.1f} um; use fewer or smaller pixels or re-centre")
        if spectra:
            frame = (*shape, root.simulator.vortex.n_channels)
            if tuple(self.hdf5.writer.frame_shape) != frame:
                raise ValueError(f"the HDF5 file takes frames of {tuple(self.hdf5.writer.frame_shape)}, this map "
                                 f"would give {frame}; stop and restart the capture (unstage and stage the scanner)")
        return shape, pixel, dwell

    async def _fly(self, abort: asyncio.Event) -> tuple[str, str]:
        root = _root(self)
        spectra = self.hdf5.writer is not None
        theta, center, defocus = root.probe_geometry()
        beam = root.beam_on()
        shape = (int(self.num_rows.value), int(self.num_cols.value))
        try:
            shape, pixel, dwell = self._check(root, shape, float(self.pixel_size.value), float(self.dwell.value),
                                              spectra, center)
        except ValueError as exc:
            return "Error", str(exc)
        async with root.simulator_lock:
            started = asyncio.get_running_loop().time()
            sim = root.simulator
            res = await _in_thread(sim.simulate_map, shape, pixel, dwell, theta, center=center, defocus=defocus,
                                   spectra=spectra, beam_on=beam)
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
                await getattr(self.maps, key).write(_to_wire(res.maps[key], dtype))
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
    specimen = _long_string("Specimen_RBV", read_only=True)

    @reset_cmd.putter
    async def reset_cmd(self, instance, value):
        if value:
            root = _root(self)
            try:
                await root.reset_simulator(int(self.seed.value))
            except Exception:  # reported in the log; the put itself must complete
                logger.exception("%s: reset failed", instance.pvname)
        return 0

    @realtime.putter
    async def realtime(self, instance, value):
        _root(self).options["realtime"] = bool(value)
        return 1 if value else 0


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
            from .storage.tiled import ASSETS_SUBDIR, default_data_dir

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
        from .physics import mouse_egg

        return MicroprobeSimulator(mouse_egg(seed=seed), seed=seed)

    @property
    def simulator_lock(self) -> asyncio.Lock:
        """One user of the simulator at a time (its random generator and clock are shared)."""
        if self._simulator_lock is None:
            self._simulator_lock = asyncio.Lock()
        return self._simulator_lock

    def probe_geometry(self) -> tuple[float, tuple[float, float], float]:
        """(theta deg, centre (y, x) m, defocus m) from the motor readbacks, as the simulated devices compute it."""
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
        await self.sim_control.seed.write(int(sim.seed))
        await self.sim_control.specimen.write(str(sim.specimen.name))
        await self.sim_control.num_maps.write(len(sim.truth.thetas))
        await self.sim_control.realtime.write(int(self.options["realtime"]), verify_value=False)

    async def reset_simulator(self, seed: int) -> None:
        async with self.simulator_lock:
            self.simulator = await _in_thread(self._build_simulator, seed)
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


# ---------------------------------------------------------------------- CLI ---
def _is_loopback(interface: str) -> bool:
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The IOC's options, for ``python -m xfct_bluesky.ioc`` and ``xfct-bluesky ioc``."""
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"PV prefix (default {DEFAULT_PREFIX!r})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the specimen, runout and noise, as make_sim_microprobe(seed=...) (default 0)")
    parser.add_argument("--shape", type=int, nargs=2, default=(32, 32), metavar=("NY", "NX"),
                        help="map shape at start (default 32 32)")
    parser.add_argument("--pixel-size", type=float, default=300e-9, help="pixel size at start, m (default 300e-9)")
    parser.add_argument("--dwell", type=float, default=3e-3, help="dwell at start, s per pixel (default 3e-3)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the HDF5 spectra files (default <xfct-bluesky data dir>/assets); "
                             "Fly:HDF1:FilePath may only point under it")
    parser.add_argument("--interfaces", nargs="+", default=["127.0.0.1"],
                        help="interfaces to serve on (default 127.0.0.1: loopback only)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback interface (the PVs move motors and write files: firewall it)")
    parser.add_argument("--realtime", action="store_true",
                        help="maps and counts take as long as on the hardware (default: as fast as the CPU)")
    return parser


def main_from_args(args: argparse.Namespace) -> int:
    """Run the IOC until interrupted (SIGINT or SIGTERM); 2 if the options are refused."""
    remote = [i for i in args.interfaces if not _is_loopback(i)]
    if remote and not args.allow_remote:
        print(f"refusing to serve on {', '.join(remote)}: the IOC serves loopback only (127.0.0.1); pass "
              "--allow-remote to expose its PVs (they move motors and write files), behind a firewall",
              file=sys.stderr)
        return 2
    try:
        ioc = MicroprobeIOC(args.prefix, seed=args.seed, shape=tuple(args.shape), pixel_size=args.pixel_size,
                            dwell=args.dwell, data_dir=args.data_dir, realtime=args.realtime)
    except ValueError as exc:
        print(f"xfct-bluesky ioc: {exc}", file=sys.stderr)
        return 2
    Path(ioc.options["data_dir"]).mkdir(parents=True, exist_ok=True)
    os.environ["EPICS_CAS_INTF_ADDR_LIST"] = " ".join(args.interfaces)
    if not remote:
        # beacons to loopback too (not broadcast on every interface)
        os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", "127.0.0.1")
        os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
    logging.getLogger("caproto.ctx").addFilter(_BeaconFilter())
    # SIGTERM (e.g. a test fixture's terminate) stops the server as Ctrl-C does, closing the HDF5 file
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"xfct-bluesky IOC: {len(ioc.pvdb)} PVs under {args.prefix!r} on {', '.join(args.interfaces)} "
          f"(port {os.environ.get('EPICS_CA_SERVER_PORT', '5064')}); seed {args.seed}; HDF5 files in "
          f"{ioc.options['data_dir']}", flush=True)
    from caproto.server import run

    try:
        run(ioc.pvdb, interfaces=list(args.interfaces))
    except KeyboardInterrupt:
        pass
    finally:
        ioc.close()
    return 0


class _BeaconFilter(logging.Filter):
    """Log a failed beacon once, without its traceback.

    With no CA repeater on the host, every beacon to the loopback repeater
    port is refused; caproto would log a traceback each time.
    """

    def __init__(self):
        super().__init__()
        self._seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to send beacon"):
            return True
        if self._seen:
            return False
        self._seen = True
        record.exc_info = None
        record.msg = str(record.msg) + " (no CA repeater listening; logged once)"
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m xfct_bluesky.ioc", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return main_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
