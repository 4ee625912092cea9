"""Dask-distributed reconstruction and fitting (:mod:`xfct_bluesky.distributed`) on a real 2-worker LocalCluster.

One cluster for the module (two worker processes, one thread each, loopback, HTTP on a free port). The
distributed results are compared with the serial code's on the same data; the fault test kills a
worker process while its task runs (every task waits at a gate file until the kill is done, so the
kill always lands mid-task) and checks the block is redone, the volume equals the serial one, and
every block is written exactly once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import h5py
import numpy as np
import pytest

from xfct_bluesky.analysis import tomo
from xfct_bluesky.distributed import (
    HDF5Array,
    TiledArray,
    fit_on_cluster,
    reconstruct_stacks,
)
from xfct_bluesky.distributed.cluster import LOOPBACK_HTTP
from xfct_bluesky.reconstruction import reconstruct_maps

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the gate below runs on the workers

N_ANGLES, N_ROWS, N_COLS = 60, 24, 32


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=LOOPBACK_HTTP) as cluster, Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


@pytest.fixture(scope="module")
def tomography():
    """Poisson counts of a blob phantom (24 rows x 32 px, 60 angles over 180 deg), and the shifts (dy, dx)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:N_COLS, :N_COLS] - (N_COLS - 1) / 2
    zz = np.arange(N_ROWS)[:, None, None] - (N_ROWS - 1) / 2
    volume = (20 * np.exp(-((xx - 4) ** 2 + (yy + 3) ** 2) / 30 - zz ** 2 / 60)
              + 8 * (xx ** 2 + yy ** 2 < 100)).astype(np.float32)
    theta = np.linspace(0, 180, N_ANGLES, endpoint=False)
    counts = rng.poisson(np.clip(tomo.project(volume, theta), 0, None)).astype(np.float32)
    shifts = np.column_stack([rng.uniform(-1.6, 1.6, N_ANGLES), rng.uniform(-2, 2, N_ANGLES)])
    return counts, theta, shifts


def serial(counts, theta, shifts, **kw):
    return reconstruct_maps({"Zn": counts}, theta, elements=("Zn",), shifts=shifts, center=(N_COLS - 1) / 2,
                            phase=False, **kw).volumes["Zn"]


