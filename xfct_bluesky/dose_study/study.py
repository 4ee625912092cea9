"""The study itself: every schedule, seed and alignment reconstructed and scored; the mean and spread."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .acquire import (
    PIXEL,
    acquire_bluesky,
    calibrate_spectra,
    phantom_zn,
    simulate_tomo,
    study_cell,
)
from .measure import score

logger = logging.getLogger(__name__)

#: The founding paper's dose (2.3e7 Gy: 240 x 3 ms) spread over few long or many short projections.
SCHEDULES = ((24, 30e-3), (72, 10e-3), (240, 3e-3), (720, 1e-3))
ALIGNMENTS = ("auto", "zn", "none", "truth")
#: Rows acquired above and below those compared (the stage's vertical runout is up to ~2.5 px).
MARGIN = 4
#: The figures of merit of a case, as the table names them.
METRICS = ("frc_half", "frc_phantom", "nrmse", "ssim")


@dataclass
class StudyCase:
    """One reconstruction: a schedule, a seed, an alignment, and its scores.

    ``frc_half`` and ``frc_phantom`` are the resolutions (period, px of 300 nm; NaN when the
    correlation did not cross the half-bit threshold, ``*_status`` says why) between the even- and
    odd-angle halves, and against the phantom (:mod:`.measure`). ``alignment_error`` is the RMS
    (dy, dx) px of the shifts against the true runout; ``applied`` whether the alignment's own
    consistency check kept it (None for "none" and "truth"); ``method`` what ran on which channel.
    """

    schedule: str
    n_angles: int
    dwell: float
    align: str
    seed: int
    frc_half: float
    frc_half_status: str
    frc_phantom: float
    frc_phantom_status: str
    nrmse: float
    ssim: float
    alignment_error: tuple[float, float] | None
    applied: bool | None
    method: str
    total_dose: float


@dataclass
class StudyResult:
    """Every case of a study, the phantom's compared rows, the first seed's central slices (by (schedule,
    alignment), scaled onto the phantom), the seconds it took and its settings (``zn_maps``: what Zn was)."""

    cases: list[StudyCase]
    phantom: np.ndarray = field(repr=False)
    slices: dict = field(repr=False, default_factory=dict)
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """{(schedule, align): {metric: (mean, standard deviation over seeds, seeds counted)}}.

        NaN resolutions (no crossing) are left out of the mean; ``seeds counted`` says how many remain and
        ``frc_half_status``, ``frc_phantom_status`` why the others have none ("no signal", "at Nyquist").
        Also ``alignment_error``: the mean (dy, dx) and ``applied``: the seeds whose alignment was kept.
        """
        out: dict = {}
        for case in self.cases:
            out.setdefault((case.schedule, case.align), []).append(case)
        table = {}
        for key, cases in out.items():
            row = {}
            for m in METRICS:
                values = np.array([getattr(c, m) for c in cases], float)
                ok = values[np.isfinite(values)]
                row[m] = (float(ok.mean()) if ok.size else math.nan,
                          float(ok.std(ddof=1)) if ok.size > 1 else math.nan, int(ok.size))
            for m in ("frc_half", "frc_phantom"):  # why the resolutions left out have no number
                row[f"{m}_status"] = ", ".join(sorted({getattr(c, f"{m}_status") for c in cases
                                                       if not math.isfinite(getattr(c, m))}))
            errors = [c.alignment_error for c in cases if c.alignment_error is not None]
            row["alignment_error"] = tuple(np.mean(errors, axis=0)) if errors else None
            row["applied"] = sum(bool(c.applied) for c in cases) if cases[0].applied is not None else None
            row["seeds"] = len(cases)
            row["n_angles"] = cases[0].n_angles
            table[key] = row
        return table


def crowther_period(n_angles: int, diameter_px: float) -> float:
    """The finest period (px) ``n_angles`` over 180 degrees sample in a specimen ``diameter_px`` across.

    Crowther, DeRosier & Klug (1970): ``N = pi D / d`` projections for a resolution (period) ``d``;
    ``pi D / 2`` of them reach the pixel's Nyquist period of 2 px. :DOI:`10.1098/rspa.1970.0119`
    """
    return math.pi * diameter_px / n_angles


def check_study(schedules, *, size: int, rows: int, margin: int, cell_diameter: float) -> tuple:
    """Refuse a study that cannot run, before any work: the schedules as ``xfct_tomo`` takes them, and a
    field of ``size`` px of 300 nm that holds the cell at every angle (its diameter plus twice the stage's
    eccentricity). Returns the schedules as ((int, float), ...)."""
    from .. import validate
    from ..physics.microprobe import MicroprobeSimulator
    from ..plans.planning import MAX_DWELL, MIN_DWELL, tomo_angles
    from .acquire import ECCENTRICITY

    out = []
    for n, dwell in schedules:
        tomo_angles(n, order="golden")
        dwell = validate.between("dwell", dwell, MIN_DWELL, MAX_DWELL, unit=" s per pixel",
                                 fix=f"The scanner's dwell range; {n} projections of {dwell!r} s")
        out.append((int(n), dwell))
    if not out:
        raise ValueError("schedules=() is empty; give (n_angles, dwell) pairs, e.g. ((24, 0.03), (240, 0.003))")
    validate.integer("rows", rows, low=7, fix="The central rows compared, e.g. 16 (3D SSIM needs 7)")
    validate.integer("margin", margin, low=0, fix="Rows acquired above and below those compared, e.g. 4")
    validate.positive("cell_diameter", cell_diameter, unit=" m", fix="Give metres, e.g. 25e-6")
    MicroprobeSimulator(specimen=study_cell(1e-6)).check_map((rows + 2 * margin, size), PIXEL, out[0][1],
                                                              spectra=False)
    need = cell_diameter + 2 * ECCENTRICITY
    if need > size * PIXEL:
        raise ValueError(f"a {cell_diameter * 1e6:g} um cell turning with the stage's {ECCENTRICITY * 1e6:g} um "
                         f"eccentricity needs {need * 1e6:.1f} um; the field of {size} px of 300 nm is "
                         f"{size * PIXEL * 1e6:.1f} um; allowed: size >= {int(np.ceil(need / PIXEL))} px, or give a "
                         "smaller cell")
    return tuple(out)


def dose_study(
    *,
    schedules=SCHEDULES,
    alignments=ALIGNMENTS,
    size: int = 128,
    rows: int = 16,
    margin: int = MARGIN,
    cell_diameter: float = 25e-6,
    algorithm: str = "mlem",
    iterations: int | None = 10,
    seeds=(0,),
    specimen_seed: int = 0,
    fit: bool = False,
    pipeline: str = "simulator",
    progress=None,
) -> StudyResult:
    """Run the study: each schedule (n_angles, dwell s), each seed, each alignment, reconstructed and scored.

    Parameters
    ----------
    schedules : sequence of (int, float)
        (projections, dwell per pixel in s); equal total dose when n_angles x dwell is the same
        (a warning says when not). Default 24 x 30 ms, 72 x 10 ms, 240 x 3 ms, 720 x 1 ms.
    alignments : sequence of {"auto", "dpc", "zn", "none", "truth"}
        As :func:`~xfct_bluesky.reconstruction.reconstruct_maps` takes them: "auto" hands every map
        (DPC among them) to ``align_projections(method="auto")``, "zn" aligns on the Zn maps alone,
        "truth" uses the simulator's true runout.
    size, rows, margin : int
        Field width (px of 300 nm); rows compared, ``rows + 2 margin`` acquired (the stage's vertical
        runout moves the edge rows in and out of the field, which no alignment can restore).
    cell_diameter : float
        The cell (m), whole in the field at every angle; with the egg's projected Zn
        (:func:`~.acquire.study_cell`).
    algorithm, iterations
        MLEM, 10 iterations by default (the package's default: further iterations fit the noise).
    seeds : sequence of int
        One tomography per seed and schedule: the seed draws the detector noise and the runout; the
        specimen is the same (``specimen_seed``), so the spread is the measurement's.
    fit : bool
        Full spectra, fitted per projection (Poisson ML on one calibration), the fitted Zn used;
        default the counts in Zn's ROI window. Slower (about 0.4 s per 24 x 128 projection).
    pipeline : {"simulator", "bluesky"}
        "simulator": the simulator driven directly (:func:`~.acquire.simulate_tomo`); "bluesky":
        ``xfct_tomo`` through a Session (:func:`~.acquire.acquire_bluesky`), slow.
    progress : callable, optional
        Called with a line of text at each step.
    """
    from .. import validate
    from ..analysis.align import alignment_error
    from ..reconstruction import check_options, reconstruct_maps

    for al in ("none", *alignments):
        check_options(algorithm, iterations, 1, al)
    pipeline = validate.one_of("pipeline", pipeline, ("simulator", "bluesky"))
    schedules = check_study(schedules, size=size, rows=rows, margin=margin, cell_diameter=cell_diameter)
    seeds = tuple(validate.integer("seed", s, low=0, fix="Seeds are integers >= 0, e.g. (0, 1, 2)") for s in seeds)
    if not seeds:
        raise ValueError("seeds=() is empty; give one or more seeds, e.g. (0, 1, 2)")
    if len({round(n * d, 12) for n, d in schedules}) != 1:
        logger.warning("schedules %s do not give the same total dose (n_angles x dwell differ)", schedules)
    say = progress or (lambda text: None)
    t0 = time.perf_counter()
    acquired = rows + 2 * margin
    compared = slice(margin, margin + rows)
    specimen = study_cell(cell_diameter, specimen_seed)
    say(f"phantom: a {cell_diameter * 1e6:g} um cell on {acquired} x {size} x {size} voxels")
    phantom = phantom_zn(specimen, acquired, size)
    calibration = None
    if fit and pipeline == "simulator":
        say("calibrating the spectra on the summed spectrum of three 30 ms projections")
        calibration = calibrate_spectra(specimen, size=size, rows=acquired, seed=specimen_seed)
    cases, slices, sources = [], {}, []
    for seed in seeds:
        for n_angles, dwell in schedules:
            label = f"{n_angles} x {dwell * 1e3:g} ms"
            say(f"seed {seed}: acquiring {label}")
            if pipeline == "simulator":
                theta, maps, truth, dose, zn = simulate_tomo(specimen, n_angles, dwell, size=size, rows=acquired,
                                                             seed=seed, calibration=calibration)
            else:
                theta, maps, truth, dose, zn = acquire_bluesky(specimen, n_angles, dwell, size=size, rows=acquired,
                                                               seed=seed, fit=fit)
            sources.append(zn)
            halves = {"even": np.arange(0, n_angles, 2), "odd": np.arange(1, n_angles, 2)}
            for al in alignments:
                say(f"seed {seed}, {label}: {al} alignment, {algorithm}")
                rec = reconstruct_maps(maps, theta, elements=("Zn",), algorithm=algorithm, iterations=iterations,
                                       align=al, phase=False, true_offsets=truth)
                vols = {}
                for name, idx in halves.items():
                    vols[name] = reconstruct_maps({"Zn": maps["Zn"][idx]}, theta[idx], elements=("Zn",),
                                                  algorithm=algorithm, iterations=iterations, shifts=rec.shifts[idx],
                                                  center=rec.center, phase=False).volumes["Zn"]
                s = score(rec.volumes["Zn"], vols["even"], vols["odd"], phantom, compared)
                al_obj = rec.alignment
                err = None if al in ("none", "truth") else tuple(
                    float(e) for e in alignment_error(rec.shifts, theta, truth))
                method = "" if al_obj is None else f"{al_obj.method} on {al_obj.channel}"
                cases.append(StudyCase(label, n_angles, dwell, al, seed, s["frc_half"], s["frc_half_status"],
                                       s["frc_phantom"], s["frc_phantom_status"], s["nrmse"], s["ssim"], err,
                                       None if al_obj is None else bool(al_obj.applied), method, float(dose)))
                if seed == seeds[0]:
                    slices[(label, al)] = s["slice"].astype(np.float32)
    return StudyResult(cases, phantom[compared], slices, time.perf_counter() - t0, {
        "size": size, "rows": rows, "margin": margin, "cell_diameter": cell_diameter, "algorithm": algorithm,
        "iterations": iterations, "seeds": list(seeds), "specimen_seed": specimen_seed, "pixel_size": PIXEL,
        "pipeline": pipeline, "zn_maps": ", ".join(dict.fromkeys(sources))})
