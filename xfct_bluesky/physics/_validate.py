"""Argument checks that name the bad value, the allowed range and the fix."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def positive(name: str, value, *, fix: str, unit: str = "") -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ValueError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; allowed: a finite number > 0{unit}. {fix}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}={value!r} is out of range; allowed: a finite number > 0{unit}. {fix}")
    return v


def non_negative(name: str, value, *, fix: str, unit: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; allowed: a finite number >= 0{unit}. {fix}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}={value!r} is out of range; allowed: a finite number >= 0{unit}. {fix}")
    return v


def finite(name: str, value, *, fix: str, unit: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a number; allowed: a finite number{unit}. {fix}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}={value!r} is not finite; allowed: a finite number{unit}. {fix}")
    return v


def shape2d(name: str, value, *, fix: str, max_side: int = 8192) -> tuple[int, int]:
    """Return ``value`` as an (ny, nx) tuple of positive ints."""
    if np.ndim(value) == 0 and not isinstance(value, str | bytes):
        value = (value, value)
    if isinstance(value, str | bytes) or not (isinstance(value, Sequence) or np.ndim(value) == 1) or len(value) != 2:
        raise ValueError(f"{name}={value!r} must be a pair (ny, nx) of integers in 1..{max_side}. {fix}")
    out = []
    for v in value:
        try:
            ok = not isinstance(v, bool) and float(v).is_integer() and 1 <= int(v) <= max_side
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name}={value!r}: each side must be an integer in 1..{max_side}. {fix}")
        out.append(int(v))
    return out[0], out[1]
