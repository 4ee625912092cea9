"""Taking one map inside a plan: trigger with a timeout, retry a hung or failed detector, then read."""

import logging
import uuid

import bluesky.plan_stubs as bps
from bluesky.utils import FailedStatus, MsgGenerator

from ..validate import integer, number

logger = logging.getLogger(__name__)

#: Default tries after a map that times out or fails, before the plan stops.
DEFAULT_RETRIES = 2


class DetectorTimeout(RuntimeError):
    """The fly scanner did not deliver a map after all its retries."""


def check_retry_options(detector_timeout, retries) -> tuple[float | None, int]:
    """``detector_timeout`` (None or seconds > 0) and ``retries`` (an integer >= 0), checked and normalised."""
    retries = integer("retries", retries, low=0, fix="Give how many times a failed map is tried again, e.g. 2.")
    if detector_timeout is not None:
        allowed, fix = "None (automatic) or seconds > 0", "Give the seconds a map may take, e.g. 60."
        t = number("detector_timeout", detector_timeout, allowed=allowed, fix=fix)
        if t <= 0:
            raise ValueError(f"detector_timeout={detector_timeout!r}: allowed {allowed}. {fix}")
        detector_timeout = t
    return detector_timeout, retries


def map_timeout(scanner, shape, dwell, detector_timeout) -> float:
    """Seconds a map may take before it counts as hung: 3x its duration plus 30 s unless given."""
    if detector_timeout is not None:
        return float(detector_timeout)
    return 3 * scanner.map_duration(shape, dwell) + 30.0


def acquire_map(scanner, rotation, timeout: float, retries: int) -> MsgGenerator:
    """Trigger one map and read it into ``primary``; retry a map that times out or fails.

    The event is only created once the map is complete, so a failed try
    leaves no trace in the run; after ``retries`` failed tries the plan
    stops with :class:`DetectorTimeout`, everything acquired so far stored.
    """
    for attempt in range(retries + 1):
        group = f"{scanner.name}-map-{uuid.uuid4().hex[:8]}"
        try:
            yield from bps.trigger(scanner, group=group)
            yield from bps.wait(group=group, timeout=timeout)
        except (TimeoutError, FailedStatus) as exc:
            status = exc.args[0] if exc.args else None
            cause = status.exception() if hasattr(status, "exception") else None
            problem = (f"no map within {timeout:.3g} s" if isinstance(exc, TimeoutError)
                       else f"the map failed ({cause or exc})")
            yield from bps.stop(scanner)
            theta = yield from bps.rd(rotation)  # where the stage is, read by a message as the RunEngine runs
            if attempt == retries:
                raise DetectorTimeout(
                    f"{scanner.name}: {problem} at theta={theta:.3f} deg after {retries + 1} "
                    f"tries; the plan stopped. Every map acquired before is stored in this run. Check the "
                    "detector, then resume the tomography with xfct_tomo(..., resume=<this run>)."
                ) from exc
            logger.warning("%s: %s at theta=%.3f deg; trying again (%d of %d)", scanner.name, problem, theta,
                           attempt + 1, retries)
            continue
        break
    yield from bps.create("primary")
    yield from bps.read(scanner)
    yield from bps.read(rotation)
    yield from bps.save()
