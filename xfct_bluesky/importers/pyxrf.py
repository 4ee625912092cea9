"""Read the HDF5 files of NSLS-II PyXRF (HXN, SRX, XFM, TES): ``xrfmap``.

PyXRF (NSLS-II/PyXRF) converts a bluesky run of a fluorescence map into one
HDF5 file (``scan2D_<scan_id>.h5``; at SRX ``scan2D_<id>_xs_sum8ch.h5`` per
detector) holding the summed and per-channel spectra, the positions, the
scalers and the scan's metadata, and adds its fitted and ROI maps to the same
file. :func:`read_pyxrf` returns a :class:`PyXRFFile` of NumPy arrays:
spectra ``(rows, cols, channels)`` and maps ``(rows, cols)``, as the other
readers of :mod:`xfct_bluesky.importers` return them. Nothing here knows about
bluesky or Tiled.

The layout
----------
Followed from PyXRF: ``pyxrf/model/load_data_from_db.py``,
``save_data_to_hdf5`` (``write_db_to_hdf_base`` is the same function), which
writes the raw data, and ``pyxrf/model/fileio.py``, ``save_fitdata_to_hdf``,
which adds the maps; ``fileio.py``, ``read_hdf_APS``, reads them back:

======================================  ==================================================
``xrfmap/scan_metadata`` (group)        attributes only: the run's metadata
                                        (``_extract_metadata_from_header``: ``scan_id``,
                                        ``scan_uid``, ``scan_instrument_id``,
                                        ``scan_time_start`` ..., ``instrument_mono_
                                        incident_energy`` (keV), ``instrument_beam_current``,
                                        ``instrument_detectors``, ``sample_name``,
                                        ``experiment_plan_name``, ``param_theta`` with
                                        ``param_theta_units`` "mdeg" at HXN and SRX ...)
                                        and ``file_type`` "XRF-MAP", ``file_format``
                                        "NSLS2-XRF-MAP", ``file_format_version`` "1.0",
                                        ``file_created_time``, ``file_software``,
                                        ``file_software_version``
``xrfmap/detsum/counts``                float32 (rows, cols, channels), gzip: the sum of
                                        the detector channels (4096 at HXN/SRX)
``xrfmap/det1`` .. ``/counts``          float32 (rows, cols, channels), gzip: each channel
                                        (only with ``create_each_det``)
``xrfmap/positions/name``, ``pos``      strings (n,) (``"x_pos"``, ``"y_pos"``) and float64
                                        (n, rows, cols)
``xrfmap/scalers/name``, ``val``        strings (n,) and float64
                                        **(rows, cols, n)**: the scaler index is last
``xrfmap/<det>/xrf_fit``,               (n, rows, cols), the maps' dtype, and ``|S20``
``xrf_fit_name``                        (n,) names (cut at 20 bytes): the fitted maps
                                        (``<det>`` is ``detsum`` or ``det1`` ..)
``xrfmap/<det>/xrf_roi``,               the same for the ROI maps
``xrf_roi_name``
======================================  ==================================================

The names are the list of bytes PyXRF passes to h5py (``helper_encode_list``),
which h5py 3 stores as variable-length ASCII strings and h5py 2 stored as
fixed-length ones; the reader takes either. The spectra, fits and ROIs carry
a ``comments`` attribute. The scalers
are the beamline's: I0 is ``i0`` in SRX fly scans (``sclr_i0`` in its step
scans), ``sclr1_ch4`` at HXN (``combine_data_to_recon``'s default
``ic_name``); :data:`I0_SCALERS` lists them in that order of preference.

Theta
-----
PyXRF stores the rotation angle only as metadata: ``param_theta`` in
millidegrees (``round(theta * 1000)``) with ``param_theta_units`` ``"mdeg"``
(``map_data2D_hxn``, "same as SRX"). :attr:`PyXRFFile.theta` returns it in
degrees; a file with ``param_theta`` but no units is taken as mdeg, the only
unit PyXRF writes.

Errors
------
A file that is not HDF5, lacks ``xrfmap/detsum/counts``, has positions or
scalers whose names and values disagree, shapes that disagree with the
spectra, or ``x_pos``/``y_pos`` that are not strictly monotonic along their
axis raises :class:`PyXRFFormatError` (a ``ValueError``) naming the file, the
dataset and the fix.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

__all__ = ["I0_SCALERS", "PyXRFFile", "PyXRFFormatError", "read_pyxrf", "write_pyxrf"]

logger = logging.getLogger(__name__)

GROUP = "xrfmap"
"""PyXRF's group (``interpath = "xrfmap"``)."""
I0_SCALERS = ("i0", "sclr_i0", "sclr1_ch4")
"""The incident-flux scaler's name: SRX fly scans, SRX step scans, HXN (in that order of preference)."""
FILE_METADATA = {"file_type": "XRF-MAP", "file_format": "NSLS2-XRF-MAP", "file_format_version": "1.0"}
"""What ``save_data_to_hdf5`` adds to every file's metadata (with ``file_created_time``)."""
_DET = re.compile(r"^det(\d+)$")
_NAME_SIZE = 20  # save_fitdata_to_hdf: np.array(namelist).astype("|S20")


