"""Where the workers of a distributed computation read their data: small, picklable array references.

A source is what a task is given instead of an array: the workers read
their own block of it (:meth:`read` of a tuple of slices), so the driver
ships no data. :class:`HDF5Array` is a dataset of a file every worker can
open (a shared file system); :class:`TiledArray` an array node of a Tiled
server, by URI and API key (the key travels to the workers with the task
and is never shown: ``repr`` leaves it out). :func:`tiled_sources` makes
them for the maps of a stored run. A plain numpy array is accepted
wherever a source is; its blocks are then sent from the driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class HDF5Array:
    """Dataset ``dataset`` of the HDF5 file ``path``, read by block by whoever calls :meth:`read`."""

    path: str
    dataset: str
    shape: tuple = ()
    dtype: str = ""

    @classmethod
    def open(cls, path, dataset: str) -> HDF5Array:
        """The source for ``path[dataset]`` with its shape and dtype (read from the file once, here)."""
        import h5py

        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise KeyError(f"{path} has no dataset {dataset!r}; it has {sorted(f)}")
            d = f[dataset]
            return cls(str(path), dataset, tuple(d.shape), d.dtype.str)

    def read(self, index: tuple) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.dataset][index])


@dataclass(frozen=True)
class TiledArray:
    """An array node of a Tiled server: ``uri`` (its ``/api/v1/metadata/...`` address) and the API key."""

    uri: str
    shape: tuple = ()
    dtype: str = ""
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, node, api_key: str | None = None) -> TiledArray:
        """The source for a Tiled array client ``node`` (its URI, shape, dtype and its context's API key)."""
        key = api_key if api_key is not None else getattr(node.context, "api_key", None)
        return cls(node.uri, tuple(node.shape), np.dtype(node.dtype).str, key)

    def read(self, index: tuple) -> np.ndarray:
        from tiled.client import from_uri

        node = from_uri(self.uri, api_key=self.api_key)
        try:
            return np.asarray(node[index])
        finally:
            node.context.close()


def shape_of(source) -> tuple:
    """The shape of a source or an array."""
    return tuple(np.shape(source) if isinstance(source, np.ndarray) else source.shape)


def read_block(source, index: tuple) -> np.ndarray:
    """``source[index]`` as numpy: an array's block, or a source's read (on the caller's machine)."""
    if isinstance(source, np.ndarray):
        return source[index]
    return source.read(index)


def tiled_sources(run, names: Iterable[str], *, stream: str = "primary", maps: Mapping | None = None,
                  api_key: str | None = None) -> dict[str, TiledArray]:
    """``{name: TiledArray}`` for the maps ``names`` of a stored run (a bluesky-tiled-plugins run client).

    ``maps`` (a :class:`~xfct_bluesky.storage.reading.Maps`, e.g.
    ``load_tomo(run).maps``) resolves quantity names such as ``"Zn"`` to
    their data keys; without it the names are data keys. The API key is
    the run's client's unless given.
    """
    node = run[stream]
    base = getattr(node, "base", node)
    out = {}
    for name in names:
        key = maps.data_key(name) if maps is not None else name
        out[name] = TiledArray.of(base[key], api_key)
    return out
