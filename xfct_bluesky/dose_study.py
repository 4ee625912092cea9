"""The dose-fractionation study: many low-dose projections against few high-dose ones.

At equal total dose, a tomography of few long-dwell projections (24 x 30 ms
in the default) is compared with one of many short ones (240 x 3 ms), each
reconstructed after (a) DPC alignment, (b) Zn-based alignment, (c) no
alignment and (d) the simulator's true shifts. The Zn reconstruction is
compared with the phantom's Zn: NRMSE and SSIM.

The founding paper predicts that many DPC-aligned angles at least match few
angles at the same dose (dose fractionation, Hegerl & Hoppe 1976), and that
Zn-only alignment fails at 3 ms.

The Zn maps are the counts in Zn's energy window (ROI), or with ``fit=True``
Zn's fitted counts: every tomography is taken with full spectra, fitted live
(:class:`~xfct_bluesky.callbacks.LiveSpectrumFit`, Poisson maximum likelihood
on a basis calibrated on the summed spectra), and the fitted maps replace the
ROI maps (:func:`~xfct_bluesky.analysis.fitting.maps.prefer_fitted`); the
table says which ("Zn from fitted spectra", "Zn from ROI window").

Scaled to this machine: a 10 um cell (not the 75 um egg) in a 16.8 um field
(56 x 56 px of 300 nm), 16 rows through its centre, with the stage's runout.
Its Zn content is raised so that the projected Zn through its centre, hence
the Zn counts per pixel at each dwell (about 3 at 3 ms), are the egg's: a
10 um cell of the egg's concentration would give 7.5 times fewer counts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

PIXEL = 300e-9


@dataclass
class StudyCase:
    """One reconstruction of the study."""

    schedule: str
    n_angles: int
    dwell: float
    align: str
    nrmse: float
    ssim: float
    alignment_error: tuple[float, float] | None
    total_dose: float


@dataclass
class StudyResult:
    cases: list[StudyCase]
    phantom: np.ndarray = field(repr=False)
    slices: dict = field(repr=False, default_factory=dict)
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)


def phantom_zn(specimen, rows: int, size: int, pixel_size: float = PIXEL, element: str = "Zn",
               probe_fwhm=(700e-9, 500e-9)) -> np.ndarray:
    """The specimen's element density on the reconstruction grid (rows, size, size), blurred by the probe.

    The volume is voxelized (:func:`~xfct_bluesky.physics.specimen.voxelize`)
    and laid out as :mod:`~xfct_bluesky.analysis.tomo` reconstructs it:
    (detector row, slice y, slice x). The probe's Gaussian (horizontal FWHM in
    a slice, vertical FWHM across slices) blurs it as the measurement does:
    no reconstruction can be sharper than the spot.
    """
    from scipy import ndimage

    from .physics.specimen import voxelize

    vox = voxelize(specimen, (rows, size, size), pixel_size, supersample=2)
    vol = np.asarray(vox.elements[element], float)  # (y vertical, z along the beam at 0 deg, x)
    vol = _orient(vol)
    sig_h, sig_v = (f / pixel_size / (2 * np.sqrt(2 * np.log(2))) for f in probe_fwhm)
    return ndimage.gaussian_filter(vol, (sig_v, sig_h, sig_h), mode="constant").astype(np.float32)


def _orient(vol: np.ndarray) -> np.ndarray:
    """Simulator frame (y, z, x) to the reconstruction's (map row, slice row, slice column).

    Map rows run along +y like the voxel grid; the simulator turns the
    specimen the opposite way to :mod:`~xfct_bluesky.analysis.tomo`'s theta,
    so the slice rows run along -z (checked in tests/test_dose_study.py).
    """
    return vol[:, ::-1, :]


def _register_to(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Translate ``recon`` onto ``truth`` (a rigid shift that alignment cannot fix and does not matter)."""
    from scipy import ndimage

    from .analysis.registration import register

    inplane = register(truth.sum(axis=0), recon.sum(axis=0), upsample=10).shift
    vertical = register(truth.sum(axis=1), recon.sum(axis=1), upsample=10).shift[0]
    return ndimage.shift(recon, (vertical, *inplane), order=1, mode="constant")


