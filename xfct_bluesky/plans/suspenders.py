"""Suspenders: what the RunEngine does when the beam goes away.

A tomography of a night meets beam dumps. :func:`beam_loss_suspender` watches
the storage-ring current (or an I0 monitor): below ``threshold`` the
RunEngine suspends, closes the shutter (no dose without data), waits until
the beam is back above ``resume_threshold`` for ``sleep`` seconds, opens the
shutter and repeats the projection that was interrupted (plans put a
checkpoint before and after every projection, so a map is never lost and
never taken twice).
"""

from __future__ import annotations

import math

import bluesky.plan_stubs as bps
from bluesky.suspenders import SuspendFloor


def _number(name: str, value, fix: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}={value!r}: allowed a finite number >= 0. {fix}")
    return v


def beam_loss_suspender(
    microprobe,
    *,
    signal=None,
    threshold: float = 10.0,
    resume_threshold: float | None = None,
    sleep: float = 60.0,
    tripped_message: str = "",
) -> SuspendFloor:
    """Suspend while the beam is lost; close the shutter meanwhile, reopen it after.

    Parameters
    ----------
    microprobe : Microprobe
        Its ``shutter`` is closed while suspended and opened before resuming.
    signal : ophyd Signal, optional
        What to watch; default ``microprobe.beam_current`` (storage-ring
        current, mA). An I0 monitor works too, with a threshold in its units.
    threshold : float
        Suspend when ``signal`` falls below this (10 mA by default).
    resume_threshold : float, optional
        Resume when it is back above this; default ``threshold`` (must be
        >= ``threshold``).
    sleep : float
        Seconds the beam must be back before resuming (thermal settling of
        the optics; 60 s by default).
    tripped_message : str
        Added to what the RunEngine prints when it suspends.

    Returns
    -------
    bluesky.suspenders.SuspendFloor
        Install it with ``RE.install_suspender(...)``.

    Examples
    --------
    >>> RE.install_suspender(beam_loss_suspender(mp, threshold=10, sleep=60))
    """
    if signal is None:
        signal = getattr(microprobe, "beam_current", None)
        if signal is None:
            raise ValueError("this microprobe has no beam_current signal: pass signal= (ring current or I0)")
    threshold = _number("threshold", threshold, "Give the current (or I0) below which the beam counts as lost.")
    resume = threshold if resume_threshold is None else _number(
        "resume_threshold", resume_threshold, "Give the level above which the beam counts as back.")
    if resume < threshold:
        raise ValueError(f"resume_threshold={resume!r} is below threshold={threshold!r}: allowed "
                         f">= threshold; raise it or lower threshold")
    sleep = _number("sleep", sleep, "Give the seconds the beam must be back before resuming, e.g. 60.")
    shutter = microprobe.shutter

    def close():
        yield from bps.mv(shutter, "close")

    def reopen():
        yield from bps.mv(shutter, "open")

    return SuspendFloor(signal, threshold, resume_thresh=resume, sleep=sleep, pre_plan=close, post_plan=reopen,
                        tripped_message=tripped_message or f"beam lost ({signal.name} < {threshold:g})")
