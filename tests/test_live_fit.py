"""Live spectrum fitting (issue 13, item 2): each projection's spectra fitted as they arrive, the fitted maps
published as a derived run, used by the live alignment and reconstruction and by ``xfct-bluesky fit`` /
``reconstruct``.

One simulated tomography (4 angles of 24 x 24 px at 2 ms, a 5 um cell holding the egg's projected Zn: up to
~3 Zn photons per pixel, the paper's low counts) is taken twice, paced by its dwell as on the beamline:
without live analysis, then with the fit, the alignment and the reconstruction subscribed; the second is
stored on the suite's Tiled server (after the timing). The simulator's truth for each projection is the expected
number of Zn photons per pixel (its Vortex's rates x dwell x live fraction: what the fit estimates, photons before
dead-time correction).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import event_model
import numpy as np
import pytest
from bluesky import RunEngine

from xfct_bluesky import cli
from xfct_bluesky.analysis.fitting import Calibration
from xfct_bluesky.analysis.fitting.maps import FITTED, ROI, prefer_fitted
from xfct_bluesky.callbacks import (
    LiveDPCAlignment,
    LiveReconstruction,
    LiveSpectrumFit,
    LiveWorker,
    SerialEmitter,
)
from xfct_bluesky.callbacks.fit import FIT_PLAN, energy_axis
from xfct_bluesky.plans import xfct_tomo
from xfct_bluesky.storage import derived_runs, load_theta, make_tiled_writer

SHAPE, PIXEL, N_ANGLES, DWELL = (24, 24), 300e-9, 4, 2e-3
DATA = Path(__file__).parent / "data" / "xrf-maps-2ide"
#: What the AXO standard's spectra show (tests/test_fitting_real.py): the beamline file's elements, Al, and
#: the film's La, Mo, Pd (L lines) and Pb (M lines).
AXO_ELEMENTS = "Al,Si,P,S,Cl,Ar,K,Ca,Ti,Cr,Mn,Fe,Co,Ni,Cu,Zn,La_L,Mo_L,Pd_L,Pb_M"


def _stored(run):
    """(start, theta, {element: counts}, {element: sigma}, deviance) of a stored live_spectrum_fit run, read back."""
    start, node = run.metadata["start"], run["primary"]
    elements = node.metadata["data_keys"]["counts"]["channels"]
    assert elements == start["elements"]
    counts, sigma = np.asarray(node["counts"].read()), np.asarray(node["sigma"].read())
    return (start, load_theta(run), {e: counts[:, k] for k, e in enumerate(elements)},
            {e: sigma[:, k] for k, e in enumerate(elements)}, np.asarray(node["deviance"].read()))


def _validated(sink):
    """A sink that checks every document against event-model's schema before keeping it."""
    def keep(name, doc):
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        sink.append((name, doc))
    return keep


@pytest.fixture(scope="module")
def live(shared_tiled):
    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import RunoutModel, small_cell
    from xfct_bluesky.physics.cells import EGG_DIAMETER, EGG_ZN_ATOMS
    from xfct_bluesky.storage.writing import replay_documents

    cell = 5e-6  # the egg's projected Zn through its centre, in a cell the 24 px field holds (as the dose study)
    mp = make_sim_microprobe(shape=SHAPE, pixel_size=PIXEL, seed=1,
                             specimen=small_cell(cell, seed=1, zn_atoms=EGG_ZN_ATOMS * (cell / EGG_DIAMETER) ** 2),
                             runout=RunoutModel(eccentricity=0.5e-6, harmonics=(0.05e-6,), wobble=5e-6,
                                                lever_arm=20e-3, vertical_harmonics=(0.02e-6,), jitter=10e-9,
                                                drift_rate=0.01e-6, drift_trend=(0.0, 0.0), seed=1),
                             hdf5_directory=shared_tiled.data_dir / "assets")  # where the server reads spectra
    mp.realtime = True  # each map lasts its dwell: the RunEngine waits on the hardware, as at the beamline
    RE, raw = RunEngine({}), []
    RE.subscribe(_validated(raw))  # stored in Tiled after the timing (the writer's HTTP would dominate it)

    def tomography():
        raw.clear()
        t0 = time.perf_counter()
        (uid,) = RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=N_ANGLES, dwell=DWELL))
        return uid, time.perf_counter() - t0

    _, alone = tomography()

    worker, derived, truth = LiveWorker("test-live-fit"), [], []
    writer = SerialEmitter(make_tiled_writer(shared_tiled.derived))  # the fit's run to Tiled; the others kept here
    recon = LiveReconstruction(emit=_validated(derived), elements=("Zn",), iterations=3, worker=worker)
    align = LiveDPCAlignment(emit=[_validated(derived), recon], worker=worker)
    # calibrated once the first projections hold 2500 counts (two of them), so the others are fitted during the scan
    fit = LiveSpectrumFit(emit=[writer, _validated(derived), align, recon], calibration_counts=2500, worker=worker)

    def zn_photons(name, doc):  # the truth of the map just read (the RunEngine's thread: the map is the last)
        if name == "event" and "microprobe_scanner_Zn" in doc["data"]:
            res, sim = mp.scanner.last_result, mp.simulator
            rates = sim.vortex.rates(res.expected.elements, res.expected.mass, sim.probe.flux)
            expected = rates * (res.dwell * sim.vortex.live_fraction(rates))[None]
            truth.append(expected[sim.vortex.component_names.index("Zn")])

    spent = []  # seconds the RunEngine's thread spends inside the live callbacks

    def timed(cb):
        def call(name, doc):
            t0 = time.perf_counter()
            try:
                return cb(name, doc)
            finally:
                spent.append(time.perf_counter() - t0)
        return call

    for cb in (fit, align, recon):  # the fit first, as the session does; any order works
        RE.subscribe(timed(cb))
    RE.subscribe(zn_photons)
    uid, with_fit = tomography()
    replay_documents(iter(raw), shared_tiled.catalog, source="the live-fit test's tomography")
    assert worker.wait(180)
    return SimpleNamespace(uid=uid, alone=alone, with_fit=with_fit, in_callbacks=sum(spent), fit=fit, align=align,
                           recon=recon,
                           derived=derived, truth=np.array(truth), tiled=shared_tiled, mp=mp)


