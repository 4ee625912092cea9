"""Motor records of the microprobe IOC: what ophyd's EpicsMotor uses (VAL, RBV, DMOV, MOVN, STOP, limits)."""

from __future__ import annotations

import asyncio
import logging
import math

from caproto.server import PVGroup, PvpropertyDouble, SubGroup, pvproperty

from ._common import MOTOR_TICK

logger = logging.getLogger("xfct_bluesky.ioc")


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
