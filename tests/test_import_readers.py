"""The format readers of ``xfct_bluesky.importers`` on real APS 2-ID-E files.

The files in ``tests/data/xrf-maps-2ide/`` are XRF-Maps' public test set, copied
unchanged (README and licence beside them). The expected numbers below were
read from the files and agree with Mooney's reference reader (synApps
``mda.py``); the names can be checked by eye with ``strings FILE | head``.

Files derived from them for the bad-input and aborted-scan tests are written
to ``tmp_path`` (a real file with a few header bytes patched or cut), except
the extra-PV types the real files do not use (short, float, char), which a
small hand-built MDA file covers.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from xfct_bluesky.importers import (
    FlyXRFFormatError,
    MDAFormatError,
    read_flyxrf,
    read_mda,
)

DATA = Path(__file__).parent / "data" / "xrf-maps-2ide"
AXO = DATA / "mda" / "axo_std.mda"
SCAN10 = DATA / "mda" / "2xfm_0010.mda"
SCAN11 = DATA / "mda" / "2xfm_0011.mda"
FLY11 = DATA / "flyXRF" / "2xfm_0011_2xfm3__0.h5"


@pytest.fixture(scope="module")
def axo():
    return read_mda(AXO)


@pytest.fixture(scope="module")
def scan10():
    return read_mda(SCAN10)


@pytest.fixture(scope="module")
def scan11():
    return read_mda(SCAN11)


@pytest.fixture(scope="module")
def fly11():
    return read_flyxrf(FLY11)


def test_the_dataset_travels_with_its_readme_and_licence():
    assert (DATA / "README.md").read_text().startswith("# Real APS 2-ID-E data")
    assert "UChicago Argonne" in (DATA / "LICENSE-XRF-Maps").read_text()


# --------------------------------------------------------------------------- MDA, rank 3

# what each rank-3 file holds: header, outer (rows) and middle (cols) positioner ranges,
# and the total of the four MCA spectra over all pixels and channels
RANK3 = {
    "axo_std": {
        "path": AXO, "scan_number": 1, "extra_offset": 3986160, "time": "AUG 09, 2016 10:28:52.450043",
        "y": (2.742, 3.742), "x_pv": "2xfm:m24.VAL", "x_desc": "samX", "x": (-1.36647, -0.36647), "step": 0.1,
        "totals": (895788, 844397, 593359, 696070), "total": 3029614, "energy": 13.38899708,
    },
    "2xfm_0010": {
        "path": SCAN10, "scan_number": 10, "extra_offset": 3986192, "time": "OCT 28, 2015 18:18:43.747055",
        "y": (3.25, 3.75), "x_pv": "2xfm:m200.VAL", "x_desc": "Sample X", "x": (-1.5, -1.0), "step": 0.05,
        "totals": (107119, 103092, 52321, 54638), "total": 317170, "energy": 12.86905909,
    },
}


@pytest.fixture(scope="module", params=sorted(RANK3))
def rank3(request, axo, scan10):
    return {"axo_std": axo, "2xfm_0010": scan10}[request.param], RANK3[request.param]


def test_rank3_header(rank3):
    mda, want = rank3
    assert (mda.version, mda.scan_number, mda.rank, mda.dims) == (1.3, want["scan_number"], 3, (11, 11, 2000))
    assert mda.is_regular and mda.extra_pvs_offset == want["extra_offset"]
    assert mda.complete and mda.shape == (11, 11, 2000)


def test_rank3_dimensions_positioners_detectors_triggers(rank3):
    mda, want = rank3
    rows, cols, mca = mda.scans
    assert [s.name for s in mda.scans] == ["2xfm:scan2", "2xfm:scan1", "2xfm:scanH"]
    assert [s.rank for s in mda.scans] == [3, 2, 1]
    assert [(s.npts, s.curr_pt, s.n_scans) for s in mda.scans] == [
        (11, 11, 1), (11, 11, 11), (2000, 2000, 121)
    ]
    assert rows.time == want["time"] and len(mca.start_times) == 121
    assert [(len(s.positioners), len(s.detectors), len(s.triggers)) for s in mda.scans] == [
        (1, 41, 1), (1, 69, 2), (0, 4, 1)
    ]
    y, x = rows.positioners[0], cols.positioners[0]
    assert (y.name, y.description, y.step_mode, y.unit, y.field_name) == (
        "2xfm:m13.VAL", "Sample Y", "LINEAR", "mm", "P1"
    )
    assert (x.name, x.description, x.step_mode, x.unit) == (want["x_pv"], want["x_desc"], "LINEAR", "mm")
    assert rows.detectors[0].name == "Mt:TopUpAutoEnableC"
    assert rows.detectors[-1].name == "2xfm:m25.RBV" and rows.detectors[-1].description == "syringe pump"
    assert cols.detectors[0].name == "2xfm:scaler3_cts1.A" and cols.detectors[0].field_name == "D01"
    srcurrent = cols.detectors[-1]
    assert (srcurrent.name, srcurrent.description, srcurrent.unit, srcurrent.field_name) == (
        "S:SRcurrentAI", "SR Current", "mA", "D70"
    )
    assert [d.name for d in mca.detectors] == [f"dxpXMAP2xfm3:mca{i}.VAL" for i in range(1, 5)]
    assert [t.name for t in cols.triggers] == ["2xfm:scanH.EXSC", "2xfm:scaler3.CNT"]
    assert mca.triggers[0].name == "dxpXMAP2xfm3:EraseStart" and mca.triggers[0].command == 1.0


def test_rank3_positions_are_the_map_grid(rank3):
    mda, want = rank3
    y = mda.positioner("2xfm:m13.VAL").data
    x = mda.positioner(want["x_pv"]).data
    assert y.shape == (11,) and x.shape == (11, 11)
    assert y[0] == pytest.approx(want["y"][0]) and y[-1] == pytest.approx(want["y"][1])
    assert x[0, 0] == pytest.approx(want["x"][0]) and x[0, -1] == pytest.approx(want["x"][1])
    assert np.all(np.diff(y) > 0) and np.all(np.diff(x, axis=1) > 0)
    np.testing.assert_allclose(np.diff(y), want["step"], rtol=1e-6)
    assert np.all(x == x[0])  # every row steps the same columns
    # the positioner agrees with its readback, which the outer scan records as a detector
    np.testing.assert_allclose(mda.detector("2xfm:m13.RBV").data, y, atol=1e-4)


def test_rank3_spectra_are_rows_cols_channels_of_counts(rank3):
    mda, want = rank3
    spectra = [d.data for d in mda.scans[-1].detectors]
    assert all(s.shape == (11, 11, 2000) and s.dtype == np.float32 for s in spectra)
    stacked = np.stack(spectra)
    assert np.all(stacked >= 0) and np.all(stacked == np.round(stacked))  # counts
    assert tuple(int(s.sum(dtype=np.float64)) for s in spectra) == want["totals"]
    assert stacked.sum(dtype=np.float64) == want["total"]
    assert mda.scans[-1].acquired.all()


def test_rank3_extra_pvs(rank3):
    mda, want = rank3
    assert len(mda.extra_pvs) == 843
    assert Counter(pv.type_name for pv in mda.extra_pvs) == {
        "DBR_STRING": 333, "DBR_CTRL_LONG": 261, "DBR_CTRL_DOUBLE": 249
    }
    first, last = mda.extra_pvs[0], mda.extra_pvs[-1]
    assert (first.name, first.type_code, first.value) == ("Mt:TopUpAutoEnableC", 0, "Enable")
    assert (last.name, last.value) == ("2xfm:scan4.PASM", "PRIOR POS")
    energy = mda.extra_pv("ID02us:Energy.VAL")
    assert (energy.description, energy.unit, energy.type_name, energy.count) == (
        "Average Energy Readout", "keV", "DBR_CTRL_DOUBLE", 1
    )
    assert energy.scalar == pytest.approx(want["energy"])
    nuse = mda.extra_pv("dxpXMAP2xfm3:mca1.NUSE")
    assert nuse.type_name == "DBR_CTRL_LONG" and nuse.value.dtype == np.int32 and nuse.scalar == 2048
    # the files repeat one name; extra_pv returns the first
    assert [n for n, c in Counter(pv.name for pv in mda.extra_pvs).items() if c > 1] == ["2xfm:scaler1.TP"]


def test_axo_standard_is_brighter_than_the_sample(axo, scan10):
    """The AXO thin-film standard gives about ten times the counts of the 2015 sample map."""
    axo_total = sum(d.data.sum(dtype=np.float64) for d in axo.scans[-1].detectors)
    sample_total = sum(d.data.sum(dtype=np.float64) for d in scan10.scans[-1].detectors)
    assert 9 < axo_total / sample_total < 10


# --------------------------------------------------------------------------- MDA, rank 2 (fly scan)


def test_rank2_fly_scan(scan11):
    assert (scan11.version, scan11.scan_number, scan11.rank, scan11.dims) == (1.3, 11, 2, (11, 11))
    assert scan11.extra_pvs_offset == 55464 and scan11.complete
    rows, cols = scan11.scans
    assert [s.name for s in scan11.scans] == ["2xfm:Fscan1", "2xfm:FscanH"]
    assert [(len(s.positioners), len(s.detectors), len(s.triggers)) for s in scan11.scans] == [(1, 29, 1), (1, 52, 3)]
    fly = cols.positioners[0]
    assert (fly.name, fly.description, fly.step_mode) == ("2xfm:FLYuserCalc10.A", "10F:drive (motor100)", "FLY")
    assert fly.data.shape == (11, 11)
    np.testing.assert_allclose(fly.data[0, [0, -1]], [-1.5, -1.0])
    assert rows.positioners[0].name == "2xfm:m13.VAL"
    np.testing.assert_allclose(rows.positioners[0].data[[0, -1]], [3.25, 3.75])
    assert cols.detectors[0].name == "2xfm:mcs:mca1.VAL" and cols.detectors[0].data.shape == (11, 11)
    assert [t.name for t in cols.triggers] == [
        "2xfm:mcs:EraseStart", "dxpXMAP2xfm3:netCDF1:Capture", "dxpXMAP2xfm3:EraseStart"
    ]
    assert len(scan11.extra_pvs) == 843
    assert scan11.extra_pv("2xfm:saveData_scanNumber").scalar == 12  # the next scan's number


# --------------------------------------------------------------------------- flyXRF


def test_flyxrf_shapes_and_totals(fly11):
    assert fly11.element_names == ("data_a", "data_b", "data_c", "data_d")
    assert fly11.spectra.shape == (4, 11, 9, 2048) and fly11.spectra.dtype == np.int16
    assert (fly11.n_elements, fly11.shape, fly11.n_channels) == (4, (11, 9), 2048)
    assert fly11.summed_spectra.shape == (11, 9, 2048)
    assert [int(s.sum(dtype=np.int64)) for s in fly11.spectra] == [100311, 96080, 48479, 50482]
    assert int(fly11.summed_spectra.sum()) == 295352
    np.testing.assert_array_equal(fly11.summed_spectra, fly11.spectra.sum(axis=0))
    for name in ("livetime", "realtime", "input_counts", "output_counts", "dead_time_factor"):
        assert getattr(fly11, name).shape == (4, 11, 9), name


def test_flyxrf_moves_channels_last(fly11):
    """spectra[element, row, col] is the file's data_<element>[:, row, col]."""
    with h5py.File(FLY11, "r") as f:
        raw_c = f["MAPS_RAW/data_c"][()]
    assert raw_c.shape == (2048, 11, 9)
    for row, col in [(0, 0), (3, 7), (10, 8)]:
        np.testing.assert_array_equal(fly11.spectra[2, row, col], raw_c[:, row, col])


