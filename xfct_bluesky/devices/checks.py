"""Checks the simulated and the EPICS devices share, so both refuse the same things the same way."""

from __future__ import annotations

import math

from ophyd.utils import LimitError


def check_position(motor, pos) -> None:
    """Refuse a non-number, NaN or a position outside ``motor.limits``, naming them (``LimitError``)."""
    try:
        value = float(pos)
    except (TypeError, ValueError):
        raise ValueError(f"{motor.name}: position {pos!r} is not a number ({motor.egu})") from None
    if not math.isfinite(value):
        raise ValueError(f"{motor.name}: position {pos!r} is not finite; give a number in {motor.egu}")
    low, high = motor.limits
    if low < high and not low <= value <= high:
        raise LimitError(
            f"{motor.name}: position {value:g} {motor.egu} is outside the travel limits "
            f"[{low:g}, {high:g}] {motor.egu}; choose a position within them"
        )


def check_travel(name: str, shape, pixel: float, center, travel: float) -> None:
    """Refuse a field (``shape`` px of ``pixel`` m centred at ``center`` (y, x) m) beyond +-``travel`` m."""
    half = max(shape) * pixel / 2
    reach = max(abs(center[0]), abs(center[1])) + half
    if reach > travel:
        raise ValueError(
            f"{name}: a {shape[0]}x{shape[1]} field of {pixel * 1e9:.0f} nm pixels centred at "
            f"({center[0] * 1e6:.1f}, {center[1] * 1e6:.1f}) um reaches {reach * 1e6:.1f} um, beyond the "
            f"scanning stage travel of +-{travel * 1e6:.1f} um; use fewer or smaller pixels or re-centre"
        )
