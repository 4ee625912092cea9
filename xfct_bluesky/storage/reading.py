"""Reading stored runs back as numpy arrays for the analysis code.

:func:`load_tomo` (theta and every 2D map of a tomography, fast on
loopback), :func:`load_theta`, :func:`load_spectra` (external HDF5 data
through Tiled) and :func:`v1_broker` (databroker's v1 view for legacy code).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._fetch import _check_local_files, _read_key, _read_stream_keys, _stream_parts

logger = logging.getLogger(__name__)

_DEFAULT_STREAM = "primary"


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



def _interrupted(run: Any, stream: str) -> ValueError | None:
    """The error for a run without events whose acquisition never ended (no stop document), else None."""
    if run.metadata.get("stop"):
        return None
    uid = run.metadata["start"]["uid"]
    return ValueError(
        f"run {uid[:8]} has no {stream!r} events in Tiled and no stop document: its acquisition was "
        f"interrupted before they were stored. `xfct-bluesky recover` stores what the acquisition's journal "
        f"holds (a session does it when it starts); then xfct_tomo(mp, resume={uid!r}, catalog=cat) takes "
        "the missing angles")


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
    DataFolderError
        If the server is on this machine and a file a map or the table points
        to (under ``tiled/``) is missing: the message names it, before any
        data is read.

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
    start = dict(run.metadata["start"])
    try:
        node = _stream(run, stream)
    except KeyError as err:
        raise _interrupted(run, stream) or err from None
    data_keys = _data_keys(node)
    tkey = _choose_theta_key(data_keys, theta_key, start)
    map_keys = [
        key
        for key, spec in sorted(data_keys.items())
        if len(spec.get("shape") or []) == 2 and not spec.get("external")
    ]
    try:
        values = _read_stream_keys(node, [tkey, *map_keys], compression=compression, max_workers=max_workers)
    except KeyError as err:  # a descriptor and no events: the writer died before it stored them
        raise _interrupted(run, stream) or err from None
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
    DataFolderError
        If the server is on this machine and the file the key points to
        (the run's HDF5 file under ``assets/``) is missing: the message names
        it. Elsewhere a missing file is the server's HTTP 500.
    """
    node = _stream(run, stream)
    array_client = _stream_parts(node).get(key)  # one listing, with the key's data sources
    if array_client is None:
        try:
            array_client = node[key]
        except KeyError:
            raise KeyError(f"Stream {stream!r} has no data key {key!r}; keys: {sorted(node)}.") from None
    _check_local_files(array_client, key)
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