def test_flyxrf_timing_and_dead_time(fly11):
    assert 0.497 < fly11.livetime.min() < 0.498 and 1.223 < fly11.livetime.max() < 1.225
    assert 0.498 < fly11.realtime.min() < 0.499 and 1.224 < fly11.realtime.max() < 1.226
    assert np.all(fly11.livetime <= fly11.realtime)
    assert np.all(fly11.input_counts >= fly11.output_counts)
    factor = fly11.dead_time_factor
    assert factor.min() >= 1
    assert 1.002 < factor.min() < 1.003 and 1.027 < factor.max() < 1.028
    np.testing.assert_allclose(factor, fly11.input_counts.astype(float) / fly11.output_counts, rtol=1e-12)
    np.testing.assert_allclose(fly11.elapsed_livetime * factor, fly11.realtime, rtol=1e-12)
    assert "inputcounts / ouputcounts" in fly11.dead_time_formula
    # the counts are events per pixel: each spectrum holds nearly every processed event
    in_spectrum = fly11.spectra.sum(axis=-1, dtype=np.int64)
    assert np.all(in_spectrum <= fly11.output_counts) and np.all(in_spectrum >= 0.95 * fly11.output_counts)


def test_flyxrf_dead_time_is_one_where_nothing_was_counted(tmp_path):
    path = _write_flyxrf(tmp_path / "zero.h5", icr_zero_at=(1, 0, 2))
    fly = read_flyxrf(path)
    assert fly.dead_time_factor[1, 0, 2] == 1.0 and fly.elapsed_livetime[1, 0, 2] == fly.realtime[1, 0, 2]
    assert fly.dead_time_factor[0, 0, 0] == pytest.approx(1000 / 900)


