"""Bluesky plans for fly-scanned XRF maps and low-dose XRF tomography.

Each plan is a plain function that checks every argument, ``md`` included,
when it is called (``ValueError`` naming the value, the allowed range and
the fix) and only then returns the plan's generator: a bad plan fails before
any motor moves, any file is opened or any document is emitted, even before
it reaches a RunEngine. Running it (``RE(plan)``) returns the run's uid, as
the generator does.

Inside, each is one run made of bluesky's own plans: ``scan_nd`` over the
rotation (the dwell series also over the dwell) or, for a map where the
stage is, ``count``, with one per-step hook (a checkpoint and the move, one
map with retries, a checkpoint); stage positions in a ``baseline`` stream,
maps in ``primary`` (one event per map), full spectra external in HDF5.
Whatever happens, the shutter closes (``finalize_wrapper``) and the rotation
stage returns to where it was when the plan first moved it
(``reset_positions_wrapper``).

The plans are marked as plans (``bluesky.utils.is_plan``) and their hints are
objects from builtins, ``typing``, ``collections.abc`` and
``bluesky.protocols`` (no ``from __future__ import annotations``): the
queue server's validation evaluates them, and turns a device's name into
the device for ``microprobe``.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator
from cycler import Cycler, cycler

from ..physics.dose import dose_per_projection
from ..quantities import is_quantity
from ..validate import number
from ._checks import check_md, check_microprobe, check_storable_shape, plain
from .acquire import DEFAULT_RETRIES, acquire_map, check_retry_options, map_timeout
from .planning import check_plan_dwell, estimate_tomo
from .resume import NOT_CARRIED, missing_angles

logger = logging.getLogger(__name__)

UNITS = {
    "energy": "keV",
    "flux": "photons/s",
    "spot_size": "m (horizontal, vertical FWHM)",
    "pixel_size": "m",
    "dwell": "s per pixel",
    "dwells": "s per pixel",
    "angles": "deg",
    "theta": "deg",
    "dose_per_projection": "Gy",
    "total_dose": "Gy",
    "estimated_duration": "s",
    "angular_range": "deg",
}


def _plan(func: Callable) -> Callable:
    """Mark ``func`` a plan for ``bluesky.utils.is_plan`` (what the queue server lists), with the attribute
    that function documents. Not bluesky's ``@plan`` decorator: its ``Plan`` calls the function in its
    ``__init__``, and when our checks raise there, ``Plan.__del__`` fails on the half-made object (an
    unraisable AttributeError for every refused call)."""
    func._is_plan_ = True
    return func


def _quantities(microprobe) -> dict[str, str]:
    """{quantity name: data key} of the run (:mod:`xfct_bluesky.quantities`): the rotation angle, and each
    map the scanner reads, by its component's name (``Zn`` -> ``microprobe_scanner_Zn``)."""
    scanner = microprobe.scanner
    maps = {attr: getattr(scanner, attr).name for attr in scanner.read_attrs if is_quantity(attr)}
    return {"theta": microprobe.rotation.name, **maps}


def _common_md(microprobe, plan_name: str, plan_args: dict) -> dict[str, Any]:
    beam = microprobe.beam_parameters()
    md: dict[str, Any] = {
        "plan_name": plan_name,
        "plan_args": plan_args,
        "detectors": [microprobe.scanner.name],
        "motors": [microprobe.rotation.name],
        "theta_key": microprobe.rotation.name,
        "quantities": _quantities(microprobe),
        "energy": beam["energy_kev"],
        "flux": beam["flux"],
        "spot_size": list(beam["spot_fwhm"]),
        "units": dict(UNITS),
        "hints": {"dimensions": [([microprobe.rotation.name], "primary")]},
    }
    sim_md = getattr(microprobe, "simulation_metadata", None)
    if sim_md is not None:
        md["simulation"] = sim_md()
        md["sample"] = md["simulation"]["specimen"]
    return md


def _configure(scanner, shape, pixel_size, dwell) -> MsgGenerator:
    yield from bps.mv(
        scanner.num_rows, int(shape[0]),
        scanner.num_cols, int(shape[1]),
        scanner.pixel_size, float(pixel_size),
        scanner.dwell, float(dwell),
    )


