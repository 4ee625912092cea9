"""Benchmark: reconstruction at scale, serial vs Dask workers, and our matrix-free FBP vs astra-toolbox (CPU).

One run measures

1. our matrix-free FBP (``tomo.fbp(..., projector="matrix-free")``, numba on all cores) against
   astra-toolbox's CPU FBP (the ``linear`` projector, slice by slice; set up as in
   ``bench_reconstruction.py``, whose ``Astra`` class this reuses) at 230 and 1024 px, 720 angles
   (astra on ``--astra-slices`` slices at 1024 px, its time scaled to the volume, said so);
2. a ``--rows``-row x 1024 x 1024 FBP with 720 angles: serial (in this process), and on a
   LocalCluster of 1 and of 2 worker processes (:func:`xfct_bluesky.distributed.reconstruct_stacks`,
   the workers reading their own row blocks from an HDF5 file chunked by block), with each
   worker's peak memory (its own high-water mark over the run, ``VmHWM``) against its block of data + volume,
   both as peak / block (the goal) and (peak - idle) / block (what the tasks add to a worker's idle RSS);
3. the rates a cost model rests on (back- and forward-projection updates per core-second, HDF5 read
   rate), and the model for 2000 x 2000 px x 1000 angles x 10 elements (FBP and 10 MLEM iterations):
   core-hours, memory per worker, I/O volume.

The projections are the exact line integrals of the 3D Shepp-Logan phantom of
``bench_reconstruction.py`` (no noise). Goals (issue 16): matrix-free FBP >= 8x astra's CPU FBP at
720 angles; peak memory per worker within 3x of its block of data + volume.

Run: ``nice .venv/bin/python benchmarks/bench_scale.py [--n 1024] [--rows 64] [--angles 720]``
(about 10-15 minutes on a quiet 2-core machine at the default size; ``--n 256 --rows 16`` ~1 min).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
from bench_reconstruction import Astra, projections

from xfct_bluesky.analysis import tomo
from xfct_bluesky.analysis.projector import MatrixFreeOperator
from xfct_bluesky.distributed import HDF5Array, reconstruct_stacks
from xfct_bluesky.distributed.recon import peak_rss

FBP_GOAL = 8.0
MEMORY_GOAL = 3.0


class RSSSampler:
    """This process's RSS as the block starts (``start``) and its highest while it runs (``peak``, sampled
    every 5 ms: getrusage's high-water mark would be the whole benchmark's, astra's stacks included)."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def fbp_vs_astra(n, n_rows, n_angles, astra_slices):
    """(our time, astra's time scaled to n_rows, slices astra ran, max |ours - astra| / max)."""
    theta = np.linspace(0, 180, n_angles, endpoint=False)
    stack = projections(n, n_rows, np.arange(n_rows), theta, (n - 1) / 2)
    tomo.fbp(stack[:, :1], theta, projector="matrix-free")  # compile or load the kernels
    t0 = time.perf_counter()
    ours = tomo.fbp(stack, theta, projector="matrix-free")
    t_ours = time.perf_counter() - t0
    rows = np.unique(np.linspace(0, n_rows - 1, min(astra_slices, n_rows)).round().astype(int))
    ast = Astra(n, theta)
    ast.fbp(stack[:, rows[0]])  # warm-up
    t0 = time.perf_counter()
    rec_a = np.stack([ast.fbp(stack[:, r]) for r in rows])
    t_astra = (time.perf_counter() - t0) * n_rows / rows.size
    ast.close()
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disc = yy ** 2 + xx ** 2 <= (0.45 * n) ** 2
    diff = float(np.abs(ours[rows][:, disc] - rec_a[:, disc]).max() / np.abs(rec_a[:, disc]).max())
    return t_ours, t_astra, rows.size, diff, stack, theta


