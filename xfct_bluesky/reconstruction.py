"""From a stored tomography to volumes: align, reconstruct, publish, export.

:func:`reconstruct_tomo` aligns a run's projections (DPC by default, see
:mod:`xfct_bluesky.analysis.align`), applies the shifts once to every map,
and reconstructs each element (and the phase integrated from the two DPC
gradients) with :mod:`xfct_bluesky.analysis.tomo`. :func:`publish` sends the
volumes as a derived run (``plan_name`` "xfct_reconstruction", ``raw_uid``
linking the raw run) to any document consumer, e.g. a TiledWriter, and
:func:`write_dxchange` saves a DXchange-style HDF5 file tomopy users can open.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis.channels import find_map
from .analysis.tomo import ReconstructionWarning

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


def _check_choice(name: str, value, allowed: Sequence[str]) -> str:
    v = str(value).lower()
    if v not in allowed:
        raise ValueError(f"{name}={value!r} is not known; allowed: {', '.join(map(repr, allowed))}")
    return v


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
    algorithm = _check_choice("algorithm", algorithm, ALGORITHMS)
    align = _check_choice("align", align, ALIGNMENTS)
    if iterations is None:
        iterations = DEFAULT_ITERATIONS[algorithm]
    if isinstance(iterations, bool) or not float(iterations).is_integer() or (algorithm != "fbp" and iterations < 1):
        raise ValueError(f"iterations={iterations!r}: allowed an integer >= 1 for {algorithm}; e.g. 30")
    if isinstance(subsets, bool) or not float(subsets).is_integer() or subsets < 1:
        raise ValueError(f"subsets={subsets!r}: allowed an integer >= 1 (OSEM ordered subsets); e.g. 8")
    if algorithm == "osem" and subsets == 1:
        subsets = 8
    return algorithm, int(iterations), int(subsets), align


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


def align_maps(theta, maps: Mapping[str, np.ndarray], align: str = "auto", *, true_offsets=None,
               method: str = "auto", channel: str | None = None):
    """(shifts (n, 2), centre column or NaN, Alignment or None) for one alignment choice.

    ``align="auto"`` hands every map to :func:`~xfct_bluesky.analysis.align.align_projections`
    with ``method`` and ``channel``; "dpc" registers the diagonal DPC maps pairwise, "zn" the Zn
    maps. Every choice but "none" and "truth" reports its consistency and is not applied when it
    leaves the stack less consistent; its warnings are logged (and kept in ``Alignment.warnings``).
    """
    from .analysis.align import AlignmentWarning, align_projections

    n = len(theta)
    ny, nx = next(iter(maps.values())).shape[1:]
    if align == "none":
        return np.zeros((n, 2)), float("nan"), None
    if align == "truth":
        if true_offsets is None:
            raise ValueError("align='truth' needs the simulator's true offsets (simulation only)")
        offsets = np.asarray(true_offsets, float)
        if offsets.shape != (n, 2):
            raise ValueError(f"true offsets have shape {offsets.shape}; expected {(n, 2)} (one per projection)")
        return -offsets, (nx - 1) / 2, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AlignmentWarning)
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
    theta,
    maps: Mapping[str, np.ndarray],
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
) -> Reconstruction:
    """Align and reconstruct projections given as arrays (see :func:`reconstruct_tomo`)."""
    from .analysis import tomo
    from .analysis._checks import negatives, non_negative, real
    from .analysis._checks import shifts as check_shifts
    from .analysis.align import apply_shifts
    from .analysis.consistency import angle_problems, angles_checked, check_angles

    algorithm, iterations, subsets, align = check_options(algorithm, iterations, subsets, align)
    elements = check_elements(elements)
    theta = real("theta", theta).astype(float).ravel()
    if theta.size < 2:
        raise ValueError(f"{theta.size} projection(s): a reconstruction needs at least 2 angles")
    angle_problems(theta)  # angles from one direction only: refused before any work
    keys = {}
    for el in elements:
        key = find_map(maps, el)
        if key is None:
            raise ValueError(f"element {el!r} has no map in this run; maps: {sorted(maps)}")
        keys[el] = key
    for key, value in maps.items():
        real(f"map {key!r}", value)
    if algorithm in ("mlem", "osem"):  # photon counts: integer counts below 0 are impossible
        for key in keys.values():
            if np.asarray(maps[key]).dtype.kind == "i":
                non_negative(f"map {key!r}", maps[key],
                             fix="Integer counts below zero are a reading error (an overflow?): check the data")
            elif found := negatives(f"map {key!r}", maps[key]):  # fitted maps dip below zero in noise
                warnings.warn(f"{found}: {algorithm.upper()} models photon counts, so they are set to 0 for it; "
                              "for maps whose negative values are real use algorithm='sirt' or 'fbp'",
                              ReconstructionWarning, stacklevel=2)
    say = progress or (lambda text: None)
    alignment = None
    with angles_checked():  # warned about once below, for the projections reconstructed
        if shifts is None:
            say(f"aligning {theta.size} projections ({align})")
            shifts, found_center, alignment = align_maps(theta, maps, align, true_offsets=true_offsets,
                                                         method=align_method, channel=channel)
            if alignment is not None:
                c = alignment.consistency
                say(f"alignment: {alignment.reason}; reprojection error {c.get('before')} unaligned -> "
                    f"{c.get('after')} aligned{'' if alignment.applied else ' (NOT applied)'}")
        else:
            found_center = float("nan")
    shifts = check_shifts(shifts, theta.size, excluded_ok=True)
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
        warnings.warn(text, ReconstructionWarning, stacklevel=2)
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
        volumes = {}
        for name, stack in aligned.items():
            say(f"reconstructing {name} ({'fbp' if name == 'phase' else algorithm})")
            if name == "phase" or algorithm == "fbp":
                volumes[name] = tomo.fbp(stack, theta, center=center, filter="shepp-logan")
            elif algorithm == "sirt":
                volumes[name] = tomo.sirt(stack, theta, iterations=iterations, center=center)
            else:  # linear interpolation of counts >= 0 stays >= 0, but for float32 rounding
                volumes[name] = tomo.mlem(np.clip(stack, 0, None), theta, iterations=iterations, subsets=subsets,
                                          center=center)
    return Reconstruction(volumes, aligned, theta, np.asarray(shifts, float), float(center), algorithm,
                          iterations, subsets, align, alignment, excluded=tuple(int(k) for k in left_out))


def reconstruct_tomo(tomo_data, **kwargs) -> Reconstruction:
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

    Notes
    -----
    Nothing is lost and nothing is silent: a projection the alignment left
    out (no signal: a closed shutter, a beam dump) is left out of the volume
    with a :class:`~xfct_bluesky.analysis.tomo.ReconstructionWarning` naming
    it (``Reconstruction.excluded``), never shifted by NaN; angles covering
    well under 180 degrees (a missing wedge) or repeating each other are
    warned about once with the consequence; angles all in one direction,
    complex maps and, for MLEM/OSEM, negative counts are refused naming the
    map, the value and its index.
    """
    rec = reconstruct_maps(tomo_data.theta, tomo_data.maps, **kwargs)
    rec.raw_uid = tomo_data.uid
    rec.metadata = raw_metadata(tomo_data.metadata)
    return rec


