"""Reading stored runs back as numpy arrays for the analysis code.

:func:`load_tomo` (theta and every 2D map of a tomography, fast on
loopback, each map under its quantity name: :class:`Maps`),
:func:`load_theta`, :func:`load_spectra` and :func:`spectra_rows` (external
HDF5 data through Tiled) and :func:`v1_broker` (databroker's v1 view for legacy code).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..quantities import quantities_of
from ..quantities import theta_key as resolve_theta_key
from ._fetch import check_local_files, read_key, read_stream_keys, stream_parts

logger = logging.getLogger(__name__)

_DEFAULT_STREAM = "primary"


class Maps(Mapping[str, np.ndarray]):
    """The maps of a run, each under its quantity name, and still under its data key.

    ``maps["Zn"]`` and ``maps["microprobe_scanner_Zn"]`` are the same array
    (the name resolved by the start document's ``quantities``, see
    :mod:`xfct_bluesky.quantities`). Iterating yields each map once: under its
    quantity name where it has one, else under its data key, in the order of
    the data keys; ``len`` counts the maps.

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        The maps by data key.
    names : mapping of str to str
        ``{quantity name: data key}``; an entry whose data key is not in
        ``arrays``, or whose name is the data key of another map, is ignored.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], names: Mapping[str, str] | None = None):
        self._arrays = dict(arrays)
        self._names = {name: key for name, key in (names or {}).items()
                       if key in self._arrays and (name == key or name not in self._arrays)}
        label = {key: key for key in self._arrays}
        for name, key in reversed(list(self._names.items())):  # the first name given to a key wins
            label[key] = name
        self._labels = [label[key] for key in self._arrays]

    def __getitem__(self, name: str) -> np.ndarray:
        key = self._names.get(name, name)
        try:
            return self._arrays[key]
        except KeyError:
            raise KeyError(f"no map {name!r}; the maps are {self._labels}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._arrays)

    def data_key(self, name: str) -> str:
        """The data key of the map ``name`` (a quantity name or a data key)."""
        key = self._names.get(name, name)
        if key not in self._arrays:
            raise KeyError(f"no map {name!r}; the maps are {self._labels}")
        return key

    def __repr__(self) -> str:
        shapes = ", ".join(f"{label!r}: {tuple(arr.shape)}" for label, arr in zip(self, self._arrays.values(),
                                                                                 strict=True))
        return f"Maps({{{shapes}}})"


@dataclass
class TomoData:
    """Elemental maps of a tomography run, read back from Tiled.

    Attributes
    ----------
    theta : numpy.ndarray
        Rotation angle of each projection, shape ``(n_angles,)``, in the units
        recorded (degrees for this package's rotation stages).
    maps : Maps
        Each 2D-per-event data key of the stream, as an
        ``(n_angles, ny, nx)`` array in event order, dtype as recorded, under
        its quantity name (``maps["Zn"]``, ``maps["dpc_diag"]``) and its data
        key (``maps["microprobe_scanner_Zn"]``); iterating yields each map
        once, by its quantity name where it has one.
    metadata : dict
        The run's start document.
    uid : str
        The run's uid.
    theta_key : str
        The data key theta was read from.
    quantities : dict of str to str
        ``{quantity name: data key}`` as resolved for this run: ``"theta"``
        and every map that has a name (the start document's ``quantities``,
        or for older runs the names read off the data keys, see
        :func:`xfct_bluesky.quantities.quantities_of`).
    """

    theta: np.ndarray
    maps: Maps
    metadata: dict[str, Any]
    uid: str
    theta_key: str = "theta"
    quantities: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # shapes, not the arrays and the whole start document
        span = f" {self.theta.min():g}..{self.theta.max():g} deg" if self.theta.size else ""
        return (f"TomoData(uid={self.uid[:8]!r}, {self.theta.size} angles{span} from {self.theta_key!r}, "
                f"plan {self.metadata.get('plan_name')!r}, maps={self.maps!r})")


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
        ``quantities["theta"]``, else its ``theta_key`` (this package's plans
        record both), if it is a data key of the stream, else ``"theta"`` if
        present, else the single scalar key ending in ``"rotation"`` (a
        rotation stage's readback, e.g. ``"microprobe_rotation"``); see
        :func:`xfct_bluesky.quantities.theta_key`.
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
        (writable, C-contiguous), under their quantity names (``"Zn"``,
        ``"dpc_diag"``: the start document's ``quantities``, or for a run
        without it the data keys less their common device prefix) and their
        data keys, the resolved ``quantities``, the start document and uid.
        External (``STREAM:``) 2D keys are maps too (an imported Data
        Exchange file's projections, read in place); the full spectra,
        ``(ny, nx, channels)`` per event, are not loaded: use
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
    tkey = resolve_theta_key(data_keys, start, theta_key)
    map_keys = [key for key, spec in sorted(data_keys.items()) if len(spec.get("shape") or []) == 2]
    try:
        values = read_stream_keys(node, [tkey, *map_keys], compression=compression, max_workers=max_workers)
    except KeyError as err:  # a descriptor and no events: the writer died before it stored them
        raise _interrupted(run, stream) or err from None
    theta = np.array(values[tkey], dtype=float).reshape(-1)  # a copy, even if theta_key names a map

    arrays: dict[str, np.ndarray] = {}
    for key in map_keys:
        arr = values[key]
        shape = tuple(data_keys[key]["shape"])
        if arr.shape != (theta.size, *shape):
            raise ValueError(
                f"Map {key!r} read back with shape {arr.shape}; expected {(theta.size, *shape)} "
                f"(one {shape} map per angle)."
            )
        arrays[key] = arr
    names = {name: key for name, key in quantities_of(data_keys, start).items() if key in arrays}
    maps = Maps(arrays, names)

    logger.debug("Loaded run %s: %d angles from %r, maps %s", start.get("uid"), theta.size, tkey, list(maps))
    return TomoData(theta=theta, maps=maps, metadata=start, uid=start["uid"], theta_key=tkey,
                    quantities={"theta": tkey, **names})


def load_theta(run: Any, theta_key: str | None = None, *, stream: str = _DEFAULT_STREAM) -> np.ndarray:
    """The rotation angles of a stored run's events, without its maps.

    Same choice of ``theta_key`` as :func:`load_tomo`. A run interrupted
    before its first event has no stream: an empty array is returned.
    """
    try:
        node = run[stream]
    except KeyError:
        return np.zeros(0)
    tkey = resolve_theta_key(_data_keys(node), dict(run.metadata["start"]), theta_key)
    return np.array(read_key(node, tkey), dtype=float).reshape(-1)


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
    array_client = _external_client(run, key, stream)
    data = array_client.read() if index is None else array_client[index]
    return np.asarray(data)


def spectra_rows(run: Any, key: str, *, stream: str = _DEFAULT_STREAM) -> Callable[[int], np.ndarray]:
    """``read(row)``: one event's external data at a time (``row`` = its ``seq_num`` - 1), through Tiled.

    As :func:`load_spectra` with ``index=row``, but the key's array client is
    found and its files checked once, not at every read (two requests fewer
    each: a fit reading a tomography's spectra projection by projection).
    """
    array_client = _external_client(run, key, stream)
    return lambda row: np.asarray(array_client[row])


def _external_client(run: Any, key: str, stream: str) -> Any:
    """The array client of an external data key, its files checked when the server is on this machine."""
    node = _stream(run, stream)
    array_client = stream_parts(node).get(key)  # one listing, with the key's data sources
    if array_client is None:
        try:
            array_client = node[key]
        except KeyError:
            raise KeyError(f"Stream {stream!r} has no data key {key!r}; keys: {sorted(node)}.") from None
    check_local_files(array_client, key)
    return array_client


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
