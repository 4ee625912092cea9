"""Signals and a positioner shared by the simulated devices.

* :class:`ArraySignal`: a soft Signal holding a numpy array whose
  ``describe()`` carries ``dtype_numpy`` (as ``np.dtype.str``, which
  event-model's schema accepts) and the configured shape, so TiledWriter keeps
  the dtype instead of widening to float64.
* :class:`SimMotor`: a soft positioner with the component names and kinds of
  ``ophyd.EpicsMotor`` (``user_readback``, ``user_setpoint``, ``velocity``,
  ``motor_egu``, limits, DMOV/MOVN...), so plans cannot tell it from the
  EPICS motor. Moves are instantaneous, or paced by ``velocity`` when
  ``realtime`` is set, in a background timer like ``ophyd.sim.SynAxis``.
"""

from __future__ import annotations

import threading

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.positioner import PositionerBase

from .checks import check_position


class ArraySignal(Signal):
    """A soft Signal holding an ndarray of a fixed dtype.

    Parameters
    ----------
    dtype : numpy dtype
    shape_getter : callable, optional
        Returns the shape the array will have (used by ``describe()`` before
        the first acquisition).
    """

    def __init__(self, *args, dtype="<f4", shape_getter=None, **kwargs):
        self._np_dtype = np.dtype(dtype)
        self._shape_getter = shape_getter
        kwargs.setdefault("value", np.zeros((0, 0), dtype=self._np_dtype))
        super().__init__(*args, **kwargs)

    @property
    def np_dtype(self) -> np.dtype:
        return self._np_dtype

    def put(self, value, **kwargs):
        super().put(np.asarray(value, dtype=self._np_dtype), **kwargs)

    def expected_shape(self) -> list[int]:
        """The configured shape (getter or parent's ``expected_shape``), else the value's."""
        if self._shape_getter is not None:
            return list(self._shape_getter())
        getter = getattr(self.parent, "expected_shape", None)
        if getter is not None:
            return list(getter())
        return list(np.shape(self._readback))

    def describe(self):
        desc = super().describe()
        desc[self.name].update(
            dtype="array",
            dtype_numpy=self._np_dtype.str,
            shape=self.expected_shape(),
        )
        return desc


class SimMotor(Device, PositionerBase):
    """A soft motor with the component names of ``ophyd.EpicsMotor``.

    Parameters
    ----------
    egu : str
        Engineering units.
    limits : (float, float)
        Soft travel limits; a move outside them raises ``LimitError`` (a
        ``ValueError``) before anything moves.
    velocity : float
        egu per second, used when ``realtime`` is True.
    realtime : bool
        Pace moves by distance / velocity instead of arriving at once.
    """

    user_readback = Cpt(Signal, value=0.0, kind="hinted")
    user_setpoint = Cpt(Signal, value=0.0, kind="normal")
    user_offset = Cpt(Signal, value=0.0, kind="config")
    user_offset_dir = Cpt(Signal, value=0, kind="config")
    velocity = Cpt(Signal, value=1.0, kind="config")
    acceleration = Cpt(Signal, value=0.1, kind="config")
    motor_egu = Cpt(Signal, value="", kind="config")
    motor_is_moving = Cpt(Signal, value=0, kind="omitted")
    motor_done_move = Cpt(Signal, value=1, kind="omitted")
    high_limit_travel = Cpt(Signal, value=0.0, kind="omitted")
    low_limit_travel = Cpt(Signal, value=0.0, kind="omitted")
    motor_stop = Cpt(Signal, value=0, kind="omitted")

    def __init__(self, prefix="", *, name, egu="", limits=(0.0, 0.0), velocity=1.0, value=0.0,
                 realtime=False, **kwargs):
        super().__init__(prefix=prefix, name=name, **kwargs)
        self.user_readback.name = self.name
        self.motor_egu.put(egu)
        self.low_limit_travel.put(float(limits[0]))
        self.high_limit_travel.put(float(limits[1]))
        self.velocity.put(float(velocity))
        self.realtime = realtime
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()
        self._set_readback(float(value))
        self.user_setpoint.put(float(value))

    # -- PositionerBase API ---------------------------------------------------
    @property
    def egu(self) -> str:
        return self.motor_egu.get()

    def describe(self):  # the positions' units, as EpicsMotor's describe carries the record's EGU
        desc = super().describe()
        for key, spec in desc.items():
            if key.startswith(self.name) and spec.get("dtype") == "number":
                spec.setdefault("units", self.egu)
        return desc

    @property
    def limits(self) -> tuple[float, float]:
        return (self.low_limit_travel.get(), self.high_limit_travel.get())

    @property
    def position(self) -> float:
        return self.user_readback.get()

    @property
    def moving(self) -> bool:
        return bool(self.motor_is_moving.get())

    def check_value(self, pos) -> None:
        """Refuse NaN and positions outside the soft limits, naming them."""
        check_position(self, pos)

    def move(self, position, wait=True, moved_cb=None, timeout=None):
        self.check_value(position)
        position = float(position)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._started_moving = False
            status = super().move(position, moved_cb=moved_cb, timeout=timeout)
            self.user_setpoint.put(position)
            distance = abs(position - self.position)
            self.motor_is_moving.put(1)
            self.motor_done_move.put(0)
            self._started_moving = True
            if self.realtime and distance > 0:
                delay = distance / max(self.velocity.get(), 1e-12)
                self._timer = threading.Timer(delay, self._arrive, args=(position,))
                self._timer.daemon = True
                self._timer.start()
            else:
                self._arrive(position)
        if wait:
            status.wait()
        return status

    def _arrive(self, position: float) -> None:
        with self._lock:
            self._timer = None
            self._set_readback(position)
            self.motor_is_moving.put(0)
            self.motor_done_move.put(1)
        self._done_moving(success=True)

    def _set_readback(self, value: float) -> None:
        self.user_readback.put(value)
        self._set_position(value)

    def stop(self, *, success: bool = False):
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self.user_setpoint.put(self.position)
                self.motor_is_moving.put(0)
                self.motor_done_move.put(1)
                super().stop(success=success)
