"""Tiled storage, in three modules re-exported here (the names other code imports from this one).

- :mod:`.folder` (the data folder) and :mod:`.server`: :func:`default_data_dir`,
  :func:`embedded_server`, :func:`runs_container`;
- :mod:`.writing`: :func:`make_tiled_writer` with its JSON Lines backup,
  :func:`read_backup`, :func:`replay_backup`, :func:`replay_directory`;
- :mod:`.reading`: :class:`TomoData` (its :class:`Maps`), :func:`load_tomo`, :func:`load_theta`,
  :func:`load_spectra`, :func:`v1_broker` (the HTTP fetches in ``_fetch``).

The data flow is ``RunEngine -> TiledWriter -> Tiled (HTTP) -> client``.
"""

from __future__ import annotations

from ._fetch import _is_loopback  # noqa: F401
from .folder import (
    ASSETS_SUBDIR,
    DATA_DIR_ENV,
    TILED_SUBDIR,
    DataFolderError,
    default_data_dir,
)
from .reading import (
    Maps,
    TomoData,
    load_spectra,
    load_theta,
    load_tomo,
    v1_broker,
)
from .server import embedded_server, runs_container
from .writing import (  # noqa: F401
    REPLAYED_SUBDIR,
    _JSONLinesBackup,
    make_tiled_writer,
    read_backup,
    replay_backup,
    replay_directory,
)

__all__ = [
    "ASSETS_SUBDIR",
    "DATA_DIR_ENV",
    "DataFolderError",
    "Maps",
    "TILED_SUBDIR",
    "TomoData",
    "default_data_dir",
    "embedded_server",
    "load_spectra",
    "load_theta",
    "load_tomo",
    "make_tiled_writer",
    "read_backup",
    "replay_backup",
    "replay_directory",
    "runs_container",
    "v1_broker",
]
