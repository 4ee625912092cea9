"""The data folder: its layout, its checks before a Tiled server opens it, and its relocation.

- :func:`default_data_dir` is where the folder is by default (``$XFCT_BLUESKY_DATA``
  or the user's data folder).
- :func:`prepare_data_folder` checks a data folder (a folder, writable where
  needed, a sound catalog of this tiled's schema) and returns a
  :class:`DataFolder` with the paths a server is given; a moved or copied
  folder first has its catalog made to point into the folder itself.
- :func:`asset_path` is the local file a catalog asset URI points to, as
  tiled opens it (used to name a missing file before a read).

Layout of a data folder, the same for :func:`~xfct_bluesky.storage.server.embedded_server`
(tiled's ``SimpleTiledServer``) and ``xfct-bluesky serve`` (``tiled serve catalog``)::

    <data>/assets/               external files (HDF5 spectra): the only other folder the server reads
    <data>/tiled/catalog.db      Tiled's SQLite catalog (metadata, and the URI of every file)
    <data>/tiled/data/           Tiled's arrays (zarr), writable storage
    <data>/tiled/storage.duckdb  Tiled's tables (DuckDB), writable storage
    <data>/tiled/folder.json     the folder's own path when its catalog was last used, and an id

With a PostgreSQL catalog (``prepare_data_folder(catalog="postgresql://...")``,
``xfct-bluesky serve --catalog``; see :mod:`.postgres`) the catalog and the
tables are in that database: ``catalog.db`` and ``storage.duckdb`` are not
used, and the arrays' URIs in the database are not rewritten if the folder moves.

Tiled records absolute URIs in its catalog (``assets.data_uri``), so the
folder records where it was: opened at another path (``mv``, ``cp -r``), the
URIs that point under the old path are rewritten to the new one, in one
transaction, before the server starts. A copy then reads its own files,
never the original's.

Tiled internals this module relies on (tiled 0.2.20, bluesky-tiled-plugins 2.0.12),
read and written with :mod:`sqlite3` rather than through tiled's API:

- the catalog's SQL schema: ``assets`` (``id``, ``data_uri``, unique),
  ``data_source_asset_association`` (``data_source_id``, ``asset_id``) and
  ``data_sources.management`` (``'writable'`` for tiled's own storage); the
  schema revision in ``alembic_version``, compared with
  ``tiled.catalog.core.REQUIRED_REVISION`` and ``ALL_REVISIONS``;
- the URI forms tiled writes and opens (``tiled.utils.path_from_uri``):
  ``file://localhost/<path>`` for arrays, ``duckdb://localhost/<path>`` for
  tables (the path after the third slash); the HDF5 files' URIs are the
  percent-encoded ``Path.as_uri()`` of the StreamResource documents, which
  TiledWriter (bluesky-tiled-plugins) registers unchanged;
- ``SimpleTiledServer``'s names under its directory: ``catalog.db``,
  ``data/``, ``storage.duckdb``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse, urlunparse

from .errors import DataFolderError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "XFCT_BLUESKY_DATA"
"""Environment variable that overrides :func:`default_data_dir`."""
TILED_SUBDIR = "tiled"
"""Sub-folder of the data folder holding the Tiled catalog and its internal storage."""
ASSETS_SUBDIR = "assets"
"""Sub-folder of the data folder for external files (HDF5 spectra); readable by the server."""
CATALOG_NAME = "catalog.db"
"""Tiled's SQLite catalog, in :data:`TILED_SUBDIR`."""
ARRAYS_SUBDIR = "data"
"""Tiled's array storage (zarr), in :data:`TILED_SUBDIR`; the folder ``SimpleTiledServer`` writes."""
TABLES_NAME = "storage.duckdb"
"""Tiled's table storage (DuckDB), in :data:`TILED_SUBDIR`; the file ``SimpleTiledServer`` writes."""
MARKER_NAME = "folder.json"
"""The data folder's marker, in :data:`TILED_SUBDIR`: its path when last used, and an id."""
_MARKER_FORMAT = 1
#: Written by ``xfct-bluesky serve`` while it serves the folder: ``{"uri": ..., "pid": ...}``
SERVER_NAME = "server.json"


