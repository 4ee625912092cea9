"""A Tiled catalog in PostgreSQL: the URI's checks, the server's errors, ``xfct-bluesky serve --catalog``.

The round trip itself (write, search, ``load_tomo``, replay) runs on PostgreSQL in ``test_storage.py``
(its ``store`` fixture). The tests here that need a server use ``postgres_server`` (a throwaway cluster on
loopback; skipped without PostgreSQL, failed under ``CI=true``); the others need none.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from servers import CONSOLE_SCRIPT, free_port, group_pids, start_server, stop_process

from xfct_bluesky import cli
from xfct_bluesky.storage.folder import prepare_data_folder
from xfct_bluesky.storage.postgres import (
    CatalogURIError,
    check_catalog_uri,
    prepare_catalog,
    redact,
    tables_uri,
)


# --------------------------------------------------------------------------- the URI, without a server
def test_catalog_uri_forms():
    assert check_catalog_uri("postgres://tiled@db.example.org:5433/xfct") == "postgresql://tiled@db.example.org:5433/xfct"
    assert check_catalog_uri("postgresql://db/xfct?sslmode=require") == "postgresql://db/xfct?sslmode=require"
    refused = {
        "sqlite:///catalog.db": "not a PostgreSQL URI",
        "postgresql+psycopg://u@db/xfct": "the driver 'psycopg'",
        "postgresql://u:s3cret@db/xfct": "the URI holds a password",
        "postgresql:///xfct": "no host",
        "postgresql://u@db:5432/": "no database name",
        "postgresql://u@db:99999/xfct": "the port is not a number in 1-65535",
        "postgresql://u@db:port/xfct": "the port is not a number in 1-65535",
    }
    for uri, message in refused.items():
        with pytest.raises(CatalogURIError, match=message) as info:
            check_catalog_uri(uri, option="--catalog")
        assert "s3cret" not in str(info.value) and str(info.value).startswith("--catalog ")
    assert redact("postgresql://u:s3cret@db:5432/xfct") == "postgresql://u:***@db:5432/xfct"
    # tiled's table storage would send the password "None" for a user without one: the user goes in the query
    assert tables_uri("postgresql://tiled@db:5432/xfct?sslmode=require") == "postgresql://db:5432/xfct?sslmode=require&user=tiled"


def test_serve_refuses_a_bad_catalog_before_writing(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli.main(["serve", "--data-dir", str(data), "--catalog", "postgresql://xfct:s3cret@127.0.0.1/xfct"]) == 2
    err = capsys.readouterr().err
    assert "PGPASSWORD" in err and "~/.pgpass" in err and "s3cret" not in err and "xfct:***@" in err
    port = free_port()  # nothing listens there
    assert cli.main(["serve", "--data-dir", str(data), "--catalog", f"postgresql://xfct@127.0.0.1:{port}/xfct"]) == 1
    err = capsys.readouterr().err
    assert f"no PostgreSQL server answers at 127.0.0.1:{port}" in err and "start it" in err
    assert len(err.strip().splitlines()) == 1, err
    assert not data.exists()  # refused before anything was written


# --------------------------------------------------------------------------- a server's refusals
def _execute(pg, database: str, statement: str) -> list:
    import asyncpg

    async def run():
        con = await asyncpg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password,
                                    database=database)
        try:
            return await con.fetch(statement)
        finally:
            await con.close()

    return asyncio.run(run())


def test_refusals_name_the_database_and_the_fix(postgres_server, tmp_path, monkeypatch):
    pg = postgres_server
    data = tmp_path / "data"
    monkeypatch.setenv("PGPASSWORD", pg.password)
    with pytest.raises(CatalogURIError, match=r"has no database 'missing'; create it \(createdb -h 127.0.0.1"):
        prepare_data_folder(data, catalog=pg.uri("missing"))
    monkeypatch.setenv("PGPASSWORD", "wrong-password")
    with pytest.raises(CatalogURIError, match="refused the user xfct") as info:
        prepare_data_folder(data, catalog=pg.uri())
    assert "wrong-password" not in str(info.value) and "PGPASSWORD" in str(info.value)
    assert not data.exists()  # nothing written by either
    monkeypatch.setenv("PGPASSWORD", pg.password)
    other = pg.create_database("other_application")
    _execute(pg, "other_application", "CREATE TABLE samples (id integer)")
    with pytest.raises(CatalogURIError, match=r"holds tables \(public.samples, \.\.\.\) but no Tiled catalog"):
        prepare_catalog(other)  # as the server does when it starts
    assert _execute(pg, "other_application", "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = 'public'")[0][0] == 1  # nothing created in another application's database


def test_catalog_initialised_once(postgres_server, tmp_path, monkeypatch):
    """A new database gets tiled's schema and stamp; opening it again changes nothing (idempotent)."""
    from tiled.catalog.core import REQUIRED_REVISION

    pg = postgres_server
    monkeypatch.setenv("PGPASSFILE", str(pg.pgpass))  # the password file route (the other tests: PGPASSWORD)
    database = pg.create_database("initialised_once")
    folder = prepare_data_folder(tmp_path / "data", catalog=database)
    assert folder.database == database and not folder.catalog_path.exists()  # no SQLite catalog in the folder
    assert (tmp_path / "data" / "tiled" / "data").is_dir() and (tmp_path / "data" / "assets").is_dir()
    assert prepare_catalog(database) == database  # as the server does when it starts
    stamp = _execute(pg, "initialised_once", "SELECT version_num FROM alembic_version")
    _execute(pg, "initialised_once", "INSERT INTO nodes (parent, key, structure_family, metadata, specs) "
             "VALUES (0, 'kept', 'container', '{}', '[]')")
    prepare_catalog(database)
    assert _execute(pg, "initialised_once", "SELECT version_num FROM alembic_version") == stamp
    assert stamp[0][0] == REQUIRED_REVISION
    assert [r[0] for r in _execute(pg, "initialised_once", "SELECT key FROM nodes WHERE key = 'kept'")] == ["kept"]


