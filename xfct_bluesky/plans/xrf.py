"""Bluesky plans for fly-scanned XRF maps and low-dose XRF tomography.

Each plan is a plain function that checks every argument, ``md`` included,
when it is called (``ValueError`` naming the value, the allowed range and
the fix) and only then returns the plan's generator: a bad plan fails before
any motor moves, any file is opened or any document is emitted, even before
it reaches a RunEngine. Running it (``RE(plan)``) returns the run's uid, as
the generator does. Inside, each is one run: stage positions
in a ``baseline`` stream, maps in ``primary`` (one event per map), full
spectra external in HDF5. Whatever happens, the shutter closes and the
rotation stage returns to where it started (``finalize_wrapper``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import MsgGenerator

from ..validate import number
from ..physics.dose import dose_per_projection
from ..quantities import is_quantity
from ._checks import check_md, check_storable_shape, plain
from .acquire import DEFAULT_RETRIES, _acquire, _check_retry_options, _map_timeout
from .planning import TomoEstimate, _check_dwell, estimate_tomo
from .resume import _NOT_CARRIED, _missing_angles

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


def _with_cleanup(microprobe, plan: MsgGenerator, return_to: float) -> MsgGenerator:
    """Close the shutter and return the rotation stage, whatever happens to ``plan``."""

    def cleanup():
        yield from bps.mv(microprobe.shutter, "close")
        yield from bps.mv(microprobe.rotation, return_to)

    return (yield from bpp.finalize_wrapper(plan, cleanup()))


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


def _run(microprobe, md: dict[str, Any], field: tuple, body: MsgGenerator) -> MsgGenerator[str]:
    """The one run of each plan here: configure the scanner to ``field`` (shape, pixel size, dwell), open the
    shutter, run ``body``; whatever happens, close the shutter and return the stage. Returns the run's uid."""
    scanner, rotation = microprobe.scanner, microprobe.rotation

    @bpp.baseline_decorator(_baseline_devices(microprobe))
    @bpp.stage_decorator([scanner])
    @bpp.run_decorator(md=md)
    def inner():
        yield from bps.mv(microprobe.shutter, "open")
        yield from body

    start = rotation.position  # read when the plan runs, not when it is made
    yield from _configure(scanner, *field)
    return (yield from _with_cleanup(microprobe, inner(), start))


def xrf_fly_map(
    microprobe,
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
        ``shutter``, ``scanner``).
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
    shape, pixel_size = microprobe.scanner.check_field(shape, pixel_size)
    check_storable_shape(shape)
    dwell = _check_dwell(dwell, "Give seconds per pixel, e.g. 3e-3.")
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
    timeout = _map_timeout(scanner, shape, dwell, None)

    def body():
        if theta is not None:
            yield from bps.mv(rotation, theta)
        yield from _acquire(scanner, rotation, timeout, DEFAULT_RETRIES)

    return _run(microprobe, _md, (shape, pixel_size, dwell), body())


def xfct_tomo(
    microprobe,
    *,
    shape: Sequence[int] | None = None,
    pixel_size: float | None = None,
    n_angles: int | None = None,
    angles: Sequence[float] | None = None,
    dwell: float | None = None,
    total_dose: float | None = None,
    angular_range: float = 180.0,
    order: str = "sequential",
    max_dose: float | None = None,
    detector_timeout: float | None = None,
    retries: int = DEFAULT_RETRIES,
    resume: Any = None,
    catalog: Any = None,
    md: Mapping[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Many-angle, low-dose XRF tomography: one run, one event per projection.

    Parameters
    ----------
    microprobe : Microprobe
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
    resume : str or BlueskyRun, optional
        An interrupted ``xfct_tomo`` run (a Tiled run, or its uid with
        ``catalog``): acquire only the angles it lacks, with its field and
        dwell, in a new run whose start document links it
        (``resumed_from``). Give no field, angle or dose argument with it.
    catalog : tiled container, optional
        Where to find ``resume`` when it is a uid (e.g. the session's ``cat``).
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
    detector_timeout, retries = _check_retry_options(detector_timeout, retries)
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
        first, missing = _missing_angles(resume, catalog, microprobe)
        # the user's metadata (sample, proposal, ...) carries over; what this plan writes is written anew
        carried = {k: v for k, v in first.items() if k not in _NOT_CARRIED}
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
    timeout = _map_timeout(microprobe.scanner, est.shape, est.dwell, detector_timeout)
    return _run(microprobe, _md, (est.shape, est.pixel_size, est.dwell), _tomo(microprobe, est, timeout, retries))


def _tomo(microprobe, est: TomoEstimate, timeout: float, retries: int) -> MsgGenerator:
    """One projection per angle, a checkpoint before and after each."""
    for theta in est.angles:
        # a pause or suspension rewinds to the last checkpoint: the projection in flight is
        # repeated, and the one just saved is never taken twice
        yield from bps.checkpoint()
        yield from bps.mv(microprobe.rotation, theta)
        yield from _acquire(microprobe.scanner, microprobe.rotation, timeout, retries)
        yield from bps.checkpoint()


def dwell_pair_series(
    microprobe,
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
    shape, pixel_size = microprobe.scanner.check_field(shape, pixel_size)
    check_storable_shape(shape)
    fix = "Give seconds per pixel, e.g. dwells=(3e-3, 30e-3)."
    if isinstance(dwells, str | bytes | Mapping) or isinstance(dwells, np.ndarray) and dwells.ndim > 1:
        raise ValueError(f"dwells={dwells!r}: allowed a sequence of dwells in seconds per pixel. {fix}")
    if not isinstance(dwells, Sequence | np.ndarray):
        dwells = [dwells]  # one dwell; _check_dwell refuses what is not a number
    if not len(dwells):
        raise ValueError(f"dwells={dwells!r} is empty; allowed at least one dwell in seconds per pixel. {fix}")
    dwells = [_check_dwell(d, fix, f"dwells[{i}]") for i, d in enumerate(dwells)]
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
         "hints": {"dimensions": [([scanner.map_dwell.name], "primary")]}},
        md,
    )
    timeouts = [_map_timeout(scanner, shape, d, None) for d in dwells]

    def body():
        yield from bps.mv(rotation, theta)
        for d, timeout in zip(dwells, timeouts, strict=True):
            yield from bps.mv(scanner.dwell, d)
            for _ in range(2):
                yield from bps.checkpoint()
                yield from _acquire(scanner, rotation, timeout, DEFAULT_RETRIES)
                yield from bps.checkpoint()

    return _run(microprobe, _md, (shape, pixel_size, dwells[0]), body())