def compare(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray, *, register: bool = True) -> tuple[float, float]:
    """(NRMSE, SSIM) of a reconstruction against the phantom, after a rigid shift and the best scale.

    The reconstruction is in counts per voxel per projection, the phantom in
    atoms per m^3: the least-squares scale factor over ``mask`` relates them.
    NRMSE is the RMS error over the mask divided by the phantom's RMS there;
    SSIM (scikit-image, data range of the phantom) is the mean over slices.
    """
    try:
        from skimage.metrics import structural_similarity
    except ImportError as err:  # scikit-image is in the test and bench extras
        raise ImportError("the dose study's SSIM needs scikit-image: pip install 'xfct-bluesky[bench]'") from err

    r = _register_to(np.asarray(recon, float), truth) if register else np.asarray(recon, float)
    t = np.asarray(truth, float)
    scale = float((r[mask] * t[mask]).sum() / max((r[mask] ** 2).sum(), 1e-300))
    r = r * scale
    nrmse = float(np.sqrt(np.mean((r[mask] - t[mask]) ** 2)) / np.sqrt(np.mean(t[mask] ** 2)))
    rng = float(t.max() - t.min()) or 1.0
    ssim = float(np.mean([structural_similarity(t[k], r[k], data_range=rng) for k in range(t.shape[0])]))
    return nrmse, ssim


def _acquire(n_angles, dwell, *, size, rows, seed, cell_diameter, fit=False):
    """Run xfct_tomo on the simulated cell; (theta, maps by quantity name, true offsets, total dose, specimen,
    what the Zn maps are)."""
    import tempfile

    from .analysis.fitting.maps import ROI, prefer_fitted
    from .callbacks import LiveSpectrumFit, LiveWorker
    from .devices.sim import make_sim_microprobe
    from .physics import RunoutModel, small_cell
    from .physics.cells import EGG_DIAMETER, EGG_ZN_ATOMS
    from .plans import xfct_tomo
    from .session import Session

    # the egg's projected Zn (counts per pixel) through the centre of a smaller cell
    zn_atoms = EGG_ZN_ATOMS * (cell_diameter / EGG_DIAMETER) ** 2
    specimen = small_cell(cell_diameter, seed=seed, zn_atoms=zn_atoms)
    spectra = tempfile.TemporaryDirectory(prefix="xfct-dose-study-") if fit else None  # only while fitting
    mp = make_sim_microprobe(shape=(rows, size), pixel_size=PIXEL, seed=seed, specimen=specimen,
                             runout=RunoutModel(eccentricity=2e-6, seed=seed), save_spectra=fit,
                             hdf5_directory=spectra.name if fit else None)
    events, starts = [], []

    def keep(name, doc):
        if name == "start":
            starts.append(doc)
        elif name == "event" and doc["data"].get(starts[-1]["quantities"]["Zn"]) is not None:
            events.append(doc["data"])

    with Session(store=False, live=False, persistent_md=False) as session:  # in memory: nothing stored
        session.subscribe("keep", keep)
        if fit:  # its own worker: fitted while the next projections are taken
            fitter = session.subscribe("live_spectrum_fit", LiveSpectrumFit(worker=LiveWorker("dose-study-fit")))
        (uid,) = session.RE(xfct_tomo(mp, shape=(rows, size), pixel_size=PIXEL, n_angles=n_angles, dwell=dwell,
                                      order="golden", md={"purpose": "dose-fractionation study"}))
    theta = np.array([e[mp.rotation.name] for e in events])
    names = {key: name for name, key in reversed(starts[0]["quantities"].items())}
    maps = {names.get(k, k): np.stack([e[k] for e in events]) for k in events[0] if np.ndim(events[0][k]) == 2}
    sources = {"Zn": ROI}
    if fit:
        fitter.wait()
        spectra.cleanup()
        result = fitter.results.get(uid)
        if result is None:
            raise RuntimeError(f"the live spectrum fit of the {n_angles} x {dwell * 1e3:g} ms tomography failed: "
                               f"{fitter.errors[0] if fitter.errors else 'no spectra'}")
        maps, sources = prefer_fitted(maps, theta, result["counts"], result["theta"], ("Zn",))
    return theta, maps, mp.truth.offsets, starts[0]["total_dose"], mp.truth.specimen, sources["Zn"]


