"""The founding paper's table: CC peak widths of Zn and diagonal DPC from dwell_pair_series."""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pytest

from xfct_bluesky import cli
from xfct_bluesky.paper import PAPER, format_table, paper_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rows():
    """A 64 x 64 version of the paper's experiment (48 x 48 sub-region, 4x upsampled CC)."""
    return paper_table(shape=(64, 64), region=48, upsample=4)


def _row(rows, spot, dwell, signal):
    (row,) = [r for r in rows if r.spot.startswith(spot) and r.dwell == dwell and r.signal == signal]
    return row


def test_dpc_peak_is_sharp_and_zn_peak_broad(rows):
    assert len(rows) == 2 * 2 * 2  # two spot orientations x two dwells x (Zn, DPC)
    for r in rows:
        assert np.all(np.isfinite([r.fwhm_x, r.fwhm_y, r.fwhm_45])), r
        assert r.cc.shape == (4 * 48, 4 * 48) and r.images[0].shape == (48, 48)
    for spot in ("700h", "500h"):
        for dwell in (3e-3, 30e-3):
            dpc, zn = _row(rows, spot, dwell, "dpc_diag"), _row(rows, spot, dwell, "Zn")
            # the paper's contrast: DPC ~1.5-2.6 px, Zn an order of magnitude wider
            assert 1.2 < dpc.fwhm_x < 3.2 and 1.2 < dpc.fwhm_y < 3.2, dpc
            assert zn.fwhm_x > 4 * dpc.fwhm_x and zn.fwhm_y > 4 * dpc.fwhm_y, (zn, dpc)


def test_dpc_width_follows_the_spot_orientation(rows):
    for dwell in (3e-3, 30e-3):
        wide_h = _row(rows, "700h", dwell, "dpc_diag")
        wide_v = _row(rows, "500h", dwell, "dpc_diag")
        # the 700 nm axis of the spot widens the peak along that axis (~2.5 px vs ~1.6 px)
        assert wide_h.fwhm_x > wide_h.fwhm_y + 0.5 and wide_v.fwhm_y > wide_v.fwhm_x + 0.5
        assert wide_h.fwhm_x == pytest.approx(wide_v.fwhm_y, rel=0.2)


def test_format_table_has_every_row_and_the_paper_values(rows):
    text = format_table(rows)
    assert len([line for line in text.splitlines() if "ms " in line]) == len(rows)
    assert f"{PAPER['dpc_diag']:6.1f}" in text and f"{PAPER['Zn']:6.1f}" in text


@pytest.mark.parametrize("region", [4, 65])
def test_bad_region_is_refused_before_any_scan(region):
    with pytest.raises(ValueError, match=rf"region={region}: allowed 8 to 64 px"):
        paper_table(shape=(64, 64), region=region, session=SimpleNamespace(RE=pytest.fail))  # nothing run


def test_cli_paper_table_stores_the_maps_in_tiled(tmp_path):
    from tiled.client import from_uri
    from tiled.queries import Key

    from xfct_bluesky.storage import embedded_server, load_tomo, runs_container

    data, out = tmp_path / "data", io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["paper-table", "--data-dir", str(data), "--size", "32", "--region", "24",
                         "--upsample", "2"])
    assert code == 0, out.getvalue()
    text = out.getvalue()
    assert "dpc_diag" in text and "Zn" in text
    assert (data / "paper" / "paper-table.txt").read_text().strip() in text
    assert (data / "paper" / "paper-figure.png").read_bytes()[:8] == PNG_MAGIC
    with embedded_server(data) as server:
        client = from_uri(server.uri)
        try:
            runs = runs_container(client).search(Key("start.plan_name") == "dwell_pair_series")
            assert len(runs) == 2  # one run per spot orientation
            for run in runs.values():
                maps = load_tomo(run).maps
                dpc = maps["dpc_diag"]  # the quantity name, whatever the device is called
                assert dpc.shape == (4, 32, 32) and np.isfinite(dpc).all()  # 2 dwells x 2 maps
                assert run.metadata["start"]["sample"] == "simulated egg"
        finally:
            client.context.close()