# ------------------------------------------------------------------------------------------ the live fit ---
def test_the_fit_is_a_derived_run_of_one_event_per_projection_in_tiled(live):
    assert live.fit.errors == [] and live.align.errors == [] and live.recon.errors == []
    starts = [d for n, d in live.derived if n == "start" and d["plan_name"] == FIT_PLAN]
    (start,) = starts
    assert start["raw_uid"] == live.uid and start["fitted_by"] == "live" and start["method"] == "poisson"
    assert set(start["elements"]) == {"P", "S", "Cl", "K", "Ca", "Fe", "Cu", "Zn"}  # the run's element maps
    cal = Calibration(**start["calibration"])  # the calibration, whole, in the start document
    assert cal.gain == pytest.approx(0.01, rel=2e-3) and abs(cal.offset - 0.005) < 0.01  # the Vortex's axis
    assert start["calibration_fit"]["converged"] and start["calibration_fit"]["projections"] >= 1
    (run,) = derived_runs(live.tiled.derived, live.uid, FIT_PLAN)
    stored, theta, counts, sigma, deviance = _stored(run)
    assert stored == start
    # a few photons per pixel and almost no background: every projection's fit held it (fit_spectra's
    # hold_background), and the start document says so
    assert start["held"] == live.fit.results[live.uid]["held"] == {"background": N_ANGLES}
    assert start["hold_background"] is None  # what was asked: the default, held where a pixel cannot determine it
    np.testing.assert_array_equal(theta, load_theta(live.tiled.catalog[live.uid]))  # one event per projection
    assert counts["Zn"].shape == sigma["Zn"].shape == deviance.shape == (N_ANGLES, *SHAPE)
    for e in start["elements"]:
        np.testing.assert_array_equal(counts[e], live.fit.results[live.uid]["counts"][e])
    assert (sigma["Zn"][counts["Zn"] > 1] > 0.5).all()  # a photon or more: its sigma about its square root
    # at ~5 photons per pixel over ~1000 channels a pixel's deviance is its few counts' (near 1 per channel only
    # where channels hold counts: the summed spectrum, and the real standard below)
    assert np.isfinite(deviance).all() and (deviance >= 0).all()
    assert 0.3 < start["calibration_fit"]["deviance_per_dof"] < 1.5


def test_the_fitted_zn_is_the_simulators_photons_within_its_sigma(live):
    """Per projection and over the run, the fitted Zn photons against the simulator's expected photons: the
    difference within 4 (per projection) and 3 (the run) of its standard error sqrt(sum sigma^2) (which
    holds the Poisson noise of the drawn photons too)."""
    res = live.fit.results[live.uid]
    fitted, sigma, truth = res["counts"]["Zn"].astype(float), res["sigma"]["Zn"].astype(float), live.truth
    assert truth.shape == fitted.shape and truth.max() > 2  # a few Zn photons per pixel at most
    error = np.sqrt((sigma ** 2).sum(axis=(1, 2)))
    z = (fitted.sum(axis=(1, 2)) - truth.sum(axis=(1, 2))) / error
    assert np.all(np.abs(z) < 4), z
    total_z = (fitted.sum() - truth.sum()) / np.sqrt((sigma ** 2).sum())
    assert abs(total_z) < 3, (total_z, fitted.sum(), truth.sum())
    # the per-pixel sigma describe the scatter: mean squared error over mean sigma^2 near 1
    assert np.mean((fitted - truth) ** 2) / np.mean(sigma ** 2) == pytest.approx(1.0, abs=0.2)  # 0.97-1.10 seen


