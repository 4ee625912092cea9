"""Physics simulator: recover known truth from synthetic specimens, with stated tolerances.

Every expectation is computed here from first principles and the numbers of
``shared/reference/physics-parameters.md`` (quoted as "sheet section N"), not
by calling the code path under test. Statistical tolerances come from the
sample size: ``Z`` standard errors of the estimator (Poisson mean, sample
variance, sample standard deviation), so a test fails by chance with
probability well below 1e-5.

Specimens are small (16-64 px fields, 8 um cells, a few ellipsoids) so the
whole module runs in a few seconds.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from xfct_bluesky.physics import (
    QUANTITIES,
    AnalyticSpecimen,
    Ellipsoids,
    HollowCylinder,
    Material,
    MicroprobeSimulator,
    Particles,
    Probe,
    RunoutModel,
    Specimen,
    VortexModel,
    VoxelSpecimen,
    dose_per_projection,
    dwell_for_dose,
    expected_counts,
    mouse_egg,
    no_runout,
    small_cell,
    voxelize,
)

# ------------------------------------------------------------ sheet numbers ---
Z = 5.0  # standard errors allowed on statistical estimates

FLUX = 5e9  # photons/s (sheet, baseline)
ENERGY_KEV = 10.2
HC_KEV_M = 12.398419843e-10
WAVELENGTH = HC_KEV_M / ENERGY_KEV  # 1.2155 A
OUTER_ZONE = 80e-9
NA = WAVELENGTH / (2 * OUTER_ZONE)  # sheet section 0: 0.760 mrad
PIXEL = 300e-9
AVOGADRO = 6.02214076e23

# Zn (sheet section 1): K-alpha1/2, K-beta1 (keV), Kb/Ka, sigma_Ka (barn),
# sensitivity (Ka cps per ug/cm^2 at 5e9 ph/s, 50 mm^2 at 15 mm, He), T_self
ZN_KA1, ZN_KA2, ZN_KB1 = 8.639, 8.616, 9.572
ZN_KB_OVER_KA = 0.137
ZN_SIGMA_KA_BARN = 8923.0
ZN_S_HE = 6781.0
ZN_T_SELF = 0.99
ZN_ATOMIC_WEIGHT = 65.38
ZN_ATOMS_PER_UG = 1e-6 * AVOGADRO / ZN_ATOMIC_WEIGHT
ZN_ETA = 0.966  # sheet section 2: detection efficiency of Zn K-alpha

# Vortex resolution (sheet section 4): sigma^2 = (offset/2.3548)^2 + E 2.96 fanoprime
FWHM_OFFSET, FANOPRIME = 0.0972, 2.244e-4
DEAD_TIME = 3e-6  # s (sheet: 2-4 us)
CHANNEL_WIDTH = 0.01  # keV

# Scatter into the Vortex (sheet section 4), cm^2/g, elastic + Compton
SCATTER_PER_MASS = 7.8e-5 + 1.37e-4

# Segmented detector (sheet sections 3-4)
SEGMENT_EFFICIENCY = 0.89
CENTRAL_STOP = 0.4
GAIN_X = (4 / math.pi) / (1 + CENTRAL_STOP)
GAIN_DIAG = (4 * math.sqrt(2) / math.pi) / (1 + CENTRAL_STOP)

# Optical constants at 10.2 keV (sheet section 3): beta per g/cm^3
PROTEIN_BETA_PER_RHO = 5.49e-9 / 1.35
METHYLCELLULOSE_BETA_PER_RHO = 4.46e-9 / 1.30

# Dose (sheet section 6)
MU_EN_RHO = 3.555  # cm^2/g
KEV_J = 1.602176634e-16

EMPTY = AnalyticSpecimen([], radius=1e-6, name="empty")


# ------------------------------------------------------------------ helpers ---
def approx(expected, *, rel: float = 1e-9, abs: float = 0.0):  # noqa: A002 - pytest's keyword
    """``pytest.approx`` without its default 1e-12 absolute tolerance.

    Many quantities here are tiny in SI units (variances ~1e-13 m^2, masses
    ~1e-12 g), where pytest's default ``abs=1e-12`` would accept anything.
    """
    return pytest.approx(expected, rel=rel, abs=abs)


def resolution_sigma(e_kev: float) -> float:
    return math.sqrt((FWHM_OFFSET / 2.3548) ** 2 + e_kev * 2.96 * FANOPRIME)


def zn_roi_window() -> tuple[int, int]:
    """Zn K-alpha window: intensity-weighted Ka +- 1 FWHM, in 10 eV channels (Hong et al.)."""
    ka = (2 * ZN_KA1 + ZN_KA2) / 3
    fwhm = 2.3548 * resolution_sigma(ka)
    return round((ka - fwhm) / CHANNEL_WIDTH), round((ka + fwhm) / CHANNEL_WIDTH)


def gauss_fraction(e0: float, lo_kev: float, hi_kev: float) -> float:
    """Fraction of a Gaussian line at ``e0`` (detector resolution) in [lo, hi)."""
    s = resolution_sigma(e0) * math.sqrt(2)
    return 0.5 * (math.erf((hi_kev - e0) / s) - math.erf((lo_kev - e0) / s))


def zn_window_fractions() -> tuple[float, float]:
    """(K-alpha, K-beta) fraction of each line family in the Zn ROI window."""
    lo, hi = zn_roi_window()
    a, b = lo * CHANNEL_WIDTH, hi * CHANNEL_WIDTH
    f_ka = (2 / 3) * gauss_fraction(ZN_KA1, a, b) + (1 / 3) * gauss_fraction(ZN_KA2, a, b)
    return f_ka, gauss_fraction(ZN_KB1, a, b)


def zn_roi_mean(areal_ug_cm2: float, dwell: float, *, other_cps: float = 0.0) -> float:
    """Expected Zn ROI counts per pixel: S * n * T_self * t * live * window.

    ``other_cps`` are further detected photons (scatter) that only add dead time.
    """
    ka_cps = ZN_S_HE * areal_ug_cm2 * ZN_T_SELF * (FLUX / 5e9)
    k_cps = ka_cps * (1 + ZN_KB_OVER_KA)
    live = math.exp(-(k_cps + other_cps) * DEAD_TIME)
    f_ka, f_kb = zn_window_fractions()
    return dwell * live * ka_cps * (f_ka + ZN_KB_OVER_KA * f_kb)


def clean_vortex(**kwargs) -> VortexModel:
    """A Vortex with no shelf, no constant background and no air scatter: only the lines."""
    return VortexModel(shelf_fraction=0.0, background_cps=0.0, air_scatter_mass=0.0, dead_time=DEAD_TIME, **kwargs)


def zn_slab(areal_ug_cm2: float, density: float = 0.0, half_thickness: float = 5e-6) -> AnalyticSpecimen:
    """A 2 mm wide, 10 um thick slab normal to the beam at theta = 0: uniform projection."""
    conc = areal_ug_cm2 / (2 * half_thickness * 100)  # ug/cm^3
    body = Ellipsoids([[0, 0, 0]], [[1e-3, 1e-3, half_thickness]], Material(density=density, elements={"Zn": conc}))
    return AnalyticSpecimen([body], radius=1e-3, name="Zn slab")


class PhaseWedge(Specimen):
    """A pure phase object: optical path decrement opd = gx u + gy v (m), nothing else."""

    name = "phase wedge"
    radius = 1e-3

    def __init__(self, gx: float, gy: float = 0.0):
        self.gx, self.gy = gx, gy

    def fine_basis(self, theta_deg, u, v, energy_kev):
        basis = (self.gx * np.asarray(u)[None, :] + self.gy * np.asarray(v)[:, None])[None]
        coef = np.zeros((len(QUANTITIES), 1))
        coef[QUANTITIES.index("opd"), 0] = 1.0
        return basis, coef


def stat_mean(a) -> tuple[float, float]:
    """Sample mean and its standard error."""
    a = np.asarray(a, dtype=float).ravel()
    return a.mean(), a.std(ddof=1) / math.sqrt(a.size)


def centroid(image: np.ndarray) -> np.ndarray:
    """(row, column) centroid in pixels."""
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return np.array([(rows * image).sum() / total, (cols * image).sum() / total])


def quadrant_sum(maps) -> np.ndarray:
    return sum(maps[q].astype(np.float64) for q in ("q1", "q2", "q3", "q4"))


# ============================================================ 1. ROI counts ===
def test_zn_roi_window_matches_sheet_resolution():
    # sheet section 4: 203 eV FWHM at Zn Ka; window Ka +- 1 FWHM
    ka = (2 * ZN_KA1 + ZN_KA2) / 3
    assert 2.3548 * resolution_sigma(ka) == approx(0.203, abs=0.001)
    assert clean_vortex().roi_window("Zn") == zn_roi_window() == (843, 883)


def test_zn_sensitivity_from_first_principles():
    """Sheet: S = F sigma_Ka (Omega/4pi) eta per ug/cm^2 (50 mm^2 disc at 15 mm, eta 0.966).

    The tabulated 6781 cps (xraylib, sheet section 1) and this product agree to 2 %.
    """
    radius = math.sqrt(50e-6 / math.pi)
    omega = 0.5 * (1 - 15e-3 / math.hypot(15e-3, radius))
    first_principles = FLUX * ZN_ATOMS_PER_UG * ZN_SIGMA_KA_BARN * 1e-24 * omega * ZN_ETA
    assert first_principles == approx(ZN_S_HE, rel=0.03)
    # the simulator's K (alpha + beta) sensitivity = table x (1 + Kb/Ka) x T_self
    vortex = VortexModel()
    assert vortex.element_sensitivity("Zn", FLUX) == approx(ZN_S_HE * (1 + ZN_KB_OVER_KA) * ZN_T_SELF, rel=1e-3)


@pytest.mark.parametrize("spectra", [False, True], ids=["roi-only", "spectra"])
def test_zn_roi_mean_and_poisson_variance(spectra):
    """Uniform 10 ug/cm^2 Zn: ROI mean = S n T t live window, var/mean = 1 (Poisson)."""
    areal, dwell, shape = 10.0, 3e-3, (48, 48)
    sim = MicroprobeSimulator(zn_slab(areal), runout=no_runout(), vortex=clean_vortex(), seed=11)
    res = sim.simulate_map(shape, PIXEL, dwell, spectra=spectra)
    # the specimen really is uniform over the field (exact chord of the slab)
    np.testing.assert_allclose(res.expected.elements["Zn"], areal, rtol=1e-4)

    zn = res.maps["Zn"].astype(float)
    n = zn.size
    expected = zn_roi_mean(areal, dwell)  # ~157 counts: live 0.795, window 0.979
    assert 150 < expected < 165
    assert zn.mean() == approx(expected, rel=Z / math.sqrt(expected * n))
    # sample variance of a Poisson sample: var(s^2)/mu^2 = 2/(n-1) + 1/(mu n)
    ratio = zn.var(ddof=1) / zn.mean()
    assert ratio == approx(1.0, abs=Z * math.sqrt(2 / (n - 1) + 1 / (expected * n)))
    if spectra:
        lo, hi = sim.vortex.roi_window("Zn")
        assert res.spectra.shape == (*shape, sim.vortex.n_channels)
        np.testing.assert_array_equal(res.spectra[..., lo:hi].sum(axis=-1), res.maps["Zn"])
    else:
        assert res.spectra is None


def test_roi_equals_spectrum_window_and_expected_spectrum():
    """Default Vortex (shelf, scatter, background) on a protein slab with Zn, Cu, Fe.

    Every element's ROI map is the spectrum summed over its window; the Zn ROI
    mean and the total counts agree with the noiseless expected spectrum.
    """
    mat = Material(density=0.3, elements={"Zn": 300.0, "Cu": 100.0, "Fe": 100.0, "K": 2000.0})
    slab = AnalyticSpecimen([Ellipsoids([[0, 0, 0]], [[1e-3, 1e-3, 10e-6]], mat)], radius=1e-3)
    sim = MicroprobeSimulator(slab, runout=no_runout(), seed=5)
    dwell = 3e-3
    res = sim.simulate_map((24, 24), PIXEL, dwell, spectra=True)
    vortex = sim.vortex
    for sym in vortex.elements:
        lo, hi = vortex.roi_window(sym)
        np.testing.assert_array_equal(res.spectra[..., lo:hi].sum(axis=-1), res.maps[sym], err_msg=sym)
    q = res.expected
    mean_spec = vortex.expected_spectrum(vortex.rates(q.elements, q.mass, FLUX), dwell)
    lo, hi = vortex.roi_window("Zn")
    n = res.maps["Zn"].size
    mu_zn = mean_spec[..., lo:hi].sum(axis=-1).mean()
    assert res.maps["Zn"].mean() == approx(mu_zn, rel=Z / math.sqrt(mu_zn * n))
    mu_tot = mean_spec.sum(axis=-1).mean()
    assert res.spectra.sum(axis=-1).mean() == approx(mu_tot, rel=Z / math.sqrt(mu_tot * n))
    # the Zn ROI is dominated by Zn K-alpha: independent estimate within 3 %
    scatter = FLUX * (0.3 * 20e-4 + 1e-3) * SCATTER_PER_MASS
    assert mu_zn == approx(zn_roi_mean(300.0 * 20e-4, dwell, other_cps=scatter), rel=0.03)


# ================================================= 2. Zn counts in the egg ===
def test_zn_counts_whole_egg_match_sheet():
    """Sheet section 2: 6e10 Zn atoms, mean 0.147 ug/cm^2 over the disc: ~3 counts/px at 3 ms, ~30 at 30 ms."""
    egg = mouse_egg()
    sim = MicroprobeSimulator(egg, runout=no_runout(), seed=1)
    radius = 37.5e-6
    n_disc = math.pi * radius**2 / PIXEL**2  # pixels covered by the egg's disc
    mean_areal = 6e10 / ZN_ATOMS_PER_UG / (math.pi * (radius * 100) ** 2)  # ug/cm^2
    assert mean_areal == approx(0.147, abs=0.002)
    ka_expected = ZN_S_HE * ZN_T_SELF * mean_areal  # Ka cps averaged over the disc
    rois = {}
    for dwell in (3e-3, 30e-3):
        res = sim.simulate_map((260, 260), PIXEL, dwell, spectra=False)
        atoms = res.expected.elements["Zn"].sum() * (PIXEL * 100) ** 2 * ZN_ATOMS_PER_UG
        assert atoms == approx(6e10, rel=0.005)
        ka = expected_counts(sim, res)["Zn_ka"].sum() / n_disc
        assert ka == approx(ka_expected * dwell, rel=0.01)  # 2.97 at 3 ms
        rois[dwell] = res.maps["Zn"].sum() / n_disc
        # measured ROI: K-alpha x window (0.98) x live (0.94, K/S/Cl dominate the ICR)
        assert 0.85 * ka < rois[dwell] < 0.98 * ka
    assert 2.5 < rois[3e-3] < 3.3  # "~3 counts at 3 ms"
    assert 25 < rois[30e-3] < 33  # "29 at 30 ms"
    total_3ms = rois[3e-3] * n_disc
    assert rois[30e-3] / rois[3e-3] == approx(10, rel=Z * math.sqrt(1.1 / total_3ms))


def test_zn_counts_egg_centre_3ms_and_30ms():
    """Centre of an egg with uniform Zn: central chord = 1.5 x mean, plus cortical granules at the poles.

    Sheet: 1480 cps at the centre, i.e. 4.4 Ka counts at 3 ms before the window.
    """
    sim = MicroprobeSimulator(mouse_egg(zn_texture=0.0), runout=no_runout(), seed=2)
    radius = 37.5e-6
    cortical = 8000 * 1e6 / 6e10
    uniform = 1.5 * (1 - cortical) * 6e10 / (math.pi * (radius * 100) ** 2) / ZN_ATOMS_PER_UG
    poles = 2 * 8000 * 1e6 / (4 * math.pi * (radius * 100) ** 2) / ZN_ATOMS_PER_UG  # front + back surface
    centre_areal = uniform + poles  # 0.20 ug/cm^2
    means = {}
    for dwell in (3e-3, 30e-3):
        res = sim.simulate_map((20, 20), PIXEL, dwell, spectra=False)
        assert res.expected.elements["Zn"].mean() == approx(centre_areal, rel=0.05)
        ka = expected_counts(sim, res)["Zn_ka"].mean()
        assert ka == approx(ZN_S_HE * ZN_T_SELF * centre_areal * dwell, rel=0.05)  # 4.05 at 3 ms
        means[dwell] = res.maps["Zn"].mean()
    assert 3.0 < means[3e-3] < 4.5
    n = 400
    assert means[30e-3] / means[3e-3] == approx(10, rel=Z * math.sqrt(1.1 / (means[3e-3] * n)))


# ====================================================================== 3. DPC ===
def _dpc_means(gx, gy=0.0, shape=(32, 32), seed=0):
    sim = MicroprobeSimulator(PhaseWedge(gx, gy), runout=no_runout(), seed=seed)
    res = sim.simulate_map(shape, PIXEL, 3e-3, spectra=False)
    assert np.all(res.expected.mass == 0) and np.all(res.expected.mu_t == 0)
    return {k: stat_mean(res.maps[k]) for k in ("dpc_x", "dpc_y", "dpc_diag")}


def test_dpc_x_wedge_gain_sign_and_linearity():
    """A wedge opd = g x deflects by alpha = g toward +x: DPC_x = (4/pi)/(1+r) g/NA, DPC_y = 0."""
    g = 1e-5  # rad; eps = g/NA = 0.013, the egg's edge (sheet section 3)
    one = _dpc_means(g, seed=1)
    two = _dpc_means(2 * g, seed=2)
    neg = _dpc_means(-g, seed=3)
    expected = GAIN_X * g / NA  # 0.0120
    for res, factor in ((one, 1), (two, 2), (neg, -1)):
        mean, se = res["dpc_x"]
        assert mean == approx(factor * expected, abs=Z * se + 1e-3 * expected)
        mean_y, se_y = res["dpc_y"]
        assert abs(mean_y) < Z * se_y
    assert one["dpc_x"][0] > 0 > neg["dpc_x"][0]
    assert two["dpc_x"][0] / one["dpc_x"][0] == approx(2.0, rel=0.01)


def test_dpc_y_wedge():
    g = 1e-5
    res = _dpc_means(0.0, g, seed=4)
    assert res["dpc_y"][0] == approx(GAIN_X * g / NA, abs=Z * res["dpc_y"][1] + 1e-5)
    assert abs(res["dpc_x"][0]) < Z * res["dpc_x"][1]


def test_dpc_diagonal_gain_for_gradient_along_bisector():
    """Shift along the +x+y bisector: (q1 - q3)/(q1 + q3) = (4 sqrt2/pi)/(1+r) eps (1.29 at r = 0.4)."""
    assert GAIN_DIAG == approx(1.29, abs=0.005)  # sheet section 3
    g = 1e-5
    res = _dpc_means(g / math.sqrt(2), g / math.sqrt(2), seed=5)
    mean, se = res["dpc_diag"]
    assert mean == approx(GAIN_DIAG * g / NA, abs=Z * se + 1e-5)
    for key in ("dpc_x", "dpc_y"):
        mean, se = res[key]
        assert mean == approx(GAIN_X * g / math.sqrt(2) / NA, abs=Z * se + 1e-5)


@pytest.mark.parametrize("dwell, sheet_sigma", [(3e-3, 3.8e-4), (30e-3, 1.2e-4)])
def test_dpc_shot_noise_on_empty_specimen(dwell, sheet_sigma):
    """sigma(dpc_diag) = sqrt(4ab/(a+b)^3), a = b = detected/4; sigma(dpc_x) = 1/sqrt(detected)."""
    sim = MicroprobeSimulator(EMPTY, runout=no_runout(), seed=7)
    res = sim.simulate_map((64, 64), PIXEL, dwell, spectra=False)
    detected = FLUX * dwell * SEGMENT_EFFICIENCY
    a = b = detected / 4
    sigma_diag = math.sqrt(4 * a * b / (a + b) ** 3)
    assert sigma_diag == approx(sheet_sigma, rel=0.03)
    n = res.maps["dpc_diag"].size
    se_rel = 1 / math.sqrt(2 * (n - 1))  # relative standard error of a sample std (1.1 %)
    assert float(res.maps["dpc_diag"].std(ddof=1)) == approx(sigma_diag, rel=max(0.05, Z * se_rel))
    assert float(res.maps["dpc_x"].std(ddof=1)) == approx(1 / math.sqrt(detected), rel=max(0.05, Z * se_rel))
    assert abs(stat_mean(res.maps["dpc_diag"])[0]) < Z * sigma_diag / math.sqrt(n)


# ========================================================= 4. transmitted ===
@pytest.mark.parametrize("dwell", [3e-3, 30e-3])
def test_incident_and_transmitted_photons_empty(dwell):
    """Sheet section 4: 1.5e7 photons/pixel at 3 ms (1.5e8 at 30 ms); segments absorb 0.89."""
    sim = MicroprobeSimulator(EMPTY, runout=no_runout(), seed=8)
    res = sim.simulate_map((32, 32), PIXEL, dwell, spectra=False)
    incident = FLUX * dwell
    n = 32 * 32
    i0 = res.maps["i0"].astype(float) / sim.i0_efficiency
    assert i0.mean() == approx(incident, rel=Z / math.sqrt(incident * sim.i0_efficiency * n))
    detected = incident * SEGMENT_EFFICIENCY
    seg = quadrant_sum(res.maps)
    assert seg.mean() == approx(detected, rel=Z / math.sqrt(detected * n))
    # each quadrant gets a quarter of the bright-field disc
    for q in ("q1", "q2", "q3", "q4"):
        assert res.maps[q].mean() == approx(detected / 4, rel=Z / math.sqrt(detected / 4 * n))
    assert float(res.maps["transmission"].mean()) == approx(1.0, abs=1e-3)


def test_transmitted_photons_through_egg_centre():
    """Egg (0.3 g/cm^3, 75 um) in its capillary (20 um of methylcellulose): T = 0.9906 x 0.9908."""
    sim = MicroprobeSimulator(mouse_egg(), runout=no_runout(), seed=9)
    res = sim.simulate_map((20, 20), PIXEL, 3e-3, spectra=False)
    mu_egg = 4 * math.pi * PROTEIN_BETA_PER_RHO * 0.3 / WAVELENGTH  # 1/m, sheet: 1.3e-4 /um
    mu_cap = 4 * math.pi * METHYLCELLULOSE_BETA_PER_RHO * 1.30 / WAVELENGTH
    transmission = math.exp(-(mu_egg * 75e-6 + mu_cap * 20e-6))
    assert transmission == approx(0.991 * 0.991, abs=0.002)  # sheet section 3
    transmitted = quadrant_sum(res.maps) / SEGMENT_EFFICIENCY
    assert transmitted.mean() == approx(1.5e7 * transmission, rel=1e-3)
    assert 1.45e7 < transmitted.mean() < 1.5e7


# ================================================================= 5. runout ===
def _acquire(runout, plan, specimen=EMPTY, seed=0):
    sim = MicroprobeSimulator(specimen, runout=runout, seed=seed)
    results = [sim.simulate_map(shape, px, dwell, theta, spectra=False) for theta, shape, px, dwell in plan]
    return sim, results


PLAN = [(0.0, (4, 4), 300e-9, 3e-3), (45.0, (4, 6), 200e-9, 30e-3), (90.0, (2, 3), 300e-9, 3e-3),
        (180.0, (4, 4), 500e-9, 10e-3)]


def test_runout_reproducible_and_seeded():
    sim_a, _ = _acquire(RunoutModel(seed=3), PLAN)
    sim_b, _ = _acquire(RunoutModel(seed=3), PLAN)
    sim_c, _ = _acquire(RunoutModel(seed=4), PLAN)
    np.testing.assert_array_equal(sim_a.truth.offsets, sim_b.truth.offsets)
    assert not np.allclose(sim_a.truth.offsets, sim_c.truth.offsets)
    # reset() restarts the same sequence
    runout = RunoutModel(seed=3)
    first = [runout.sample(t, 10.0 * k) for k, t in enumerate((0, 30, 60))]
    runout.reset()
    np.testing.assert_array_equal(first, [runout.sample(t, 10.0 * k) for k, t in enumerate((0, 30, 60))])


def test_truth_offsets_one_row_per_map_in_pixels():
    sim, results = _acquire(RunoutModel(seed=6), PLAN)
    offsets = sim.truth.offsets
    assert offsets.shape == (len(PLAN), 2)
    # independent replay: same seed, sampled at the start time of each map (duration ny nx dwell)
    ref = RunoutModel(seed=6)
    t = 0.0
    for k, (theta, shape, px, dwell) in enumerate(PLAN):
        expected_m = ref.sample(theta, t)
        np.testing.assert_allclose(offsets[k], expected_m / px, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(results[k].offset_px, offsets[k], rtol=1e-12)
        assert results[k].start_time == approx(t)
        t += shape[0] * shape[1] * dwell
    assert sim.truth.thetas == [p[0] for p in PLAN]
    # default runout is microns: tens of 300 nm pixels at most, but not zero
    assert np.all(np.abs(offsets) < 60) and np.any(np.abs(offsets) > 1)
    # record=False leaves the truth alone
    sim.simulate_map((4, 4), PIXEL, 3e-3, 10.0, spectra=False, record=False)
    assert len(sim.truth.offsets) == len(PLAN)


def test_no_runout_gives_zero_offsets():
    sim, results = _acquire(no_runout(), PLAN)
    np.testing.assert_array_equal(sim.truth.offsets, np.zeros((len(PLAN), 2)))
    assert all(np.all(r.offset == 0) for r in results)


@pytest.mark.parametrize("seed", [2, 3])
def test_known_eccentricity_moves_the_image_by_the_truth_offset(seed):
    """Eccentricity only (no jitter/drift): the mass-map centroid moves by truth.offsets within 0.02 px."""
    cell = small_cell(8e-6, capillary=False)
    ecc = 1.5e-6  # 5 px at most
    runout = RunoutModel(eccentricity=ecc, harmonics=(), wobble=0.0, vertical_harmonics=(), jitter=0.0,
                         drift_rate=0.0, drift_trend=(0.0, 0.0), seed=seed)
    ref = MicroprobeSimulator(cell, runout=no_runout()).simulate_map((48, 48), PIXEL, 3e-3, spectra=False)
    sim = MicroprobeSimulator(cell, runout=runout)
    moved = sim.simulate_map((48, 48), PIXEL, 3e-3, spectra=False)
    truth = sim.truth.offsets[0]
    assert truth[0] == 0.0 and 0.5 < abs(truth[1]) <= ecc / PIXEL
    # the whole cell is inside the field in both maps (centroid is then exact)
    for m in (ref.expected.mass, moved.expected.mass):
        assert m[[0, -1], :].max() < 1e-6 * m.max() and m[:, [0, -1]].max() < 1e-6 * m.max()
    shift = centroid(moved.expected.mass) - centroid(ref.expected.mass)
    np.testing.assert_allclose(shift, truth, atol=0.02)


# ====================================================== 6. projections ===
def _rot(axis: int, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _test_specimen() -> AnalyticSpecimen:
    mat = Material(density=0.3, elements={"Zn": 1.0, "P": 100.0})
    ellipsoids = Ellipsoids(
        [[1.0e-6, 0.3e-6, -0.5e-6], [-1.2e-6, -0.8e-6, 0.9e-6], [0.2e-6, 1.1e-6, 0.4e-6]],
        [[1.2e-6, 0.8e-6, 0.5e-6], [0.6e-6, 1.0e-6, 0.9e-6], [0.5e-6, 0.5e-6, 0.5e-6]],
        mat,
        rotations=[_rot(2, 30) @ _rot(1, 40) @ _rot(0, 20), _rot(2, -50) @ _rot(1, 10) @ _rot(0, 70), np.eye(3)],
    )
    capillary = HollowCylinder(2.8e-6, 2.0e-6, Material(density=1.3), center_xz=(0.1e-6, -0.15e-6))
    return AnalyticSpecimen([ellipsoids, capillary], radius=3.0e-6, name="ellipsoids + capillary")


@pytest.fixture(scope="module")
def voxelized():
    spec = _test_specimen()
    return spec, voxelize(spec, (64, 64, 64), 100e-9)


def test_analytic_projection_totals_are_exact():
    """Projected mass integrates to rho x volume (ellipsoids) and rho x annulus area x height (capillary)."""
    spec = _test_specimen()
    ell, cap = spec.components
    h = 50e-9
    u = (np.arange(140) - 69.5) * h
    area_cm2 = (h * 100) ** 2
    volume = np.sum(4 / 3 * math.pi * np.prod(ell.semi_axes * 100, axis=1))  # cm^3
    annulus = math.pi * ((cap.ro * 100) ** 2 - (cap.ri * 100) ** 2) * 1.3 * (len(u) * h * 100)  # g
    for theta in (0.0, 30.0, 90.0, 137.0):
        p_ell = AnalyticSpecimen([ell], radius=3e-6).project(theta, u, u)
        p_cap = AnalyticSpecimen([cap], radius=3e-6).project(theta, u, u)
        assert p_ell.elements["Zn"].sum() * area_cm2 == approx(1.0 * volume, rel=2e-3)
        assert p_ell.mass.sum() * area_cm2 == approx(0.3 * volume, rel=2e-3)
        assert p_cap.mass.sum() * area_cm2 == approx(annulus, rel=1e-3)
        both = spec.project(theta, u, u)
        np.testing.assert_allclose(both.mass, p_ell.mass + p_cap.mass, rtol=1e-12)
        assert both.opd.sum() > 0 and both.mu_t.sum() > 0
    # centre chord of an upright sphere: 2 r rho
    sphere = AnalyticSpecimen([Ellipsoids([[0, 0, 0]], [[1e-6] * 3], Material(density=0.5))], radius=1e-6)
    assert sphere.project(20.0, [-1e-7, 0.0, 1e-7], [-1e-7, 0.0, 1e-7]).mass[1, 1] == approx(0.5 * 2e-4)


@pytest.mark.parametrize("theta", [0.0, 30.0, 90.0, 137.0])
def test_analytic_matches_voxel_projection(voxelized, theta):
    """Brute-force voxels (100 nm, 2^3 supersampled) vs exact chords: L2 < 5 % (mass), < 6 % (Zn)."""
    spec, vox = voxelized
    u = (np.arange(64) - 31.5) * 100e-9
    exact = spec.project(theta, u, u)
    brute = vox.project(theta, u, u)
    for name, a, b, tol in (("mass", exact.mass, brute.mass, 0.05), ("Zn", exact.elements["Zn"],
                                                                       brute.elements["Zn"], 0.06)):
        rel_l2 = np.linalg.norm(a - b) / np.linalg.norm(a)
        assert rel_l2 < tol, f"{name} at {theta} deg: relative L2 error {rel_l2:.3f}"
        assert b.sum() == approx(a.sum(), rel=0.01), name


@pytest.mark.parametrize("theta", [0.0, 30.0, 90.0, 137.0, -60.0])
def test_rotation_sense_u_equals_x_cos_plus_z_sin(theta):
    """A sphere at (x=a, z=0) projects at u = a cos(theta); one at (x=0, z=b) at u = b sin(theta).

    Checked for the analytic specimen and for its voxelized twin (regression:
    VoxelSpecimen rotated the volume the other way, u = x cos - z sin).
    """
    a, b = 1.0e-6, 0.7e-6
    t = math.radians(theta)
    u = (np.arange(192) - 95.5) * 25e-9  # fine grid: the sampled centroid is then exact to < 1 nm
    for pos, u_expected in (([a, 0.0, 0.0], a * math.cos(t)), ([0.0, 0.0, b], b * math.sin(t))):
        spec = AnalyticSpecimen([Ellipsoids([pos], [[0.4e-6] * 3], Material(density=1.0))], radius=2e-6)
        for s in (spec, voxelize(spec, (24, 48, 48), 100e-9)):
            mass = s.project(theta, u, u[::8]).mass
            u_c = (mass.sum(axis=0) * u).sum() / mass.sum()
            assert u_c == approx(u_expected, abs=2e-9), type(s).__name__


# ================================================================== 7. dose ===
def test_dose_per_projection_matches_sheet():
    fluence = FLUX * 3e-3 / (300e-9 * 100) ** 2  # 1.67e16 photons/cm^2
    assert fluence == approx(1.67e16, rel=0.005)
    expected = MU_EN_RHO * fluence * ENERGY_KEV * KEV_J * 1e3  # J/kg
    assert dose_per_projection(3e-3, 300e-9) == approx(expected, rel=1e-9)
    assert dose_per_projection(3e-3, 300e-9) == approx(9.7e4, rel=0.01)
    assert dose_per_projection(30e-3, 300e-9) == approx(9.7e5, rel=0.01)
    total_fast = 240 * dose_per_projection(3e-3, 300e-9)
    total_slow = 24 * dose_per_projection(30e-3, 300e-9)
    assert total_fast == approx(total_slow, rel=1e-12)
    assert round(total_fast / 1e7, 1) == 2.3  # sheet: 2.3e7 Gy (2.32e7)
    # fluence, not pixel count: half the pixel size is four times the dose
    assert dose_per_projection(3e-3, 150e-9) == approx(4 * dose_per_projection(3e-3, 300e-9))
    res = MicroprobeSimulator(EMPTY, runout=no_runout()).simulate_map((2, 2), PIXEL, 3e-3, spectra=False)
    assert res.dose == approx(expected, rel=1e-9)


@pytest.mark.parametrize("dwell, pixel", [(3e-3, 300e-9), (30e-3, 300e-9), (1e-4, 50e-9)])
def test_dwell_for_dose_inverts(dwell, pixel):
    assert dwell_for_dose(dose_per_projection(dwell, pixel), pixel) == approx(dwell, rel=1e-12)
    assert dwell_for_dose(9.7e4, 300e-9) == approx(3e-3, rel=0.01)


# ================================================================= 8. probe ===
def test_probe_numerical_aperture_and_focal_length():
    probe = Probe()
    assert probe.wavelength == approx(1.2155e-10, rel=1e-4)
    assert round(probe.numerical_aperture * 1e3, 3) == 0.760
    assert probe.numerical_aperture == approx(NA, rel=1e-12)
    assert probe.focal_length == approx(0.211, abs=0.001)  # sheet: f = 211 mm


def test_probe_sigma_grows_with_defocus():
    probe = Probe()
    sx0, sy0 = probe.sigma(0.0)
    assert (sx0, sy0) == approx((700e-9 / 2.3548, 500e-9 / 2.3548), rel=1e-4)
    previous = (sx0, sy0)
    for z in (50e-6, 100e-6, 210e-6, 1e-3):
        sx, sy = probe.sigma(z)
        assert sx > previous[0] and sy > previous[1]
        assert probe.sigma(-z) == (sx, sy)
        extra = (NA * z) ** 2 / 4  # uniform disc of radius NA |z|
        assert (sx, sy) == approx((math.sqrt(sx0**2 + extra), math.sqrt(sy0**2 + extra)), rel=1e-9)
        previous = (sx, sy)
    # within the depth of field (210 um, sheet section 0) the spot grows by < 5 %
    assert probe.sigma(210e-6)[0] < 1.05 * sx0


def test_defocus_broadens_simulated_point_image():
    """Second moments of a point particle's blurred mass map = probe variance (+ p^2/12 fly box along x)."""
    particle = AnalyticSpecimen([Particles([[0.0, 0.0, 0.0]], Material(density=1e-15))], radius=1e-6)
    sim = MicroprobeSimulator(particle, runout=no_runout(), oversample=8)
    variances = {}
    for z in (0.0, 1e-3):
        res = sim.simulate_map((41, 41), PIXEL, 3e-3, spectra=False, defocus=z)
        m = res.expected.mass
        assert m.sum() * (PIXEL * 100) ** 2 == approx(1e-15, rel=1e-3)  # mass conserved
        rows, cols = np.indices(m.shape) * PIXEL
        cy, cx = (rows * m).sum() / m.sum(), (cols * m).sum() / m.sum()
        var_y = ((rows - cy) ** 2 * m).sum() / m.sum()
        var_x = ((cols - cx) ** 2 * m).sum() / m.sum()
        extra = (NA * z) ** 2 / 4
        assert var_y == approx((500e-9 / 2.3548) ** 2 + extra, rel=0.01)
        assert var_x == approx((700e-9 / 2.3548) ** 2 + extra + PIXEL**2 / 12, rel=0.01)
        variances[z] = (var_y, var_x)
    # defocus adds (NA z)^2/4 = (380 nm)^2 on each axis
    assert variances[1e-3][0] - variances[0.0][0] == approx((NA * 1e-3) ** 2 / 4, rel=0.01)
    assert variances[1e-3][1] - variances[0.0][1] == approx((NA * 1e-3) ** 2 / 4, rel=0.01)


