"""Read the raw spectra of an APS fly scan: the ``flyXRF`` HDF5 files of 2-ID-E (``MAPS_RAW``).

At 2-ID-E a fly scan writes two files: a rank-2 MDA file (``mda/2xfm_0011.mda``)
with the positions and the scalers of each pixel, and an HDF5 file
(``flyXRF/2xfm_0011_2xfm3__0.h5``) with the full spectrum of each pixel and
detector element and the element's timing and count totals:

==============================  ============================================
``MAPS_RAW/data_a`` .. ``_d``   int16 ``(channels, rows, cols)``: the spectra
                                of detector elements 1 .. 4
``MAPS_RAW/livetime``           float32 ``(elements, rows, cols)``, seconds
``MAPS_RAW/realtime``           float32 ``(elements, rows, cols)``, seconds
``MAPS_RAW/inputcounts``        float32 ``(elements, rows, cols)``: events
                                the element saw (ICR x real time)
``MAPS_RAW/ouputcounts`` (sic)  float32 ``(elements, rows, cols)``: events
                                it processed (OCR x real time)
==============================  ============================================

:func:`read_flyxrf` returns a :class:`FlyXRF` of NumPy arrays. The spectra
come out as ``(elements, rows, cols, channels)``: the last axis is the
spectrum, as in :func:`xfct_bluesky.importers.mda.read_mda`'s
``(rows, cols, channels)`` for a rank-3 step scan, so one pixel's spectrum
is ``spectra[element, row, col]`` in both. Nothing here knows about bluesky
or Tiled.

Dead time
---------
Followed from XRF-Maps (AdvancedPhotonSource/XRF-Maps):
``HDF5_IO::load_spectra_volume`` (``src/io/file/hdf5_io.cpp``) reads the four
timing datasets into each pixel's ``Spectra`` and calls
``Spectra::recalc_elapsed_livetime`` (``src/data_struct/spectra.h``), which
*replaces* the stored live time by::

    elapsed_livetime = realtime * OCR / ICR      (realtime where ICR or OCR is 0)

and the fits divide the counts by that live time. The correction factor, the
rate of events the element would have counted with no dead time over the
rate it did count, is therefore::

    dead_time_factor = realtime / elapsed_livetime = ICR / OCR   (1 where ICR or OCR is 0)

It is >= 1 for every pixel of a sound file (ICR >= OCR). The stored
``livetime`` (the XMAP's energy live time) is returned as it is but, as in
XRF-Maps, not used: the other common choice, ``ICR / OCR * realtime /
livetime``, is not what XRF-Maps computes (on the 2-ID-E test file the two
differ by at most 0.15 %). :attr:`FlyXRF.dead_time_formula` records the formula
used.

Errors
------
A file that is not HDF5, lacks one of the datasets, or whose shapes disagree
raises :class:`FlyXRFFormatError` (a ``ValueError``) naming the file, the
dataset and the fix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

__all__ = ["DEAD_TIME_FORMULA", "FlyXRF", "FlyXRFFormatError", "read_flyxrf"]

logger = logging.getLogger(__name__)

GROUP = "MAPS_RAW"
"""The group holding the raw fly-scan data."""
TIMING = {
    "livetime": "livetime",
    "realtime": "realtime",
    "input_counts": "inputcounts",
    "output_counts": "ouputcounts",  # sic: the name the 2-ID-E writer and XRF-Maps use
}
"""FlyXRF attribute -> dataset name in :data:`GROUP` for the per-element timing arrays."""
DEAD_TIME_FORMULA = (
    "dead_time_factor = realtime / elapsed_livetime = inputcounts / ouputcounts, "
    "with elapsed_livetime = realtime * ouputcounts / inputcounts "
    "(XRF-Maps Spectra::recalc_elapsed_livetime); 1 and realtime where either count is 0"
)
"""How :attr:`FlyXRF.dead_time_factor` and :attr:`FlyXRF.elapsed_livetime` are computed."""

_SPECTRA_NAME = re.compile(r"^data_([a-z])$")


class FlyXRFFormatError(ValueError):
    """A flyXRF file cannot be read as it is; the message names the file, the dataset and the fix."""


@dataclass(frozen=True, eq=False)
class FlyXRF:
    """The content of one flyXRF HDF5 file (see :func:`read_flyxrf`).

    Attributes
    ----------
    path
        The file read.
    element_names
        The spectra datasets, element 0 first (``("data_a", ..., "data_d")``).
    spectra
        ``(elements, rows, cols, channels)``, the file's dtype (int16): counts
        per channel of each element at each pixel.
    summed_spectra
        ``(rows, cols, channels)`` int64: the spectra summed over the elements.
    livetime, realtime
        ``(elements, rows, cols)`` float32 seconds, as stored.
    input_counts, output_counts
        ``(elements, rows, cols)`` float32, as stored (``inputcounts`` and
        ``ouputcounts``): events seen and events processed by each element.
    elapsed_livetime
        ``(elements, rows, cols)`` float64: the live time XRF-Maps uses,
        ``realtime * output_counts / input_counts``.
    dead_time_factor
        ``(elements, rows, cols)`` float64: ``input_counts / output_counts``
        (``realtime / elapsed_livetime``), >= 1.
    dead_time_formula
        The formula of the two above, as text (:data:`DEAD_TIME_FORMULA`).
    """

    path: Path
    element_names: tuple[str, ...]
    spectra: np.ndarray = field(repr=False)
    summed_spectra: np.ndarray = field(repr=False)
    livetime: np.ndarray = field(repr=False)
    realtime: np.ndarray = field(repr=False)
    input_counts: np.ndarray = field(repr=False)
    output_counts: np.ndarray = field(repr=False)
    elapsed_livetime: np.ndarray = field(repr=False)
    dead_time_factor: np.ndarray = field(repr=False)
    dead_time_formula: str = DEAD_TIME_FORMULA

    @property
    def n_elements(self) -> int:
        """Number of detector elements."""
        return self.spectra.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the map."""
        return self.spectra.shape[1:3]

    @property
    def n_channels(self) -> int:
        """Channels per spectrum."""
        return self.spectra.shape[3]