# --------------------------------------------------------------------------- scan 0011: MDA + flyXRF


def test_scan0011_mda_and_flyxrf_describe_the_same_pixels(scan11, fly11):
    """The MDA plans 11 x 11 points; the scalers and the XMAP both recorded 9 per row.

    The flyXRF file has the MDA's 11 rows and 9 columns. The MCS scaler
    channels of the MDA (``2xfm:mcs:mca*``) hold data in the first 9 columns
    of every row and zeros in the last 2 (``2xfm:mcs:NuseAll`` = 9), and their
    clock channel (``mca1``, a 25 MHz clock by the ratio) is proportional to
    the flyXRF real time pixel by pixel: the same pixels in the same order.
    The first pixel of each row is the long one (the line start) in both.
    """
    assert scan11.shape == (11, 11) and fly11.shape == (11, 9)
    assert scan11.dims[0] == fly11.shape[0]
    np.testing.assert_array_equal(scan11.detector("2xfm:mcs:NuseAll").data[:, 0], 9)
    clock = scan11.detector("2xfm:mcs:mca1.VAL").data
    assert np.all(clock[:, :9] > 0) and np.all(clock[:, 9:] == 0)
    realtime = fly11.realtime[0]
    ratio = clock[:, 1:9] / realtime[:, 1:]
    np.testing.assert_allclose(ratio, 25e6, rtol=2e-4)
    assert np.all(realtime[:, 0] > 2 * realtime[:, 1:].max(axis=1))
    assert np.all(clock[:, 0] > 2 * clock[:, 1:9].max(axis=1))
    # the MDA plans 11 fly positions per row; the 9 recorded pixels are the first 9 (the last 2 hold zeros)
    columns = scan11.positioner("2xfm:FLYuserCalc10.A").data[0, : fly11.shape[1]]
    np.testing.assert_allclose(columns, np.linspace(-1.5, -1.1, 9))


