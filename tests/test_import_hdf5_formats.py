"""The HDF5 readers of ``xfct_bluesky.importers``: XRF-Maps/MAPS, PyXRF and Data Exchange.

No file of these formats is in the repository, so each test writes a small
one (5 x 7 map, 64 channels, 3 elements) with the module's writer, which
reproduces the layout the format's own software writes (XRF-Maps
``hdf5_io.cpp``, PyXRF ``save_data_to_hdf5``/``save_fitdata_to_hdf``,
dxfile ``dxtomo.py``), and checks three things:

* the reader returns exactly what was written (arrays exactly, names, units,
  calibration, theta), with the derived values (XRF-Maps' DPC scalers, its
  integrated live time) recomputed here from their formulas;
* the file, opened with plain h5py, has the paths, shapes, dtypes and string
  types the format's source writes, so the writer cannot drift from the
  documented layout without a test failing;
* bad input (a dataset missing, a non-monotonic axis, a wrong shape, a theta
  count that does not match) raises the format's error naming the file, the
  dataset and the fix.
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from xfct_bluesky.importers import (
    DXchangeFormatError,
    EnergyCalibration,
    MAPSExtraPV,
    MAPSFormatError,
    MAPSStandard,
    PyXRFFormatError,
    read_dxchange,
    read_maps_hdf5,
    read_pyxrf,
    write_dxchange,
    write_maps_hdf5,
    write_pyxrf,
)
from xfct_bluesky.importers.maps_hdf5 import DERIVED_SCALERS, ELEMENT_SYMBOLS

ROWS, COLS, CHANNELS = 5, 7, 64
RNG = np.random.default_rng(20240611)
SPECTRA = RNG.integers(0, 40, (ROWS, COLS, CHANNELS)).astype(np.float32)
X_AXIS = np.linspace(-1.5, -1.0, COLS)
Y_AXIS = np.linspace(3.25, 3.75, ROWS)
# binary fractions, exact in float32, so the calibration round-trips exactly
CALIB = EnergyCalibration(offset=-0.015625, gain=0.0078125, quadratic=0.0)
LIVETIME = RNG.uniform(0.8, 1.0, (ROWS, COLS)).astype(np.float32)
REALTIME = np.ones((ROWS, COLS), np.float32)
ICR = RNG.uniform(900, 1000, (ROWS, COLS)).astype(np.float32)
OCR = (ICR * 0.9).astype(np.float32)
SCALERS = {
    "US_IC": RNG.uniform(1e4, 2e4, (ROWS, COLS)).astype(np.float32),
    "DS_IC": RNG.uniform(5e3, 9e3, (ROWS, COLS)).astype(np.float32),
    **{f"CFG_{i}": RNG.uniform(100, 300, (ROWS, COLS)).astype(np.float32) for i in (2, 3, 4, 5)},
    "2xfm:scaler3_cts1.C": RNG.uniform(0, 10, (ROWS, COLS)).astype(np.float32),
}
SCALER_UNITS = {"US_IC": "cts/s", "DS_IC": "cts/s", "CFG_2": "cts/s"}
ELEMENT_MAPS = {n: RNG.uniform(0, 50, (ROWS, COLS)).astype(np.float32) for n in ("Zn", "Ca", "Fe")}
ANALYZED = {
    "ROI": ELEMENT_MAPS,
    "Fitted": {k: v * 1.5 for k, v in ELEMENT_MAPS.items()},
    "NNLS": {k: v * 0.5 for k, v in ELEMENT_MAPS.items()},
}
THETA_PV = "2xfm:m58.VAL"
EXTRA_PVS = [
    MAPSExtraPV("S:SRcurrentAI", "102.1", "SR Current", "mA"),
    MAPSExtraPV("2xfm:m24.VAL", "-1.25 mm", "samX", "mm"),  # the legacy csv cuts the value at the space
    MAPSExtraPV(THETA_PV, "12.5", "Sample Theta", "deg"),  # not at a fixed index: found by name
    MAPSExtraPV("ID02us:Energy.VAL", "10.0", "Average Energy Readout", "keV"),
]
STANDARD = MAPSStandard(
    name="axo_std.mda", element_weights={"Ca": 1.9375, "Fe": 0.5, "Zn": 0.875},  # exact in float32
    sr_current=102.0, us_ic=250000.0, ds_ic=125000.0,
    counts={"Fitted": {"Ca": 1500.0, "Fe": 800.0, "Zn": 1200.0}},
)
CURVES = {
    "Fitted": {s: np.arange(3 * 92, dtype=np.float32).reshape(3, 92) * k
               for k, s in ((1.0, "SR_Current"), (2.0, "US_IC"), (3.0, "DS_IC"))}
}


def write_maps(path, **overrides):
    kwargs = {
        "x_axis": X_AXIS, "y_axis": Y_AXIS, "spectra": SPECTRA, "energy_calibration": CALIB,
        "elapsed_livetime": LIVETIME, "elapsed_realtime": REALTIME, "input_counts": ICR, "output_counts": OCR,
        "scalers": SCALERS, "scaler_units": SCALER_UNITS, "amplifiers": {"us": (3, 1), "ds": (5, 2)},
        "analyzed": ANALYZED, "theta": 12.5, "extra_pvs": EXTRA_PVS, "scan_name": "2xfm_0010.mda",
        "scan_time_stamp": "OCT 28, 2015 18:18:43.747055", "requested_rows": 6, "requested_cols": 7,
        "standards": [STANDARD], "calibration_curves": CURVES,
    }
    kwargs.update(overrides)
    return write_maps_hdf5(path, **kwargs)


def assert_names(err, path, dataset, fix):
    """The error names the file, the dataset and says how to fix it."""
    message = str(err.value)
    assert str(path) in message and dataset in message and fix in message, message


# --------------------------------------------------------------------------- XRF-Maps / MAPS


@pytest.fixture(scope="module")
def maps_path(tmp_path_factory):
    return write_maps(tmp_path_factory.mktemp("maps") / "2xfm_0010.mda.h5")


@pytest.fixture(scope="module")
def maps(maps_path):
    return read_maps_hdf5(maps_path)


def test_maps_spectra_and_timing_round_trip(maps):
    assert maps.shape == (ROWS, COLS) and maps.version == 10.0
    np.testing.assert_array_equal(maps.x_axis, X_AXIS)
    np.testing.assert_array_equal(maps.y_axis, Y_AXIS)
    assert maps.spectra.shape == (ROWS, COLS, CHANNELS) and maps.spectra.dtype == np.float32
    np.testing.assert_array_equal(maps.spectra, SPECTRA)
    assert maps.energy_calibration == CALIB
    # XRF-Maps' Energy is offset + slope * channel (gen_energy_vector: no quadratic term)
    np.testing.assert_array_equal(maps.energy, (CALIB.offset + CALIB.gain * np.arange(CHANNELS)).astype(np.float32))
    for name, want in (("elapsed_livetime", LIVETIME), ("elapsed_realtime", REALTIME),
                       ("input_counts", ICR), ("output_counts", OCR)):
        np.testing.assert_array_equal(getattr(maps, name), want)
    np.testing.assert_array_equal(maps.integrated_spectrum, SPECTRA.sum(axis=(0, 1), dtype=np.float32))
    # Spectra_Volume::integrate sums the timing, then recalc_elapsed_livetime: rt * OCR / ICR
    t = maps.integrated_timing
    assert t["elapsed_realtime"] == pytest.approx(ROWS * COLS)
    assert t["input_counts"] == pytest.approx(ICR.sum(dtype=np.float64), rel=1e-6)
    assert t["elapsed_livetime"] == pytest.approx(ROWS * COLS * OCR.sum() / ICR.sum(), rel=1e-6)


def test_maps_scalers_i0_and_the_dpc_signals(maps):
    beamline = list(SCALERS)
    assert list(maps.scalers) == beamline + list(DERIVED_SCALERS)
    for name, want in SCALERS.items():
        np.testing.assert_array_equal(maps.scalers[name], want)
    assert maps.scaler_units["US_IC"] == "cts/s" and maps.scaler_units["CFG_3"] == ""
    np.testing.assert_array_equal(maps.i0, SCALERS["US_IC"])
    assert maps.scaler("us_ic") is maps.i0
    us, ds = SCALERS["US_IC"], SCALERS["DS_IC"]
    c2, c3, c4, c5 = (SCALERS[f"CFG_{i}"] for i in (2, 3, 4, 5))
    total = c2 + c3 + c4 + c5
    expected = {
        "abs_ic": ds / us, "abs_cfg": total / us,
        "H_dpc_cfg": (c2 - c3 - c4 + c5) / total, "V_dpc_cfg": (c2 + c3 - c4 - c5) / total,
        "dia1_dpc_cfg": (c2 - c4) / total, "dia2_dpc_cfg": (c3 - c5) / total,
    }
    for name, want in expected.items():
        np.testing.assert_allclose(maps.scalers[name], want, rtol=1e-6, err_msg=name)
    assert abs(maps.scalers["H_dpc_cfg"]).max() < 1  # a normalised difference
    np.testing.assert_array_equal(maps.amplifiers["us_amp"], [3, 1, 10])  # index 3 -> 10, unit 1 -> nA/V
    assert maps.amplifiers["us_amp_unit"] == "nA/V" and maps.amplifiers["ds_amp_unit"] == "uA/V"
    assert maps.amplifiers["ds_amp_num"][0] == 50


def test_maps_element_maps_by_routine_in_xrf_maps_order(maps):
    assert set(maps.analyzed) == {"ROI", "Fitted", "NNLS"}
    for routine, written in ANALYZED.items():
        channels = maps.analyzed[routine]
        assert channels.names == ("Ca", "Fe", "Zn")  # save_element_fits orders the lines by Z
        assert channels.units == ("cts/s",) * 3
        for name, want in written.items():
            np.testing.assert_array_equal(channels.maps[name], want, err_msg=f"{routine}/{name}")


def test_maps_scan_metadata_theta_and_extra_pvs(maps, maps_path):
    assert maps.theta == 12.5 and maps.theta_source == "/MAPS/Scan/theta"
    assert (maps.scan_name, maps.scan_time_stamp) == ("2xfm_0010.mda", "OCT 28, 2015 18:18:43.747055")
    assert (maps.requested_rows, maps.requested_cols) == (6, 7)
    assert maps.extra_pvs == tuple(EXTRA_PVS)
    assert maps.extra_pv("ID02us:Energy.VAL").value == "10.0"
    by_pv = read_maps_hdf5(maps_path, theta_pv=f" {THETA_PV}")  # spaces ignored, as update_theta does
    assert by_pv.theta == 12.5 and by_pv.theta_source == f"Extra_PVs: {THETA_PV}"


def test_maps_quantification(maps):
    assert maps.standards == (STANDARD,)
    assert set(maps.calibration_curves["Fitted"]) == {"SR_Current", "US_IC", "DS_IC"}
    for scaler, curve in CURVES["Fitted"].items():
        np.testing.assert_array_equal(maps.calibration_curves["Fitted"][scaler], curve)
    labels = maps.calibration_labels["Fitted"]
    assert labels.shape == (3, 92) and (labels[0, 0], labels[1, 29], labels[2, 91]) == ("H", "Zn_L", "U_M")
    q = maps.quantification
    assert int(q["Number_Of_Standards"][0]) == 1
    assert list(q["Standard0/Element_Weights_Names"]) == ["Ca", "Fe", "Zn"]
    assert list(q["Standard0/XRF_Analyzed/Fitted/Channel_Names"]) == ["Ca", "Fe", "Zn"]


def test_maps_layout_is_the_one_xrf_maps_writes(maps_path):
    """Paths, shapes, dtypes, string types and compression of HDF5_IO's save_* functions."""
    spacepad, nullterm = h5py.h5t.STR_SPACEPAD, h5py.h5t.STR_NULLTERM
    n_scalers = len(SCALERS) + len(DERIVED_SCALERS)
    want = {
        "MAPS/version": ((1,), "<f4"),
        "MAPS/Spectra/mca_arr": ((CHANNELS, ROWS, COLS), "<f4"),
        "MAPS/Spectra/Energy": ((CHANNELS,), "<f4"),
        "MAPS/Spectra/Energy_Calibration": ((3,), "<f4"),
        "MAPS/Spectra/Elapsed_Livetime": ((ROWS, COLS), "<f4"),
        "MAPS/Spectra/Elapsed_Realtime": ((ROWS, COLS), "<f4"),
        "MAPS/Spectra/Input_Counts": ((ROWS, COLS), "<f4"),
        "MAPS/Spectra/Output_Counts": ((ROWS, COLS), "<f4"),
        "MAPS/Spectra/Integrated_Spectra/Spectra": ((CHANNELS,), "<f4"),
        "MAPS/Spectra/Integrated_Spectra/Elapsed_Livetime": ((1,), "<f4"),
        "MAPS/Scalers/Values": ((n_scalers, ROWS, COLS), "<f4"),
        "MAPS/Scalers/Names": ((n_scalers,), "S256"),
        "MAPS/Scalers/Units": ((n_scalers,), "S256"),
        "MAPS/Scalers/us_amp": ((3,), "<f4"),
        "MAPS/Scalers/ds_amp_num": ((1,), "<f4"),
        "MAPS/Scalers/us_amp_unit": ((1,), "S256"),
        "MAPS/XRF_Analyzed/Fitted/Counts_Per_Sec": ((3, ROWS, COLS), "<f4"),
        "MAPS/XRF_Analyzed/Fitted/Channel_Names": ((3,), "S256"),
        "MAPS/XRF_Analyzed/NNLS/Channel_Units": ((3,), "S256"),
        "MAPS/Scan/x_axis": ((COLS,), "<f8"),
        "MAPS/Scan/y_axis": ((ROWS,), "<f8"),
        "MAPS/Scan/theta": ((1,), "<f4"),
        "MAPS/Scan/requested_rows": ((1,), "<i4"),
        "MAPS/Scan/requested_cols": ((1,), "<i4"),
        "MAPS/Scan/name": ((1,), "S256"),
        "MAPS/Scan/scan_time_stamp": ((1,), "S256"),
        **{f"MAPS/Scan/Extra_PVs/{k}": ((len(EXTRA_PVS),), "S256") for k in ("Names", "Values", "Description", "Unit")},
        "MAPS/Quantification/Number_Of_Standards": ((1,), "<i4"),
        "MAPS/Quantification/Standard0/Element_Weights": ((3,), "<f4"),
        "MAPS/Quantification/Standard0/Standard_Name": ((1,), "S256"),
        "MAPS/Quantification/Standard0/Scalers/US_IC": ((1,), "<f4"),
        "MAPS/Quantification/Standard0/XRF_Analyzed/Fitted/Counts_Per_Sec": ((3,), "<f4"),
        "MAPS/Quantification/Calibration/Fitted/Calibration_Curve_US_IC": ((3, 92), "<f4"),
        "MAPS/Quantification/Calibration/Fitted/Calibration_Curve_Labels": ((3, 92), "S10"),
    }
    with h5py.File(maps_path, "r") as f:
        for name, (shape, dtype) in want.items():
            assert isinstance(f.get(name), h5py.Dataset), name
            assert (f[name].shape, f[name].dtype.str.lstrip("|")) == (shape, dtype), name
        assert f["MAPS/version"][0] == 10.0
        assert isinstance(f.get("MAPS/Fit_Parameters_Override/Fit_Parameters"), h5py.Group)
        # H5T_FORTRAN_S1 (space padded) for the scan and scaler strings, H5T_C_S1 for the channels
        for name in ("MAPS/Scalers/Names", "MAPS/Scan/Extra_PVs/Names", "MAPS/Scan/name",
                     "MAPS/Quantification/Calibration/Fitted/Calibration_Curve_Labels"):
            assert f[name].id.get_type().get_strpad() == spacepad, name
        for name in ("MAPS/XRF_Analyzed/ROI/Channel_Names", "MAPS/XRF_Analyzed/ROI/Channel_Units"):
            assert f[name].id.get_type().get_strpad() == nullterm, name
        mca = f["MAPS/Spectra/mca_arr"]
        assert (mca.compression, mca.compression_opts, mca.chunks) == ("gzip", 7, (CHANNELS, 1, 1))
        cps = f["MAPS/XRF_Analyzed/ROI/Counts_Per_Sec"]
        assert (cps.compression, cps.compression_opts, cps.chunks) == ("gzip", 7, (1, ROWS, COLS))
        assert f["MAPS/Scalers/Values"].chunks == (1, ROWS, COLS)
        assert f["MAPS/Spectra/Energy_Calibration"][()].tolist() == [CALIB.offset, CALIB.gain, CALIB.quadratic]
        # the maps are stored (channels, rows, cols): the reader transposes, it does not reshape
        np.testing.assert_array_equal(mca[:, 2, 3], SPECTRA[2, 3])
        for name in ("abs_ic", "abs_cfg", "H_dpc_cfg"):
            assert name.encode() in f["MAPS/Scalers/Names"][()]
        assert "MAPS/mca_arr" not in f  # no legacy layout unless asked


