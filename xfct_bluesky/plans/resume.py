"""Resuming an interrupted tomography: the planned angles a stored run lacks."""

from __future__ import annotations

import numpy as np

#: Start-document keys of an interrupted tomography that its resumption writes anew rather than copies.
_NOT_CARRIED = frozenset({
    "uid", "time", "scan_id", "versions", "plan_name", "plan_args", "plan_type", "plan_pattern",
    "plan_pattern_module", "plan_pattern_args", "num_points", "num_intervals", "detectors", "motors", "hints",
    "angles", "n_angles", "total_dose", "estimated_duration", "dose_per_projection", "simulation", "theta_key",
    "quantities", "energy", "flux", "spot_size", "units", "resumed_from", "planned_angles", "resumed_angles",
})


#: Angles closer than this (deg) count as the same projection when resuming.
ANGLE_TOLERANCE = 1e-3


def _missing_angles(resume, catalog, microprobe) -> tuple[dict, np.ndarray]:
    """The interrupted run's start document and the planned angles it lacks (in planned order)."""
    from ..quantities import recorded_theta_key
    from ..storage.reading import load_theta

    run = resume
    if not isinstance(resume, str) and not hasattr(resume, "metadata"):
        raise ValueError(f"resume={resume!r} is neither a run's uid nor a run; allowed: the uid string of the "
                         "interrupted xfct_tomo run (with catalog=) or the run itself. Give resume='<uid>', "
                         "catalog=cat or resume=cat['<uid>'] (xfct-bluesky ls lists the uids; a scan_id is not one)")
    if isinstance(resume, str):
        if catalog is None:
            raise ValueError(f"resume={resume!r} is a uid: give catalog= (e.g. the session's cat) to find it, "
                             "or pass the run itself, resume=cat[uid]")
        try:
            run = catalog[resume]
        except KeyError:
            raise ValueError(f"resume={resume!r}: no such run in the catalog; check the uid (xfct-bluesky ls)") \
                from None
    start = dict(getattr(run, "metadata", {}).get("start") or {})
    if start.get("plan_name") != "xfct_tomo":
        raise ValueError(f"resume: run {start.get('uid', resume)!r} is a {start.get('plan_name')!r} run, not an "
                         "xfct_tomo; only a tomography can be resumed")
    planned = np.asarray(start["angles"], dtype=float)
    acquired = load_theta(run)  # the rotation angle as load_tomo finds it
    done = np.zeros(planned.size, bool)
    if acquired.size:
        done = np.abs(planned[:, None] - acquired[None, :]).min(axis=1) <= ANGLE_TOLERANCE
    missing = planned[~done]
    if missing.size == 0:
        raise ValueError(f"resume: run {start['uid']!r} already has all {planned.size} angles; nothing to resume")
    rotation = recorded_theta_key(start)
    if rotation not in (None, microprobe.rotation.name):
        raise ValueError(f"resume: run {start['uid']!r} was taken with rotation {rotation!r}, this "
                         f"microprobe's is {microprobe.rotation.name!r}; resume with the same hardware")
    return start, missing