# --------------------------------------------------------------------------- aborted scans


def _patch_int(data: bytearray, offset: int, value: int) -> None:
    data[offset : offset + 4] = struct.pack(">i", value)


def _int_at(data: bytes, offset: int) -> int:
    return struct.unpack_from(">i", data, offset)[0]


# 2xfm_0011.mda: the file header is 28 bytes (version, scan number, rank, 2 dims, isRegular,
# extra-PV offset); the outer scan's rank, npts and curr_pt follow, then its 11 row offsets
OUTER_CURR_PT = 36
ROW_OFFSETS = 40


def test_aborted_scan_keeps_the_points_acquired(tmp_path):
    """Outer scan stopped after 7 rows, row 3 after 5 points: planned shape kept, the rest NaN."""
    data = bytearray(SCAN11.read_bytes())
    _patch_int(data, OUTER_CURR_PT, 7)
    row3 = _int_at(data, ROW_OFFSETS + 3 * 4)
    _patch_int(data, row3 + 8, 5)  # that row's curr_pt
    path = tmp_path / "aborted.mda"
    path.write_bytes(bytes(data))
    mda = read_mda(path)
    rows, cols = mda.scans
    assert not mda.complete and mda.shape == (11, 11)
    assert (rows.npts, rows.curr_pt) == (11, 7) and (cols.npts, cols.curr_pt) == (11, 5)
    np.testing.assert_array_equal(rows.acquired, np.arange(11) < 7)
    y = rows.positioners[0].data
    assert not np.isnan(y[:7]).any() and np.isnan(y[7:]).all()
    # the row in flight when the outer scan stopped (row 7) is read too, as mda-load does
    assert cols.n_scans == 8
    want = np.zeros((11, 11), dtype=bool)
    want[:8] = True
    want[3, 5:] = False
    np.testing.assert_array_equal(cols.acquired, want)
    clock = mda.detector("2xfm:mcs:mca1.VAL").data
    np.testing.assert_array_equal(np.isnan(clock), ~want)
    reference = read_mda(SCAN11).detector("2xfm:mcs:mca1.VAL").data
    np.testing.assert_array_equal(clock[want], reference[want])


