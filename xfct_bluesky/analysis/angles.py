"""The angles of a tomography: checked once, at the entry points, with the consequence of what is wrong.

:func:`check_theta` is the array check every entry point makes (finite
degrees, one per projection; angles that look like radians are logged);
:func:`angle_problems` names what is wrong with a set of parallel-beam
angles (one direction only is refused; repeated angles and a missing wedge
are reported with their consequence); :func:`check_angles` warns about
those problems once per entry point (never inside :func:`angles_checked`,
which an entry point that warned runs the functions it calls in).
:func:`fold_angles` and :func:`angular_steps` measure the sampling.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging

import numpy as np

from .._warnings import warn
from ..validate import angles as _finite_angles

logger = logging.getLogger(__name__)

#: A gap between successive angles folded into [0, 180) wider than WEDGE_STEPS median steps and
#: WEDGE_MIN_DEG degrees is a missing wedge (a limited angular range), not sparse sampling: golden-angle
#: and interlaced sets stay within 1.6 median steps (a random set of 24 angles can leave a real 28-degree
#: hole, and is warned about).
WEDGE_STEPS = 4.0
WEDGE_MIN_DEG = 20.0
#: Angles closer than this (deg, modulo 360) are the same angle.
SAME_ANGLE_DEG = 1e-6
_ANGLES_CHECKED = contextvars.ContextVar("xfct_angles_checked", default=False)


def fold_angles(theta) -> np.ndarray:
    """Angles folded into [0, 180): parallel projections 180 degrees apart see the same lines."""
    return np.mod(np.asarray(theta, float), 180.0)


def angular_steps(theta) -> tuple[float, float, int]:
    """(median step, largest gap, distinct angles) of the angles folded into [0, 180), degrees."""
    t = np.unique(np.round(fold_angles(theta), 6))
    if t.size < 2:
        return 180.0, 180.0, int(t.size)
    gaps = np.diff(np.concatenate([t, [t[0] + 180.0]]))
    return float(np.median(gaps)), float(gaps.max()), int(t.size)


def angle_problems(theta) -> list[str]:
    """What is wrong with a set of parallel-beam angles (degrees), one sentence each: [] when nothing.

    Repeated angles (the same modulo 360: each counts twice) and a limited
    angular range (a gap of more than ``WEDGE_STEPS`` median steps and
    ``WEDGE_MIN_DEG`` degrees between successive angles folded into
    [0, 180): a missing wedge) are reported with their consequence.

    Raises
    ------
    ValueError
        When the angles see the specimen from fewer than two directions
        (all identical modulo 180): there is nothing to reconstruct or align.
    """
    theta = np.asarray(theta, float).ravel()
    folded = np.unique(np.mod(np.round(theta / SAME_ANGLE_DEG) * SAME_ANGLE_DEG, 180.0))
    if folded.size < 2:
        raise ValueError(f"the {theta.size} angles are all one direction ({folded[0]:g} deg modulo 180; "
                         f"theta[0] = {theta[0]:g} deg): a tomography needs projections from different directions; "
                         "allowed: at least 2 distinct angles modulo 180, spread over 180 degrees. Check the "
                         "recorded rotation angles")
    out = []
    same = np.round(np.mod(theta, 360.0) / SAME_ANGLE_DEG).astype(np.int64)
    _, inverse, counts = np.unique(same, return_inverse=True, return_counts=True)
    if np.any(counts > 1):
        groups = [np.flatnonzero(inverse == g) for g in np.flatnonzero(counts > 1)]
        listed = "; ".join(f"{theta[g[0]]:g} deg at projections {', '.join(map(str, g[:6]))}"
                           f"{' ...' if g.size > 6 else ''}" for g in groups[:4])
        more = f"; and {len(groups) - 4} more" if len(groups) > 4 else ""
        out.append(f"{int(np.sum(counts[counts > 1] - 1))} of the {theta.size} angles repeat another ({listed}"
                   f"{more}): a repeated direction counts twice (filtered back-projection weights every "
                   "projection alike) and tells nothing new. If they are re-measurements, average or drop them; "
                   "if not, the recorded angles are wrong (a stage that did not move, a resumed scan)")
    gaps = np.diff(np.concatenate([folded, [folded[0] + 180.0]]))
    step, widest = float(np.median(gaps)), int(np.argmax(gaps))
    gap = float(gaps[widest])
    if gap > max(WEDGE_STEPS * step, WEDGE_MIN_DEG):
        start = float(folded[widest])
        mid = (start + gap / 2) % 180.0
        out.append(f"the angles cover only {180 - gap:.0f} of the 180 degrees a parallel-beam tomography needs: "
                   f"nothing between {start:.1f} and {(start + gap) % 180:.1f} deg (modulo 180), a gap of "
                   f"{gap:.0f} deg against a median step of {step:.2f} deg. Consequence: a {gap - step:.0f}-degree "
                   f"missing wedge: features are elongated and streaked along the directions those angles "
                   f"would have measured (around {mid:.0f} deg), and edges facing them are lost. Acquire angles "
                   "over the full 180 (or 360) degrees"
                   + (f" (theta spans {np.ptp(theta):.3g}: if it is in radians, np.rad2deg converts it)"
                      if np.ptp(theta) <= 2 * np.pi + 1e-6 else ""))
    return out


def check_angles(theta, category: type[Warning], what: str, *, stacklevel: int = 3) -> list[str]:
    """Warn (``category``) about :func:`angle_problems` of ``theta``, once per entry point.

    Nothing is warned inside :func:`angles_checked` (the caller has warned
    already). ``what`` names the entry point ("FBP", "the alignment").
    Returns the messages warned.
    """
    problems = angle_problems(theta)
    if _ANGLES_CHECKED.get():
        return []
    for text in problems:
        warn(f"{what}: {text}", category, stacklevel=stacklevel)
    return [f"{what}: {text}" for text in problems]


@contextlib.contextmanager
def angles_checked():
    """Within this context :func:`check_angles` warns nothing: an entry point that warned once about its
    angles runs the functions it calls (which check them too) inside it."""
    token = _ANGLES_CHECKED.set(True)
    try:
        yield
    finally:
        _ANGLES_CHECKED.reset(token)


def looks_like_radians(theta: np.ndarray) -> bool:
    """More than 8 angles spanning at most 2 pi "degrees": the likelier reading is radians."""
    span = float(np.ptp(theta)) if theta.size else 0.0
    return theta.size > 8 and 0 < span <= 2 * np.pi + 1e-6


def check_theta(theta, n: int | None = None, *, what: str = "projections") -> np.ndarray:
    """``theta`` as float64 (n,) finite degrees, at least 2 (:func:`xfct_bluesky.validate.angles`), else
    ValueError; angles that look like radians are logged as such (a 6-degree scan is the less likely)."""
    arr = _finite_angles("theta", theta, n=n, what=what)
    if looks_like_radians(arr):
        logger.warning("theta spans only %.3g degrees: theta is in degrees, not radians "
                       "(np.rad2deg converts)", float(np.ptp(arr)))
    return arr
