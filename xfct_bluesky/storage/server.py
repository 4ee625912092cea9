"""The Tiled server the runs go to: an embedded server, the run catalog.

- :func:`embedded_server` runs a Tiled server in this process (loopback only)
  on a checked data folder: tiled's ``SimpleTiledServer``, or
  :class:`~xfct_bluesky.storage.readonly.ReadOnlyTiledServer` on a folder it
  may not write.
- :func:`runs_container` gives the ``CatalogOfBlueskyRuns`` container the runs
  are written into, so that ``cat[-1]``, ``cat[scan_id]`` and searches on the
  start document work.

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
tiled's own functions in this process beforehand.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from .readonly import _READ_ONLY_HEADER, ReadOnlyTiledServer

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
def embedded_server(data_dir: str | Path | None = None, *, read_only: bool | None = None) -> Iterator[Any]:
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
    folder = prepare_data_folder(data_dir, read_only=read_only)
    try:
        _register_bluesky_run_exporter()
        server = _start_server(folder)
    except BaseException:
        folder.cleanup()
        raise
    logger.info("Tiled server for %s running%s at %s", folder.root, " read-only" if folder.read_only else "",
                server.uri.split("?", 1)[0])
    try:
        yield server
    finally:
        server.close()
        folder.cleanup()
        logger.info("Tiled server for %s stopped", folder.root)


def initialize_catalog(path: Path) -> None:
    """Create a new catalog at ``path``: tables and alembic stamp, as ``tiled catalog init`` does, in this process.

    The steps and tiled functions of tiled's ``commandline/_catalog.py``
    ``init``, run in a thread of their own (its event loop, and alembic's
    ``asyncio.run``, must not meet a running loop such as IPython's).
    """
    failure: list[BaseException] = []

    def init() -> None:
        import asyncio

        from sqlalchemy.ext.asyncio import create_async_engine
        from tiled.alembic_utils import (
            UninitializedDatabase,
            check_database,
            stamp_head,
        )
        from tiled.catalog.alembic_constants import (
            ALEMBIC_DIR,
            ALEMBIC_INI_TEMPLATE_PATH,
        )
        from tiled.catalog.core import (
            ALL_REVISIONS,
            REQUIRED_REVISION,
            initialize_database,
        )
        from tiled.utils import ensure_specified_sql_driver

        uri = ensure_specified_sql_driver(path)

        async def setup() -> None:
            engine = create_async_engine(uri)
            try:
                await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            except UninitializedDatabase:
                await initialize_database(engine)
            finally:
                await engine.dispose()

        try:
            asyncio.run(setup())
            with warnings.catch_warnings():  # alembic on tiled's alembic.ini template (its subprocess shows none)
                warnings.filterwarnings("ignore", "No path_separator found", DeprecationWarning)
                stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=init, name="xfct-tiled-catalog-init")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


_FROM_URI_LOCK = threading.Lock()


@contextlib.contextmanager
def _catalog_already_initialized() -> Iterator[None]:
    """While a SimpleTiledServer starts: open its catalog without ``init_if_not_exists``.

    SimpleTiledServer always asks ``tiled.catalog.from_uri`` to initialise the
    catalog if missing, which tiled does by running ``python -m tiled catalog
    init`` in a subprocess: a fresh interpreter importing tiled, 4-7 s on
    every start, even of a catalog years old. The folder's catalog is already
    initialised (:func:`initialize_catalog`) and its schema checked
    (:func:`prepare_data_folder`), so that step is skipped here.
    """
    import tiled.catalog

    original = tiled.catalog.from_uri

    def from_uri(*args, **kwargs):
        kwargs["init_if_not_exists"] = False
        return original(*args, **kwargs)

    with _FROM_URI_LOCK:
        tiled.catalog.from_uri = from_uri
        try:
            yield
        finally:
            tiled.catalog.from_uri = original


def _start_server(folder: DataFolder) -> Any:
    from tiled.server import SimpleTiledServer

    error_log = folder.tiled_dir / "error.log"
    try:
        if folder.read_only:
            return ReadOnlyTiledServer(folder, _PROCESS_API_KEY)
        if not folder.catalog_path.exists():
            initialize_catalog(folder.catalog_path)
        with _catalog_already_initialized():
            return SimpleTiledServer(directory=folder.tiled_dir, readable_storage=[folder.assets_dir],
                                     api_key=_PROCESS_API_KEY)
    except Exception as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        where = "" if folder.read_only else f"; details in {error_log}"
        raise DataFolderError(
            f"the Tiled server for {folder.root} did not start ({type(err).__name__}: {first[:200]}){where}; "
            f"if {folder.catalog_path} is damaged, move it aside and restore it from a backup"
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
            if err.response.headers.get(_READ_ONLY_HEADER):
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
