"""Argument checks that name the bad value, the allowed range and the fix.

Every check refuses what ``float()`` would quietly accept but does not mean a
number: a bool (``True`` is not 1 s), a string (``"3e-3"``: the message says
to write ``3e-3``), complex values, arrays and other collections, and NaN or
infinity wherever a finite number is asked for (a NaN limit would disable
the limit). Messages read ``name=value is out of range; allowed: ... . fix``,
``... is not finite; ...`` or, for a value of the wrong kind, ``name=value is
a string, not a number; allowed: ... . fix``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

import numpy as np


def _kind_error(value) -> str | None:
    """What ``value`` is, when it is not one real number (``"a bool"``, ``"a string"``...); None if it is."""
    if isinstance(value, bool | np.bool_):
        return "a bool"
    if isinstance(value, str | bytes):
        return "a string"
    if isinstance(value, complex | np.complexfloating):
        return "complex"
    if isinstance(value, np.ndarray | np.generic):
        kind = value.dtype.kind
        if value.ndim:
            return f"an array of shape {value.shape}"
        return {"b": "a bool", "U": "a string", "S": "a string", "c": "complex"}.get(
            kind, None if kind in "iuf" else f"a numpy {value.dtype} value")
    if isinstance(value, Sequence | Mapping | AbstractSet):
        return f"a {type(value).__name__}"
    return None


def _kind_fix(name: str, value, fix: str) -> str:
    """The fix for a value of the wrong kind: a string holding a number is to be written without quotes."""
    if isinstance(value, str | np.str_):
        try:
            float(value)
        except ValueError:
            return fix
        return f"Write the number without quotes: {name}={value.strip()}"
    return fix


def number(name: str, value, *, allowed: str, fix: str) -> float:
    """Return ``value`` as a finite float, or raise ValueError naming it, ``allowed`` and ``fix``.

    Refuses bools, strings, complex numbers, arrays and other collections, and
    NaN or infinity. Range checks are the caller's, with the same ``allowed``.
    """
    what = _kind_error(value)
    if what is None:
        try:
            v = float(value)
        except (TypeError, ValueError):
            what = "None" if value is None else f"of type {type(value).__name__}"
    if what is not None:
        raise ValueError(f"{name}={value!r} is {what}, not a number; allowed: {allowed}. "
                         f"{_kind_fix(name, value, fix)}")
    if not math.isfinite(v):
        raise ValueError(f"{name}={value!r} is not finite; allowed: {allowed}. {fix}")
    return v


def positive(name: str, value, *, fix: str, unit: str = "") -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ValueError."""
    allowed = f"a finite number > 0{unit}"
    v = number(name, value, allowed=allowed, fix=fix)
    if v <= 0:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}. {fix}")
    return v


def non_negative(name: str, value, *, fix: str, unit: str = "") -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise ValueError."""
    allowed = f"a finite number >= 0{unit}"
    v = number(name, value, allowed=allowed, fix=fix)
    if v < 0:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}. {fix}")
    return v


def finite(name: str, value, *, fix: str, unit: str = "") -> float:
    """Return ``value`` as a finite float, else raise ValueError."""
    return number(name, value, allowed=f"a finite number{unit}", fix=fix)


def integer(name: str, value, *, low: int, high: int | None = None, fix: str) -> int:
    """Return ``value`` as an int in ``low..high`` (no upper bound if None), else raise ValueError.

    Python and numpy integers are taken, and floats with an integral value
    (``4.0``); bools and strings are not.
    """
    allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    v = number(name, value, allowed=allowed, fix=fix)
    exact = int(value) if isinstance(value, int | np.integer) else (int(v) if v.is_integer() else None)
    if exact is None or exact < low or (high is not None and exact > high):
        raise ValueError(f"{name}={value!r}: allowed {allowed}. {fix}")
    return exact


def one_of(name: str, value, allowed: Sequence[str], *, fix: str = "") -> str:
    """Return ``value`` if it is one of the strings ``allowed``, else raise ValueError listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not known; allowed: {', '.join(map(repr, allowed))}. {fix}".rstrip())
    return str(value)


def shape2d(name: str, value, *, fix: str, max_side: int = 8192) -> tuple[int, int]:
    """Return ``value`` as an (ny, nx) tuple of ints in ``1..max_side``; one integer means a square."""
    if isinstance(value, np.ndarray) and value.ndim == 0 or not isinstance(
            value, str | bytes | Sequence | np.ndarray | Mapping | AbstractSet):
        if _kind_error(value) is not None:  # np.True_ is not a square of one pixel
            raise ValueError(f"{name}={value!r} is {_kind_error(value)}, not a shape; allowed: a pair (ny, nx) of "
                             f"integers in 1..{max_side}. {fix}")
        value = (value, value)  # one number: a square
    if isinstance(value, str | bytes | Mapping | AbstractSet) or len(value) != 2:
        raise ValueError(f"{name}={value!r} must be a pair (ny, nx) of integers in 1..{max_side}. {fix}")
    out = []
    for i, side in enumerate(value):
        try:
            out.append(integer(f"{name}[{i}]", side, low=1, high=max_side, fix=fix))
        except ValueError as exc:
            raise ValueError(f"{name}={value!r}: {exc}") from None
    return out[0], out[1]