def test_the_alignment_and_reconstruction_used_the_fitted_maps(live):
    from xfct_bluesky.analysis.align import apply_shifts

    fitted = live.fit.results[live.uid]["counts"]["Zn"]
    summary = live.align.results[live.uid]["summary"]
    assert summary["element_maps"]["Zn"] == FITTED and summary["fit_uid"] == live.fit.results[live.uid]["derived_uid"]
    result = live.recon.results[live.uid]
    assert result["element_maps"] == {"Zn": FITTED} and result["alignment_source"] == "live dpc alignment"
    rec = result["reconstruction"]
    np.testing.assert_allclose(rec.aligned["Zn"], apply_shifts(fitted, rec.shifts), rtol=1e-5, atol=1e-5)
    (volumes,) = [d for n, d in live.derived if n == "start" and d["plan_name"] == "xfct_reconstruction"]
    assert volumes["element_maps"] == {"Zn": FITTED} and volumes["fit_uid"] == summary["fit_uid"]


def test_the_run_engine_does_not_wait_for_the_fit(live):
    """Calibrating and fitting run on the worker while the scan goes on: the RunEngine's thread only hands the
    documents over (well under a second in all, for seconds of fitting), and the paced scan is not slowed
    beyond what sharing two cores with the fit costs (a loaded CI machine: other tests run beside it)."""
    assert live.fit.results[live.uid]["calibration_fit"]["projections"] < N_ANGLES  # the work overlapped the scan
    assert live.in_callbacks < 0.2, f"the RunEngine spent {live.in_callbacks:.2f} s inside the live callbacks"
    assert live.with_fit <= 1.5 * live.alone + 1.0, (live.with_fit, live.alone)


# ------------------------------------------------------------------------------------- after the fact ---
def test_cli_fit_refits_a_stored_run_and_reconstruct_uses_it(live, capsys):
    uri = ["--uri", live.tiled.server.uri]
    assert cli.main(["fit", live.uid[:8], *uri, "--elements", "P,S,Cl,K,Ca,Fe,Cu,Zn"]) == 0
    out = capsys.readouterr().out
    runs = derived_runs(live.tiled.derived, live.uid, FIT_PLAN)
    assert len(runs) == 2  # the live fit's and this one
    start, _, counts, sigma, _ = _stored(runs[-1])
    assert start["fitted_by"] == "xfct-bluesky fit" and start["calibration_fit"]["projections"] == N_ANGLES
    assert f"stored as run {start['uid']}" in out and "calibration (fitted on the summed spectra of 4" in out
    zn = [line.split() for line in out.splitlines() if line.startswith("Zn ")]
    assert float(zn[0][1]) == pytest.approx(float(counts["Zn"].sum(dtype=np.float64)), rel=1e-5)
    z = (counts["Zn"].sum(dtype=np.float64) - live.truth.sum()) / np.sqrt((sigma["Zn"].astype(float) ** 2).sum())
    assert abs(z) < 3, z
    assert "deviance per channel: median" in out
    assert start["held"] == {"background": N_ANGLES}
    assert f"background held at its share of each pixel's counts (too few to fit per pixel) in {N_ANGLES} of " \
           f"{N_ANGLES} projection(s)" in out

    assert cli.main(["reconstruct", live.uid[:8], *uri, "--algorithm", "fbp", "--align", "none"]) == 0
    out = capsys.readouterr().out
    assert f"Zn from {FITTED} (run {start['uid'][:8]})" in out  # the newest fit of the run


def test_cli_fit_of_the_real_imported_standard(shared_tiled, capsys):
    """The AXO standard measured at 2-ID-E, imported from its MDA file (4 detector elements, their spectra
    summed: their recorded axes agree), the calibration refined from the beamline's XRF-Maps file (the
    stored-run test above calibrates from the run's own axis)."""
    from xfct_bluesky.importers import import_files

    (result,) = import_files([DATA / "mda" / "axo_std.mda"], shared_tiled.catalog,
                             asset_dir=shared_tiled.data_dir / "assets")
    assert cli.main(["fit", result.uid, "--uri", shared_tiled.server.uri, "--elements", AXO_ELEMENTS,
                     "--calibration", str(DATA / "maps_fit_parameters_override.txt")]) == 0
    out = capsys.readouterr().out
    assert "the start document's energy_calibration" in out and "4 detector element(s)" in out
    (run,) = derived_runs(shared_tiled.derived, result.uid, FIT_PLAN)
    start, _, counts, sigma, deviance = _stored(run)
    assert start["calibration"]["gain"] == pytest.approx(0.00960, rel=0.003)  # the MCA's 0.0094 is 2 % off
    per_channel = deviance / start["fitted_channels"]
    assert np.median(per_channel) == pytest.approx(1.0, abs=0.15)  # each pixel (~25000 counts) described
    for element in ("Ca", "Fe", "Cu"):  # the standard's certified elements, every pixel far above its sigma
        assert (counts[element] > 10 * sigma[element]).all(), element
        assert any(line.startswith(f"{element} ") for line in out.splitlines())
    assert f"deviance per channel: median {np.median(per_channel):.3f}" in out
    assert start["held"] == {} and " held at " not in out  # ~25000 counts per pixel: its background fitted


