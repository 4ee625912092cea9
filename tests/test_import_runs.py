"""The field's files as bluesky runs in Tiled: ``documents_from_file`` and ``import_files``.

One embedded Tiled server for the module, reached over HTTP on loopback. The
real 2-ID-E files (XRF-Maps' public test set, ``tests/data/xrf-maps-2ide``) are
imported once and read back through Tiled; the numbers they must hold are the
readers' (``test_import_readers.py``, checked there against Mooney's reader).
MAPS, PyXRF and Data Exchange files are written by the layouts' writers of
:mod:`xfct_bluesky.importers` into ``tmp_path``, outside the server's readable
storage, so the import has to copy what it references. Bad input is refused
before anything reaches the catalog or the asset folder.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import event_model
import h5py
import numpy as np
import pytest

from xfct_bluesky.importers import (
    detect_format,
    documents_from_file,
    import_files,
    read_flyxrf,
    read_maps_hdf5,
    read_mda,
    write_dxchange,
    write_maps_hdf5,
    write_pyxrf,
)
from xfct_bluesky.quantities import is_quantity
from xfct_bluesky.storage import (
    load_spectra,
    load_theta,
    load_tomo,
)

DATA = Path(__file__).parent / "data" / "xrf-maps-2ide"
AXO = DATA / "mda" / "axo_std.mda"
SCAN10 = DATA / "mda" / "2xfm_0010.mda"
SCAN11 = DATA / "mda" / "2xfm_0011.mda"
FLY11 = DATA / "flyXRF" / "2xfm_0011_2xfm3__0.h5"
ROWS, COLS, NCHAN = 5, 7, 16  # the written files: not square (xarray names square dims twice)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def validate_all(docs):
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)


class Fields:
    """The fields of one stream of a run read back through Tiled, each fetched once (requests are slow
    on a busy 2-core machine: 0.1-0.3 s each)."""

    def __init__(self, run, stream="primary"):
        # one listing of the stream's nodes, with their metadata (the stream's own items() makes a
        # client per table column too: 10 s here)
        self.stream = run[stream]
        self.nodes = dict(self.stream.base.items())
        self._arrays = {}

    def __getitem__(self, key):
        if key not in self._arrays:  # 1D fields (x_axis) are columns of the stream's table
            node = self.nodes[key] if key in self.nodes else self.stream[key]
            self._arrays[key] = np.asarray(node.read())
        return self._arrays[key]

    def channel(self, key, name):
        """One channel of a stacked field, by the name its data key lists."""
        return self[key][:, self.nodes[key].metadata["channels"].index(name)]

    def asset(self, key):
        return self.nodes[key].data_sources()[0].assets[0].data_uri


# --------------------------------------------------------------------------- written files


def write_maps(path: Path, rng, *, theta=12.5, x_axis=None) -> dict:
    """An XRF-Maps analysed file (its DPC signals computed from CFG_2..5 as XRF-Maps does); what was written."""
    shape = (ROWS, COLS)
    scalers = {"US_IC": rng.uniform(1e4, 2e4, shape), "DS_IC": rng.uniform(5e3, 1e4, shape),
               **{f"CFG_{k}": rng.uniform(100, 200, shape) for k in range(2, 6)}}
    analyzed = {"Fitted": {"Zn": rng.uniform(0, 9, shape), "Fe": rng.uniform(0, 9, shape),
                           "Au_L": rng.uniform(0, 1, shape), "Num_Iter": np.full(shape, 3.0)},
                "ROI": {"Zn": rng.uniform(0, 9, shape)}}
    written = {
        "x_axis": np.linspace(-1, 1, COLS) if x_axis is None else np.asarray(x_axis),
        "y_axis": np.linspace(3, 4, ROWS),
        "spectra": rng.poisson(3, (*shape, NCHAN)).astype(np.float32),
        "scalers": scalers, "analyzed": analyzed, "theta": theta,
    }
    write_maps_hdf5(path, extra_pvs=[("2xfm:m53.VAL", str(theta), "tomo rotation", "degrees")],
                    scan_name="2xfm_0100.mda", **written)
    return written


def write_pyxrf_file(path: Path, rng) -> dict:
    """A PyXRF file of two detector channels, fitted; what was written."""
    shape = (ROWS, COLS)
    meta = {"scan_id": 1234, "instrument_mono_incident_energy": 12.0, "scan_instrument_id": "HXN",
            "sample_name": "cell 7", "param_theta": -30000, "param_theta_units": "mdeg"}
    written = {
        "detectors": {f"det{i}": rng.poisson(2, (*shape, NCHAN)).astype(np.float32) for i in (1, 2)},
        "positions": {"x_pos": np.tile(np.linspace(0, 1, COLS), (ROWS, 1)),
                      "y_pos": np.tile(np.linspace(0, 2, ROWS)[:, None], (1, COLS))},
        "scalers": {"sclr1_ch4": rng.uniform(1e4, 2e4, shape), "time": np.full(shape, 0.05)},
        "fit": {"Zn_K": rng.uniform(0, 9, shape), "Pt_L": rng.uniform(0, 9, shape),
                "compton": rng.uniform(0, 9, shape)},
        "metadata": meta,
    }
    write_pyxrf(path, **written)
    return written


def write_tomo(path: Path, rng) -> dict:
    """A Data Exchange tomography: 6 projections, 2 flats, 1 dark; what was written."""
    written = {
        "data": rng.integers(0, 4000, (6, ROWS, COLS)).astype("<u2"),
        "theta": np.array([0.0, 30.0, 60.0, 90.0, 120.0, 150.0]),
        "data_white": np.full((2, ROWS, COLS), 4000, "<u2"),
        "data_dark": np.full((1, ROWS, COLS), 10, "<u2"),
    }
    write_dxchange(path, written["data"], theta=written["theta"], data_white=written["data_white"],
                   data_dark=written["data_dark"],
                   measurement={"instrument/monochromator/energy": (8.0, "keV"), "sample/name": "phantom",
                                "instrument/name": "APS 2-BM"})
    return written


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data_dir(shared_tiled):
    return shared_tiled.data_dir


@pytest.fixture(scope="module")
def assets(data_dir):
    """An asset folder of this module's own, inside the shared server's readable storage (the copies the
    tests count are this module's imports, not another module's of the same files)."""
    return data_dir / "assets" / "import-runs"


@pytest.fixture(scope="module")
def catalog(shared_tiled):
    """A runs container of this module's own on the shared server: the import skips a file already in its
    container, and other modules import the same real files (test_live_fit the standard) into the shared one."""
    from xfct_bluesky.storage import runs_container

    return runs_container(shared_tiled.client, "import-runs")


@pytest.fixture(scope="module")
def real(catalog, assets):
    """The standard's step map and the fly scan's MDA file with its flyXRF file, imported in one call.

    2xfm_0010.mda, a step map of the same layout as axo_std.mda (one reader, one import path, its numbers
    checked in ``test_import_readers.py``), is not imported too: it would pay the copy of its spectra and a
    run written over HTTP for no code path the standard does not take.
    """
    results = import_files([AXO, SCAN11, FLY11], catalog, asset_dir=assets)
    return {r.path.name: r for r in results}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The MAPS, PyXRF and Data Exchange files, written outside the server's readable storage."""
    folder = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(11)
    files = {"maps": folder / "2xfm_0100.mda.h5", "pyxrf": folder / "scan2D_1234.h5", "dxchange": folder / "tomo.h5"}
    return {
        "files": files,
        "maps": write_maps(files["maps"], rng),  # documents only; the tomography test imports these
        "pyxrf": write_pyxrf_file(files["pyxrf"], rng),
        "dxchange": write_tomo(files["dxchange"], rng),
    }


