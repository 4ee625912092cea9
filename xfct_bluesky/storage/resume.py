"""Where an interrupted tomography stopped: the stored run ``resume=`` names, and the planned angles it lacks.

``xfct_tomo(..., resume=...)`` calls :func:`angles_to_resume` when it is
called, before it returns its generator: the plan itself only yields
messages and never reads Tiled.
"""

import numbers
from typing import Any

import numpy as np

from .reading import load_theta


def find_run(resume: Any, catalog: Any) -> Any:
    """The stored run ``resume`` names in ``catalog``.

    Parameters
    ----------
    resume : str, int or run
        A uid (or its first 5 or more characters), a scan_id (int > 0: the
        latest run with it), a negative int (``-1``: the last run, as
        ``cat[-1]``), or the run itself (returned as is).
    catalog : tiled container of runs, or None
        Where to look (the session's ``cat``); not needed for a run.

    Raises
    ------
    ValueError
        naming ``resume``, what it may be and the fix.
    """
    if hasattr(resume, "metadata") and not isinstance(resume, str | numbers.Number):
        return resume
    if isinstance(resume, bool) or not isinstance(resume, str | numbers.Integral) or resume == 0:
        raise ValueError(f"resume={resume!r} is neither a run's uid, a scan_id nor a run; allowed: the uid string "
                         "of the interrupted xfct_tomo run, its scan_id (an int > 0; -1 is the last run) or, in "
                         "Python, the run itself. Give resume='<uid>', resume=<scan_id> or resume=cat['<uid>'] "
                         "(xfct-bluesky ls lists both)")
    what = "a uid" if isinstance(resume, str) else "a scan_id" if resume > 0 else "an index from the last run"
    if catalog is None:
        raise ValueError(f"resume={resume!r} is {what}: give catalog= (e.g. the session's cat) to find it, open a "
                         "Session (its catalog is searched), or pass the run itself, resume=cat[...]")
    if isinstance(catalog, str | bytes | numbers.Number) or not hasattr(catalog, "__getitem__"):
        raise ValueError(f"catalog={catalog!r}: allowed a Tiled container of runs (e.g. the session's cat); "
                         "through the queue server, omit it: the active session's catalog is searched")
    key = resume if isinstance(resume, str) else int(resume)
    try:
        return catalog[key]
    except (KeyError, IndexError):
        raise ValueError(f"resume={resume!r}: no such run in the catalog; check the {what.removeprefix('a ')} "
                         "(xfct-bluesky ls lists uids and scan_ids)") from None
    except ValueError as exc:  # a partial uid too short or matching several runs
        raise ValueError(f"resume={resume!r}: {exc}") from None


def angles_to_resume(run: Any, *, tolerance: float) -> tuple[dict[str, Any], np.ndarray]:
    """An interrupted ``xfct_tomo`` run's start document and the planned angles it lacks, in planned order.

    A planned angle counts as done when a stored projection lies within
    ``tolerance`` degrees of it.

    Raises
    ------
    ValueError
        if the run is not an ``xfct_tomo``, or already has every angle.
    """
    start = dict(run.metadata.get("start") or {})
    if start.get("plan_name") != "xfct_tomo":
        raise ValueError(f"resume: run {start.get('uid')!r} is a {start.get('plan_name')!r} run, not an "
                         "xfct_tomo; only a tomography can be resumed")
    planned = np.asarray(start["angles"], dtype=float)
    acquired = load_theta(run)  # the rotation angle as load_tomo finds it
    done = np.zeros(planned.size, bool)
    if acquired.size:
        done = np.abs(planned[:, None] - acquired[None, :]).min(axis=1) <= tolerance
    missing = planned[~done]
    if missing.size == 0:
        raise ValueError(f"resume: run {start['uid']!r} already has all {planned.size} angles; nothing to resume")
    return start, missing
