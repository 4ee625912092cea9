"""Plan arithmetic: angles, dwell from a dose budget, dose and duration estimates.

Everything here is checked before a plan yields its first message, so bad
arguments raise a ``ValueError`` that names the value, the allowed range and
the fix, before any motor moves or any document is emitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..physics.dose import dose_per_projection, dwell_for_dose

ORDERS = ("sequential", "interlaced", "golden")
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
    if order not in ORDERS:
        raise ValueError(f"order={order!r} is not known; allowed: {', '.join(map(repr, ORDERS))}")
    if isinstance(n_angles, bool) or not float(n_angles).is_integer() or int(n_angles) < 2:
        raise ValueError(f"n_angles={n_angles!r}: allowed an integer >= 2; a tomography needs at least two angles")
    n = int(n_angles)
    rng = float(angular_range)
    if not math.isfinite(rng) or not 0 < rng <= 360:
        raise ValueError(f"angular_range={angular_range!r}: allowed (0, 360] degrees; 180 is usual")
    if order == "sequential":
        return np.arange(n) * (rng / n)
    if order == "golden":
        return np.mod(np.arange(n) * rng * (math.sqrt(5) - 1) / 2, rng)
    loops = min(INTERLACED_LOOPS, n)
    step = rng / n * loops  # each loop covers the range with n/loops angles
    offsets = [0, 2, 1, 3][:loops] if loops == 4 else list(range(loops))
    out = []
    per_loop = [len(range(k, n, loops)) for k in range(loops)]
    for loop, k in enumerate(offsets):
        m = per_loop[loop]
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

    def __str__(self) -> str:
        h, rem = divmod(self.duration, 3600)
        return (
            f"{self.n_angles} projections of {self.shape[0]}x{self.shape[1]} px at {self.pixel_size * 1e9:.0f} nm, "
            f"{self.dwell * 1e3:.3g} ms/px ({self.order}, {self.angular_range:g} deg); dose "
            f"{self.dose_per_projection:.3g} Gy per projection, {self.total_dose:.3g} Gy in total; "
            f"about {int(h)} h {rem / 60:.0f} min"
        )


def _check_dwell(dwell: float, fix: str) -> float:
    try:
        d = float(dwell)
    except (TypeError, ValueError):
        raise ValueError(f"dwell={dwell!r} is not a number; allowed {MIN_DWELL:g}..{MAX_DWELL:g} s. {fix}") from None
    if not math.isfinite(d) or not MIN_DWELL <= d <= MAX_DWELL:
        raise ValueError(f"dwell={dwell!r} s is out of range; allowed {MIN_DWELL:g}..{MAX_DWELL:g} s per pixel. {fix}")
    return d


def estimate_tomo(
    microprobe,
    *,
    shape,
    pixel_size: float,
    n_angles: int | None = None,
    angles: Sequence[float] | None = None,
    dwell: float | None = None,
    total_dose: float | None = None,
    angular_range: float = 180.0,
    order: str = "sequential",
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

    Raises
    ------
    ValueError
        naming the bad value, the allowed range and the fix.
    """
    beam = microprobe.beam_parameters()
    # --- angles
    if (n_angles is None) == (angles is None):
        raise ValueError(
            "give exactly one of n_angles (with angular_range and order) or angles (degrees); "
            f"got n_angles={n_angles!r}, angles={'None' if angles is None else '[...]'}"
        )
    if angles is not None:
        arr = np.asarray(angles, dtype=float).ravel()
        if arr.size < min_angles:
            raise ValueError(f"angles has {arr.size} value(s); allowed: at least {min_angles} angles for a tomography")
        if not np.all(np.isfinite(arr)):
            raise ValueError("angles contains NaN or infinity; give finite angles in degrees")
        low, high = float(arr.min()), float(arr.max())
        if low < 0 or high > angular_range:
            raise ValueError(
                f"angles span [{low:g}, {high:g}] deg, outside the angular range [0, {angular_range:g}] deg; "
                "give angles inside it or raise angular_range (<= 360)"
            )
        theta = arr
        order = "explicit"
    else:
        theta = tomo_angles(n_angles, angular_range, order)
    lo_lim, hi_lim = microprobe.rotation.limits
    if lo_lim < hi_lim and (theta.min() < lo_lim or theta.max() > hi_lim):
        raise ValueError(
            f"angles span [{theta.min():g}, {theta.max():g}] deg, beyond the rotation stage limits "
            f"[{lo_lim:g}, {hi_lim:g}] deg; reduce the angular range"
        )
    # --- field
    shape, pixel_size = microprobe.scanner.check_field(shape, pixel_size)
    # --- dwell / dose
    if (dwell is None) == (total_dose is None):
        raise ValueError(
            "give exactly one of dwell (s per pixel) or total_dose (Gy for the whole tomography); "
            f"got dwell={dwell!r}, total_dose={total_dose!r}"
        )
    n = len(theta)
    kw = dict(flux=beam["flux"], energy_kev=beam["energy_kev"])
    if total_dose is not None:
        try:
            td = float(total_dose)
        except (TypeError, ValueError):
            td = float("nan")
        if not math.isfinite(td) or td <= 0:
            raise ValueError(f"total_dose={total_dose!r}: allowed a finite dose > 0 Gy, e.g. 2.3e7")
        dwell = dwell_for_dose(td / n, pixel_size, **kw)
        dwell = _check_dwell(
            dwell, f"total_dose={td:.3g} Gy over {n} projections gives this dwell; change total_dose or n_angles"
        )
    else:
        dwell = _check_dwell(dwell, "Give seconds, e.g. 3e-3 for 3 ms.")
    per = dose_per_projection(dwell, pixel_size, **kw)
    total = per * n
    budget = default_dose_budget(pixel_size) if max_dose is None else float(max_dose)
    if total > budget * (1 + 1e-9):
        raise ValueError(
            f"the tomography would give {total:.3g} Gy ({n} x {per:.3g} Gy), over the dose budget of "
            f"{budget:.3g} Gy; reduce dwell/total_dose or n_angles, or raise max_dose"
        )
    duration = n * microprobe.scanner.map_duration(shape, dwell)
    velocity = float(microprobe.rotation.velocity.get()) or 1.0
    duration += (float(np.abs(np.diff(theta)).sum()) + abs(theta[0] - microprobe.rotation.position)) / velocity
    return TomoEstimate(tuple(float(t) for t in theta), float(dwell), shape, float(pixel_size), per, total,
                        duration, order, float(angular_range))
