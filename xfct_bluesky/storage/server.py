"""The Tiled server the runs go to: an embedded server, the run catalog.

- :func:`embedded_server` runs a Tiled server in this process (loopback only)
  on a checked data folder: tiled's ``SimpleTiledServer``, or
  :class:`~xfct_bluesky.storage.readonly.ReadOnlyTiledServer` on a folder it
  may not write.
- :func:`runs_container` gives the ``CatalogOfBlueskyRuns`` container the runs
  are written into, so that ``cat[-1]``, ``cat[scan_id]`` and searches on the
  start document work; :func:`last_scan_id` is its largest ``scan_id``.
- :func:`serve_standalone` runs ``tiled serve catalog`` over a data folder
  (``xfct-bluesky serve``: the shared store other processes write and read
  by URI and API key, :data:`API_KEY_FILE`), stopping it with this process
  and keeping the key out of its output.

Both take a PostgreSQL catalog instead of the folder's SQLite one
(``catalog=`` / ``folder.database``: the catalog and the tables in the
database, the arrays and assets in the folder; see :mod:`.postgres`).

The data folder itself (its layout, :func:`default_data_dir`,
:func:`prepare_data_folder`, :class:`DataFolderError`, the rewrite of a moved
folder's catalog) is in :mod:`.folder`; those names are importable from here
too, as before.

Tiled internals this module relies on (tiled 0.2.20, bluesky-tiled-plugins
2.0.12): ``tiled.server.SimpleTiledServer``; the process-wide settings every
in-process app writes its API key into (hence one key per process); tiled's
default serialization registry, into which bluesky-tiled-plugins'
``json_seq_exporter`` is registered; the ``CatalogOfBlueskyRuns`` spec,
version 3.0, that selects bluesky-tiled-plugins' client class; and
``tiled.catalog.from_uri``, which SimpleTiledServer calls by that name with
``init_if_not_exists=True`` (a subprocess per start), replaced for the
duration of a start by a call without it, the catalog being initialised by
tiled's own functions in this process beforehand. Both servers answer requests
without FastAPI rebuilding their dependency graph each time (:mod:`._fastapi`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._catalog_init import in_own_thread, initialize_catalog  # noqa: F401 (importable from here)
from ._fastapi import reuse_request_dependants

# The data folder's names stay importable from here (other modules import them from this one).
from .folder import (  # noqa: F401
    ARRAYS_SUBDIR,
    ASSETS_SUBDIR,
    CATALOG_NAME,
    DATA_DIR_ENV,
    MARKER_NAME,
    TABLES_NAME,
    TILED_SUBDIR,
    DataFolder,
    DataFolderError,
    asset_path,
    default_data_dir,
    prepare_data_folder,
)
from .readonly import READ_ONLY_HEADER, ReadOnlyTiledServer

logger = logging.getLogger(__name__)

_CATALOG_SPEC_NAME = "CatalogOfBlueskyRuns"
_CATALOG_SPEC_VERSION = "3.0"  # the SQL layout that TiledWriter writes

# tiled keeps its server settings in one process-wide object (``get_settings`` is
# cached) and every in-process app writes its API key into it: a second
# SimpleTiledServer would make the first one refuse its own key (HTTP 401).
# All embedded servers of this process therefore share one random key.
_PROCESS_API_KEY = secrets.token_hex(16)


# --------------------------------------------------------------------------- servers
def _register_bluesky_run_exporter() -> None:
    """Let the server export a BlueskyRun as ``application/json-seq`` (``run.documents()``).

    The in-process server builds its app from tiled's default serialization
    registry, so the exporter must be registered before the server starts.
    Registering again replaces the same entry: idempotent.
    """
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    default_serialization_registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)



@contextlib.contextmanager
def embedded_server(data_dir: str | Path | None = None, *, read_only: bool | None = None,
                    catalog: str | None = None) -> Iterator[Any]:
    """Run a Tiled server in this process for as long as the ``with`` block lasts.

    Parameters
    ----------
    data_dir : str or pathlib.Path, optional
        Data folder; default :func:`default_data_dir`. The catalog (SQLite,
        persistent across sessions) goes in ``data_dir / "tiled"``; external
        detector files must be written under ``data_dir / "assets"``, the
        only other folder the server will read. Both are created if missing
        (unless the folder is read-only).
    read_only : bool, optional
        ``True``: serve the folder read-only; ``False``: it must be writable.
        Default ``None``: read-only if this process may not write the folder's
        catalog (see :func:`prepare_data_folder`).
    catalog : str, optional
        A PostgreSQL catalog, ``postgresql://USER@HOST:PORT/DATABASE``, the
        password from ``PGPASSWORD`` or ``~/.pgpass`` (:mod:`.postgres`):
        the catalog and the tables go there, the arrays and assets stay in
        ``data_dir``. Default: the folder's SQLite ``tiled/catalog.db``.

    Yields
    ------
    tiled.server.SimpleTiledServer or ReadOnlyTiledServer
        The running server: ``.uri`` (with its API key) for
        ``tiled.client.from_uri``, ``.directory``.

    Raises
    ------
    DataFolderError
        If the folder cannot be used (see :func:`prepare_data_folder`), or
        the server does not start.

    Notes
    -----
    The folder is checked and, if it was moved or copied, its catalog made
    to point into it (:func:`prepare_data_folder`) before the server starts.
    The server listens on the loopback interface only, on a random free port,
    with a random API key, the same for every embedded server of this process
    (tiled's settings are process-wide: servers with different keys would lock
    each other out). Start-up takes about 1 s (a new folder's catalog is
    initialised in this process, see :func:`_catalog_already_initialized`).
    It also registers the BlueskyRun ``application/json-seq`` exporter, so that
    ``run.documents()`` replays a stored run's documents.

    A read-only server (:class:`ReadOnlyTiledServer`) reads everything a
    writable one does (``ls``, ``show``, :func:`~xfct_bluesky.storage.load_tomo`,
    :func:`~xfct_bluesky.storage.load_spectra`) and refuses every write with
    HTTP 403.

    Examples
    --------
    >>> from tiled.client import from_uri
    >>> with embedded_server(tmp_path) as server:
    ...     cat = runs_container(from_uri(server.uri))
    """
    folder = prepare_data_folder(data_dir, read_only=read_only, catalog=catalog)
    try:
        _register_bluesky_run_exporter()
        server = _start_server(folder)
    except BaseException:
        folder.cleanup()
        raise
    logger.info("Tiled server for %s running%s at %s%s", folder.root, " read-only" if folder.read_only else "",
                server.uri.split("?", 1)[0], f", catalog {folder.database}" if folder.database else "")
    try:
        yield server
    finally:
        server.close()
        folder.cleanup()
        logger.info("Tiled server for %s stopped", folder.root)


_FROM_URI_LOCK = threading.Lock()


@contextlib.contextmanager
def _catalog_already_initialized(database: str | None = None) -> Iterator[None]:
    """While a SimpleTiledServer starts: open its catalog without ``init_if_not_exists``; with ``database``
    (a PostgreSQL catalog), open that catalog instead of the folder's SQLite one.

    SimpleTiledServer always asks ``tiled.catalog.from_uri`` to initialise the
    catalog if missing, which tiled does by running ``python -m tiled catalog
    init`` in a subprocess: a fresh interpreter importing tiled, 4-7 s on
    every start, even of a catalog years old. The folder's catalog is already
    initialised (:func:`initialize_catalog`) and its schema checked
    (:func:`prepare_data_folder`), so that step is skipped here.

    With ``database``, SimpleTiledServer's catalog path is replaced by that URI
    and the database is put first among the writable storage, so that tiled
    writes the tables there (it takes the first storage a structure
    supports); its DuckDB file stays listed, unused (SimpleTiledServer looks
    it up after the start), and is never created.
    """
    import tiled.catalog

    from .postgres import tables_uri

    original = tiled.catalog.from_uri

    def from_uri(*args, **kwargs):
        kwargs["init_if_not_exists"] = False
        if database is not None:
            arrays, *others = kwargs["writable_storage"]
            kwargs["writable_storage"] = [arrays, tables_uri(database), *others]
            args = (database, *args[1:])
        return original(*args, **kwargs)

    with _FROM_URI_LOCK:
        tiled.catalog.from_uri = from_uri
        try:
            yield
        finally:
            tiled.catalog.from_uri = original


def _start_server(folder: DataFolder) -> Any:
    from tiled.server import SimpleTiledServer

    reuse_request_dependants()
    error_log = folder.tiled_dir / "error.log"
    if folder.database is not None:  # its own one-line errors (CatalogURIError), before the server starts
        from .postgres import prepare_catalog

        prepare_catalog(folder.database)
    try:
        if folder.read_only:
            return ReadOnlyTiledServer(folder, _PROCESS_API_KEY)
        if folder.database is None and not folder.catalog_path.exists():
            initialize_catalog(folder.catalog_path)
        with _catalog_already_initialized(folder.database):
            return SimpleTiledServer(directory=folder.tiled_dir, readable_storage=[folder.assets_dir],
                                     api_key=_PROCESS_API_KEY)
    except Exception as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        where = "" if folder.read_only else f"; details in {error_log}"
        damaged = folder.database or folder.catalog_path
        raise DataFolderError(
            f"the Tiled server for {folder.root} did not start ({type(err).__name__}: {first[:200]}){where}; "
            f"if {damaged} is damaged, move it aside and restore it from a backup"
        ) from err


#: The container of the runs acquired or imported (``cat[-1]`` is the last scan).
RAW_CONTAINER = "raw"
#: The container of the runs derived from them (live alignment, reconstruction, fits: ``start.raw_uid``).
DERIVED_CONTAINER = "derived"


def derived_container(client: Any) -> Any:
    """The container of derived runs (:data:`DERIVED_CONTAINER`), created if missing; see :func:`runs_container`.

    Derived runs live apart from the scans so that ``cat[-1]``, ``cat[scan_id]``
    and ``v1_broker(cat)[-1]`` of the raw container always mean the last scan;
    each names its scan in ``start.raw_uid`` (see :func:`derived_runs`).
    """
    return runs_container(client, DERIVED_CONTAINER)


def derived_runs(container: Any, raw_uid: str, plan_name: str | None = None) -> list[Any]:
    """The runs of ``container`` (the derived one) derived from the scan ``raw_uid``, oldest first;
    only those of ``plan_name`` ("dpc_alignment", "xfct_reconstruction", ...) if given."""
    from tiled.queries import Key

    found = container.search(Key("start.raw_uid") == raw_uid)
    if plan_name is not None:
        found = found.search(Key("start.plan_name") == plan_name)
    return list(found.values()) if len(found) else []


def runs_container(client: Any, name: str = RAW_CONTAINER) -> Any:
    """The container of Bluesky runs named ``name``, created if missing.

    Parameters
    ----------
    client : tiled.client.container.Container
        A writable Tiled client, e.g. ``from_uri(server.uri)``.
    name : str, optional
        Key of the container under ``client``. Default ``"raw"``.

    Returns
    -------
    bluesky_tiled_plugins.CatalogOfBlueskyRuns
        The container, with spec ``CatalogOfBlueskyRuns`` (version 3.0, the
        SQL layout TiledWriter writes), so that ``cat[-1]`` (latest run),
        ``cat[scan_id]``, ``cat["partial-uid"]`` and
        ``cat.search(Key("start.plan_name") == "count")`` work.

    Raises
    ------
    ValueError
        If ``name`` exists but is not a ``CatalogOfBlueskyRuns`` container.
    DataFolderError
        If ``name`` is missing and the server is read-only.
    """
    import httpx
    from tiled.structures.core import Spec

    if name not in client:
        logger.info("Creating the run container %r", name)
        try:
            client.create_container(key=name, specs=[Spec(_CATALOG_SPEC_NAME, version=_CATALOG_SPEC_VERSION)])
        except httpx.HTTPStatusError as err:
            if err.response.headers.get(READ_ONLY_HEADER):
                raise DataFolderError(
                    f"the catalog has no run container {name!r} yet, and its data folder is open read-only: "
                    "there are no runs to read; store a run with write access first"
                ) from None
            raise
    # Fetched again after creation so that its spec selects the CatalogOfBlueskyRuns client.
    node = client[name]
    spec_names = {spec.name for spec in getattr(node, "specs", [])}
    if _CATALOG_SPEC_NAME not in spec_names:
        raise ValueError(
            f"Tiled node {name!r} exists with specs {sorted(spec_names)} but is not a "
            f"{_CATALOG_SPEC_NAME}; choose another name, or remove that node."
        )
    return node


def last_scan_id(container: Any) -> int:
    """The largest ``start.scan_id`` among the runs of ``container`` (0 if none has one).

    One query to the server, sorted on the start document (runs without a
    ``scan_id``, e.g. some imported ones, are left out): the number a
    RunEngine writing into a shared catalog continues from.
    """
    from tiled.queries import Key

    for run in container.search(Key("start.scan_id") > 0).sort(("start.scan_id", -1)).values():
        return int(run.metadata["start"]["scan_id"])
    return 0


def scan_id_source(container: Any) -> Any:
    """A RunEngine ``scan_id_source``: one more than the larger of ``RE.md["scan_id"]`` and :func:`last_scan_id`.

    Processes writing into one shared catalog (the queue server's worker, a
    user's IPython) then continue one numbering, and so does a process whose
    ``RE.md`` was lost. Two runs opened in the same instant by two processes
    may share a number. If the server does not answer, ``RE.md`` alone
    numbers the run (the writer's backup keeps it), with a warning.
    """

    def next_scan_id(md: Any) -> int:
        try:
            stored = last_scan_id(container)
        except Exception as err:
            logger.warning("scan_id from RE.md only: the catalog did not answer (%s: %s)", type(err).__name__, err)
            stored = 0
        return max(int(md.get("scan_id", 0)), stored) + 1

    return next_scan_id


# --------------------------------------------------------------------------- the standalone server
#: The file in the data folder that holds ``xfct-bluesky serve``'s API key (mode 0600).
API_KEY_FILE = "api_key"

#: Seconds ``tiled serve`` has to stop after SIGTERM before it is killed.
STOP_GRACE = 10.0

_KEY_IN_URL = re.compile(r"api_key=[^\s&#'\"]+")


def stored_api_key(data_dir: str | Path) -> str | None:
    """The API key ``xfct-bluesky serve`` keeps in ``data_dir / API_KEY_FILE``, or None if there is none."""
    path = Path(data_dir) / API_KEY_FILE
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


#: The standalone server's child: :func:`run_tiled` on the arguments that follow.
_TILED_CHILD = "import sys; from xfct_bluesky.storage.server import run_tiled; sys.exit(run_tiled(sys.argv[1:]))"


def run_tiled(argv: list[str]) -> int:
    """tiled's command line, in this process, on ``["serve", "catalog", CATALOG, ...]``: a missing SQLite catalog
    is created first (:func:`initialize_catalog`, whose imports the server shares: 6-7 s less than doing it in
    another interpreter before the server starts); a PostgreSQL one is checked, and initialised if new
    (:func:`~.postgres.prepare_catalog`: a refusal is one line on stderr, exit status 1)."""
    from tiled.commandline.main import main

    from .postgres import CatalogURIError, is_postgres, prepare_catalog

    reuse_request_dependants()
    if argv[:2] == ["serve", "catalog"] and is_postgres(argv[2]):
        try:
            prepare_catalog(argv[2])
        except CatalogURIError as err:
            print(f"xfct-bluesky serve: {err}", file=sys.stderr)
            return 1
    elif argv[:2] == ["serve", "catalog"] and not Path(argv[2]).exists():
        initialize_catalog(Path(argv[2]))
    sys.argv = ["tiled", *argv]
    return main()


def redact_api_key(text: str, key: str) -> str:
    """``text`` with ``api_key=...`` (tiled's banner URL) and ``key`` itself replaced by ``<hidden>``."""
    return _KEY_IN_URL.sub("api_key=<hidden>", text).replace(key, "<hidden>")


def _copy_redacted(source: Any, sink: Any, key: str) -> None:
    """Copy the child's output line by line into ``sink``, without the key; drained to the end even if ``sink``
    fails (``serve | head``), so that the child never blocks on a full pipe."""
    for raw in iter(source.readline, b""):
        with contextlib.suppress(OSError, ValueError):
            sink.write(redact_api_key(raw.decode(errors="replace"), key))
            sink.flush()
    source.close()


def _parent_death_signal() -> Any:
    """Linux: a ``preexec_fn`` that has the kernel send SIGTERM to the child when this process dies, even by
    SIGKILL; None elsewhere. ctypes is loaded here, before the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal the child
            os._exit(1)

    return set_parent_death_signal


def serve_standalone(folder: DataFolder, *, host: str, port: int, api_key: str) -> int:
    """Run ``tiled serve catalog`` over ``folder`` until it exits or this process is asked to stop.

    The server reads and writes the folder's catalog, arrays and tables and
    reads its ``assets`` (the layout of :func:`embedded_server`); with a
    PostgreSQL catalog (``folder.database``), the catalog and the tables are
    in that database. Returns its exit status (0 after a requested stop).

    Notes
    -----
    tiled runs in a child process (:func:`run_tiled`, which also creates a
    new folder's catalog). The key reaches it by ``TILED_SINGLE_USER_API_KEY``,
    never its command line, which every local user can read; tiled's start-up
    banner, which prints the key in a URL, is copied to this process's stderr
    without it. SIGTERM, SIGINT and SIGHUP to this process are passed on to
    tiled, which is killed if still running :data:`STOP_GRACE` seconds later;
    on Linux the kernel also stops it if this process dies by SIGKILL. Call
    from the main thread of a process without other threads (the signal
    handlers, and the child's set-up between fork and exec). A PostgreSQL
    catalog's URI holds no password (:func:`~.postgres.check_catalog_uri`):
    tiled reads it from ``PGPASSWORD`` or ``~/.pgpass``, never its arguments.
    """
    from .postgres import tables_uri

    if folder.database is not None:
        catalog, tables = folder.database, tables_uri(folder.database)
    else:
        catalog, tables = str(folder.catalog_path), f"duckdb:///{folder.tables_path}"
    cmd = [sys.executable, "-c", _TILED_CHILD, "serve", "catalog", catalog, "-w", str(folder.arrays_dir),
           "-w", tables, "-r", str(folder.assets_dir), "--host", host, "--port", str(port)]
    env = dict(os.environ, TILED_SINGLE_USER_API_KEY=api_key)
    asked: list[int] = []  # the signals received
    passed_on: list[int] = []  # ... and those passed on to tiled
    child = None
    copiers: list[threading.Thread] = []

    def forward(signum, frame) -> None:
        asked.append(signum)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
                passed_on.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        child = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE,
                                 preexec_fn=_parent_death_signal())
        copiers = [threading.Thread(target=_copy_redacted, args=(pipe, sink, api_key), daemon=True,
                                    name=f"xfct-serve-{name}")
                   for pipe, sink, name in ((child.stdout, sys.stdout, "stdout"),
                                            (child.stderr, sys.stderr, "stderr"))]
        for thread in copiers:
            thread.start()
        deadline = None
        while True:
            try:
                code = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if asked and deadline is None:
                    if not passed_on:  # asked to stop before tiled was started
                        child.terminate()
                    deadline = time.monotonic() + STOP_GRACE
                elif deadline is not None and time.monotonic() > deadline:
                    logger.warning("tiled serve did not stop %g s after SIGTERM: killing it", STOP_GRACE)
                    child.kill()
                    deadline = float("inf")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child is not None and child.poll() is None:  # an exception in the loop: never leave tiled behind
            child.kill()
            child.wait()
        for thread in copiers:
            thread.join(timeout=5)
    if asked:
        return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else (code if code > 0 else 128 - code)
    return code if code >= 0 else 128 - code