# ============================================================ 9. bad inputs ===
NAN = float("nan")
BAD_MAP_ARGS = [
    ({"dwell": 0.0}, ["dwell=0.0", "> 0", "3e-3"]),
    ({"dwell": -3e-3}, ["dwell=-0.003", "> 0"]),
    ({"dwell": NAN}, ["dwell=nan", "> 0"]),
    ({"dwell": 3000.0}, ["dwell=3000.0", "10 s"]),
    ({"pixel_size": 0.0}, ["pixel_size=0.0", "> 0", "300e-9"]),
    ({"pixel_size": -300e-9}, ["pixel_size=-3e-07", "> 0"]),
    ({"pixel_size": 300.0}, ["pixel_size=300.0", "100 um"]),
    ({"shape": 0}, ["shape=(0, 0)", "1..8192"]),
    ({"shape": (0, 5)}, ["shape=(0, 5)", "1..8192"]),
    ({"shape": (-3, 4)}, ["shape=(-3, 4)", "1..8192"]),
    ({"shape": 2.5}, ["2.5", "integer in 1..8192"]),
    ({"shape": (1, 2, 3)}, ["shape=(1, 2, 3)", "pair"]),
    ({"theta": NAN}, ["theta=nan", "finite"]),
    ({"map_center": (NAN, 0.0)}, ["map_center y=nan", "finite"]),
    ({"map_center": (0.0, NAN)}, ["map_center x=nan", "finite"]),
    ({"shape": (8000, 8000)}, ["8000x8000", "limit 4.0 GB", "spectra=on"]),
]