# ------------------------------------------------------------------------------------------ refusals ---
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "lsq"}, "method='lsq' is not known; allowed: 'poisson', 'linear', 'nnls'"),
    ({"calibration": "override.txt"}, "calibration='override.txt'; allowed: 'auto'"),
    ({"elements": ("Zn", "Xx")}, "unknown element line family 'Xx'"),
    ({"calibration_counts": 0}, "calibration_counts=0 is out of range"),
    ({"calibration": "auto", "refine": False}, "leaves nothing to fit the calibration"),
    ({"hold_background": "yes"}, "hold_background='yes'; allowed: True, False or None"),
    ({"hold_background": True, "method": "linear"}, "held only by method='poisson'"),
])
def test_bad_options_are_refused_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LiveSpectrumFit(**kwargs)


def test_one_element_as_a_string_is_refused():
    with pytest.raises(TypeError, match="elements='Zn' is one string; give a sequence"):
        LiveSpectrumFit(elements="Zn")


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "lsq"], "--method lsq is not known; allowed: 'poisson', 'linear', 'nnls'"),
    (["--elements", "Zn,Xx"], "--elements Zn,Xx: unknown element line family 'Xx'"),
    (["--elements", ","], "--elements ,: give at least one line family"),
    (["--calibration", "/no/such/override.txt"], "--calibration /no/such/override.txt: no such file; allowed: auto"),
    (["--background", "fixed"], "--background fixed is not known; allowed: 'auto', 'held', 'free'"),
    (["--background", "held", "--method", "nnls"], "--background held with --method nnls: only the poisson fit"),
])
def test_cli_fit_refuses_bad_options_before_opening_anything(tmp_path, capsys, args, message):
    assert cli.main(["fit", "abcdef", "--data-dir", str(tmp_path / "never"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_spectra_without_a_recorded_energy_axis_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="records no energy calibration.*--calibration FILE"):
        energy_axis({}, {"source": "hdf5:/somewhere"}, 2048)
    two = {"energy_calibration": [{"detector": "a", "offset": 0.0, "gain": 0.01},
                                  {"detector": "b", "offset": 0.05, "gain": 0.01}]}
    with pytest.raises(ValueError, match=r"energy axes \(a, b\) differ by up to 5 channels"):
        energy_axis(two, {}, 2048)


def test_prefer_fitted_replaces_only_what_the_fit_covers():
    theta = np.array([0.0, 90.0])
    maps = {"Zn": np.ones((2, 3, 4)), "Fe": np.ones((2, 3, 4)), "dpc_x": np.zeros((2, 3, 4))}
    out, sources = prefer_fitted(maps, theta, {"Zn": np.full((2, 3, 4), 2.0)}, theta)
    assert sources == {"Zn": FITTED, "Fe": ROI} and out["Zn"].dtype == np.float32 and (out["Zn"] == 2).all()
    assert maps["Zn"].max() == 1  # the caller's dict untouched
    out, sources = prefer_fitted(maps, theta, {"Zn": np.full((1, 3, 4), 2.0)}, theta[:1])
    assert sources["Zn"].startswith(ROI + " (the fit has 1 projections, the run 2") and out["Zn"].max() == 1


def test_the_dose_study_reconstructs_zn_from_fitted_spectra_when_asked():
    from xfct_bluesky.dose_study import dose_study, format_study

    kw = {"schedules": ((4, 2e-3),), "alignments": ("truth",), "size": 36, "rows": 7, "margin": 1,
          "cell_diameter": 5e-6, "iterations": 2, "fit": True}
    res = dose_study(pipeline="bluesky", **kw)  # xfct_tomo in a Session, its spectra fitted live
    assert res.settings["zn_maps"] == FITTED
    assert "Zn from fitted spectra; MLEM (2 iterations)" in format_study(res)
    (case,) = res.cases
    assert np.isfinite(case.nrmse) and 0 < case.nrmse < 1.5
