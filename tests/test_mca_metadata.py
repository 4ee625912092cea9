"""Spectra other tools can refit (issue 13 item 6).

One simulated two-angle run, written to the suite's Tiled server: its descriptor says how the MCA's
channels map to keV, the ROI window of each element map and the dead-time model; its events carry live
and real time, ICR and OCR per pixel; its HDF5 file carries the same calibration; and the calibration puts
Zn K-alpha on the channel where the recorded spectra's Zn peak is. The dead-time and I0 correction of
``analysis.deadtime`` is checked against the simulator's known factor.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import event_model
import h5py
import numpy as np
import pytest
from scipy.optimize import curve_fit

from xfct_bluesky.analysis.deadtime import correct_maps
from xfct_bluesky.callbacks.fit import energy_axis
from xfct_bluesky.physics import constants as C
from xfct_bluesky.plans import xfct_tomo
from xfct_bluesky.storage import make_tiled_writer

SHAPE, PIXEL, DWELL = (12, 12), 300e-9, 20e-3
KEY = "microprobe_scanner"


class _Validated(list):
    __hash__ = object.__hash__  # a RunEngine subscriber must be hashable
    """RunEngine subscriber: every document validated against event-model's schema, then kept."""

    def __call__(self, name, doc):
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        self.append((name, copy.deepcopy(doc)))

    def of(self, name):
        return [doc for n, doc in self if n == name]

    def events(self, stream="primary"):
        uids = {d["uid"] for d in self.of("descriptor") if d["name"] == stream}
        return [e for e in self.of("event") if e["descriptor"] in uids]


@pytest.fixture(scope="module")
def run(shared_tiled):
    from bluesky import RunEngine

    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import small_cell

    from xfct_bluesky.physics.cells import EGG_ZN_ATOMS

    cell = small_cell(3e-6, seed=3, zn_atoms=EGG_ZN_ATOMS / 20)  # Zn enough for a peak in 288 pixels
    mp = make_sim_microprobe(shape=SHAPE, pixel_size=PIXEL, seed=3, specimen=cell,
                             hdf5_directory=shared_tiled.data_dir / "assets")
    mp.realtime = False  # maps as fast as they are computed
    RE, docs, results = RunEngine({}), _Validated(), []
    RE.subscribe(docs)
    RE.subscribe(make_tiled_writer(shared_tiled.catalog))
    RE.subscribe(lambda name, doc: results.append(mp.scanner.last_result)
                 if name == "event" and f"{KEY}_Zn" in doc["data"] else None)  # the map each event read
    (uid,) = RE(xfct_tomo(mp, shape=SHAPE, pixel_size=PIXEL, n_angles=2, dwell=DWELL))
    (descriptor,) = [d for d in docs.of("descriptor") if d["name"] == "primary"]
    return SimpleNamespace(uid=uid, mp=mp, docs=docs, descriptor=descriptor, events=docs.events(),
                           results=results, tiled=shared_tiled)


def test_the_descriptor_says_how_channels_map_to_kev_the_rois_and_the_dead_time(run):
    event_model.schema_validators[event_model.DocumentNames.descriptor].validate(run.descriptor)
    vortex = run.mp.simulator.vortex
    spectra = run.descriptor["data_keys"][f"{KEY}_spectra"]
    cal = spectra["energy_calibration"]
    assert (cal["offset"], cal["gain"], cal["quadratic"], cal["units"]) == (0.005, 0.01, 0.0, "keV")
    for sym in vortex.elements:  # every element map's window, on its own key and on the spectra's
        lo, hi = vortex.roi_window(sym)
        window = run.descriptor["data_keys"][f"{KEY}_{sym}"]["roi_window"]
        assert window == pytest.approx([lo * 0.01, hi * 0.01]) == spectra["roi_windows"][sym]
        assert window[0] < C.element(sym).ka < window[1]
    assert spectra["dead_time"]["model"] == "paralyzable" and spectra["dead_time"]["tau"] == vortex.dead_time
    units = {k: run.descriptor["data_keys"][f"{KEY}_{k}"]["units"] for k in ("live_time", "real_time", "icr", "ocr")}
    assert units == {"live_time": "s", "real_time": "s", "icr": "counts/s", "ocr": "counts/s"}
    # Tiled keeps the extra data-key fields, so a reader of the stored run finds them too
    stored = run.tiled.catalog[run.uid]["primary"].metadata["data_keys"][f"{KEY}_spectra"]
    assert stored["energy_calibration"] == cal and stored["roi_windows"]["Zn"] == spectra["roi_windows"]["Zn"]
    # and the live fit reads it from the data key, not from its knowledge of the simulator
    axis, where = energy_axis({}, stored, vortex.n_channels)
    assert where.startswith("the data key's energy_calibration")
    np.testing.assert_allclose(axis, vortex.energies, atol=1e-12)


