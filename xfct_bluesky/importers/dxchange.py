"""Read Data Exchange (DXchange) HDF5 files, tomopy's exchange format: ``/exchange``.

A Data Exchange file (data-exchange/dxfile, De Carlo et al. 2014) holds a
tomographic scan: the projections, flat ("white") and dark fields and the
rotation angles in ``/exchange``, the instrument and sample in
``/measurement``, the processing done in ``/process`` (``/provenance`` in
the newer documents), and a root ``implements`` naming the groups present.
:func:`read_dxchange` returns a :class:`DXchangeFile` of NumPy arrays:
``data`` as stored, ``(angles, rows, cols)``; the angles in degrees. Nothing
here knows about bluesky or Tiled.

The layout
----------
Followed from the writers and readers of the format:

* data-exchange/dxfile ``dxfile/dxtomo.py``: ``File`` (creates ``exchange``
  and keeps ``implements`` through ``create_top_level_group``) and
  ``Entry`` (each entry a group under its ``root``, each value a dataset
  with its ``units`` and any other key as attributes);
  ``doc/source/xraytomo.rst`` (the tables of members);
* data-exchange/dxchange ``dxchange/writer.py``: ``write_dxf`` (``/exchange/
  data`` with ``units`` "counts", ``description`` "transmission", ``axes``
  "theta:y:x" through dxfile) and ``write_hdf5`` (a plain dataset, and an
  ``implements`` of the group's name);
* dxchange ``dxchange/exchange.py``: ``read_aps_32id`` (``exchange/data``,
  ``data_white``, ``data_dark``, ``theta`` in degrees; ``exchange_rank``
  selects ``exchange1``, ``exchange2`` ... for processed data).

============================  =======================================================
``implements``                string **dataset** (not an attribute): the top-level
                              groups joined by ":" (``exchange:measurement:process``)
``exchange/data``             3-D, the detector's dtype: ``axes`` "theta:y:x" by
                              default (an ``axes`` attribute is mandatory otherwise)
``exchange/data_white``,      3-D, the same image size: flat and dark fields
``data_dark``
``exchange/theta``            (angles,): the rotation angle of each projection,
                              ``units`` "deg"; missing means 0..180 evenly spaced
``exchange/theta_white``,     the angles at which the flats and darks were taken
``theta_dark``
``measurement/instrument/``   ``source`` (``current`` A, ``energy`` J ...),
                              ``monochromator`` (``energy`` J), ``detector``
                              (``pixel_size_x`` m, ``exposure_time`` s ...),
                              ``acquisition`` (``rotation_start_angle`` degree ...)
``measurement/sample/``       ``name``, ``description``, ``thickness`` (m) ...
``process/``, ``provenance/``  the processing steps
============================  =======================================================

Every value may carry ``units`` and ``description`` attributes; without
``units`` the docs take SI (the monochromator energy in J, not keV).

XRF tomography
--------------
Neither dxchange nor dxfile defines an X-ray fluorescence layout: dxchange's
only fluorescence reader, ``read_aps_13id``, reads GSECARS'
``/xrfmap/roimap/sum_cor``, and XRFtomo (tomography/XRFtomo
``xrftomo/file_io/writer.py``, ``save_hdf5``) writes its stacks as root
datasets ``elements``, ``names``, ``thetas`` and ``data`` (element, theta,
y, x), outside Data Exchange. The one exchange-group convention for element
channels is XRF-Maps' (``HDF5_IO::add_exchange_layout``, ``_add_exchange_meta``
in ``src/io/file/hdf5_io.cpp``): in each per-projection analysed file,
``/exchange_0`` .. ``exchange_3`` hold ``data`` (scalers then element maps,
``(channels, rows, cols)``), ``data_names``, ``data_units``, ``theta`` (one
angle), ``x_axis``, ``y_axis``, ``description`` and ``version``. This reader
reads such a group when asked (``exchange="exchange_0"``): a ``data_names``
dataset makes the first axis of ``data`` the channels, and theta one angle.

Errors
------
A file that is not HDF5, lacks the exchange group or its ``data``, has
``data`` or flats/darks that are not 3-D images of one size, a theta count
that does not match the projections, or a theta in units other than degrees
or radians raises :class:`DXchangeFormatError` (a ``ValueError``) naming the
file, the dataset and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..physics.constants import KEV_J

__all__ = ["DXTOMO_UNITS", "DXValue", "DXchangeFile", "DXchangeFormatError", "read_dxchange", "write_dxchange"]

logger = logging.getLogger(__name__)

_DEGREES = {"deg", "degree", "degrees", "\u00b0"}
_RADIANS = {"rad", "radian", "radians"}
DXTOMO_UNITS: dict[str, str] = {
    "sample/name": "text", "sample/description": "text", "sample/preparation_date": "text",
    "sample/chemical_formula": "text", "sample/mass": "kg", "sample/concentration": "kgm^-3",
    "sample/environment": "text", "sample/temperature": "kelvin", "sample/temperature_set": "kelvin",
    "sample/pressure": "kPa", "sample/thickness": "m", "sample/position": "text", "sample/comment": "text",
    "instrument/name": "text", "instrument/comment": "text",
    "instrument/source/name": "text", "instrument/source/datetime": "text", "instrument/source/beamline": "text",
    "instrument/source/current": "A", "instrument/source/energy": "J", "instrument/source/pulse_energy": "J",
    "instrument/source/pulse_width": "s", "instrument/source/mode": "text",
    "instrument/source/beam_intensity_incident": "phs^-1",
    "instrument/source/beam_intensity_transmitted": "phs^-1",
    "instrument/monochromator/type": "text", "instrument/monochromator/energy": "J",
    "instrument/monochromator/energy_error": "J", "instrument/monochromator/mono_stripe": "text",
    "instrument/detector/manufacturer": "text", "instrument/detector/model": "text",
    "instrument/detector/serial_number": "text", "instrument/detector/bit_depth": "dimensionless",
    "instrument/detector/pixel_size_x": "m", "instrument/detector/pixel_size_y": "m",
    "instrument/detector/actual_pixel_size_x": "m", "instrument/detector/actual_pixel_size_y": "m",
    "instrument/detector/dimension_x": "pixels", "instrument/detector/dimension_y": "text",
    "instrument/detector/binning_x": "pixels", "instrument/detector/binning_y": "dimensionless",
    "instrument/detector/exposure_time": "s", "instrument/detector/frame_rate": "fps",
    "instrument/acquisition/start_date": "text", "instrument/acquisition/end_date": "text",
    "instrument/acquisition/rotation_start_angle": "degree",
    "instrument/acquisition/rotation_end_angle": "degree", "instrument/acquisition/angular_step": "degree",
}
"""``/measurement`` entry -> the units ``dxfile.dxtomo.Entry`` writes for it (its ``_entry_definitions``, sic)."""


class DXchangeFormatError(ValueError):
    """A Data Exchange file cannot be read as it is; the message names the file, the dataset and the fix."""


@dataclass(frozen=True)
class DXValue:
    """One value of ``/measurement`` or ``/process``: the data (``str``, number or array) and its attributes."""

    value: object
    units: str | None = None
    description: str | None = None


@dataclass(frozen=True, eq=False)
class DXchangeFile:
    """The content of one Data Exchange file (see :func:`read_dxchange`).

    Attributes
    ----------
    path
        The file read.
    exchange
        The exchange group read (``"exchange"``, ``"exchange1"``, ``"exchange_0"`` ...).
    implements
        The root ``implements``, split at ":" (empty if the file has none).
    data
        ``(angles, rows, cols)`` projections, the file's dtype; ``(channels,
        rows, cols)`` maps when :attr:`channel_names` is set.
    data_attrs
        ``data``'s attributes (``units``, ``description``, ``axes``).
    data_white, data_dark
        ``(n, rows, cols)`` flat and dark fields, None if absent.
    theta
        float64 degrees, one per projection (one angle for channel maps);
        None if the file has none (dxchange then assumes 0..180 evenly spaced).
    theta_units
        ``theta``'s ``units`` attribute as stored (None if absent: degrees
        assumed, as ``read_aps_32id`` does).
    theta_white, theta_dark
        The angles of the flats and darks (degrees), None if absent.
    channel_names, channel_units
        ``data_names`` and ``data_units`` of an XRF-Maps exchange group, else None.
    exchange_extras
        The group's other datasets by name (``x``, ``y``, ``data_shift_x``, ...).
    measurement, process
        Path below ``/measurement`` (``"instrument/monochromator/energy"``) or
        ``/process`` (or ``/provenance``) -> :class:`DXValue`.
    """

    path: Path
    exchange: str
    implements: tuple[str, ...]
    data: np.ndarray = field(repr=False)
    data_attrs: dict[str, str] = field(default_factory=dict)
    data_white: np.ndarray | None = field(default=None, repr=False)
    data_dark: np.ndarray | None = field(default=None, repr=False)
    theta: np.ndarray | None = field(default=None, repr=False)
    theta_units: str | None = None
    theta_white: np.ndarray | None = field(default=None, repr=False)
    theta_dark: np.ndarray | None = field(default=None, repr=False)
    channel_names: tuple[str, ...] | None = None
    channel_units: tuple[str, ...] | None = None
    exchange_extras: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    measurement: dict[str, DXValue] = field(default_factory=dict, repr=False)
    process: dict[str, DXValue] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of one image."""
        return self.data.shape[1:]

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """Channel name -> ``(rows, cols)`` map of an XRF-Maps exchange group (empty otherwise)."""
        if self.channel_names is None:
            return {}
        return {n: self.data[i] for i, n in enumerate(self.channel_names)}

    @property
    def incident_energy_kev(self) -> float | None:
        """``instrument/monochromator/energy`` in keV (stored J by default, keV or eV if so labelled)."""
        entry = self.measurement.get("instrument/monochromator/energy")
        if entry is None:
            return None
        value = float(np.asarray(entry.value).reshape(-1)[0])
        units = (entry.units or "J").strip()
        scale = {"J": 1 / KEV_J, "keV": 1.0, "eV": 1e-3}.get(units)
        if scale is None:
            raise DXchangeFormatError(
                f"{self.path}: /measurement/instrument/monochromator/energy has units {units!r}; "
                "give J (the Data Exchange default), keV or eV"
            )
        return value * scale


