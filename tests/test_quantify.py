"""Quantification (issue 13, item 3): areal densities from a standard, mass from DPC, concentrations.

Simulated: a thin film of known areal densities (Ca, Fe, Cu as the AXO standard, and Zn) is the standard;
a freeze-dried sphere of protein with Zn at a known concentration is the specimen. Both are mapped by the
simulator (Poisson spectra, I0, live time, DPC), fitted, and quantified; the truth is the simulator's
noiseless projection at every pixel. Self-absorption is off in both: the thin standard has none, and the
specimen's (1 % for Zn in the egg) is a matrix correction this module does not make.

Real: the AXO standard measured at 2-ID-E (XRF-Maps' test dataset, tests/data/xrf-maps-2ide).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from xfct_bluesky.analysis import fit_spectra
from xfct_bluesky.analysis.fitting import Calibration, read_maps_override
from xfct_bluesky.analysis.quantify import (
    PROTEIN,
    DetectorResponse,
    StandardCalibration,
    areal_density,
    calibrate_standard,
    concentration,
    delta_per_density,
    projected_mass,
    read_standard_info,
)
from xfct_bluesky.analysis.tomo import fbp
from xfct_bluesky.importers import read_mda
from xfct_bluesky.physics import (
    AnalyticSpecimen,
    Ellipsoids,
    Material,
    MicroprobeSimulator,
    Probe,
    no_runout,
)
from xfct_bluesky.physics import constants as C
from xfct_bluesky.physics.detectors import VortexModel

DATA = Path(__file__).parent / "data" / "xrf-maps-2ide"
ELEMENTS = ("Ca", "Fe", "Cu", "Zn")
#: The fit's response matched to the simulator's VortexModel: no tail, its 0.5 % shelf, no escape peaks,
#: its Compton peak (10.0 keV: 90.1 degrees) without tail.
SIMULATOR = Calibration(f_tail=0.0, f_step=0.005, escape=0.0, compton_f_tail=0.0, compton_angle=90.1)
#: The simulated standard (ug/cm^2): the AXO film's certified Ca, Fe, Cu, and Zn.
FILM = {"Ca": 1.931, "Fe": 0.504, "Cu": 0.284, "Zn": 0.30}
RADIUS = 5e-6  # the specimen: a sphere of freeze-dried protein
DENSITY = 0.3  # g/cm^3
ZN_PPM = 200.0  # ug/g; Fe and Cu at a tenth, the egg's ratio


def simulator(specimen, seed: int, flux_factor: float = 1.0) -> MicroprobeSimulator:
    """The microprobe at ``flux_factor`` x the paper's flux, with the dead time of the real AXO map (live
    0.866 s per 1 s at 7.6 kcps: 19 us)."""
    return MicroprobeSimulator(specimen, seed=seed, runout=no_runout(), probe=Probe(flux=Probe().flux * flux_factor),
                               vortex=VortexModel(self_absorption=False, dead_time=19e-6))


def exposure(result) -> dict:
    return {"i0": result.maps["i0"], "live_time": result.maps["live_time"], "real_time": result.dwell}


@pytest.fixture(scope="module")
def standard():
    """A 100 nm film, 1 cm wide: uniform over the 10 um map; 20 x 20 px of 10 ms at twice the specimen's
    flux, so that its I0 and its live fraction (0.79) differ from the specimen's (0.99)."""
    thickness = 1e-5  # cm
    film = Ellipsoids([[0, 0, 0]], [[1e-2, 1e-2, thickness / 200]],
                      Material(density=3.0, elements={k: v / thickness for k, v in FILM.items()}))
    sim = simulator(AnalyticSpecimen([film], radius=1e-4), seed=1, flux_factor=2.0)
    result = sim.simulate_map((20, 20), 500e-9, 10e-3, record=False)
    fit = fit_spectra(result.spectra, sim.vortex.energies, ELEMENTS, calibration=SIMULATOR)
    return sim, result, fit