def _baseline_devices(microprobe) -> list:
    return [microprobe.rotation, microprobe.zone_plate, microprobe.shutter]


def _theta(microprobe, theta) -> float:
    """A rotation angle (deg): a finite number within the stage's limits."""
    theta = number("theta", theta, allowed="a finite angle in degrees", fix="Give the rotation angle, e.g. 45.")
    microprobe.rotation.check_value(theta)
    return theta


def _start_md(microprobe, plan_name: str, plan_args: dict, plan_md: dict, md, *, carried: dict | None = None,
              also_written: tuple[str, ...] = ()) -> dict[str, Any]:
    """The start document's metadata: what the plan records, what a resumed run carries over, then the
    user's ``md``, checked (:func:`~._checks.check_md`): it may not set what the plan records."""
    _md = _common_md(microprobe, plan_name, plan_args)
    _md.update(plan_md)
    user = check_md(md, plan=plan_name, written=[*_md, *also_written])
    return plain({**_md, **(carried or {})}, "start") | user  # numpy values from a device become plain Python


def _per_step(microprobe, timeout_of: Callable[[Mapping], float], retries: int) -> Callable[..., MsgGenerator]:
    """The scans' per-step hook (bluesky's ``per_step(detectors, step, pos_cache)``): a checkpoint and the
    step's moves (``bps.move_per_step``), one map with ``retries`` (timeout ``timeout_of(step)`` s), a
    checkpoint."""
    scanner, rotation = microprobe.scanner, microprobe.rotation

    def per_step(detectors, step, pos_cache):
        yield from bps.move_per_step(step, pos_cache)
        yield from acquire_map(scanner, rotation, timeout_of(step), retries)
        # a pause or suspension rewinds to the last checkpoint: the map in flight is taken again,
        # and with this one the map just saved never is
        yield from bps.checkpoint()

    return per_step


def _run(microprobe, md: dict[str, Any], field: tuple, steps: Cycler | None, per_step) -> MsgGenerator[str]:
    """The one run of each plan here: configure the scanner to ``field`` (shape, pixel size, dwell), then
    bluesky's ``scan_nd`` over ``steps`` (``count`` of one map for None) with ``per_step`` and ``md``; a
    baseline at start and end, the shutter opened after the first baseline; whatever happens, the shutter
    closed and the rotation stage returned to where it was when the plan first moved it. Returns the uid."""
    scanner, rotation, shutter = microprobe.scanner, microprobe.rotation, microprobe.shutter
    if steps is None:  # no axis to step: bluesky's count, with the same hook for its one shot
        scan = bp.count([scanner], 1, per_shot=lambda detectors: per_step(detectors, {}, {}), md=md)
    else:
        scan = bp.scan_nd([scanner], steps, per_step=per_step, md=md)

    # a plain generator: bps.mv's Plan, which warns when never run, is made only if this runs (the tail of
    # an open_run the RunEngine's md_validator refuses never does)
    def move_shutter(command):
        yield from bps.mv(shutter, command)

    def open_shutter(msg):
        # after open_run and its baseline (read with the shutter closed): no dose before the run exists
        return (None, move_shutter("open")) if msg.command == "open_run" else (None, None)

    run = bpp.baseline_wrapper(bpp.plan_mutator(scan, open_shutter), _baseline_devices(microprobe))
    # the rotation's start is read by bluesky's messages when the plan first moves it, not when it is made
    run = bpp.reset_positions_wrapper(bpp.finalize_wrapper(run, move_shutter("close")), [rotation])
    yield from _configure(scanner, *field)
    return (yield from run)