def raw_metadata(start: Mapping) -> dict:
    """What a derived run copies from its raw run's start document.

    Not ``scan_id``: a catalog's ``cat[scan_id]`` would then find the derived
    run instead of the scan; it goes in as ``raw_scan_id``.
    """
    md = {k: start[k] for k in ("sample", "pixel_size", "dwell", "total_dose") if k in start}
    if "scan_id" in start:
        md["raw_scan_id"] = start["scan_id"]
    return md


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
        "plan_name": "xfct_reconstruction", "raw_uid": rec.raw_uid, "algorithm": rec.algorithm,
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


def write_dxchange(path: str | Path, rec: Reconstruction) -> Path:
    """Write a DXchange-style HDF5 file of the aligned projections and the volumes.

    Layout (tomopy/dxchange conventions): ``/exchange/data`` the aligned
    projections of the first element (n_angles, n_rows, n_cols),
    ``/exchange/theta`` in degrees, ``/exchange/data_<name>`` every aligned
    stack, ``/exchange/recon_<name>`` every volume, ``/exchange/shifts``
    (dy, dx) px; the rotation centre and options as attributes of
    ``/exchange``; ``/implements`` lists the groups.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(rec.aligned))
    with h5py.File(path, "w") as f:
        f.create_dataset("implements", data="exchange:measurement:process")
        ex = f.create_group("exchange")
        ex.create_dataset("data", data=rec.aligned[first], compression="gzip")
        ex["data"].attrs["description"] = f"aligned {first} projections (n_angles, n_rows, n_cols)"
        ex.create_dataset("theta", data=rec.theta)
        ex["theta"].attrs["units"] = "degrees"
        ex.create_dataset("shifts", data=rec.shifts)
        ex["shifts"].attrs["units"] = "pixels (dy, dx) applied to each projection"
        for name, stack in rec.aligned.items():
            ex.create_dataset(f"data_{name}", data=stack, compression="gzip")
        for name, vol in rec.volumes.items():
            ex.create_dataset(f"recon_{name}", data=vol, compression="gzip")
        for key, value in (("center", rec.center), ("algorithm", rec.algorithm), ("iterations", rec.iterations),
                           ("subsets", rec.subsets), ("align", rec.align), ("raw_uid", rec.raw_uid or "")):
            ex.attrs[key] = value
        if rec.excluded:  # projections left out (no signal): theta, data and shifts hold the others
            ex.attrs["excluded_projections"] = np.asarray(rec.excluded, np.int64)
        meas = f.create_group("measurement/sample")
        for key, value in rec.metadata.items():
            if value is not None:
                meas.attrs[key] = value
    return path
