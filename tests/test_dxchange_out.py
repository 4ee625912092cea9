"""``reconstruct --dxchange``: the Data Exchange file written from a reconstruction, read back.

One small simulated tomography (12 angles, 16 x 20 px) taken by ``xfct_tomo`` so that the start
document is the plan's own; reconstructed without Tiled (``reconstruct_maps`` as ``reconstruct_tomo``
does it), written by :func:`xfct_bluesky.reconstruction.write_dxchange`, read back by the importer's
:func:`~xfct_bluesky.importers.dxchange.read_dxchange` and by plain h5py as dxchange reads it.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
from bluesky import RunEngine

from xfct_bluesky.analysis.tomo import ReconstructionWarning
from xfct_bluesky.importers.dxchange import read_dxchange
from xfct_bluesky.plans import xfct_tomo
from xfct_bluesky.reconstruction import raw_metadata, reconstruct_maps, write_dxchange

ROWS, COLS, N_ANGLES, DWELL, PIXEL = 16, 20, 12, 2e-3, 300e-9


@pytest.fixture(scope="module")
def run():
    """(start document, theta, maps by quantity name) of a 12-angle xfct_tomo run of a simulated cell."""
    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import RunoutModel, small_cell

    mp = make_sim_microprobe(shape=(ROWS, COLS), pixel_size=PIXEL, seed=2, specimen=small_cell(5e-6, seed=2),
                             runout=RunoutModel(eccentricity=0.5e-6, seed=2), save_spectra=False)
    docs = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(xfct_tomo(mp, shape=(ROWS, COLS), pixel_size=PIXEL, n_angles=N_ANGLES, dwell=DWELL, md={"sample": "cell 7"}))
    start = docs[0][1]
    events = [d["data"] for n, d in docs if n == "event" and f"{mp.scanner.name}_Zn" in d["data"]]
    theta = np.array([e[mp.rotation.name] for e in events])
    keys = {name: key for name, key in start["quantities"].items() if np.ndim(events[0].get(key)) == 2}
    maps = {name: np.stack([e[key] for e in events]) for name, key in keys.items()}
    return start, theta, maps


@pytest.fixture(scope="module")
def rec(run):
    start, theta, maps = run
    rec = reconstruct_maps(maps, theta, elements=("Zn", "Fe"), algorithm="osem", iterations=2)
    rec.raw_uid, rec.metadata = start["uid"], raw_metadata(start)  # what reconstruct_tomo does
    return rec


@pytest.fixture(scope="module")
def written(rec, tmp_path_factory):
    path = write_dxchange(tmp_path_factory.mktemp("dx") / "out" / "recon.h5", rec)
    return path, read_dxchange(path)


def test_data_is_the_aligned_stack_marked_aligned_with_units_and_normalisation(rec, written):
    _, dx = written
    np.testing.assert_array_equal(dx.data, rec.aligned["Zn"])
    attrs = dx.data_attrs
    assert attrs["axes"] == "theta:y:x" and attrs["units"] == "counts"  # photon counts per pixel, as recorded
    assert attrs["description"].startswith("Zn fluorescence projections, aligned: shifted by /exchange/shifts")
    assert rec.raw_uid in attrs["description"]  # where the raw projections are
    assert attrs["normalization"].startswith("none: the maps as recorded (not divided by I0, live time or dwell)")
    for name in ("Zn", "Fe", "phase"):
        np.testing.assert_array_equal(dx.exchange_extras[f"data_{name}"], rec.aligned[name])
        np.testing.assert_array_equal(dx.exchange_extras[f"recon_{name}"], rec.volumes[name])
    np.testing.assert_array_equal(dx.theta, rec.theta)
    assert dx.theta_units == "deg" and dx.data_white is None and dx.data_dark is None
    np.testing.assert_array_equal(dx.exchange_extras["shifts"], rec.shifts)


def test_measurement_holds_the_runs_energy_detector_and_sample(run, written):
    start, *_ = run
    _, dx = written
    assert dx.incident_energy_kev == pytest.approx(start["energy"], rel=1e-12)  # stored in J, as Data Exchange has it
    m = dx.measurement
    assert m["instrument/monochromator/energy"].units == "J"
    assert m["instrument/detector/exposure_time"].value == start["dwell"] == DWELL
    assert m["instrument/detector/exposure_time"].units == "s"
    for axis in ("x", "y"):
        entry = m[f"instrument/detector/actual_pixel_size_{axis}"]
        assert entry.value == start["pixel_size"] == PIXEL and entry.units == "m"
    assert m["sample/name"].value == "cell 7"
    assert "instrument/name" not in m  # the run does not name its instrument: nothing is made up
    assert "instrument/detector/pixel_size_x" not in m  # a physical detector pixel: the SDD has none


def test_process_holds_the_options_and_the_alignment(rec, written):
    _, dx = written
    p = {k: v.value for k, v in dx.process.items()}
    assert p["reconstruction/algorithm"] == rec.algorithm == "osem"
    assert p["reconstruction/center"] == rec.center and dx.process["reconstruction/center"].units == "px"
    assert p["reconstruction/center_tomopy"] == rec.center + 0.5  # tomopy counts from the detector edge
    assert (p["reconstruction/iterations"], p["reconstruction/subsets"]) == (rec.iterations, rec.subsets) == (2, 8)
    assert p["reconstruction/raw_uid"] == rec.raw_uid and p["reconstruction/raw_scan_id"] == rec.metadata["raw_scan_id"]
    assert p["alignment/choice"] == rec.align == "auto"
    al = rec.alignment
    assert (p["alignment/method"], p["alignment/channel"], p["alignment/applied"]) == (al.method, al.channel,
                                                                                         al.applied)
    assert p["alignment/reason"] == al.reason
    assert p["alignment/consistency_after"] == al.consistency["after"]
    assert "reconstruction/excluded_projections" not in p and "reconstruction/filter" not in p


def test_implements_lists_exactly_the_top_level_groups(written):
    path, dx = written
    with h5py.File(path) as f:
        groups = [k for k in f if isinstance(f[k], h5py.Group)]
        assert isinstance(f["implements"], h5py.Dataset)  # a string dataset, as dxfile writes it
    assert dx.implements == ("exchange", "measurement", "process")
    assert sorted(dx.implements) == sorted(groups)


def test_plain_h5py_reads_what_dxchange_and_tomopy_read(rec, written):
    path, _ = written
    with h5py.File(path) as f:
        # dxchange.read_aps_32id: exchange/data, data_white, data_dark (None when absent), theta in degrees -> rad
        data = f["exchange/data"]
        assert data.shape == (N_ANGLES, ROWS, COLS) and data.dtype == np.float32
        assert "data_white" not in f["exchange"] and "data_dark" not in f["exchange"]
        np.testing.assert_allclose(f["exchange/theta"][()] * np.pi / 180, np.deg2rad(rec.theta))
        assert f["exchange/theta"].attrs["units"] == "deg"
        assert {"units", "axes", "description", "normalization"} <= set(data.attrs)
        assert f["exchange/shifts"].attrs["units"] == "px" and f["exchange/shifts"].shape == (N_ANGLES, 2)
        assert f["exchange/data_Zn"] == data  # a link to data, not a second copy
        vol = f["exchange/recon_Zn"]
        assert vol.shape == (ROWS, COLS, COLS) and vol.attrs["axes"] == "z:y:x"
        assert vol.attrs["units"] == "counts per voxel per projection" and "OSEM, 2 iterations" in vol.attrs[
            "description"]
        assert f["exchange/recon_phase"].attrs["units"] == "a.u."
        assert f["measurement/instrument/monochromator/energy"].attrs["units"] == "J"
        assert f["process/reconstruction/algorithm"][()].decode() == "osem"


def test_an_imported_run_writes_what_it_records_and_no_guess(rec, tmp_path):
    start = {"uid": "u" * 32, "plan_name": "import", "instrument": "APS 2-ID-E", "sample": {"name": "root tip",
             "description": "Arabidopsis, fixed", "mass": 1.0},
             "files": [{"path": "a.h5", "energy": 10.0}, {"path": "b.h5", "energy": 10.0}]}
    md = raw_metadata(start)
    assert md == {"raw_plan_name": "import", "energy": 10.0, "instrument": "APS 2-ID-E",
                  "sample": start["sample"]}
    dx = read_dxchange(write_dxchange(tmp_path / "imported.h5", dataclasses.replace(rec, metadata=md)))
    assert dx.incident_energy_kev == pytest.approx(10.0)
    assert dx.measurement["instrument/name"].value == "APS 2-ID-E"
    assert dx.measurement["sample/name"].value == "root tip"
    assert dx.measurement["sample/description"].value == "Arabidopsis, fixed"
    assert not any(k.startswith("instrument/detector") for k in dx.measurement)  # no dwell, no pixel size recorded
    assert "sample/mass" not in dx.measurement  # a number in units nobody recorded
    assert "units" not in dx.data_attrs and "units not known here" in dx.data_attrs["description"]
    # units given by the caller (the raw run's data key) are written as given
    dx = read_dxchange(write_dxchange(tmp_path / "cps.h5", dataclasses.replace(rec, metadata=md),
                                      units="counts/s"))
    assert dx.data_attrs["units"] == "counts/s"
    with h5py.File(dx.path) as f:
        assert f["exchange/recon_Fe"].attrs["units"] == "counts/s per voxel per projection"
        assert f["exchange/data_phase"].attrs["units"] == "a.u."


def test_raw_metadata_leaves_out_what_the_raw_run_does_not_record():
    assert raw_metadata({"plan_name": "import", "instrument": "unknown"}) == {"raw_plan_name": "import"}
    differing = {"files": [{"energy": 10.0}, {"energy": 12.0}]}  # no one energy: none written
    assert raw_metadata(differing) == {}
    assert raw_metadata({"files": [{"energy": 10.0}, {}]}) == {}  # one file without: not known for all


def test_excluded_projections_and_given_shifts_are_recorded(run, rec, tmp_path):
    start, theta, maps = run
    shifts = rec.shifts.copy()  # all projections were kept: none excluded in rec
    shifts[3] = np.nan
    with pytest.warns(ReconstructionWarning, match="1 of the 12 projections are left out"):
        again = reconstruct_maps(maps, theta, elements=("Zn",), algorithm="fbp", shifts=shifts, phase=False)
    again.metadata = raw_metadata(start)
    dx = read_dxchange(write_dxchange(tmp_path / "excluded.h5", again))
    assert dx.data.shape[0] == N_ANGLES - 1 and dx.theta.size == N_ANGLES - 1
    p = {k: v.value for k, v in dx.process.items()}
    assert p["reconstruction/excluded_projections"] == 3 and p["reconstruction/filter"] == "shepp-logan"
    assert "reconstruction/iterations" not in p and "reconstruction/raw_uid" not in p  # FBP; no raw uid given
    assert p["alignment/source"].startswith("shifts given to the reconstruction")
    assert "1 projection left out" in dx.data_attrs["description"]


def test_the_importer_reads_the_file_back_as_a_run(run, written):
    from xfct_bluesky.importers._mapping import map_dxchange

    start, *_ = run
    _, dx = written
    mapped = map_dxchange(dx)
    assert mapped.metadata["energy"] == pytest.approx(start["energy"], rel=1e-12)
    assert mapped.metadata["file_sample"] == "cell 7" and mapped.metadata["implements"] == list(dx.implements)
    assert mapped.metadata["angles"] == pytest.approx(list(dx.theta))
