"""Plan arithmetic: angles, dwell from a dose budget, dose and duration estimates.

Everything here is checked when a plan is called, before it yields its first
message, so bad arguments raise a ``ValueError`` that names the value, the
allowed range and the fix, before any motor moves or any document is emitted.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from bluesky.protocols import Readable

from .._warnings import warn
from ..physics.dose import dose_per_projection, dwell_for_dose
from ..validate import integer, number, one_of, positive
from ._checks import check_microprobe, check_storable_shape
from .resume import ANGLE_TOLERANCE

ORDERS = ("sequential", "interlaced", "golden")
#: Dwell (s per pixel) above which a scan is legal but almost surely a slip of units (microprobes dwell
#: 1e-3..1e-1 s): warned about with what it would cost.
PLAUSIBLE_DWELL = 0.1
#: A tomography longer than this (s) is warned about with its duration.
PLAUSIBLE_DURATION = 24 * 3600.0


class PlausibilityWarning(UserWarning):
    """A value the plans accept that is almost surely a slip of units (3 s per pixel meant as 3 ms, angles in
    radians); the message gives what the plan would do with it and the likely fix."""
#: Most projections in one tomography. Every angle is stored in the start document (100000 angles are
#: about 2 MB of JSON), and 100000 over 180 deg keep even golden-ratio angles (closest pair ~0.6 of the
#: mean step) more than ANGLE_TOLERANCE apart, so that resuming tells every projection from the others.
MAX_ANGLES = 100_000
#: Fastest fly scan the scanner supports (s per pixel) and the slowest sensible one.
MIN_DWELL = 1e-4
MAX_DWELL = 10.0
#: Tolerable dose per nm of resolution, Howells et al. 2009 (approximate reading).
DOSE_LIMIT_PER_NM = 1e8
#: Loops of an interlaced acquisition.
INTERLACED_LOOPS = 4


def default_dose_budget(pixel_size: float) -> float:
    """Howells et al. (2009): about 1e8 Gy per nm of resolution; the pixel size sets it."""
    return DOSE_LIMIT_PER_NM * pixel_size * 1e9


def tomo_angles(n_angles: int, angular_range: float = 180.0, order: str = "sequential") -> np.ndarray:
    """Rotation angles (degrees) in acquisition order.

    Parameters
    ----------
    n_angles : int
        Number of projections, >= 2.
    angular_range : float
        Degrees covered, (0, 360]; angles lie in [0, angular_range).
    order : {"sequential", "interlaced", "golden"}
        ``sequential``: 0, d, 2d, ...; ``interlaced``: four loops over the same
        grid, each offset by a quarter step in bit-reversed order (0, 2, 1, 3),
        so that any prefix covers the range evenly; ``golden``: the golden-angle
        sequence theta_k = k * range * (sqrt 5 - 1)/2 mod range (Kohler 2004).

    Notes
    -----
    Interlaced and golden orders spread early projections over the whole
    range: a scan stopped early still reconstructs, and drift is averaged.
    """
    n = _check_n_angles(n_angles)
    rng = _check_angular_range(angular_range)
    order = one_of("order", order, ORDERS, fix="Give one of them, e.g. order='golden'.")
    if order == "sequential":
        return np.arange(n) * (rng / n)
    if order == "golden":
        return np.mod(np.arange(n) * rng * (math.sqrt(5) - 1) / 2, rng)
    loops = min(INTERLACED_LOOPS, n)
    step = rng / n * loops  # each loop covers the range with n/loops angles
    offsets = [0, 2, 1, 3][:loops] if loops == 4 else list(range(loops))
    out = []
    per_loop = [len(range(k, n, loops)) for k in range(loops)]
    for k in offsets:
        m = per_loop[k]  # offset k holds the grid points k, k + loops, ... below n
        out.extend((np.arange(m) * step + k * rng / n) % rng)
    return np.asarray(out[:n], dtype=float)


@dataclass(frozen=True)
class TomoEstimate:
    """What a tomography will do and cost, computed before it runs."""

    angles: tuple[float, ...]
    dwell: float
    shape: tuple[int, int]
    pixel_size: float
    dose_per_projection: float
    total_dose: float
    duration: float
    order: str
    angular_range: float

    @property
    def n_angles(self) -> int:
        return len(self.angles)

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["angles"] = [float(a) for a in self.angles]
        d["shape"] = list(self.shape)
        d["n_angles"] = self.n_angles
        d["estimated_duration"] = d.pop("duration")
        return d

    def __repr__(self) -> str:  # the angles in a line, not one by one (there may be thousands)
        theta = np.asarray(self.angles)
        return (f"TomoEstimate({self.n_angles} angles {theta.min():g}..{theta.max():g} deg {self.order}, "
                f"dwell={self.dwell:g} s, shape={self.shape}, pixel_size={self.pixel_size:g} m, "
                f"total_dose={self.total_dose:.3g} Gy, duration={self.duration:.0f} s)")

    def __str__(self) -> str:
        h, rem = divmod(self.duration, 3600)
        return (
            f"{self.n_angles} projections of {self.shape[0]}x{self.shape[1]} px at {self.pixel_size * 1e9:.0f} nm, "
            f"{self.dwell * 1e3:.3g} ms/px ({self.order}, {self.angular_range:g} deg); dose "
            f"{self.dose_per_projection:.3g} Gy per projection, {self.total_dose:.3g} Gy in total; "
            f"about {int(h)} h {rem / 60:.0f} min"
        )


def check_plan_dwell(dwell: float, fix: str, name: str = "dwell") -> float:
    allowed = f"{MIN_DWELL:g}..{MAX_DWELL:g} s per pixel"
    d = number(name, dwell, allowed=allowed, fix=fix)
    if not MIN_DWELL <= d <= MAX_DWELL:
        raise ValueError(f"{name}={dwell!r} s is out of range; allowed {allowed}. {fix}")
    return d


def _check_n_angles(n_angles) -> int:
    return integer("n_angles", n_angles, low=2, high=MAX_ANGLES,
                   fix=f"A tomography needs at least 2 angles; at most {MAX_ANGLES} fit one run (every angle is "
                   f"in the start document, and more would come closer than {ANGLE_TOLERANCE:g} deg, the tolerance "
                   "that tells projections apart when resuming): use fewer angles.")


def _check_angular_range(angular_range) -> float:
    rng = number("angular_range", angular_range, allowed="(0, 360] degrees", fix="180 is usual.")
    if not 0 < rng <= 360:
        raise ValueError(f"angular_range={angular_range!r}: allowed (0, 360] degrees; 180 is usual")
    return rng


def _closest(theta: np.ndarray) -> float:
    """The smallest difference between two of the angles (deg)."""
    return float(np.diff(np.sort(theta)).min())


def _most_angles(angular_range: float, order: str) -> int:
    """The most angles of ``order`` over ``angular_range`` that stay more than ANGLE_TOLERANCE apart (or 1).

    The closest pair only comes closer as angles are added (golden angles extend their own sequence;
    the others lie on a grid of range / n), so bisection finds it.
    """
    def fits(n: int) -> bool:
        return _closest(tomo_angles(n, angular_range, order)) > ANGLE_TOLERANCE

    low, high = 1, MAX_ANGLES
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def _check_angles(angles, min_angles: int) -> np.ndarray:
    """Explicit angles as a float array: numbers, finite, at least ``min_angles``, none repeated."""
    fix = "Give the angles in degrees as numbers, e.g. angles=[0, 45, 90]."
    if isinstance(angles, str | bytes) or not isinstance(angles, Sequence | np.ndarray) or (
            isinstance(angles, np.ndarray) and angles.ndim != 1):
        raise ValueError(f"angles={angles!r}: allowed a sequence of {min_angles} to {MAX_ANGLES} angles. {fix}")
    if not min_angles <= len(angles) <= MAX_ANGLES:
        raise ValueError(f"angles has {len(angles)} value(s); allowed: {min_angles} to {MAX_ANGLES} angles for a "
                         f"tomography. {fix}")
    arr = np.array([number(f"angles[{i}]", a, allowed="a finite angle in degrees", fix=fix)
                    for i, a in enumerate(angles)])
    order = np.argsort(arr, kind="stable")
    close = np.flatnonzero(np.diff(arr[order]) <= ANGLE_TOLERANCE)
    if close.size:
        pairs = [f"angles[{order[k]}]={arr[order[k]]:g} and angles[{order[k + 1]}]={arr[order[k + 1]]:g}"
                 for k in close[:3]]
        more = f" (and {close.size - 3} more)" if close.size > 3 else ""
        raise ValueError(f"angles repeat: {'; '.join(pairs)}{more} deg are within {ANGLE_TOLERANCE:g} deg of each "
                         "other, the tolerance that tells projections apart; allowed: each angle once. Remove the "
                         "repeats (to image an angle twice, run it again)")
    return arr


def estimate_tomo(
    microprobe: Readable,
    *,
    shape: Sequence[int],
    pixel_size: float,
    n_angles: int | None = None,
    angles: Sequence[float] | None = None,
    dwell: float | None = None,
    total_dose: float | None = None,
    angular_range: float = 180.0,
    order: Literal["sequential", "interlaced", "golden", "explicit"] = "sequential",
    max_dose: float | None = None,
    min_angles: int = 2,
) -> TomoEstimate:
    """Validate tomography arguments and estimate dose and duration.

    Exactly one of ``n_angles`` / ``angles`` and exactly one of ``dwell`` /
    ``total_dose`` must be given. With ``total_dose`` (Gy) the dwell per
    projection is derived so that the whole tomography gives that dose (dose
    fractionation). ``max_dose`` (default: Howells' ~1e8 Gy per nm at the
    pixel size) is the budget the total may not exceed. ``min_angles`` is
    the fewest explicit angles accepted (1 when resuming a tomography that
    lacks a single angle).

    Bools and strings are not numbers (``dwell=True`` is not 1 s), NaN is
    refused wherever a number is (``max_dose=nan`` would switch the budget
    off), angles closer than ``ANGLE_TOLERANCE`` (1e-3 deg) are repeats, and
    a tomography has at most ``MAX_ANGLES`` (100000) projections.

    Raises
    ------
    ValueError
        naming the bad value, the allowed range and the fix.
    """
    microprobe = check_microprobe(microprobe)
    beam = microprobe.beam_parameters()
    # --- angles
    if (n_angles is None) == (angles is None):
        raise ValueError(
            "give exactly one of n_angles (with angular_range and order) or angles (degrees); "
            f"got n_angles={n_angles!r}, angles={'None' if angles is None else '[...]'}"
        )
    angular_range = _check_angular_range(angular_range)
    resuming = angles is not None and isinstance(order, str) and order == "explicit"  # the rest of a tomography
    if not resuming:
        order = one_of("order", order, ORDERS, fix="Give one of them, e.g. order='golden'.")
    if angles is not None:
        if order in ("interlaced", "golden"):
            raise ValueError(f"order={order!r} orders the angles of n_angles; explicit angles are taken in the "
                             "order given: omit order, or give n_angles instead of angles")
        theta = _check_angles(angles, min_angles)
        low, high = float(theta.min()), float(theta.max())
        if low < 0 or high > angular_range:
            raise ValueError(
                f"angles span [{low:g}, {high:g}] deg, outside the angular range [0, {angular_range:g}] deg; "
                "give angles inside it or raise angular_range (<= 360)"
            )
        order = "explicit"
    else:
        n_angles = _check_n_angles(n_angles)
        theta = tomo_angles(n_angles, angular_range, order)
        if _closest(theta) <= ANGLE_TOLERANCE:
            most = _most_angles(angular_range, order)
            raise ValueError(
                f"n_angles={n_angles} over angular_range={angular_range:g} deg ({order}) puts angles "
                f"{_closest(theta):.2g} deg apart, within {ANGLE_TOLERANCE:g} deg, the tolerance that tells "
                f"projections apart; allowed: at most {most} {order} angles over {angular_range:g} deg. Use fewer "
                "angles or a wider angular_range"
            )
    lo_lim, hi_lim = microprobe.rotation.limits
    if lo_lim < hi_lim and (theta.min() < lo_lim or theta.max() > hi_lim):
        raise ValueError(
            f"angles span [{theta.min():g}, {theta.max():g}] deg, beyond the rotation stage limits "
            f"[{lo_lim:g}, {hi_lim:g}] deg; reduce the angular range"
        )
    # --- field
    shape, pixel_size = microprobe.scanner.check_field(shape, pixel_size)
    check_storable_shape(shape)
    # --- dwell / dose
    if (dwell is None) == (total_dose is None):
        raise ValueError(
            "give exactly one of dwell (s per pixel) or total_dose (Gy for the whole tomography); "
            f"got dwell={dwell!r}, total_dose={total_dose!r}"
        )
    budget = default_dose_budget(pixel_size) if max_dose is None else positive(
        "max_dose", max_dose, unit=" Gy", fix="Give the dose budget of the whole tomography in Gy, e.g. 1e9, or "
        "None for the default (Howells: 1e8 Gy per nm of pixel size).")
    n = len(theta)
    kw = dict(flux=beam["flux"], energy_kev=beam["energy_kev"])
    if total_dose is not None:
        td = number("total_dose", total_dose, allowed="a finite dose > 0 Gy",
                    fix="Give the dose for the whole tomography in Gy, e.g. 2.3e7.")
        if td <= 0:
            raise ValueError(f"total_dose={total_dose!r}: allowed a finite dose > 0 Gy, e.g. 2.3e7")
        dwell = dwell_for_dose(td / n, pixel_size, **kw)
        dwell = check_plan_dwell(
            dwell, f"total_dose={td:.3g} Gy over {n} projections gives this dwell; change total_dose or n_angles"
        )
    else:
        dwell = check_plan_dwell(dwell, "Give seconds, e.g. 3e-3 for 3 ms.")
    per = dose_per_projection(dwell, pixel_size, **kw)
    total = per * n
    if total > budget * (1 + 1e-9):
        raise ValueError(
            f"the tomography would give {total:.3g} Gy ({n} x {per:.3g} Gy), over the dose budget of "
            f"{budget:.3g} Gy; reduce dwell/total_dose or n_angles, or raise max_dose"
        )
    duration = n * microprobe.scanner.map_duration(shape, dwell)
    velocity = float(microprobe.rotation.velocity.get()) or 1.0
    duration += (float(np.abs(np.diff(theta)).sum()) + abs(theta[0] - microprobe.rotation.position)) / velocity
    estimate = TomoEstimate(tuple(float(t) for t in theta), float(dwell), shape, float(pixel_size), per, total,
                            duration, order, angular_range)
    # a resumption's angles are the rest of a checked tomography: a few may span little
    _warn_implausible(estimate, explicit_angles=angles is not None and not resuming)
    return estimate


def _warn_implausible(est: TomoEstimate, *, explicit_angles: bool) -> None:
    """:class:`PlausibilityWarning` for a dwell, a duration or angles that are legal but likely slips."""
    cost = f"{est.n_angles} projections would take {est.duration / 3600:.3g} h and give {est.total_dose:.3g} Gy"
    if est.dwell > PLAUSIBLE_DWELL:
        warn(f"dwell={est.dwell:g} s per pixel is unusually long (microprobes dwell 1e-3..{PLAUSIBLE_DWELL:g} "
             f"s): {cost}. If you meant {est.dwell:g} ms, give dwell={est.dwell * 1e-3:g}",
             PlausibilityWarning, stacklevel=3)
    elif est.duration > PLAUSIBLE_DURATION:
        warn(f"the tomography is long: {cost}; check dwell, shape and n_angles", PlausibilityWarning,
             stacklevel=3)
    theta = np.asarray(est.angles)
    span = float(np.ptp(theta))
    if explicit_angles and theta.size > 8 and span <= 2 * np.pi + 1e-6:
        warn(f"the {theta.size} angles span only {span:.3g} deg: angles are in degrees; if these are "
             "radians, np.rad2deg converts them (as given, the tomography sees the specimen from one "
             "direction)", PlausibilityWarning, stacklevel=3)