# --------------------------------------------------------------------------- xfct-bluesky serve --catalog
def test_serve_on_a_postgresql_catalog(postgres_server, tmp_path, monkeypatch):
    """serve --catalog: this process writes a run, another (`xfct-bluesky show`) reads it back by uid; a second
    Tiled server (embedded here) on the same catalog reads it while serve runs (no DuckDB file that one process
    holds: the tables are in PostgreSQL; the catalog, already there, is left as it is); the password and the
    key are in no output and on no command line; SIGTERM to serve stops tiled."""
    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd.sim import det, motor
    from tiled.client import from_uri

    from xfct_bluesky.storage import embedded_server, make_tiled_writer, runs_container

    pg = postgres_server
    database = pg.create_database("served")
    root, log = tmp_path / "data", tmp_path / "serve.log"
    env = pg.env  # PGPASSWORD
    proc, url = start_server(root, log, args=("--catalog", database), env=env)
    try:
        key = (root / "api_key").read_text().strip()
        client = from_uri(url, api_key=key)
        try:
            RE = RunEngine({})
            RE.subscribe(make_tiled_writer(runs_container(client)))
            (uid,) = RE(bp.list_scan([det], motor, [-1.0, 0.0, 1.0]), sample="on postgres")
        finally:
            client.context.close()
        shown = subprocess.run([str(CONSOLE_SCRIPT), "show", uid, "--data-dir", str(root)], env=env,
                               capture_output=True, text=True, timeout=120, check=False)
        assert shown.returncode == 0, shown.stderr
        assert uid[:8] in shown.stdout and "list_scan" in shown.stdout and "on postgres" in shown.stdout
        assert not (root / "tiled" / "storage.duckdb").exists() and not (root / "tiled" / "catalog.db").exists()
        tables = _execute(pg, "served", "SELECT table_name FROM information_schema.tables "
                          "WHERE table_name LIKE 'table\\_%'")
        assert tables, "the events' table is not in PostgreSQL"
        monkeypatch.setenv("PGPASSWORD", pg.password)
        with embedded_server(root, catalog=database) as server:
            again = from_uri(server.uri)
            try:
                run = runs_container(again)[uid]
                np.testing.assert_allclose(run["primary"]["det"].read(), np.exp(-np.array([-1.0, 0.0, 1.0]) ** 2 / 2))
            finally:
                again.context.close()
        children = group_pids(proc.pid)
        assert len(children) >= 2, children  # serve and its tiled child
        for pid in children:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert key not in cmdline and pg.password not in cmdline
    finally:
        proc.send_signal(signal.SIGTERM)  # to serve alone, by its PID: it stops tiled
        try:
            proc.wait(timeout=30)
        finally:
            stop_process(proc)
    assert proc.returncode == 0
    assert group_pids(proc.pid) == []  # tiled went with it
    output = log.read_text()
    assert "catalog and tables in postgresql://xfct@127.0.0.1" in output
    assert key not in output and pg.password not in output