def test_maps_legacy_v9_layout_beside_the_new_one(tmp_path):
    path = write_maps(tmp_path / "legacy.h5", legacy_layout=True)
    with h5py.File(path, "r") as f:
        for legacy, new in (("x_axis", "Scan/x_axis"), ("y_axis", "Scan/y_axis"), ("mca_arr", "Spectra/mca_arr"),
                            ("energy", "Spectra/Energy"), ("energy_calib", "Spectra/Energy_Calibration"),
                            ("int_spec", "Spectra/Integrated_Spectra/Spectra"), ("us_amp", "Scalers/us_amp"),
                            ("XRF_roi", "XRF_Analyzed/ROI/Counts_Per_Sec"),
                            ("XRF_roi_plus", "XRF_Analyzed/NNLS/Counts_Per_Sec"),
                            ("XRF_fits", "XRF_Analyzed/Fitted/Counts_Per_Sec"),
                            ("channel_names", "XRF_Analyzed/ROI/Channel_Names")):
            assert f[f"MAPS/{legacy}"].id == f[f"MAPS/{new}"].id, legacy  # hard links: one object
        assert f["MAPS/version"][0] == 9.0 and f["version"].id == f["MAPS/version"].id
        # _add_v9_scalers: no names with ':', sorted (std::map)
        names = [n.decode() for n in f["MAPS/scaler_names"][()]]
        assert names == sorted(n for n in (*SCALERS, *DERIVED_SCALERS) if ":" not in n)
        np.testing.assert_array_equal(f["MAPS/scalers"][names.index("US_IC")], SCALERS["US_IC"])
        assert f["MAPS/extra_pvs"].shape == (4, len(EXTRA_PVS))
        csv = [c.decode() for c in f["MAPS/extra_pvs_as_csv"][()]]
        assert csv[1] == "2xfm:m24.VAL,-1.25" and csv[2] == f"{THETA_PV},12.5"
        assert f["MAPS/channel_units"].shape == (4, 3)
        # _add_v9_quant: the Fitted curves at [K shell, Z - 1] for each channel, SR_Current/US_IC/DS_IC
        quant = f["MAPS/XRF_fits_quant"][()]
        z_fe = ELEMENT_SYMBOLS.index("Fe")
        np.testing.assert_array_equal(quant[:, 0, 1], [CURVES["Fitted"][s][0, z_fe] for s in
                                                       ("SR_Current", "US_IC", "DS_IC")])
        assert [n.decode() for n in f["MAPS/XRF_fits_quant_names"][()]] == ["SRCURRENT", "US_IC", "DS_IC"]
        assert not f["MAPS/XRF_roi_quant"][()].any()  # no ROI calibration: XRF-Maps leaves it zero
        assert f["MAPS/channel_units"][0, 0].decode().strip() == "ug/cm2"