def snapshot(catalog, assets):
    """The catalog's run count and every file under the asset folder."""
    return len(catalog), sorted(str(p.relative_to(assets)) for p in assets.rglob("*")) if assets.exists() else []


# --------------------------------------------------------------------------- documents, no server


def test_formats_are_detected_from_the_content(written, tmp_path):
    assert [detect_format(p) for p in (SCAN10, AXO, SCAN11, FLY11)] == ["mda", "mda", "mda", "flyxrf"]
    assert {fmt: detect_format(p) for fmt, p in written["files"].items()} == {
        "maps": "maps", "pyxrf": "pyxrf", "dxchange": "dxchange"}
    renamed = tmp_path / "no_extension"
    shutil.copyfile(AXO, renamed)
    assert detect_format(renamed) == "mda"  # by its XDR header, not its name


@pytest.mark.parametrize("name", ["axo_std.mda", "2xfm_0011.mda", "flyxrf", "maps", "pyxrf", "dxchange"])
def test_every_document_is_valid_and_the_quantities_name_data_keys(name, written, tmp_path):
    path = {"axo_std.mda": AXO, "2xfm_0011.mda": SCAN11, "flyxrf": FLY11}.get(name) or written["files"][name]
    docs = documents_from_file(path, asset_dir=tmp_path / "assets", sample="egg 3")
    validate_all(docs)
    names = [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop" and names.count("start") == 1
    start = docs[0][1]
    assert start["plan_name"] == "import" and start["sample"] == "egg 3"
    assert start["source"]["path"] == str(path.resolve()) and start["source"]["sha256"] == sha256(path)
    primary = next(d for n, d in docs if n == "descriptor" and d["name"] == "primary")
    assert all(is_quantity(n) for n in start["quantities"]), start["quantities"]
    assert set(start["quantities"].values()) <= set(primary["data_keys"])
    n_events = sum(1 for n, d in docs if n == "event" and d["descriptor"] == primary["uid"])
    assert n_events == (6 if name == "dxchange" else 1)
    assert docs[-1][1]["num_events"]["primary"] == n_events
    assert names.count("stream_resource") == names.count("stream_datum") >= 1


def test_a_file_already_in_the_asset_folder_is_referenced_where_it_is(written, tmp_path):
    assets = tmp_path / "assets"
    inside = assets / "beamline" / "tomo.h5"
    inside.parent.mkdir(parents=True)
    shutil.copyfile(written["files"]["dxchange"], inside)
    before = sorted(assets.rglob("*"))
    docs = documents_from_file(inside, asset_dir=assets)
    uris = {d["uri"] for n, d in docs if n == "stream_resource"}
    assert uris == {inside.resolve().as_uri()}  # data, flat and dark: the same file, not copied
    assert sorted(assets.rglob("*")) == before


def test_an_mda_file_needs_an_asset_folder_for_its_spectra():
    with pytest.raises(ValueError, match=r"axo_std\.mda: its spectra .* give asset_dir="):
        documents_from_file(AXO)


# --------------------------------------------------------------------------- the real 2-ID-E files


def test_the_real_files_make_one_run_each(real, catalog):
    assert [real[n].outcome for n in ("axo_std.mda", "2xfm_0011.mda")] == ["imported"] * 2
    assert len({real[n].uid for n in ("axo_std.mda", "2xfm_0011.mda")}) == 2
    fly = real[FLY11.name]
    assert fly.outcome == "skipped" and fly.uid is None and "2xfm_0011.mda as its spectra" in fly.reason
    for result in real.values():
        if result.uid:
            assert catalog[result.uid].metadata["stop"]["exit_status"] == "success"


def test_the_standard_reads_back_as_its_file_holds_it(real, catalog, assets):
    run = catalog[real["axo_std.mda"].uid]
    f = Fields(run)
    start = run.metadata["start"]
    mda = read_mda(AXO)
    assert start["source"] == {"path": str(AXO.resolve()), "sha256": sha256(AXO), "format": "synApps MDA 1.3",
                               "reader": "xfct_bluesky.importers.mda 0.1.0"}
    assert start["instrument"] == "APS 2-ID-E" and start["scan_number"] == 1
    assert start["scan_time"] == "AUG 09, 2016 10:28:52.450043" and start["dimensions"] == [11, 11, 2000]
    assert start["shape"] == [11, 11] and start["theta_key"] == "theta" and start["theta"] == -0.0008
    assert start["extra_pvs"]["ID02us:Energy"]["VAL"] == pytest.approx(13.38899708)
    assert start["extra_pvs"]["2xfm:m53"]["DESC"] == "tomo rotation"
    assert start["quantities"] == {"y_axis": "y_axis", "x_axis": "x_axis", "live_time": "live_time", "i0": "i0",
                                   "theta": "theta", "spectra": "spectra"}
    # the spectra: 121 pixels x 2000 channels per element, copied into the asset folder
    spectra = load_spectra(run, "spectra")
    assert spectra.shape == (1, 4, 11, 11, 2000) and spectra.dtype == np.float32
    assert spectra.sum(dtype=np.float64) == 3029614
    assert tuple(int(s.sum(dtype=np.float64)) for s in spectra[0]) == (895788, 844397, 593359, 696070)
    np.testing.assert_array_equal(spectra[0], np.stack([d.data for d in mda.scans[-1].detectors]))
    assert run["primary"].metadata["data_keys"]["spectra"]["dims"] == ["element", "row", "col", "channel"]
    (copy,) = (assets / "imported" / sha256(AXO)[:12]).glob("axo_std_spectra_*.h5")
    assert f.asset("spectra") == copy.as_uri()
    # scalers by their XRF-Maps names; positions; theta from the rotation stage's extra PV
    np.testing.assert_array_equal(f["i0"][0], mda.detector("2xfm:scaler3_cts1.B").data)
    np.testing.assert_array_equal(f.channel("map_detectors", "CFG_2")[0], mda.detector("2xfm:scaler3_cts3.C").data)
    np.testing.assert_array_equal(f.channel("map_detectors", "DS_IC")[0], mda.detector("2xfm:scaler3_cts1.C").data)
    np.testing.assert_array_equal(f.channel("map_detectors", "CFG_9")[0], mda.detector("2xfm:scaler3_cts5.B").data)
    np.testing.assert_array_equal(f.channel("map_detectors", "dxpXMAP2xfm3:ROISUM_8.VAL")[0],
                                  mda.detector("dxpXMAP2xfm3:ROISUM_8.VAL").data)
    assert f["live_time"].shape == (1, 4, 11, 11)
    np.testing.assert_array_equal(f["live_time"][0, 2], mda.detector("dxpXMAP2xfm3:mca3.ELTM").data)
    detectors = f.nodes["map_detectors"].metadata["channels"]
    assert len(detectors) == 1 + 69 - 1 - 4  # the positioner, and the 69 detectors less i0 and the 4 live times
    assert detectors[0] == "2xfm:m24.VAL" and "dxpXMAP2xfm3:dxp1:InputCountRate" in detectors
    assert len(f.nodes["row_detectors"].metadata["channels"]) == 41
    np.testing.assert_array_equal(f["x_axis"][0], mda.positioner("2xfm:m24.VAL").data[0])
    np.testing.assert_allclose(f["x_axis"][0, [0, -1]], [-1.36647, -0.36647], atol=1e-6)
    np.testing.assert_array_equal(f["y_axis"][0], mda.positioner("2xfm:m13.VAL").data)
    np.testing.assert_allclose(f["y_axis"][0, [0, -1]], [2.742, 3.742], atol=1e-6)
    np.testing.assert_array_equal(load_theta(run), [-0.0008])
    tomo = load_tomo(run)  # our reader finds the angle and the 2D maps of an imported run
    np.testing.assert_array_equal(tomo.theta, [-0.0008])
    assert tomo.maps["i0"].shape == (1, 11, 11)  # (and row_detectors, (channels, rows): 2D too)
    np.testing.assert_array_equal(tomo.maps["i0"][0], mda.detector("2xfm:scaler3_cts1.B").data)


def test_the_fly_scan_joins_its_flyxrf_spectra(real, catalog):
    run = catalog[real["2xfm_0011.mda"].uid]
    f = Fields(run)
    start = run.metadata["start"]
    fly = read_flyxrf(FLY11)
    assert start["source"]["flyxrf"] == {"path": str(FLY11.resolve()), "sha256": sha256(FLY11),
                                         "format": "APS flyXRF HDF5 (MAPS_RAW)",
                                         "reader": "xfct_bluesky.importers.flyxrf 0.1.0"}
    assert start["shape"] == [11, 11] and start["flyxrf"]["shape"] == [11, 9]
    spectra = load_spectra(run, "spectra")
    assert spectra.shape == (1, 4, 11, 9, 2048) and spectra.dtype == np.int16
    assert [int(s.sum(dtype=np.int64)) for s in spectra[0]] == [100311, 96080, 48479, 50482]
    np.testing.assert_array_equal(spectra[0], fly.spectra)
    np.testing.assert_array_equal(f["live_time"][0], fly.livetime)
    np.testing.assert_array_equal(f.channel("flyxrf_timing", "ouputcounts")[0], fly.output_counts)
    mda = read_mda(SCAN11)
    np.testing.assert_array_equal(f["i0"][0], mda.detector("2xfm:mcs:mca2.VAL").data)  # raw MCS counts
    np.testing.assert_array_equal(f.channel("map_detectors", "2xfm:mcs:mca1.VAL")[0],
                                  mda.detector("2xfm:mcs:mca1.VAL").data)  # the 25 MHz clock, unnamed
    np.testing.assert_allclose(f["x_axis"][0, :9], np.linspace(-1.5, -1.1, 9))


def test_a_second_import_is_skipped_naming_the_run(real, catalog, assets):
    before = snapshot(catalog, assets)
    results = import_files([AXO, FLY11], catalog, asset_dir=assets)
    assert [r.outcome for r in results] == ["skipped", "skipped"]
    assert results[0].uid == real["axo_std.mda"].uid and "already imported" in results[0].reason
    assert results[1].uid == real["2xfm_0011.mda"].uid  # found as the fly scan's companion
    assert snapshot(catalog, assets) == before


# --------------------------------------------------------------------------- written files round trip


def test_a_pyxrf_file_round_trips(written, catalog, assets):
    path, want = written["files"]["pyxrf"], written["pyxrf"]
    (result,) = import_files([path], catalog, asset_dir=assets)
    run = catalog[result.uid]
    f = Fields(run)
    start = run.metadata["start"]
    assert start["source"]["format"] == "NSLS-II PyXRF HDF5 1.0" and start["instrument"] == "HXN"
    assert start["sample"] == "cell 7" and start["energy"] == 12.0 and start["scan_number"] == 1234
    assert {k: start["quantities"].get(k) for k in ("Zn", "Pt_L", "i0", "theta")} == {
        "Zn": "Zn", "Pt_L": "Pt_L", "i0": "i0", "theta": "theta"}
    np.testing.assert_array_equal(f["Zn"][0], want["fit"]["Zn_K"])
    np.testing.assert_array_equal(f["Pt_L"][0], want["fit"]["Pt_L"])
    np.testing.assert_array_equal(f.channel("fit_maps", "compton")[0], want["fit"]["compton"])
    np.testing.assert_array_equal(f["i0"][0], want["scalers"]["sclr1_ch4"])
    np.testing.assert_array_equal(f.channel("scalers", "time")[0], want["scalers"]["time"])
    np.testing.assert_array_equal(f.channel("positions", "x_pos")[0], want["positions"]["x_pos"])
    np.testing.assert_array_equal(f["x_axis"][0], want["positions"]["x_pos"][0])
    np.testing.assert_array_equal(load_theta(run), [-30.0])
    dets = want["detectors"]
    np.testing.assert_array_equal(load_spectra(run, "spectra")[0], dets["det1"] + dets["det2"])
    np.testing.assert_array_equal(load_spectra(run, "spectra_elements")[0], np.stack([dets["det1"], dets["det2"]]))


def test_a_data_exchange_file_is_a_tomography_read_in_place(written, catalog, assets):
    path, want = written["files"]["dxchange"], written["dxchange"]
    (result,) = import_files([path], catalog, asset_dir=assets)
    run = catalog[result.uid]
    start = run.metadata["start"]
    assert start["quantities"] == {"theta": "theta", "projections": "data"}
    assert start["instrument"] == "APS 2-BM" and start["energy"] == 8.0 and start["sample"] == "phantom"
    assert start["measurement"]["instrument"]["monochromator"]["energy"] == {"value": 8.0, "units": "keV"}
    np.testing.assert_array_equal(load_theta(run), want["theta"])
    frames = load_spectra(run, "data")
    assert frames.dtype == np.uint16
    np.testing.assert_array_equal(frames, want["data"])
    np.testing.assert_array_equal(load_spectra(run, "data_white", stream="flat"), want["data_white"])
    np.testing.assert_array_equal(load_spectra(run, "data_dark", stream="dark"), want["data_dark"])
    # outside the readable storage: copied once, byte for byte, and the copy read in place
    copy = assets / "imported" / sha256(path)[:12] / path.name
    assert sha256(copy) == sha256(path)
    for stream, key in (("primary", "data"), ("flat", "data_white"), ("dark", "data_dark")):
        assert Fields(run, stream).asset(key) == copy.as_uri()


def test_maps_files_at_several_angles_make_one_tomography_and_round_trip(catalog, assets, tmp_path):
    rng = np.random.default_rng(5)
    paths = [tmp_path / f"2xfm_{i:04d}.mda.h5" for i in range(3)]
    wants = [write_maps(p, rng, theta=t) for p, t in zip(paths, (40.0, -10.0, 20.0), strict=True)]
    n = len(catalog)
    results = import_files(paths, catalog, tomo=True, asset_dir=assets, sample="egg 3")
    assert len(catalog) == n + 1 and len({r.uid for r in results}) == 1
    assert [r.reason for r in results] == [f"event {k} of 3 of the tomography, theta = {t} deg"
                                           for k, t in ((3, 40), (1, -10), (2, 20))]
    run = catalog[results[0].uid]
    start = run.metadata["start"]
    order = [1, 2, 0]  # by theta
    assert start["source"]["path"] == [str(paths[i].resolve()) for i in order]
    assert start["source"]["sha256"] == [sha256(paths[i]) for i in order]
    assert start["source"]["format"] == ["XRF-Maps/MAPS HDF5 10.0"] * 3 and start["sample"] == "egg 3"
    assert start["instrument"] == "APS 2-ID-E" and start["angles"] == [-10.0, 20.0, 40.0]
    assert [f["maps_routine"] for f in start["files"]] == ["Fitted"] * 3
    assert {k: start["quantities"][k] for k in ("i0", "dpc_x", "dpc_diag", "transmission", "Zn", "Au_L")} == {
        "i0": "i0", "dpc_x": "dpc_x", "dpc_diag": "dpc_diag", "transmission": "transmission", "Zn": "Zn",
        "Au_L": "Au_L"}
    # every map, event by event, as the file holds it (read back by the reader: stored float32)
    tomo = load_tomo(run)
    np.testing.assert_array_equal(tomo.theta, [-10.0, 20.0, 40.0])
    f = Fields(run)
    for event, i in enumerate(order):
        maps, want = read_maps_hdf5(paths[i]), wants[i]
        for field, scaler in (("i0", "US_IC"), ("dpc_x", "H_dpc_cfg"), ("dpc_y", "V_dpc_cfg"),
                              ("dpc_diag", "dia1_dpc_cfg"), ("transmission", "abs_cfg")):
            np.testing.assert_array_equal(tomo.maps[field][event], maps.scalers[scaler], err_msg=field)
        np.testing.assert_allclose(tomo.maps["i0"][event], want["scalers"]["US_IC"], rtol=1e-6)
        for line in ("Zn", "Fe", "Au_L"):
            np.testing.assert_allclose(tomo.maps[line][event], want["analyzed"]["Fitted"][line], rtol=1e-6)
        for name in ("DS_IC", "CFG_2", "abs_ic"):
            np.testing.assert_array_equal(f.channel("scalers", name)[event], maps.scalers[name])
        np.testing.assert_allclose(f.channel("maps_ROI", "Zn")[event], want["analyzed"]["ROI"]["Zn"], rtol=1e-6)
        np.testing.assert_array_equal(f["x_axis"][event], want["x_axis"])
    assert f.nodes["scalers"].metadata["channels"] == ["DS_IC", "CFG_2", "CFG_3", "CFG_4", "CFG_5", "abs_ic",
                                                       "dia2_dpc_cfg"]
    assert f.nodes["maps_Fitted"].metadata["channels"] == ["Num_Iter"]
    np.testing.assert_array_equal(load_spectra(run, "spectra"), [wants[i]["spectra"] for i in order])
    (copy,) = (assets / "imported").glob("tomo-*/2xfm_0001.mda_spectra_*.h5")  # mca_arr is channels first: copied
    assert f.asset("spectra") == copy.as_uri()
    again = import_files(paths[1:2], catalog, asset_dir=assets)  # a file of the tomography, on its own
    assert again[0].outcome == "skipped" and again[0].uid == start["uid"]
    same = import_files(paths, catalog, tomo=True, asset_dir=assets)  # the same tomography again
    assert {r.outcome for r in same} == {"skipped"} and len(catalog) == n + 1


# --------------------------------------------------------------------------- refused: nothing written


def _cut(src: Path, folder: Path, nbytes: int) -> Path:
    out = folder / f"cut_{src.name}"
    out.write_bytes(src.read_bytes()[:nbytes])
    return out


def _no_counts(folder: Path) -> Path:
    out = folder / "scan2D_no_counts.h5"
    write_pyxrf_file(out, np.random.default_rng(1))
    with h5py.File(out, "a") as f:
        del f["xrfmap/detsum/counts"]
    return out


def _text(folder: Path) -> Path:
    out = folder / "readme.txt"
    out.write_text("a note, not data")
    return out


def _snake(folder: Path) -> Path:
    out = folder / "snake.h5"
    write_maps(out, np.random.default_rng(2), x_axis=[0, 1, 2, 3, 2.5, 5, 6])
    return out


def _unknown(folder: Path) -> Path:
    out = folder / "notes.h5"
    with h5py.File(out, "w") as f:
        f.create_dataset("something/else", data=np.arange(3))
    return out


BAD = {
    "truncated MDA": (lambda d: _cut(AXO, d, 100_000),
                      r"cut_axo_std\.mda: byte 28: .*truncated.*the formats recognised are mda, flyxrf, maps"),
    "truncated HDF5": (lambda d: _cut(FLY11, d, 60_000), r"cut_2xfm_0011_2xfm3__0\.h5: .*truncated"),
    "unknown HDF5": (_unknown, r"notes\.h5: an HDF5 file with none of the groups .* the formats recognised are mda"),
    "unknown bytes": (_text, r"readme\.txt: neither HDF5 nor MDA"),
    "missing dataset": (_no_counts, r"scan2D_no_counts\.h5: /xrfmap/detsum/counts is missing"),
    "non-monotonic axis": (_snake, r"snake\.h5: /MAPS/Scan/x_axis is not strictly monotonic \(at index 4"),
    "no such file": (lambda d: d / "missing.mda", r"missing\.mda: no such file"),
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A good PyXRF file, never imported: it goes with each bad one, and is not written either."""
    out = tmp_path_factory.mktemp("fresh") / "scan2D_fresh.h5"
    write_pyxrf_file(out, np.random.default_rng(99))
    return out


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_naming_the_file_and_nothing_is_written(case, catalog, assets, tmp_path, fresh):
    make, message = BAD[case]
    bad = make(tmp_path)
    before = snapshot(catalog, assets)
    with pytest.raises(ValueError, match=message) as err:
        import_files([fresh, bad], catalog, asset_dir=assets)
    assert str(err.value).startswith("nothing imported")
    assert snapshot(catalog, assets) == before


def test_a_failure_after_copies_removes_them_and_writes_nothing(catalog, assets, tmp_path, fresh, monkeypatch):
    """Fault injection: the second file's copy fails after the first file's spectra were copied."""
    from xfct_bluesky.importers import runs

    def full_disk(self, part, sha):
        raise OSError(f"{part.path}: no space left on device")

    monkeypatch.setattr(runs._Composer, "_readable", full_disk)
    tomo = tmp_path / "tomo.h5"
    write_tomo(tomo, np.random.default_rng(3))
    before = snapshot(catalog, assets)
    with pytest.raises(ValueError, match=r"nothing imported: .*tomo\.h5: no space left on device"):
        import_files([fresh, tomo], catalog, asset_dir=assets)
    assert snapshot(catalog, assets) == before


def test_a_tomography_refuses_two_maps_at_one_angle_naming_both(catalog, assets):
    before = snapshot(catalog, assets)
    with pytest.raises(ValueError, match=r"2xfm_0010\.mda and .*2xfm_0011\.mda are at the same angle, "
                                         r"theta = -0\.0005 and -0\.0005 deg"):
        import_files([SCAN10, SCAN11], catalog, tomo=True, asset_dir=assets, flyxrf=False)
    assert snapshot(catalog, assets) == before


def test_a_tomography_refuses_a_map_without_an_angle_and_says_how_to_give_it(catalog, assets, tmp_path):
    # the real fly scan, its rotation motor's description changed: no angle found
    patched = tmp_path / "2xfm_0011.mda"
    raw = SCAN11.read_bytes()
    assert raw.count(b"tomo rotation") >= 1
    patched.write_bytes(raw.replace(b"tomo rotation", b"tomo_rotatio_"))
    before = snapshot(catalog, assets)
    with pytest.raises(ValueError, match=r"2xfm_0011\.mda: no rotation angle recorded.*theta_pv='2xfm:m53.VAL'"):
        import_files([patched, AXO], catalog, tomo=True, asset_dir=assets)
    assert snapshot(catalog, assets) == before
    docs = documents_from_file(patched, theta_pv="2xfm:m53.VAL")  # named, the PV gives it
    assert docs[0][1]["theta_source"] == "extra PV 2xfm:m53.VAL"
    event = next(d for n, d in docs if n == "event")
    assert event["data"]["theta"] == pytest.approx(-0.0005)
    with pytest.raises(ValueError, match=r"theta_pv='2xfm:m99.VAL' is not among the file's 843 extra PVs"):
        documents_from_file(patched, theta_pv="2xfm:m99.VAL")