@pytest.fixture(scope="module")
def cell():
    """The sphere, 32 x 32 px of 400 nm at 50 ms: ~7000 Zn photons."""
    zn = ZN_PPM * 1e-6 * DENSITY * 1e6  # ug/cm^3
    body = Ellipsoids([[0, 0, 0]], [[RADIUS] * 3],
                      Material(density=DENSITY, elements={"Zn": zn, "Fe": zn / 10, "Cu": zn / 10}))
    sim = simulator(AnalyticSpecimen([body], radius=RADIUS), seed=2)
    result = sim.simulate_map((32, 32), 400e-9, 50e-3, record=False)
    fit = fit_spectra(result.spectra, sim.vortex.energies, ELEMENTS, calibration=SIMULATOR)
    return sim, result, fit


def simulator_sensitivity(sim, element: str) -> float:
    """The simulator's sensitivity in the calibration's units: detected cps per ug/cm^2 per I0 count rate."""
    return sim.vortex.element_sensitivity(element, sim.probe.flux) / (sim.probe.flux * sim.i0_efficiency)


# ------------------------------------------------------------------------------------ the standard ---
def test_standard_gives_the_simulators_sensitivities(standard):
    sim, result, fit = standard
    cal = calibrate_standard(fit, FILM, **exposure(result))
    for element in ELEMENTS:  # measured: within 3 sigma of the counting statistics (~1.1 %)
        truth = simulator_sensitivity(sim, element)
        assert abs(cal.measured[element] - truth) < 3 * cal.measured_sigma[element], element
    # the curve's scale is photons per I0 count x solid angle / 4 pi: the simulator's 1 / 1e-3 x 0.0168
    assert cal.scale == pytest.approx(sim.vortex.solid_angle_fraction / sim.i0_efficiency, rel=0.01)
    # and xraylib's cross-sections through the Vortex-EM's window, helium and sensor give the simulator's
    # tabulated sensitivities (physics sheet) for every element it knows, P to Zn, to 1 %
    for element in ("P", "S", "Cl", "K", "Ca", "Fe", "Cu", "Zn"):
        assert cal.curve(element) == pytest.approx(simulator_sensitivity(sim, element), rel=0.01), element


def test_zn_interpolated_from_an_axo_like_standard(standard):
    """A standard of Ca, Fe and Cu only: Zn's sensitivity from the curve agrees with the film's own Zn."""
    sim, result, fit = standard
    axo = calibrate_standard(fit, {k: FILM[k] for k in ("Ca", "Fe", "Cu")}, **exposure(result))
    own = calibrate_standard(fit, FILM, **exposure(result))
    assert "Zn" not in axo.measured and axo.sensitivity("Zn") == axo.curve("Zn")
    assert abs(axo.sensitivity("Zn") - own.measured["Zn"]) < 3 * math.hypot(axo.sigma("Zn"), own.measured_sigma["Zn"])
    assert axo.sensitivity("Zn") == pytest.approx(simulator_sensitivity(sim, "Zn"), rel=0.02)
    assert all(abs(d) < 0.03 for d in axo.deviations.values()), axo.deviations


# ---------------------------------------------------------------------------- the specimen's metal ---
def test_zn_areal_density_recovered_within_its_error(standard, cell):
    _, std_result, std_fit = standard
    _, result, fit = cell
    cal = calibrate_standard(std_fit, FILM, **exposure(std_result))
    zn = areal_density(fit, cal, **exposure(result), elements="Zn")
    truth = result.expected.elements["Zn"]
    # the total: within 3 sigma (counts of the specimen and of the standard, ~1.6 % together)
    sigma_counts = np.sqrt(np.sum((fit.sigma["Zn"] / (cal.measured["Zn"] * result.maps["i0"] / result.dwell
                                                      * result.maps["live_time"])) ** 2))
    sigma_total = math.hypot(sigma_counts, truth.sum() * cal.measured_sigma["Zn"] / cal.measured["Zn"])
    assert abs(zn.values["Zn"].sum() - truth.sum()) < 3 * sigma_total
    # per pixel: the sigma describe the scatter about the truth (rms over the disc)
    disc = truth > 0.1 * truth.max()
    assert disc.sum() > 300
    rms_error = np.sqrt(np.mean((zn.values["Zn"] - truth)[disc] ** 2))
    assert rms_error / np.sqrt(np.mean(zn.sigma["Zn"][disc] ** 2)) == pytest.approx(1.0, abs=0.1)