def test_maps_legacy_only_file_and_theta_found_by_pv_name(tmp_path):
    """An old MAPS file: only the v9 names; theta is one row of extra_pvs_as_csv, found by the PV's name."""
    path = write_maps(tmp_path / "old.h5", legacy_layout=True)
    with h5py.File(path, "a") as f:
        for group in ("Scan", "Spectra", "Scalers", "XRF_Analyzed", "Quantification"):
            del f[f"MAPS/{group}"]
        del f["MAPS/extra_pvs"]  # leave only the csv, as in the files XRFtomo reads by index
    old = read_maps_hdf5(path, theta_pv=THETA_PV)
    assert old.theta == 12.5 and old.theta_source == f"extra_pvs_as_csv:{THETA_PV}"
    assert old.sources["x_axis"] == "/MAPS/x_axis" and old.sources["spectra"] == "/MAPS/mca_arr"
    assert old.sources["scalers"] == "/MAPS/scalers" and old.sources["analyzed/Fitted"] == "/MAPS/XRF_fits"
    np.testing.assert_array_equal(old.x_axis, X_AXIS)
    np.testing.assert_array_equal(old.spectra, SPECTRA)
    np.testing.assert_array_equal(old.integrated_spectrum, SPECTRA.sum(axis=(0, 1), dtype=np.float32))
    assert old.energy_calibration == CALIB
    np.testing.assert_array_equal(old.analyzed["Fitted"].maps["Zn"], ANALYZED["Fitted"]["Zn"])
    assert old.analyzed["ROI"].names == ("Ca", "Fe", "Zn") and old.analyzed["ROI"].units == ("cts/s",) * 3
    np.testing.assert_array_equal(old.i0, SCALERS["US_IC"])
    assert "2xfm:scaler3_cts1.C" not in old.scalers  # the v9 copy drops PV-named scalers
    assert old.theta is not None and read_maps_hdf5(path).theta is None  # without theta_pv there is none


