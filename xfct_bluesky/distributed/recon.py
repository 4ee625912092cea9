"""Reconstruction on a Dask cluster: one task per element and block of sinogram rows.

A parallel-beam slice depends only on its own detector row, so a
reconstruction splits into blocks of rows (:func:`row_blocks`, sized to
:data:`BLOCK_BYTES` of projections per task). Each task reads its rows of
the stack itself (:mod:`.sources`: an HDF5 dataset or a Tiled array, or a
block the driver sends when the stack is in memory), with a halo of
``ceil(max |dy|) + 1`` rows so that the vertical shifts of the alignment
are applied exactly as on the whole stack (linear interpolation reaches one
row beyond the shift), shifts it a few projections at a time into an array
of its own, reconstructs that with the serial code (:func:`reconstruct_one`,
FBP filtering it in place), and returns its block of slices: an FBP task
adds to its worker's idle memory about max(2 x data, data + volume) of its
block, and a few MB. The driver
releases each result as soon as it has it (the worker frees its copy) and
writes every block into a preallocated volume (and, with ``output``, into
an HDF5 file chunked by row block) as the tasks finish, by block index:
a task the cluster runs again (its worker died) cannot write twice, and
:class:`Report` counts the writes and each worker's peak memory.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import validate
from .cluster import connect
from .sources import read_block, shape_of

logger = logging.getLogger(__name__)

#: Times a block held in the driver's memory is sent before its loss (with its workers) fails the reconstruction.
SEND_ATTEMPTS = 3

#: Bytes of projections (float32) per task: ~100+ MB, as large as a worker holds comfortably three times.
BLOCK_BYTES = 128 * 1024 ** 2
#: Projections a task shifts at a time (its temporaries: this many projections of its block).
_SHIFT_BATCH = 16


def reconstruct_one(name: str, stack: np.ndarray, theta, *, center: float, algorithm: str, iterations: int,
                    subsets: int, projector: str, overwrite: bool = False) -> np.ndarray:
    """The volume of one aligned stack, as :func:`~xfct_bluesky.reconstruction.reconstruct_maps` makes it.

    The phase (``name == "phase"``) and ``algorithm="fbp"`` use FBP with the
    Shepp-Logan filter; SIRT as given; MLEM/OSEM on the counts clipped at 0
    (linear interpolation of counts >= 0 stays >= 0 but for float32 rounding).
    ``overwrite=True``: the caller gives ``stack`` up (a task's own block),
    which FBP then filters in place and MLEM clips in place, saving a copy
    of the data; by default ``stack`` is left unchanged.
    """
    from ..analysis import tomo

    if name == "phase" or algorithm == "fbp":
        return tomo.fbp(stack, theta, center=center, filter="shepp-logan", projector=projector,
                        overwrite_input=overwrite)
    if algorithm == "sirt":
        return tomo.sirt(stack, theta, iterations=iterations, center=center, projector=projector)
    clipped = np.clip(stack, 0, None, out=stack if overwrite else None)
    return tomo.mlem(clipped, theta, iterations=iterations, subsets=subsets, center=center, projector=projector)


def row_blocks(n_rows: int, n_angles: int, n_cols: int, *, block_rows: int | None = None,
               block_bytes: int = BLOCK_BYTES) -> list[tuple[int, int]]:
    """``[(r0, r1), ...]`` covering ``range(n_rows)``: ``block_rows`` rows each, or as many as fill ``block_bytes``."""
    if block_rows is None:
        block_rows = max(1, int(block_bytes) // (4 * n_angles * n_cols))
    block_rows = validate.integer("block_rows", block_rows, low=1, fix="Rows of the sinogram per task, e.g. 32")
    return [(r0, min(r0 + block_rows, n_rows)) for r0 in range(0, n_rows, block_rows)]


@dataclass
class Report:
    """What a distributed reconstruction did.

    Attributes
    ----------
    blocks : list of (name, r0, r1)
        The tasks, one per element (or phase) and block of rows.
    writes : dict of (name, r0) to int
        How many times each block was written: 1 each when nothing was lost or duplicated.
    discarded : int
        Results of a block already written (a task the cluster ran twice), not written again.
    resent : int
        Blocks sent from the driver again because the worker holding them died (their data lost with it).
    workers : dict of str to dict
        Per worker address: ``tasks``, ``base_rss`` (bytes at the start of its first task),
        ``peak_rss`` (the process's high-water mark as its last task ended, :func:`peak_rss`), ``seconds`` of work.
    block_bytes : dict of (name, r0) to int
        Bytes of each task's rows of projections (with its halo) and of its volume block.
    seconds : float
        Wall time of the distributed part.
    """

    blocks: list = field(default_factory=list)
    writes: dict = field(default_factory=dict)
    discarded: int = 0
    resent: int = 0
    workers: dict = field(default_factory=dict)
    block_bytes: dict = field(default_factory=dict)
    seconds: float = 0.0


def _threads_per_task(client) -> dict[str, int]:
    """Per worker host: numba threads per task (the host's cores over the Dask threads running on it)."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(os.cpu_count)
    busy: dict[str, int] = {}
    for w in info.values():
        busy[w["host"]] = busy.get(w["host"], 0) + int(w["nthreads"])
    out = {}
    for addr, w in info.items():
        out[w["host"]] = max(1, int(cores.get(addr) or 1) // max(busy[w["host"]], 1))
    return out


def _task(name, r0, r1, source, angle_index, shifts, theta, options, threads, before_task):
    """One block: read rows r0..r1 of ``source`` with a halo, shift, reconstruct; return it and the worker's memory."""
    import numba
    from distributed import get_worker

    from ..analysis.angles import angles_checked
    from ..analysis.shifts import apply_shifts

    t0 = time.perf_counter()
    worker = get_worker()
    base = _rss()
    if before_task is not None:
        before_task(name, r0)
    numba.set_num_threads(min(threads.get(worker.address.split("://")[-1].rsplit(":", 1)[0], 1),
                              numba.config.NUMBA_NUM_THREADS))
    n_rows = shape_of(source)[1]
    halo = _halo(shifts)
    lo, hi = max(0, r0 - halo), min(n_rows, r1 + halo)
    block = read_block(source, (slice(None), slice(lo, hi), slice(None)))
    read_bytes = 4 * shifts.shape[0] * (hi - lo) * block.shape[2]  # the rows of theta's projections, float32
    # Shifted a few projections at a time into the block's rows without the halo, a new array this task
    # owns (the source's block, maybe a view of scattered data, is never changed): the read block is freed
    # before the volume exists, and FBP filters the aligned rows in place, so the peak is max(read block
    # + aligned rows, aligned rows + volume) and a few MB, not also a shifted, a filtered and a bins-first
    # copy of the data as when each step made its own.
    aligned = np.empty((shifts.shape[0], r1 - r0, block.shape[2]), np.float32)
    for a0 in range(0, aligned.shape[0], _SHIFT_BATCH):
        a1 = min(a0 + _SHIFT_BATCH, aligned.shape[0])
        raw = block[a0:a1] if angle_index is None else block[angle_index[a0:a1]]
        aligned[a0:a1] = apply_shifts(np.asarray(raw, np.float32), shifts[a0:a1])[:, r0 - lo:r1 - lo]
    del block, raw
    with angles_checked():  # the driver has warned about the angles once
        volume = reconstruct_one(name, aligned, theta, overwrite=True, **options)
    del aligned
    peak = peak_rss()
    return {"name": name, "r0": r0, "volume": volume, "worker": worker.address, "base_rss": base,
            "peak_rss": peak, "seconds": time.perf_counter() - t0, "bytes": read_bytes + volume.nbytes}


def _halo(shifts: np.ndarray) -> int:
    """Rows beyond a block that its vertical shifts reach (linear interpolation: one more than the largest)."""
    return math.ceil(float(np.abs(shifts[:, 0]).max(initial=0.0))) + 1


def peak_rss() -> int:
    """This process's peak resident memory (bytes): Linux's ``VmHWM``, else ``getrusage``'s ``ru_maxrss``.

    Not ``ru_maxrss`` where ``VmHWM`` exists: Linux carries ``ru_maxrss`` across ``exec``, so a worker
    process spawned by a driver holding 1.5 GB reports at least 1.5 GB whatever it uses itself (a
    LocalCluster's workers are spawned by the driver); ``VmHWM`` is the process's own address space's.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux and BSD


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def reconstruct_stacks(stacks: Mapping, theta, *, shifts, center: float, client, algorithm: str = "mlem",
                       iterations: int = 10, subsets: int = 1, projector: str = "auto", angle_index=None,
                       block_rows: int | None = None, block_bytes: int = BLOCK_BYTES, output=None,
                       progress: Callable[[str], None] | None = None,
                       before_task: Callable | None = None) -> tuple[dict[str, np.ndarray], Report]:
    """Reconstruct stacks on a Dask cluster, one task per stack and block of rows.

    Parameters
    ----------
    stacks : mapping of str to source or array
        The raw (unaligned) ``(n_angles, n_rows, n_cols)`` stacks by name:
        :class:`~.sources.HDF5Array` or :class:`~.sources.TiledArray`
        (read by the workers), or numpy arrays (their blocks sent from here).
    theta : (n,) array
        Angles (degrees) of the projections reconstructed.
    shifts : (n, 2) array
        Finite (dy, dx) of those projections (the alignment's).
    center : float
        Rotation-axis column of the aligned projections.
    client : "local", distributed.Client or str
        The cluster (see :func:`.cluster.connect`).
    algorithm, iterations, subsets, projector
        As :func:`~xfct_bluesky.reconstruction.reconstruct_maps`.
    angle_index : (n,) int array, optional
        The projections of the stacks that ``theta`` are (the others left
        out); default all.
    block_rows : int, optional
        Rows per task; default as many as fill ``block_bytes`` of projections.
    output : path, optional
        Also write each volume into this HDF5 file (dataset per name, chunked by block), as blocks finish.
    progress : callable(str), optional
        Called with a line per block done.
    before_task : callable(name, r0), optional
        Called by each task on its worker before it reads (a picklable hook: the fault test's gate).

    Returns
    -------
    volumes : dict of str to (n_rows, n_cols, n_cols) float32 arrays
    report : Report
    """
    from distributed import as_completed

    theta = np.asarray(theta, float)
    shifts = validate.shifts(shifts, theta.size)
    shapes = {name: shape_of(src) for name, src in stacks.items()}
    index = None if angle_index is None else np.asarray(angle_index, np.int64)
    if index is not None and index.shape != theta.shape:
        raise ValueError(f"angle_index has {index.size} entries; it must give one projection per angle ({theta.size})")
    for name, shp in shapes.items():
        in_memory = isinstance(stacks[name], np.ndarray)
        need = theta.size if in_memory or index is None else int(index.max(initial=-1)) + 1
        if len(shp) != 3 or (shp[0] != need if in_memory or index is None else shp[0] < need):
            raise ValueError(f"stack {name!r} has shape {shp}; it must be (n_angles, n_rows, n_cols) with "
                             f"{'' if in_memory or index is None else 'at least '}{need} projections "
                             f"({theta.size} angles given{'' if index is None else ', angle_index'})")
    options = {"center": float(center), "algorithm": algorithm, "iterations": int(iterations),
               "subsets": int(subsets), "projector": projector}
    report = Report()
    volumes = {name: np.empty((shp[1], shp[2], shp[2]), np.float32) for name, shp in shapes.items()}
    say = progress or (lambda text: None)
    t0 = time.perf_counter()
    with connect(client) as dask_client, _Output(output, shapes) as out:
        threads = _threads_per_task(dask_client)
        halo = _halo(shifts)
        tasks: dict = {}  # future -> (name, r0, r1, the scattered block or None, times sent)

        def submit(name, r0, r1, sent=0):
            src = stacks[name]
            n_rows, n_cols = shapes[name][1:]
            if isinstance(src, np.ndarray):  # in memory: send this block (with its halo) only
                lo, hi = max(0, r0 - halo), min(n_rows, r1 + halo)
                part = dask_client.scatter(_Slab(np.ascontiguousarray(src[:, lo:hi]), lo, n_rows, n_cols))
                part_index, scattered = None, part  # the arrays hold the projections of theta only
            else:
                part, part_index, scattered = src, index, None
            fut = dask_client.submit(_task, name, r0, r1, part, part_index, shifts, theta, options, threads,
                                     before_task, key=f"xfct-recon-{name}-{r0}-{r1}-{os.getpid()}-"
                                                      f"{time.monotonic_ns()}", pure=False)
            tasks[fut] = (name, r0, r1, scattered, sent + 1)
            return fut

        futures = []
        for name, src in stacks.items():
            _, n_rows, n_cols = shapes[name]
            blocks = row_blocks(n_rows, theta.size, n_cols, block_rows=block_rows, block_bytes=block_bytes)
            out.create(name, blocks[0][1] - blocks[0][0])
            for r0, r1 in blocks:
                report.blocks.append((name, r0, r1))
                futures.append(submit(name, r0, r1))
        n_done = 0
        finished = as_completed(futures)
        for fut in finished:
            name, r0, r1, scattered, sent = tasks.pop(fut)
            try:
                res = fut.result()
            except Exception as err:
                # A block sent from here lives on one worker only: the scheduler reruns a task whose worker
                # died, but cannot remake the data of a dead worker; that task fails with its data lost.
                # The data is still here: send it again (a block read by the workers is rerun by Dask).
                if scattered is None or scattered.status == "finished" or sent >= SEND_ATTEMPTS:
                    raise
                logger.warning("block %s rows %d..%d: its data was lost with its worker (%s); sending it "
                               "again", name, r0, r1 - 1, type(err).__name__)
                report.resent += 1
                finished.add(submit(name, r0, r1, sent))
                continue
            # released as soon as it is here: the worker then frees its copy of the volume (which it would
            # otherwise hold while its next task reads and reconstructs) while this process writes it
            fut.release()
            key = (res["name"], res["r0"])
            if key in report.writes:
                report.discarded += 1
                continue
            r0 = res["r0"]
            volumes[res["name"]][r0:r0 + res["volume"].shape[0]] = res["volume"]
            out.write(res["name"], r0, res["volume"])
            report.writes[key] = report.writes.get(key, 0) + 1
            report.block_bytes[key] = res["bytes"]
            w = report.workers.setdefault(res["worker"], {"tasks": 0, "base_rss": res["base_rss"], "peak_rss": 0,
                                                          "seconds": 0.0})
            w["tasks"] += 1
            w["peak_rss"] = max(w["peak_rss"], res["peak_rss"])
            w["seconds"] += res["seconds"]
            n_done += 1
            say(f"block {n_done}/{len(futures)} done: {res['name']} rows {r0}..{r0 + res['volume'].shape[0] - 1} "
                f"on {res['worker']} ({res['seconds']:.1f} s)")
    report.seconds = time.perf_counter() - t0
    return volumes, report


@dataclass(frozen=True)
class _Slab:
    """Rows ``lo .. lo + len`` of an in-memory stack, read as the whole stack would be (for :func:`_task`)."""

    rows: np.ndarray
    lo: int
    n_rows: int
    n_cols: int

    @property
    def shape(self) -> tuple:
        return self.rows.shape[0], self.n_rows, self.n_cols

    def read(self, index: tuple) -> np.ndarray:
        angles, rows, cols = index
        return self.rows[angles, rows.start - self.lo:rows.stop - self.lo, cols]


class _Output:
    """The optional HDF5 file the driver writes the blocks into (one dataset per name, chunked by block)."""

    def __init__(self, path, shapes):
        self.path, self.shapes, self.file = path, shapes, None

    def __enter__(self):
        if self.path is not None:
            import h5py

            self.file = h5py.File(self.path, "w")
        return self

    def create(self, name: str, rows: int) -> None:
        if self.file is not None:
            _, n_rows, n = self.shapes[name]
            chunk_rows = max(1, min(rows, (1 << 31) // (4 * n * n)))
            self.file.create_dataset(name, (n_rows, n, n), np.float32, chunks=(chunk_rows, n, n))

    def write(self, name: str, r0: int, volume: np.ndarray) -> None:
        if self.file is not None:
            self.file[name][r0:r0 + volume.shape[0]] = volume
            self.file.flush()

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()
