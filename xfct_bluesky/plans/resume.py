"""Resuming an interrupted tomography: which run, which angles, and what its resumption carries over.

The stored run is read by :mod:`xfct_bluesky.storage.resume` when the plan
is called; nothing here runs inside a plan's generator.
"""

from typing import Any

import numpy as np

#: Start-document keys of an interrupted tomography that its resumption writes anew rather than copies.
NOT_CARRIED = frozenset({
    "uid", "time", "scan_id", "versions", "plan_name", "plan_args", "plan_type", "plan_pattern",
    "plan_pattern_module", "plan_pattern_args", "num_points", "num_intervals", "detectors", "motors", "hints",
    "angles", "n_angles", "total_dose", "estimated_duration", "dose_per_projection", "simulation", "theta_key",
    "quantities", "energy", "flux", "spot_size", "units", "resumed_from", "planned_angles", "resumed_angles",
})


#: Angles closer than this (deg) count as the same projection when resuming.
ANGLE_TOLERANCE = 1e-3


def active_catalog() -> Any:
    """The raw catalog of the active :class:`~xfct_bluesky.session.Session` (``Session.current()``), or None."""
    from ..session import Session

    session = Session.current()
    return None if session is None else session.catalog


def missing_angles(resume: Any, catalog: Any, microprobe: Any) -> tuple[dict[str, Any], np.ndarray]:
    """The interrupted run's start document and the planned angles it lacks (in planned order).

    ``resume`` is found in ``catalog``, else in the active session's catalog
    (see :func:`~xfct_bluesky.storage.resume.find_run`); the run must have
    been taken with this microprobe's rotation stage.
    """
    from ..quantities import recorded_theta_key
    from ..storage.resume import angles_to_resume, find_run

    run = find_run(resume, catalog if catalog is not None else active_catalog())
    start, missing = angles_to_resume(run, tolerance=ANGLE_TOLERANCE)
    rotation = recorded_theta_key(start)
    if rotation not in (None, microprobe.rotation.name):
        raise ValueError(f"resume: run {start['uid']!r} was taken with rotation {rotation!r}, this "
                         f"microprobe's is {microprobe.rotation.name!r}; resume with the same hardware")
    return start, missing
