"""Imported data end to end: ``xfct-bluesky import``, ``ls``, ``reconstruct`` and the live callbacks' replay.

A tomography at APS 2-ID-E is a folder of XRF-Maps analysed files, one per
projection (``MAPS/Scan/theta`` each). No such set is in the public test
data, so the files here are written with the layout XRF-Maps writes
(:func:`xfct_bluesky.importers.write_maps_hdf5`, after its ``hdf5_io.cpp``)
from the simulator's maps at the paper's count levels, with a runout the
simulator knows: ``US_IC`` the incident counts, ``DS_IC`` the transmitted,
``CFG_2`` .. ``CFG_5`` the segmented detector's quadrants (XRF-Maps derives
its DPC signals from them), and the ROI fit in counts per second. They are
imported through the command line into the suite's Tiled server over HTTP,
aligned and reconstructed by ``xfct-bluesky reconstruct``, and replayed
through the live callbacks; the shifts found are compared with the true
runout. A Data Exchange file (its projections referenced in place) is
reconstructed the same way. The real 2-ID-E MDA files go through the same
command in ``test_cli_imports_real_mda_and_ls_names_the_format``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from xfct_bluesky import cli
from xfct_bluesky.analysis.align import alignment_error
from xfct_bluesky.importers import read_dxchange, write_dxchange, write_maps_hdf5
from xfct_bluesky.physics import MicroprobeSimulator, RunoutModel, small_cell
from xfct_bluesky.plans import tomo_angles
from xfct_bluesky.storage import load_tomo

DATA = Path(__file__).parent / "data" / "xrf-maps-2ide"
SHAPE = (24, 32)
N_ANGLES = 24
DWELL = 3e-3  # s: the paper's low-dose regime, a few Zn counts per pixel


@pytest.fixture(scope="module")
def simulated():
    """The simulator's maps of a tomography with runout, and its true offsets (px)."""
    sim = MicroprobeSimulator(small_cell(6e-6, seed=3), runout=RunoutModel(eccentricity=0.8e-6, seed=3), seed=3)
    theta = tomo_angles(N_ANGLES, 180, "golden")
    maps = [sim.simulate_map(SHAPE, 300e-9, DWELL, t, spectra=False).maps for t in theta]
    return theta, maps, np.array(sim.truth.offsets)


@pytest.fixture(scope="module")
def maps_files(simulated, tmp_path_factory):
    """One XRF-Maps analysed file per projection, shuffled names (the import sorts by theta)."""
    theta, maps, _ = simulated
    folder = tmp_path_factory.mktemp("maps-tomo")
    x = np.arange(SHAPE[1]) * 0.3
    y = np.arange(SHAPE[0]) * 0.3
    paths = []
    for k in np.random.default_rng(0).permutation(len(theta)):
        m = maps[k]
        live = m["live_time"].astype(np.float64)
        scalers = {"SRcurrent": np.full(SHAPE, 102.0), "US_IC": m["i0"],
                   "DS_IC": np.rint(m["i0"] * m["transmission"]),
                   **{f"CFG_{i + 2}": m[f"q{i + 1}"] for i in range(4)}}
        roi = {el: m[el] / live for el in ("K", "Ca", "Fe", "Zn")}  # XRF-Maps' Counts_Per_Sec
        paths.append(write_maps_hdf5(folder / f"2xfm_{100 + k:04d}.mda.h5", x_axis=x, y_axis=y, scalers=scalers,
                                     analyzed={"ROI": roi}, theta=float(theta[k]),
                                     extra_pvs=[("2xfm:m53.VAL", f"{theta[k]:.4f}", "", ""),  # as XRF-Maps
                                                ("2xfm:mono:ENERGY_RBV", "10.0", "", "")],  # keeps them
                                     scan_name=f"2xfm_{100 + k:04d}.mda"))
    return paths