def distributed_run(path, stack_shape, theta, n_workers, block_rows):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers)
        source = HDF5Array.open(path, "stack")
        zero = np.zeros((theta.size, 2))
        # warm-up: the workers load the numba kernels (compiled once, cached) on one row each
        tiny = np.zeros((theta.size, n_workers, stack_shape[2]), np.float32)
        reconstruct_stacks({"w": tiny}, theta, shifts=zero, center=(stack_shape[2] - 1) / 2, client=client,
                           algorithm="fbp", projector="matrix-free", block_rows=1)
        t0 = time.perf_counter()
        volumes, report = reconstruct_stacks({"s": source}, theta, shifts=zero, center=(stack_shape[2] - 1) / 2,
                                             client=client, algorithm="fbp", projector="matrix-free",
                                             block_rows=block_rows)
        wall = time.perf_counter() - t0
        # each worker's high-water mark over the whole run, sending its results included (the report's
        # peak_rss is read as a task ends, before the volume leaves); VmHWM, not getrusage: a spawned
        # worker's ru_maxrss starts at this process's RSS when it was spawned (Linux keeps it across exec)
        high = client.run(peak_rss)
    return wall, volumes["s"], report, high


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024, help="columns (and volume side)")
    parser.add_argument("--rows", type=int, default=64, help="sinogram rows (slices)")
    parser.add_argument("--angles", type=int, default=720)
    parser.add_argument("--small", type=int, default=230, help="the second size of the astra comparison")
    parser.add_argument("--astra-slices", type=int, default=8, help="slices astra runs at --n (time scaled)")
    parser.add_argument("--block-rows", type=int, default=None, help="rows per Dask task (default rows / 2)")
    parser.add_argument("--fbp-only", action="store_true", help="only the comparison with astra-toolbox")
    args = parser.parse_args(argv)
    n, n_rows, n_angles = args.n, args.rows, args.angles
    block_rows = args.block_rows or max(1, n_rows // 2)
    print(f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results = []
    for size, rows, k_astra in ((args.small, n_rows, n_rows), (n, n_rows, args.astra_slices)):
        t_ours, t_astra, ran, diff, stack, theta = fbp_vs_astra(size, rows, n_angles, k_astra)
        results.append((size, rows, t_ours, t_astra, ran, diff))
        print(f"FBP {rows} x {size} x {size}, {n_angles} angles: ours (matrix-free) {t_ours:.2f} s, astra CPU "
              f"{t_astra:.2f} s ({ran} slices, scaled): {t_astra / t_ours:.1f}x; max |ours - astra| "
              f"{diff:.1e} of astra's max")
    if args.fbp_only:
        return 0 if all(t_a / t_o >= FBP_GOAL for *_, t_o, t_a, _, _ in results) else 1
    # stack and theta are now the large case's
    # rates: the back-projection's from the FBP above (filter included), the forward's on a few slices
    fwd_rows = min(n_rows, 8)
    op = MatrixFreeOperator(n, theta, (n - 1) / 2)
    op.forward(np.ones((1, n, n), np.float32))
    t0 = time.perf_counter()
    op.forward(np.ones((fwd_rows, n, n), np.float32))
    t_fwd = time.perf_counter() - t0
    cores = os.cpu_count() or 1
    t_back = results[-1][2]
    rate_back = n_rows * n * n * n_angles / (t_back * cores)
    rate_fwd = fwd_rows * n * n * n_angles / (t_fwd * cores)
    print(f"FBP {t_back:.2f} s ({n_rows} slices), forward projection {t_fwd:.2f} s ({fwd_rows} slices): "
          f"{rate_back / 1e9:.3f} and {rate_fwd / 1e9:.3f} G pixel-angle updates per core-second")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.h5"
        t0 = time.perf_counter()
        with h5py.File(path, "w") as f:
            f.create_dataset("stack", data=stack, chunks=(n_angles, block_rows, n))
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        HDF5Array.open(path, "stack").read((slice(None), slice(0, block_rows), slice(None)))
        t_read = time.perf_counter() - t0
        read_rate = n_angles * block_rows * n * 4 / t_read
        print(f"HDF5: wrote {stack.nbytes / 1e6:.0f} MB in {t_write:.2f} s; read a block of {block_rows} rows "
              f"({n_angles * block_rows * n * 4 / 1e6:.0f} MB) at {read_rate / 1e6:.0f} MB/s")
        with RSSSampler() as sampled:
            t0 = time.perf_counter()
            serial = tomo.fbp(stack, theta, filter="shepp-logan", projector="matrix-free")
            t_serial = time.perf_counter() - t0
        runs = [("serial", t_serial, None, sampled.peak, sampled.start)]
        for workers in (1, 2):
            wall, volume, report, high = distributed_run(path, stack.shape, theta, workers, block_rows)
            diff = float(np.abs(volume - serial).max() / np.abs(serial).max())
            runs.append((f"{workers} worker{'s' * (workers > 1)}", wall, report, diff, high))
    data_block = n_angles * block_rows * n * 4
    vol_block = block_rows * n * n * 4
    block = data_block + vol_block
    print(f"\n== {n_rows} x {n} x {n}, {n_angles} angles, FBP (Shepp-Logan), matrix-free; Dask blocks of "
          f"{block_rows} rows: {data_block / 1e6:.0f} MB of data + {vol_block / 1e6:.0f} MB of volume = "
          f"{block / 1e6:.0f} MB ==")
    print("peak: a worker's RSS high-water mark over the run (VmHWM, its results' sending included); idle: its "
          "RSS as its first task starts (Python, Dask, numpy/scipy, numba's kernels loaded). The goal (issue 16) is "
          f"peak / block <= {MEMORY_GOAL:.0f}x; (peak - idle) / block is what the tasks themselves add.")
    header = (f"{'run':<10} | {'wall s':>7} | {'peak MB':>9} | {'idle MB':>7} | {'peak / block':>12} | "
              f"{'(peak - idle) / block':>21} | vs serial")
    print(header)
    print("-" * len(header))
    ok_memory = True
    for name, wall, report, extra, high in runs:
        if report is None:
            print(f"{name:<10} | {wall:7.2f} | {extra / 1e6:9.0f} | {high / 1e6:7.0f} | {'-':>12} | "
                  f"{(extra - high) / block:20.2f}x | (this process, sampled; its {n_rows}-row stack and volume: "
                  f"{n_rows // block_rows} blocks)")
            continue
        for i, (addr, w) in enumerate(sorted(report.workers.items())):
            peak = max(w["peak_rss"], high.get(addr, 0))
            ratio, above = peak / block, (peak - w["base_rss"]) / block
            ok_memory &= ratio <= MEMORY_GOAL
            print(f"{name:<10} | {wall:7.2f} | {peak / 1e6:9.0f} | {w['base_rss'] / 1e6:7.0f} | {ratio:11.2f}x | "
                  f"{above:20.2f}x | {runs[0][1] / wall:.2f}x faster; worker {i + 1} ({addr.rsplit(':', 1)[-1]}): "
                  f"{w['tasks']} task(s); max |diff| {extra:.1e}")
    print("\n== matrix-free FBP vs astra-toolbox CPU FBP (ramp), 720 angles ==")
    ok_fbp = True
    for size, rows, t_ours, t_astra, ran, diff in results:
        ok = t_astra / t_ours >= FBP_GOAL
        ok_fbp &= ok
        print(f"{rows:>4} x {size:>4} x {size:<4} | ours {t_ours:7.2f} s | astra {t_astra:8.2f} s ({ran} slices, "
              f"scaled) | {t_astra / t_ours:5.1f}x | >= {FBP_GOAL:.0f}x: {'met' if ok else 'MISSED'}")
    print(f"peak memory per worker <= {MEMORY_GOAL:.0f}x its block of data + volume (peak / block above): "
          f"{'met' if ok_memory else 'MISSED'}")
    cost_model(rate_back, rate_fwd, read_rate)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0 if ok_fbp and ok_memory else 1


def cost_model(rate_back, rate_fwd, read_rate, n=2000, n_rows=2000, n_angles=1000, elements=10, block_mb=128,
               mlem_iterations=10):
    """Core-hours, memory per worker and I/O of a 2000 x 2000 px x 1000 angles x 10 elements reconstruction."""
    updates = n_rows * n * n * n_angles * elements
    fbp_h = updates / rate_back / 3600
    mlem_h = mlem_iterations * updates * (1 / rate_back + 1 / rate_fwd) / 3600
    data = n_angles * n_rows * n * 4 * elements
    volume = n_rows * n * n * 4 * elements
    rows = max(1, block_mb * 2 ** 20 // (n_angles * n * 4))
    block = n_angles * rows * n * 4 + rows * n * n * 4
    tasks = elements * -(-n_rows // rows)
    print(f"\n== cost model: {n_rows} rows x {n} x {n} px, {n_angles} angles, {elements} elements ==")
    print(f"rates measured here: back-projection {rate_back / 1e9:.2f}, forward {rate_fwd / 1e9:.2f} G updates "
          f"per core-second; HDF5 read {read_rate / 1e6:.0f} MB/s (local disk)")
    print(f"FBP: {updates:.2e} updates -> {fbp_h:.0f} core-hours; MLEM x {mlem_iterations}: {mlem_h:.0f} core-hours")
    print(f"tasks: {tasks} ({rows} rows each): {n_angles * rows * n * 4 / 1e6:.0f} MB data + "
          f"{rows * n * n * 4 / 1e6:.0f} MB volume; memory per worker <= 3x = {3 * block / 1e9:.1f} GB")
    print(f"I/O: read {data / 1e9:.0f} GB of projections once, write {volume / 1e9:.0f} GB of volumes; at "
          f"{read_rate / 1e6:.0f} MB/s per worker the reads take {data / read_rate / 3600:.2f} worker-hours")


if __name__ == "__main__":
    raise SystemExit(main())
