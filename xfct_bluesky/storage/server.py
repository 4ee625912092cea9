"""The Tiled server the runs go to: the data folder, an embedded server, the run catalog.

- :func:`default_data_dir` is where everything lives (``$XFCT_BLUESKY_DATA``
  or the user's data folder): the SQLite catalog under ``tiled/``, external
  HDF5 files under ``assets/``, which the server may read.
- :func:`embedded_server` runs a Tiled server in this process (loopback only).
- :func:`runs_container` gives the ``CatalogOfBlueskyRuns`` container the runs
  are written into, so that ``cat[-1]``, ``cat[scan_id]`` and searches on the
  start document work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "XFCT_BLUESKY_DATA"
"""Environment variable that overrides :func:`default_data_dir`."""
TILED_SUBDIR = "tiled"
"""Sub-folder of the data folder holding the Tiled catalog and its internal storage."""
ASSETS_SUBDIR = "assets"
"""Sub-folder of the data folder for external files (HDF5 spectra); readable by the server."""



class DataFolderError(ValueError):
    """The data folder (or a file in it) cannot be used as it is; the message names the file and the fix.

    Raised by the storage functions for a folder that is not a directory,
    is read-only where writing is needed, holds a corrupt catalog, does not
    match its catalog, or lacks an asset file a run points to. The CLI
    prints it in one line.
    """


_CATALOG_SPEC_NAME = "CatalogOfBlueskyRuns"
_CATALOG_SPEC_VERSION = "3.0"  # the SQL layout that TiledWriter writes

# tiled keeps its server settings in one process-wide object (``get_settings`` is
# cached) and every in-process app writes its API key into it: a second
# SimpleTiledServer would make the first one refuse its own key (HTTP 401).
# All embedded servers of this process therefore share one random key.
_PROCESS_API_KEY = secrets.token_hex(16)


def default_data_dir() -> Path:
    """Folder where the embedded Tiled catalog and the detector files live.

    Returns
    -------
    pathlib.Path
        ``$XFCT_BLUESKY_DATA`` if that variable is set and not empty, else the
        per-user data folder of ``platformdirs.user_data_dir("xfct-bluesky")``
        (``~/.local/share/xfct-bluesky`` on Linux). Not created here.
    """
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("xfct-bluesky"))


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
def embedded_server(data_dir: str | Path | None = None) -> Iterator[Any]:
    """Run a Tiled server in this process for as long as the ``with`` block lasts.

    Parameters
    ----------
    data_dir : str or pathlib.Path, optional
        Data folder; default :func:`default_data_dir`. The catalog (SQLite,
        persistent across sessions) goes in ``data_dir / "tiled"``; external
        detector files must be written under ``data_dir / "assets"``, the
        only other folder the server will read. Both are created if missing.

    Yields
    ------
    tiled.server.SimpleTiledServer
        The running server: ``.uri`` (with its API key) for
        ``tiled.client.from_uri``, ``.directory``.

    Notes
    -----
    The server listens on the loopback interface only, on a random free port,
    with a random API key, the same for every embedded server of this process
    (tiled's settings are process-wide: servers with different keys would lock
    each other out). Start-up takes about 3-5 s. It also registers the
    BlueskyRun ``application/json-seq`` exporter, so that
    ``run.documents()`` replays a stored run's documents.

    Examples
    --------
    >>> from tiled.client import from_uri
    >>> with embedded_server(tmp_path) as server:
    ...     cat = runs_container(from_uri(server.uri))
    """
    from tiled.server import SimpleTiledServer

    root = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
    tiled_dir = root / TILED_SUBDIR
    assets_dir = root / ASSETS_SUBDIR
    tiled_dir.mkdir(parents=True, exist_ok=True)
    assets_dir.mkdir(parents=True, exist_ok=True)

    _register_bluesky_run_exporter()
    server = SimpleTiledServer(directory=tiled_dir, readable_storage=[assets_dir], api_key=_PROCESS_API_KEY)
    logger.info("Tiled server for %s running at %s", root, server.uri.split("?", 1)[0])
    try:
        yield server
    finally:
        server.close()
        logger.info("Tiled server for %s stopped", root)


def runs_container(client: Any, name: str = "raw") -> Any:
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
    """
    from tiled.structures.core import Spec

    if name not in client:
        logger.info("Creating the run container %r", name)
        client.create_container(key=name, specs=[Spec(_CATALOG_SPEC_NAME, version=_CATALOG_SPEC_VERSION)])
    # Fetched again after creation so that its spec selects the CatalogOfBlueskyRuns client.
    node = client[name]
    spec_names = {spec.name for spec in getattr(node, "specs", [])}
    if _CATALOG_SPEC_NAME not in spec_names:
        raise ValueError(
            f"Tiled node {name!r} exists with specs {sorted(spec_names)} but is not a "
            f"{_CATALOG_SPEC_NAME}; choose another name, or remove that node."
        )
    return node