def _run(capsys, *argv) -> str:
    """``xfct-bluesky ARGV`` in this process; its stdout (the exit status must be 0)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert status == 0, f"exit {status}: {err}"
    return out


def _uid(out: str, pattern: str) -> str:
    found = re.search(pattern, out)
    assert found, out
    return found.group(1)


def test_cli_imports_a_maps_tomography_and_reconstructs_it(simulated, maps_files, shared_tiled, capsys, tmp_path):
    theta, maps, truth = simulated
    server = ["--uri", shared_tiled.server.uri]
    out = _run(capsys, "import", "--tomo", "--sample", "cell 3", "--asset-dir", shared_tiled.data_dir / "assets",
               *server, *maps_files)
    uid = _uid(out, r"run ([0-9a-f-]{36}): XRF-Maps/MAPS HDF5 [0-9.]+ x24")
    assert "1 run(s) imported, 0 file(s) skipped" in out
    assert f"xfct-bluesky reconstruct {uid[:8]}" in out  # the next step is named

    run = shared_tiled.catalog[uid]
    start = run.metadata["start"]
    order = np.argsort(theta)
    np.testing.assert_allclose(start["angles"], theta[order])
    assert start["sample"] == "cell 3" and start["instrument"] == "APS 2-ID-E"
    tomo = load_tomo(run)
    np.testing.assert_allclose(tomo.theta, theta[order])
    # maps by quantity: XRF-Maps' ROI Zn (counts/s) and its DPC signals from the quadrants
    live = np.stack([maps[k]["live_time"] for k in order]).astype(np.float64)
    zn = np.stack([maps[k]["Zn"] for k in order])
    np.testing.assert_allclose(tomo.maps["Zn"] * live, zn, rtol=1e-5, atol=1e-3)
    q = [np.stack([maps[k][f"q{i}"] for k in order]).astype(np.float64) for i in (1, 2, 3, 4)]
    np.testing.assert_allclose(tomo.maps["dpc_diag"], (q[0] - q[2]) / sum(q), rtol=1e-4, atol=1e-7)

    listing = _run(capsys, "ls", *server)
    line = next(row for row in listing.splitlines() if row.startswith(uid[:8]))
    assert "import" in line and "XRF-Maps/MAPS HDF5 10.0 x24" in line and "cell 3" in line and " 24 " in line

    # the same files again: skipped, nothing written twice
    again = _run(capsys, "import", "--tomo", *server, "--asset-dir", shared_tiled.data_dir / "assets", *maps_files)
    assert f"already imported: the tomography run {uid}" in again and "0 run(s) imported" in again

    dx_path = tmp_path / "rec.h5"
    out = _run(capsys, "reconstruct", uid[:8], *server, "--elements", "Zn", "--algorithm", "mlem",
               "--dxchange", dx_path)
    rec_uid = _uid(out, r"stored as run ([0-9a-f-]{36})")
    derived = shared_tiled.derived[rec_uid]  # derived runs live apart from the scans
    assert derived.metadata["start"]["raw_uid"] == uid
    shifts = np.stack([np.asarray(derived["shifts"][k].read()) for k in ("dy", "dx")], axis=1)
    truth_sorted = truth[order]
    err = alignment_error(shifts, tomo.theta, truth_sorted)
    unaligned = alignment_error(np.zeros_like(shifts), tomo.theta, truth_sorted)
    assert np.ptp(truth[:, 1]) > 3 and np.all(unaligned > 0.5), unaligned  # the runout is several px
    assert np.all(err < 0.25), (err, unaligned)  # aligned on XRF-Maps' DPC: a fraction of a pixel
    volume = np.asarray(derived["primary"]["Zn"].read())[0]
    assert volume.shape == (SHAPE[0], SHAPE[1], SHAPE[1]) and np.isfinite(volume).all() and volume.max() > 0
    written = read_dxchange(dx_path)  # the DXchange export of an imported run: its units and instrument kept
    np.testing.assert_allclose(written.theta, tomo.theta)
    assert written.data_attrs["units"] == "cts/s" and "aligned" in written.data_attrs["description"]
    assert written.measurement["instrument/name"].value == "APS 2-ID-E"
    assert written.process["reconstruction/raw_uid"].value == uid

    # one map alone is no tomography: reconstruct says what to do
    tiny = write_maps_hdf5(tmp_path / "2xfm_0098.mda.h5", x_axis=np.arange(4.0), y_axis=np.arange(3.0),
                           analyzed={"ROI": {"Zn": np.ones((3, 4))}}, theta=0.0)
    assert cli.main(["import", *server, str(tiny)]) == 1  # refused before a document is written
    assert "'Zn' (hdf5:/MAPS/XRF_Analyzed/ROI/Counts_Per_Sec[Zn]) is (3, 4), 12 values: too small to store" in (
        capsys.readouterr().err)
    single = write_maps_hdf5(tmp_path / "2xfm_0099.mda.h5", x_axis=np.arange(5.0), y_axis=np.arange(4.0),
                             analyzed={"ROI": {"Zn": np.ones((4, 5))}}, theta=0.0)
    one = _uid(_run(capsys, "import", *server, single), r"run ([0-9a-f-]{36}): XRF-Maps")
    assert cli.main(["reconstruct", one, *server]) == 1
    assert "file of one map, not a tomography" in capsys.readouterr().err

    # the live callbacks replay the imported run: the same alignment as the command's, off the same maps
    from xfct_bluesky.callbacks.alignment import LiveDPCAlignment
    from xfct_bluesky.callbacks.reconstruction import LiveReconstruction

    live_rec = LiveReconstruction(elements=("Zn",), iterations=5)
    alignment = LiveDPCAlignment(emit=live_rec)  # its derived run's shifts go to the reconstruction
    for name, doc in run.documents():
        alignment(name, doc)
        live_rec(name, doc)
    assert live_rec.wait(120)
    assert live_rec.results[uid]["alignment_source"] == "live dpc alignment"
    assert alignment.errors == [] and live_rec.errors == []
    live_err = alignment_error(alignment.results[uid]["shifts"], tomo.theta, truth_sorted)
    assert np.all(live_err < 0.25), live_err
    assert live_rec.results[uid]["reconstruction"].volumes["Zn"].shape == volume.shape


def test_cli_reconstructs_an_imported_dxchange_file(simulated, shared_tiled, capsys, tmp_path):
    """A tomopy user's Data Exchange file: projections read in place from the file, through Tiled."""
    theta, maps, _ = simulated
    zn = np.stack([m["Zn"] for m in maps]).astype(np.float32)
    path = write_dxchange(tmp_path / "tomo.h5", zn, theta=theta,
                          measurement={"sample/name": "cell 3", "instrument/monochromator/energy": (10.0, "keV")})
    server = ["--uri", shared_tiled.server.uri]
    out = _run(capsys, "import", *server, "--asset-dir", shared_tiled.data_dir / "assets", path)
    uid = _uid(out, r"run ([0-9a-f-]{36}): Data Exchange HDF5")
    tomo = load_tomo(shared_tiled.catalog[uid])
    np.testing.assert_array_equal(tomo.maps["projections"], zn)  # the external frames, read in place
    np.testing.assert_allclose(tomo.theta, theta)
    out = _run(capsys, "reconstruct", uid[:8], *server, "--elements", "projections", "--align", "none",
               "--algorithm", "fbp", "--tomopy-center", SHAPE[1] / 2)  # tomopy's default axis: ours, (n - 1) / 2
    rec_uid = _uid(out, r"stored as run ([0-9a-f-]{36})")
    from xfct_bluesky.reconstruction import reconstruct_maps

    mine = reconstruct_maps({"projections": zn}, theta, elements=("projections",), align="none", algorithm="fbp",
                            center=(SHAPE[1] - 1) / 2).volumes["projections"]
    stored = np.asarray(shared_tiled.derived[rec_uid]["primary"]["projections"].read())[0]
    np.testing.assert_allclose(stored, mine, rtol=1e-5, atol=1e-6 * float(np.abs(mine).max()))


