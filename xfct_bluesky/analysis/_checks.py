"""Array checks the analysis entry points share: real values, counts that cannot be negative, finite shifts.

Every message names the argument, the bad value and where it is (the
projection or the array index), the allowed range and the fix, and is
raised before anything is computed.
"""

from __future__ import annotations

import numpy as np

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


def non_negative(name: str, value, *, fix: str) -> np.ndarray:
    """``value`` (a real array) if no element is negative, else ValueError with the minimum and its index."""
    found = negatives(name, value)
    if found:
        raise ValueError(f"{found}; allowed: values >= 0 (counts cannot be negative). {fix}")
    return real(name, value)


def shifts(value, n: int, *, name: str = "shifts", excluded_ok: bool = False) -> np.ndarray:
    """``value`` as a float (n, 2) array of finite (dy, dx) px, else ValueError naming the projections.

    NaN is what an alignment gives a projection it left out (no signal,
    ``Alignment.excluded``). A function that cannot leave a projection out
    (:func:`~.align.apply_shifts`: shifting by NaN would turn it into
    zeros) refuses it; one that can (``excluded_ok``: the reconstruction,
    the consistency figures) accepts rows that are NaN in both components,
    as long as two projections keep finite shifts. Infinity is always refused.
    """
    a = real(name, value).astype(float)
    if a.shape != (n, 2):
        raise ValueError(f"{name} have shape {a.shape}; expected {(n, 2)}: one (dy, dx) in px per projection")
    finite = np.isfinite(a).all(axis=1)
    left_out = np.isnan(a).all(axis=1) if excluded_ok else np.zeros(n, bool)
    bad = np.flatnonzero(~finite & ~left_out)
    if not bad.size and excluded_ok and finite.sum() < 2:
        bad = np.flatnonzero(~finite)
    if bad.size:
        listed = ", ".join(f"projection {k}: ({a[k, 0]:g}, {a[k, 1]:g})" for k in bad[:_SHOWN])
        more = f" and {bad.size - _SHOWN} more" if bad.size > _SHOWN else ""
        raise ValueError(f"{name} are not finite at {bad.size} of {n} projections ({listed}{more}); allowed: "
                         "finite (dy, dx) px. NaN marks a projection an alignment left out (no signal, see "
                         "Alignment.excluded): drop those projections (their maps and angles), or give finite "
                         "shifts for them")
    return a
