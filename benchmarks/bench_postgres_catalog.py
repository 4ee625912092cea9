"""Benchmark: the same tomography written and read back through a SQLite and a PostgreSQL catalog.

For each catalog, an embedded Tiled server on a fresh data folder (SQLite:
``tiled/catalog.db`` and DuckDB tables; PostgreSQL: the catalog and the
tables in a database of a throwaway cluster on loopback, the arrays in the
folder), a RunEngine with ``make_tiled_writer``, ``xfct_tomo`` on the
simulated microprobe. Printed per catalog: the server's start (the first
one pays the imports), acquisition + write of the run, ``load_tomo`` (median
of ``--repeat``), a search on the start document among ``--runs`` small
runs, and a check that the maps read back are the same on both catalogs.

The cluster is the tests' (``tests/servers.py`` ``start_postgres``: Debian's
PostgreSQL run as a non-root user, fsync off); ``--catalog URI`` uses an
existing database instead (its password from PGPASSWORD or ~/.pgpass).

Run: ``nice .venv/bin/python benchmarks/bench_postgres_catalog.py [--n-angles 90] [--size 64] [--runs 20]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PIXEL = 300e-9
DWELL = 1e-3


@contextlib.contextmanager
def postgres_database(given: str | None):
    """A database URI (its password in the environment for the duration), the given one or a throwaway one."""
    if given:
        yield given
        return
    import servers

    with tempfile.TemporaryDirectory() as tmp:
        pg = servers.start_postgres(Path(tmp))
        previous = os.environ.get("PGPASSFILE")
        os.environ["PGPASSFILE"] = str(pg.pgpass)
        try:
            yield pg.create_database("bench")
        finally:
            servers.stop_postgres(pg)
            if previous is None:
                os.environ.pop("PGPASSFILE", None)
            else:
                os.environ["PGPASSFILE"] = previous


def run_one(label: str, catalog_uri: str | None, args) -> dict[str, np.ndarray]:
    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd.sim import det
    from tiled.client import from_uri
    from tiled.queries import Key

    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.plans.xrf import xfct_tomo
    from xfct_bluesky.storage import (
        embedded_server,
        load_tomo,
        make_tiled_writer,
        runs_container,
    )
    from xfct_bluesky.storage.folder import ASSETS_SUBDIR

    shape = (args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        with embedded_server(data_dir, catalog=catalog_uri) as server:
            start = time.perf_counter() - t0
            client = from_uri(server.uri)
            try:
                catalog = runs_container(client)
                RE = RunEngine({})
                RE.subscribe(make_tiled_writer(catalog))
                mp = make_sim_microprobe(shape=shape, seed=0, hdf5_directory=data_dir / ASSETS_SUBDIR,
                                         save_spectra=False)
                t0 = time.perf_counter()
                (uid,) = RE(xfct_tomo(mp, shape=shape, pixel_size=PIXEL, n_angles=args.n_angles, dwell=DWELL,
                                      md={"sample": "bench"}))
                write = time.perf_counter() - t0
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    tomo = load_tomo(catalog[uid])
                    times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for i in range(args.runs):
                    RE(bp.count([det], 3), sample=f"small {i}")
                small = (time.perf_counter() - t0) / max(args.runs, 1)
                searches = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    found = list(catalog.search(Key("start.sample") == f"small {args.runs // 2}"))
                    searches.append(time.perf_counter() - t0)
                assert len(found) == 1, found
                mb = sum(a.nbytes for a in tomo.maps.values()) / 1e6
                print(f"{label:10s}  start {start:5.1f} s   write {write:6.1f} s ({args.n_angles} x {shape[0]}x{shape[1]})"
                      f"   load_tomo {statistics.median(times):5.2f} s ({mb:.0f} MB)   a 3-event run "
                      f"{small:5.2f} s   search of {args.runs + 1} runs {statistics.median(searches) * 1e3:5.0f} ms",
                      flush=True)
                return dict(tomo.maps)
            finally:
                client.context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-angles", type=int, default=90)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20, help="small runs written before the search")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--catalog", help="an existing PostgreSQL database (default: a throwaway cluster)")
    args = parser.parse_args()
    sqlite = run_one("sqlite", None, args)
    with postgres_database(args.catalog) as uri:
        postgres = run_one("postgresql", uri, args)
    same = sqlite.keys() == postgres.keys() and all(np.array_equal(sqlite[k], postgres[k]) for k in sqlite)
    print(f"maps read back identical on both catalogs: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