def _text(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", errors="replace")
    return str(value).rstrip(" \x00")


def _attr(obj, key: str) -> str | None:
    if key not in obj.attrs:
        return None
    value = obj.attrs[key]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    return _text(value)


def _value(ds: h5py.Dataset):
    """A dataset as a Python value: strings decoded, one-element arrays as scalars."""
    raw = ds[()]
    if ds.dtype.kind in "SUO":
        arr = np.asarray(raw, dtype=object)
        if arr.size == 1:
            return _text(arr.reshape(-1)[0])
        return np.array([_text(v) for v in arr.reshape(-1)]).reshape(arr.shape)
    arr = np.asarray(raw)
    return arr.reshape(-1)[0].item() if arr.size == 1 else arr


def _walk(group: h5py.Group) -> dict[str, DXValue]:
    out: dict[str, DXValue] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = DXValue(_value(obj), _attr(obj, "units"), _attr(obj, "description"))

    group.visititems(visit)
    return out


class _Reader:
    def __init__(self, f: h5py.File, path: Path):
        self.f, self.path = f, path

    def fail(self, name: str, what: str, fix: str):
        raise DXchangeFormatError(f"{self.path}: /{name} {what}; {fix}")

    def images(self, name: str, shape: tuple[int, int] | None) -> np.ndarray:
        ds = self.f[name]
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiub":
            self.fail(name, "is not a numeric dataset", "it must hold images (n, rows, cols)")
        if ds.ndim != 3:
            self.fail(name, f"has {ds.ndim} dimensions {ds.shape}, expected 3 (n, rows, cols)",
                      "store a stack of images; a single image needs a leading axis of length 1")
        if shape is not None and tuple(ds.shape[1:]) != tuple(shape):
            self.fail(name, f"has images of {ds.shape[1:]}, the projections are {tuple(shape)}",
                      "flats and darks must have the projections' image size")
        return ds[()]

    def angles(self, name: str, n: int | None, what: str) -> tuple[np.ndarray, str | None]:
        ds = self.f[name]
        if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
            self.fail(name, "is not a numeric dataset", "angles must be numbers")
        values = np.asarray(ds[()], dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        values = values.reshape(-1)
        if n is not None and values.size != n:
            self.fail(name, f"has {values.size} angles for {n} {what}",
                      f"give one angle per {what.rstrip('s')} (theta and data must have the same length)")
        units = _attr(ds, "units")
        key = (units or "").strip().lower()
        if key in _RADIANS:
            values = np.rad2deg(values)
        elif key and key not in _DEGREES:
            self.fail(name, f"has units {units!r}", "angles must be in degrees (units 'deg') or radians ('rad')")
        return values, units


def read_dxchange(path: str | Path, *, exchange: str = "exchange") -> DXchangeFile:
    """Read a Data Exchange HDF5 file: projections, flats, darks, angles, measurement, process.

    Parameters
    ----------
    path
        The ``.h5`` file.
    exchange
        The exchange group: ``"exchange"`` (raw data, the default),
        ``"exchange1"`` .. (processed, dxchange's ``exchange_rank``) or
        ``"exchange_0"`` .. (XRF-Maps' element-map groups).

    Returns
    -------
    DXchangeFile
        ``data`` as stored ``(angles, rows, cols)``, flats and darks, theta
        in degrees (converted from radians if so labelled), the group's other
        datasets, and ``/measurement`` and ``/process`` values with their units.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    DXchangeFormatError
        A ``ValueError``: not HDF5, no exchange group or ``data``, images not
        3-D or of different sizes, a theta count that does not match, or
        theta in units other than degrees or radians; the message names the
        file, the dataset and the fix.

    See Also
    --------
    write_dxchange : writes this layout (tests, examples, and ``reconstruct --dxchange`` through
        :func:`xfct_bluesky.reconstruction.write_dxchange`).

    Notes
    -----
    ``implements`` is read from the root dataset dxfile writes (and from a
    root attribute of that name, which some writers use). A theta without
    units is taken as degrees, as dxchange's ``read_aps_32id`` does.

    Examples
    --------
    >>> dx = read_dxchange("tomo_00001.h5")                          # doctest: +SKIP
    >>> dx.data.shape, dx.theta[:3], dx.implements                   # doctest: +SKIP
    ((1500, 2048, 2448), array([0.  , 0.12, 0.24]), ('exchange', 'measurement', 'process'))
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise DXchangeFormatError(f"{path}: not an HDF5 file; give the Data Exchange .h5 file")
    with h5py.File(path, "r") as f:
        r = _Reader(f, path)
        group = f.get(exchange)
        if not isinstance(group, h5py.Group):
            present = sorted(k for k in f if k.startswith("exchange"))
            raise DXchangeFormatError(
                f"{path}: no /{exchange} group (exchange groups here: {present or 'none'}); "
                "give exchange= one of them, or this is not a Data Exchange file"
            )
        if not isinstance(group.get("data"), h5py.Dataset):
            r.fail(f"{exchange}/data", "is missing",
                   "every exchange group must hold a 'data' dataset (the projections)")
        data = r.images(f"{exchange}/data", None)
        data_attrs = {k: _attr(group["data"], k) for k in group["data"].attrs}
        implements: tuple[str, ...] = ()
        if isinstance(f.get("implements"), h5py.Dataset):
            implements = tuple(p for p in str(_value(f["implements"])).split(":") if p)
        elif "implements" in f.attrs:
            implements = tuple(p for p in _attr(f, "implements").split(":") if p)
        names = units = None
        if isinstance(group.get("data_names"), h5py.Dataset):
            names = tuple(_text(v) for v in np.asarray(group["data_names"][()], dtype=object).reshape(-1))
            if len(names) != data.shape[0]:
                r.fail(f"{exchange}/data_names", f"has {len(names)} names for {data.shape[0]} maps",
                       "one name per map of data")
            if isinstance(group.get("data_units"), h5py.Dataset):
                units = tuple(_text(v) for v in np.asarray(group["data_units"][()], dtype=object).reshape(-1))
                if len(units) != len(names):
                    r.fail(f"{exchange}/data_units", f"has {len(units)} units for {len(names)} maps",
                           "one unit per map of data")
        white = r.images(f"{exchange}/data_white", data.shape[1:]) if "data_white" in group else None
        dark = r.images(f"{exchange}/data_dark", data.shape[1:]) if "data_dark" in group else None
        theta = theta_units = None
        if "theta" in group:
            n = 1 if names is not None else data.shape[0]
            theta, theta_units = r.angles(f"{exchange}/theta", n, "maps' projection" if names else "projections")
        else:
            logger.info("%s: no /%s/theta; dxchange would assume %d angles from 0 to 180 degrees",
                        path, exchange, data.shape[0])
        theta_white = (r.angles(f"{exchange}/theta_white", None if white is None else white.shape[0], "flats")[0]
                       if "theta_white" in group else None)
        theta_dark = (r.angles(f"{exchange}/theta_dark", None if dark is None else dark.shape[0], "darks")[0]
                      if "theta_dark" in group else None)
        known = {"data", "data_white", "data_dark", "theta", "theta_white", "theta_dark", "data_names", "data_units"}
        extras = {k: _value(group[k]) for k in group if k not in known and isinstance(group[k], h5py.Dataset)}
        measurement = _walk(f["measurement"]) if isinstance(f.get("measurement"), h5py.Group) else {}
        process: dict[str, DXValue] = {}
        for name in ("process", "provenance"):
            if isinstance(f.get(name), h5py.Group):
                process.update(_walk(f[name]))
        return DXchangeFile(
            path=path,
            exchange=exchange,
            implements=implements,
            data=data,
            data_attrs=data_attrs,
            data_white=white,
            data_dark=dark,
            theta=theta,
            theta_units=theta_units,
            theta_white=theta_white,
            theta_dark=theta_dark,
            channel_names=names,
            channel_units=units,
            exchange_extras=extras,
            measurement=measurement,
            process=process,
        )


def _entry(value, units_default: str | None) -> tuple[object, dict[str, str]]:
    """(value, attributes) from a value, a (value, units) pair or a dict with 'value' and attributes."""
    if isinstance(value, Mapping):
        attrs = {k: v for k, v in value.items() if k != "value"}
        return value["value"], attrs
    if isinstance(value, tuple) and len(value) == 2 and (value[1] is None or isinstance(value[1], str)):
        return value[0], ({} if value[1] is None else {"units": value[1]})
    return value, ({} if units_default is None else {"units": units_default})


def _storable(value):
    """A value h5py can store: a sequence of strings as variable-length UTF-8 strings (h5py refuses numpy's ``U``)."""
    if isinstance(value, (list, tuple, np.ndarray)) and np.asarray(value).dtype.kind == "U":
        return np.array([str(v) for v in np.asarray(value).reshape(-1)], dtype=h5py.string_dtype()).reshape(
            np.shape(value))
    return value


def write_dxchange(
    path: str | Path,
    data,
    *,
    theta=None,
    theta_units: str = "deg",
    data_white=None,
    data_dark=None,
    measurement: Mapping[str, object] | None = None,
    process: Mapping[str, object] | None = None,
    exchange: str = "exchange",
    channel_names=None,
    channel_units=None,
    data_attrs: Mapping[str, str | None] | None = None,
    extras: Mapping[str, object] | None = None,
    compression: str | None = None,
) -> Path:
    """Write the layout dxfile writes, per data-exchange/dxfile ``dxfile/dxtomo.py`` (``File``,
    ``Entry``) as dxchange's ``dxchange/writer.py`` ``write_dxf`` drives it.

    Parameters
    ----------
    path
        The file to create (overwritten).
    data
        ``(angles, rows, cols)`` projections, written as given with
        ``write_dxf``'s attributes (``units`` "counts", ``description``
        "transmission", ``axes`` "theta:y:x"; "channel:y:x" for channel maps).
    theta, theta_units
        One angle per projection and its ``units`` attribute (default "deg",
        as the Data Exchange docs give it).
    data_white, data_dark
        Flat and dark fields ``(n, rows, cols)``, if any.
    measurement, process
        Path below the group (``"instrument/monochromator/energy"``) ->
        value, ``(value, units)`` or ``{"value": ..., "units": ...,
        "description": ...}``: each a dataset with its attributes, as an
        ``Entry`` writes it. Without units, a ``/measurement`` entry gets the
        units ``Entry`` defines for it (:data:`DXTOMO_UNITS`: the
        monochromator energy in J).
    exchange
        The exchange group's name.
    channel_names, channel_units
        For element maps: ``data`` is ``(channels, rows, cols)`` and these
        are written as ``data_names`` and ``data_units`` (XRF-Maps'
        ``_add_exchange_meta`` names), theta as one angle.
    data_attrs
        ``data``'s attributes over ``write_dxf``'s: a value replaces one (or
        adds one), None drops one (e.g. ``{"units": None}`` when the units
        are not known: the docs then take counts).
    extras
        More datasets of the exchange group (``shifts``, ``recon_Zn`` ...):
        name -> value, ``(value, units)`` or ``{"value": ..., "units": ...,
        "description": ...}`` as for ``measurement`` (no default units), or
        an ``h5py.SoftLink`` to a dataset written already (``data_Zn`` ->
        ``/exchange/data``: one copy of the array).
    compression
        HDF5 filter (``"gzip"``) for ``data``, the flats, darks and every
        array of two or more dimensions in ``extras``; default none.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    dxfile keeps ``implements`` up to date by deleting and re-creating it
    with ``self['/implements'].value``, which h5py 3 removed, so dxfile
    itself fails on a second top-level group with current h5py; this writer
    writes the ``implements`` dxfile means: the top-level groups in the
    order they were created, joined by ":".
    """
    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"data has shape {data.shape}; Data Exchange data is (angles, rows, cols)")
    top: list[str] = []
    with h5py.File(path, "w") as f:

        def top_level(name: str) -> h5py.Group:  # dxtomo.File.create_top_level_group
            if name not in f:
                f.create_group(name)
                top.append(name)
                if "implements" in f:
                    del f["implements"]
                f.create_dataset("implements", data=":".join(top))
            return f[name]

        grp = top_level(exchange)
        axes = "channel:y:x" if channel_names is not None else "theta:y:x"
        ds = grp.create_dataset("data", data=data, compression=compression)
        attrs = {"units": "counts", "description": "transmission", "axes": axes, **(data_attrs or {})}
        for key, value in attrs.items():
            if value is not None:
                ds.attrs[key] = value
        if data_white is not None:
            grp.create_dataset("data_white", data=np.asarray(data_white), compression=compression
                               ).attrs["units"] = "counts"
        if data_dark is not None:
            grp.create_dataset("data_dark", data=np.asarray(data_dark), compression=compression
                               ).attrs["units"] = "counts"
        if theta is not None:
            grp.create_dataset("theta", data=np.asarray(theta).reshape(-1)).attrs["units"] = theta_units
        if channel_names is not None:
            grp.create_dataset("data_names", data=np.array([str(n).encode() for n in channel_names]))
            units = channel_units if channel_units is not None else [""] * len(channel_names)
            grp.create_dataset("data_units", data=np.array([str(u).encode() for u in units]))
        for name, item in (extras or {}).items():
            if isinstance(item, h5py.SoftLink):
                grp[name] = item
                continue
            value, attrs = _entry(item, None)
            value = _storable(value)
            ds = grp.create_dataset(name, data=value, compression=compression if np.ndim(value) >= 2 else None)
            for k, v in attrs.items():
                ds.attrs[k] = v
        for root, entries, table in (("measurement", measurement, DXTOMO_UNITS), ("process", process, {})):
            if not entries:
                continue
            base = top_level(root)
            for key, item in entries.items():
                value, attrs = _entry(item, table.get(key))
                parent, _, name = key.rpartition("/")
                target = base.require_group(parent) if parent else base
                ds = target.create_dataset(name, data=_storable(value))
                for k, v in attrs.items():
                    ds.attrs[k] = v
    return path