def test_maps_extra_pvs_from_the_legacy_table(tmp_path):
    path = write_maps(tmp_path / "old.h5", legacy_layout=True)
    with h5py.File(path, "a") as f:
        del f["MAPS/Scan"]
    old = read_maps_hdf5(path, theta_pv=THETA_PV)
    assert old.extra_pvs == tuple(EXTRA_PVS) and old.sources["extra_pvs"] == "/MAPS/extra_pvs"
    assert old.theta == 12.5 and old.theta_source == f"Extra_PVs:{THETA_PV}"


def test_maps_unknown_theta_pv_names_the_pv(maps_path):
    with pytest.raises(MAPSFormatError) as err:
        read_maps_hdf5(maps_path, theta_pv="2xfm:m99.VAL")
    assert_names(err, maps_path, "/MAPS/Scan/Extra_PVs/Names", "theta_pv")
    assert "'2xfm:m99.VAL'" in str(err.value) and THETA_PV in str(err.value)  # suggests the IOC's PVs


def _replace(f, name, data):
    del f[name]
    f[name] = data


MAPS_BAD = {
    "x axis missing": (lambda f: f.__delitem__("MAPS/Scan/x_axis"), "/MAPS/Scan/x_axis", "x_axis and y_axis"),
    "y axis not monotonic": (lambda f: _replace(f, "MAPS/Scan/y_axis", Y_AXIS[[0, 2, 1, 3, 4]]),
                             "/MAPS/Scan/y_axis", "positions of the scan in order"),
    "mca_arr rows": (lambda f: _replace(f, "MAPS/Spectra/mca_arr", np.zeros((CHANNELS, ROWS - 1, COLS), "<f4")),
                     "/MAPS/Spectra/mca_arr", "(channels, len(y_axis), len(x_axis))"),
    "mca_arr 2-D": (lambda f: _replace(f, "MAPS/Spectra/mca_arr", np.zeros((CHANNELS, ROWS * COLS), "<f4")),
                    "/MAPS/Spectra/mca_arr", "expected 3"),
    "two thetas": (lambda f: _replace(f, "MAPS/Scan/theta", np.array([12.5, 13.0], "<f4")),
                   "/MAPS/Scan/theta", "one projection"),
    "channel names short": (lambda f: _replace(f, "MAPS/XRF_Analyzed/ROI/Channel_Names", np.array([b"Ca", b"Fe"])),
                            "/MAPS/XRF_Analyzed/ROI/Channel_Names", "one name"),
    "counts missing": (lambda f: f.__delitem__("MAPS/XRF_Analyzed/NNLS/Counts_Per_Sec"),
                       "/MAPS/XRF_Analyzed/NNLS/Counts_Per_Sec", "Channel_Names"),
    "scaler names missing": (lambda f: f.__delitem__("MAPS/Scalers/Names"), "/MAPS/Scalers/Names", "Names, Units"),
    "scalers cols": (lambda f: _replace(f, "MAPS/Scalers/Values", np.zeros((2, ROWS, COLS + 1), "<f4")),
                     "/MAPS/Scalers/Values", "(n, len(y_axis), len(x_axis))"),
    "livetime shape": (lambda f: _replace(f, "MAPS/Spectra/Elapsed_Livetime", np.zeros((COLS, ROWS), "<f4")),
                       "/MAPS/Spectra/Elapsed_Livetime", "len(y_axis) rows"),
    "energy length": (lambda f: _replace(f, "MAPS/Spectra/Energy", np.zeros(CHANNELS - 1, "<f4")),
                      "/MAPS/Spectra/Energy", "one energy per spectrum channel"),
    "standard weights unnamed": (lambda f: f.__delitem__("MAPS/Quantification/Standard0/Element_Weights_Names"),
                                 "/MAPS/Quantification/Standard0/Element_Weights_Names", "element name"),
}


