"""A Tiled server in this process over a data folder it never writes: :class:`ReadOnlyTiledServer`.

tiled's ``SimpleTiledServer`` needs a writable folder (it creates its
storage, and opens its catalog and tables for writing); a folder this
process may not write (``chmod``, a read-only mount, a colleague's copy) is
served instead by :class:`ReadOnlyTiledServer`, with the same interface
(``uri``, ``directory``, ``close``, a context manager). Everything that reads
works (``ls``, ``show``, ``load_tomo``, ``load_spectra``); every write is
refused at once with HTTP 403 and a header (:data:`READ_ONLY_HEADER`) that
:func:`~xfct_bluesky.storage.server.runs_container` recognises. Choose it
through :func:`~xfct_bluesky.storage.server.embedded_server`, which starts it
for a read-only :class:`~xfct_bluesky.storage.folder.DataFolder`.

Tiled internals this module relies on (tiled 0.2.20; the runs themselves are
those TiledWriter of bluesky-tiled-plugins 2.0.12 writes):

- ``tiled.storage.EmbeddedSQLStorage.create_adbc_connection``, overridden to
  open the DuckDB tables with ``access_mode=READ_ONLY`` (through
  ``adbc_driver_duckdb``), and ``register_storage``/``unregister_storage``,
  the process-wide registry the catalog looks the tables up in;
- ``tiled.catalog.from_uri`` with an SQLAlchemy URI that SQLite opens as a
  ``mode=ro`` URI filename, and ``readable_storage`` only;
- ``tiled.server.app.build_app`` with ``Authentication(single_user_api_key=...)``,
  run by ``tiled.server.simple.ThreadedServer`` (uvicorn in a thread), logging
  through a copy of ``tiled.server.logging_config.LOGGING_CONFIG`` (handlers
  ``access`` and ``default``) redirected to files;
- the write routes of tiled's HTTP API (``PUT``/``PATCH``/``DELETE``, and
  ``POST`` on ``/api/v1/metadata``, ``register`` and ``webhooks``), refused by
  :class:`_RefuseWrites`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .folder import DataFolder

READ_ONLY_HEADER = "x-xfct-read-only"  # set on the refusals of a read-only server


def _is_write(method: str, path: str) -> bool:
    """Whether a request to tiled's HTTP API would write (POST is also used to read long column lists)."""
    if method in {"PUT", "PATCH", "DELETE"}:
        return True
    return method == "POST" and any(
        f"/api/v1/{route}/" in path or path.endswith(f"/api/v1/{route}") for route in ("metadata", "register", "webhooks")
    )


class _RefuseWrites:
    """ASGI wrapper: writing requests get ``403`` with one clear message, at once (no server error, no retries)."""

    def __init__(self, app: Any, message: str):
        self.app = app
        self._body = json.dumps({"detail": message}).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _is_write(scope["method"], scope["path"]):
            await send({
                "type": "http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(self._body)).encode()),
                            (READ_ONLY_HEADER.encode(), b"1")],
            })
            await send({"type": "http.response.body", "body": self._body})
            return
        await self.app(scope, receive, send)


def _read_only_tables(uri: str) -> Any:
    """Tiled's DuckDB table storage at ``uri``, opened with DuckDB's ``access_mode=READ_ONLY``.

    Tiled opens its embedded SQL storage for writing only (it first checks
    that the folder is writable); this subclass overrides just the opening.
    """
    import adbc_driver_duckdb
    import adbc_driver_manager
    import adbc_driver_manager.dbapi
    from tiled.storage import EmbeddedSQLStorage
    from tiled.utils import path_from_uri

    @dataclasses.dataclass(frozen=True)
    class ReadOnlyDuckDBStorage(EmbeddedSQLStorage):
        def create_adbc_connection(self):
            database = adbc_driver_manager.AdbcDatabase(
                driver=adbc_driver_duckdb.driver_path(), entrypoint="duckdb_adbc_init",
                path=str(path_from_uri(self.uri)), access_mode="READ_ONLY",
            )
            try:
                return adbc_driver_manager.dbapi.Connection(database, adbc_driver_manager.AdbcConnection(database))
            except BaseException:
                database.close()
                raise

    return ReadOnlyDuckDBStorage(uri)


class ReadOnlyTiledServer:
    """A Tiled server in this process over a data folder it never writes.

    The same interface as ``tiled.server.SimpleTiledServer`` (``uri``,
    ``directory``, ``close``, a context manager): the SQLite catalog opened
    with ``mode=ro``, the tables with DuckDB's ``READ_ONLY`` access mode, the
    arrays and assets as readable storage only, no writable storage, the logs
    in a temporary folder; writing requests are refused with HTTP 403.

    Use :func:`embedded_server`, which chooses it for a read-only folder.
    """

    read_only = True

    def __init__(self, folder: DataFolder, api_key: str):
        import copy
        import time
        from urllib.parse import quote_plus

        import httpx
        import uvicorn
        from tiled.catalog import from_uri as catalog_from_uri
        from tiled.config import Authentication
        from tiled.server.app import build_app
        from tiled.server.logging_config import LOGGING_CONFIG
        from tiled.server.simple import ThreadedServer
        from tiled.storage import register_storage
        from tiled.utils import ensure_uri

        self.directory = folder.tiled_dir
        self.api_key = api_key
        self._log_dir = Path(tempfile.mkdtemp(prefix="xfct-tiled-read-only-"))
        self._tables = None
        self._cm = None
        try:
            log_config = copy.deepcopy(LOGGING_CONFIG)
            for name in ("access", "default"):
                handler = log_config["handlers"][name]
                handler["class"] = "logging.FileHandler"
                handler.pop("stream", None)
                handler["filename"] = str(self._log_dir / f"{'access' if name == 'access' else 'error'}.log")
            if folder.tables_path.is_file():
                self._tables = _read_only_tables(ensure_uri(f"duckdb:///{folder.tables_path}"))
                register_storage(self._tables)
            readable = [path for path in (folder.assets_dir, folder.arrays_dir) if path.is_dir()]
            # SQLAlchemy passes "file:...?mode=ro" to sqlite3 as a URI filename (uri=true).
            catalog_uri = f"sqlite:///file:{quote(str(folder.catalog))}?mode=ro&uri=true"
            catalog = catalog_from_uri(catalog_uri, readable_storage=readable)
            app = build_app(catalog, authentication=Authentication(single_user_api_key=api_key))
            message = (f"the data folder {folder.root} is open read-only: nothing can be written to it; "
                       f"make it writable (chmod -R u+w {folder.root}) to store runs")
            server = ThreadedServer(uvicorn.Config(_RefuseWrites(app, message), host="127.0.0.1", port=0,
                                                   loop="asyncio", log_config=log_config))
            self._server = server
            self._cm = server.run_in_thread()
            base_url = self._cm.__enter__()
            deadline = time.monotonic() + 20
            with httpx.Client(trust_env=False) as client:
                while True:
                    if not server.thread.is_alive():
                        raise RuntimeError(f"the read-only Tiled server stopped at start-up; see {self._log_dir}")
                    try:
                        if client.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                            break
                    except httpx.RequestError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the read-only Tiled server did not answer in 20 s; see {self._log_dir}")
                    time.sleep(0.1)
        except BaseException:
            self.close()
            raise
        self.uri = f"{base_url}/api/v1?api_key={quote_plus(api_key)}"

    def close(self) -> None:
        from tiled.storage import unregister_storage

        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None
        if self._tables is not None:
            self._tables.dispose()
            unregister_storage(self._tables)
            self._tables = None
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()
