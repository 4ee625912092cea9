"""From a stored tomography to volumes: the pipeline, the live callback, the CLI (the dose study: test_dose_study.py)."""

from __future__ import annotations

import contextlib
import io

import h5py
import numpy as np
import pytest
from bluesky import RunEngine

from xfct_bluesky.callbacks import LiveDPCAlignment, LiveReconstruction, SerialEmitter
from xfct_bluesky.dose_study import compare, phantom_zn
from xfct_bluesky.plans import xfct_tomo
from xfct_bluesky.reconstruction import check_options, reconstruct_maps

ROWS, SIZE, MARGIN = 16, 40, 3


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A 48-angle golden-order tomography of a small cell with runout: (theta, maps, truth, specimen, docs)."""
    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import RunoutModel, small_cell
    from xfct_bluesky.physics.cells import EGG_DIAMETER, EGG_ZN_ATOMS

    specimen = small_cell(8e-6, seed=1, zn_atoms=EGG_ZN_ATOMS * (8e-6 / EGG_DIAMETER) ** 2)
    mp = make_sim_microprobe(shape=(ROWS, SIZE), pixel_size=300e-9, seed=1, specimen=specimen,
                             runout=RunoutModel(eccentricity=1.5e-6, seed=1), save_spectra=False)
    docs = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(xfct_tomo(mp, shape=(ROWS, SIZE), pixel_size=300e-9, n_angles=48, dwell=10e-3, order="golden"))
    events = [d["data"] for n, d in docs if n == "event" and f"{mp.scanner.name}_Zn" in d["data"]]
    theta = np.array([e[mp.rotation.name] for e in events])
    maps = {k: np.stack([e[k] for e in events]) for k in events[0] if np.ndim(events[0][k]) == 2}
    return theta, maps, mp.truth.offsets.copy(), specimen, docs


@pytest.fixture(scope="module")
def phantom(scan):
    full = phantom_zn(scan[3], ROWS, SIZE)
    return full, full > 0.02 * full.max()


def _score(volume, phantom):
    full, mask = phantom
    inner = slice(MARGIN, ROWS - MARGIN)  # rows the vertical runout keeps in the field
    from xfct_bluesky.dose_study import _register_to

    registered = _register_to(volume, full)[inner]
    return compare(registered, full[inner], mask[inner], register=False)


@pytest.mark.parametrize("algorithm, bound", [("mlem", 0.30), ("osem", 0.32), ("sirt", 0.38), ("fbp", 0.45)])
def test_every_algorithm_recovers_the_phantom_with_dpc_alignment(scan, phantom, algorithm, bound):
    theta, maps, truth, *_ = scan
    iterations = {"mlem": 10, "osem": 2, "sirt": 30, "fbp": None}[algorithm]
    rec = reconstruct_maps(maps, theta, algorithm=algorithm, iterations=iterations, align="dpc", phase=True)
    assert set(rec.volumes) == {"Zn", "phase"} and rec.volumes["Zn"].shape == (ROWS, SIZE, SIZE)
    assert rec.volumes["Zn"].dtype == np.float32
    nrmse, ssim = _score(rec.volumes["Zn"], phantom)
    assert nrmse < bound, (algorithm, nrmse, ssim)
    if algorithm in ("mlem", "osem"):
        assert rec.volumes["Zn"].min() >= 0  # Poisson methods keep non-negativity


def test_dpc_alignment_reconstructs_as_well_as_the_true_shifts_and_better_than_none(scan, phantom):
    theta, maps, truth, *_ = scan
    scores = {al: _score(reconstruct_maps(maps, theta, iterations=10, align=al, phase=False,
                                          true_offsets=truth).volumes["Zn"], phantom)[0]
              for al in ("truth", "dpc", "none")}
    assert scores["dpc"] < 1.1 * scores["truth"], scores
    assert scores["none"] > 1.3 * scores["truth"], scores  # the runout blurs an unaligned reconstruction


@pytest.mark.parametrize("kwargs, message", [
    ({"algorithm": "art"}, r"algorithm='art' is not known; allowed: 'fbp', 'sirt', 'mlem', 'osem'"),
    ({"iterations": 0}, r"iterations=0: allowed an integer >= 1\. For mlem"),
    ({"subsets": 0}, r"subsets=0: allowed an integer >= 1"),
    ({"align": "phase"}, r"align='phase' is not known; allowed: 'auto', 'dpc', 'zn', 'none', 'truth'"),
])
def test_bad_options_are_refused(kwargs, message):
    opts = {"algorithm": "mlem", "iterations": None, "subsets": 1, "align": "dpc", **kwargs}
    with pytest.raises(ValueError, match=message):
        check_options(**opts)


def test_bad_input_is_refused(scan):
    theta, maps, *_ = scan
    with pytest.raises(ValueError, match=r"element 'Xe' has no map in this run"):
        reconstruct_maps(maps, theta, elements=("Xe",))
    with pytest.raises(ValueError, match=r"theta has 1 angle\(s\); allowed: at least 2"):
        reconstruct_maps({k: v[:1] for k, v in maps.items()}, theta[:1])
    with pytest.raises(ValueError, match=r"align='truth' needs the simulator's true offsets"):
        reconstruct_maps(maps, theta, align="truth")


# ------------------------------------------------------------------ live, Tiled, replay
@pytest.fixture
def catalog(shared_tiled):
    return shared_tiled.catalog, shared_tiled.data_dir


def test_live_reconstruction_publishes_volumes_to_tiled_and_replays(microprobe, catalog):
    from tiled.queries import Key

    from xfct_bluesky.storage import make_tiled_writer

    cat, _ = catalog
    RE = RunEngine({})
    writer = SerialEmitter(make_tiled_writer(cat))  # the RunEngine's and the worker's one way into the writer
    RE.subscribe(writer)
    live = LiveReconstruction(emit=writer, elements=("Zn", "Fe"), iterations=5, preview_every=4)
    alignment = LiveDPCAlignment(emit=[writer, live])  # its derived run to Tiled and to the reconstruction
    RE.subscribe(alignment)
    RE.subscribe(live)
    (uid,) = RE(xfct_tomo(microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=16, dwell=2e-3, order="golden"))
    assert live.wait(60)
    assert live.errors == [] and alignment.errors == []
    assert live.preview is not None and live.preview.shape == (20, 20)  # the central slice shown live

    (derived,) = cat.search(Key("start.plan_name") == "xfct_reconstruction").search(
        Key("start.raw_uid") == uid).values()
    start = derived.metadata["start"]
    assert start["raw_uid"] == uid and start["alignment_source"] == "live dpc alignment"
    assert start["alignment_uid"] == alignment.results[uid]["derived_uid"]
    volumes = derived["primary"]
    stored = {k: np.asarray(volumes[k].read())[0] for k in ("Zn", "Fe", "phase")}
    mine = live.results[uid]["reconstruction"].volumes
    for key, volume in stored.items():
        assert volume.shape == (16, 20, 20) and volume.dtype == np.float32
        np.testing.assert_array_equal(volume, mine[key])
    np.testing.assert_allclose(np.asarray(derived["shifts"]["dx"].read()), alignment.results[uid]["shifts"][:, 1])

    # replay the stored raw run through a fresh pair of callbacks: the same volumes
    again = LiveReconstruction(elements=("Zn", "Fe"), iterations=5)
    again_alignment = LiveDPCAlignment(emit=again)
    for name, doc in cat[uid].documents():
        again_alignment(name, doc)
        again(name, doc)
    assert again.wait(60)
    assert again.results[uid]["alignment_source"] == "live dpc alignment"
    replayed = again.results[uid]["reconstruction"].volumes
    for key, volume in stored.items():
        np.testing.assert_allclose(replayed[key], volume, rtol=1e-4, atol=1e-4 * float(volume.max()))


def test_live_reconstruction_never_raises_into_the_run_engine(microprobe, caplog):
    live = LiveReconstruction(elements=("Zn",))
    RE = RunEngine({})
    RE.subscribe(live)

    def broken(name, doc):  # a malformed map reaches the callback
        if name == "event":
            live("event", {**doc, "data": {**doc["data"], "microprobe_scanner_Zn": "not a map"}})

    RE.subscribe(broken)
    (uid,) = RE(xfct_tomo(microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=4, dwell=1e-3))
    assert live.wait(60)
    assert uid  # the scan completed
    assert live.errors and "could not reconstruct" in caplog.text


# ------------------------------------------------------------------ the CLI
def test_cli_reconstruct_stores_volumes_and_writes_dxchange(microprobe, catalog, shared_tiled, tmp_path):
    from xfct_bluesky import cli
    from xfct_bluesky.storage import make_tiled_writer

    cat, data = catalog
    RE = RunEngine({})
    RE.subscribe(make_tiled_writer(cat))
    (uid,) = RE(xfct_tomo(microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=12, dwell=2e-3))
    uri = str(cat.context.api_uri).rstrip("/").removesuffix("/api/v1")
    key = ["--api-key", cat.context.api_key] if cat.context.api_key else []
    out, h5 = io.StringIO(), tmp_path / "recon.h5"
    with contextlib.redirect_stdout(out):
        code = cli.main(["reconstruct", uid[:8], "--uri", uri, *key, "--algorithm", "osem", "--iterations", "2",
                         "--elements", "Zn,Fe", "--dxchange", str(h5)])
    assert code == 0, out.getvalue()
    assert "stored as run" in out.getvalue()
    derived_uid = out.getvalue().split("stored as run ")[1].split()[0]
    from xfct_bluesky.storage import derived_runs

    assert derived_uid not in cat  # derived runs live apart from the scans: cat[-1] is still the scan
    (derived,) = derived_runs(shared_tiled.derived, uid, "xfct_reconstruction")
    assert derived.metadata["start"]["uid"] == derived_uid and cat[-1].metadata["start"]["uid"] == uid
    assert derived.metadata["start"]["raw_uid"] == uid and derived.metadata["start"]["algorithm"] == "osem"
    with h5py.File(h5) as f:
        assert f["exchange/data"].shape == (12, 16, 20) and f["exchange/theta"].shape == (12,)
        assert f["exchange/theta"].attrs["units"] == "deg"
        assert f["exchange/data"].attrs["description"].startswith("Zn fluorescence projections, aligned")
        assert f["process/reconstruction/algorithm"][()].decode() == "osem"
        assert f["process/reconstruction/raw_uid"][()].decode() == uid
        assert f["exchange/recon_Zn"].shape == (16, 20, 20) and "recon_phase" in f["exchange"]
        np.testing.assert_array_equal(f["exchange/recon_Fe"][()], np.asarray(derived["primary"]["Fe"].read())[0])


@pytest.mark.parametrize("argv, message", [
    (["--algorithm", "bogus"], "algorithm='bogus' is not known"),
    (["--iterations", "0"], "iterations=0: allowed an integer >= 1"),
    (["--elements", ","], "give at least one element"),
])
def test_cli_reconstruct_refuses_bad_options_before_reading(argv, message, capsys, tmp_path):
    from xfct_bluesky import cli

    assert cli.main(["reconstruct", "0123abcd", "--data-dir", str(tmp_path / "nothing"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()  # nothing opened, nothing written