@pytest.mark.parametrize("case", sorted(MAPS_BAD))
def test_maps_bad_input_names_file_dataset_and_fix(tmp_path, maps_path, case):
    spoil, dataset, fix = MAPS_BAD[case]
    path = tmp_path / "bad.h5"
    path.write_bytes(maps_path.read_bytes())
    with h5py.File(path, "a") as f:
        spoil(f)
    with pytest.raises(MAPSFormatError) as err:
        read_maps_hdf5(path)
    assert_names(err, path, dataset, fix)


def test_maps_not_a_maps_file(tmp_path):
    text = tmp_path / "scan.mda"
    text.write_bytes(b"\x00\x00\x00\x01 not hdf5")
    with pytest.raises(MAPSFormatError) as err:
        read_maps_hdf5(text)
    assert_names(err, text, "not an HDF5 file", "img.dat")
    other = tmp_path / "pyxrf.h5"
    with h5py.File(other, "w") as f:
        f.create_group("xrfmap")
    with pytest.raises(MAPSFormatError) as err:
        read_maps_hdf5(other)
    assert_names(err, other, "no /MAPS group", "XRF-Maps")
    with pytest.raises(FileNotFoundError):
        read_maps_hdf5(tmp_path / "absent.h5")


def test_maps_writer_refuses_a_map_that_disagrees_with_the_axes(tmp_path):
    with pytest.raises(ValueError, match=r"expected \(rows, cols, channels\)"):
        write_maps(tmp_path / "w.h5", spectra=SPECTRA[:, :-1])


# --------------------------------------------------------------------------- PyXRF

DETECTORS = {f"det{i}": RNG.integers(0, 30, (ROWS, COLS, CHANNELS)).astype(np.float32) for i in (1, 2, 3)}
X_POS, Y_POS = np.meshgrid(X_AXIS, Y_AXIS)
PY_SCALERS = {n: RNG.uniform(1, 1e5, (ROWS, COLS)) for n in ("i0", "i0_time", "im", "it")}
PY_FIT = {n: RNG.uniform(0, 10, (ROWS, COLS)).astype(np.float32) for n in ("Ca_K", "Fe_K", "Zn_K")}
PY_ROI = {n: RNG.uniform(0, 10, (ROWS, COLS)).astype(np.float32) for n in ("Fe_roi", "Zn_roi")}
PY_METADATA = {
    "scan_id": 12345, "scan_uid": "9a6d0c1e-6c2d-4f6b-9c55-000000000001", "scan_instrument_id": "SRX",
    "scan_instrument_name": "Submicron Resolution X-ray Spectroscopy", "scan_time_start": "2024-06-11T10:00:00",
    "instrument_mono_incident_energy": 12.0, "instrument_beam_current": 400.0,
    "instrument_detectors": ["xs", "sclr1"], "sample_name": "cell A", "experiment_plan_name": "nano_scan_and_fly",
    "param_theta": -30500, "param_theta_units": "mdeg", "param_input": [-1.5, -1.0, 7, 3.25, 3.75, 5, 0.1],
}