def test_a_zero_row_offset_ends_the_acquired_rows(tmp_path):
    data = bytearray(SCAN11.read_bytes())
    _patch_int(data, ROW_OFFSETS + 4 * 4, 0)
    path = tmp_path / "zero_offset.mda"
    path.write_bytes(bytes(data))
    mda = read_mda(path)
    assert mda.scans[0].curr_pt == 4 and mda.scans[1].n_scans == 4
    assert mda.scans[1].acquired[:4].all() and not mda.scans[1].acquired[4:].any()


# --------------------------------------------------------------------------- a hand-built rank-1 file


def _i(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def _s(text: str) -> bytes:
    """An MDA counted string: the length, and if not 0 an XDR string (length, bytes padded to 4)."""
    raw = text.encode("latin-1")
    if not raw:
        return _i(0)
    return _i(len(raw), len(raw)) + raw + b"\0" * (-len(raw) % 4)


def _rank1_mda(version: float = 1.4, *, curr_pt: int = 2, extra_type: int | None = None) -> bytes:
    """A 3-point rank-1 scan, stopped after ``curr_pt`` points, with one extra PV of each type."""
    scan = (
        _i(1, 3, curr_pt) + _s("sim:scan1") + _s("JAN 01, 2024 00:00:00") + _i(1, 1, 1)
        + _i(0) + _s("sim:m1.VAL") + _s("") + _s("LINEAR") + _s("mm") + _s("sim:m1.RBV") + _s("") + _s("mm")
        + _i(2) + _s("sim:det") + _s("a detector") + _s("counts")
        + _i(0) + _s("sim:det.CNT") + struct.pack(">f", 1.0)
        + struct.pack(">3d", 0.5, 1.0, 1.5) + struct.pack(">3f", 10.0, 20.0, 0.0)
    )
    extra = [
        _s("sim:name") + _s("sample") + _i(0) + _s("Zn wire"),
        _s("sim:short") + _s("") + _i(29) + _i(2) + _s("") + _i(-3, 7),
        _s("sim:float") + _s("") + _i(30) + _i(1) + _s("K") + struct.pack(">f", 295.5),
        _s("sim:char") + _s("") + _i(32) + _i(4) + _s("") + _i(ord("h"), ord("i"), 0, ord("x")),
        _s("sim:long") + _s("") + _i(33) + _i(1) + _s("") + _i(123456),
        _s("sim:double") + _s("") + _i(34) + _i(3) + _s("eV") + struct.pack(">3d", 1.0, 2.0, 3.5),
    ]
    if extra_type is not None:
        extra.append(_s("sim:bad") + _s("") + _i(extra_type) + _i(1) + _s("") + _i(0))
    header_len = 4 + 4 + 4 + 4 + 4 + 4
    extra_offset = header_len + len(scan)
    header = struct.pack(">f", version) + _i(7, 1, 3, 1, extra_offset)
    return header + scan + _i(len(extra)) + b"".join(extra)


def test_rank1_file_with_every_extra_pv_type(tmp_path):
    path = tmp_path / "rank1.mda"
    path.write_bytes(_rank1_mda())
    mda = read_mda(path)
    assert (mda.version, mda.scan_number, mda.rank, mda.dims) == (1.4, 7, 1, (3,))
    (scan,) = mda.scans
    assert (scan.name, scan.npts, scan.curr_pt, scan.complete) == ("sim:scan1", 3, 2, False)
    pos, det, trig = scan.positioners[0], scan.detectors[0], scan.triggers[0]
    assert (pos.name, pos.readback_name, pos.readback_unit) == ("sim:m1.VAL", "sim:m1.RBV", "mm")
    np.testing.assert_array_equal(pos.data, [0.5, 1.0, np.nan])
    assert (det.field_name, det.description, det.unit) == ("D03", "a detector", "counts")
    np.testing.assert_array_equal(det.data, np.array([10.0, 20.0, np.nan], dtype=np.float32))
    assert (trig.name, trig.field_name, trig.command) == ("sim:det.CNT", "T1", 1.0)
    pvs = {pv.name: pv for pv in mda.extra_pvs}
    assert pvs["sim:name"].value == "Zn wire" and pvs["sim:name"].description == "sample"
    assert pvs["sim:short"].value.dtype == np.int16 and pvs["sim:short"].value.tolist() == [-3, 7]
    assert pvs["sim:float"].scalar == 295.5 and pvs["sim:float"].unit == "K"
    assert pvs["sim:char"].value == "hi" and pvs["sim:char"].type_name == "DBR_CTRL_CHAR"
    assert pvs["sim:long"].scalar == 123456
    assert pvs["sim:double"].value.tolist() == [1.0, 2.0, 3.5]
    with pytest.raises(ValueError, match="3 values"):
        _ = pvs["sim:double"].scalar


# --------------------------------------------------------------------------- bad MDA input


@pytest.mark.parametrize(
    ("cut", "no_extra_pvs", "what"),
    [
        (10, False, "byte 8: expected 4 bytes of the rank, but the file ends at byte 10"),
        # the header's offset of the extra PVs tells first that the file is short
        (60, False, r"byte 24: the offset of the extra PVs is 55464, outside the file \(28 \.\. 59\): truncated"),
        # files without extra PVs: the scans tell
        (60, True, "byte 32: the outermost scan has npts 11, more than the 24 bytes left can hold"),
        (100, True, "byte 92: expected 12 bytes of the name of the outermost scan"),
        (4000, True, "byte 3612: the number of detectors of scan 0 below the outermost scan is 52, which cannot fit"),
        (8180, True, "byte 5992: expected 2288 bytes of the detector data of scan 0 below the outermost scan"),
        (20000, True, "byte 19996: the length of the PV name of trigger 1 of scan 3 below the outermost scan is 28"),
        (55464 + 100, False, "byte 55464: the number of extra PVs is 843, which cannot fit in the 96 bytes left"),
        (112180 - 1000, False, r"expected \d+ bytes of the .* of extra PV \d+ \(.+\), but the file ends at byte 111180"),
    ],
)
def test_truncated_mda(tmp_path, cut, no_extra_pvs, what):
    data = bytearray(SCAN11.read_bytes()[:cut])
    if no_extra_pvs:
        _patch_int(data, 24, 0)
    path = tmp_path / "cut.mda"
    path.write_bytes(bytes(data))
    with pytest.raises(MDAFormatError, match=what) as err:
        read_mda(path)
    message = str(err.value)
    assert message.startswith(f"{path}: byte ")


def test_truncated_rank3_mda(tmp_path):
    path = tmp_path / "cut.mda"
    path.write_bytes(AXO.read_bytes()[:2_000_000])
    with pytest.raises(MDAFormatError, match=r"cut\.mda: byte \d+: .*(truncated|outside the file)"):
        read_mda(path)


def test_not_an_mda_file(tmp_path):
    for name, content in [("readme.mda", (DATA / "README.md").read_bytes()), ("fly.mda", FLY11.read_bytes())]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(MDAFormatError, match=rf"{name}: byte 0: the version reads .*expected one of 1.3, 1.4"):
            read_mda(path)
    with pytest.raises(ValueError, match="version"):
        (tmp_path / "empty.mda").write_bytes(b"")
        read_mda(tmp_path / "empty.mda")


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (8, 1000, r"byte 8: the rank is 1000, expected 1 \.\. 4"),
        (12, 0, r"byte 12: the dimensions are \[0, 11\], expected each >= 1"),
        (24, 10**9, r"byte 24: the offset of the extra PVs is 1000000000, outside the file"),
        (28, 5, r"byte 28: the outermost scan has rank 5, expected 2"),
        (32, -1, r"byte 32: the outermost scan has npts -1"),
        (36, 12, r"byte 36: the outermost scan has curr_pt 12, expected 0 \.\. npts \(11\)"),
        (ROW_OFFSETS + 8, 10**8, r"byte 48: the offset of lower scan 2 of the outermost scan is 100000000, outside"),
    ],
)
def test_absurd_header_values(tmp_path, offset, value, message):
    data = bytearray(SCAN11.read_bytes())
    _patch_int(data, offset, value)
    path = tmp_path / "bad.mda"
    path.write_bytes(bytes(data))
    with pytest.raises(MDAFormatError, match=message) as err:
        read_mda(path)
    assert str(err.value).startswith(str(path))