# ------------------------------------------------------------------------------------ mass and ppm ---
def test_delta_per_density_is_the_simulators():
    import xraylib

    assert delta_per_density(PROTEIN, 10.2) == pytest.approx(C.PROTEIN_DELTA_PER_DENSITY, rel=0.002)

    def electrons_per_gram(formula):  # far from absorption edges delta / rho goes as Z / A
        parsed = xraylib.CompoundParser(formula)
        return sum(w * z / xraylib.AtomicWeight(z) for z, w in zip(parsed["Elements"], parsed["massFractions"]))

    ratio = delta_per_density("H2O", 10.2) / delta_per_density(PROTEIN, 10.2)  # ice: 4.3 % more per gram
    assert ratio == pytest.approx(electrons_per_gram("H2O") / electrons_per_gram(PROTEIN), rel=0.002)


def test_dpc_integrates_to_the_projected_phase_and_mass(cell):
    sim, result, _ = cell
    mass = projected_mass(result.maps["dpc_x"], result.maps["dpc_y"], pixel_size=result.pixel_size,
                          numerical_aperture=sim.probe.numerical_aperture,
                          central_stop_ratio=sim.dpc.central_stop_ratio, energy=sim.probe.energy_kev)
    truth = result.expected
    peak = truth.mass.max()  # 0.3 mg/cm^2 through the centre
    assert np.sqrt(np.mean((mass.mass - truth.mass) ** 2)) < 0.01 * peak
    assert mass.mass.sum() == pytest.approx(truth.mass.sum(), rel=0.01)
    phase = 2 * math.pi * truth.opd / C.wavelength(sim.probe.energy_kev)  # 0.33 rad through the centre
    assert np.abs(mass.phase - phase).max() < 0.03 * phase.max()


def test_zn_ppm_is_the_known_concentration(standard, cell):
    _, std_result, std_fit = standard
    sim, result, fit = cell
    zn = areal_density(fit, calibrate_standard(std_fit, FILM, **exposure(std_result)), **exposure(result))
    mass = projected_mass(result.maps["dpc_x"], result.maps["dpc_y"], pixel_size=result.pixel_size,
                          numerical_aperture=sim.probe.numerical_aperture,
                          central_stop_ratio=sim.dpc.central_stop_ratio, energy=sim.probe.energy_kev)
    ppm = concentration(zn.values["Zn"], mass.mass, element="Zn", metal_sigma=zn.sigma["Zn"])
    inside = np.isfinite(ppm.ppm)
    assert 300 < inside.sum() < 560  # the disc, 5 um radius at 0.4 um pixels: 490 px; its rim left out
    # the region's concentration (total Zn over total mass): 200 ppm within 3 sigma of the counts (~1.6 %)
    region = zn.values["Zn"][inside].sum() / mass.mass[inside].sum()
    sigma = region * math.hypot(np.sqrt(np.sum(zn.sigma["Zn"][inside] ** 2)) / zn.values["Zn"][inside].sum(), 0.01)
    assert abs(region - ZN_PPM) < 3 * sigma, (region, sigma)
    # per pixel: the median near 200, mmol/kg by Zn's 65.38 g/mol
    assert np.median(ppm.ppm[inside]) == pytest.approx(ZN_PPM, rel=0.1)
    assert ppm.mmol_per_kg[inside].mean() == pytest.approx(ppm.ppm[inside].mean() / 65.38, rel=1e-3)


def test_volume_ppm_is_the_concentration_the_projections_dilute():
    """Zn in a core (1.5 um radius) inside a protein sphere (4 um): the projections' ratio mixes the core
    with the shell above and below it; the reconstructions' voxel ratio gives the core's own 300 ppm."""
    core_ppm = 300.0
    shell = Ellipsoids([[0, 0, 0]], [[4e-6] * 3], Material(density=DENSITY))
    core = Ellipsoids([[1e-6, 0, 0.5e-6]], [[1.5e-6] * 3], Material(elements={"Zn": core_ppm * DENSITY}))
    specimen = AnalyticSpecimen([shell, core], radius=4e-6)
    u = (np.arange(48) - 23.5) * 0.2e-6
    v = np.array([-0.1e-6, 0.1e-6])
    theta = np.arange(90) * 2.0
    views = [specimen.project(t, u, v) for t in theta]
    mass = fbp(np.stack([p.mass for p in views]), theta)
    metal = fbp(np.stack([p.elements["Zn"] for p in views]), theta)
    volume = concentration(metal, mass, element="Zn")
    core_voxels = metal > 0.8 * metal.max()
    assert core_voxels.sum() > 20
    assert np.median(volume.ppm[core_voxels]) == pytest.approx(core_ppm, rel=0.05)
    projected = concentration(views[0].elements["Zn"], views[0].mass, element="Zn")
    assert np.nanmax(projected.ppm) < 0.5 * core_ppm  # diluted by the shell along the beam