@pytest.fixture(scope="module")
def pyxrf_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pyxrf") / "scan2D_12345_xs_sum3ch.h5"
    return write_pyxrf(path, detectors=DETECTORS, positions={"x_pos": X_POS, "y_pos": Y_POS},
                       scalers=PY_SCALERS, metadata=PY_METADATA, fit=PY_FIT, roi=PY_ROI,
                       detector_fit={"det1": {"Zn_K": PY_FIT["Zn_K"] * 0.3}})


def test_pyxrf_round_trip(pyxrf_path):
    p = read_pyxrf(pyxrf_path)
    assert p.shape == (ROWS, COLS) and p.n_channels == CHANNELS and p.counts.dtype == np.float32
    np.testing.assert_array_equal(p.counts, DETECTORS["det1"] + DETECTORS["det2"] + DETECTORS["det3"])
    assert list(p.detector_counts) == ["det1", "det2", "det3"]
    for det, want in DETECTORS.items():
        np.testing.assert_array_equal(p.detector_counts[det], want)
    assert p.position_names == ("x_pos", "y_pos")
    np.testing.assert_array_equal(p.positions["x_pos"], X_POS)
    np.testing.assert_array_equal(p.positions["y_pos"], Y_POS)
    assert p.scaler_names == tuple(PY_SCALERS)
    for name, want in PY_SCALERS.items():
        np.testing.assert_array_equal(p.scalers[name], want)
    assert p.i0_name == "i0"
    np.testing.assert_array_equal(p.i0, PY_SCALERS["i0"])
    assert set(p.fit) == set(PY_FIT) and set(p.roi) == set(PY_ROI)
    for name, want in PY_FIT.items():
        np.testing.assert_array_equal(p.fit[name], want)
    for name, want in PY_ROI.items():
        np.testing.assert_array_equal(p.roi[name], want)
    np.testing.assert_array_equal(p.detector_fit["det1"]["Zn_K"], PY_FIT["Zn_K"] * 0.3)
    for key, value in PY_METADATA.items():
        assert p.metadata[key] == value, key
    assert p.metadata["file_format"] == "NSLS2-XRF-MAP" and p.metadata["file_type"] == "XRF-MAP"
    assert (p.scan_id, p.incident_energy, p.theta) == (12345, 12.0, -30.5)  # mdeg -> degrees


def test_pyxrf_layout_is_the_one_pyxrf_writes(pyxrf_path):
    """Datasets of save_data_to_hdf5 and save_fitdata_to_hdf: note the scalers' (rows, cols, n)."""
    want = {
        "xrfmap/detsum/counts": ((ROWS, COLS, CHANNELS), "<f4"),
        "xrfmap/det1/counts": ((ROWS, COLS, CHANNELS), "<f4"),
        "xrfmap/det3/counts": ((ROWS, COLS, CHANNELS), "<f4"),
        "xrfmap/positions/pos": ((2, ROWS, COLS), "<f8"),
        "xrfmap/scalers/val": ((ROWS, COLS, 4), "<f8"),
        "xrfmap/detsum/xrf_fit": ((3, ROWS, COLS), "<f4"),
        "xrfmap/detsum/xrf_fit_name": ((3,), "S20"),
        "xrfmap/detsum/xrf_roi": ((2, ROWS, COLS), "<f4"),
        "xrfmap/detsum/xrf_roi_name": ((2,), "S20"),
        "xrfmap/det1/xrf_fit": ((1, ROWS, COLS), "<f4"),
    }
    with h5py.File(pyxrf_path, "r") as f:
        for name, (shape, dtype) in want.items():
            assert (f[name].shape, f[name].dtype.str.lstrip("|")) == (shape, dtype), name
        # the names: the list of bytes PyXRF passes (helper_encode_list), which h5py 3 stores as
        # variable-length ASCII strings (h5py 2 made them fixed-length)
        for name, n in (("xrfmap/positions/name", 2), ("xrfmap/scalers/name", 4)):
            assert f[name].shape == (n,) and h5py.check_string_dtype(f[name].dtype).encoding == "ascii", name
        assert f["xrfmap/detsum/counts"].compression == "gzip"
        assert f["xrfmap/detsum/counts"].attrs["comments"] == "Experimental data from channel sum"
        assert f["xrfmap/det2/counts"].attrs["comments"] == "Experimental data from det2"
        assert f["xrfmap/detsum/xrf_fit"].attrs["comments"] == " "
        assert list(f["xrfmap/positions/name"][()]) == [b"x_pos", b"y_pos"]
        np.testing.assert_array_equal(f["xrfmap/scalers/val"][:, :, 2], PY_SCALERS["im"])
        meta = f["xrfmap/scan_metadata"].attrs
        assert (meta["file_type"], meta["file_format"], meta["file_format_version"]) == (
            "XRF-MAP", "NSLS2-XRF-MAP", "1.0")
        time.strptime(meta["file_created_time"], "%Y-%m-%dT%H:%M:%S+00:00")
        assert meta["scan_id"] == 12345 and meta["param_theta_units"] == "mdeg"
        assert set(f["xrfmap"]) == {"scan_metadata", "det1", "det2", "det3", "detsum", "positions", "scalers"}


