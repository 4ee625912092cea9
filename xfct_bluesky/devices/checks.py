"""Checks the simulated and the EPICS devices share, so both refuse the same things the same way.

The field checks (shape, pixel size, dwell, the stage travel) are the
simulator's own (:func:`~xfct_bluesky.physics.microprobe.check_field`,
``check_dwell``, ``check_travel``), which the IOC makes too.
"""

from __future__ import annotations

from ophyd.utils import LimitError

from ..validate import number
from .channels import release


def check_position(motor, pos) -> None:
    """Refuse what is not one finite number (:func:`~xfct_bluesky.validate.number`: NaN, a bool, a string) and a
    position outside ``motor.limits``, naming them (``LimitError``)."""
    value = number(f"{motor.name} position", pos, allowed=f"a finite position in {motor.egu}",
                   fix=f"Give a number in {motor.egu}.")
    low, high = motor.limits
    if low < high and not low <= value <= high:
        raise LimitError(
            f"{motor.name}: position {value:g} {motor.egu} is outside the travel limits "
            f"[{low:g}, {high:g}] {motor.egu}; choose a position within them"
        )



def connect_records(device, config, timeout: float, what: str) -> None:
    """Wait ``timeout`` s for ``device`` (built on ``config``'s records) to connect; else destroy it and raise
    TimeoutError naming ``what`` and the command that lists which PVs answer."""
    try:
        device.wait_for_connection(timeout=timeout)
    except TimeoutError as err:
        release(device)
        raise TimeoutError(f"{config.beamline}: {what} did not connect within {timeout:g} s ({err}); "
                           f"`xfct-bluesky check --beamline {config.path}` lists which PVs answer") from None
