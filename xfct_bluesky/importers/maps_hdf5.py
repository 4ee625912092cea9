"""Read the analysed HDF5 files of XRF-Maps and MAPS (APS 2-ID-E, 2-ID-D, Bionanoprobe): ``/MAPS``.

XRF-Maps (AdvancedPhotonSource/XRF-Maps, A. Glowacki) fits the spectra of a
microprobe scan and writes one ``.h5`` file per scan (``img.dat/<scan>.h5``,
``.h50`` .. ``.h53`` per detector element) holding the spectra, the scalers,
the scan metadata, the element maps of each fitting routine and the
quantification. :func:`read_maps_hdf5` returns a :class:`MAPSFile` of NumPy
arrays: spectra ``(rows, cols, channels)`` and maps ``(rows, cols)``, as
:func:`xfct_bluesky.importers.mda.read_mda` and
:func:`xfct_bluesky.importers.flyxrf.read_flyxrf` do. Nothing here knows
about bluesky or Tiled.

The layout
----------
Followed from XRF-Maps ``src/io/file/hdf5_io.cpp`` (the revision of commit
``0023868``; the later, templated revision keeps every name, from
``src/core/defines.h``, and makes the datasets chunked and extensible):
``HDF5_IO::save_spectra_volume``, ``save_element_fits``,
``save_quantification``, ``save_scan_scalers`` with ``_save_scan_meta_data``,
``_save_extras``, ``_save_scalers`` and ``_save_amps``. ``real_t`` is
``float`` (``H5T_INTEL_R`` is little-endian float32) in the default build; a
double build writes float64, which this reader accepts too. Strings are
fixed-length 256-byte ``H5T_FORTRAN_S1`` (space padded) except the channel
names and units of ``XRF_Analyzed``, which are ``H5T_C_S1`` (NUL
terminated); both come back as ``str`` here.

========================================================  ===================================
``MAPS/version``                                          float32 (1,): 10.0 (9.0 once the
                                                          legacy layout below is added)
``MAPS/Spectra/mca_arr``                                  (channels, rows, cols), gzip 7,
                                                          chunks (channels, 1, 1)
``MAPS/Spectra/Energy``, ``Energy_Calibration``           (channels,) keV =
                                                          offset + slope * channel
                                                          (``gen_energy_vector``: the
                                                          quadratic term is not used);
                                                          (3,) offset, slope, quadratic
``MAPS/Spectra/Elapsed_Livetime``, ``Elapsed_Realtime``,  (rows, cols)
``Input_Counts``, ``Output_Counts``
``MAPS/Spectra/Integrated_Spectra/Spectra``               (channels,); and the four timing
                                                          values above as (1,)
``MAPS/Scalers/Names``, ``Units``, ``Values``             (n,), (n,), (n, rows, cols) gzip 7;
                                                          the beamline's scalers then the six
                                                          XRF-Maps computes: ``abs_ic`` =
                                                          DS_IC / US_IC, ``abs_cfg`` =
                                                          sum(CFG_2..5) / US_IC and the
                                                          segmented detector's DPC signals
                                                          ``H_dpc_cfg`` = (c2 - c3 - c4 + c5)
                                                          / sum, ``V_dpc_cfg`` = (c2 + c3 -
                                                          c4 - c5) / sum, ``dia1_dpc_cfg`` =
                                                          (c2 - c4) / sum, ``dia2_dpc_cfg`` =
                                                          (c3 - c5) / sum (non-finite -> 0)
``MAPS/Scalers/us_amp``, ``ds_amp``                       (3,): sensitivity number index,
                                                          unit index, number; plus
                                                          ``us_amp_num``, ``ds_amp_num`` (1,),
                                                          ``us_amp_unit``, ``ds_amp_unit``
``MAPS/XRF_Analyzed/{ROI,NNLS,Fitted}/Counts_Per_Sec``    (channels, rows, cols), gzip 7,
                                                          with ``Channel_Names`` and
                                                          ``Channel_Units`` ("cts/s"), the
                                                          element lines ordered K, then L
                                                          (``_L``), then M (``_M``) by Z
``MAPS/Scan/x_axis``, ``y_axis``                          float64 (cols,), (rows,)
``MAPS/Scan/theta``                                       float32 (1,): the projection angle
``MAPS/Scan/requested_rows``, ``requested_cols``          int32 (1,)
``MAPS/Scan/name``, ``scan_time_stamp``                   string (1,)
``MAPS/Scan/Extra_PVs/Names``, ``Values``,                string (n,): the MDA file's extra
``Description``, ``Unit``                                 PVs
``MAPS/Quantification/Number_Of_Standards``               int32 (1,)
``MAPS/Quantification/Standard<i>/...``                   ``Standard_Name``,
                                                          ``Element_Weights`` (ug/cm2) and
                                                          ``Element_Weights_Names``,
                                                          ``Scalers/{SR_Current,US_IC,DS_IC}``,
                                                          ``XRF_Analyzed/<routine>/
                                                          Counts_Per_Sec`` (n,) with names
``MAPS/Quantification/Calibration/<routine>/...``         ``Calibration_Curve_<scaler>`` (3, 92)
                                                          (K, L, M shells x elements H..U)
                                                          and ``Calibration_Curve_Labels``
                                                          (3, 92) 10-byte strings
========================================================  ===================================

The legacy layout
-----------------
Files of the IDL MAPS program (version 9) put everything directly in
``/MAPS``; XRF-Maps adds the same names beside the new groups when asked
(``HDF5_IO::add_v9_layout``, ``_add_v9_scalers``, ``_add_v9_quant``,
``_add_extra_pvs``): hard links ``x_axis``, ``y_axis``, ``scan_time_stamp``,
``mca_arr``, ``energy``, ``energy_calib``, ``int_spec``, ``us_amp``,
``ds_amp``, ``channel_names`` (of ROI, else Fitted, else NNLS), ``XRF_roi``
(ROI), ``XRF_roi_plus`` (NNLS), ``XRF_fits`` (Fitted); copies
``scaler_names``, ``scaler_units``, ``scalers`` of the scalers whose name has
no ``:`` (sorted by name); ``channel_units`` (4, channels); ``extra_pvs``
(4, n: names, values, descriptions, units) and ``extra_pvs_as_csv``
("name,value" each cut at its first space); ``XRF_*_quant`` (3, 1, channels)
with ``XRF_*_quant_names``; and ``version`` 9 (also as ``/version``). This
reader takes each item from the new groups and falls back to the legacy
name; :attr:`MAPSFile.sources` records which dataset each came from.

Theta
-----
``MAPS/Scan/theta`` is XRF-Maps' copy of the rotation stage's extra PV
(``HDF5_IO::update_theta`` finds it by the PV's name, spaces removed). In a
legacy file the angle is only one row of ``extra_pvs_as_csv``, at an index
that differs by instrument and year, so ``read_maps_hdf5(path,
theta_pv="...")`` looks it up by the PV's name (as XRFtomo's
``load_thetas`` does with ``MAPS/Scan/Extra_PVs/Names``) and never by index.

Errors
------
A file that is not HDF5, lacks ``/MAPS`` or the scan axes, has a member of a
group missing, an axis that is not strictly monotonic, shapes that disagree
with the axes, or more than one theta raises :class:`MAPSFormatError` (a
``ValueError``) naming the file, the dataset and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..quantities import SYMBOLS_BY_Z

__all__ = [
    "DERIVED_SCALERS",
    "DPC_SCALERS",
    "ELEMENT_SYMBOLS",
    "FIT_ROUTINES",
    "I0_SCALER",
    "EnergyCalibration",
    "MAPSChannels",
    "MAPSExtraPV",
    "MAPSFile",
    "MAPSFormatError",
    "MAPSStandard",
    "read_maps_hdf5",
    "write_maps_hdf5",
]

logger = logging.getLogger(__name__)

HDF5_SAVE_VERSION = 10.0
"""What XRF-Maps writes in ``/MAPS/version`` (``#define HDF5_SAVE_VERSION``); 9 with the legacy layout."""
FIT_ROUTINES = ("ROI", "Fitted", "SVD", "NNLS")
"""The ``XRF_Analyzed`` groups XRF-Maps writes (``xrf_analysis_save_names``: ROI, Gauss matrix, SVD, NNLS)."""
LEGACY_MAPS = {"ROI": "XRF_roi", "NNLS": "XRF_roi_plus", "Fitted": "XRF_fits"}
"""Fitting routine -> its dataset in the legacy (v9) layout (``add_v9_layout``)."""
I0_SCALER = "US_IC"
"""The upstream ion chamber, the incident-flux (I0) scaler of the APS microprobes."""
DPC_SCALERS = ("H_dpc_cfg", "V_dpc_cfg", "dia1_dpc_cfg", "dia2_dpc_cfg")
"""The differential-phase-contrast signals XRF-Maps computes from the segmented detector (``_save_scalers``)."""
DERIVED_SCALERS = ("abs_ic", "abs_cfg", *DPC_SCALERS)
"""The scalers XRF-Maps appends to the beamline's, in the order it appends them."""
CALIBRATION_SCALERS = ("SR_Current", "US_IC", "DS_IC")
"""The scalers a quantification calibration curve is normalised by (``STR_CALIB_CURVE_*``)."""
CALIBRATION_CURVE_SIZE = 92
"""Elements in a calibration curve, H to U (``#define CALIBRATION_CURVE_SIZE``)."""
ELEMENT_SYMBOLS: tuple[str, ...] = SYMBOLS_BY_Z[:CALIBRATION_CURVE_SIZE]
"""H .. U by atomic number: the order of XRF-Maps' element maps and calibration curves."""
_STRING_SIZE = 256  # XRF-Maps' file string type: H5Tset_size(filetype, 256); 254 characters are copied
_LABEL_SIZE = 10  # Calibration_Curve_Labels: H5Tset_size(filetype_label, 10)
_AMP_NUMBERS = (1, 2, 5, 10, 20, 50, 100, 200, 500)  # _save_amps: sensitivity index -> number
_AMP_UNITS = ("pA/V", "nA/V", "uA/V", "mA/V")  # _save_amps: unit index -> unit


class MAPSFormatError(ValueError):
    """A MAPS/XRF-Maps file cannot be read as it is; the message names the file, the dataset and the fix."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class EnergyCalibration:
    """The spectrum's energy calibration, keV: E = offset + gain * channel + quadratic * channel**2.

    XRF-Maps calls the gain the slope; its ``Energy`` axis uses offset and
    slope only (``gen_energy_vector``).
    """

    offset: float
    gain: float
    quadratic: float = 0.0

    def energy(self, n_channels: int) -> np.ndarray:
        """The energy axis XRF-Maps writes: offset + gain * channel (float64)."""
        return self.offset + self.gain * np.arange(n_channels, dtype=np.float64)


@dataclass(frozen=True)
class MAPSExtraPV:
    """One extra PV of the scan (``MAPS/Scan/Extra_PVs``): name, value, description and unit, as text."""

    name: str
    value: str
    description: str = ""
    unit: str = ""


@dataclass(frozen=True, eq=False)
class MAPSChannels:
    """The element maps of one fitting routine (``MAPS/XRF_Analyzed/<routine>``).

    Attributes
    ----------
    routine
        ``"ROI"``, ``"Fitted"`` (Gaussian matrix fit), ``"NNLS"``, ``"SVD"``.
    names, units
        ``Channel_Names`` and ``Channel_Units``, in file order.
    maps
        Channel name -> ``(rows, cols)`` map (``Counts_Per_Sec``), file dtype.
    extras
        Other datasets of the group by name (``Fitted_Integrated_Spectra``, ...).
    """

    routine: str
    names: tuple[str, ...]
    units: tuple[str, ...]
    maps: dict[str, np.ndarray] = field(repr=False)
    extras: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class MAPSStandard:
    """One quantification standard (``MAPS/Quantification/Standard<i>``).

    ``counts`` maps each fitting routine to its channel -> counts per second
    on the standard; ``element_weights`` the standard's certified
    element -> ug/cm2.
    """

    name: str
    element_weights: dict[str, float]
    sr_current: float
    us_ic: float
    ds_ic: float
    counts: dict[str, dict[str, float]]


@dataclass(frozen=True, eq=False)
class MAPSFile:
    """The content of one XRF-Maps/MAPS analysed HDF5 file (see :func:`read_maps_hdf5`).

    Attributes
    ----------
    path
        The file read.
    version
        ``MAPS/version`` (10.0 from XRF-Maps, 9.0 in legacy files), None if absent.
    x_axis, y_axis
        ``(cols,)`` and ``(rows,)`` float64 positions, strictly monotonic.
    spectra
        ``(rows, cols, channels)``, the file's dtype (float32): ``mca_arr``
        transposed. None if the file has none.
    energy, energy_calibration
        The ``(channels,)`` energy axis (keV) and its calibration.
    elapsed_livetime, elapsed_realtime, input_counts, output_counts
        ``(rows, cols)`` per pixel, None if absent.
    integrated_spectrum
        ``(channels,)`` sum over the map; ``integrated_timing`` its
        ``elapsed_livetime``, ``elapsed_realtime``, ``input_counts``,
        ``output_counts``.
    scalers, scaler_units
        Scaler name -> ``(rows, cols)`` map and unit, file order (I0 is
        :data:`I0_SCALER`; the DPC signals are :data:`DPC_SCALERS`).
    amplifiers
        The pre-amplifier settings (``us_amp``, ``ds_amp``, ``us_amp_num``,
        ``us_amp_unit`` ...) by dataset name.
    analyzed
        Fitting routine -> :class:`MAPSChannels`.
    theta, theta_source
        The projection angle (degrees, as recorded) and where it was read
        (a dataset, or ``"Extra_PVs:<pv>"``); None if the file has none.
    scan_name, scan_time_stamp, requested_rows, requested_cols
        ``MAPS/Scan`` metadata, None where absent.
    extra_pvs
        The scan's extra PVs, file order.
    quantification
        Every dataset under ``MAPS/Quantification`` by its path below it
        (``"Standard0/Element_Weights"``, ``"Calibration/Fitted/
        Calibration_Curve_US_IC"`` ...); strings as ``str`` arrays.
    standards, calibration_curves, calibration_labels
        The same, read: one :class:`MAPSStandard` per ``Standard<i>``;
        routine -> scaler -> ``(3, 92)`` curve; routine -> ``(3, 92)`` labels.
    sources
        Field -> the dataset it was read from (new layout or legacy).
    """

    path: Path
    version: float | None
    x_axis: np.ndarray = field(repr=False)
    y_axis: np.ndarray = field(repr=False)
    spectra: np.ndarray | None = field(default=None, repr=False)
    energy: np.ndarray | None = field(default=None, repr=False)
    energy_calibration: EnergyCalibration | None = None
    elapsed_livetime: np.ndarray | None = field(default=None, repr=False)
    elapsed_realtime: np.ndarray | None = field(default=None, repr=False)
    input_counts: np.ndarray | None = field(default=None, repr=False)
    output_counts: np.ndarray | None = field(default=None, repr=False)
    integrated_spectrum: np.ndarray | None = field(default=None, repr=False)
    integrated_timing: dict[str, float] = field(default_factory=dict)
    scalers: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    scaler_units: dict[str, str] = field(default_factory=dict, repr=False)
    amplifiers: dict[str, np.ndarray | str] = field(default_factory=dict, repr=False)
    analyzed: dict[str, MAPSChannels] = field(default_factory=dict)
    theta: float | None = None
    theta_source: str | None = None
    scan_name: str | None = None
    scan_time_stamp: str | None = None
    requested_rows: int | None = None
    requested_cols: int | None = None
    extra_pvs: tuple[MAPSExtraPV, ...] = field(default=(), repr=False)
    quantification: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    standards: tuple[MAPSStandard, ...] = field(default=(), repr=False)
    calibration_curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    calibration_labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    sources: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the map: ``(len(y_axis), len(x_axis))``."""
        return (len(self.y_axis), len(self.x_axis))

    @property
    def i0(self) -> np.ndarray | None:
        """The incident-flux map (:data:`I0_SCALER`), None if the file has no such scaler."""
        return self.scaler(I0_SCALER)

    def scaler(self, name: str) -> np.ndarray | None:
        """The scaler map of that name, matched without regard to case (as XRF-Maps matches them)."""
        for key, value in self.scalers.items():
            if key.upper() == name.upper():
                return value
        return None

    def extra_pv(self, name: str) -> MAPSExtraPV | None:
        """The extra PV of that name (spaces ignored, as ``HDF5_IO::update_theta`` compares), or None."""
        wanted = name.replace(" ", "")
        for pv in self.extra_pvs:
            if pv.name.replace(" ", "") == wanted:
                return pv
        return None


# --------------------------------------------------------------------------- reading helpers


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).rstrip(" \x00")


def _strings(ds: h5py.Dataset) -> np.ndarray:
    """A string dataset as a ``str`` array of its shape, padding stripped."""
    raw = np.asarray(ds[()])
    out = np.array([_text(v) for v in raw.reshape(-1)], dtype=object).reshape(raw.shape)
    return out.astype(str) if out.size else np.zeros(raw.shape, dtype="U1")


def _is_string(ds: h5py.Dataset) -> bool:
    return ds.dtype.kind in "SUO"


class _Reader:
    """One open file: dataset look-ups that raise MAPSFormatError naming the file and dataset."""

    def __init__(self, f: h5py.File, path: Path):
        self.f, self.path, self.sources = f, path, {}

    def fail(self, name: str, what: str, fix: str):
        raise MAPSFormatError(f"{self.path}: /{name.lstrip('/')} {what}; {fix}")

    def find(self, *names: str) -> tuple[str, h5py.Dataset] | tuple[None, None]:
        """The first of the names that is a dataset (new layout first, then legacy)."""
        for name in names:
            obj = self.f.get(name)
            if isinstance(obj, h5py.Dataset):
                return name, obj
            if obj is not None:
                self.fail(name, "is not a dataset", "rewrite the file with XRF-Maps")
        return None, None

    def require(self, name: str, fix: str) -> h5py.Dataset:
        obj = self.f.get(name)
        if not isinstance(obj, h5py.Dataset):
            self.fail(name, "is missing" if obj is None else "is not a dataset", fix)
        return obj

    def numbers(self, name: str, ds: h5py.Dataset, ndim: int | None = None, shape=None) -> np.ndarray:
        if _is_string(ds) or ds.dtype.kind not in "fiub":
            self.fail(name, f"has dtype {ds.dtype}, not numbers", "the dataset must hold numbers as XRF-Maps writes it")
        if ndim is not None and ds.ndim != ndim:
            self.fail(name, f"has {ds.ndim} dimensions {ds.shape}, expected {ndim}", "rewrite the file with XRF-Maps")
        if shape is not None and tuple(ds.shape) != tuple(shape):
            self.fail(name, f"has shape {ds.shape}, expected {tuple(shape)} to match the scan axes",
                      "the map must have len(y_axis) rows and len(x_axis) columns")
        return ds[()]

    def text_list(self, name: str, ds: h5py.Dataset, n: int | None = None) -> tuple[str, ...]:
        if not _is_string(ds):
            self.fail(name, f"has dtype {ds.dtype}, not strings", "names and units must be string datasets")
        values = tuple(str(v) for v in _strings(ds).reshape(-1))
        if n is not None and len(values) != n:
            self.fail(name, f"has {len(values)} entries for {n} maps",
                      "there must be one name (and one unit) per map")
        return values

    def scalar(self, name: str) -> float | None:
        obj = self.f.get(name)
        if not isinstance(obj, h5py.Dataset):
            return None
        value = self.numbers(name, obj).reshape(-1)
        if value.size != 1:
            self.fail(name, f"has {value.size} values", "it must hold one number")
        return float(value[0])

    def text(self, name: str) -> str | None:
        obj = self.f.get(name)
        if not isinstance(obj, h5py.Dataset):
            return None
        values = self.text_list(name, obj)
        return values[0] if values else ""


def _strictly_monotonic(values: np.ndarray) -> int | None:
    """None if strictly increasing or decreasing; else the first index where the order breaks."""
    if values.size < 2:
        return None if np.all(np.isfinite(values)) else 0
    bad = ~np.isfinite(values)
    if bad.any():
        return int(np.argmax(bad))
    steps = np.diff(values)
    sign = np.sign(steps[0])
    wrong = np.sign(steps) != sign if sign != 0 else np.ones(steps.shape, bool)
    return int(np.argmax(wrong)) + 1 if wrong.any() else None


def _read_axis(r: _Reader, key: str) -> np.ndarray:
    name, ds = r.find(f"MAPS/Scan/{key}", f"MAPS/{key}")
    if ds is None:
        r.fail(f"MAPS/Scan/{key}", f"is missing (and so is the legacy /MAPS/{key})",
               "a MAPS file needs the scan axes x_axis and y_axis; re-save it with XRF-Maps")
    values = r.numbers(name, ds, ndim=1).astype(np.float64)
    where = _strictly_monotonic(values)
    if where is not None:
        r.fail(name, f"is not strictly monotonic (at index {where}: {values[max(where - 1, 0):where + 1]})",
               "the axis must hold the positions of the scan in order; fix the positioner data and re-save")
    r.sources[key] = "/" + name
    return values


def _read_spectra(r: _Reader, rows: int, cols: int) -> dict:
    out: dict = {}
    name, ds = r.find("MAPS/Spectra/mca_arr", "MAPS/mca_arr")
    n_channels = None
    if ds is not None:
        arr = r.numbers(name, ds, ndim=3)
        if arr.shape[1:] != (rows, cols):
            r.fail(name, f"has shape {arr.shape}, expected (channels, rows, cols) = (n, {rows}, {cols})",
                   "mca_arr must be (channels, len(y_axis), len(x_axis))")
        n_channels = arr.shape[0]
        out["spectra"] = np.ascontiguousarray(np.moveaxis(arr, 0, -1))
        r.sources["spectra"] = "/" + name
    name, ds = r.find("MAPS/Spectra/Energy", "MAPS/energy")
    if ds is not None:
        energy = r.numbers(name, ds, ndim=1)
        if n_channels is not None and energy.size != n_channels:
            r.fail(name, f"has {energy.size} values for {n_channels} channels", "one energy per spectrum channel")
        out["energy"] = energy
        r.sources["energy"] = "/" + name
    name, ds = r.find("MAPS/Spectra/Energy_Calibration", "MAPS/energy_calib")
    if ds is not None:
        calib = r.numbers(name, ds).reshape(-1)
        if calib.size < 2:
            r.fail(name, f"has {calib.size} values", "it must hold offset, slope (and quadratic)")
        quad = float(calib[2]) if calib.size > 2 else 0.0
        out["energy_calibration"] = EnergyCalibration(float(calib[0]), float(calib[1]), quad)
        r.sources["energy_calibration"] = "/" + name
    for attr, key in (("elapsed_livetime", "Elapsed_Livetime"), ("elapsed_realtime", "Elapsed_Realtime"),
                      ("input_counts", "Input_Counts"), ("output_counts", "Output_Counts")):
        name, ds = r.find(f"MAPS/Spectra/{key}")
        if ds is not None:
            out[attr] = r.numbers(name, ds, shape=(rows, cols))
            r.sources[attr] = "/" + name
    name, ds = r.find("MAPS/Spectra/Integrated_Spectra/Spectra", "MAPS/int_spec")
    if ds is not None:
        spectrum = r.numbers(name, ds, ndim=1)
        if n_channels is not None and spectrum.size != n_channels:
            r.fail(name, f"has {spectrum.size} channels, mca_arr has {n_channels}", "re-save the file with XRF-Maps")
        out["integrated_spectrum"] = spectrum
        r.sources["integrated_spectrum"] = "/" + name
    timing = {}
    for attr, key in (("elapsed_livetime", "Elapsed_Livetime"), ("elapsed_realtime", "Elapsed_Realtime"),
                      ("input_counts", "Input_Counts"), ("output_counts", "Output_Counts")):
        value = r.scalar(f"MAPS/Spectra/Integrated_Spectra/{key}")
        if value is not None:
            timing[attr] = value
    out["integrated_timing"] = timing
    return out


def _read_scalers(r: _Reader, rows: int, cols: int) -> dict:
    new = r.f.get("MAPS/Scalers")
    if isinstance(new, h5py.Group) and "Values" in new:
        names_at, units_at, values_at = "MAPS/Scalers/Names", "MAPS/Scalers/Units", "MAPS/Scalers/Values"
    elif "MAPS/scalers" in r.f:
        names_at, units_at, values_at = "MAPS/scaler_names", "MAPS/scaler_units", "MAPS/scalers"
    else:
        names_at = None
    scalers, units = {}, {}
    if names_at is not None:
        fix = "the scalers need Names, Units and Values (n, rows, cols); re-save the file with XRF-Maps"
        values = r.numbers(values_at, r.require(values_at, fix), ndim=3)
        if values.shape[1:] != (rows, cols):
            r.fail(values_at, f"has shape {values.shape}, expected (scalers, {rows}, {cols})",
                   "the scalers must be (n, len(y_axis), len(x_axis))")
        names = r.text_list(names_at, r.require(names_at, fix), values.shape[0])
        units_ds = r.f.get(units_at)
        unit_list = (r.text_list(units_at, units_ds, values.shape[0]) if isinstance(units_ds, h5py.Dataset)
                     else ("",) * len(names))
        for i, (name, unit) in enumerate(zip(names, unit_list, strict=True)):
            if name in scalers:
                r.fail(names_at, f"names the scaler {name!r} twice", "each scaler needs its own name")
            scalers[name], units[name] = values[i], unit
        r.sources["scalers"] = "/" + values_at
    amplifiers: dict = {}
    for key in ("us_amp", "ds_amp", "us_amp_num", "ds_amp_num", "us_amp_unit", "ds_amp_unit"):
        name, ds = r.find(f"MAPS/Scalers/{key}", f"MAPS/{key}")
        if ds is not None:
            amplifiers[key] = str(_strings(ds).reshape(-1)[0]) if _is_string(ds) else r.numbers(name, ds)
    return {"scalers": scalers, "scaler_units": units, "amplifiers": amplifiers}


def _channels(r: _Reader, routine: str, names: tuple[str, ...], units: tuple[str, ...],
              values: np.ndarray, at: str, extras: dict) -> MAPSChannels:
    """The routine's maps by channel name; a name given twice is an error (a dict would lose a map)."""
    maps = {}
    for i, name in enumerate(names):
        if name in maps:
            r.fail(at, f"names the channel {name!r} twice", "each channel needs its own name")
        maps[name] = values[i]
    return MAPSChannels(routine, names, units, maps, extras)


def _read_analyzed(r: _Reader, rows: int, cols: int) -> dict[str, MAPSChannels]:
    analyzed: dict[str, MAPSChannels] = {}
    group = r.f.get("MAPS/XRF_Analyzed")
    if isinstance(group, h5py.Group):
        for routine in group:
            sub = group[routine]
            if not isinstance(sub, h5py.Group) or not {"Counts_Per_Sec", "Channel_Names"} & set(sub):
                continue  # not a routine's maps (a group XRF-Maps may add beside them)
            base = f"MAPS/XRF_Analyzed/{routine}"
            fix = f"each {base} group needs Counts_Per_Sec (channels, rows, cols) and Channel_Names"
            values_at = f"{base}/Counts_Per_Sec"
            values = r.numbers(values_at, r.require(values_at, fix), ndim=3)
            if values.shape[1:] != (rows, cols):
                r.fail(values_at, f"has shape {values.shape}, expected (channels, {rows}, {cols})",
                       "the maps must be (channels, len(y_axis), len(x_axis))")
            names = r.text_list(f"{base}/Channel_Names", r.require(f"{base}/Channel_Names", fix), values.shape[0])
            units_ds = sub.get("Channel_Units")
            units = (r.text_list(f"{base}/Channel_Units", units_ds, values.shape[0])
                     if isinstance(units_ds, h5py.Dataset) else ("",) * len(names))
            extras = {k: sub[k][()] for k in sub
                      if k not in ("Counts_Per_Sec", "Channel_Names", "Channel_Units")
                      and isinstance(sub[k], h5py.Dataset) and not _is_string(sub[k])}
            analyzed[routine] = _channels(r, routine, names, units, values, values_at, extras)
            r.sources[f"analyzed/{routine}"] = "/" + values_at
    if analyzed:
        return analyzed
    for routine, legacy in LEGACY_MAPS.items():
        at = f"MAPS/{legacy}"
        ds = r.f.get(at)
        if not isinstance(ds, h5py.Dataset):
            continue
        values = r.numbers(at, ds, ndim=3)
        if values.shape[1:] != (rows, cols):
            r.fail(at, f"has shape {values.shape}, expected (channels, {rows}, {cols})",
                   "the maps must be (channels, len(y_axis), len(x_axis))")
        names = r.text_list("MAPS/channel_names",
                            r.require("MAPS/channel_names", f"{at} needs /MAPS/channel_names beside it"),
                            values.shape[0])
        units_ds = r.f.get("MAPS/channel_units")
        units: tuple[str, ...] = ("",) * len(names)
        if isinstance(units_ds, h5py.Dataset):
            table = _strings(units_ds)
            row = table[-1] if table.ndim == 2 else table  # (4, n): SR_current, US_IC, DS_IC, cts/s
            if row.size != len(names):
                r.fail("MAPS/channel_units", f"has {row.size} units per row for {len(names)} channels",
                       "channel_units must be (4, channels)")
            units = tuple(str(u) for u in row)
        analyzed[routine] = _channels(r, routine, names, units, values, at, {})
        r.sources[f"analyzed/{routine}"] = "/" + at
    return analyzed


def _read_extra_pvs(r: _Reader) -> tuple[MAPSExtraPV, ...]:
    group = r.f.get("MAPS/Scan/Extra_PVs")
    if isinstance(group, h5py.Group):
        base = "MAPS/Scan/Extra_PVs"
        fix = "Extra_PVs needs Names, Values, Description and Unit of equal length"
        names = r.text_list(f"{base}/Names", r.require(f"{base}/Names", fix))
        columns = [names] + [
            r.text_list(f"{base}/{k}", r.require(f"{base}/{k}", fix), len(names))
            for k in ("Values", "Description", "Unit")
        ]
        r.sources["extra_pvs"] = "/" + base
    elif isinstance(r.f.get("MAPS/extra_pvs"), h5py.Dataset):
        table = _strings(r.f["MAPS/extra_pvs"])
        if table.ndim != 2 or table.shape[0] != 4:
            r.fail("MAPS/extra_pvs", f"has shape {table.shape}, expected (4, n)",
                   "rows are names, values, descriptions and units")
        columns = [tuple(str(v) for v in row) for row in table]
        r.sources["extra_pvs"] = "/MAPS/extra_pvs"
    else:
        return ()
    return tuple(MAPSExtraPV(*row) for row in zip(*columns, strict=True))


def _theta_from_pv(r: _Reader, pvs: tuple[MAPSExtraPV, ...], theta_pv: str) -> tuple[float, str]:
    wanted = theta_pv.replace(" ", "")
    hit = next((pv for pv in pvs if pv.name.replace(" ", "") == wanted), None)
    where = f"Extra_PVs:{theta_pv}"
    if hit is None and isinstance(r.f.get("MAPS/extra_pvs_as_csv"), h5py.Dataset):
        for row in _strings(r.f["MAPS/extra_pvs_as_csv"]).reshape(-1):
            name, _, value = str(row).partition(",")
            if name.replace(" ", "") == wanted:
                hit, where = MAPSExtraPV(name, value), f"extra_pvs_as_csv:{theta_pv}"
                break
    if hit is None:
        near = [pv.name for pv in pvs if wanted.split(":")[0] and pv.name.startswith(wanted.split(":")[0])][:8]
        r.fail("MAPS/Scan/Extra_PVs/Names", f"has no PV named {theta_pv!r} (nor has /MAPS/extra_pvs_as_csv)",
               f"give the rotation stage's PV as theta_pv{'; PVs of that IOC: ' + ', '.join(near) if near else ''}")
    try:
        return float(hit.value.split()[0]), where
    except (ValueError, IndexError):
        r.fail("MAPS/Scan/Extra_PVs/Values", f"holds {hit.value!r} for {theta_pv!r}, not a number",
               "theta_pv must name the rotation stage's position PV")


def _read_quantification(r: _Reader) -> dict:
    group = r.f.get("MAPS/Quantification")
    raw: dict[str, np.ndarray] = {}
    if not isinstance(group, h5py.Group):
        return {"quantification": raw, "standards": (), "calibration_curves": {}, "calibration_labels": {}}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            raw[name] = _strings(obj) if _is_string(obj) else obj[()]

    group.visititems(visit)
    standards = []
    n = raw.get("Number_Of_Standards")
    n = int(np.asarray(n).reshape(-1)[0]) if n is not None else sum(1 for k in group if k.startswith("Standard"))
    for i in range(n):
        base = f"Standard{i}"
        if f"{base}/Element_Weights" not in raw:
            r.fail(f"MAPS/Quantification/{base}/Element_Weights", "is missing",
                   f"Number_Of_Standards is {n}; each Standard<i> needs Standard_Name, Element_Weights and "
                   "Element_Weights_Names")
        weight_names = raw.get(f"{base}/Element_Weights_Names")
        weight_values = np.asarray(raw[f"{base}/Element_Weights"]).reshape(-1)
        if weight_names is None or np.asarray(weight_names).size != weight_values.size:
            r.fail(f"MAPS/Quantification/{base}/Element_Weights_Names",
                   "is missing" if weight_names is None else f"has {np.asarray(weight_names).size} names for "
                   f"{weight_values.size} weights", "each element weight needs its element name")
        weights = {str(k): float(v) for k, v in zip(np.asarray(weight_names).reshape(-1), weight_values, strict=True)}
        counts = {}
        for key, value in raw.items():
            prefix = f"{base}/XRF_Analyzed/"
            if key.startswith(prefix) and key.endswith("/Counts_Per_Sec"):
                routine = key[len(prefix):-len("/Counts_Per_Sec")]
                names = np.asarray(raw.get(f"{prefix}{routine}/Channel_Names", np.array([], dtype=str))).reshape(-1)
                values = np.asarray(value).reshape(-1)
                if names.size != values.size:
                    r.fail(f"MAPS/Quantification/{prefix}{routine}/Channel_Names",
                           f"has {names.size} names for {values.size} counts", "one channel name per count")
                counts[routine] = {str(k): float(v) for k, v in zip(names, values, strict=True)}
        name = raw.get(f"{base}/Standard_Name")
        standards.append(MAPSStandard(
            name=str(name.reshape(-1)[0]) if name is not None and name.size else "",
            element_weights=weights,
            sr_current=_first(raw.get(f"{base}/Scalers/SR_Current")),
            us_ic=_first(raw.get(f"{base}/Scalers/US_IC")),
            ds_ic=_first(raw.get(f"{base}/Scalers/DS_IC")),
            counts=counts,
        ))
    curves: dict[str, dict[str, np.ndarray]] = {}
    labels: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "Calibration":
            if parts[2] == "Calibration_Curve_Labels":
                labels[parts[1]] = value
            elif parts[2].startswith("Calibration_Curve_"):
                curves.setdefault(parts[1], {})[parts[2][len("Calibration_Curve_"):]] = value
    return {"quantification": raw, "standards": tuple(standards), "calibration_curves": curves,
            "calibration_labels": labels}


def _first(value) -> float:
    return float(np.asarray(value).reshape(-1)[0]) if value is not None else float("nan")


def read_maps_hdf5(path: str | Path, *, theta_pv: str | None = None) -> MAPSFile:
    """Read an XRF-Maps / MAPS analysed HDF5 file (``/MAPS``).

    Parameters
    ----------
    path
        The ``img.dat/<scan>.h5`` (or ``.h50`` .. ``.h53``) file.
    theta_pv
        The rotation stage's PV (e.g. ``"2xfm:m58.VAL"``): read theta from the
        extra PV of that name (``MAPS/Scan/Extra_PVs``, else the legacy
        ``MAPS/extra_pvs_as_csv``). If None (default), theta is
        ``MAPS/Scan/theta`` when the file has it, else None.

    Returns
    -------
    MAPSFile
        Spectra ``(rows, cols, channels)``, maps ``(rows, cols)``, axes,
        theta, scalers, element maps by routine and channel, extra PVs,
        quantification; each taken from the XRF-Maps groups, else from the
        legacy ``/MAPS`` datasets (:attr:`MAPSFile.sources` tells which).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    MAPSFormatError
        A ``ValueError``: not HDF5, no ``/MAPS``, no scan axes, a group
        missing a member, an axis not strictly monotonic, a shape that
        disagrees with the axes, more than one theta, or ``theta_pv`` not
        among the extra PVs. The message names the file, the dataset and the fix.

    See Also
    --------
    write_maps_hdf5 : writes this layout (for tests and examples).
    xfct_bluesky.importers.mda.read_mda : the raw scan the file was made from.

    Notes
    -----
    The layout is XRF-Maps' ``HDF5_IO`` (``src/io/file/hdf5_io.cpp``); see
    the module docstring. Strings come back as ``str`` with the padding
    stripped. Arrays keep the file's dtype. If both ``theta_pv`` and
    ``MAPS/Scan/theta`` are there and disagree, the PV wins and a warning is
    logged.

    Examples
    --------
    >>> m = read_maps_hdf5("2xfm_0010.mda.h5", theta_pv="2xfm:m58.VAL")   # doctest: +SKIP
    >>> m.spectra.shape, m.analyzed["Fitted"].maps["Zn"].shape, m.theta    # doctest: +SKIP
    ((11, 11, 2048), (11, 11), 12.5)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise MAPSFormatError(f"{path}: not an HDF5 file; give the XRF-Maps analysed file (img.dat/*.h5)")
    with h5py.File(path, "r") as f:
        r = _Reader(f, path)
        if not isinstance(f.get("MAPS"), h5py.Group):
            raise MAPSFormatError(
                f"{path}: no /MAPS group; this is not an XRF-Maps/MAPS analysed file "
                "(fit the scan with XRF-Maps, or use read_flyxrf/read_mda for raw data)"
            )
        x_axis = _read_axis(r, "x_axis")
        y_axis = _read_axis(r, "y_axis")
        rows, cols = len(y_axis), len(x_axis)
        spectra = _read_spectra(r, rows, cols)
        scalers = _read_scalers(r, rows, cols)
        analyzed = _read_analyzed(r, rows, cols)
        extra_pvs = _read_extra_pvs(r)
        theta = theta_source = None
        name, ds = r.find("MAPS/Scan/theta")
        if ds is not None:
            values = r.numbers(name, ds).reshape(-1)
            if values.size != 1:
                r.fail(name, f"has {values.size} values", "a MAPS file holds one projection: theta must be one angle")
            theta, theta_source = float(values[0]), "/" + name
        if theta_pv is not None:
            pv_theta, where = _theta_from_pv(r, extra_pvs, theta_pv)
            if theta is not None and not np.isclose(theta, pv_theta, atol=1e-3):
                logger.warning("%s: /MAPS/Scan/theta is %g but %s reads %g; using the PV", path, theta,
                               theta_pv, pv_theta)
            theta, theta_source = pv_theta, where
        rr = r.scalar("MAPS/Scan/requested_rows")
        rc = r.scalar("MAPS/Scan/requested_cols")
        time_stamp = r.text("MAPS/Scan/scan_time_stamp")
        if time_stamp is None:
            time_stamp = r.text("MAPS/scan_time_stamp")
        quant = _read_quantification(r)
        return MAPSFile(
            path=path,
            version=r.scalar("MAPS/version"),
            x_axis=x_axis,
            y_axis=y_axis,
            theta=theta,
            theta_source=theta_source,
            scan_name=r.text("MAPS/Scan/name"),
            scan_time_stamp=time_stamp,
            requested_rows=None if rr is None else int(rr),
            requested_cols=None if rc is None else int(rc),
            extra_pvs=extra_pvs,
            analyzed=analyzed,
            sources=dict(r.sources),
            **spectra,
            **scalers,
            **quant,
        )


# --------------------------------------------------------------------------- writing


def _write_strings(group: h5py.Group, name: str, values, *, size: int = _STRING_SIZE,
                   fortran: bool = True) -> h5py.Dataset:
    """A fixed-length string dataset of XRF-Maps' type: H5T_FORTRAN_S1 (space padded) or H5T_C_S1."""
    arr = np.asarray(values, dtype=object)
    shape = arr.shape
    encoded = [str(v).encode("utf-8") for v in arr.reshape(-1)]
    for v in encoded:
        if len(v) > size - 2:
            raise ValueError(f"{group.name}/{name}: {v[:40]!r}... is longer than the {size - 2} characters "
                             f"XRF-Maps copies into its {size}-byte strings")
    tid = (h5py.h5t.FORTRAN_S1 if fortran else h5py.h5t.C_S1).copy()
    tid.set_size(size)
    space = h5py.h5s.create_simple(shape)
    ds = h5py.Dataset(h5py.h5d.create(group.id, name.encode(), tid, space))
    if encoded:
        ds[...] = np.array(encoded, dtype=f"S{size}").reshape(shape)
    return ds


def _real(value) -> np.ndarray:
    return np.asarray(value, dtype="<f4")


def _ordered_channels(names: Iterable[str]) -> list[str]:
    """XRF-Maps' save order (``save_element_fits``): K lines by Z, then ``_L``, then ``_M``, then the rest."""
    names = list(names)
    order = ([s for s in ELEMENT_SYMBOLS] + [f"{s}_L" for s in ELEMENT_SYMBOLS]
             + [f"{s}_M" for s in ELEMENT_SYMBOLS])
    known = [n for n in order if n in names]
    return known + [n for n in names if n not in known]


def _derived_scalers(scalers: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The six maps XRF-Maps' ``_save_scalers`` appends (zeros where it cannot compute them)."""
    found = {k.upper(): v.astype(np.float32) for k, v in scalers.items()}
    out = {name: np.zeros(shape, np.float32) for name in DERIVED_SCALERS}
    us, ds = found.get("US_IC"), found.get("DS_IC")
    cfg = [found.get(f"CFG_{i}") for i in (2, 3, 4, 5)]
    with np.errstate(divide="ignore", invalid="ignore"):
        if us is not None and ds is not None:
            out["abs_ic"] = ds / us
        if us is not None and all(c is not None for c in cfg):
            c2, c3, c4, c5 = cfg
            total = c2 + c3 + c4 + c5
            out["abs_cfg"] = total / us
            if total.sum() != 0.0:
                out["H_dpc_cfg"] = (c2 - c3 - c4 + c5) / total
                out["V_dpc_cfg"] = (c2 + c3 - c4 - c5) / total
                out["dia1_dpc_cfg"] = (c2 - c4) / total
                out["dia2_dpc_cfg"] = (c3 - c5) / total
    return out


def write_maps_hdf5(
    path: str | Path,
    *,
    x_axis,
    y_axis,
    spectra=None,
    energy_calibration: EnergyCalibration | tuple[float, float, float] = EnergyCalibration(0.0, 0.01, 0.0),
    elapsed_livetime=None,
    elapsed_realtime=None,
    input_counts=None,
    output_counts=None,
    scalers: Mapping[str, object] | None = None,
    scaler_units: Mapping[str, str] | None = None,
    derived_scalers: bool = True,
    amplifiers: Mapping[str, tuple[int, int]] | None = None,
    analyzed: Mapping[str, Mapping[str, object]] | None = None,
    theta: float = 0.0,
    extra_pvs: Iterable[MAPSExtraPV | tuple[str, str, str, str]] = (),
    scan_name: str = "",
    scan_time_stamp: str = "",
    requested_rows: int | None = None,
    requested_cols: int | None = None,
    standards: Iterable[MAPSStandard] = (),
    calibration_curves: Mapping[str, Mapping[str, object]] | None = None,
    legacy_layout: bool = False,
) -> Path:
    """Write the layout XRF-Maps writes, per XRF-Maps ``src/io/file/hdf5_io.cpp`` (``HDF5_IO``).

    Makes small, faithful analysed files for tests and examples: the
    datasets, dtypes, string types, chunking and compression of
    ``save_spectra_volume``, ``save_element_fits``, ``save_scan_scalers``
    (``_save_scan_meta_data``, ``_save_extras``, ``_save_scalers``,
    ``_save_amps``) and ``save_quantification``; with ``legacy_layout``
    also those of ``add_v9_layout``. See the module docstring for the table.

    Parameters
    ----------
    path
        The file to create (overwritten).
    x_axis, y_axis
        ``(cols,)`` and ``(rows,)`` positions.
    spectra
        ``(rows, cols, channels)`` counts, stored ``(channels, rows, cols)``
        float32 with the integrated spectrum; None writes no ``Spectra`` group.
    energy_calibration
        Offset, gain (slope) and quadratic (keV); ``Energy`` is written as
        offset + gain * channel, as XRF-Maps does.
    elapsed_livetime, elapsed_realtime, input_counts, output_counts
        ``(rows, cols)``; default 1 s, 1 s, 0, 0. Their integrated values are
        the sums over the map (``Spectra_Volume::integrate``).
    scalers, scaler_units
        Name -> ``(rows, cols)`` map and name -> unit (default ``""``), file order.
    derived_scalers
        Append ``abs_ic``, ``abs_cfg`` and the four DPC signals computed as
        ``_save_scalers`` does (from ``US_IC``, ``DS_IC``, ``CFG_2`` ..
        ``CFG_5``, matched without regard to case; zeros where they are missing).
    amplifiers
        ``{"us": (number_index, unit_index), "ds": (...)}``: the SR570
        sensitivity settings ``_save_amps`` translates (0..8 -> 1..500,
        0..3 -> pA/V..mA/V); default ``(0, 0)`` for both.
    analyzed
        Routine (``"ROI"``, ``"Fitted"``, ``"NNLS"``) -> channel -> ``(rows,
        cols)`` counts/s; channels are stored in XRF-Maps' order (K, L, M
        lines by Z, then the rest as given), units ``"cts/s"``.
    theta
        The projection angle (degrees), ``MAPS/Scan/theta``.
    extra_pvs
        :class:`MAPSExtraPV` or ``(name, value, description, unit)``.
        XRF-Maps' ``_save_extras`` (still so in its later revision) copies
        description and unit into the wrong buffer, so real files carry
        empty ``Description`` and ``Unit``; this writer writes what it is given.
    scan_name, scan_time_stamp, requested_rows, requested_cols
        ``MAPS/Scan`` metadata; the requested size defaults to the map's.
    standards, calibration_curves
        Quantification: the standards, and routine -> scaler
        (``"SR_Current"``, ``"US_IC"``, ``"DS_IC"``) -> ``(3, 92)`` curve
        (K, L, M x H..U). Written only if given.
    legacy_layout
        Also add the MAPS v9 names (``add_v9_layout``), which sets
        ``MAPS/version`` to 9.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    x_axis = np.asarray(x_axis, dtype=np.float64)
    y_axis = np.asarray(y_axis, dtype=np.float64)
    shape = (len(y_axis), len(x_axis))
    calib = (energy_calibration if isinstance(energy_calibration, EnergyCalibration)
             else EnergyCalibration(*energy_calibration))
    analyzed = {routine: dict(maps) for routine, maps in (analyzed or {}).items()}
    with h5py.File(path, "w") as f:
        maps = f.create_group("MAPS")
        maps.create_dataset("version", data=_real([HDF5_SAVE_VERSION]))
        if spectra is not None:
            _write_spectra(maps, np.asarray(spectra), shape, calib, elapsed_livetime, elapsed_realtime,
                           input_counts, output_counts)
        for routine, channel_maps in analyzed.items():
            _write_element_fits(maps, routine, channel_maps, shape)
        _write_scan(maps, x_axis, y_axis, theta, scan_name, scan_time_stamp,
                    shape[0] if requested_rows is None else requested_rows,
                    shape[1] if requested_cols is None else requested_cols, extra_pvs)
        fpo = maps.create_group("Fit_Parameters_Override")
        fpo.create_group("Fit_Parameters")
        _write_scalers(maps, dict(scalers or {}), dict(scaler_units or {}), derived_scalers,
                       dict(amplifiers or {}), shape)
        standards = tuple(standards)
        if standards or calibration_curves:
            _write_quantification(maps, standards, calibration_curves or {})
        if legacy_layout:
            _add_v9_layout(f)
    return path


def _write_spectra(maps, spectra, shape, calib, livetime, realtime, icr, ocr) -> None:
    if spectra.ndim != 3 or spectra.shape[:2] != shape:
        raise ValueError(f"spectra has shape {spectra.shape}, expected (rows, cols, channels) with "
                         f"(rows, cols) = {shape} from the axes")
    n = spectra.shape[2]
    grp = maps.create_group("Spectra")
    mca = _real(np.moveaxis(spectra, -1, 0))
    grp.create_dataset("mca_arr", data=mca, chunks=(n, 1, 1), compression="gzip", compression_opts=7)
    timing = {
        "Elapsed_Realtime": np.ones(shape) if realtime is None else realtime,
        "Elapsed_Livetime": np.ones(shape) if livetime is None else livetime,
        "Input_Counts": np.zeros(shape) if icr is None else icr,
        "Output_Counts": np.zeros(shape) if ocr is None else ocr,
    }
    for key, value in timing.items():
        value = _real(value)
        if value.shape != shape:
            raise ValueError(f"{key} has shape {value.shape}, expected {shape}")
        grp.create_dataset(key, data=value)
    integ = grp.create_group("Integrated_Spectra")
    integ.create_dataset("Spectra", data=mca.sum(axis=(1, 2), dtype=np.float32))
    # Spectra_Volume::integrate sums the four over the map, then recalc_elapsed_livetime
    # replaces the live time by realtime * OCR / ICR (the real time where either is 0)
    totals = {key: float(_real(value).sum(dtype=np.float32)) for key, value in timing.items()}
    icr_sum, ocr_sum = totals["Input_Counts"], totals["Output_Counts"]
    if icr_sum != 0 and ocr_sum != 0:
        totals["Elapsed_Livetime"] = totals["Elapsed_Realtime"] * ocr_sum / icr_sum
    else:
        totals["Elapsed_Livetime"] = totals["Elapsed_Realtime"]
    for key in ("Elapsed_Realtime", "Elapsed_Livetime", "Input_Counts", "Output_Counts"):
        integ.create_dataset(key, data=_real([totals[key]]))
    grp.create_dataset("Energy", data=_real(calib.energy(n)))
    grp.create_dataset("Energy_Calibration", data=_real([calib.offset, calib.gain, calib.quadratic]))


def _write_element_fits(maps, routine: str, channel_maps: dict, shape) -> None:
    names = _ordered_channels(channel_maps)
    values = _real([channel_maps[n] for n in names]) if names else np.zeros((0, *shape), "<f4")
    if values.shape[1:] != shape:
        raise ValueError(f"analyzed[{routine!r}] maps have shape {values.shape[1:]}, expected {shape}")
    grp = maps.require_group("XRF_Analyzed").create_group(routine)
    grp.create_dataset("Counts_Per_Sec", data=values, chunks=(1, *shape) if names else None,
                       compression="gzip" if names else None, compression_opts=7 if names else None)
    _write_strings(grp, "Channel_Names", names, fortran=False)
    _write_strings(grp, "Channel_Units", ["" if n == "Num_Iter" else "cts/s" for n in names], fortran=False)


def _write_scan(maps, x_axis, y_axis, theta, name, time_stamp, req_rows, req_cols, extra_pvs) -> None:
    scan = maps.create_group("Scan")
    scan.create_dataset("y_axis", data=y_axis.astype("<f8"))
    scan.create_dataset("x_axis", data=x_axis.astype("<f8"))
    scan.create_dataset("requested_rows", data=np.array([req_rows], "<i4"))
    scan.create_dataset("requested_cols", data=np.array([req_cols], "<i4"))
    scan.create_dataset("theta", data=_real([theta]))
    _write_strings(scan, "scan_time_stamp", [time_stamp])
    _write_strings(scan, "name", [name])
    pvs = [pv if isinstance(pv, MAPSExtraPV) else MAPSExtraPV(*pv) for pv in extra_pvs]
    extra = scan.create_group("Extra_PVs")
    _write_strings(extra, "Names", [pv.name for pv in pvs])
    _write_strings(extra, "Values", [pv.value for pv in pvs])
    _write_strings(extra, "Description", [pv.description for pv in pvs])
    _write_strings(extra, "Unit", [pv.unit for pv in pvs])


def _write_scalers(maps, scalers: dict, units: dict, derived: bool, amplifiers: dict, shape) -> None:
    grp = maps.create_group("Scalers")
    for side in ("us", "ds"):
        num_idx, unit_idx = amplifiers.get(side, (0, 0))
        number = _AMP_NUMBERS[int(num_idx)]
        grp.create_dataset(f"{side}_amp", data=_real([num_idx, unit_idx, number]))
    for side in ("us", "ds"):
        grp.create_dataset(f"{side}_amp_num", data=_real([_AMP_NUMBERS[int(amplifiers.get(side, (0, 0))[0])]]))
    for side in ("us", "ds"):
        _write_strings(grp, f"{side}_amp_unit", [_AMP_UNITS[int(amplifiers.get(side, (0, 0))[1])]])
    if not scalers:
        return
    table = {name: _real(value) for name, value in scalers.items()}
    for name, value in table.items():
        if value.shape != shape:
            raise ValueError(f"scaler {name!r} has shape {value.shape}, expected {shape}")
    unit_of = {name: units.get(name, "") for name in table}
    if derived:
        for name, value in _derived_scalers(table, shape).items():
            table[name], unit_of[name] = value, " "
    values = np.stack([np.where(np.isfinite(v), v, 0.0).astype("<f4") for v in table.values()])
    grp.create_dataset("Values", data=values, chunks=(1, *shape), compression="gzip", compression_opts=7)
    _write_strings(grp, "Names", list(table))
    _write_strings(grp, "Units", list(unit_of.values()))


def _write_quantification(maps, standards: tuple[MAPSStandard, ...], curves: Mapping) -> None:
    q = maps.create_group("Quantification")
    calibration = q.create_group("Calibration")
    q.create_dataset("Number_Of_Standards", data=np.array([len(standards)], "<i4"))
    for i, std in enumerate(standards):
        g = q.create_group(f"Standard{i}")
        sc = g.create_group("Scalers")
        fits = g.create_group("XRF_Analyzed")
        g.create_dataset("Element_Weights", data=_real(list(std.element_weights.values())))
        _write_strings(g, "Element_Weights_Names", list(std.element_weights))
        integ = g.create_group("Integrated_Spectra")
        for key in ("Elapsed_Realtime", "Elapsed_Livetime", "Input_Counts", "Output_Counts"):
            integ.create_dataset(key, data=_real([0.0]))  # the standard's spectrum is not written here
        _write_strings(g, "Standard_Name", [std.name])
        sc.create_dataset("SR_Current", data=_real([std.sr_current]))
        sc.create_dataset("US_IC", data=_real([std.us_ic]))
        sc.create_dataset("DS_IC", data=_real([std.ds_ic]))
        for routine, counts in std.counts.items():
            # save_quantification keeps only element lines (K, _L, _M by Z) and Num_Iter
            lines = {*ELEMENT_SYMBOLS, *(f"{s}_L" for s in ELEMENT_SYMBOLS), *(f"{s}_M" for s in ELEMENT_SYMBOLS)}
            names = [n for n in _ordered_channels(counts) if n in lines]
            names += ["Num_Iter"] if "Num_Iter" in counts else []
            rg = fits.create_group(routine)
            rg.create_dataset("Counts_Per_Sec", data=_real([counts[n] for n in names]))
            _write_strings(rg, "Channel_Names", names)
            _write_strings(rg, "Channel_Units", ["cts/s"] * len(names))
    shells = ("", "_L", "_M")
    labels = [[f"{s}{suffix}" for s in ELEMENT_SYMBOLS] for suffix in shells]
    for routine, by_scaler in curves.items():
        rg = calibration.create_group(routine)
        _write_strings(rg, "Calibration_Curve_Labels", labels, size=_LABEL_SIZE)
        for scaler, curve in by_scaler.items():
            curve = _real(curve)
            if curve.shape != (3, CALIBRATION_CURVE_SIZE):
                raise ValueError(f"calibration curve {routine}/{scaler} has shape {curve.shape}, expected "
                                 f"(3, {CALIBRATION_CURVE_SIZE}): K, L, M shells x elements H..U")
            rg.create_dataset(f"Calibration_Curve_{scaler}", data=curve)


def _link(f: h5py.File, source: str, target: str) -> None:
    if source in f and target not in f:
        f[target] = f[source]  # a hard link, as H5Lcreate_hard


def _add_v9_layout(f: h5py.File) -> None:
    """XRF-Maps' ``HDF5_IO::add_v9_layout``: the MAPS v9 names beside the new groups."""
    for source, target in (("Scan/x_axis", "x_axis"), ("Scan/y_axis", "y_axis"),
                           ("Scan/scan_time_stamp", "scan_time_stamp"), ("Scalers/ds_amp", "ds_amp"),
                           ("Scalers/us_amp", "us_amp")):
        _link(f, f"/MAPS/{source}", f"/MAPS/{target}")
    _add_v9_scalers(f)
    for source, target in (("Spectra/Energy", "energy"), ("Spectra/Energy_Calibration", "energy_calib"),
                           ("Spectra/Integrated_Spectra/Spectra", "int_spec"), ("Spectra/mca_arr", "mca_arr")):
        _link(f, f"/MAPS/{source}", f"/MAPS/{target}")
    for routine in ("ROI", "Fitted", "NNLS"):
        if f"/MAPS/XRF_Analyzed/{routine}/Channel_Names" in f:
            _link(f, f"/MAPS/XRF_Analyzed/{routine}/Channel_Names", "/MAPS/channel_names")
            break
    if "/MAPS/channel_names" not in f:
        return  # add_v9_layout returns here too, before the maps, extra PVs and version
    names = _strings(f["/MAPS/channel_names"]).reshape(-1)
    n = names.size
    units = [["cts/s"] * n for _ in range(4)]
    for routine, legacy in (("ROI", "XRF_roi"), ("NNLS", "XRF_roi_plus"), ("Fitted", "XRF_fits")):
        _link(f, f"/MAPS/XRF_Analyzed/{routine}/Counts_Per_Sec", f"/MAPS/{legacy}")
        if f"/MAPS/{legacy}" not in f:
            continue
        quant = np.zeros((3, 1, n), "<f4")
        base = f"/MAPS/Quantification/Calibration/{routine}"
        curves = [f.get(f"{base}/Calibration_Curve_{s}") for s in ("SR_Current", "US_IC", "DS_IC")]
        if all(isinstance(c, h5py.Dataset) for c in curves):
            _write_strings(f["/MAPS"], f"{legacy}_quant_names", ["SRCURRENT", "US_IC", "DS_IC"])
            for j, name in enumerate(names):
                # _add_v9_quant looks the element up by the whole channel name
                # (Element_Info_Map::get_element), so only K-line channels ("Fe") get values
                if name in ELEMENT_SYMBOLS:
                    z = ELEMENT_SYMBOLS.index(name)
                    quant[:, 0, j] = [c[0, z] for c in curves]
                    for row in range(3):
                        units[row][j] = "ug/cm2"
        f["/MAPS"].create_dataset(f"{legacy}_quant", data=quant)
    _write_strings(f["/MAPS"], "channel_units", units)
    _add_extra_pvs(f)
    f["/MAPS/version"][...] = _real([9.0])
    _link(f, "/MAPS/version", "/version")


def _add_v9_scalers(f: h5py.File) -> None:
    """``_add_v9_scalers``: /MAPS/scaler_names, scaler_units, scalers of the scalers without ':' (sorted)."""
    if not all(f"/MAPS/Scalers/{k}" in f for k in ("Names", "Values", "Units")):
        return
    names = _strings(f["/MAPS/Scalers/Names"]).reshape(-1)
    units = _strings(f["/MAPS/Scalers/Units"]).reshape(-1)
    values = f["/MAPS/Scalers/Values"][()]
    keep = sorted((str(n).replace(" ", ""), i) for i, n in enumerate(names) if n and ":" not in n)
    maps = f["/MAPS"]
    _write_strings(maps, "scaler_names", [n for n, _ in keep])
    _write_strings(maps, "scaler_units", [units[i] for _, i in keep])
    maps.create_dataset("scalers", data=_real(values[[i for _, i in keep]] if keep else values[:0]))


def _add_extra_pvs(f: h5py.File) -> None:
    """``_add_extra_pvs``: /MAPS/extra_pvs (4, n) and extra_pvs_as_csv ("name,value", each cut at a space)."""
    base = "/MAPS/Scan/Extra_PVs"
    if not all(f"{base}/{k}" in f for k in ("Names", "Values", "Description", "Unit")):
        return
    columns = [list(_strings(f[f"{base}/{k}"]).reshape(-1)) for k in ("Names", "Values", "Description", "Unit")]
    _write_strings(f["/MAPS"], "extra_pvs", columns)
    csv = [f"{n.split(' ')[0]},{v.split(' ')[0]}" for n, v in zip(columns[0], columns[1], strict=True)]
    _write_strings(f["/MAPS"], "extra_pvs_as_csv", csv)