def test_pyxrf_hxn_i0_and_summed_only_file(tmp_path):
    scalers = {"sclr1_ch3": PY_SCALERS["im"], "sclr1_ch4": PY_SCALERS["i0"]}
    path = write_pyxrf(tmp_path / "scan2D_1.h5", detectors=DETECTORS, create_each_det=False,
                       positions={"x_pos": X_POS, "y_pos": Y_POS}, scalers=scalers,
                       metadata={"scan_id": 1, "param_theta": 15000})
    p = read_pyxrf(path)
    assert p.detector_counts == {} and p.counts.shape == (ROWS, COLS, CHANNELS)
    assert p.i0_name == "sclr1_ch4" and p.theta == 15.0  # units absent: PyXRF's mdeg
    np.testing.assert_array_equal(p.i0, PY_SCALERS["i0"])


def test_pyxrf_writer_does_not_overwrite(pyxrf_path):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_pyxrf(pyxrf_path, detectors=DETECTORS)


def _swap_x(f):
    pos = f["xrfmap/positions/pos"][()]
    pos[0, 2, [3, 4]] = pos[0, 2, [4, 3]]
    f["xrfmap/positions/pos"][...] = pos


def _stuck_y(f):
    pos = f["xrfmap/positions/pos"][()]
    pos[1, 3] = pos[1, 2]
    f["xrfmap/positions/pos"][...] = pos


PYXRF_BAD = {
    "counts missing": (lambda f: f.__delitem__("xrfmap/detsum/counts"), "/xrfmap/detsum/counts", "make_hdf"),
    "x_pos not monotonic": (_swap_x, "/xrfmap/positions/pos", "x_pos must increase"),
    "y_pos stuck": (_stuck_y, "/xrfmap/positions/pos", "y_pos must increase"),
    "one scaler name short": (lambda f: _replace(f, "xrfmap/scalers/name", np.array([b"i0", b"im", b"it"])),
                              "/xrfmap/scalers/name", "one name per map"),
    "scalers transposed": (lambda f: _replace(f, "xrfmap/scalers/val", np.zeros((4, ROWS, COLS))),
                           "/xrfmap/scalers/val", "the scaler index last"),
    "positions wrong map": (lambda f: _replace(f, "xrfmap/positions/pos", np.zeros((2, ROWS, COLS + 1))),
                            "/xrfmap/positions/pos", "(n, rows, cols)"),
    "det2 other size": (lambda f: _replace(f, "xrfmap/det2/counts", np.zeros((ROWS, COLS, 32), "<f4")),
                        "/xrfmap/det2/counts", "same map and spectrum"),
    "fit names short": (lambda f: _replace(f, "xrfmap/detsum/xrf_fit_name", np.array([b"Ca_K"], "S20")),
                        "/xrfmap/detsum/xrf_fit_name", "one name per map"),
}


@pytest.mark.parametrize("case", sorted(PYXRF_BAD))
def test_pyxrf_bad_input_names_file_dataset_and_fix(tmp_path, pyxrf_path, case):
    spoil, dataset, fix = PYXRF_BAD[case]
    path = tmp_path / "bad.h5"
    path.write_bytes(pyxrf_path.read_bytes())
    with h5py.File(path, "a") as f:
        spoil(f)
    with pytest.raises(PyXRFFormatError) as err:
        read_pyxrf(path)
    assert_names(err, path, dataset, fix)


def test_pyxrf_unknown_theta_units(tmp_path):
    path = write_pyxrf(tmp_path / "s.h5", counts=SPECTRA, metadata={"param_theta": 3, "param_theta_units": "grad"})
    p = read_pyxrf(path)
    with pytest.raises(PyXRFFormatError) as err:
        _ = p.theta
    assert_names(err, path, "param_theta_units", "'mdeg'")


# --------------------------------------------------------------------------- Data Exchange

N_ANGLES = 6
PROJ = RNG.integers(0, 4000, (N_ANGLES, ROWS, COLS)).astype(np.uint16)
WHITE = RNG.integers(3000, 4000, (2, ROWS, COLS)).astype(np.uint16)
DARK = RNG.integers(0, 50, (3, ROWS, COLS)).astype(np.uint16)
THETA = np.linspace(0.0, 150.0, N_ANGLES)
ENERGY_J = 12.0 * 1.602176634e-16
MEASUREMENT = {
    "instrument/monochromator/energy": ENERGY_J,  # units from dxtomo's Entry: J
    "instrument/source/current": (0.1023, "A"),
    "instrument/source/beamline": "2-ID-E",
    "instrument/detector/pixel_size_x": {"value": 6.5e-6, "units": "m", "description": "Physical pixel size"},
    "sample/name": "cell A",
}
PROCESS = {"reconstruction/algorithm": "gridrec", "reconstruction/center": (3.5, "pixels")}


@pytest.fixture(scope="module")
def dx_path(tmp_path_factory):
    return write_dxchange(tmp_path_factory.mktemp("dx") / "tomo_00001.h5", PROJ, theta=THETA,
                          data_white=WHITE, data_dark=DARK, measurement=MEASUREMENT, process=PROCESS)


def test_dxchange_round_trip(dx_path):
    dx = read_dxchange(dx_path)
    assert dx.implements == ("exchange", "measurement", "process") and dx.exchange == "exchange"
    assert dx.data.dtype == np.uint16 and dx.shape == (ROWS, COLS)
    np.testing.assert_array_equal(dx.data, PROJ)
    np.testing.assert_array_equal(dx.data_white, WHITE)
    np.testing.assert_array_equal(dx.data_dark, DARK)
    np.testing.assert_array_equal(dx.theta, THETA)
    assert dx.theta_units == "deg"
    assert dx.data_attrs == {"units": "counts", "description": "transmission", "axes": "theta:y:x"}
    m = dx.measurement
    assert (m["instrument/monochromator/energy"].value, m["instrument/monochromator/energy"].units) == (ENERGY_J, "J")
    assert (m["instrument/source/current"].value, m["instrument/source/current"].units) == (0.1023, "A")
    assert (m["instrument/source/beamline"].value, m["instrument/source/beamline"].units) == ("2-ID-E", "text")
    assert m["instrument/detector/pixel_size_x"].description == "Physical pixel size"
    assert m["sample/name"].value == "cell A"
    assert dx.incident_energy_kev == pytest.approx(12.0)
    assert dx.process["reconstruction/algorithm"].value == "gridrec"
    assert (dx.process["reconstruction/center"].value, dx.process["reconstruction/center"].units) == (3.5, "pixels")
    assert dx.channel_names is None and dx.maps == {}


