"""Fast reads of a stream's data keys from Tiled, for :func:`~xfct_bluesky.storage.reading.load_tomo`.

One listing of the stream's parts, then every array key streamed from its
``/array/full`` link straight into a preallocated numpy array (raw bytes on
loopback, the client's compression elsewhere, large arrays in row blocks),
scalar keys as selected table columns, up to ``max_workers`` requests at
once through the run's own authenticated client. The listing carries each
part's data sources, so that, on a server on this machine, a file a key
points to that is missing is named (:class:`~xfct_bluesky.storage.DataFolderError`)
before any read, instead of the server's HTTP 500 after tiled's retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..net import is_loopback

DEFAULT_MAX_WORKERS = 4  # concurrent requests of load_tomo


def read_key(stream_node: Any, key: str) -> np.ndarray:
    """Read one data key of a stream (a table column or an array node) as numpy."""
    values = stream_node[key].read()
    return np.asarray(values)



def stream_parts(stream_node: Any) -> dict[str, Any]:
    """The stream's array and table clients, ``{name: client}``, from one listing request.

    A bluesky-tiled-plugins stream (``BlueskyEventStreamV3``) is a composite
    node whose ``base`` container holds one array per 2D data key and one
    ``internal`` table for the scalar keys. Asking the composite for
    ``stream[key]`` costs two requests per key (it lists the stream again,
    then fetches the item); listing ``base`` once gives every client at once.
    The listing includes each part's data sources (``include_data_sources``,
    same request), for :func:`check_local_files`.
    """
    container = getattr(stream_node, "base", stream_node)
    if not hasattr(container, "items"):
        return {}  # read key by key through stream_node[key]
    if hasattr(container, "new_variation"):
        container = container.new_variation(include_data_sources=True)
    return dict(container.items())


def check_local_files(part: Any, key: str) -> None:
    """Raise DataFolderError if a file that ``part`` (one key's client) points to is missing on this machine.

    Only for a server on loopback, whose files are this machine's (the data
    folder of :func:`~xfct_bluesky.storage.embedded_server` or
    ``xfct-bluesky serve``); elsewhere the server's own error stands. Uses
    the data sources the listing brought (no request); a client listed
    without them is not checked. The path is the one the server opens
    (``tiled.utils.path_from_uri``: not percent-decoded).
    """
    from urllib.parse import unquote

    from .server import DataFolderError, asset_path

    context = getattr(part, "context", None)
    item = getattr(part, "item", None)
    if context is None or not isinstance(item, dict) or not is_loopback(context.api_uri):
        return
    for source in item.get("attributes", {}).get("data_sources") or []:
        for asset in source.get("assets") or []:
            path = asset_path(asset.get("data_uri") or "")
            if path is None or path.exists():
                continue
            where = "/".join(getattr(part, "path_parts", [key]))
            if Path(unquote(str(path))).exists():
                raise DataFolderError(
                    f"{asset['data_uri']}: tiled cannot open this file, its URI is percent-encoded (the path has "
                    f"spaces or non-ASCII characters) and tiled does not decode it ({where}); move the data folder "
                    "to a path without them"
                )
            raise DataFolderError(
                f"missing file {path}: {where} (data key {key!r}) points to it; restore it from a backup, or from "
                "the data folder this one was copied from"
            )


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
    results[key] = read_key(stream_node, key)


def read_stream_keys(
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
        compression = context is None or not is_loopback(context.api_uri)
    accept_encoding = None if compression else "identity"

    parts = stream_parts(stream_node)
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
            check_local_files(part, key)
            results[key], fetches = _array_fetches(part, accept_encoding)
            array_tasks.extend(fetches)
            continue
        table = next((name for name, t in tables.items() if key in t.columns), None)
        if table is not None:
            check_local_files(tables[table], key)
            table_columns.setdefault(table, []).append(key)
        else:
            other_tasks.append(functools.partial(_read_one_key, stream_node, key, results))
    # Tables first: one small request each, and theta is usually among them.
    tasks = [
        functools.partial(_read_table_columns, tables[name], columns, results)
        for name, columns in table_columns.items()
    ]
    tasks += other_tasks + array_tasks

    workers = min(max_workers or DEFAULT_MAX_WORKERS, len(tasks))
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
