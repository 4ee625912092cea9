"""The study's data: the phantom, and tomographies taken by the simulator directly or through the bluesky plan.

:func:`simulate_tomo` drives :class:`~xfct_bluesky.physics.MicroprobeSimulator`
itself, with the physics objects the simulated devices use (the same
specimen, probe, runout model, detectors and noise): 720 projections of a
128 px field many times over are too slow through the RunEngine and its
documents on a 2-core machine. :func:`acquire_bluesky` runs ``xfct_tomo``
through a :class:`~xfct_bluesky.session.Session` (the plan path, kept for
the tests and small fields).
"""

from __future__ import annotations

import logging

import numpy as np

from .._warnings import collected

logger = logging.getLogger(__name__)

PIXEL = 300e-9
#: The elements fitted in the spectra: every element the simulated cell holds with lines in the fitted range.
FIT_ELEMENTS = ("P", "S", "Cl", "K", "Ca", "Fe", "Cu", "Zn")
#: The stage's runout in the study: a 2 um eccentricity (the physics sheet's 1-10 um) and the model's defaults.
ECCENTRICITY = 2e-6


def study_cell(cell_diameter: float, seed: int = 0):
    """The study's specimen: a cell of ``cell_diameter`` with the egg's projected Zn through its centre.

    Its Zn content is raised over the egg's concentration by EGG_DIAMETER / ``cell_diameter`` so that
    the projected Zn through its centre, hence the Zn counts per pixel at each dwell (about 1 at 1 ms,
    3 at 3 ms), are those of the founding paper's 75 um egg.
    """
    from ..physics import small_cell
    from ..physics.cells import EGG_DIAMETER, EGG_ZN_ATOMS

    return small_cell(cell_diameter, seed=seed, zn_atoms=EGG_ZN_ATOMS * (cell_diameter / EGG_DIAMETER) ** 2)


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

    from ..physics.specimen import voxelize

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


def calibrate_spectra(specimen, *, size: int, rows: int, dwell: float = 30e-3, seed: int = 0):
    """The spectrum calibration of the study (one per study, as the live fit makes one per run).

    Fitted (:func:`~xfct_bluesky.analysis.fitting.fit_spectra`, Poisson, on the summed spectrum) on
    three projections of the specimen at ``dwell``, taken apart from every tomography.
    """
    from ..analysis.fitting import fit_spectra
    from ..physics import MicroprobeSimulator, RunoutModel

    sim = MicroprobeSimulator(specimen, seed=seed + 7919, runout=RunoutModel(eccentricity=ECCENTRICITY, seed=seed))
    summed = sum(sim.simulate_map((rows, size), PIXEL, dwell, theta, spectra=True).spectra.sum(axis=(0, 1))
                 for theta in (0.0, 60.0, 120.0))
    with collected() as caught:  # logged, as the live fit logs them
        fit = fit_spectra(summed[None], sim.vortex.energies, FIT_ELEMENTS, refine=True, sigma=False)
    for w in caught:
        logger.warning("dose study: spectrum calibration: %s", w.message)
    return fit.calibration


def simulate_tomo(specimen, n_angles: int, dwell: float, *, size: int, rows: int, seed: int, calibration=None):
    """One tomography from the simulator itself: golden-angle order, as ``xfct_tomo(order="golden")`` takes it.

    Returns (theta, maps by name, true offsets (n, 2) px, total dose Gy, what the Zn maps are). With a
    ``calibration`` (:func:`calibrate_spectra`) full spectra are simulated and each projection's fitted
    on that frozen basis (Poisson maximum likelihood, as :class:`~xfct_bluesky.callbacks.LiveSpectrumFit`
    does); the fitted Zn replaces the ROI window's.
    """
    from ..analysis.fitting import fit_spectra
    from ..analysis.fitting.maps import FITTED, ROI
    from ..physics import MicroprobeSimulator, RunoutModel
    from ..plans.planning import tomo_angles

    sim = MicroprobeSimulator(specimen, seed=seed, runout=RunoutModel(eccentricity=ECCENTRICITY, seed=seed))
    theta = np.asarray(tomo_angles(n_angles, order="golden"), float)
    stacks: dict[str, list] = {}
    said: set[str] = set()
    for t in theta:
        res = sim.simulate_map((rows, size), PIXEL, dwell, float(t), spectra=calibration is not None)
        for key, value in res.maps.items():
            stacks.setdefault(key, []).append(value)
        if calibration is not None:
            with collected() as caught:  # logged once each, as the live fit does
                fit = fit_spectra(res.spectra, sim.vortex.energies, FIT_ELEMENTS, calibration=calibration,
                                  refine=False, sigma=False)
            for w in caught:
                said.add(str(w.message)[:200])
            stacks.setdefault("_fitted_Zn", []).append(fit.counts["Zn"].astype(np.float32))
    for text in sorted(said):
        logger.warning("dose study, %d x %g ms: spectrum fit: %s", n_angles, dwell * 1e3, text)
    maps = {key: np.stack(values) for key, values in stacks.items()}
    source = ROI
    if calibration is not None:
        maps["Zn"] = maps.pop("_fitted_Zn")
        source = FITTED
    return theta, maps, sim.truth.offsets, n_angles * sim.dose(dwell, PIXEL), source


def acquire_bluesky(specimen, n_angles: int, dwell: float, *, size: int, rows: int, seed: int, fit: bool = False):
    """Run ``xfct_tomo`` on the simulated microprobe through a Session (in memory: nothing stored).

    Returns what :func:`simulate_tomo` returns. ``fit=True`` takes full spectra, fits them live
    (:class:`~xfct_bluesky.callbacks.LiveSpectrumFit` on its own worker) and uses the fitted Zn
    (:func:`~xfct_bluesky.analysis.fitting.maps.prefer_fitted`).
    """
    import tempfile

    from ..analysis.fitting.maps import ROI, prefer_fitted
    from ..callbacks import LiveSpectrumFit, LiveWorker
    from ..devices.sim import make_sim_microprobe
    from ..physics import RunoutModel
    from ..plans import xfct_tomo
    from ..session import Session

    spectra = tempfile.TemporaryDirectory(prefix="xfct-dose-study-") if fit else None  # only while fitting
    mp = make_sim_microprobe(shape=(rows, size), pixel_size=PIXEL, seed=seed, specimen=specimen,
                             runout=RunoutModel(eccentricity=ECCENTRICITY, seed=seed), save_spectra=fit,
                             hdf5_directory=spectra.name if fit else None)
    events, starts = [], []

    def keep(name, doc):
        if name == "start":
            starts.append(doc)
        elif name == "event" and doc["data"].get(starts[-1]["quantities"]["Zn"]) is not None:
            events.append(doc["data"])

    with Session(store=False, live=False, persistent_md=False) as session:
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
    return theta, maps, mp.truth.offsets, float(starts[0]["total_dose"]), sources["Zn"]