def test_dxchange_layout_is_the_one_dxfile_writes(dx_path):
    with h5py.File(dx_path, "r") as f:
        # implements is a root string dataset (dxtomo.File.create_top_level_group), not an attribute
        assert isinstance(f.get("implements"), h5py.Dataset) and f["implements"].shape == ()
        assert f["implements"][()].decode() == "exchange:measurement:process"
        assert set(f) == {"implements", "exchange", "measurement", "process"}
        assert (f["exchange/data"].shape, f["exchange/data"].dtype) == ((N_ANGLES, ROWS, COLS), np.uint16)
        assert dict(f["exchange/data"].attrs) == {"units": "counts", "description": "transmission",
                                                  "axes": "theta:y:x"}
        assert f["exchange/theta"].shape == (N_ANGLES,) and f["exchange/theta"].attrs["units"] == "deg"
        assert f["exchange/data_white"].shape == (2, ROWS, COLS) and f["exchange/data_dark"].shape == (3, ROWS, COLS)
        energy = f["measurement/instrument/monochromator/energy"]
        assert energy.shape == () and energy.attrs["units"] == "J"
        assert f["measurement/sample/name"].attrs["units"] == "text"


def test_dxchange_theta_in_radians_comes_back_in_degrees(tmp_path):
    path = write_dxchange(tmp_path / "rad.h5", PROJ, theta=np.deg2rad(THETA), theta_units="rad")
    dx = read_dxchange(path)
    np.testing.assert_allclose(dx.theta, THETA, atol=1e-12)
    assert dx.theta_units == "rad" and dx.implements == ("exchange",)


def test_dxchange_without_theta_or_units(tmp_path):
    path = write_dxchange(tmp_path / "bare.h5", PROJ)
    assert read_dxchange(path).theta is None
    with h5py.File(path, "a") as f:  # dxchange.write_hdf5 style: no units, degrees assumed
        f["exchange/theta"] = THETA
    dx = read_dxchange(path)
    np.testing.assert_array_equal(dx.theta, THETA)
    assert dx.theta_units is None


def test_dxchange_xrf_maps_exchange_group_of_element_maps(tmp_path):
    maps = np.stack([ELEMENT_MAPS[n] for n in ("Zn", "Fe", "Ca")])
    path = write_dxchange(tmp_path / "xrf.h5", maps, theta=[12.5], exchange="exchange_0",
                          channel_names=["Zn", "Fe", "Ca"], channel_units=["ug/cm2"] * 3)
    with pytest.raises(DXchangeFormatError) as err:
        read_dxchange(path)
    assert_names(err, path, "no /exchange group", "exchange_0")
    dx = read_dxchange(path, exchange="exchange_0")
    assert dx.channel_names == ("Zn", "Fe", "Ca") and dx.channel_units == ("ug/cm2",) * 3
    np.testing.assert_array_equal(dx.theta, [12.5])
    for name in ("Zn", "Fe", "Ca"):
        np.testing.assert_array_equal(dx.maps[name], ELEMENT_MAPS[name])


def _dx_replace(name, data, units=None):
    def spoil(f):
        _replace(f, name, data)
        if units is not None:
            f[name].attrs["units"] = units
    return spoil


DX_BAD = {
    "data missing": (lambda f: f.__delitem__("exchange/data"), "/exchange/data", "'data' dataset"),
    "data 2-D": (_dx_replace("exchange/data", PROJ[0]), "/exchange/data", "leading axis of length 1"),
    "theta count": (_dx_replace("exchange/theta", THETA[:-1], "deg"), "/exchange/theta", "same length"),
    "theta units": (_dx_replace("exchange/theta", THETA, "grad"), "/exchange/theta", "degrees (units 'deg')"),
    "white size": (_dx_replace("exchange/data_white", WHITE[:, :-1]), "/exchange/data_white",
                   "the projections' image size"),
    "dark 2-D": (_dx_replace("exchange/data_dark", DARK[0]), "/exchange/data_dark", "expected 3"),
}


@pytest.mark.parametrize("case", sorted(DX_BAD))
def test_dxchange_bad_input_names_file_dataset_and_fix(tmp_path, dx_path, case):
    spoil, dataset, fix = DX_BAD[case]
    path = tmp_path / "bad.h5"
    path.write_bytes(dx_path.read_bytes())
    with h5py.File(path, "a") as f:
        spoil(f)
    with pytest.raises(DXchangeFormatError) as err:
        read_dxchange(path)
    assert_names(err, path, dataset, fix)


@pytest.mark.parametrize("reader, error", [(read_pyxrf, PyXRFFormatError), (read_dxchange, DXchangeFormatError)])
def test_not_hdf5_or_not_the_format(tmp_path, maps_path, reader, error):
    text = tmp_path / "notes.txt"
    text.write_text("not an HDF5 file")
    with pytest.raises(error) as err:
        reader(text)
    assert_names(err, text, "not an HDF5 file", ".h5")
    with pytest.raises(error) as err:
        reader(maps_path)  # a MAPS file is neither
    assert str(maps_path) in str(err.value) and "no /" in str(err.value)
    with pytest.raises(FileNotFoundError):
        reader(tmp_path / "absent.h5")