def test_cli_imports_real_mda_and_ls_names_the_format(tmp_path, capsys):
    """The real 2-ID-E fly scan and its flyXRF file through the command, into a data folder of its own (the
    command's default); bad input writes nothing."""
    data = ["--data-dir", tmp_path / "data"]
    scan, fly = DATA / "mda" / "2xfm_0011.mda", DATA / "flyXRF" / "2xfm_0011_2xfm3__0.h5"
    bad = tmp_path / "truncated.mda"
    bad.write_bytes((DATA / "mda" / "2xfm_0010.mda").read_bytes()[:5000])
    status = cli.main([str(a) for a in ("import", *data, scan, bad)])
    _, err = capsys.readouterr()
    assert status == 1 and "nothing imported" in err and str(bad) in err
    assert cli.main([str(a) for a in ("import", *data, tmp_path / "absent.mda")]) == 2
    assert "absent.mda: no such file" in capsys.readouterr().err

    out = _run(capsys, "import", *data, scan, fly)
    assert "1 run(s) imported, 1 file(s) skipped" in out
    assert f"{fly}: imported with {scan} as its spectra" in out  # the flyXRF file goes in with its MDA scan
    uid = _uid(out, r"(\w{8})  imported  \S*2xfm_0011.mda")
    listing = _run(capsys, "ls", *data)
    rows = listing.splitlines()[1:]
    assert len(rows) == 1, listing  # the file refused with the truncated one was not written either
    assert rows[0].startswith(uid) and "import" in rows[0] and "synApps MDA 1.3 + flyXRF" in rows[0]
