"""Tiled storage: an embedded server, the run catalog, TiledWriter, and readers.

The data flow is ``RunEngine -> TiledWriter -> Tiled (HTTP) -> client``:

- :func:`embedded_server` runs a Tiled server in this process (SQLite catalog,
  zarr/duckdb storage, loopback only) under :func:`default_data_dir`; external
  HDF5 files written by detectors go under ``data_dir / "assets"``, which the
  server may read.
- :func:`runs_container` gives the ``CatalogOfBlueskyRuns`` container the runs
  are written into, so that ``cat[-1]``, ``cat[scan_id]`` and searches on the
  start document work.
- :func:`make_tiled_writer` builds the callback to subscribe to the RunEngine;
  runs that could not be stored are kept as JSON Lines, and
  :func:`replay_backup` stores them later.
- :func:`load_tomo` and :func:`load_spectra` read a stored run back as numpy
  arrays for the analysis code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ASSETS_SUBDIR",
    "DATA_DIR_ENV",
    "TILED_SUBDIR",
    "TomoData",
    "default_data_dir",
    "embedded_server",
    "load_spectra",
    "load_tomo",
    "make_tiled_writer",
    "read_backup",
    "replay_backup",
    "runs_container",
]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "XFCT_BLUESKY_DATA"
"""Environment variable that overrides :func:`default_data_dir`."""
TILED_SUBDIR = "tiled"
"""Sub-folder of the data folder holding the Tiled catalog and its internal storage."""
ASSETS_SUBDIR = "assets"
"""Sub-folder of the data folder for external files (HDF5 spectra); readable by the server."""

_CATALOG_SPEC_NAME = "CatalogOfBlueskyRuns"
_CATALOG_SPEC_VERSION = "3.0"  # the SQL layout that TiledWriter writes
_DEFAULT_STREAM = "primary"
_DEFAULT_MAX_WORKERS = 4  # concurrent requests of load_tomo

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


class _JSONLinesBackup(MutableMapping):
    """A mapping ``key -> list of documents`` stored as one JSON Lines file per key.

    TiledWriter's ``backup_dictionary`` store: its ``JSONDictWriter`` does
    ``store[key] = []`` then ``store[key].append({"name": ..., "doc": ...})``,
    with ``key`` the first block of the run's uid. Unlike TiledWriter's own
    ``backup_directory`` writer, documents are encoded with
    ``event_model.NumpyEncoder``: events carrying numpy arrays (2D maps) make
    the plain ``json.dump`` there fail half-way through a line, leaving a
    corrupt file. The files have the same layout: ``{key}.jsonl``, one
    ``{"name": ..., "doc": ...}`` per line.
    """

    class _Appender:
        def __init__(self, path: Path) -> None:
            self.path = path

        def append(self, item: dict[str, Any]) -> None:
            from event_model import NumpyEncoder

            line = json.dumps(item, cls=NumpyEncoder)  # encode fully before touching the file
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(line + "\n")

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.jsonl"

    def __getitem__(self, key: str) -> _JSONLinesBackup._Appender:
        if not self._path(key).exists():
            raise KeyError(key)
        return self._Appender(self._path(key))

    def __setitem__(self, key: str, items: list[dict[str, Any]]) -> None:
        self._path(key).write_text("", encoding="utf-8")
        appender = self._Appender(self._path(key))
        for item in items:
            appender.append(item)
        logger.warning("Tiled could not store run %s; its documents go to %s", key, self._path(key))

    def __delitem__(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return (path.stem for path in sorted(self.directory.glob("*.jsonl")))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def make_tiled_writer(
    container: Any,
    backup_directory: str | Path | None = None,
    *,
    batch_size: int | None = None,
) -> Any:
    """A TiledWriter writing runs into ``container``, to subscribe to a RunEngine.

    Parameters
    ----------
    container : tiled.client.container.Container
        Usually :func:`runs_container`. The server must already be up:
        building the writer makes an HTTP request.
    backup_directory : str or pathlib.Path, optional
        If given (created if missing), a run that Tiled fails to store (server
        down, ...) is written there in full, as ``{uid[:8]}.jsonl`` (one
        ``{"name": ..., "doc": ...}`` per line), and the scan goes on; store it
        later with :func:`replay_backup`. Without it, a write failure aborts
        the scan after tiled's retries (about 24 s).
    batch_size : int, optional
        Events and StreamDatums gathered before a write; default TiledWriter's
        (10000, i.e. written at the run's stop: fast, not live). ``1`` writes
        each event at once, about 10x slower. Live analysis should subscribe
        to the RunEngine rather than poll Tiled.

    Returns
    -------
    bluesky_tiled_plugins.TiledWriter
        Callback ``(name, doc)``; ``RE.subscribe(writer)``.

    Notes
    -----
    The backup goes through TiledWriter's ``backup_dictionary`` with a store
    that writes JSON Lines files, rather than its ``backup_directory``: the
    latter's writer (bluesky-tiled-plugins 2.0.12) cannot encode numpy arrays,
    so any run with array data in its events would leave a truncated file.
    """
    from bluesky_tiled_plugins import TiledWriter

    kwargs: dict[str, Any] = {}
    if backup_directory is not None:
        kwargs["backup_dictionary"] = _JSONLinesBackup(Path(backup_directory))
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1 (1 writes each event at once).")
        kwargs["batch_size"] = int(batch_size)
    return TiledWriter(container, **kwargs)


def read_backup(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``(name, doc)`` pairs of a backup file written by :func:`make_tiled_writer`.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.jsonl`` file of the backup directory.

    Yields
    ------
    (str, dict)
        Documents in the order the RunEngine emitted them; arrays as lists.
    """
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not a JSON document ({err}).") from err
            yield item["name"], item["doc"]


def replay_backup(path: str | Path, container: Any) -> str:
    """Store a run kept by the backup of :func:`make_tiled_writer` into Tiled.

    Parameters
    ----------
    path : str or pathlib.Path
        The run's ``.jsonl`` backup file.
    container : tiled.client.container.Container
        Where to write it, usually :func:`runs_container`.

    Returns
    -------
    str
        The uid of the run stored.

    Raises
    ------
    ValueError
        If the file does not start with a start document.

    Notes
    -----
    A run the server lost mid-scan is usually there in part (its start
    document, perhaps some streams, no stop): that partial node is replaced
    by the full run from the backup. A run already stored complete (with its
    stop document) is left alone. Array dtypes are restored from the
    descriptors' ``dtype_numpy``. External files (HDF5 spectra) are
    registered where the documents point: they must lie in the server's
    readable storage to be read.
    """
    from bluesky_tiled_plugins import TiledWriter

    documents = read_backup(path)
    first = next(documents, None)
    if first is None or first[0] != "start":
        raise ValueError(f"{path} does not begin with a start document; is it a run backup?")
    uid = first[1]["uid"]
    if uid in container:
        if container[uid].metadata.get("stop"):
            logger.info("Run %s is already stored complete; %s not replayed", uid, path)
            return uid
        logger.info("Replacing the partial run %s left by the interrupted write", uid)
        container.delete_contents(uid, recursive=True, external_only=False)
    writer = TiledWriter(container)
    writer(*first)
    for name, doc in documents:
        writer(name, doc)
    logger.info("Replayed run %s from %s", uid, path)
    return uid


#: Where :func:`replay_directory` moves the backup files it has stored.
REPLAYED_SUBDIR = "replayed"


def replay_directory(directory: str | Path, container: Any) -> list[tuple[Path, str | None, str]]:
    """Replay every backup file of ``directory`` into Tiled; move each stored one aside.

    Returns
    -------
    list of (path, uid or None, outcome)
        ``outcome`` is "stored" (then the file is moved to ``replayed/`` beside
        it, never deleted) or the error that kept it in place.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a folder; give the backup folder (default <data dir>/backup)")
    done = directory / REPLAYED_SUBDIR
    results: list[tuple[Path, str | None, str]] = []
    for path in sorted(directory.glob("*.jsonl")):
        try:
            uid = replay_backup(path, container)
        except Exception as exc:  # keep the file, report, go on with the others
            logger.exception("Could not replay %s", path)
            results.append((path, None, f"kept: {type(exc).__name__}: {exc}"))
            continue
        done.mkdir(exist_ok=True)
        target = done / path.name
        path.replace(target)
        results.append((target, uid, "stored"))
    return results


@dataclass
class TomoData:
    """Elemental maps of a tomography run, read back from Tiled.

    Attributes
    ----------
    theta : numpy.ndarray
        Rotation angle of each projection, shape ``(n_angles,)``, in the units
        recorded (degrees for this package's rotation stages).
    maps : dict of str to numpy.ndarray
        Each 2D-per-event data key of the stream, as an
        ``(n_angles, ny, nx)`` array in event order, dtype as recorded.
    metadata : dict
        The run's start document.
    uid : str
        The run's uid.
    theta_key : str
        The data key theta was read from.
    """

    theta: np.ndarray
    maps: dict[str, np.ndarray]
    metadata: dict[str, Any]
    uid: str
    theta_key: str = "theta"


def _stream(run: Any, stream: str) -> Any:
    try:
        return run[stream]
    except KeyError:
        available = sorted(run)
        raise KeyError(f"Run has no stream {stream!r}; streams: {available}.") from None


def _data_keys(stream_node: Any) -> dict[str, dict[str, Any]]:
    data_keys = stream_node.metadata.get("data_keys")
    if not data_keys:
        raise ValueError(
            "The stream has no 'data_keys' in its metadata; it was not written by "
            "bluesky_tiled_plugins.TiledWriter."
        )
    return dict(data_keys)


def _choose_theta_key(
    data_keys: dict[str, dict[str, Any]], theta_key: str | None, start: dict[str, Any] | None = None
) -> str:
    """The data key of the rotation angle: the argument, the start document's, then a guess."""
    if theta_key is not None:
        if theta_key not in data_keys:
            raise KeyError(f"theta_key={theta_key!r} is not a data key of the stream; keys: {sorted(data_keys)}.")
        return theta_key
    recorded = (start or {}).get("theta_key")
    if isinstance(recorded, str) and recorded:
        if recorded in data_keys:
            return recorded
        logger.warning(
            "The start document names theta_key=%r, which is not a data key of this stream; "
            "looking for 'theta' or a '*rotation' key instead.",
            recorded,
        )
    if "theta" in data_keys:
        return "theta"
    candidates = sorted(k for k, v in data_keys.items() if k.endswith("rotation") and not v.get("shape"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise KeyError(
            f"No rotation angle in the stream: no 'theta' and no scalar key ending in 'rotation' "
            f"among {sorted(data_keys)}; pass theta_key=..."
        )
    raise KeyError(f"Several candidate rotation keys {candidates}; pass theta_key=... to choose one.")


def _read_key(stream_node: Any, key: str) -> np.ndarray:
    """Read one data key of a stream (a table column or an array node) as numpy."""
    values = stream_node[key].read()
    return np.asarray(values)


def _is_loopback(url: Any) -> bool:
    """Whether ``url`` points at this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    import ipaddress

    import httpx

    host = httpx.URL(str(url)).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stream_parts(stream_node: Any) -> dict[str, Any]:
    """The stream's array and table clients, ``{name: client}``, from one listing request.

    A bluesky-tiled-plugins stream (``BlueskyEventStreamV3``) is a composite
    node whose ``base`` container holds one array per 2D data key and one
    ``internal`` table for the scalar keys. Asking the composite for
    ``stream[key]`` costs two requests per key (it lists the stream again,
    then fetches the item); listing ``base`` once gives every client at once.
    """
    container = getattr(stream_node, "base", stream_node)
    if not hasattr(container, "items"):
        return {}  # read key by key through stream_node[key]
    return dict(container.items())


def _fetch_rows(client: Any, out: np.ndarray, start: int, stop: int, accept_encoding: str | None) -> None:
    """GET rows ``start:stop`` of an array node straight into ``out[start:stop]``.

    One request to the node's ``/array/full`` link (Tiled's HTTP API, as
    ``ArrayClient.read`` makes it), through the client's own authenticated
    ``httpx`` session, with ``Accept-Encoding`` overridden if asked. The body
    is streamed into the destination rows: one copy, and the array is
    writable and owns its memory.
    """
    from urllib.parse import parse_qs, urlparse

    from tiled.client.utils import handle_error, retry_context

    url = client.item["links"]["full"]
    part_shape = (stop - start, *out.shape[1:])
    params: dict[str, Any] = {
        **parse_qs(urlparse(url).query),
        "expected_shape": ",".join(map(str, part_shape)),
    }
    if (start, stop) != (0, out.shape[0]):
        params["slice"] = f"{start}:{stop}"
    headers = {"Accept": "application/octet-stream"}
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    dest = out[start:stop].reshape(-1).view(np.uint8)
    context = client.context
    with context.throttle():
        for attempt in retry_context(context):
            with attempt:
                with context.http_client.stream("GET", url, headers=headers, params=params) as response:
                    if response.is_error:
                        response.read()
                        handle_error(response)
                    pos = 0
                    for chunk in response.iter_bytes():
                        end = pos + len(chunk)
                        if end > dest.size:
                            pos = end
                            break
                        dest[pos:end] = np.frombuffer(chunk, dtype=np.uint8)
                        pos = end
    if pos != dest.size:
        raise ValueError(
            f"{url}: the server sent {'more than ' if pos > dest.size else ''}{pos} bytes for rows "
            f"{start}:{stop}; expected {dest.size} ({part_shape} {out.dtype})."
        )


def _array_fetches(client: Any, accept_encoding: str | None) -> tuple[np.ndarray, list[Any]]:
    """The output array of an array node and the requests that fill it.

    Arrays larger than tiled's ``ArrayClient.RESPONSE_BYTESIZE_LIMIT`` (100 MiB)
    are fetched in blocks of whole rows (leading axis) under that limit, the
    way ``ArrayClient.read`` splits them, so that no response exceeds the
    server's own limit; the blocks are independent requests and run
    concurrently.
    """
    import functools

    from tiled.client.array import ArrayClient

    out = np.empty(tuple(client.shape), dtype=client.dtype)
    if out.size == 0:
        return out, []
    limit = getattr(client, "RESPONSE_BYTESIZE_LIMIT", ArrayClient.RESPONSE_BYTESIZE_LIMIT)
    row_nbytes = out[0].nbytes if out.ndim else out.nbytes
    if out.ndim == 0 or row_nbytes > limit:
        # Scalars, or single rows above the limit: let tiled split them its own way.
        def read_whole() -> None:
            out[...] = np.asarray(client.read())

        return out, [read_whole]
    rows = max(1, limit // row_nbytes)
    n = out.shape[0]
    return out, [
        functools.partial(_fetch_rows, client, out, start, min(start + rows, n), accept_encoding)
        for start in range(0, n, rows)
    ]


def _read_table_columns(table: Any, columns: list[str], results: dict[str, np.ndarray]) -> None:
    """Read ``columns`` of a table node (one request) into ``results``."""
    frame = table.read(columns)
    if hasattr(frame, "compute"):  # a dask client
        frame = frame.compute()
    results.update({column: frame[column].to_numpy() for column in columns})


def _read_one_key(stream_node: Any, key: str, results: dict[str, np.ndarray]) -> None:
    results[key] = _read_key(stream_node, key)


def _read_stream_keys(
    stream_node: Any, keys: list[str], *, compression: bool | None, max_workers: int | None
) -> dict[str, np.ndarray]:
    """Read several data keys of one stream concurrently, as numpy arrays.

    Array keys are fetched directly from their ``/array/full`` links, scalar
    keys as selected columns of their table (one request per table); keys
    found neither way are read through ``stream_node[key]``. See
    :func:`load_tomo` for ``compression`` and ``max_workers``.
    """
    import functools
    from concurrent.futures import ThreadPoolExecutor

    from tiled.structures.core import StructureFamily

    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers={max_workers} must be >= 1 (1 reads the keys one after the other).")
    if compression is None:
        context = getattr(stream_node, "context", None)
        compression = context is None or not _is_loopback(context.api_uri)
    accept_encoding = None if compression else "identity"

    parts = _stream_parts(stream_node)
    tables = {
        name: part
        for name, part in parts.items()
        if getattr(part, "structure_family", None) == StructureFamily.table
    }
    results: dict[str, np.ndarray] = {}
    table_columns: dict[str, list[str]] = {}
    array_tasks: list[Any] = []
    other_tasks: list[Any] = []
    for key in dict.fromkeys(keys):  # unique, in order
        part = parts.get(key)
        if getattr(part, "structure_family", None) == StructureFamily.array:
            results[key], fetches = _array_fetches(part, accept_encoding)
            array_tasks.extend(fetches)
            continue
        table = next((name for name, t in tables.items() if key in t.columns), None)
        if table is not None:
            table_columns.setdefault(table, []).append(key)
        else:
            other_tasks.append(functools.partial(_read_one_key, stream_node, key, results))
    # Tables first: one small request each, and theta is usually among them.
    tasks = [
        functools.partial(_read_table_columns, tables[name], columns, results)
        for name, columns in table_columns.items()
    ]
    tasks += other_tasks + array_tasks

    workers = min(max_workers or _DEFAULT_MAX_WORKERS, len(tasks))
    if workers <= 1:
        for task in tasks:
            task()
        return results
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xfct-tiled-read") as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def load_tomo(
    run: Any,
    theta_key: str | None = None,
    *,
    stream: str = _DEFAULT_STREAM,
    compression: bool | None = None,
    max_workers: int | None = None,
) -> TomoData:
    """Read the rotation angles and 2D maps of a stored run.

    Parameters
    ----------
    run : bluesky_tiled_plugins.BlueskyRun
        A run written by TiledWriter, e.g. ``cat[-1]`` or ``cat[uid]``.
    theta_key : str, optional
        Data key of the rotation angle. Default: the start document's
        ``theta_key`` (this package's plans record it) if it is a data key of
        the stream, else ``"theta"`` if present, else the single scalar key
        ending in ``"rotation"`` (a rotation stage's readback, e.g.
        ``"microprobe_rotation"``).
    stream : str, optional
        Event stream to read. Default ``"primary"``.
    compression : bool, optional
        Whether the server may compress the data it sends. ``True``: the
        client's usual negotiation (blosc2 or zstd for arrays); ``False``:
        raw bytes (``Accept-Encoding: identity``). Default ``None``: ``False``
        when the server is on this machine (loopback), ``True`` otherwise.
        See Notes.
    max_workers : int, optional
        Requests in flight at once. Default 4; ``1`` reads one key after
        the other.

    Returns
    -------
    TomoData
        ``theta`` ``(n,)`` float array, ``maps`` of every data key with a
        2D per-event shape as ``(n, ny, nx)`` arrays in their recorded dtype
        (writable, C-contiguous), the start document and uid. External
        (``STREAM:``) keys such as full spectra are not loaded; use
        :func:`load_spectra`.

    Raises
    ------
    KeyError
        If the stream or the rotation key is missing or ambiguous.
    ValueError
        If a map does not have one frame per angle.

    Notes
    -----
    Maps keep the dtype declared by the device's ``dtype_numpy``; a device
    that does not declare it gets its arrays widened to float64 by TiledWriter.

    The stream's parts are listed in one request; each map is then one
    request to its ``/array/full`` link (tiled's HTTP API, through the run's
    own authenticated client), streamed straight into the output array, and
    the scalar keys one request for their table; up to ``max_workers`` run
    concurrently. Compression trades CPU for bytes: on loopback the bytes
    are nearly free and compressing 20 MB maps on the server then
    decompressing them here costs more than sending them raw (about 0.16 s
    against 0.09 s per 360x128x128 uint32 map in ``benchmarks/bench_storage.py``);
    over a network of 1 Gbit/s or less, compression wins for count maps.
    """
    node = _stream(run, stream)
    data_keys = _data_keys(node)
    start = dict(run.metadata["start"])
    tkey = _choose_theta_key(data_keys, theta_key, start)
    map_keys = [
        key
        for key, spec in sorted(data_keys.items())
        if len(spec.get("shape") or []) == 2 and not spec.get("external")
    ]
    values = _read_stream_keys(node, [tkey, *map_keys], compression=compression, max_workers=max_workers)
    theta = np.array(values[tkey], dtype=float).reshape(-1)  # a copy, even if theta_key names a map

    maps: dict[str, np.ndarray] = {}
    for key in map_keys:
        arr = values[key]
        shape = tuple(data_keys[key]["shape"])
        if arr.shape != (theta.size, *shape):
            raise ValueError(
                f"Map {key!r} read back with shape {arr.shape}; expected {(theta.size, *shape)} "
                f"(one {shape} map per angle)."
            )
        maps[key] = arr

    logger.debug("Loaded run %s: %d angles from %r, maps %s", start.get("uid"), theta.size, tkey, sorted(maps))
    return TomoData(theta=theta, maps=maps, metadata=start, uid=start["uid"], theta_key=tkey)


def load_theta(run: Any, theta_key: str | None = None, *, stream: str = _DEFAULT_STREAM) -> np.ndarray:
    """The rotation angles of a stored run's events, without its maps.

    Same choice of ``theta_key`` as :func:`load_tomo`. A run interrupted
    before its first event has no stream: an empty array is returned.
    """
    try:
        node = run[stream]
    except KeyError:
        return np.zeros(0)
    tkey = _choose_theta_key(_data_keys(node), theta_key, dict(run.metadata["start"]))
    return np.array(_read_key(node, tkey), dtype=float).reshape(-1)


def load_spectra(run: Any, key: str, *, stream: str = _DEFAULT_STREAM, index: Any = None) -> np.ndarray:
    """Read an external (HDF5, ``STREAM:``) data key through Tiled.

    Parameters
    ----------
    run : bluesky_tiled_plugins.BlueskyRun
        A run written by TiledWriter.
    key : str
        Data key, e.g. ``"xrf_spectra"``.
    stream : str, optional
        Event stream. Default ``"primary"``.
    index : int, slice or tuple, optional
        Part to read, e.g. ``(3,)`` for the 4th event or
        ``(slice(None), 10, 20)`` for one pixel's spectrum at every event;
        only that part crosses the network. Default: everything,
        ``(n_events, *per_event_shape)``.

    Returns
    -------
    numpy.ndarray
        The data, in the dtype the detector wrote.

    Raises
    ------
    KeyError
        If the stream or key is missing.
    """
    node = _stream(run, stream)
    try:
        array_client = node[key]
    except KeyError:
        raise KeyError(f"Stream {stream!r} has no data key {key!r}; keys: {sorted(node)}.") from None
    data = array_client.read() if index is None else array_client[index]
    return np.asarray(data)


def v1_broker(catalog: Any):
    """databroker's v1 ``Broker`` over a runs catalog, for legacy user code.

    ``db = v1_broker(cat); h = db[-1]; h.table()`` gives the pandas tables of
    databroker v1 (``db[uid]``, ``db(plan_name="xfct_tomo")``, ``h.table("baseline")``).

    Notes
    -----
    Two upstream defects are worked around (bluesky-tiled-plugins 2.0.12):

    * ``run.v1`` builds its ``Broker`` over the run rather than its catalog,
      so the header looks the run up inside itself and fails (HTTP 404);
      a Broker over the catalog works.
    * ``CatalogOfBlueskyRuns.v2``, which ``Broker`` calls, shallow-copies the
      client's ``structure_clients`` map and sets "BlueskyRun" to the v2
      class in it; the copy shares its mapping with tiled's process-wide
      default, so every later client in the process would read runs in the v2
      layout. The Broker here gets a catalog client with a map of its own.

    Needs databroker's v1 extras ``doct`` and ``humanize`` (``.[legacy]``).
    """
    import functools

    from databroker.v1 import Broker
    from tiled.utils import OneShotCachedMap

    shared = catalog.structure_clients
    own = OneShotCachedMap()
    for key in shared:  # lazily delegate: nothing is imported or instantiated here
        own.set(key, functools.partial(shared.__getitem__, key))
    isolated = type(catalog)(catalog.context, item=catalog.item, structure_clients=own)
    return Broker(isolated)