def dose_study(
    *,
    schedules=((24, 30e-3), (240, 3e-3)),
    alignments=("dpc", "zn", "none", "truth"),
    size: int = 56,
    rows: int = 16,
    margin: int = 4,
    cell_diameter: float = 10e-6,
    algorithm: str = "mlem",
    iterations: int | None = 10,
    seed: int = 0,
    fit: bool = False,
    progress=None,
) -> StudyResult:
    """Run the study; every schedule gives the same total dose when n_angles x dwell is the same.

    ``rows + 2 * margin`` rows are acquired and reconstructed, the central
    ``rows`` compared: the stage's vertical runout (up to ~2.5 px) moves the
    edge rows in and out of the field, which no alignment can restore.
    MLEM stops at 10 iterations by default: further iterations fit the
    Poisson noise of low-count maps (NRMSE grows from 20 on, for both schedules).
    ``fit=True`` takes full spectra and reconstructs Zn from the live spectrum
    fit's maps instead of the ROI window's (see the module notes); slower.

    Returns the NRMSE and SSIM of each (schedule, alignment) and the central
    slices for a figure.
    """
    from .analysis.align import alignment_error
    from .reconstruction import check_options, reconstruct_maps

    check_options(algorithm, iterations, 1, "dpc")
    for al in alignments:
        check_options(algorithm, iterations, 1, al)
    doses = {round(n * d, 12) for n, d in schedules}
    if len(doses) != 1:
        logger.warning("schedules %s do not give the same total dose (n_angles x dwell differ)", schedules)
    say = progress or (lambda text: None)
    t0 = time.perf_counter()
    cases, slices, phantom, mask, zn_sources = [], {}, None, None, []
    for n_angles, dwell in schedules:
        label = f"{n_angles} x {dwell * 1e3:g} ms"
        say(f"acquiring {label}")
        theta, maps, truth, total_dose, specimen, zn_maps = _acquire(
            n_angles, dwell, size=size, rows=rows + 2 * margin, seed=seed, cell_diameter=cell_diameter, fit=fit)
        if phantom is None:
            full = phantom_zn(specimen, rows + 2 * margin, size)
            phantom = full[margin:margin + rows]
            mask = phantom > 0.02 * phantom.max()
        zn_sources.append(zn_maps)
        for al in alignments:
            say(f"{label}: {al} alignment, {algorithm}")
            rec = reconstruct_maps(maps, theta, elements=("Zn",), algorithm=algorithm, iterations=iterations,
                                   align=al, phase=False, true_offsets=truth)
            err = None if al in ("none", "truth") else tuple(float(e) for e in alignment_error(rec.shifts, theta,
                                                                                               truth))
            # the rigid shift is found on the whole volume, then the central rows are compared
            volume = _register_to(rec.volumes["Zn"], full)[margin:margin + rows]
            nrmse, ssim = compare(volume, phantom, mask, register=False)
            cases.append(StudyCase(label, n_angles, dwell, al, nrmse, ssim, err, float(total_dose)))
            slices[(label, al)] = volume[rows // 2]
    return StudyResult(cases, phantom, slices, time.perf_counter() - t0,
                       {"size": size, "rows": rows, "cell_diameter": cell_diameter, "algorithm": algorithm,
                        "iterations": iterations, "seed": seed, "pixel_size": PIXEL, "margin": margin,
                        "zn_maps": ", ".join(dict.fromkeys(zn_sources))})


def format_study(result: StudyResult) -> str:
    """The study's table as text."""
    lines = [(f"{'schedule':14s} {'total dose':>11s} {'alignment':10s} {'NRMSE':>6s} {'SSIM':>6s} "
              f"{'align err y/x (px)':>18s}")]
    for c in result.cases:
        err = f"{c.alignment_error[0]:.3f}/{c.alignment_error[1]:.3f}" if c.alignment_error else ""
        lines.append(f"{c.schedule:14s} {c.total_dose:9.3g}Gy {c.align:10s} {c.nrmse:6.3f} {c.ssim:6.3f} {err:>18s}")
    s = result.settings
    its = f" ({s['iterations']} iterations)" if s["algorithm"] != "fbp" else ""
    lines.append(f"Zn from {s.get('zn_maps', 'ROI window')}; {s['algorithm'].upper()}{its} of a "
                 f"{s['cell_diameter'] * 1e6:g} um cell: the central "
                 f"{s['rows']} of {s['rows'] + 2 * s['margin']} rows, {s['size']} x {s['size']} voxels of "
                 f"{s['pixel_size'] * 1e9:.0f} nm, against the phantom blurred by the probe (best scale, rigid "
                 "shift removed).")
    return "\n".join(lines)


def study_figure(result: StudyResult, path) -> object:
    """Central slices of every case beside the phantom's."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    schedules = list(dict.fromkeys(c.schedule for c in result.cases))
    aligns = list(dict.fromkeys(c.align for c in result.cases))
    fig, axes = plt.subplots(len(schedules), len(aligns) + 1, figsize=(2.6 * (len(aligns) + 1),
                             2.8 * len(schedules)), constrained_layout=True, squeeze=False)
    truth = result.phantom[result.phantom.shape[0] // 2]
    for r, sched in enumerate(schedules):
        axes[r, 0].imshow(truth, cmap="magma")
        axes[r, 0].set_title("phantom Zn" if r == 0 else "", fontsize=9)
        axes[r, 0].set_ylabel(sched)
        for c, al in enumerate(aligns, start=1):
            case = next(x for x in result.cases if x.schedule == sched and x.align == al)
            img = result.slices[(sched, al)]
            axes[r, c].imshow(img, cmap="magma", vmin=0, vmax=np.percentile(img, 99.5))
            axes[r, c].set_title(f"{al}: NRMSE {case.nrmse:.2f}, SSIM {case.ssim:.2f}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
