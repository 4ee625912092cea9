"""Argument checks that name the bad value, the allowed range and the fix: the package's one home of them.

Every check refuses what ``float()`` would quietly accept but does not mean a
number: a bool (``True`` is not 1 s), a string (``"3e-3"``: the message says
to write ``3e-3``), complex values, arrays and other collections, and NaN or
infinity wherever a finite number is asked for (a NaN limit would disable
the limit). Messages read ``name=value is out of range; allowed: ... . fix``,
``... is not finite; ...`` or, for a value of the wrong kind, ``name=value is
a string, not a number; allowed: ... . fix``. A ``name`` that starts with
``-`` is a command-line option and is shown as typed: ``--port 0: allowed ...``.

Scalars: :func:`number`, :func:`positive`, :func:`non_negative`,
:func:`finite`, :func:`between`, :func:`integer`, :func:`seed`,
:func:`one_of`, :func:`shape2d`. Arrays (raised before anything is
computed, naming the element that is wrong): :func:`real`,
:func:`negatives`, :func:`counts`, :func:`angles`, :func:`shifts`.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet

import numpy as np


def shown(name: str, value) -> str:
    """``name=value`` as Python has it, or ``--option VALUE`` as typed for a command-line option (``name`` "-...")."""
    if not name.startswith("-"):
        return f"{name}={value!r}"
    return f"{name} {value:g}" if isinstance(value, float) else f"{name} {shlex.quote(str(value))}"


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
        raise ValueError(f"{shown(name, value)} is {what}, not a number; allowed: {allowed}. "
                         f"{_kind_fix(name, value, fix)}")
    if not math.isfinite(v):
        raise ValueError(f"{shown(name, value)} is not finite; allowed: {allowed}. {fix}")
    return v


def positive(name: str, value, *, fix: str, unit: str = "") -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ValueError."""
    allowed = f"a finite number > 0{unit}"
    v = number(name, value, allowed=allowed, fix=fix)
    if v <= 0:
        raise ValueError(f"{shown(name, value)} is out of range; allowed: {allowed}. {fix}")
    return v


def non_negative(name: str, value, *, fix: str, unit: str = "") -> float:
    """Return ``value`` as a float if it is finite and >= 0, else raise ValueError."""
    allowed = f"a finite number >= 0{unit}"
    v = number(name, value, allowed=allowed, fix=fix)
    if v < 0:
        raise ValueError(f"{shown(name, value)} is out of range; allowed: {allowed}. {fix}")
    return v


def finite(name: str, value, *, fix: str, unit: str = "") -> float:
    """Return ``value`` as a finite float, else raise ValueError."""
    return number(name, value, allowed=f"a finite number{unit}", fix=fix)


def between(name: str, value, low: float, high: float, *, fix: str, unit: str = "", open_low: bool = False,
            open_high: bool = False) -> float:
    """Return ``value`` as a float in ``low..high`` (an end left out where ``open_low``/``open_high``), else
    raise ValueError; the allowed range reads ``0.0001..10 s`` (both ends in) or ``0 < value < 0.95``."""
    if open_low or open_high:
        allowed = f"{low:g} {'<' if open_low else '<='} value {'<' if open_high else '<='} {high:g}{unit}"
    else:
        allowed = f"{low:g}..{high:g}{unit}"
    v = number(name, value, allowed=allowed, fix=fix)
    if v < low or v > high or (open_low and v == low) or (open_high and v == high):
        raise ValueError(f"{shown(name, value)}: allowed {allowed}. {fix}")
    return v


def integer(name: str, value, *, low: int, high: int | None = None, fix: str) -> int:
    """Return ``value`` as an int in ``low..high`` (no upper bound if None), else raise ValueError.

    Python and numpy integers are taken, and floats with an integral value
    (``4.0``); bools and strings are not.
    """
    allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    v = number(name, value, allowed=allowed, fix=fix)
    exact = int(value) if isinstance(value, int | np.integer) else (int(v) if v.is_integer() else None)
    if exact is None or exact < low or (high is not None and exact > high):
        raise ValueError(f"{shown(name, value)}: allowed {allowed}. {fix}")
    return exact


def seed(name: str, value, *, fix: str = "Give a whole number, e.g. 0 (the same seed, the same random numbers).") -> int:
    """Return ``value`` as an int >= 0, the seeds numpy's generators take and a start document stores."""
    return integer(name, value, low=0, fix=fix)


def one_of(name: str, value, allowed: Sequence, *, fix: str = "", ignore_case: bool = False):
    """Return ``value`` if it is one of ``allowed`` (strings, and None where it is listed), else raise
    ValueError listing them. With ``ignore_case`` a string is compared, and returned, in lower case."""
    v = value.lower() if isinstance(value, str) and ignore_case else value
    if not (v is None and None in allowed or isinstance(v, str) and v in allowed):
        raise ValueError(f"{shown(name, value)} is not known; allowed: {', '.join(map(repr, allowed))}. "
                         f"{fix}".rstrip())
    return None if v is None else str(v)