@contextlib.contextmanager
def advertise_server(data_dir: str | Path, uri: str):
    """While the block runs, ``<data>/tiled/server.json`` tells other commands a server at ``uri`` serves the folder.

    :func:`running_server` reads it, so ``xfct-bluesky ls`` and the other
    commands use that server rather than start one of their own (seconds, and a
    second writer on the same SQLite catalog). The file holds no key.
    """
    path = Path(data_dir) / TILED_SUBDIR / SERVER_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"uri": uri, "pid": os.getpid()}))
    os.replace(tmp, path)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if json.loads(path.read_text()).get("pid") == os.getpid():  # not a later server's file
                path.unlink()


def running_server(data_dir: str | Path) -> str | None:
    """The URI of the ``xfct-bluesky serve`` process serving ``data_dir`` (:func:`advertise_server`), else None.

    A file left by a process that is gone (killed with -9) is ignored.
    Whether the server answers is the caller's check.
    """
    path = Path(data_dir) / TILED_SUBDIR / SERVER_NAME
    try:
        record = json.loads(path.read_text())
        pid, uri = int(record["pid"]), str(record["uri"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # another user's live process
        pass
    return uri


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


# --------------------------------------------------------------------------- the data folder
@dataclasses.dataclass(frozen=True)
class DataFolder:
    """A checked data folder, ready for a Tiled server: see :func:`prepare_data_folder`.

    Attributes
    ----------
    root : pathlib.Path
        The data folder, absolute and resolved.
    read_only : bool
        Whether the server must open it read-only.
    catalog : pathlib.Path
        The SQLite catalog the server opens: ``root/tiled/catalog.db``, or,
        for a read-only folder that has moved, a rewritten copy of it in
        ``temporary``.
    temporary : pathlib.Path or None
        A folder to remove when the server stops.
    database : str or None
        The URI of a PostgreSQL catalog (:mod:`.postgres`), which then holds
        the catalog and the tables (``catalog`` is unused); None for the
        folder's SQLite catalog.
    """

    root: Path
    read_only: bool = False
    catalog: Path | None = None
    temporary: Path | None = None
    database: str | None = None

    @property
    def tiled_dir(self) -> Path:
        return self.root / TILED_SUBDIR

    @property
    def assets_dir(self) -> Path:
        return self.root / ASSETS_SUBDIR

    @property
    def arrays_dir(self) -> Path:
        return self.tiled_dir / ARRAYS_SUBDIR

    @property
    def tables_path(self) -> Path:
        return self.tiled_dir / TABLES_NAME

    @property
    def catalog_path(self) -> Path:
        """The folder's own catalog file (``catalog`` may be a temporary copy of it)."""
        return self.tiled_dir / CATALOG_NAME

    @property
    def marker_path(self) -> Path:
        return self.tiled_dir / MARKER_NAME

    def cleanup(self) -> None:
        """Remove the temporary copy of the catalog, if any."""
        if self.temporary is not None:
            shutil.rmtree(self.temporary, ignore_errors=True)


def prepare_data_folder(data_dir: str | Path | None = None, *, read_only: bool | None = None,
                        catalog: str | None = None) -> DataFolder:
    """Check a data folder and make its catalog point into it, before a Tiled server opens it.

    Parameters
    ----------
    data_dir : str or pathlib.Path, optional
        Data folder; default :func:`default_data_dir`. Created if missing
        (unless read-only).
    read_only : bool, optional
        ``True``: open the folder read-only (it must hold a catalog).
        ``False``: the folder must be writable. Default ``None``: read-only
        when the folder holds a catalog that this process may not write
        (``os.access``), else writable.
    catalog : str, optional
        A PostgreSQL catalog, ``postgresql://USER@HOST:PORT/DATABASE`` (see
        :mod:`.postgres`: the password from ``PGPASSWORD`` or ``~/.pgpass``),
        instead of the folder's SQLite ``tiled/catalog.db``: its form, its
        server, the database and the credentials are checked before anything
        is written; its schema is checked, and a new one initialised, where
        the server starts (:func:`~.postgres.prepare_catalog`). The folder
        then holds the arrays and the assets only; it must be writable, and
        is not rewritten if moved.

    Returns
    -------
    DataFolder
        The folder, whether to open it read-only, and the catalog file to open.

    Raises
    ------
    DataFolderError
        If the path (or one of its sub-folders) is a file, cannot be created,
        is read-only where writing is needed, if ``tiled/catalog.db`` is
        damaged, was made by another version of tiled, or belongs to another
        data folder (none of the files it points to are in this one), or if
        ``tiled/folder.json`` is damaged; a
        :class:`~xfct_bluesky.storage.postgres.CatalogURIError` (a subclass)
        if the PostgreSQL ``catalog`` cannot be used.

    Notes
    -----
    The catalog stores absolute URIs (``assets.data_uri`` in tiled's SQL
    schema): ``file://localhost/<data>/tiled/data/...`` for arrays,
    ``duckdb://localhost/<data>/tiled/storage.duckdb`` for tables,
    ``file:///<data>/assets/....h5`` for the HDF5 spectra. The folder's path
    when the catalog was last used is recorded in ``tiled/folder.json``; the
    paths the catalog itself was written under are read from its writable
    assets. When the folder is opened at another path, every URI under an old
    path is rewritten to the new one in one SQLite transaction (logged at
    WARNING), and the marker is updated: a moved folder keeps its id, a copy
    (the original's marker still in place with the same id) gets a new one.
    A rewrite is refused, and nothing is changed, when none of the files the
    catalog's own storage points to exist under the new path: the catalog
    then belongs to another folder. A read-only folder is never written: the
    rewrite goes to a temporary copy of the catalog.
    """
    database = None
    if catalog is not None:  # its form and its server, before anything is written
        from . import postgres

        database = postgres.check_catalog_uri(catalog)
        if read_only:
            raise DataFolderError(f"catalog {database}: a PostgreSQL catalog is served writable only; leave "
                                  "read_only out (the database's own permissions decide who may write it)")
        postgres.check_server(database)
        read_only = False
    raw = Path(data_dir if data_dir is not None else default_data_dir()).expanduser()
    try:
        root = raw.resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise DataFolderError(f"data folder {raw}: cannot resolve the path ({err}); give another --data-dir") from None
    folder = DataFolder(root)
    for path in (root, folder.tiled_dir, folder.assets_dir, folder.arrays_dir):
        if path.exists() and not path.is_dir():
            raise DataFolderError(
                f"data folder {root}: {path} is a file, not a folder; move that file away, or give another "
                f"data folder (--data-dir or ${DATA_DIR_ENV})"
            )
    catalog_file = folder.catalog_path
    blocked = _first_unwritable(folder)
    if read_only is None:
        read_only = blocked is not None and catalog_file.is_file()
    if read_only:
        if not catalog_file.is_file():
            raise DataFolderError(
                f"data folder {root} has no catalog to read ({catalog_file} is missing); give the folder that holds "
                f"the runs (--data-dir or ${DATA_DIR_ENV})"
            )
        logger.info("Opening the data folder %s read-only%s", root, f" ({blocked} is not writable)" if blocked else "")
    else:
        if blocked is not None:
            raise DataFolderError(
                f"data folder {root} is not writable ({blocked}); make it writable (chmod -R u+w {root}) or give "
                f"another data folder (--data-dir or ${DATA_DIR_ENV})"
            )
        for path in (folder.arrays_dir, folder.assets_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                blocker = next((parent for parent in path.parents if parent.exists()), None)
                if blocker is not None and not blocker.is_dir():
                    detail = f"{blocker} is a file"
                else:
                    detail = f"{err.strerror}: {err.filename}"
                raise DataFolderError(
                    f"cannot create the data folder {root} ({detail}); give a data folder you may write "
                    f"(--data-dir or ${DATA_DIR_ENV})"
                ) from None
    if database is not None:  # checked and initialised where the server starts (tiled's imports: 6 s of CPU)
        return dataclasses.replace(folder, database=database)  # its URIs are not rewritten if the folder moves
    if catalog_file.exists():
        _check_catalog(catalog_file, read_only=read_only)
    return _relocate(dataclasses.replace(folder, read_only=read_only, catalog=catalog_file))


def _first_unwritable(folder: DataFolder) -> Path | None:
    """The first existing part of the folder this process may not write (``os.access``), or None.

    As root, ``os.access`` says every file is writable, which it is: a folder
    made read-only with ``chmod`` is then opened for writing.
    """
    for path in (folder.root, folder.tiled_dir, folder.arrays_dir, folder.assets_dir):
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            return path
    for path in (folder.catalog_path, folder.tables_path):
        if path.is_file() and not os.access(path, os.W_OK):
            return path
    return None


def _sqlite_uri(path: Path, mode: str) -> str:
    return f"{path.as_uri()}?mode={mode}"


def _check_catalog(catalog: Path, *, read_only: bool) -> None:
    """Raise DataFolderError unless ``catalog`` is a sound SQLite file with tiled's current schema.

    ``PRAGMA quick_check`` reads every page once (O(file size), about 0.1 s
    for 100 MB) but skips the index cross-checks of ``integrity_check``.
    """
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION

    if not catalog.is_file():
        raise DataFolderError(f"{catalog} is not a file; move it away so that a new catalog can be made there")
    fix = f"restore it from a backup, or move it aside (mv {catalog} {catalog}.damaged) to start an empty catalog"
    try:
        # A writable open lets SQLite roll back a transaction left by a crashed process.
        con = sqlite3.connect(_sqlite_uri(catalog, "ro" if read_only else "rw"), uri=True)
        try:
            problems = [row[0] for row in con.execute("PRAGMA quick_check(3)")]
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = None
            if "alembic_version" in tables:
                row = con.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = row[0] if row else None
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        journal = catalog.with_name(catalog.name + "-journal")
        if read_only and journal.exists():
            raise DataFolderError(
                f"{catalog} has an unfinished transaction ({journal}) that a read-only open cannot recover; "
                "open the folder once with write access"
            ) from None
        raise DataFolderError(f"{catalog} is not a usable SQLite catalog ({err}): {fix}") from None
    if problems != ["ok"]:
        detail = "; ".join(" ".join(problem.split()) for problem in problems)  # one line
        raise DataFolderError(f"{catalog} is damaged (SQLite: {detail[:200]}): {fix}")
    if not tables:
        if read_only:
            raise DataFolderError(f"{catalog} is empty: there are no runs to read")
        return  # an empty file: tiled makes a new catalog in it
    if revision is None:
        raise DataFolderError(f"{catalog} is an SQLite file but not a Tiled catalog (no alembic_version): {fix}")
    if revision != REQUIRED_REVISION:
        if revision in ALL_REVISIONS:
            raise DataFolderError(
                f"{catalog} was made by an older tiled (schema {revision}); back it up, then run "
                f"`tiled catalog upgrade-database sqlite:///{catalog}`"
            )
        raise DataFolderError(
            f"{catalog} was made by a newer tiled (schema {revision}, this tiled knows up to {REQUIRED_REVISION}); "
            "upgrade tiled in this environment"
        )


def _uri_path(uri: str) -> tuple[Any, str, str] | None:
    """``(parsed, path, lead)`` of a local file URI as tiled reads it (``tiled.utils.path_from_uri``), else None.

    ``file://localhost/a/b`` and ``file:///a/b`` give ``/a/b``;
    ``duckdb://localhost//a/b.duckdb`` gives ``/a/b.duckdb`` (the path after
    the third slash), with ``lead`` the ``"/"`` to put back.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return parsed, parsed.path, ""
    if parsed.scheme in {"duckdb", "sqlite"}:
        return parsed, parsed.path[1:], "/"
    return None


def asset_path(uri: str) -> Path | None:
    """The local file a catalog asset URI points to, as tiled opens it, or None for other schemes."""
    parts = _uri_path(uri)
    return Path(parts[1]) if parts else None


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _rebase(uri: str, old: str, new: str) -> str | None:
    """``uri`` with the folder ``old`` replaced by ``new``, in the same URI form; None if not under ``old``.

    Tiled writes plain paths (``file://localhost/...``, ``duckdb://localhost/...``);
    ``Path.as_uri`` (the HDF5 writer's stream resources) percent-encodes
    them: both forms are matched and kept.
    """
    parts = _uri_path(uri)
    if parts is None:
        return None
    parsed, path, lead = parts
    for prefix, replacement in ((old, new), (quote(old), quote(new))):
        if _under(path, prefix):
            return urlunparse(parsed._replace(path=lead + replacement.rstrip("/") + path[len(prefix.rstrip("/")):]))
    return None


def _catalog_root(uri: str) -> str | None:
    """The data folder a writable (tiled-internal) asset URI was written in, or None."""
    parts = _uri_path(uri)
    if parts is None:
        return None
    parsed, path, _ = parts
    tables = f"/{TILED_SUBDIR}/{TABLES_NAME}"
    if parsed.scheme == "duckdb" and path.endswith(tables):
        return path[: -len(tables)] or None
    index = path.find(f"/{TILED_SUBDIR}/{ARRAYS_SUBDIR}/")
    return path[:index] if index > 0 else None


_ASSET_ROWS = """
SELECT a.id, a.data_uri, COALESCE(MAX(ds.management = 'writable'), 0)
FROM assets AS a
LEFT JOIN data_source_asset_association AS link ON link.asset_id = a.id
LEFT JOIN data_sources AS ds ON ds.id = link.data_source_id
GROUP BY a.id
"""


def _asset_rows(con: sqlite3.Connection) -> list[tuple[int, str, bool]]:
    """``(id, data_uri, writable)`` of every asset of the catalog (none before tiled made its tables)."""
    if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'assets'").fetchone() is None:
        return []
    return [(int(i), str(u), bool(w)) for i, u, w in con.execute(_ASSET_ROWS) if u is not None]


def _read_marker(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    fix = "delete it: it is written again from the catalog on the next open"
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataFolderError(f"{path} is damaged ({err}); {fix}") from None
    if not isinstance(marker, dict) or not isinstance(marker.get("path"), str):
        raise DataFolderError(f"{path} is damaged (not a JSON object with a 'path'); {fix}")
    return marker


def _write_marker(path: Path, marker: dict[str, Any]) -> None:
    """Write the marker atomically (a temporary file, then ``os.replace``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(tmp, path)


def _rebase_plan(
    rows: list[tuple[int, str, bool]], old_roots: list[str], root: str
) -> dict[int, tuple[str, str, bool]]:
    """``{asset id: (old uri, new uri, writable)}`` for the assets under one of ``old_roots``."""
    plan = {}
    for asset_id, uri, writable in rows:
        parts = _uri_path(uri)
        if parts is None or _under(parts[1], root) or _under(parts[1], quote(root)):
            continue
        for old in old_roots:
            new_uri = _rebase(uri, old, root)
            if new_uri is not None:
                plan[asset_id] = (uri, new_uri, writable)
                break
    return plan


def _apply_plan(con: sqlite3.Connection, plan: dict[int, tuple[str, str, bool]]) -> int:
    """Rewrite the assets' URIs (inside the caller's transaction); returns how many were merged.

    A URI already in the catalog (a run written at the new path by a version
    that did not rewrite) is unique in ``assets``: the old asset's links then
    move to the existing row and the old row goes.
    """
    existing = {uri: asset_id for asset_id, uri in con.execute("SELECT id, data_uri FROM assets")}
    merged = 0
    for asset_id, (old_uri, new_uri, _) in plan.items():
        other = existing.get(new_uri)
        if other is not None and other != asset_id:
            con.execute(
                "UPDATE OR IGNORE data_source_asset_association SET asset_id = ? WHERE asset_id = ?", (other, asset_id)
            )
            con.execute("DELETE FROM data_source_asset_association WHERE asset_id = ?", (asset_id,))
            con.execute("DELETE FROM assets WHERE id = ?", (asset_id,))
            merged += 1
        else:
            con.execute("UPDATE assets SET data_uri = ? WHERE id = ?", (new_uri, asset_id))
            existing[new_uri] = asset_id
        existing.pop(old_uri, None)
    return merged


def _check_plan(folder: DataFolder, plan: dict[int, tuple[str, str, bool]], old_roots: list[str]) -> None:
    """Refuse a rewrite that would leave the catalog's own storage pointing at nothing."""
    internal = [asset_path(new) for _, new, writable in plan.values() if writable]
    missing = [path for path in internal if path is not None and not path.exists()]
    if internal and len(missing) == len(internal):
        raise DataFolderError(
            f"{folder.catalog_path} was written in {', '.join(old_roots)} and none of its files are in "
            f"{folder.root} (no {missing[0]}): it belongs to another data folder; open that folder, or copy the "
            "whole folder (tiled/ and assets/ together)"
        )
    absent = [path for path in (asset_path(new) for _, new, _ in plan.values()) if path and not path.exists()]
    if absent:
        logger.warning(
            "%d of the %d files the catalog of %s points to are missing after the move (e.g. %s); "
            "reading those runs will name them", len(absent), len(plan), folder.root, absent[0]
        )


def _relocate(folder: DataFolder) -> DataFolder:
    """Rewrite the catalog's URIs if the folder was moved or copied; update ``tiled/folder.json``."""
    root = str(folder.root)
    marker = _read_marker(folder.marker_path)
    recorded = marker["path"] if marker else None
    catalog = folder.catalog_path
    if not catalog.exists():
        if not folder.read_only and (marker is None or recorded != root):
            _write_marker(folder.marker_path, {"format": _MARKER_FORMAT, "id": uuid.uuid4().hex, "path": root})
        return folder

    con = sqlite3.connect(_sqlite_uri(catalog, "ro" if folder.read_only else "rw"), uri=True, isolation_level=None)
    try:
        rows = _asset_rows(con)
        written_in = {r for r in (_catalog_root(uri) for _, uri, writable in rows if writable) if r}
        if recorded and written_in and recorded not in written_in and recorded != root:
            logger.warning(
                "%s records the path %s, but the catalog was written in %s: going by the catalog",
                folder.marker_path, recorded, ", ".join(sorted(written_in)),
            )
        candidates = written_in | ({recorded} if recorded else set())
        # Longest first; never a folder that contains the new one, or lies inside it.
        old_roots = sorted(
            (r for r in candidates if not (_under(root, r) or _under(r, root))), key=len, reverse=True
        )
        plan = _rebase_plan(rows, old_roots, root)
        if plan:
            _check_plan(folder, plan, old_roots)
            if folder.read_only:
                return _relocated_copy(folder, plan, old_roots)
            con.execute("BEGIN IMMEDIATE")
            try:  # planned again under the write lock: another process may have rewritten it meanwhile
                plan = _rebase_plan(_asset_rows(con), old_roots, root)
                merged = _apply_plan(con, plan)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            if plan:
                logger.warning(
                    "Data folder %s was used at %s before: rewrote %d file URIs of %s to point into it%s",
                    root, ", ".join(old_roots), len(plan), catalog,
                    f" ({merged} merged with existing ones)" if merged else "",
                )
    finally:
        con.close()

    if not folder.read_only and (marker is None or recorded != root):
        _write_marker(folder.marker_path, _next_marker(marker, root))
    return folder


def _next_marker(marker: dict[str, Any] | None, root: str) -> dict[str, Any]:
    """The marker for ``root``: same id if moved, a new one if copied (the original still has it)."""
    new = {"format": _MARKER_FORMAT, "id": uuid.uuid4().hex, "path": root}
    if marker is None:
        return new
    previous = Path(marker["path"])
    with contextlib.suppress(DataFolderError):
        original = _read_marker(previous / TILED_SUBDIR / MARKER_NAME)
        if original is not None and original.get("id") == marker.get("id"):
            return {**new, "copied_from": {"path": str(previous), "id": marker.get("id")}}
    return {**new, "id": marker.get("id") or new["id"], "moved_from": str(previous)}


def _relocated_copy(folder: DataFolder, plan: dict[int, tuple[str, str, bool]], old_roots: list[str]) -> DataFolder:
    """A read-only folder that moved: its catalog, rewritten, in a temporary folder (the original is untouched)."""
    temporary = Path(tempfile.mkdtemp(prefix="xfct-catalog-"))
    copy = temporary / CATALOG_NAME
    try:
        shutil.copyfile(folder.catalog_path, copy)
        con = sqlite3.connect(copy, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            _apply_plan(con, plan)
            con.execute("COMMIT")
        finally:
            con.close()
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.warning(
        "Data folder %s (read-only) was used at %s before: reading it through a rewritten copy of its catalog "
        "(%d file URIs); make it writable once to rewrite the catalog itself", folder.root, ", ".join(old_roots),
        len(plan),
    )
    return dataclasses.replace(folder, catalog=copy, temporary=temporary)