def test_unknown_version_and_extra_pv_type(tmp_path):
    path = tmp_path / "v12.mda"
    path.write_bytes(_rank1_mda(version=1.2))
    with pytest.raises(MDAFormatError, match="version reads 1.2"):
        read_mda(path)
    path = tmp_path / "type.mda"
    path.write_bytes(_rank1_mda(extra_type=6))
    with pytest.raises(MDAFormatError, match=r"extra PV 6 \(sim:bad\) has type 6, expected one of 0 \(DBR_STRING\)"):
        read_mda(path)


def test_missing_mda_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_mda(tmp_path / "nope.mda")


# --------------------------------------------------------------------------- bad flyXRF input


def _write_flyxrf(path, *, skip=(), shapes=None, icr_zero_at=None):
    """A small flyXRF file: 2 elements, 2 x 3 pixels, 8 channels."""
    shapes = shapes or {}
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        g = f.create_group("MAPS_RAW")
        for name in ("data_a", "data_b"):
            if name not in skip:
                g[name] = rng.integers(0, 20, size=shapes.get(name, (8, 2, 3))).astype(np.int16)
        timing = {
            "livetime": np.full((2, 2, 3), 0.9, np.float32),
            "realtime": np.ones((2, 2, 3), np.float32),
            "inputcounts": np.full((2, 2, 3), 1000, np.float32),
            "ouputcounts": np.full((2, 2, 3), 900, np.float32),
        }
        if icr_zero_at is not None:
            timing["inputcounts"][icr_zero_at] = 0
        for name, value in timing.items():
            if name not in skip:
                g[name] = value if name not in shapes else np.ones(shapes[name], np.float32)
    return path