class PyXRFFormatError(ValueError):
    """A PyXRF file cannot be read as it is; the message names the file, the dataset and the fix."""


@dataclass(frozen=True, eq=False)
class PyXRFFile:
    """The content of one PyXRF HDF5 file (see :func:`read_pyxrf`).

    Attributes
    ----------
    path
        The file read.
    counts
        ``(rows, cols, channels)`` float32: the spectra summed over the
        detector channels (``xrfmap/detsum/counts``).
    detector_counts
        ``"det1"``, ``"det2"`` ... -> ``(rows, cols, channels)``, by channel number.
    position_names, positions
        Names in file order and name -> ``(rows, cols)`` float64 positions.
    scaler_names, scalers
        Names in file order and name -> ``(rows, cols)`` float64 maps.
    fit, roi
        Element line -> ``(rows, cols)`` map from ``detsum/xrf_fit`` and
        ``detsum/xrf_roi`` (empty if not fitted).
    detector_fit, detector_roi
        The same per detector channel (``"det1"`` -> line -> map).
    metadata
        ``xrfmap/scan_metadata``'s attributes as Python values (lists for
        arrays, as ``read_hdf_APS`` converts them).
    """

    path: Path
    counts: np.ndarray = field(repr=False)
    detector_counts: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    position_names: tuple[str, ...] = ()
    positions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    scaler_names: tuple[str, ...] = ()
    scalers: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    fit: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    roi: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    detector_fit: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    detector_roi: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the map."""
        return self.counts.shape[:2]

    @property
    def n_channels(self) -> int:
        """Channels per spectrum."""
        return self.counts.shape[2]

    @property
    def scan_id(self) -> int | None:
        """The run's ``scan_id``, None if the metadata has none."""
        value = self.metadata.get("scan_id")
        return None if value is None else int(value)

    @property
    def incident_energy(self) -> float | None:
        """``instrument_mono_incident_energy`` (keV), None if absent."""
        value = self.metadata.get("instrument_mono_incident_energy")
        return None if value is None else float(value)

    @property
    def theta(self) -> float | None:
        """The rotation angle in degrees from ``param_theta`` (mdeg), None if absent."""
        value = self.metadata.get("param_theta")
        if value is None:
            return None
        units = str(self.metadata.get("param_theta_units", "mdeg")).strip().lower()
        if units in ("mdeg", "millidegree", "millidegrees"):
            return float(value) / 1000.0
        if units in ("deg", "degree", "degrees"):
            return float(value)
        raise PyXRFFormatError(
            f"{self.path}: /{GROUP}/scan_metadata param_theta_units is {units!r}; "
            "PyXRF writes 'mdeg' (give the angle in mdeg or deg)"
        )

    @property
    def i0_name(self) -> str | None:
        """The first of :data:`I0_SCALERS` among the scalers, None if none is there."""
        return next((n for n in I0_SCALERS if n in self.scalers), None)

    @property
    def i0(self) -> np.ndarray | None:
        """The incident-flux map (:attr:`i0_name`), None if the file has none of :data:`I0_SCALERS`."""
        name = self.i0_name
        return None if name is None else self.scalers[name]


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).rstrip("\x00")


