"""Write per-event arrays to an external HDF5 file, described by StreamResource/StreamDatum.

A detector whose events are too large for the event documents (full XRF
spectra of a map: ``(ny, nx, 2048)`` counts per event) writes them with a
:class:`StreamHDF5Writer` and hands Bluesky the StreamResource/StreamDatum
documents that point at them. ``TiledWriter`` (bluesky-tiled-plugins)
registers the file with Tiled, which then serves the frames as one
``(N, ny, nx, nchan)`` array.

This module is pure Python + h5py + event-model: no ophyd, so the writer can be
tested alone and shared by simulated and real devices.

The StreamResource parameters that Tiled's HDF5 consolidator reads
(``bluesky_tiled_plugins.writing.consolidators.HDF5Consolidator``) are:

``dataset``
    Path of the dataset inside the file. Required: the consolidator indexes
    ``parameters["dataset"]`` (TiledWriter's normaliser renames a legacy
    ``path`` to it).
``chunk_shape``
    Logical chunking Tiled announces to its clients; here the on-disk HDF5
    chunk shape, leading (frame) axis included.
``swmr``
    Open the file in single-writer/multiple-reader mode when reading
    (the consolidator's default is True; it is written out explicitly).

Optional parameters it also understands, and this writer does not emit:
``locking``, ``slice``, ``squeeze``, ``join_method``, ``multiplier`` and
``template`` (a multi-file series).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from event_model import compose_stream_resource
from event_model.documents import StreamDatum, StreamResource
from event_model.documents.stream_datum import StreamRange

__all__ = ["HDF5_MIMETYPE", "StreamHDF5Writer"]

logger = logging.getLogger(__name__)

HDF5_MIMETYPE = "application/x-hdf5"
"""MIME type that Tiled maps to its HDF5 array adapter."""

_DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def _attr_value(name, value):
    """An HDF5 attribute value: numbers, strings and numeric sequences as they are; a mapping as JSON."""
    if isinstance(value, Mapping):
        return json.dumps(value)
    if isinstance(value, str | int | float | bool | np.number | np.ndarray | list | tuple):
        return value
    raise TypeError(f"attribute {name!r} has a {type(value).__name__}; allowed: a number, a string, a "
                    "sequence of numbers or a mapping (stored as JSON)")


def _default_chunks(frame_shape: tuple[int, ...], itemsize: int, target: int) -> tuple[int, ...]:
    """Chunk of one frame, cut along its leading axes until it fits ``target`` bytes.

    The frame axis of the chunk is always 1, so that appending a frame touches
    only that frame's chunks. Trailing axes (the spectrum) are kept whole, so a
    chunk holds full spectra of a few map rows.
    """
    chunk = list(frame_shape)
    for axis in range(len(chunk)):
        rest = math.prod(chunk[axis + 1 :]) * itemsize
        if math.prod(chunk) * itemsize <= target:
            break
        chunk[axis] = max(1, min(chunk[axis], target // max(rest, 1)))
    return (1, *chunk)


class StreamHDF5Writer:
    """Append fixed-shape frames to one HDF5 dataset and describe them for Bluesky.

    One ``open`` / ``write``... / ``close`` cycle makes one file holding a
    dataset of shape ``(N, *frame_shape)``, grown by one frame per ``write``,
    and one StreamResource document with StreamDatum documents for the frames
    written. An ophyd device calls ``open`` in ``stage``, ``write`` in
    ``trigger`` (or while flying), forwards ``describe_key``,
    ``collect_asset_docs`` and ``get_index``, and calls ``close`` in
    ``unstage``.

    Parameters
    ----------
    directory : str or pathlib.Path
        Folder for the files; created if missing. Files must lie under one of
        the Tiled server's ``readable_storage`` folders, or Tiled refuses to
        serve them (HTTP 500, "outside the readable storage area").
    data_key : str
        Name of the data key in the event descriptor, e.g. ``"xrf_spectra"``.
    dtype : numpy dtype-like
        Dtype stored on disk, e.g. ``np.uint32``. Frames of another dtype are
        converted: integers into an integer dataset if every value fits
        (int64 Poisson counts into uint32), otherwise with ``same_kind``
        casting (float64 into float32); floats into an integer dataset are refused.
    frame_shape : sequence of int
        Shape of one frame (one event), without the leading frame axis, e.g.
        ``(ny, nx, nchan)``.
    dataset : str, optional
        Path of the dataset in the file. Default ``"/entry/data/spectra"``.
    compression : {"lzf", "gzip", None}, optional
        HDF5 filter. ``"lzf"`` (default) is fast and compresses sparse count
        spectra well but is h5py-specific; ``"gzip"`` is readable by every
        HDF5 tool at several times the CPU cost; ``None`` stores raw bytes.
    compression_opts : int, optional
        gzip level 0-9 (default 4 when ``compression="gzip"``); must be None
        for lzf and no compression.
    shuffle : bool, optional
        Byte-shuffle filter before compression (default True; ignored without
        compression). It typically halves the size of integer counts.
    chunks : sequence of int, optional
        HDF5 chunk shape including the leading frame axis. Default: one frame
        per chunk, split along the leading frame axes (map rows) to at most
        4 MiB per chunk, spectra kept whole.
    source : str, optional
        ``source`` of the data key. Default ``"file:<data_key>"``.
    swmr : bool, optional
        Write in single-writer/multiple-reader mode (default True), so that the
        Tiled server (opening with ``swmr=True``, its consolidator's default)
        can read the frames already written while the file is still open.
    attrs : mapping, optional
        HDF5 attributes of the dataset, written when the file is opened (before
        SWMR mode forbids new attributes): what readers need to interpret the
        frames, e.g. an MCA's ``calibration_offset``/``_gain``/``_quadratic``
        in keV. Values are numbers, strings or sequences of numbers; a mapping
        value is stored as a JSON string.
    datasets : mapping, optional
        Small extra datasets, HDF5 path -> array, written at ``open``
        (e.g. ``/entry/instrument/fluorescence/energy_calibration``); a
        ``(path, {attr: value})`` pair may be given for a value to attach
        attributes (NeXus ``units``).

    Attributes
    ----------
    path : pathlib.Path or None
        The file of the current (or last) ``open``; None before the first.

    See Also
    --------
    event_model.compose_stream_resource
    bluesky_tiled_plugins.writing.consolidators.HDF5Consolidator

    Notes
    -----
    The dataset is resized by one frame on each ``write`` (HDF5 allocates only
    the new chunks), so its shape is always exactly the frames written, as
    Tiled expects: the array structure Tiled serves is built from the
    StreamDatum ranges and must match the file.

    With ``swmr=True`` the dataset is created, then SWMR mode is switched on;
    no new object (dataset, group, attribute) may be created after that.
    Each ``write`` flushes the dataset so that SWMR readers see the frame.

    Examples
    --------
    >>> writer = StreamHDF5Writer("/tmp/xrf", data_key="spectra", dtype="u4", frame_shape=(4, 5, 16))
    >>> path = writer.open("scan")
    >>> writer.write(np.ones((4, 5, 16), dtype="u4"))
    1
    >>> [name for name, _ in writer.collect_asset_docs()]
    ['stream_resource', 'stream_datum']
    >>> writer.close()
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        data_key: str,
        dtype: Any,
        frame_shape: Sequence[int],
        dataset: str = "/entry/data/spectra",
        compression: Literal["lzf", "gzip"] | None = "lzf",
        compression_opts: int | None = None,
        shuffle: bool = True,
        chunks: Sequence[int] | None = None,
        source: str | None = None,
        swmr: bool = True,
        attrs: Mapping[str, Any] | None = None,
        datasets: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.data_key = str(data_key)
        self.dtype = np.dtype(dtype)
        self.frame_shape = tuple(int(n) for n in frame_shape)
        if not self.frame_shape or any(n < 1 for n in self.frame_shape):
            raise ValueError(
                f"frame_shape={tuple(frame_shape)!r} must be a non-empty shape of positive sizes, "
                "e.g. (ny, nx, nchan)."
            )
        if self.dtype.kind not in "biuf":
            raise ValueError(
                f"dtype={self.dtype!r} is not a numeric dtype; use a bool, integer or float dtype."
            )
        if not dataset.startswith("/"):
            raise ValueError(f"dataset={dataset!r} must be an absolute HDF5 path such as '/entry/data/spectra'.")
        self.dataset = dataset
        if compression not in ("lzf", "gzip", None):
            raise ValueError(f"compression={compression!r}; allowed: 'lzf', 'gzip' or None.")
        if compression == "gzip":
            compression_opts = 4 if compression_opts is None else int(compression_opts)
            if not 0 <= compression_opts <= 9:
                raise ValueError(f"compression_opts={compression_opts} for gzip must be in 0..9.")
        elif compression_opts is not None:
            raise ValueError(f"compression_opts={compression_opts!r} is only allowed with compression='gzip'.")
        self.compression = compression
        self.compression_opts = compression_opts
        self.shuffle = bool(shuffle) and compression is not None
        if chunks is None:
            chunks = _default_chunks(self.frame_shape, self.dtype.itemsize, _DEFAULT_CHUNK_BYTES)
        chunks = tuple(int(n) for n in chunks)
        if len(chunks) != len(self.frame_shape) + 1 or any(n < 1 for n in chunks):
            raise ValueError(
                f"chunks={chunks!r} must have {len(self.frame_shape) + 1} positive sizes "
                f"(frame axis first), matching frame_shape={self.frame_shape!r}."
            )
        self.chunks = chunks
        self.source = source or f"file:{self.data_key}"
        self.swmr = bool(swmr)
        self.attrs = {str(k): _attr_value(k, v) for k, v in (attrs or {}).items()}
        self.datasets = dict(datasets or {})
        for where in self.datasets:
            if not str(where).startswith("/") or str(where) == self.dataset:
                raise ValueError(f"datasets key {where!r} must be an absolute HDF5 path other than the frames' "
                                 f"{self.dataset!r}, e.g. '/entry/instrument/fluorescence/energy_calibration'.")

        self.path: Path | None = None
        self._file: h5py.File | None = None
        self._dset: h5py.Dataset | None = None
        self._count = 0
        self._announced = 0
        self._stream_resource: StreamResource | None = None
        self._resource_emitted = False
        self._compose_datum = None

    # ------------------------------------------------------------------ state
    @property
    def is_open(self) -> bool:
        """True between ``open`` and ``close``."""
        return self._file is not None

    def get_index(self) -> int:
        """Number of frames written since the last ``open`` (0 before it)."""
        return self._count

    # -------------------------------------------------------------- lifecycle
    def open(self, name: str = "stream") -> Path:
        """Create a new file and its (empty, resizable) dataset.

        Parameters
        ----------
        name : str, optional
            Prefix of the file name, e.g. the run's uid or scan name;
            characters other than letters, digits, ``_.-`` become ``_``.
            A random suffix makes the name unique: ``{name}_{uuid8}.h5``.

        Returns
        -------
        pathlib.Path
            The absolute path of the new file.

        Raises
        ------
        RuntimeError
            If the writer is already open (call ``close`` first).
        """
        if self.is_open:
            raise RuntimeError(f"StreamHDF5Writer is already open on {self.path}; call close() first.")
        self.directory.mkdir(parents=True, exist_ok=True)
        prefix = _SAFE_NAME.sub("_", str(name)).strip("_") or "stream"
        path = (self.directory / f"{prefix}_{uuid.uuid4().hex[:8]}.h5").resolve()

        libver = "latest" if self.swmr else None
        h5 = h5py.File(path, "w-", libver=libver)
        try:
            dset = h5.create_dataset(
                self.dataset,
                shape=(0, *self.frame_shape),
                maxshape=(None, *self.frame_shape),
                dtype=self.dtype,
                chunks=self.chunks,
                compression=self.compression,
                compression_opts=self.compression_opts,
                shuffle=self.shuffle,
            )
            dset.attrs.update(self.attrs)
            for where, value in self.datasets.items():
                value, extra = value if isinstance(value, tuple) and len(value) == 2 and isinstance(
                    value[1], Mapping) else (value, {})
                h5.create_dataset(where, data=np.asarray(value)).attrs.update(
                    {str(k): _attr_value(k, v) for k, v in extra.items()})
            if self.swmr:
                h5.swmr_mode = True
        except BaseException:
            h5.close()
            path.unlink(missing_ok=True)
            raise

        self.path, self._file, self._dset = path, h5, dset
        self._count = 0
        self._announced = 0
        self._resource_emitted = False
        bundle = compose_stream_resource(
            mimetype=HDF5_MIMETYPE,
            uri=path.as_uri(),
            data_key=self.data_key,
            parameters={
                "dataset": self.dataset,
                "chunk_shape": list(self.chunks),
                "swmr": self.swmr,
            },
        )
        self._stream_resource = bundle.stream_resource_doc
        self._compose_datum = bundle.compose_stream_datum
        logger.debug("Opened %s:%s for %r, frames of %s %s", path, self.dataset, self.data_key,
                     self.frame_shape, self.dtype)
        return path

    def write(self, frame: np.ndarray) -> int:
        """Append one frame.

        Parameters
        ----------
        frame : array_like
            Array of shape ``frame_shape``. It is not modified.

        Returns
        -------
        int
            The new number of frames in the file, i.e. ``get_index()``; the
            frame just written has index ``get_index() - 1``.

        Raises
        ------
        RuntimeError
            If the writer is not open.
        ValueError
            If the frame has the wrong shape, or integer values that do not
            fit the dataset's integer dtype.
        TypeError
            If the frame's dtype cannot be converted (floats into integers).
        """
        if self._dset is None:
            raise RuntimeError("StreamHDF5Writer is not open; call open() before write().")
        arr = np.asarray(frame)
        if arr.shape != self.frame_shape:
            raise ValueError(
                f"Frame for {self.data_key!r} has shape {arr.shape}; expected {self.frame_shape}."
            )
        if arr.dtype != self.dtype:
            arr = self._convert(arr)
        index = self._count
        self._dset.resize(index + 1, axis=0)
        self._dset[index] = arr
        self._dset.flush()
        self._count = index + 1
        return self._count

    def _convert(self, arr: np.ndarray) -> np.ndarray:
        """Convert a frame to the dataset's dtype, refusing lossy conversions."""
        src, dst = arr.dtype, self.dtype
        if src.kind in "biu" and dst.kind in "iu":
            info = np.iinfo(dst)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise ValueError(
                    f"Frame for {self.data_key!r} has values in [{arr.min()}, {arr.max()}], outside "
                    f"the range of {dst} [{info.min}, {info.max}]; use a wider dtype."
                )
            return arr.astype(dst)
        if not np.can_cast(src, dst, casting="same_kind"):
            raise TypeError(
                f"Frame for {self.data_key!r} has dtype {src}, which cannot be stored as {dst} "
                "without changing kind; convert it explicitly."
            )
        return arr.astype(dst, casting="same_kind")

    def close(self) -> None:
        """Flush and close the file. Safe to call more than once, or before ``open``."""
        h5, self._file, self._dset = self._file, None, None
        if h5 is None:
            return
        try:
            h5.flush()
        finally:
            h5.close()
        logger.debug("Closed %s with %d frames of %r", self.path, self._count, self.data_key)

    def __enter__(self) -> StreamHDF5Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- documents
    def describe_key(self) -> dict[str, Any]:
        """The data key for the event descriptor.

        Returns
        -------
        dict
            ``{data_key: {...}}`` with ``source``, ``shape`` (the per-event
            shape, ``list(frame_shape)``, no leading frame axis), ``dtype``
            ``"array"``, ``dtype_numpy`` (e.g. ``"<u4"``) and
            ``external`` ``"STREAM:"``; merge it into the device's ``describe()``.
        """
        return {
            self.data_key: {
                "source": self.source,
                "shape": list(self.frame_shape),
                "dtype": "array",
                "dtype_numpy": self.dtype.str,
                "external": "STREAM:",
            }
        }

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, dict]]:
        """Yield the documents for the frames not yet announced.

        Parameters
        ----------
        index : int, optional
            Announce frames up to (not including) this index, as Bluesky's
            ``collect`` passes it; default (and ``None``, as passed by a step
            scan's ``read``/``save``): all frames written.

        Yields
        ------
        (str, dict)
            ``("stream_resource", doc)`` once per file, together with the first
            StreamDatum, then ``("stream_datum", doc)`` with ``indices``
            ``{"start": a, "stop": b}`` for the frames ``a..b-1`` not yet
            announced. Nothing is yielded when there are no new frames.
            The StreamDatum's ``descriptor`` is empty and its ``seq_nums``
            ``{"start": 0, "stop": 0}``: the RunEngine fills them in.
        """
        if self._stream_resource is None or self._compose_datum is None:
            return
        stop = self._count if index is None else min(int(index), self._count)
        if stop <= self._announced:
            return
        if not self._resource_emitted:
            self._resource_emitted = True
            # A copy: the RunEngine adds ``run_start`` to the document it receives.
            yield "stream_resource", copy.deepcopy(self._stream_resource)
        datum: StreamDatum = self._compose_datum(indices=StreamRange(start=self._announced, stop=stop))
        self._announced = stop
        yield "stream_datum", datum