def _check_message(exc_info, fragments):
    msg = str(exc_info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message {msg!r}"


@pytest.mark.parametrize("bad, fragments", BAD_MAP_ARGS, ids=[repr(b) for b, _ in BAD_MAP_ARGS])
def test_simulate_map_rejects_bad_input_without_side_effects(bad, fragments):
    def make():
        return MicroprobeSimulator(small_cell(8e-6, capillary=False), runout=RunoutModel(seed=5), seed=5)

    sim = make()
    kwargs = {"shape": (8, 8), "pixel_size": PIXEL, "dwell": 3e-3, "theta": 30.0, "spectra": True} | bad
    with pytest.raises(ValueError) as exc_info:
        sim.simulate_map(kwargs.pop("shape"), kwargs.pop("pixel_size"), kwargs.pop("dwell"), **kwargs)
    _check_message(exc_info, fragments)
    # nothing recorded, clock, runout and noise untouched: the next map is the fresh simulator's
    assert sim.truth.offsets.shape == (0, 2) and sim.truth.thetas == [] and sim.clock == 0.0
    good = sim.simulate_map((8, 8), PIXEL, 3e-3, 30.0, spectra=False)
    fresh = make().simulate_map((8, 8), PIXEL, 3e-3, 30.0, spectra=False)
    np.testing.assert_array_equal(good.offset, fresh.offset)
    for key in ("Zn", "q1", "i0"):
        np.testing.assert_array_equal(good.maps[key], fresh.maps[key])


def test_unknown_element_is_named():
    with pytest.raises(ValueError) as exc_info:
        Material(elements={"Xx": 1.0})
    _check_message(exc_info, ["'Xx'", "Zn", "P"])
    with pytest.raises(ValueError) as exc_info:
        VortexModel(elements=("Zn", "Xx"))
    _check_message(exc_info, ["'Xx'", "Zn"])
    with pytest.raises(ValueError) as exc_info:
        Material(elements={"Zn": -1.0})
    _check_message(exc_info, ["elements['Zn']=-1.0", ">= 0"])


def test_dose_and_probe_reject_bad_input():
    with pytest.raises(ValueError, match=r"dwell=0 .*> 0"):
        dose_per_projection(0, 300e-9)
    with pytest.raises(ValueError, match=r"pixel_size=-3e-07 .*> 0"):
        dose_per_projection(3e-3, -300e-9)
    with pytest.raises(ValueError, match=r"dose=-1.0 .*> 0"):
        dwell_for_dose(-1.0, 300e-9)
    with pytest.raises(ValueError, match=r"defocus=nan .*finite"):
        Probe().sigma(NAN)
    with pytest.raises(ValueError, match=r"flux=0 .*> 0"):
        Probe(flux=0)


# ============================================================ 10. HDF5 voxels ===
def _write_volume(path, density, zn, voxel_size=1e-6, on_dataset=False):
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("density", data=density)
        f.create_dataset("elements/Zn", data=zn)
        if voxel_size is not None:
            (ds if on_dataset else f).attrs["voxel_size"] = voxel_size


@pytest.mark.parametrize("on_dataset", [False, True], ids=["file-attr", "dataset-attr"])
def test_voxel_specimen_from_hdf5(tmp_path, on_dataset):
    """A 16 um cube of 0.3 g/cm^3 protein with 1000 ug/cm^3 Zn: chord 16 um at 0 and 90 deg."""
    shape = (12, 16, 16)  # (y, z, x) voxels of 1 um
    density = np.full(shape, 0.3)
    zn = np.full(shape, 1000.0)
    path = tmp_path / "cube.h5"
    _write_volume(path, density, zn, on_dataset=on_dataset)
    spec = VoxelSpecimen.from_hdf5(path)
    assert spec.voxel_size == 1e-6 and spec.name == "cube"
    np.testing.assert_array_equal(spec.density, density)
    np.testing.assert_array_equal(spec.elements["Zn"], zn)

    sim = MicroprobeSimulator(spec, runout=no_runout(), vortex=clean_vortex(), seed=12)
    chord_cm = 16e-4
    dwell = 30e-3
    for theta in (0.0, 90.0):
        res = sim.simulate_map((16, 16), PIXEL, dwell, theta, spectra=False)
        np.testing.assert_allclose(res.expected.mass, 0.3 * chord_cm, rtol=1e-6)
        np.testing.assert_allclose(res.expected.elements["Zn"], 1000.0 * chord_cm, rtol=1e-6)
        scatter = FLUX * 0.3 * chord_cm * SCATTER_PER_MASS
        expected = zn_roi_mean(1000.0 * chord_cm, dwell, other_cps=scatter)  # ~300 counts
        n = res.maps["Zn"].size
        assert res.maps["Zn"].mean() == approx(expected, rel=Z / math.sqrt(expected * n))


def test_voxel_hdf5_without_voxel_size(tmp_path):
    path = tmp_path / "nosize.h5"
    _write_volume(path, np.ones((4, 4, 4)), np.ones((4, 4, 4)), voxel_size=None)
    with pytest.raises(ValueError, match="voxel_size"):
        VoxelSpecimen.from_hdf5(path)
    spec = VoxelSpecimen.from_hdf5(path, voxel_size=200e-9)
    assert spec.voxel_size == 200e-9
    with pytest.raises(ValueError, match=r"voxel_size=0 .*> 0"):
        VoxelSpecimen(np.ones((4, 4, 4)), 0)