def test_blocks_of_rows_equal_the_serial_reconstruction(client, tomography, tmp_path):
    """4 row blocks read by the workers from an HDF5 file (the shifts moving rows across block edges) and
    written into an HDF5 output as they finish: MLEM equals the serial one (FBP: the Tiled test)."""
    counts, theta, shifts = tomography
    with h5py.File(tmp_path / "maps.h5", "w") as f:
        f["Zn"] = counts
    source = HDF5Array.open(tmp_path / "maps.h5", "Zn")
    for algorithm in ("mlem",):
        volumes, report = reconstruct_stacks({"Zn": source}, theta, shifts=shifts, center=(N_COLS - 1) / 2,
                                             client=client, algorithm=algorithm, iterations=5, block_rows=6,
                                             output=tmp_path / f"{algorithm}.h5")
        expected = serial(counts, theta, shifts, algorithm=algorithm, iterations=5)
        assert len(report.blocks) == 4 and set(report.writes.values()) == {1}
        np.testing.assert_allclose(volumes["Zn"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        with h5py.File(tmp_path / f"{algorithm}.h5") as f:
            np.testing.assert_array_equal(f["Zn"][()], volumes["Zn"])
    assert len(report.workers) == 2, report.workers  # both workers took blocks
    assert all(w["peak_rss"] >= w["base_rss"] > 0 for w in report.workers.values())


def test_reconstruct_maps_with_a_client_equals_serial_and_leaves_out_nan_shifts(client, tomography):
    """Through reconstruct_maps, the stack in memory (sent by block): a projection with NaN shifts is left
    out on both paths, with the same warning, and the volumes agree."""
    from xfct_bluesky.analysis.exceptions import ReconstructionWarning

    counts, theta, shifts = tomography
    shifts = shifts.copy()
    shifts[7] = np.nan
    with pytest.warns(ReconstructionWarning, match="1 of the 60 projections are left out"):
        rec = reconstruct_maps({"Zn": counts}, theta, elements=("Zn",), shifts=shifts, center=(N_COLS - 1) / 2,
                               phase=False, algorithm="sirt", iterations=8, client=client)
    with pytest.warns(ReconstructionWarning, match="1 of the 60 projections are left out"):
        expected = serial(counts, theta, shifts, algorithm="sirt", iterations=8)
    assert rec.excluded == (7,)
    np.testing.assert_allclose(rec.volumes["Zn"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_workers_read_a_tiled_array_themselves(client, tomography, shared_tiled):
    """A stack stored in the suite's Tiled server, read by the workers by URI and API key (not shown)."""
    counts, theta, shifts = tomography
    node = shared_tiled.client.write_array(counts, key=f"distributed-{os.getpid()}")
    source = TiledArray.of(node)
    assert source.api_key and source.api_key not in repr(source)
    volumes, report = reconstruct_stacks({"Zn": source}, theta, shifts=shifts, center=(N_COLS - 1) / 2,
                                         client=client, algorithm="fbp", block_rows=12)
    expected = serial(counts, theta, shifts, algorithm="fbp")
    np.testing.assert_allclose(volumes["Zn"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert sorted(report.writes) == [("Zn", 0), ("Zn", 12)]


class Gate:
    """The fault test's hook: each task records that it started (name, first row, worker PID), then waits
    until ``release`` exists."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, name, r0):
        (self.folder / f"started-{name}-{r0}-{os.getpid()}-{time.monotonic_ns()}").touch()
        deadline = time.monotonic() + 60
        while not (self.folder / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the fault test never released the gate")
            time.sleep(0.02)


@pytest.mark.parametrize("where", ["hdf5", "memory"])
def test_a_worker_killed_mid_task_loses_and_duplicates_nothing(client, tomography, tmp_path, where):
    """Read by the workers (HDF5), a killed worker's task is rerun by Dask; sent from the driver (an array in
    memory), its block died with the worker and is sent again."""
    counts, theta, shifts = tomography
    if where == "hdf5":
        with h5py.File(tmp_path / "maps.h5", "w") as f:
            f["Zn"] = counts
        source = HDF5Array.open(tmp_path / "maps.h5", "Zn")
    else:
        source = counts
    gate = tmp_path / "gate"
    gate.mkdir()
    killed = {}

    def kill_one_running_task():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = sorted(gate.glob("started-*"))
            pids = {int(p.name.split("-")[3]) for p in started}
            if len(pids) == 2:  # both workers are inside a task, waiting at the gate
                victim = started[0]
                killed["block"] = int(victim.name.split("-")[2])
                killed["pid"] = int(victim.name.split("-")[3])
                os.kill(killed["pid"], signal.SIGKILL)
                break
            time.sleep(0.02)
        (gate / "release").touch()

    killer = threading.Thread(target=kill_one_running_task)
    killer.start()
    try:
        volumes, report = reconstruct_stacks({"Zn": source}, theta, shifts=shifts, center=(N_COLS - 1) / 2,
                                             client=client, algorithm="mlem", iterations=5, block_rows=6,
                                             before_task=Gate(gate))
    finally:
        killer.join()
    assert killed, "the kill never happened: the two workers were not both inside a task"
    starts = [p.name.split("-") for p in gate.glob("started-*")]
    redone = [s for s in starts if int(s[2]) == killed["block"]]
    # the killed block started twice: on the killed worker, then again on a live one
    assert len(redone) == 2 and {int(s[3]) for s in redone} - {killed["pid"]}, redone
    assert report.writes == {("Zn", r0): 1 for r0 in (0, 6, 12, 18)}  # nothing lost, nothing written twice
    assert report.discarded == 0
    if where == "hdf5":
        assert report.resent == 0  # nothing to send: Dask reran the task, which reads its rows itself
    else:  # the killed worker's block, and the one block more that may have been scattered to it to wait
        assert 1 <= report.resent <= 2, report.resent
    expected = serial(counts, theta, shifts, algorithm="mlem", iterations=5)
    np.testing.assert_allclose(volumes["Zn"], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    client.wait_for_workers(2, timeout=30)  # the nanny restarted the killed worker for the next tests


def test_fit_over_blocks_of_rows_equals_the_serial_fit(client):
    from xfct_bluesky.analysis import fit_spectra
    from xfct_bluesky.analysis.fitting import Calibration, build_basis

    truth = Calibration(f_tail=0.01, f_step=0.005, compton_f_tail=0.05, compton_angle=90.1)
    n_channels = 2048
    energy = truth.energy(np.arange(n_channels))
    elements = ("K", "Ca", "Fe", "Cu", "Zn")
    basis = build_basis(truth, elements, n_channels, slice(0, n_channels), background=1)
    rng = np.random.default_rng(5)
    amplitudes = {"K": 40, "Ca": 60, "Fe": 30, "Cu": 8, "Zn": 25, "elastic": 300, "compton": 900,
                  "background": 200}
    lam = basis.matrix @ np.array([amplitudes.get(n, 0.0) for n in basis.names])
    spectra = rng.poisson(np.broadcast_to(lam, (8, 10, n_channels))).astype(np.uint16)
    kw = {"calibration": truth}  # the basis from the summed spectrum of all blocks (background "summed")
    expected = fit_spectra(spectra, energy, elements, **kw)
    for got in (fit_on_cluster(client, spectra, energy, elements, block_rows=3, **kw),  # 3 blocks of rows
                fit_on_cluster(client, spectra, energy, elements, **kw)):  # blocks of BLOCK_BYTES: one here
        assert got.calibration == expected.calibration
        for name in elements:
            np.testing.assert_allclose(got.counts[name], expected.counts[name], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(got.sigma[name], expected.sigma[name], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.deviance, expected.deviance, rtol=1e-9, atol=1e-9)


def test_cli_reconstruct_on_the_scheduler_reads_the_run_from_tiled(client, microprobe, shared_tiled):
    """``xfct-bluesky reconstruct --scheduler ADDR``: the workers read the run's Zn map from Tiled
    (``tiled_sources``); the stored volume equals the serial reconstruction of the same run."""
    import contextlib
    import io

    from bluesky import RunEngine

    from xfct_bluesky import cli
    from xfct_bluesky.plans import xfct_tomo
    from xfct_bluesky.reconstruction import reconstruct_tomo
    from xfct_bluesky.storage import derived_runs, load_tomo, make_tiled_writer

    cat = shared_tiled.catalog
    RE = RunEngine({})
    RE.subscribe(make_tiled_writer(cat))
    (uid,) = RE(xfct_tomo(microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=12, dwell=2e-3))
    uri = str(cat.context.api_uri).rstrip("/").removesuffix("/api/v1")
    key = ["--api-key", cat.context.api_key] if cat.context.api_key else []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["reconstruct", uid[:8], "--uri", uri, *key, "--algorithm", "fbp", "--align", "none",
                         "--center", "9.5", "--scheduler", client.scheduler.address])
    assert code == 0, out.getvalue()
    assert "on Dask" in out.getvalue() and "block 1/2 done" in out.getvalue()  # Zn and the phase
    (derived,) = derived_runs(shared_tiled.derived, uid, "xfct_reconstruction")
    stored = np.asarray(derived["primary"]["Zn"].read())[0]
    expected = reconstruct_tomo(load_tomo(cat[uid]), algorithm="fbp", align="none", center=9.5).volumes["Zn"]
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_a_spawned_workers_peak_is_its_own_not_its_parents():
    """A process spawned by a parent holding 400 MB reports its own peak (VmHWM), not the parent's RSS
    that getrusage's ru_maxrss carries across exec (which made a LocalCluster's workers report the driver's
    memory as theirs)."""
    import multiprocessing
    import resource
    from concurrent.futures import ProcessPoolExecutor

    from xfct_bluesky.distributed.recon import peak_rss

    held = np.ones(400_000_000 // 8)  # touched: resident
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        peak = pool.submit(peak_rss).result(timeout=120)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > held.nbytes
    assert peak < held.nbytes / 2  # the child imports numpy and the package: ~60-110 MB