def test_the_hdf5_file_carries_the_calibration_and_it_finds_the_zn_peak(run):
    (resource,) = run.docs.of("stream_resource")
    path = Path(urlparse(resource["uri"]).path)
    with h5py.File(path, "r", swmr=True) as f:
        dset = f[resource["parameters"]["dataset"]]
        offset, gain, quad = (float(dset.attrs[f"calibration_{k}"]) for k in ("offset", "gain", "quadratic"))
        assert dset.attrs["energy_units"] == "keV"
        assert json.loads(dset.attrs["roi_windows"])["Zn"] == pytest.approx(list(run.mp.simulator.vortex.roi_windows_kev()["Zn"]))
        np.testing.assert_array_equal(f["/entry/instrument/fluorescence/energy_calibration"][()], [offset, gain, quad])
        energy = f["/entry/instrument/fluorescence/energy"][()]
        summed = dset[()].sum(axis=(0, 1, 2), dtype=np.int64)  # every pixel of both maps
    assert summed.size == energy.size == 2048
    ka = C.element("Zn").ka
    near = np.flatnonzero(np.abs(energy - ka) < 0.3)  # Zn K-alpha +- 300 eV
    channels = near.astype(float)

    def line(i, area, centre, sigma, level):  # a Gaussian on a flat background, in channels
        return area * np.exp(-0.5 * ((i - centre) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)) + level

    guess = (float(summed[near].sum()), float(near[np.argmax(summed[near])]), 7.0, float(summed[near].min()))
    (area, centre, sigma, _), cov = curve_fit(line, channels, summed[near], p0=guess,
                                              sigma=np.sqrt(np.maximum(summed[near], 1)))
    predicted = (ka - offset) / gain  # the calibration, inverted (linear: quad 0)
    print(f"Zn K-alpha {ka:.4f} keV: the spectra's peak at channel {centre:.2f} +- {np.sqrt(cov[1, 1]):.2f} "
          f"({area:.0f} counts, sigma {sigma:.2f} ch), the file's calibration puts it at {predicted:.2f}")
    assert area > 1000  # a real peak, not noise
    assert abs(centre - predicted) < 0.5  # within half a channel (5 eV)


def test_live_real_time_icr_and_ocr_agree_with_the_dead_time_model(run):
    tau = run.mp.simulator.vortex.dead_time
    assert len(run.events) == len(run.results) == 2
    for event, res in zip(run.events, run.results, strict=True):
        d = {k: np.asarray(event["data"][f"{KEY}_{k}"], np.float64) for k in ("live_time", "real_time", "icr", "ocr")}
        assert d["icr"].shape == SHAPE and np.all(d["real_time"] == np.float32(DWELL))
        live_fraction = d["live_time"] / d["real_time"]
        assert 0.5 < live_fraction.min() < 0.99 and d["icr"].max() > 1e4  # a dead time worth correcting
        np.testing.assert_allclose(d["ocr"], d["icr"] * live_fraction, rtol=1e-5)  # ICR = OCR / live fraction
        np.testing.assert_allclose(live_fraction, np.exp(-d["icr"] * tau), rtol=1e-5)  # paralyzable
        # the ICR is the rate of photons the simulator drew its counts from
        sim = run.mp.simulator
        rates = sim.vortex.rates(res.expected.elements, res.expected.mass, sim.probe.flux)
        np.testing.assert_allclose(d["icr"], rates.sum(axis=0), rtol=1e-6)
    # Tiled serves the same per-pixel statistics
    stored = run.tiled.catalog[run.uid]["primary"]
    np.testing.assert_array_equal(stored[f"{KEY}_ocr"].read()[1], run.events[1]["data"][f"{KEY}_ocr"])


def test_the_corrected_i0_normalised_map_is_the_raw_map_times_the_known_factor(run):
    d = {k: np.asarray(run.events[0]["data"][f"{KEY}_{k}"], np.float64)
         for k in ("Zn", "Fe", "i0", "live_time", "real_time", "icr", "ocr")}
    tau = run.mp.simulator.vortex.dead_time
    known = np.exp(d["icr"] * tau) * 1e5 / d["i0"]  # the model's dead time undone, per 1e5 I0 counts
    by_time = correct_maps({"Zn": d["Zn"], "Fe": d["Fe"]}, i0=d["i0"], live_time=d["live_time"],
                           real_time=d["real_time"], i0_reference=1e5)
    by_rate = correct_maps({"Zn": d["Zn"]}, i0=d["i0"], icr=d["icr"], ocr=d["ocr"], i0_reference=1e5)
    np.testing.assert_allclose(by_time.maps["Zn"], d["Zn"] * known, rtol=1e-5)
    np.testing.assert_allclose(by_time.maps["Fe"], d["Fe"] * known, rtol=1e-5)
    np.testing.assert_allclose(by_rate.maps["Zn"], d["Zn"] * known, rtol=1e-5)
    assert by_time.correction.dead_time == "real_time / live_time" and by_rate.correction.dead_time == "ICR / OCR"
    meta = by_time.correction.as_metadata()
    assert meta["i0_reference"] == 1e5 and meta["undefined_pixels"] == 0 and json.dumps(meta)
    lo, hi = meta["factor_range"]
    print(f"dead-time factor {np.exp(d['icr'] * tau).min():.4f}..{np.exp(d['icr'] * tau).max():.4f}; "
          f"correction x{lo:.4g}..{hi:.4g}")


def test_bad_inputs_name_the_value_the_range_and_the_fix():
    with pytest.raises(ValueError, match=r"live_time exceeds real_time .*allowed: live_time <= real_time"):
        correct_maps({"Zn": [[1.0]]}, live_time=[[2.0]], real_time=[[1.0]])
    with pytest.raises(ValueError, match=r"ocr exceeds icr .*allowed: ocr <= icr"):
        correct_maps({"Zn": [[1.0]]}, icr=[[1.0]], ocr=[[2.0]], dead_time="icr_ocr")
    with pytest.raises(ValueError, match=r"dead_time='icr_ocr' needs icr and ocr"):
        correct_maps({"Zn": [[1.0]]}, dead_time="icr_ocr")
    with pytest.raises(ValueError, match=r"i0 has negative values"):
        correct_maps({"Zn": [[1.0]]}, i0=[[-1.0]])
    out = correct_maps({"Zn": [[4.0, 4.0]]}, i0=[[0.0, 2.0]], i0_reference=1.0)  # no beam in the first pixel
    assert np.isnan(out.maps["Zn"][0, 0]) and out.maps["Zn"][0, 1] == 2.0 and out.correction.undefined == 1