# ---------------------------------------------------------------------- the real AXO standard ---
#: The calibration test_fitting_real.py refines on this standard from the beamline's override file (23 s
#: of fitting); given here so that this test fits the pixels only.
AXO_CALIBRATION = Calibration(offset=-0.0054929, gain=0.0095953147, fwhm_offset=0.11449105, fanoprime=0.00023556439,
                              incident_energy=10.033761, compton_angle=93.249349, compton_fwhm_corr=1.5400170,
                              compton_f_tail=0.25534137, compton_hi_f_tail=0.0039171793, f_tail=0.012176722,
                              gamma=2.2101209, f_step=0.037894874)
#: test_fitting_real's families: the override's ELEMENTS_TO_FIT and the AXO film's Al, La, Mo, Pd, Pb.
AXO_ELEMENTS = ("Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca", "Ti", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
                "La_L", "Mo_L", "Pd_L", "Pb_M")


def test_standard_info_is_read_as_xrf_maps_reads_it():
    (axo,) = read_standard_info(DATA / "maps_standardinfo.txt")
    assert axo.filename == "axo_std.mda"
    assert axo.areal_densities == {"Ca": 1.931, "Fe": 0.504, "Cu": 0.284}


@pytest.fixture(scope="module")
def axo():
    (info,) = read_standard_info(DATA / "maps_standardinfo.txt")
    override = read_maps_override(DATA / "maps_fit_parameters_override.txt")
    mda = read_mda(DATA / "mda" / info.filename)
    spectra = mda.detector("dxpXMAP2xfm3:mca1.VAL").data
    energy = mda.extra_pv("dxpXMAP2xfm3:mca1.CALO").scalar + mda.extra_pv("dxpXMAP2xfm3:mca1.CALS").scalar * \
        np.arange(spectra.shape[-1])
    fit = fit_spectra(spectra, energy, AXO_ELEMENTS, calibration=AXO_CALIBRATION, refine=False,
                      energy_range=override.energy_range)
    assert fit.converged.all()
    times = {
        "i0": mda.detector(override.raw["US_IC"][-1]).data,  # the upstream ion chamber, 2xfm:scaler3_cts1.B
        "live_time": mda.detector("dxpXMAP2xfm3:mca1.ELTM").data,
        # the scaler's 25 MHz clock (XRF-Maps' 2-ID-E TIME_SCALER_CLOCK): 2.5e7 ticks, 1 s per pixel
        "real_time": mda.detector("2xfm:scaler3_cts1.A").data / 25e6,
    }
    return info, override, fit, times


def test_axo_sensitivities_and_the_curve_through_them(axo):
    info, override, fit, times = axo
    cal = calibrate_standard(fit, info.areal_densities, detector=DetectorResponse.from_maps_override(override),
                             **times)
    assert cal.incident_energy == pytest.approx(10.034, abs=1e-3)  # the fitted elastic peak
    s = cal.measured  # Ca 2.41e-3, Fe 6.87e-3, Cu 1.22e-2 counts / (ug/cm^2 x I0 count/s x s)
    assert 0 < s["Ca"] < s["Fe"] < s["Cu"]
    assert all(cal.measured_sigma[k] < 0.01 * s[k] for k in s)
    # the curve: rising smoothly from K to Zn (its K edge, 9.66 keV, below the beam), log-concave
    curve = np.log([cal.curve(e) for e in ("K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn")])
    assert np.all(np.diff(curve) > 0)
    assert np.all(np.abs(np.diff(curve, 2)) < 0.15)
    # how far the certified elements fall from it: Ca +22 %, Fe -7.5 %, Cu +2.3 % (the fit, mostly Cu's)
    d = cal.deviations
    assert 0.15 < d["Ca"] < 0.30 and -0.12 < d["Fe"] < -0.03 and abs(d["Cu"]) < 0.06, d


