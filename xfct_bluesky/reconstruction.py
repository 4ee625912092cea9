"""From a stored tomography to volumes: align, reconstruct, publish, export.

:func:`reconstruct_tomo` aligns a run's projections (DPC by default, see
:mod:`xfct_bluesky.analysis.align`), applies the shifts once to every map,
and reconstructs each element (and the phase integrated from the two DPC
gradients) with :mod:`xfct_bluesky.analysis.tomo`. :func:`publish` sends the
volumes as a derived run (``plan_name`` "xfct_reconstruction", ``raw_uid``
linking the raw run) to any document consumer, e.g. a TiledWriter, and
:func:`write_dxchange` saves a DXchange-style HDF5 file tomopy users can open.
:func:`use_fitted_maps` puts a spectrum fit's element maps (the run's
``live_spectrum_fit`` derived run) in place of its ROI-window maps, as
``xfct-bluesky reconstruct`` does, which says which it used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import validate
from ._warnings import collected, warn
from .analysis.channels import find_map
from .analysis.exceptions import ReconstructionWarning
from .quantities import FIT_PLAN, RECONSTRUCTION_PLAN

logger = logging.getLogger(__name__)

ALGORITHMS = ("fbp", "sirt", "mlem", "osem")
ALIGNMENTS = ("auto", "dpc", "zn", "none", "truth")
#: Iterations when none are given. MLEM on low-count fluorescence maps fits
#: the Poisson noise after ~10 iterations (the dose study's NRMSE is lowest
#: at 10 and grows from 20 on); OSEM with 8 subsets goes ~8x faster per iteration.
DEFAULT_ITERATIONS = {"fbp": 0, "sirt": 50, "mlem": 10, "osem": 2}


@dataclass
class Reconstruction:
    """Volumes of a tomography and how they were made.

    Attributes
    ----------
    volumes : dict of str to (n_rows, n_cols, n_cols) float32 arrays
        One per element (``"Zn"``, ...), plus ``"phase"`` (relative units)
        when DPC maps were there.
    aligned : dict of str to (n_angles, n_rows, n_cols) float32 arrays
        The projections after the shifts, same keys as ``volumes``.
    theta : (n_angles,) array, degrees, acquisition order.
        The projections reconstructed: every one given but those in ``excluded``.
    shifts : (n_angles, 2) array
        (dy, dx) px applied to every projection (of ``theta``).
    center : float
        Rotation-axis column (px) used.
    excluded : tuple of int
        Projections (indices into the angles given) left out of the
        reconstruction: the alignment found no signal in them, or their
        shift was given as NaN. A ReconstructionWarning names each.
    """

    volumes: dict[str, np.ndarray]
    aligned: dict[str, np.ndarray]
    theta: np.ndarray
    shifts: np.ndarray
    center: float
    algorithm: str
    iterations: int
    subsets: int
    align: str
    alignment: object = None
    raw_uid: str | None = None
    metadata: dict = field(default_factory=dict)
    excluded: tuple = ()


def check_elements(elements) -> tuple[str, ...]:
    """The element symbols to reconstruct, as a tuple; a single string is refused (it is not a list)."""
    if isinstance(elements, str):
        raise TypeError(f"elements={elements!r} is one string, not a list of elements; give a sequence of symbols, "
                        f"e.g. elements=({elements!r},) or elements=['Zn', 'Fe']")
    out = tuple(elements)
    if not out or not all(isinstance(e, str) and e for e in out):
        raise ValueError(f"elements={out!r}: allowed one or more element symbols (strings), e.g. ('Zn', 'Fe')")
    return out


def check_options(algorithm: str, iterations: int | None, subsets: int, align: str) -> tuple[str, int, int, str]:
    """Validate the reconstruction options (before any data is read); return them normalised."""
    algorithm = validate.one_of("algorithm", algorithm, ALGORITHMS, ignore_case=True)
    align = validate.one_of("align", align, ALIGNMENTS, ignore_case=True)
    if iterations is None:
        iterations = DEFAULT_ITERATIONS[algorithm]
    iterations = validate.integer("iterations", iterations, low=0 if algorithm == "fbp" else 1,
                                  fix=f"For {algorithm}: e.g. {DEFAULT_ITERATIONS[algorithm] or 30}")
    subsets = validate.integer("subsets", subsets, low=1, fix="OSEM ordered subsets, e.g. 8")
    if algorithm == "osem" and subsets == 1:
        subsets = 8
    return algorithm, iterations, subsets, align


def phase_projections(dpc_x, dpc_y) -> np.ndarray:
    """Projected phase (relative units) of each projection from its DPC x and y maps.

    Fourier integration of the two gradients
    (:func:`~xfct_bluesky.analysis.dpc.integrate_gradients`); the lost
    constant is set so that the left and right edge columns (outside the
    specimen in a tomography field) are zero on average.
    """
    from .analysis.dpc import integrate_gradients

    phase = integrate_gradients(np.asarray(dpc_x, np.float32), np.asarray(dpc_y, np.float32))
    edge = np.concatenate([phase[..., :, :2], phase[..., :, -2:]], axis=-1).mean(axis=(-2, -1), keepdims=True)
    return (phase - edge).astype(np.float32)


def align_maps(maps: Mapping[str, np.ndarray], theta, align: str = "auto", *, true_offsets=None,
               method: str = "auto", channel: str | None = None):
    """(shifts (n, 2), centre column or NaN, Alignment or None) for one alignment choice.

    ``align="auto"`` hands every map to :func:`~xfct_bluesky.analysis.align.align_projections`
    with ``method`` and ``channel``; "dpc" registers the diagonal DPC maps pairwise, "zn" the Zn
    maps. Every choice but "none" and "truth" reports its consistency and is not applied when it
    leaves the stack less consistent; its warnings are logged (and kept in ``Alignment.warnings``).
    """
    from .analysis.align import align_projections

    n = len(theta)
    _, nx = next(iter(maps.values())).shape[1:]
    if align == "none":
        return np.zeros((n, 2)), float("nan"), None
    if align == "truth":
        if true_offsets is None:
            raise ValueError("align='truth' needs the simulator's true offsets (simulation only)")
        offsets = np.asarray(true_offsets, float)
        if offsets.shape != (n, 2):
            raise ValueError(f"true offsets have shape {offsets.shape}; expected {(n, 2)} (one per projection)")
        return -offsets, (nx - 1) / 2, None
    with collected() as caught:  # this thread's only: two reconstructions may align at once
        if align == "auto":
            al = align_projections(dict(maps), theta, method=method, channel=channel)
        elif align == "dpc":
            diag, dx = find_map(maps, "dpc_diag"), find_map(maps, "dpc_x")
            if diag is None or dx is None:
                raise ValueError(f"align='dpc' needs dpc_diag and dpc_x maps; the run has {sorted(maps)}")
            al = align_projections(dict(maps), theta, method="pairwise")
        else:
            zn = find_map(maps, "Zn")
            if zn is None:
                raise ValueError(f"align='zn' needs a Zn map; the run has {sorted(maps)}")
            al = align_projections(maps[zn].astype(np.float32), theta, channel="Zn")
    for w in caught:
        logger.warning("%s", w.message)
    return al.shifts, al.center, al


def reconstruct_maps(
    maps: Mapping[str, np.ndarray],
    theta,
    *,
    elements: Sequence[str] = ("Zn",),
    algorithm: str = "mlem",
    iterations: int | None = None,
    subsets: int = 1,
    align: str = "auto",
    shifts=None,
    center: float | None = None,
    phase: bool = True,
    refine: bool = False,
    true_offsets=None,
    progress: Callable[[str], None] | None = None,
    align_method: str = "auto",
    channel: str | None = None,
    projector: str = "auto",
    client=None,
    sources: Mapping | None = None,
) -> Reconstruction:
    """Align and reconstruct projections given as arrays (see :func:`reconstruct_tomo`)."""
    from .analysis import tomo
    from .analysis.angles import angle_problems, angles_checked, check_angles
    from .analysis.shifts import apply_shifts

    algorithm, iterations, subsets, align = check_options(algorithm, iterations, subsets, align)
    projector = validate.one_of("projector", projector, tomo.PROJECTORS,
                                fix="'auto' uses the cached matrix where it fits in memory (logged), "
                                    "'matrix-free' computes it on the fly")
    elements = check_elements(elements)
    theta = validate.angles("theta", np.ravel(validate.real("theta", theta)))
    angle_problems(theta)  # angles from one direction only: refused before any work
    keys = {}
    for el in elements:
        key = find_map(maps, el)
        if key is None:
            raise ValueError(f"element {el!r} has no map in this run; maps: {sorted(maps)}")
        keys[el] = key
    for key, value in maps.items():
        validate.real(f"map {key!r}", value)
    if algorithm in ("mlem", "osem"):  # photon counts: integer counts below 0 are impossible
        for key in keys.values():
            if np.asarray(maps[key]).dtype.kind == "i":
                validate.counts(f"map {key!r}", maps[key],
                                fix="Integer counts below zero are a reading error (an overflow?): check the data")
            elif found := validate.negatives(f"map {key!r}", maps[key]):  # fitted maps dip below zero in noise
                warn(f"{found}: {algorithm.upper()} models photon counts, so they are set to 0 for it; "
                     "for maps whose negative values are real use algorithm='sirt' or 'fbp'",
                     ReconstructionWarning, stacklevel=2)
    say = progress or (lambda text: None)
    alignment = None
    with angles_checked():  # warned about once below, for the projections reconstructed
        if shifts is None:
            say(f"aligning {theta.size} projections ({align})")
            shifts, found_center, alignment = align_maps(maps, theta, align, true_offsets=true_offsets,
                                                         method=align_method, channel=channel)
            if alignment is not None:
                c = alignment.consistency
                say(f"alignment: {alignment.reason}; reprojection error {c.get('before')} unaligned -> "
                    f"{c.get('after')} aligned{'' if alignment.applied else ' (NOT applied)'}")
        else:
            found_center = float("nan")
    shifts = validate.shifts(shifts, theta.size, excluded_ok=True)
    given = theta
    left_out = np.flatnonzero(np.isnan(shifts[:, 0]))
    if left_out.size:
        reasons = getattr(alignment, "excluded", {})
        listed = "; ".join(f"{k} (theta={given[k]:.2f} deg): {reasons.get(int(k), 'its shift is NaN')}"
                           for k in left_out[:8])
        more = f"; and {left_out.size - 8} more" if left_out.size > 8 else ""
        text = (f"{left_out.size} of the {given.size} projections are left out of the reconstruction (no shift for "
                f"them, NaN): projection {listed}{more}. The volume is made of the other {given.size - left_out.size} "
                "projections")
        warn(text, ReconstructionWarning, stacklevel=2)
        keep = np.isfinite(shifts[:, 0])
        theta, shifts = theta[keep], shifts[keep]
        maps = {k: np.asarray(v)[keep] for k, v in maps.items()}
    check_angles(theta, ReconstructionWarning, "the reconstruction", stacklevel=3)
    with angles_checked():
        dpc_y = find_map(maps, "dpc_y")
        if refine and align == "dpc" and dpc_y is not None and np.ptp(theta) > 150:
            from .analysis.refine import refine_alignment

            say("refining the alignment by projection matching (DPC y)")
            shifts = refine_alignment(maps[dpc_y], theta, shifts,
                                      center=found_center if np.isfinite(found_center) else None).shifts
        stacks = {el: np.asarray(maps[key], np.float32) for el, key in keys.items()}
        if phase and find_map(maps, "dpc_x") and find_map(maps, "dpc_y"):
            stacks["phase"] = phase_projections(maps[find_map(maps, "dpc_x")], maps[find_map(maps, "dpc_y")])
        aligned = {name: apply_shifts(stack, shifts) for name, stack in stacks.items()}
        if center is None:
            center = found_center
        if not np.isfinite(center):
            ref = aligned.get("phase", next(iter(aligned.values())))
            say("searching the rotation axis")
            center = float(tomo.find_center(ref, theta))
        from .distributed import reconstruct_one, reconstruct_stacks

        options = {"center": center, "algorithm": algorithm, "iterations": iterations, "subsets": subsets,
                   "projector": projector}
        if client is not None:  # the workers read (sources) or are sent their rows, and shift them themselves
            say(f"reconstructing {', '.join(stacks)} on Dask ({algorithm}; the phase by fbp)")
            raw = {name: (sources or {}).get(name, stack) for name, stack in stacks.items()}
            volumes, report = reconstruct_stacks(raw, theta, shifts=shifts, client=client, progress=say,
                                                 angle_index=np.setdiff1d(np.arange(given.size), left_out),
                                                 **options)
            logger.info("distributed reconstruction: %d blocks on %d workers, %.1f s", len(report.blocks),
                        len(report.workers), report.seconds)
        else:
            volumes = {}
            for name, stack in aligned.items():
                say(f"reconstructing {name} ({'fbp' if name == 'phase' else algorithm})")
                volumes[name] = reconstruct_one(name, stack, theta, **options)
    return Reconstruction(volumes, aligned, theta, np.asarray(shifts, float), float(center), algorithm,
                          iterations, subsets, align, alignment, excluded=tuple(int(k) for k in left_out))


def reconstruct_tomo(
    tomo_data,
    *,
    elements: Sequence[str] = ("Zn",),
    algorithm: str = "mlem",
    iterations: int | None = None,
    subsets: int = 1,
    align: str = "auto",
    shifts=None,
    center: float | None = None,
    phase: bool = True,
    refine: bool = False,
    true_offsets=None,
    progress: Callable[[str], None] | None = None,
    align_method: str = "auto",
    channel: str | None = None,
    projector: str = "auto",
    client=None,
    sources: Mapping | None = None,
) -> Reconstruction:
    """Align and reconstruct a stored tomography (:class:`~xfct_bluesky.storage.TomoData`).

    Parameters
    ----------
    tomo_data : TomoData
        From :func:`~xfct_bluesky.storage.load_tomo`.
    elements : sequence of str
        Elements to reconstruct (``("Zn",)``); the phase from DPC is added
        unless ``phase=False``.
    algorithm : {"fbp", "sirt", "mlem", "osem"}
        MLEM/OSEM suit fluorescence counts (Poisson); the phase always uses FBP.
    iterations : int, optional
        Default 50 (SIRT), 10 (MLEM), 2 (OSEM, 8 subsets).
    subsets : int
        OSEM ordered subsets (8 when ``algorithm="osem"`` and 1 is given).
    align : {"auto", "dpc", "zn", "none", "truth"}
        How to find the shifts: "auto" (default) gives every map to
        :func:`~xfct_bluesky.analysis.align.align_projections`, which picks
        the method and channel; "dpc" pairwise on diagonal DPC, "zn" on Zn;
        "truth" uses ``true_offsets`` (simulation).
    align_method : {"auto", "pairwise", "matching"}
        With ``align="auto"``: the method (see ``align_projections``).
    channel : str, optional
        With ``align="auto"``: the map to align on (default chosen by the data).
    shifts : (n, 2) array, optional
        Shifts to apply instead of aligning (e.g. the live alignment's).
        Finite, or NaN in both components for a projection to leave out
        (what an alignment gives a projection without signal; warned about);
        infinity, or NaN everywhere, is refused.
    refine : bool
        With ``align="dpc"``, refine the shifts by projection matching on the
        DPC y maps (:func:`~xfct_bluesky.analysis.refine.refine_alignment`):
        it removes the parallax bias of pairwise registration in a thick
        specimen seen whole (0.21 to 0.08 px RMS on the simulated egg, 280 px
        field, 90 angles); on small fields with few angles it can do worse
        (0.06 to 0.12 px on a 72 px field, 60 angles), hence off by default.
    center : float, optional
        Rotation-axis column; default from the alignment, else searched.
    phase : bool
        Also reconstruct the phase integrated from the DPC x and y maps (FBP).
    true_offsets : (n, 2) array, optional
        The simulator's true offsets, for ``align="truth"``.
    progress : callable(str), optional
        Called with a line of text at each step (aligning, reconstructing ...).
    projector : {"auto", "matrix", "matrix-free"}
        The cached sparse system matrix, the same weights computed on the
        fly (numba, all cores, memory of the data only), or "auto": the
        matrix where its estimate fits under
        ``xfct_bluesky.analysis.projector.MATRIX_BUDGET`` (2 GiB), logged.
    client : "local", distributed.Client or str, optional
        Reconstruct on a Dask cluster, one task per element and block of
        ~128 MB of sinogram rows (:func:`xfct_bluesky.distributed.reconstruct_stacks`;
        the same volumes as serial): "local" (a LocalCluster here), a Client
        (any cluster) or a scheduler address. The alignment runs here.
    sources : dict of str to source, optional
        With ``client``: per element, where the workers read the raw stack
        themselves (:func:`xfct_bluesky.distributed.tiled_sources` of the run,
        or :class:`xfct_bluesky.distributed.HDF5Array`); the others are sent
        from here by block.

    Notes
    -----
    Nothing is lost and nothing is silent: a projection the alignment left
    out (no signal: a closed shutter, a beam dump) is left out of the volume
    with a :class:`~xfct_bluesky.analysis.exceptions.ReconstructionWarning` naming
    it (``Reconstruction.excluded``), never shifted by NaN; angles covering
    well under 180 degrees (a missing wedge) or repeating each other are
    warned about once with the consequence; angles all in one direction,
    complex maps and, for MLEM/OSEM, negative counts are refused naming the
    map, the value and its index.
    """
    rec = reconstruct_maps(tomo_data.maps, tomo_data.theta, elements=elements, algorithm=algorithm,
                           iterations=iterations, subsets=subsets, align=align, shifts=shifts, center=center,
                           phase=phase, refine=refine, true_offsets=true_offsets, progress=progress,
                           align_method=align_method, channel=channel, projector=projector, client=client,
                           sources=sources)
    rec.raw_uid = tomo_data.uid
    rec.metadata = raw_metadata(tomo_data.metadata)
    return rec


def raw_metadata(start: Mapping) -> dict:
    """What a derived run copies from its raw run's start document.

    ``sample``, ``pixel_size`` (m), ``dwell`` (s per pixel) and ``total_dose``
    (Gy) as recorded; ``energy``, the incident energy in keV (the start
    document's, or for an imported tomography the one energy all its files
    record); ``instrument`` when the raw run names it (not "unknown");
    ``raw_plan_name``, the plan that took the raw run. Not ``scan_id``: a
    catalog's ``cat[scan_id]`` would then find the derived run instead of the
    scan; it goes in as ``raw_scan_id``. A value the raw run does not record
    is left out.
    """
    md = {k: start[k] for k in ("sample", "pixel_size", "dwell", "total_dose") if k in start}
    for key, raw in (("scan_id", "raw_scan_id"), ("plan_name", "raw_plan_name")):
        if key in start:
            md[raw] = start[key]
    energy = start.get("energy")
    if energy is None:  # an imported tomography: each file's metadata, in md["files"]
        files = [f for f in start.get("files") or () if isinstance(f, Mapping)]
        found = {f.get("energy") for f in files}
        energy = found.pop() if files and len(found) == 1 else None
    if isinstance(energy, (int, float)) and not isinstance(energy, bool) and np.isfinite(energy) and energy > 0:
        md["energy"] = float(energy)
    instrument = start.get("instrument")
    if isinstance(instrument, str) and instrument.strip() and instrument != "unknown":
        md["instrument"] = instrument
    return md


def use_fitted_maps(tomo_data, derived, elements: Sequence[str] | None = None):
    """``tomo_data`` with its element maps from fitted spectra where a fit of the run covers it, and their sources.

    The fit is the newest ``live_spectrum_fit`` run derived from the run (the
    live fit's or ``xfct-bluesky fit``'s) in ``derived`` (the derived-runs
    container; None: none looked for). Its fitted counts replace the run's
    maps of ``elements`` (default: every element either has), or join them,
    where it covers every projection in the same order
    (:func:`~xfct_bluesky.analysis.fitting.maps.prefer_fitted`).

    Returns
    -------
    tomo : TomoData
        A copy whose ``maps`` hold the fitted stacks (float32) under the element names.
    sources : dict of str to str
        Per element: "fitted spectra (run <uid>)", or what the run's own map is ("ROI window" for
        this package's runs, "the imported map" for an imported file's), with why when a fit exists
        but does not cover the run.
    """
    from dataclasses import replace

    from .analysis.fitting.maps import FITTED, ROI, prefer_fitted
    from .storage import derived_runs, load_theta
    from .storage.reading import Maps

    names = list(tomo_data.maps)
    fitted, fitted_theta, fit_uid = None, None, None
    found = derived_runs(derived, tomo_data.uid, FIT_PLAN) if derived is not None else []
    if found:  # its counts: (events, elements, ny, nx), the elements in the start document's order
        fit = found[-1]
        counts = np.asarray(fit["primary"]["counts"].read())
        fitted = {e: counts[:, k] for k, e in enumerate(fit.metadata["start"]["elements"])}
        fitted_theta, fit_uid = load_theta(fit), fit.metadata["start"]["uid"]
    raw = ROI if tomo_data.metadata.get("plan_name") != "import" else "the imported map"
    maps, sources = prefer_fitted({n: tomo_data.maps[n] for n in names}, tomo_data.theta, fitted, fitted_theta,
                                  elements, raw=raw)
    sources = {e: f"{FITTED} (run {fit_uid[:8]})" if src == FITTED else src for e, src in sources.items()}
    keys = {n: tomo_data.maps.data_key(n) if n in names else n for n in maps}
    quantities = {**tomo_data.quantities, **{n: n for n in maps if n not in names}}
    new = Maps({keys[n]: maps[n] for n in maps}, {n: k for n, k in quantities.items() if n != "theta"})
    return replace(tomo_data, maps=new, quantities=quantities), sources


# ------------------------------------------------------------------ publishing ---
def publish(rec: Reconstruction, emit: Callable[[str, dict], object], *, extra_md: Mapping | None = None) -> str:
    """Send the volumes as a derived run to ``emit`` (e.g. a TiledWriter); return its uid.

    One event in the ``primary`` stream holds every volume (n_rows, n_cols,
    n_cols) float32; a ``shifts`` stream holds theta, dy and dx per projection.
    The start document's ``quantities`` names the element volumes (``"Zn"``)
    and ``theta`` (in ``shifts``).
    """
    from event_model import compose_run

    from .quantities import is_quantity

    md = {
        "plan_name": RECONSTRUCTION_PLAN, "raw_uid": rec.raw_uid, "algorithm": rec.algorithm,
        "iterations": rec.iterations, "subsets": rec.subsets, "align": rec.align, "center": rec.center,
        "volumes": sorted(rec.volumes), "purpose": "reconstructed volumes of a tomography (derived run)",
        "quantities": {**{name: name for name in rec.volumes if is_quantity(name)}, "theta": "theta"},
        **rec.metadata, **(extra_md or {}),
    }
    if rec.excluded:
        md["excluded_projections"] = list(rec.excluded)
    bundle = compose_run(metadata=md)
    emit("start", bundle.start_doc)
    keys = {
        name: {"dtype": "array", "dtype_numpy": "<f4", "shape": list(vol.shape), "source": "derived",
               "units": "a.u." if name == "phase" else "counts per voxel per projection"}
        for name, vol in rec.volumes.items()
    }
    desc = bundle.compose_descriptor(name="primary", data_keys=keys)
    emit("descriptor", desc.descriptor_doc)
    now = time.time()
    emit("event", desc.compose_event(data={k: v.astype(np.float32) for k, v in rec.volumes.items()},
                                     timestamps={k: now for k in rec.volumes}))
    sdesc = bundle.compose_descriptor(name="shifts", data_keys={
        "theta": {"dtype": "number", "shape": [], "source": "derived", "units": "deg"},
        "dy": {"dtype": "number", "shape": [], "source": "derived", "units": "px"},
        "dx": {"dtype": "number", "shape": [], "source": "derived", "units": "px"},
    })
    emit("descriptor", sdesc.descriptor_doc)
    for t, (dy, dx) in zip(rec.theta, rec.shifts, strict=True):
        emit("event", sdesc.compose_event(data={"theta": float(t), "dy": float(dy), "dx": float(dx)},
                                          timestamps={"theta": now, "dy": now, "dx": now}))
    emit("stop", bundle.compose_stop())
    return bundle.start_doc["uid"]


def write_dxchange(path: str | Path, rec: Reconstruction, *, units: str | Mapping[str, str] | None = None) -> Path:
    """Write a Data Exchange file (tomopy's ``/exchange`` layout) of the aligned projections and the volumes.

    Written by :func:`xfct_bluesky.importers.dxchange.write_dxchange` (dxfile's
    layout) and read back by :func:`~xfct_bluesky.importers.dxchange.read_dxchange`;
    ``dxchange.read_aps_32id`` reads ``data`` and ``theta`` (no flats or
    darks: fluorescence counts need no flat-field correction).

    ======================================  ==============================================================
    ``implements``                          the top-level groups written: "exchange:measurement:process"
                                            (no ``measurement`` when the raw run records none of its values)
    ``exchange/data``                       the first element's **aligned** projections (n_angles, rows,
                                            cols) float32: ``units`` (see ``units``), ``axes`` "theta:y:x",
                                            ``description`` saying they are aligned, ``normalization``
                                            "none" (what was done to the maps: nothing but the shifts)
    ``exchange/theta``                      degrees (``units`` "deg"), acquisition order
    ``exchange/shifts``                     (n_angles, 2) (dy, dx) px applied to each projection
    ``exchange/data_<name>``                every aligned stack (``data_<first>`` a link to ``data``);
                                            ``data_phase`` the phase integrated from the DPC maps
    ``exchange/recon_<name>``               every volume (rows, cols, cols), ``axes`` "z:y:x"
    ``measurement/instrument/``             ``name``; ``monochromator/energy`` (J); ``detector/
                                            exposure_time`` (the dwell, s) and ``actual_pixel_size_x``,
                                            ``_y`` (the scan step, m: the pixel size on the sample plane)
    ``measurement/sample/``                 ``name`` (and ``description`` ... when the sample is a mapping)
    ``process/reconstruction/``             ``algorithm``, ``iterations``, ``subsets``, ``filter``,
                                            ``center`` (px), ``software``, ``raw_uid``, ``raw_scan_id``,
                                            ``excluded_projections``
    ``process/alignment/``                  ``choice`` (the ``align`` option), and what ran: ``method``,
                                            ``channel``, ``reason``, ``applied``, ``consistency_before``
                                            and ``_after``, ``rms_residual`` (px), ``warnings``; or
                                            ``source`` when no alignment ran here
    ======================================  ==============================================================

    The raw (unaligned) projections are not written (a :class:`Reconstruction`
    does not hold them): they are the raw run's, ``process/reconstruction/
    raw_uid``. Dxchange's own convention keeps processed data in
    ``exchange1`` (``exchange_rank``); here ``/exchange/data`` is the aligned
    stack, so that ``read_aps_32id`` and tomopy read what was reconstructed,
    and its ``description`` says so. A value the raw run does not record
    (``rec.metadata``, from :func:`raw_metadata`) is not written.

    Parameters
    ----------
    path
        The ``.h5`` file (overwritten; its folder is created).
    rec
        The reconstruction.
    units
        The projections' units as recorded (the raw run's data key ``units``),
        one for every element stack or ``{name: units}``. Default "counts"
        (photon counts per pixel) for a run of this package's plans; for
        other runs (imported maps may be counts/s) no ``units`` is written
        and the description says they are not known. The phase is "a.u.".
    """
    import h5py

    from . import __version__
    from .analysis.tomo import center_to_tomopy
    from .importers.dxchange import write_dxchange as write_dx
    from .physics.constants import KEV_J

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    md = rec.metadata or {}
    names = list(rec.aligned)
    first = names[0]
    # this package's plans: the element maps are the scanner's photon counts per pixel (no units in the data keys)
    counting = md.get("raw_plan_name") in ("xfct_tomo", "xrf_fly_map", "dwell_pair_series")
    if isinstance(units, Mapping):
        stack_units = {n: units.get(n) for n in names}
    else:
        stack_units = {n: units if units is not None else ("counts" if counting else None) for n in names}
    stack_units.update({n: "a.u." for n in names if n == "phase"})
    normalization = ("none: the maps as recorded (not divided by I0, live time or dwell), shifted by linear "
                     "interpolation; pixels shifted in from outside the field are 0")
    n_out = len(rec.excluded)
    left_out = (f"; {n_out} projection{'s' * (n_out != 1)} left out (process/reconstruction/excluded_projections)"
                if n_out else "")
    raw = f"; the raw projections are in run {rec.raw_uid}" if rec.raw_uid else ""

    def stack_entry(name: str) -> dict:
        what = ("projected phase (relative units) integrated from the DPC x and y maps, the left and right edge "
                "columns set to zero on average" if name == "phase" else f"{name} fluorescence projections")
        known = "" if stack_units[name] else "; units not known here (see the raw run's data key)"
        entry = {"description": f"{what}, aligned: shifted by /exchange/shifts{left_out}{raw}{known}",
                 "axes": "theta:y:x", "normalization": "none" if name == "phase" else normalization}
        return {**entry, **({"units": stack_units[name]} if stack_units[name] else {})}

    extras: dict[str, object] = {"shifts": {
        "value": np.asarray(rec.shifts, float), "units": "px",
        "description": "(dy, dx) applied to each projection of data (its order): the aligned projection is the "
                       "raw one moved down by dy rows and right by dx columns"}}
    for name in names:
        extras[f"data_{name}"] = (h5py.SoftLink("/exchange/data") if name == first
                                  else {"value": rec.aligned[name], **stack_entry(name)})
    for name, vol in rec.volumes.items():
        how = ("FBP, Shepp-Logan filter (the phase always)" if name == "phase" or rec.algorithm == "fbp"
               else f"{rec.algorithm.upper()}, {rec.iterations} iterations")
        u = "a.u." if name == "phase" else stack_units.get(name)
        extras[f"recon_{name}"] = {"value": vol, "axes": "z:y:x",
                                   "description": f"{name} volume (slice = projection row, then y, x), {how}",
                                   **({"units": f"{u} per voxel per projection" if name != "phase" else u}
                                      if u else {})}

    measurement: dict[str, object] = {}
    sample = md.get("sample")
    if isinstance(sample, Mapping):
        for key in ("name", "description", "chemical_formula", "environment", "preparation_date", "comment"):
            if isinstance(sample.get(key), str) and sample[key]:
                measurement[f"sample/{key}"] = sample[key]
    elif sample is not None and str(sample):
        measurement["sample/name"] = str(sample)
    if "instrument" in md:
        measurement["instrument/name"] = md["instrument"]
    if "energy" in md:
        measurement["instrument/monochromator/energy"] = {
            "value": float(md["energy"]) * KEV_J, "units": "J",
            "description": f"incident photon energy, {float(md['energy']):g} keV"}
    if md.get("dwell") is not None:
        measurement["instrument/detector/exposure_time"] = {
            "value": float(md["dwell"]), "units": "s", "description": "dwell per pixel of the scan"}
    if md.get("pixel_size") is not None:
        for axis in ("x", "y"):
            measurement[f"instrument/detector/actual_pixel_size_{axis}"] = {
                "value": float(md["pixel_size"]), "units": "m",
                "description": "scan step: the pixel size on the sample plane"}

    process: dict[str, object] = {
        "reconstruction/algorithm": rec.algorithm,
        "reconstruction/center": {"value": float(rec.center), "units": "px",
                                  "description": "rotation-axis column in the aligned projections, 0-based "
                                                 "(pixel centres at integers)"},
        "reconstruction/center_tomopy": {"value": center_to_tomopy(rec.center), "units": "px",
                                         "description": "the same axis as tomopy's center= (counted from the "
                                                        "detector's left edge)"},
        "reconstruction/software": f"xfct_bluesky {__version__}",
    }
    if rec.algorithm == "fbp":
        process["reconstruction/filter"] = "shepp-logan"
    else:
        process["reconstruction/iterations"] = int(rec.iterations)
        if rec.algorithm in ("mlem", "osem"):
            process["reconstruction/subsets"] = int(rec.subsets)
    if rec.raw_uid:
        process["reconstruction/raw_uid"] = rec.raw_uid
    if md.get("raw_scan_id") is not None:
        process["reconstruction/raw_scan_id"] = md["raw_scan_id"]
    if rec.excluded:
        process["reconstruction/excluded_projections"] = {
            "value": np.asarray(rec.excluded, np.int64),
            "description": "indices into the raw run's projections of those left out; theta, data and shifts hold "
                           "the others"}
    process["alignment/choice"] = {"value": rec.align, "description": "the align option"}
    al = rec.alignment
    if al is not None:
        process.update({"alignment/method": al.method, "alignment/channel": al.channel,
                        "alignment/applied": bool(al.applied)})
        if al.reason:
            process["alignment/reason"] = al.reason
        for when in ("before", "after"):
            value = al.consistency.get(when)
            if isinstance(value, (int, float)) and np.isfinite(value):
                process[f"alignment/consistency_{when}"] = {
                    "value": float(value),
                    "description": f"relative reprojection error of {al.consistency.get('channel', al.channel)} "
                                   f"{'unaligned' if when == 'before' else 'with the proposed shifts'}"}
        rms = np.asarray(al.rms_residual, float)
        if np.all(np.isfinite(rms)):
            process["alignment/rms_residual"] = {"value": rms, "units": "px", "description": "(dy, dx)"}
        if al.warnings:
            process["alignment/warnings"] = [str(w) for w in al.warnings]
    else:
        process["alignment/source"] = {
            "none": "no alignment: zero shifts", "truth": "the simulator's true offsets (simulation)"}.get(
            rec.align, "shifts given to the reconstruction (e.g. a live alignment's), not computed by it")
    return write_dx(path, rec.aligned[first], theta=np.asarray(rec.theta, float), theta_units="deg",
                    data_attrs={"units": None, **stack_entry(first)}, extras=extras,
                    measurement=measurement, process=process, compression="gzip")
