"""Suspenders: what the RunEngine does when the beam goes away.

A tomography of a night meets beam dumps. :func:`beam_loss_suspender` watches
the storage-ring current (or an I0 monitor): below ``threshold`` the
RunEngine suspends, closes the shutter (no dose without data), waits until
the beam is back above ``resume_threshold`` for ``sleep`` seconds, opens the
shutter and repeats the projection that was interrupted (plans put a
checkpoint before and after every projection, so a map is never lost and
never taken twice).
"""

import bluesky.plan_stubs as bps
from bluesky.suspenders import SuspendFloor

from ..validate import non_negative


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
    elif not all(callable(getattr(signal, attr, None)) for attr in ("get", "subscribe")):
        raise ValueError(f"signal={signal!r}: allowed an ophyd Signal to watch (ring current or I0), e.g. "
                         "signal=microprobe.beam_current; give the signal, not its value")
    if not isinstance(tripped_message, str):
        raise ValueError(f"tripped_message={tripped_message!r}: allowed a string, printed when the RunEngine "
                         "suspends; e.g. tripped_message='beam dump'")
    threshold = non_negative("threshold", threshold,
                             fix="Give the current (or I0) below which the beam counts as lost, e.g. 10.")
    resume = threshold if resume_threshold is None else non_negative(
        "resume_threshold", resume_threshold, fix="Give the level above which the beam counts as back, e.g. 20.")
    if resume < threshold:
        raise ValueError(f"resume_threshold={resume!r} is below threshold={threshold!r}: allowed "
                         f">= threshold; raise it or lower threshold")
    sleep = non_negative("sleep", sleep, unit=" s",
                         fix="Give the seconds the beam must be back before resuming, e.g. 60.")
    shutter = microprobe.shutter

    def close():
        yield from bps.mv(shutter, "close")

    def reopen():
        yield from bps.mv(shutter, "open")

    return SuspendFloor(signal, threshold, resume_thresh=resume, sleep=sleep, pre_plan=close, post_plan=reopen,
                        tripped_message=tripped_message or f"beam lost ({signal.name} < {threshold:g})")