def _dataset(f: h5py.File, path: Path, name: str, fix: str) -> h5py.Dataset:
    obj = f.get(f"{GROUP}/{name}")
    if not isinstance(obj, h5py.Dataset):
        what = "is not a dataset" if obj is not None else "is missing"
        raise FlyXRFFormatError(f"{path}: /{GROUP}/{name} {what}; {fix}")
    return obj


def _dead_time(
    realtime: np.ndarray, icr: np.ndarray, ocr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """XRF-Maps' live time and dead-time factor where both counts are non-zero; realtime and 1 elsewhere."""
    rt = realtime.astype(np.float64)
    icr = icr.astype(np.float64)
    ocr = ocr.astype(np.float64)
    counted = (icr != 0) & (ocr != 0)
    factor = np.ones_like(rt)
    np.divide(icr, ocr, out=factor, where=counted)
    livetime = rt.copy()
    np.divide(rt * ocr, icr, out=livetime, where=counted)
    return livetime, factor


def read_flyxrf(path: str | Path) -> FlyXRF:
    """Read an APS flyXRF raw HDF5 file (``MAPS_RAW``): spectra, timing and dead-time factor.

    Parameters
    ----------
    path
        The ``*_2xfm3__0.h5`` file.

    Returns
    -------
    FlyXRF
        The spectra as ``(elements, rows, cols, channels)`` (transposed from
        the file's ``(channels, rows, cols)`` per element), their sum over the
        elements, the stored live/real time and input/output counts per
        element and pixel, and XRF-Maps' live time and dead-time factor.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    FlyXRFFormatError
        A ``ValueError``: not an HDF5 file, no ``MAPS_RAW/data_a``, a missing
        timing dataset, or shapes that disagree; the message names the file,
        the dataset and the fix.

    See Also
    --------
    xfct_bluesky.importers.mda.read_mda : the scan's positions and scalers.

    Notes
    -----
    The elements are the ``data_<letter>`` datasets, which must run from
    ``data_a`` without a gap; element ``i`` is row ``i`` of the timing arrays.
    The dead-time formula is XRF-Maps' (see the module docstring and
    :data:`DEAD_TIME_FORMULA`).

    Examples
    --------
    >>> fly = read_flyxrf("2xfm_0011_2xfm3__0.h5")     # doctest: +SKIP
    >>> fly.spectra.shape, fly.dead_time_factor.min() >= 1    # doctest: +SKIP
    ((4, 11, 9, 2048), True)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise FlyXRFFormatError(f"{path}: not an HDF5 file; give the flyXRF .h5 file of the scan")
    with h5py.File(path, "r") as f:
        group = f.get(GROUP)
        if not isinstance(group, h5py.Group):
            raise FlyXRFFormatError(
                f"{path}: no /{GROUP} group; this is not a flyXRF raw file (give the *_2xfm3__0.h5 file)"
            )
        letters = sorted(m.group(1) for name in group if (m := _SPECTRA_NAME.match(name)))
        expected = [chr(ord("a") + i) for i in range(len(letters))]
        if not letters or letters != expected:
            have = ", ".join(f"data_{c}" for c in letters) or "none"
            raise FlyXRFFormatError(
                f"{path}: /{GROUP}/data_a is missing or the elements have a gap (found: {have}); "
                "the spectra must be data_a, data_b, ... one per detector element"
            )
        names = tuple(f"data_{c}" for c in letters)
        spectra_fix = "the spectra must be datasets (channels, rows, cols), one per detector element"
        first = _dataset(f, path, names[0], spectra_fix)
        if first.ndim != 3:
            raise FlyXRFFormatError(
                f"{path}: /{GROUP}/{names[0]} has shape {first.shape}, expected (channels, rows, cols)"
            )
        n_channels, rows, cols = first.shape
        spectra = np.empty((len(names), rows, cols, n_channels), dtype=first.dtype)
        for i, name in enumerate(names):
            ds = _dataset(f, path, name, spectra_fix)
            if ds.shape != first.shape:
                raise FlyXRFFormatError(
                    f"{path}: /{GROUP}/{name} has shape {ds.shape}, expected {first.shape} like "
                    f"/{GROUP}/{names[0]} (channels, rows, cols): every element needs the same map"
                )
            spectra[i] = np.moveaxis(ds[()], 0, -1)
        timing = {}
        for attr, name in TIMING.items():
            ds = _dataset(
                f, path, name,
                f"every flyXRF file needs /{GROUP}/{', '.join(TIMING.values())} "
                f"as float (elements, rows, cols) = {(len(names), rows, cols)}",
            )
            if ds.shape != (len(names), rows, cols):
                raise FlyXRFFormatError(
                    f"{path}: /{GROUP}/{name} has shape {ds.shape}, expected (elements, rows, cols) = "
                    f"{(len(names), rows, cols)} to match the {len(names)} spectra datasets"
                )
            timing[attr] = ds[()]
    if np.any(spectra < 0):
        logger.warning("%s: negative counts in the spectra (int16 overflow in the writer?)", path)
    elapsed_livetime, factor = _dead_time(timing["realtime"], timing["input_counts"], timing["output_counts"])
    return FlyXRF(
        path=path,
        element_names=names,
        spectra=spectra,
        summed_spectra=spectra.sum(axis=0, dtype=np.int64),
        elapsed_livetime=elapsed_livetime,
        dead_time_factor=factor,
        **timing,
    )