def test_axo_quantifies_itself(axo):
    """Calibrated on half the pixels (a checkerboard), the other half gives the certified values within
    3 sigma of their scatter, and the propagated sigma describe the pixels' scatter (Ca's 1.3x: the
    film's non-uniformity, 2.3 % rms beyond the counting statistics)."""
    info, _, fit, times = axo
    half = np.add.outer(np.arange(11), np.arange(11)) % 2 == 0
    masked = {k: np.where(half, v, 0.0) for k, v in fit.counts.items()}
    sigma = {k: np.where(half, v, 0.0) for k, v in fit.sigma.items()}
    cal = calibrate_standard(masked, info.areal_densities, sigma=sigma, incident_energy=fit.calibration.incident_energy,
                             **{**times, "i0": np.where(half, times["i0"], 0)})
    quantified = areal_density(fit, cal, **times, elements=tuple(info.areal_densities))
    for element, certified in info.areal_densities.items():
        values = quantified.values[element][~half]
        scatter = values.std() / math.sqrt(values.size)
        assert abs(values.mean() - certified) < 3 * math.hypot(scatter, cal.measured_sigma[element] /
                                                              cal.measured[element] * certified), element
        pulls = (values - values.mean()) / quantified.sigma[element][~half]
        assert 0.7 < pulls.std() < (1.6 if element == "Ca" else 1.2), (element, pulls.std())


# -------------------------------------------------------------------------------------- bad input ---
def test_bad_input_names_the_value_and_the_fix(tmp_path, standard):
    _, result, fit = standard
    kw = exposure(result)
    with pytest.raises(ValueError, match=r"no counts for \['Ti'\].*Fit the standard"):
        calibrate_standard(fit, {"Ti": 1.0}, **kw)
    with pytest.raises(ValueError, match=r"areal_densities\['Ca'\]=-1.*> 0"):
        calibrate_standard(fit, {"Ca": -1.0}, **kw)
    with pytest.raises(ValueError, match="i0 has negative values"):
        calibrate_standard(fit, FILM, **{**kw, "i0": -kw["i0"].astype(float)})
    with pytest.raises(ValueError, match="live_time exceeds real_time"):
        calibrate_standard(fit, FILM, **{**kw, "real_time": 1e-3})
    with pytest.raises(ValueError, match="incident_energy is needed"):
        calibrate_standard(dict(fit.counts), FILM, **kw)
    with pytest.raises(ValueError, match="give calibrate_standard's result"):
        areal_density(fit, {"Zn": 1.0}, **kw)
    with pytest.raises(ValueError, match="no K line of Zn is excited at 9"):
        StandardCalibration({}, {}, {}, 1.0, 0.0, 9.0, DetectorResponse()).curve("Zn")
    with pytest.raises(ValueError, match="metal has shape"):
        concentration(np.ones((3, 3)), np.ones((3, 4)), element="Zn")
    with pytest.raises(ValueError, match="mass is nowhere > 0.*sign"):
        concentration(np.ones((3, 3)), -np.ones((3, 3)), element="Zn")
    with pytest.raises(ValueError, match="not a formula xraylib reads"):
        delta_per_density("protein", 10.2)
    with pytest.raises(ValueError, match="background marks no pixel"):
        projected_mass(np.zeros((8, 8)), np.zeros((8, 8)), pixel_size=1e-7, numerical_aperture=1e-3, energy=10.2,
                       background=np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"window=12.5: allowed 0..0.001 m. Give metres"):
        DetectorResponse(window=12.5)  # microns given as metres
    bad = tmp_path / "maps_standardinfo.txt"
    bad.write_text("FILENAME: axo_std.mda\nELEMENTS_IN_STANDARD: Ca, Fe, Cu\nWEIGHT: 1.931, 0.504\n")
    with pytest.raises(ValueError, match="line 3: 2 weights for 3 elements"):
        read_standard_info(bad)
    bad.write_text("FILENAME: axo_std.mda\nELEMENTS_IN_STANDARD: Ca, fe\nWEIGHT: 1.931, 0.504\n")
    with pytest.raises(ValueError, match="line 2: .*'Fe'"):
        read_standard_info(bad)