def shape2d(name: str, value, *, fix: str, max_side: int = 8192) -> tuple[int, int]:
    """Return ``value`` as an (ny, nx) tuple of ints in ``1..max_side``; one integer means a square."""
    if isinstance(value, np.ndarray) and value.ndim == 0 or not isinstance(
            value, str | bytes | Sequence | np.ndarray | Mapping | AbstractSet):
        if _kind_error(value) is not None:  # np.True_ is not a square of one pixel
            raise ValueError(f"{shown(name, value)} is {_kind_error(value)}, not a shape; allowed: a pair (ny, nx) of "
                             f"integers in 1..{max_side}. {fix}")
        value = (value, value)  # one number: a square
    if isinstance(value, str | bytes | Mapping | AbstractSet) or len(value) != 2:
        raise ValueError(f"{shown(name, value)} must be a pair (ny, nx) of integers in 1..{max_side}. {fix}")
    out = []
    for i, side in enumerate(value):
        try:
            out.append(integer(f"{name}[{i}]", side, low=1, high=max_side, fix=fix))
        except ValueError as exc:
            raise ValueError(f"{shown(name, value)}: {exc}") from None
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------- arrays ---
#: Bad entries a message lists before "and N more".
_SHOWN = 5


def real(name: str, value) -> np.ndarray:
    """``value`` as an array of real numbers (bool included), else ValueError naming ``name``.

    Complex input is refused rather than cast: numpy's cast drops the
    imaginary part (with only a ComplexWarning).
    """
    a = np.asarray(value)
    if np.iscomplexobj(a):
        raise ValueError(f"{name} is complex ({a.dtype}); allowed: real numbers. Give its real part "
                         f"(np.real), its magnitude (np.abs) or its phase (np.angle), whichever is meant")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} has dtype {a.dtype}; allowed: real numbers (integer or float arrays)")
    return a


def negatives(name: str, value) -> str:
    """"" if ``value`` (a real array) has no negative element, else "<name> has negative values (<count> of
    them), the lowest <min> at index <index>"."""
    a = real(name, value)
    if not a.size or a.dtype.kind in "ub" or not a.min() < 0:
        return ""
    where = np.unravel_index(int(np.argmin(a)), a.shape) if a.ndim else ()
    return (f"{name} has negative values ({int(np.count_nonzero(a < 0))} of them), the lowest {float(a.min()):g} "
            f"at index {tuple(int(i) for i in where)}")


def counts(name: str, value, *, fix: str) -> np.ndarray:
    """``value`` (a real array) if no element is negative, else ValueError with the minimum and its index."""
    found = negatives(name, value)
    if found:
        raise ValueError(f"{found}; allowed: values >= 0 (counts cannot be negative). {fix}")
    return real(name, value)


def angles(name: str, value, *, n: int | None = None, what: str = "projections", at_least: int = 2) -> np.ndarray:
    """``value`` as a float64 (k,) array of finite angles in degrees, ``k = n`` (one per ``what``) if given
    and ``k >= at_least``; else ValueError naming the count, or the first angle that is not finite."""
    a = real(name, value)
    if a.ndim != 1:
        raise ValueError(f"{name} has shape {a.shape}; allowed: a 1D array of angles in degrees, one per "
                         f"{what.rstrip('s')}")
    a = a.astype(np.float64)
    if n is not None and a.size != n:
        raise ValueError(f"{name} has {a.size} angles but there are {n} {what}; allowed: one angle (degrees) per "
                         f"{what.rstrip('s')}")
    if a.size < at_least:
        raise ValueError(f"{name} has {a.size} angle(s); allowed: at least {at_least} (a tomography has "
                         "typically hundreds over 180 degrees)")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"{name} holds {bad.size} NaN/inf value(s), the first at index {bad[0]} ({a[bad[0]]}); "
                         "allowed: finite degrees. Drop those projections")
    return a


def shifts(value, n: int, *, name: str = "shifts", excluded_ok: bool = False) -> np.ndarray:
    """``value`` as a float (n, 2) array of finite (dy, dx) px, else ValueError naming the projections.

    NaN is what an alignment gives a projection it left out (no signal,
    ``Alignment.excluded``). A function that cannot leave a projection out
    (:func:`~xfct_bluesky.analysis.shifts.apply_shifts`: shifting by NaN
    would turn it into zeros) refuses it; one that can (``excluded_ok``:
    the reconstruction, the consistency figures) accepts rows that are NaN
    in both components, as long as two projections keep finite shifts.
    Infinity is always refused.
    """
    a = real(name, value).astype(float)
    if a.shape != (n, 2):
        raise ValueError(f"{name} have shape {a.shape}; expected {(n, 2)}: one (dy, dx) in px per projection")
    ok = np.isfinite(a).all(axis=1)
    left_out = np.isnan(a).all(axis=1) if excluded_ok else np.zeros(n, bool)
    bad = np.flatnonzero(~ok & ~left_out)
    if not bad.size and excluded_ok and ok.sum() < 2:
        bad = np.flatnonzero(~ok)
    if bad.size:
        listed = ", ".join(f"projection {k}: ({a[k, 0]:g}, {a[k, 1]:g})" for k in bad[:_SHOWN])
        more = f" and {bad.size - _SHOWN} more" if bad.size > _SHOWN else ""
        raise ValueError(f"{name} are not finite at {bad.size} of {n} projections ({listed}{more}); allowed: "
                         "finite (dy, dx) px. NaN marks a projection an alignment left out (no signal, see "
                         "Alignment.excluded): drop those projections (their maps and angles), or give finite "
                         "shifts for them")
    return a