def _python(value):
    """An attribute as PyXRF's reader gives it: bytes decoded, arrays as lists, NumPy scalars as Python."""
    if isinstance(value, (bytes, np.bytes_)):
        return _text(value)
    if isinstance(value, np.ndarray):
        return [_python(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_python(v) for v in value]
    return value


class _Reader:
    def __init__(self, f: h5py.File, path: Path):
        self.f, self.path = f, path

    def fail(self, name: str, what: str, fix: str):
        raise PyXRFFormatError(f"{self.path}: /{name} {what}; {fix}")

    def dataset(self, name: str, fix: str) -> h5py.Dataset:
        obj = self.f.get(name)
        if not isinstance(obj, h5py.Dataset):
            self.fail(name, "is missing" if obj is None else "is not a dataset", fix)
        return obj

    def names(self, name: str, n: int) -> tuple[str, ...]:
        ds = self.dataset(name, f"{name} must list one name per map")
        if ds.dtype.kind not in "SUO":
            self.fail(name, f"has dtype {ds.dtype}, not strings", "names must be a string dataset")
        names = tuple(_text(v) for v in np.asarray(ds[()]).reshape(-1))
        if len(names) != n:
            self.fail(name, f"has {len(names)} names for {n} maps", "there must be one name per map")
        if len(set(names)) != len(names):
            self.fail(name, f"repeats a name ({names})", "each map needs its own name")
        return names

    def array(self, name: str, ndim: int) -> np.ndarray:
        ds = self.dataset(name, "rewrite the file with PyXRF")
        if ds.dtype.kind not in "fiub":
            self.fail(name, f"has dtype {ds.dtype}, not numbers", "rewrite the file with PyXRF")
        if ds.ndim != ndim:
            self.fail(name, f"has {ds.ndim} dimensions {ds.shape}, expected {ndim}", "rewrite the file with PyXRF")
        return ds[()]


def _check_monotonic(r: _Reader, name: str, values: np.ndarray, axis: int, at: str) -> None:
    """Each row (x_pos, axis=1) or column (y_pos, axis=0) strictly monotonic, all in one direction."""
    if values.shape[axis] < 2:
        return
    steps = np.diff(values, axis=axis)
    if not np.all(np.isfinite(values)):
        r.fail(at, f"{name} holds non-finite positions", "every pixel needs its position")
    sign = np.sign(steps.reshape(-1)[0])
    bad = np.sign(steps) != sign if sign != 0 else np.ones(steps.shape, bool)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        line = "row" if axis == 1 else "column"
        r.fail(at, f"{name} is not strictly monotonic along each {line} (at pixel {where})",
               f"{name} must increase (or decrease) along every {line}; PyXRF flips snake scans when "
               "it writes them, so an unflipped snake scan or a stuck encoder shows here")


def _maps(r: _Reader, base: str, kind: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    values_at, names_at = f"{base}/xrf_{kind}", f"{base}/xrf_{kind}_name"
    if values_at not in r.f:
        return {}
    values = r.array(values_at, 3)
    if values.shape[1:] != shape:
        r.fail(values_at, f"has shape {values.shape}, expected (n, {shape[0]}, {shape[1]})",
               "the maps must be (n, rows, cols) of the spectra's map")
    names = r.names(names_at, values.shape[0])
    return {n: values[i] for i, n in enumerate(names)}


def read_pyxrf(path: str | Path) -> PyXRFFile:
    """Read a PyXRF HDF5 file (``xrfmap``): spectra, positions, scalers, fitted maps, metadata.

    Parameters
    ----------
    path
        The ``scan2D_<id>.h5`` file.

    Returns
    -------
    PyXRFFile
        The summed spectra ``(rows, cols, channels)`` and each detector
        channel's, positions and scalers as ``(rows, cols)`` maps by name
        (the scalers moved from the file's ``(rows, cols, n)``), the fitted
        and ROI maps by element line, and the scan metadata.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    PyXRFFormatError
        A ``ValueError``: not HDF5, no ``xrfmap/detsum/counts``, names that
        do not match the maps, shapes that disagree with the spectra, or
        positions not strictly monotonic; the message names the file, the
        dataset and the fix.

    See Also
    --------
    write_pyxrf : writes this layout (for tests and examples).

    Notes
    -----
    The layout is PyXRF's ``save_data_to_hdf5`` and ``save_fitdata_to_hdf``;
    see the module docstring. Arrays keep the file's dtype.

    Examples
    --------
    >>> p = read_pyxrf("scan2D_12345.h5")                        # doctest: +SKIP
    >>> p.counts.shape, p.i0_name, p.theta, sorted(p.fit)[:2]    # doctest: +SKIP
    ((51, 61, 4096), 'sclr1_ch4', -30.0, ['Ca_K', 'Fe_K'])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise PyXRFFormatError(f"{path}: not an HDF5 file; give the PyXRF scan2D_*.h5 file")
    with h5py.File(path, "r") as f:
        r = _Reader(f, path)
        if not isinstance(f.get(GROUP), h5py.Group):
            raise PyXRFFormatError(f"{path}: no /{GROUP} group; this is not a PyXRF file (make one with "
                                   "pyxrf's make_hdf from the run)")
        counts_at = f"{GROUP}/detsum/counts"
        r.dataset(counts_at, "every PyXRF file has the summed spectra (rows, cols, channels); "
                             "re-create it with make_hdf")
        counts = r.array(counts_at, 3)
        shape = counts.shape[:2]
        group = f[GROUP]
        numbers = sorted(int(m.group(1)) for k in group if (m := _DET.match(k)))
        detector_counts, detector_fit, detector_roi = {}, {}, {}
        for number in numbers:
            det = f"det{number}"
            if f"{GROUP}/{det}/counts" in f:
                arr = r.array(f"{GROUP}/{det}/counts", 3)
                if arr.shape != counts.shape:
                    r.fail(f"{GROUP}/{det}/counts", f"has shape {arr.shape}, the sum has {counts.shape}",
                           "every detector channel must cover the same map and spectrum")
                detector_counts[det] = arr
            for kind, store in (("fit", detector_fit), ("roi", detector_roi)):
                maps = _maps(r, f"{GROUP}/{det}", kind, shape)
                if maps:
                    store[det] = maps
        positions: dict[str, np.ndarray] = {}
        position_names: tuple[str, ...] = ()
        if isinstance(group.get("positions"), h5py.Group):
            pos_at = f"{GROUP}/positions/pos"
            pos = r.array(pos_at, 3)
            if pos.shape[1:] != shape:
                r.fail(pos_at, f"has shape {pos.shape}, expected (n, {shape[0]}, {shape[1]})",
                       "positions must be (n, rows, cols) of the spectra's map")
            position_names = r.names(f"{GROUP}/positions/name", pos.shape[0])
            positions = {n: pos[i] for i, n in enumerate(position_names)}
            for name, axis in (("x_pos", 1), ("y_pos", 0)):
                if name in positions:
                    _check_monotonic(r, name, positions[name], axis, pos_at)
        scalers: dict[str, np.ndarray] = {}
        scaler_names: tuple[str, ...] = ()
        if isinstance(group.get("scalers"), h5py.Group):
            val_at = f"{GROUP}/scalers/val"
            val = r.array(val_at, 3)
            if val.shape[:2] != shape:
                r.fail(val_at, f"has shape {val.shape}, expected ({shape[0]}, {shape[1]}, n)",
                       "PyXRF stores the scalers (rows, cols, n), the scaler index last")
            scaler_names = r.names(f"{GROUP}/scalers/name", val.shape[2])
            scalers = {n: np.ascontiguousarray(val[:, :, i]) for i, n in enumerate(scaler_names)}
        metadata = {}
        meta = group.get("scan_metadata")
        if isinstance(meta, h5py.Group):
            metadata = {k: _python(v) for k, v in meta.attrs.items()}
        return PyXRFFile(
            path=path,
            counts=counts,
            detector_counts=detector_counts,
            position_names=position_names,
            positions=positions,
            scaler_names=scaler_names,
            scalers=scalers,
            fit=_maps(r, f"{GROUP}/detsum", "fit", shape),
            roi=_maps(r, f"{GROUP}/detsum", "roi", shape),
            detector_fit=detector_fit,
            detector_roi=detector_roi,
            metadata=metadata,
        )


def write_pyxrf(
    path: str | Path,
    *,
    detectors: Mapping[str, object] | None = None,
    counts=None,
    positions: Mapping[str, object] | None = None,
    scalers: Mapping[str, object] | None = None,
    metadata: Mapping[str, object] | None = None,
    fit: Mapping[str, object] | None = None,
    roi: Mapping[str, object] | None = None,
    detector_fit: Mapping[str, Mapping[str, object]] | None = None,
    create_each_det: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the layout PyXRF writes, per PyXRF ``pyxrf/model/load_data_from_db.py`` (``save_data_to_hdf5``)
    and ``pyxrf/model/fileio.py`` (``save_fitdata_to_hdf``).

    Parameters
    ----------
    path
        The file to create.
    detectors
        ``"det1"``, ``"det2"`` ... -> ``(rows, cols, channels)`` spectra
        (stored float32, gzip, in sorted key order as PyXRF does).
    counts
        The summed spectra (``data["det_sum"]``); if None, the sum of
        ``detectors`` (one of the two is needed).
    positions
        Name -> ``(rows, cols)`` (PyXRF names them ``"x_pos"`` and
        ``"y_pos"``), stored as one float64 ``(n, rows, cols)``.
    scalers
        Name -> ``(rows, cols)``, stored as one float64 ``(rows, cols, n)``.
    metadata
        The scan metadata, written as attributes of ``xrfmap/scan_metadata``
        with ``file_type``, ``file_format``, ``file_format_version`` and
        ``file_created_time`` added as PyXRF adds them; ``file_software``
        defaults to this writer (PyXRF puts its own name there unless given).
    fit, roi
        Element line -> ``(rows, cols)``, saved as ``detsum/xrf_fit`` /
        ``xrf_roi`` with their ``|S20`` names (``save_fitdata_to_hdf``).
    detector_fit
        ``"det1"`` -> line -> map: the fits of each detector channel.
    create_each_det
        Write ``det1``, ``det2`` ... as well as the sum (PyXRF's option).
    overwrite
        Replace an existing file; otherwise an existing file raises
        ``FileExistsError`` (PyXRF raises ``IOError``).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (PyXRF does not overwrite either); pass overwrite=True")
    detectors = {k: np.asarray(v, dtype=np.float32) for k, v in (detectors or {}).items()}
    for k in detectors:
        if not _DET.match(k):
            raise ValueError(f"detector {k!r}: PyXRF names the channels det1, det2, ...")
    names = sorted(detectors)  # save_data_to_hdf5: xrf_det_list.sort()
    if counts is not None:
        total = np.asarray(counts, dtype=np.float32)
    elif names:
        total = np.copy(detectors[names[0]])
        for k in names[1:]:
            total += detectors[k]
    else:
        raise ValueError("give detectors or counts: a PyXRF file always has xrfmap/detsum/counts")
    if total.ndim != 3 or any(v.shape != total.shape for v in detectors.values()):
        raise ValueError(f"spectra must all be (rows, cols, channels); got {total.shape} and "
                         f"{[v.shape for v in detectors.values()]}")
    shape = total.shape[:2]
    meta = dict(metadata or {})
    meta.update(FILE_METADATA)
    meta["file_created_time"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.localtime())
    if "file_software" not in meta:
        meta.update({"file_software": "xfct_bluesky.importers.pyxrf.write_pyxrf", "file_software_version": ""})
    with h5py.File(path, "w") as f:
        grp = f.create_group(f"{GROUP}/scan_metadata")
        for key, value in meta.items():
            grp.attrs[key] = value
        if create_each_det:
            for det in names:
                ds = f.create_group(f"{GROUP}/{det}").create_dataset("counts", data=detectors[det],
                                                                      compression="gzip")
                ds.attrs["comments"] = f"Experimental data from {det}"
        ds = f.create_group(f"{GROUP}/detsum").create_dataset("counts", data=total, compression="gzip")
        ds.attrs["comments"] = "Experimental data from channel sum"
        if positions:
            pos = np.stack([np.asarray(v, dtype=np.float64) for v in positions.values()])
            if pos.shape[1:] != shape:
                raise ValueError(f"positions have shape {pos.shape[1:]}, the spectra's map is {shape}")
            g = f.create_group(f"{GROUP}/positions")
            g.create_dataset("name", data=[k.encode("utf-8") for k in positions])  # helper_encode_list
            g.create_dataset("pos", data=pos)
        if scalers:
            val = np.stack([np.asarray(v, dtype=np.float64) for v in scalers.values()], axis=-1)
            if val.shape[:2] != shape:
                raise ValueError(f"scalers have shape {val.shape[:2]}, the spectra's map is {shape}")
            g = f.create_group(f"{GROUP}/scalers")
            g.create_dataset("name", data=[k.encode("utf-8") for k in scalers])
            g.create_dataset("val", data=val)
    if fit:
        _save_fitdata(path, fit, f"{GROUP}/detsum", "xrf_fit", "xrf_fit_name", shape)
    if roi:
        _save_fitdata(path, roi, f"{GROUP}/detsum", "xrf_roi", "xrf_roi_name", shape)
    for det, maps in (detector_fit or {}).items():
        _save_fitdata(path, maps, f"{GROUP}/{det}", "xrf_fit", "xrf_fit_name", shape)
    return path


def _save_fitdata(path: Path, maps: Mapping[str, object], datapath: str, data_saveas: str,
                  dataname_saveas: str, shape: tuple[int, int]) -> None:
    """``fileio.save_fitdata_to_hdf``: the maps as one (n, rows, cols) array and their ``|S20`` names."""
    data = np.asarray([np.asarray(v) for v in maps.values()])
    if data.shape[1:] != shape:
        raise ValueError(f"{datapath}/{data_saveas}: maps of shape {data.shape[1:]}, the spectra's map is {shape}")
    with h5py.File(path, "a") as f:
        grp = f.require_group(datapath)
        if data_saveas in grp:
            del grp[data_saveas]
        ds = grp.create_dataset(data_saveas, data=data)
        ds.attrs["comments"] = " "
        if dataname_saveas in grp:
            del grp[dataname_saveas]
        names = np.array(list(maps)).astype(f"|S{_NAME_SIZE}")
        grp.create_dataset(dataname_saveas, data=names).attrs["comments"] = " "