def test_small_flyxrf_reads(tmp_path):
    fly = read_flyxrf(_write_flyxrf(tmp_path / "ok.h5"))
    assert fly.spectra.shape == (2, 2, 3, 8) and fly.element_names == ("data_a", "data_b")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"skip": ("ouputcounts",)}, r"/MAPS_RAW/ouputcounts is missing; every flyXRF file needs"),
        ({"skip": ("realtime",)}, r"/MAPS_RAW/realtime is missing"),
        ({"skip": ("data_a",)}, r"/MAPS_RAW/data_a is missing or the elements have a gap \(found: data_b\)"),
        ({"shapes": {"data_b": (8, 2, 4)}}, r"/MAPS_RAW/data_b has shape \(8, 2, 4\), expected \(8, 2, 3\)"),
        ({"shapes": {"livetime": (4, 2, 3)}}, r"/MAPS_RAW/livetime has shape \(4, 2, 3\), expected .* \(2, 2, 3\)"),
        (
            {"shapes": {"data_a": (8, 6), "data_b": (8, 6)}},
            r"/MAPS_RAW/data_a has shape \(8, 6\), expected \(channels, rows, cols\)",
        ),
    ],
)
def test_bad_flyxrf(tmp_path, kwargs, message):
    path = _write_flyxrf(tmp_path / "bad.h5", **kwargs)
    with pytest.raises(FlyXRFFormatError, match=message) as err:
        read_flyxrf(path)
    assert str(err.value).startswith(str(path))


def test_flyxrf_without_maps_raw_or_not_hdf5(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["entry/data"] = np.zeros(3)
    with pytest.raises(FlyXRFFormatError, match=r"other\.h5: no /MAPS_RAW group"):
        read_flyxrf(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(FlyXRFFormatError, match=r"text\.h5: not an HDF5 file"):
        read_flyxrf(tmp_path / "text.h5")
    with pytest.raises(FileNotFoundError):
        read_flyxrf(tmp_path / "missing.h5")