@_plan
def xrf_fly_map(
    microprobe: Readable,
    *,
    shape: Sequence[int],
    pixel_size: float,
    dwell: float,
    theta: float | None = None,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Fly-scan one 2D XRF + DPC map: one run, one event.

    Parameters
    ----------
    microprobe : Microprobe
        Simulated or EPICS microprobe (``rotation``, ``zone_plate``,
        ``shutter``, ``scanner``); through the queue server, its name.
    shape : (ny, nx)
        Pixels.
    pixel_size : float
        Metres.
    dwell : float
        Seconds per pixel.
    theta : float, optional
        Rotation angle (deg); default: where the stage is. The stage returns
        to its start afterwards.
    md : dict, optional
        Metadata for the start document (e.g. ``sample``), checked at the
        call: string keys, values JSON and Tiled store (numpy values are
        converted), none of the keys the plan writes itself but ``sample``
        (see :func:`~xfct_bluesky.plans._checks.check_md`).

    Returns
    -------
    plan : generator
        The checked plan, to run with ``RE(...)``; it returns the run's uid
        (and so does ``RE``).

    Examples
    --------
    >>> RE(xrf_fly_map(mp, shape=(64, 64), pixel_size=300e-9, dwell=3e-3, md={"sample": "egg 3"}))
    """
    microprobe = check_microprobe(microprobe)
    shape, pixel_size = microprobe.scanner.check_field(shape, pixel_size)
    check_storable_shape(shape)
    dwell = check_plan_dwell(dwell, "Give seconds per pixel, e.g. 3e-3.")
    if theta is not None:
        theta = _theta(microprobe, theta)
    scanner, rotation = microprobe.scanner, microprobe.rotation
    beam = microprobe.beam_parameters()
    dose = dose_per_projection(dwell, pixel_size, flux=beam["flux"], energy_kev=beam["energy_kev"])
    _md = _start_md(
        microprobe, "xrf_fly_map",
        {"microprobe": repr(microprobe), "shape": list(shape), "pixel_size": pixel_size, "dwell": dwell,
         "theta": theta},
        {"shape": list(shape), "pixel_size": pixel_size, "dwell": dwell, "num_points": 1, "num_intervals": 0,
         "dose_per_projection": dose, "total_dose": dose, "estimated_duration": scanner.map_duration(shape, dwell)},
        md,
    )
    timeout = map_timeout(scanner, shape, dwell, None)
    steps = None if theta is None else cycler(rotation, [theta])  # a one-point scan, or a count where it is
    return _run(microprobe, _md, (shape, pixel_size, dwell), steps,
                _per_step(microprobe, lambda step: timeout, DEFAULT_RETRIES))


@_plan
def xfct_tomo(
    microprobe: Readable,
    *,
    shape: Sequence[int] | None = None,
    pixel_size: float | None = None,
    n_angles: int | None = None,
    angles: Sequence[float] | None = None,
    dwell: float | None = None,
    total_dose: float | None = None,
    angular_range: float = 180.0,
    order: Literal["sequential", "interlaced", "golden"] = "sequential",
    max_dose: float | None = None,
    detector_timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    resume: str | int | None = None,
    catalog: Any = None,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Many-angle, low-dose XRF tomography: one run, one event per projection.

    Parameters
    ----------
    microprobe : Microprobe
        Through the queue server, its name.
    shape : (ny, nx)
        Pixels per projection (required unless ``resume``).
    pixel_size : float
        Metres (required unless ``resume``).
    n_angles : int, optional
        Number of projections over ``angular_range`` (with ``order``).
    angles : sequence of float, optional
        Explicit angles (deg), within [0, angular_range]; instead of ``n_angles``.
    dwell : float, optional
        Seconds per pixel.
    total_dose : float, optional
        Dose budget (Gy) for the whole tomography; the dwell per projection is
        derived from it (dose fractionation: the same total whatever the
        number of angles). Give exactly one of ``dwell`` and ``total_dose``.
    angular_range : float
        Degrees, (0, 360]; 180 by default.
    order : {"sequential", "interlaced", "golden"}
        Acquisition order, see :func:`~xfct_bluesky.plans.planning.tomo_angles`.
    max_dose : float, optional
        Refuse a tomography whose total dose exceeds this (Gy); default
        Howells' tolerable ~1e8 Gy per nm at the pixel size.
    detector_timeout : float, optional
        Seconds a map may take before it counts as hung; default three times
        its expected duration plus 30 s.
    retries : int
        Tries after a map that times out or fails (default 2); then the plan
        stops with :class:`DetectorTimeout`, every projection so far stored.
    resume : str or int, optional
        An interrupted ``xfct_tomo`` run: its uid (or its first characters),
        its scan_id, or a negative index (-1: the last run); in Python the
        run itself (``cat[uid]``) too. Acquire only the angles it lacks, with
        its field and dwell, in a new run whose start document links it
        (``resumed_from``). Give no field, angle or dose argument with it.
        The stored run is read when the plan is called
        (:func:`~xfct_bluesky.storage.resume.angles_to_resume`), never
        while it runs.
    catalog : tiled container, optional
        Where to find ``resume`` (e.g. the session's ``cat``); default the
        catalog of the active session (:meth:`~xfct_bluesky.session.Session.current`).
    md : dict, optional
        Metadata for the start document (e.g. ``sample``), checked at the
        call: string keys, values JSON and Tiled store (numpy values are
        converted), none of the keys the plan writes itself but ``sample``
        (see :func:`~xfct_bluesky.plans._checks.check_md`).

    Returns
    -------
    plan : generator
        The checked plan, to run with ``RE(...)``; it returns the run's uid
        (and so does ``RE``).

    See Also
    --------
    estimate_tomo : the same checks and the dose/duration estimate, without running.

    Notes
    -----
    The ``primary`` stream holds, per projection, the rotation readback
    (``theta_key`` in the start document) and every map of the scanner; the
    start document names the data key of each (``quantities``:
    ``{"theta": ..., "Zn": ..., "dpc_diag": ...}``, read back as
    ``load_tomo(run).maps["Zn"]``) and records energy, flux, spot size, pixel
    size, dwell, angles, dose per projection and in total, the estimated
    duration, the sample and, in simulation, the seed.

    Examples
    --------
    >>> RE(xfct_tomo(mp, shape=(64, 64), pixel_size=300e-9, n_angles=240, total_dose=2.3e7,
    ...              order="golden", md={"sample": "egg 3"}))
    """
    microprobe = check_microprobe(microprobe)
    detector_timeout, retries = check_retry_options(detector_timeout, retries)
    carried: dict[str, Any] = {}
    if resume is None and (shape is None or pixel_size is None):
        raise ValueError(f"shape={shape!r}, pixel_size={pixel_size!r}: both are required, e.g. shape=(64, 64), "
                         "pixel_size=300e-9 (only resume= takes them from an earlier run)")
    if resume is not None:
        given = {k: v for k, v in {"shape": shape, "pixel_size": pixel_size, "n_angles": n_angles, "angles": angles,
                                   "dwell": dwell, "total_dose": total_dose}.items() if v is not None}
        if given:
            raise ValueError(f"resume= takes the field, angles and dwell from the interrupted run; got also "
                             f"{sorted(given)}: omit them")
        first, missing = missing_angles(resume, catalog, microprobe)
        # the user's metadata (sample, proposal, ...) carries over; what this plan writes is written anew
        carried = {k: v for k, v in first.items() if k not in NOT_CARRIED}
        carried.update(resumed_from=first["uid"], planned_angles=first["angles"],
                       resumed_angles=[float(a) for a in missing])
        shape, pixel_size, dwell, angles = first["shape"], first["pixel_size"], first["dwell"], missing
        angular_range, order = first.get("angular_range", angular_range), first.get("order", order)
    est = estimate_tomo(microprobe, shape=shape, pixel_size=pixel_size, n_angles=n_angles, angles=angles,
                        dwell=dwell, total_dose=total_dose, angular_range=angular_range,
                        order="explicit" if resume is not None else order,  # the missing angles, as planned
                        max_dose=max_dose, min_angles=1 if resume is not None else 2)
    plan_args = {
        "microprobe": repr(microprobe), "shape": list(est.shape), "pixel_size": est.pixel_size,
        "n_angles": None if n_angles is None else est.n_angles,
        "angles": None if angles is None else list(est.angles),
        "dwell": None if dwell is None else est.dwell, "total_dose": None if total_dose is None else float(total_dose),
        "angular_range": est.angular_range, "order": order, "max_dose": None if max_dose is None else float(max_dose),
        "detector_timeout": detector_timeout, "retries": retries,
        "resume": None if resume is None else carried["resumed_from"],
    }
    rotation = microprobe.rotation
    _md = _start_md(
        microprobe, "xfct_tomo", plan_args,
        {**est.as_metadata(), "num_points": est.n_angles, "num_intervals": est.n_angles - 1,
         "plan_pattern": "array", "plan_pattern_module": "numpy",
         "plan_pattern_args": {"object": repr(rotation), "array": list(est.angles)}},
        md, carried=carried, also_written=("resumed_from", "planned_angles", "resumed_angles"),
    )
    timeout = map_timeout(microprobe.scanner, est.shape, est.dwell, detector_timeout)
    return _run(microprobe, _md, (est.shape, est.pixel_size, est.dwell), cycler(rotation, list(est.angles)),
                _per_step(microprobe, lambda step: timeout, retries))


@_plan
def dwell_pair_series(
    microprobe: Readable,
    *,
    dwells: Sequence[float] = (3e-3, 30e-3),
    theta: float = 0.0,
    shape: Sequence[int],
    pixel_size: float,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """The founding paper's experiment: two maps at the same angle and position per dwell.

    One run; the ``primary`` stream holds ``2 * len(dwells)`` events in the
    order (dwell 0, repeat 0), (dwell 0, repeat 1), (dwell 1, repeat 0), ...,
    each with the dwell it was acquired with as data (``<scanner>_map_dwell``).

    Parameters
    ----------
    microprobe : Microprobe
        Through the queue server, its name.
    dwells : sequence of float
        Seconds per pixel; the paper used 3 and 30 ms.
    theta : float
        Rotation angle (deg).
    shape : (ny, nx)
        The paper used 230 x 230.
    pixel_size : float
        The paper used 300e-9 m.
    md : dict, optional
        Metadata for the start document (e.g. ``sample``), checked at the
        call: string keys, values JSON and Tiled store (numpy values are
        converted), none of the keys the plan writes itself but ``sample``
        (see :func:`~xfct_bluesky.plans._checks.check_md`).

    Returns
    -------
    plan : generator
        The checked plan, to run with ``RE(...)``; it returns the run's uid
        (and so does ``RE``).
    """
    microprobe = check_microprobe(microprobe)
    shape, pixel_size = microprobe.scanner.check_field(shape, pixel_size)
    check_storable_shape(shape)
    fix = "Give seconds per pixel, e.g. dwells=(3e-3, 30e-3)."
    if isinstance(dwells, str | bytes | Mapping) or isinstance(dwells, np.ndarray) and dwells.ndim > 1:
        raise ValueError(f"dwells={dwells!r}: allowed a sequence of dwells in seconds per pixel. {fix}")
    if not isinstance(dwells, Sequence | np.ndarray):
        dwells = [dwells]  # one dwell; check_plan_dwell refuses what is not a number
    if not len(dwells):
        raise ValueError(f"dwells={dwells!r} is empty; allowed at least one dwell in seconds per pixel. {fix}")
    dwells = [check_plan_dwell(d, fix, f"dwells[{i}]") for i, d in enumerate(dwells)]
    theta = _theta(microprobe, theta)
    beam = microprobe.beam_parameters()
    per = [dose_per_projection(d, pixel_size, flux=beam["flux"], energy_kev=beam["energy_kev"]) for d in dwells]
    scanner, rotation = microprobe.scanner, microprobe.rotation
    _md = _start_md(
        microprobe, "dwell_pair_series",
        {"microprobe": repr(microprobe), "dwells": dwells, "theta": theta, "shape": list(shape),
         "pixel_size": pixel_size},
        {"shape": list(shape), "pixel_size": pixel_size, "dwells": dwells, "theta": theta, "repeats": 2,
         "num_points": 2 * len(dwells), "num_intervals": 2 * len(dwells) - 1,
         "dose_per_projection": per, "total_dose": 2 * float(sum(per)),
         "estimated_duration": 2 * sum(scanner.map_duration(shape, d) for d in dwells),
         "motors": [rotation.name, scanner.dwell.name],
         "hints": {"dimensions": [([scanner.map_dwell.name], "primary")]}},
        md,
    )
    timeouts = {d: map_timeout(scanner, shape, d, None) for d in dwells}
    # both axes step together (an inner product): the stage goes to theta once, each dwell is set once
    series = [d for d in dwells for _ in range(2)]
    steps = cycler(rotation, [theta] * len(series)) + cycler(scanner.dwell, series)
    return _run(microprobe, _md, (shape, pixel_size, dwells[0]), steps,
                _per_step(microprobe, lambda step: timeouts[step[scanner.dwell]], DEFAULT_RETRIES))
