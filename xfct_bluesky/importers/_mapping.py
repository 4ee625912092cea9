"""What each format's reader returns, mapped to the fields of a bluesky run (for :mod:`.runs`).

One function per format turns a reader's dataclass into a :class:`Mapped`:
the start-document metadata of the scan, the ``primary`` stream (its data
keys and events) and any other stream, and the external data with where it
comes from (frames to copy into an HDF5 file, or a dataset to reference in
place). Nothing here writes a file or a document; :mod:`.runs` does.

Field names
-----------
A map whose quantity is known is a field of its own under the name our runs
use (the names of :mod:`xfct_bluesky.quantities`: element lines ``"Zn"``, ``"Zn_L"``,
``"dpc_x"``, ``"i0"``, ``"live_time"`` ...). The other maps of each group
(an MDA scan dimension's detectors, the MAPS scalers, a fitting routine's
other channels, the PyXRF positions and scalers) are stacked into one field
per group, ``(channels, rows, cols)``, whose data key lists them in file order
(``channels``, ``channel_sources``, ``channel_units``): Tiled makes one node
per array field and each costs two HTTP requests (about 0.1 s on a busy
2-core machine), so a real MDA file's 110 detectors as fields of their own
took 25 s to store, stacked 4 s. Each data key's ``source`` names the dataset
or PV; field names are ``[A-Za-z0-9_]`` with a letter first (Tiled's SQL
tables require it).

synApps MDA (2-ID-E)
--------------------
The scaler channels carry no description in the files, so their names come
from XRF-Maps' scaler table for 2-ID-E (the ``maps_fit_parameters_override.txt``
of XRF-Maps' 2-ID-E test dataset, the one these files come from, and the same
table as its generator writes it) and, for fly scans, from MAPS'
``read_combined_flyscan``, which renames the Struck MCS channel ``mcs:mcaN`` to
the step-scan scaler ``scaler3_cts<k>.<L>`` with N = 4 (k - 1) + index(L) + 1:

===========================  ========================  =========  ==========
step scan PV (counts/s)      fly scan PV (counts)      XRF-Maps   field
===========================  ========================  =========  ==========
``2xfm:scaler3_cts1.B``      ``2xfm:mcs:mca2.VAL``     US_IC      ``i0``
``2xfm:scaler3_cts1.C``      ``2xfm:mcs:mca3.VAL``     DS_IC      (stack)
``2xfm:scaler3_cts2.A``      ``2xfm:mcs:mca5.VAL``     DPC1_IC    (stack)
``2xfm:scaler3_cts2.B``      ``2xfm:mcs:mca6.VAL``     DPC2_IC    (stack)
``2xfm:scaler3_cts3.B``      ``2xfm:mcs:mca10.VAL``    CFG_1      (stack)
``2xfm:scaler3_cts3.C`` ..   ``2xfm:mcs:mca11.VAL`` .. CFG_2 ..   (stack)
``2xfm:scaler3_cts5.A``      ``2xfm:mcs:mca17.VAL``    CFG_8      (stack)
``2xfm:scaler3_cts5.B``      ``2xfm:mcs:mca18.VAL``    CFG_9      (stack)
``S:SRcurrentAI``                                      SRCURRENT  (stack)
===========================  ========================  =========  ==========

"(stack)": a channel of ``map_detectors`` named by its XRF-Maps name.

CFG_2 .. CFG_5 are the segmented detector's quadrants (XRF-Maps computes its
DPC signals from them; our runs' ``q1`` .. ``q4``). The test dataset's override
file lists ``scaler3_cts5.A`` for both CFG_8 and CFG_9, a slip: its generator
and the fly-scan table give ``cts5.B`` (``mcs:mca18``) for CFG_9. Values are
stored as recorded: the step-scan ``scaler3_cts`` records are rates (the 25 MHz
clock channel ``cts1.A`` reads 25e6), the fly-scan MCS channels raw counts per
pixel (XRF-Maps divides them by ``mcs:mca1`` / 25 MHz). The EPICS mca
records' live times ``<p>:mca<n>.ELTM`` are stacked by element into
``live_time`` ``(elements, rows, cols)``; real times and count rates stay in
``map_detectors`` under their PV names. A rank-3 file's innermost detectors (the MCA
spectra, ``(rows, cols, channels)`` each) become ``spectra`` ``(elements, rows,
cols, channels)``, copied (XDR cannot be referenced). The outer scan's
positioner is ``y_axis``; the first acquired row of the middle scan's is
``x_axis`` (as XRF-Maps takes it). ``map_detectors`` stacks the middle
scan's positioner ``(rows, cols)`` and its other detectors (XRF-Maps name,
else PV name), ``row_detectors`` the outer scan's detectors ``(rows,)``.
Theta is the extra PV ``theta_pv`` if given, else the ``.VAL`` of the motor
whose ``.DESC`` is one of :data:`ROTATION_DESCRIPTIONS` (2-ID-E: ``2xfm:m53``
"tomo rotation"). The ROI sums (``ROISUM_n``, ``mca<n>.R<k>``) stay in
``map_detectors`` under their PV names, not mapped to elements: which ROI
label each one sums is not in the file.

A rank-2 fly scan's spectra are in the flyXRF file beside it
(``<mda folder>/../flyXRF/<stem>_2xfm3__0.h5``, or ``flyXRF.h5/``, where
XRF-Maps looks); they join the same run (next table).

APS flyXRF (``MAPS_RAW``)
-------------------------
``data_a`` .. ``data_d`` ``(channels, rows, cols)`` int16 become ``spectra``
``(elements, rows, cols, channels)`` int16, copied; ``livetime`` becomes
``live_time`` ``(elements, rows, cols)``; ``realtime``, ``inputcounts``,
``ouputcounts`` (sic) are stacked in ``flyxrf_timing``.

XRF-Maps / MAPS HDF5 (``/MAPS``)
--------------------------------
======================================  ===================================
``Scalers/Values`` US_IC                ``i0``
H_dpc_cfg, V_dpc_cfg, dia1_dpc_cfg      ``dpc_x``, ``dpc_y``, ``dpc_diag``
abs_cfg (else abs_ic)                   ``transmission``
other scalers                           stacked in ``scalers`` (``DS_IC``,
                                        ``abs_ic`` ...)
``XRF_Analyzed/<routine>``, the first   element lines ``Zn``, ``Zn_L``,
of :data:`MAPS_ROUTINES` present        ``Au_M``; its other channels stacked
                                        in ``maps_<routine>``
other routines                          all channels in ``maps_<routine>``
``Spectra/Elapsed_Livetime``            ``live_time``; ``Elapsed_Realtime``,
                                        ``Input_Counts``, ``Output_Counts``
                                        stacked in ``spectra_timing``
``Spectra/mca_arr``                     ``spectra`` ``(rows, cols, channels)``,
                                        copied (stored channels first)
``Scan/x_axis``, ``y_axis``, ``theta``  ``x_axis``, ``y_axis``, ``theta``
======================================  ===================================

A scaler XRF-Maps could not compute is all zeros (``_save_scalers``): it
stays in ``scalers``, not mapped to a quantity. Note that XRF-Maps'
diagonal DPC is ``(CFG_2 - CFG_4) / (CFG_2 + .. + CFG_5)``, our runs'
``(q1 - q3) / (q1 + q3)``: the same sign, about half the size.

NSLS-II PyXRF HDF5 (``xrfmap``)
-------------------------------
``detsum/counts`` ``(rows, cols, channels)`` -> ``spectra`` and ``det1`` ..
-> ``spectra_elements`` ``(elements, rows, cols, channels)``, copied; the
scaler of :data:`.pyxrf.I0_SCALERS` -> ``i0``, the other scalers stacked in
``scalers``; ``positions`` (``x_pos``, ``y_pos`` ``(rows, cols)``) stacked in
``positions``, with ``x_axis`` = ``x_pos[0]`` and ``y_axis`` = ``y_pos[:, 0]``;
``detsum/xrf_fit`` (else ``xrf_roi``) ``Zn_K`` -> ``Zn``, ``Au_L`` ->
``Au_L``, ``Au_M`` -> ``Au_M``, its other maps stacked in ``fit_maps``
(``roi_maps``); the other of the two all in ``roi_maps`` (``fit_maps``), per
detector ``det1_fit_maps`` ...; ``param_theta`` (mdeg) -> ``theta`` (deg).

Data Exchange (``/exchange``)
-----------------------------
A tomography: ``data`` ``(angles, rows, cols)`` is one ``primary`` event per
angle with ``theta`` from ``exchange/theta`` (degrees), the frames referenced
in place (the only layout whose leading axis is the event axis, see
:mod:`.runs`); ``data_white`` and ``data_dark`` are the streams ``flat`` and
``dark`` (one event per frame, in place, ``theta`` if ``theta_white`` /
``theta_dark`` are there).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..quantities import CHEMICAL_SYMBOLS
from .dxchange import DXchangeFile
from .flyxrf import FlyXRF, read_flyxrf
from .maps_hdf5 import MAPSFile
from .mda import MDAFile
from .pyxrf import PyXRFFile

logger = logging.getLogger(__name__)

INSTRUMENTS: dict[str, str] = {"2xfm": "APS 2-ID-E"}
"""EPICS prefix of a scan's PVs -> the instrument (2-ID-E's PVs start ``2xfm:``)."""
ROTATION_DESCRIPTIONS = ("tomo rotation",)
"""Motor ``.DESC`` values that mark the sample rotation stage among an MDA file's extra PVs (2-ID-E 2015-16)."""
MAPS_ROUTINES = ("Fitted", "NNLS", "ROI", "SVD")
"""XRF-Maps fitting routines in order of preference for the element maps named by symbol."""

# 2-ID-E: PV -> XRF-Maps scaler name (step scans: the scaler3 "cts" rate records)
_STEP_SCALERS_2IDE = {
    "S:SRcurrentAI": "SRCURRENT",
    "2xfm:scaler3_cts1.B": "US_IC",
    "2xfm:scaler3_cts1.C": "DS_IC",
    "2xfm:scaler3_cts2.A": "DPC1_IC",
    "2xfm:scaler3_cts2.B": "DPC2_IC",
    "2xfm:scaler3_cts3.B": "CFG_1",
    "2xfm:scaler3_cts3.C": "CFG_2",
    "2xfm:scaler3_cts3.D": "CFG_3",
    "2xfm:scaler3_cts4.A": "CFG_4",
    "2xfm:scaler3_cts4.B": "CFG_5",
    "2xfm:scaler3_cts4.C": "CFG_6",
    "2xfm:scaler3_cts4.D": "CFG_7",
    "2xfm:scaler3_cts5.A": "CFG_8",
    "2xfm:scaler3_cts5.B": "CFG_9",
}


def _mcs_channel(pv: str) -> str:
    """``2xfm:scaler3_cts<k>.<L>`` -> the fly scan's ``2xfm:mcs:mca<N>.VAL`` (MAPS read_combined_flyscan)."""
    k, letter = int(pv[len("2xfm:scaler3_cts")]), pv[-1]
    return f"2xfm:mcs:mca{4 * (k - 1) + 'ABCD'.index(letter) + 1}.VAL"


SCALER_PVS: dict[str, str] = {
    **_STEP_SCALERS_2IDE,
    **{_mcs_channel(pv): name for pv, name in _STEP_SCALERS_2IDE.items() if pv.startswith("2xfm:scaler3")},
}
"""MDA detector PV -> XRF-Maps scaler name, step and fly scans at 2-ID-E (the table in the module docstring)."""
SCALER_FIELDS: dict[str, str] = {"US_IC": "i0"}
"""XRF-Maps scaler name -> our field name, where it is one of our quantities."""
MAPS_SCALER_FIELDS: dict[str, str] = {
    **SCALER_FIELDS,
    "H_DPC_CFG": "dpc_x",
    "V_DPC_CFG": "dpc_y",
    "DIA1_DPC_CFG": "dpc_diag",
}
"""MAPS scaler (upper case: XRF-Maps matches them so) -> field; ``transmission`` is chosen apart."""
_TIMING = {  # regex on an MDA detector PV -> the field its elements are stacked in, its quantity
    "live_time": re.compile(r"^(?P<p>.+):mca(?P<n>\d+)\.ELTM$"),
}
_RESERVED = {"time", "seq_num"}  # TiledWriter renames these data keys
_LINE = re.compile(r"^(?P<el>[A-Z][a-z]?)(?:_(?P<line>[KLM]))?$")


class ImportFormatError(ValueError):
    """A file can be read but not made into a run as it is; the message names the file and the fix."""


# --------------------------------------------------------------------------- the mapped run


@dataclass(eq=False)
class InPlace:
    """External frames read from a dataset of an existing HDF5 file, the frame axis first."""

    path: Path
    dataset: str
    n_frames: int
    chunk_shape: tuple[int, ...]


@dataclass(eq=False)
class Stream:
    """One event stream: data keys, the events' internal data, and the external data keys' sources.

    ``external[key]`` is a list of frames (arrays to copy, one per event) or an
    :class:`InPlace` dataset holding one frame per event.
    """

    data_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    external: dict[str, list[np.ndarray] | list[InPlace]] = field(default_factory=dict)


@dataclass(eq=False)
class Mapped:
    """A file (and its companion) mapped to a run, before any document is made."""

    path: Path
    fmt: str
    format_label: str
    module: str
    shape: tuple[int, int]
    metadata: dict[str, Any]
    quantities: dict[str, str]
    streams: dict[str, Stream]
    theta: float | None = None
    companions: dict[str, Path] = field(default_factory=dict)
    companion_formats: dict[str, str] = field(default_factory=dict)

    @property
    def reader(self) -> str:
        return f"xfct_bluesky.importers.{self.module} {__version__}"


class _Builder:
    """Collects the fields of one event: unique sanitised names, data keys, values."""

    def __init__(self, path: Path):
        self.path = path
        self.stream = Stream()
        self.quantities: dict[str, str] = {}
        self.event: dict[str, Any] = {}
        self.stream.events.append(self.event)

    def _name(self, wanted: str) -> str:
        """A data key Tiled takes: ``[A-Za-z0-9_]``, a letter first (an SQL column), <= 63 bytes, unique
        without regard to case, not a name TiledWriter renames."""
        name = re.sub(r"[^A-Za-z0-9_]+", "_", wanted).strip("_") or "field"
        if not name[0].isalpha():
            name = ("pv_" if ":" in wanted else "n_") + name
        if name in _RESERVED:
            name += "_"
        name = name[:60]
        taken = {k.lower() for k in self.stream.data_keys}
        base, i = name, 2
        while name.lower() in taken:
            name, i = f"{base}_{i}", i + 1
        return name

    def add(self, wanted: str, value, *, source: str, quantity: str | None = None, units: str | None = None,
            dims: list[str] | None = None, description: str | None = None) -> str:
        """An internal field (array or scalar); returns its data key."""
        key = self._name(wanted)
        arr = np.asarray(value)
        spec: dict[str, Any] = {
            "source": source,
            "dtype": "array" if arr.ndim else ("integer" if arr.dtype.kind in "iu" else "number"),
            "shape": list(arr.shape),
            "dtype_numpy": arr.dtype.str,
        }
        if units:
            spec["units"] = units
        if dims:
            spec["dims"] = dims
        if description:
            spec["description"] = description
        self.stream.data_keys[key] = spec
        self.event[key] = arr if arr.ndim else arr.item()
        if quantity is not None and quantity not in self.quantities:
            self.quantities[quantity] = key
        return key

    def add_stack(self, wanted: str, channels: list[tuple[str, Any, str, str]], *, source: str,
                  dims: list[str]) -> str | None:
        """The maps of a group that have no field of their own, as one ``(channels, ...)`` field.

        ``channels`` are ``(name, array, source, units)``, in file order; the
        data key lists them (``channels``, ``channel_sources``,
        ``channel_units``). Stacked in the widest dtype of the group (numpy's
        promotion: float32 detectors with a float64 positioner become float64).
        """
        if not channels:
            return None
        key = self.add(wanted, np.stack([np.asarray(c[1]) for c in channels]), source=source,
                       dims=["channel", *dims])
        self.stream.data_keys[key].update(channels=[c[0] for c in channels],
                                          channel_sources=[c[2] for c in channels],
                                          channel_units=[c[3] or "" for c in channels])
        return key

    def add_external(self, wanted: str, frame: np.ndarray, *, source: str, dims: list[str],
                     quantity: str | None = None, units: str | None = None) -> str:
        """An external field copied from ``frame`` (one event's array)."""
        key = self._name(wanted)
        self.stream.data_keys[key] = {
            "source": source, "dtype": "array", "shape": list(frame.shape), "dtype_numpy": frame.dtype.str,
            "external": "STREAM:", "dims": dims, **({"units": units} if units else {}),
        }
        self.stream.external[key] = [frame]
        if quantity is not None:
            self.quantities.setdefault(quantity, key)
        return key


def _line_quantity(name: str, *, pyxrf: bool) -> str | None:
    """The quantity of an element-line map name: XRF-Maps ``Zn``, ``Zn_L``; PyXRF ``Zn_K``, ``Zn_L``."""
    m = _LINE.match(name)
    if not m or m["el"] not in CHEMICAL_SYMBOLS:
        return None
    line = m["line"]
    if line is None:
        return None if pyxrf else m["el"]  # PyXRF always names the line
    if line == "K":
        return m["el"] if pyxrf else None  # XRF-Maps' K lines carry no suffix
    return f"{m['el']}_{line}"


def plain(value):
    """A start-document value: numpy to Python, non-finite floats to None, ``.`` and ``/`` in keys to ``_``.

    event-model's start schema allows no ``.`` or ``/`` in any key, at any
    depth (``^([^./]+)$``); PV names and HDF5 paths are nested instead
    (:func:`nest_pvs`, :func:`nest_paths`) before they get here.
    """
    if isinstance(value, dict):
        return {re.sub(r"[./]", "_", str(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def nest_pvs(pairs) -> dict[str, Any]:
    """``(PV name, value)`` pairs as ``{record: {field: value}}`` (a name without a field is the record's VAL).

    ``2xfm:m53.VAL`` -> ``["2xfm:m53"]["VAL"]``, so that the start document can
    hold them (no ``.`` in its keys) and Tiled finds them as
    ``Key("start.extra_pvs.2xfm:m53.VAL")``. The first of a repeated name is kept.
    """
    out: dict[str, Any] = {}
    for name, value in pairs:
        record, _, fld = str(name).partition(".")
        fields = out.setdefault(record.replace("/", "_"), {})
        fields.setdefault(re.sub(r"[./]", "_", fld or "VAL"), value)
    return out


def nest_paths(values: dict[str, Any]) -> dict[str, Any]:
    """``{"instrument/monochromator/energy": v}`` as ``{"instrument": {"monochromator": {"energy": v}}}``."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        *parents, leaf = [p.replace(".", "_") for p in path.strip("/").split("/")]
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _instrument(names) -> str:
    for name in names:
        prefix = str(name).split(":", 1)[0]
        if prefix in INSTRUMENTS:
            return INSTRUMENTS[prefix]
    return "unknown"


def _first_monotonic_break(values: np.ndarray) -> int | None:
    """None if the finite values are strictly monotonic, else the index where the order breaks."""
    idx = np.flatnonzero(np.isfinite(values))
    if idx.size < 2:
        return None
    steps = np.diff(values[idx])
    sign = np.sign(steps[0])
    bad = np.sign(steps) != sign if sign != 0 else np.ones(steps.shape, bool)
    return int(idx[np.argmax(bad) + 1]) if bad.any() else None


# --------------------------------------------------------------------------- MDA (+ flyXRF)


def find_flyxrf(mda_path: Path) -> Path | None:
    """The flyXRF file of a rank-2 fly scan where XRF-Maps looks for it, or None."""
    folder = mda_path.parent.parent
    for sub in ("flyXRF", "flyXRF.h5"):
        hits = sorted((folder / sub).glob(f"{mda_path.stem}_*__0.h5"))
        if hits:
            return hits[0]
    return None


def _mda_theta(mda: MDAFile, theta_pv: str | None) -> tuple[float | None, str | None]:
    if theta_pv is not None:
        try:
            pv = mda.extra_pv(theta_pv)
            return float(pv.scalar), f"extra PV {theta_pv}"
        except KeyError:
            stem = theta_pv.split(".")[0]
            near = sorted({p.name for p in mda.extra_pvs if p.name.startswith(stem)})[:6]
            raise ImportFormatError(
                f"{mda.path}: theta_pv={theta_pv!r} is not among the file's {len(mda.extra_pvs)} extra PVs"
                f"{' (PVs of that record: ' + ', '.join(near) + ')' if near else ''}; give the rotation stage's "
                "position PV, e.g. '2xfm:m53.VAL'") from None
        except (TypeError, ValueError) as err:
            raise ImportFormatError(f"{mda.path}: theta_pv={theta_pv!r} does not hold one number ({err})") from None
    for pv in mda.extra_pvs:
        if pv.name.endswith(".DESC") and isinstance(pv.value, str) and pv.value.strip().lower() in ROTATION_DESCRIPTIONS:
            motor = pv.name[: -len(".DESC")]
            try:
                return float(mda.extra_pv(f"{motor}.VAL").scalar), f"extra PV {motor}.VAL ({pv.value.strip()!r})"
            except (KeyError, TypeError, ValueError):
                continue
    return None, None


def _mda_extra_pvs(mda: MDAFile) -> dict[str, Any]:
    """The extra PVs as ``{record: {field: value}}`` (:func:`nest_pvs`); the first of a repeated name is kept."""
    return nest_pvs((pv.name, plain(pv.value if isinstance(pv.value, str) else
                                    (pv.value[0] if pv.value.size == 1 else pv.value))) for pv in mda.extra_pvs)


def map_mda(mda: MDAFile, *, theta_pv: str | None = None, flyxrf: Path | None | bool = None) -> Mapped:
    """An MDA map (rank 2, or rank 3 with spectra), and its flyXRF file if it has one (see the module docs)."""
    path = mda.path
    if mda.rank not in (2, 3):
        raise ImportFormatError(
            f"{path}: a rank-{mda.rank} scan; only maps are imported (rank 2: rows x cols, rank 3: with a "
            "spectrum per pixel)")
    outer, middle = mda.scans[0], mda.scans[1]
    rows, cols = middle.shape
    if not outer.positioners or not middle.positioners:
        raise ImportFormatError(f"{path}: the map's {'outer' if not outer.positioners else 'inner'} scan "
                                f"({(outer if not outer.positioners else middle).name}) drives no positioner: "
                                "no positions to import")
    b = _Builder(path)
    y = outer.positioners[0]
    x = middle.positioners[0]
    first_row = int(np.argmax(middle.acquired.any(axis=1)))
    for axis, pos, values in (("y_axis", y, y.data), ("x_axis", x, x.data[first_row])):
        where = _first_monotonic_break(values)
        if where is not None:
            raise ImportFormatError(
                f"{path}: the positions of {pos.name} ({pos.description or axis}) are not strictly monotonic "
                f"(at index {where}: {values[max(where - 1, 0):where + 1]}); a map needs ordered axes")
        b.add(axis, values, source=f"mda:{pos.name}", quantity=axis, units=pos.unit or None,
              description=pos.description or None)
    stacked: dict[str, dict[int, Any]] = {name: {} for name in _TIMING}
    for det in middle.detectors:
        for name, pattern in _TIMING.items():
            if m := pattern.match(det.name):
                stacked[name][int(m["n"])] = det
                break
    stacked_pvs = {det.name for group in stacked.values() for det in group.values()}
    for name, group in stacked.items():
        if group:
            dets = [group[n] for n in sorted(group)]
            b.add(name, np.stack([d.data for d in dets]), source="mda:" + ",".join(d.name for d in dets),
                  quantity=name, dims=["element", "row", "col"], units="s" if name.endswith("time") else None)
    others = [(x.name, x.data, f"mda:{x.name} (positioner {x.description})", x.unit)]
    for det in middle.detectors:
        if det.name in stacked_pvs:
            continue
        scaler = SCALER_PVS.get(det.name)
        if scaler in SCALER_FIELDS:
            b.add(SCALER_FIELDS[scaler], det.data, source=f"mda:{det.name}", quantity=SCALER_FIELDS[scaler],
                  units=det.unit or None, dims=["row", "col"], description=f"{scaler} (XRF-Maps)")
        else:
            others.append((scaler or det.name, det.data, f"mda:{det.name}", det.unit))
    b.add_stack("map_detectors", others, source=f"mda:{middle.name}", dims=["row", "col"])
    b.add_stack("row_detectors", [(d.name, d.data, f"mda:{d.name}", d.unit) for d in outer.detectors],
                source=f"mda:{outer.name}", dims=["row"])
    metadata: dict[str, Any] = {
        "scan_number": mda.scan_number,
        "scan_time": outer.time,
        "dimensions": list(mda.dims),
        "scans": [s.name for s in mda.scans],
        "complete": mda.complete,
        "extra_pvs": _mda_extra_pvs(mda),
    }
    if not mda.complete:
        metadata["acquired_points"] = [s.curr_pt for s in mda.scans]
        logger.warning("%s: the scan stopped early (points acquired per dimension: %s); NaN where not acquired",
                       path, metadata["acquired_points"])
    theta, theta_source = _mda_theta(mda, theta_pv)
    if theta is not None:
        b.add("theta", np.float64(theta), source=f"mda:{theta_source}", quantity="theta", units="deg")
        metadata["theta_source"] = theta_source
    mapped = Mapped(path=path, fmt="mda", format_label=f"synApps MDA {mda.version}", module="mda",
                    shape=(rows, cols), metadata=metadata, quantities=b.quantities, streams={"primary": b.stream},
                    theta=theta)
    if mda.rank == 3:
        spectra = mda.scans[2].detectors
        frame = np.stack([d.data for d in spectra])  # (elements, rows, cols, channels), float32 as stored
        b.add_external("spectra", frame, source="mda:" + ",".join(d.name for d in spectra),
                       dims=["element", "row", "col", "channel"], quantity="spectra", units="counts")
        metadata["energy_calibration"] = _mda_calibration(mda, [d.name for d in spectra])
    elif flyxrf is not False:
        fly_path = find_flyxrf(path) if flyxrf in (None, True) else Path(flyxrf)
        if fly_path is not None:
            _add_flyxrf(b, read_flyxrf(fly_path), metadata, expected_rows=rows, max_cols=cols, mda_path=path)
            mapped.companions["flyxrf"] = fly_path
            mapped.companion_formats["flyxrf"] = "APS flyXRF HDF5 (MAPS_RAW)"
        elif flyxrf is True:
            raise ImportFormatError(f"{path}: no flyXRF file beside it (looked in ../flyXRF/ and ../flyXRF.h5/ "
                                    f"for {path.stem}_*__0.h5); give flyxrf=<path>")
        else:
            logger.info("%s: a rank-2 scan with no flyXRF file beside it; imported without spectra", path)
    metadata["instrument"] = _instrument([s.name for s in mda.scans])
    return mapped


def _mda_calibration(mda: MDAFile, spectra_pvs: list[str]) -> list[dict[str, Any]]:
    """Per spectrum detector, the mca record's CALO/CALS/CALQ extra PVs (keV): offset, gain, quadratic."""
    out = []
    for pv in spectra_pvs:
        record = pv.removesuffix(".VAL")
        entry: dict[str, Any] = {"detector": pv}
        for key, fld in (("offset", "CALO"), ("gain", "CALS"), ("quadratic", "CALQ")):
            try:
                entry[key] = plain(float(mda.extra_pv(f"{record}.{fld}").scalar))
            except (KeyError, TypeError, ValueError):
                entry[key] = None
        out.append(entry)
    return out


def _add_flyxrf(b: _Builder, fly: FlyXRF, metadata: dict, *, expected_rows: int | None = None,
                max_cols: int | None = None, mda_path: Path | None = None) -> None:
    rows, cols = fly.shape
    role = "flyxrf:" if mda_path is not None else ""
    if expected_rows is not None and (rows != expected_rows or cols > max_cols):
        raise ImportFormatError(
            f"{fly.path}: its map is {rows} x {cols} pixels, but {mda_path} plans {expected_rows} x {max_cols}: "
            "not the spectra of that scan; give flyxrf=<the right file>, or flyxrf=False")
    b.add("live_time", fly.livetime, source=f"hdf5:{role}/MAPS_RAW/livetime", quantity="live_time",
          dims=["element", "row", "col"], units="s")
    b.add_stack("flyxrf_timing", [(name, value, f"hdf5:{role}/MAPS_RAW/{name}", unit) for name, value, unit in (
        ("realtime", fly.realtime, "s"), ("inputcounts", fly.input_counts, "counts"),
        ("ouputcounts", fly.output_counts, "counts"))], source=f"hdf5:{role}/MAPS_RAW", dims=["element", "row", "col"])
    b.add_external("spectra", fly.spectra, source=f"hdf5:{role}/MAPS_RAW/"
                   + ",".join(fly.element_names), dims=["element", "row", "col", "channel"], quantity="spectra",
                   units="counts")
    metadata["flyxrf"] = {"shape": [rows, cols], "elements": list(fly.element_names),
                          "dead_time_formula": fly.dead_time_formula}
    if mda_path is not None and cols < max_cols:
        metadata["flyxrf"]["note"] = (f"the spectra cover the first {cols} of the {max_cols} planned columns; "
                                      "the MDA maps keep all columns as recorded")


def map_flyxrf(fly: FlyXRF) -> Mapped:
    """A flyXRF file on its own: spectra and timing, no positions (those are in its MDA file)."""
    b = _Builder(fly.path)
    metadata: dict[str, Any] = {"instrument": "unknown"}
    _add_flyxrf(b, fly, metadata)
    return Mapped(path=fly.path, fmt="flyxrf", format_label="APS flyXRF HDF5 (MAPS_RAW)", module="flyxrf",
                  shape=fly.shape, metadata=metadata, quantities=b.quantities, streams={"primary": b.stream})


# --------------------------------------------------------------------------- MAPS


def map_maps(m: MAPSFile) -> Mapped:
    """An XRF-Maps / MAPS analysed file (see the module docs)."""
    b = _Builder(m.path)
    src = "hdf5:"
    for axis in ("x_axis", "y_axis"):
        b.add(axis, getattr(m, axis), source=src + m.sources.get(axis, f"/MAPS/Scan/{axis}"), quantity=axis)
    scaler_at = m.sources.get("scalers", "/MAPS/Scalers/Values")
    upper = {name.upper(): name for name in m.scalers}
    computed = {name: bool(np.any(value)) for name, value in m.scalers.items()}
    transmission = next((upper[k] for k in ("ABS_CFG", "ABS_IC") if k in upper and computed[upper[k]]), None)
    others = []
    for name, value in m.scalers.items():
        target = "transmission" if name == transmission else MAPS_SCALER_FIELDS.get(name.upper())
        unit = m.scaler_units.get(name, "").strip()
        if target and computed[name]:
            b.add(target, value, source=f"hdf5:{scaler_at}[{name}]", quantity=target, units=unit or None,
                  dims=["row", "col"], description=f"{name} (XRF-Maps)")
        else:
            others.append((name, value, f"hdf5:{scaler_at}[{name}]", unit))
    b.add_stack("scalers", others, source=f"hdf5:{scaler_at}", dims=["row", "col"])
    if m.elapsed_livetime is not None:
        b.add("live_time", m.elapsed_livetime, source="hdf5:" + m.sources["elapsed_livetime"], quantity="live_time",
              units="s", dims=["row", "col"])
    b.add_stack("spectra_timing", [(m.sources[attr].rsplit("/", 1)[-1], getattr(m, attr), "hdf5:" + m.sources[attr],
                                    unit) for attr, unit in (("elapsed_realtime", "s"), ("input_counts", "counts"),
                                                             ("output_counts", "counts"))
                                   if getattr(m, attr) is not None], source="hdf5:/MAPS/Spectra", dims=["row", "col"])
    routine = next((r for r in MAPS_ROUTINES if r in m.analyzed), next(iter(m.analyzed), None))
    for r, channels in m.analyzed.items():
        at = m.sources.get(f"analyzed/{r}", f"/MAPS/XRF_Analyzed/{r}/Counts_Per_Sec")
        others = []
        for name, unit in zip(channels.names, channels.units, strict=True):
            quantity = _line_quantity(name, pyxrf=False) if r == routine else None
            if quantity:
                b.add(quantity, channels.maps[name], source=f"hdf5:{at}[{name}]", quantity=quantity,
                      units=unit or None, dims=["row", "col"])
            else:
                others.append((name, channels.maps[name], f"hdf5:{at}[{name}]", unit))
        b.add_stack(f"maps_{r}", others, source=f"hdf5:{at}", dims=["row", "col"])
    metadata: dict[str, Any] = {
        "scan_name": m.scan_name, "scan_time": m.scan_time_stamp, "maps_version": m.version,
        "requested_shape": [m.requested_rows, m.requested_cols], "maps_routine": routine,
        "extra_pvs": nest_pvs((pv.name, pv.value) for pv in m.extra_pvs),
        "amplifiers": plain(m.amplifiers),
        "standards": [plain({"name": s.name, "element_weights": s.element_weights, "sr_current": s.sr_current,
                             "us_ic": s.us_ic, "ds_ic": s.ds_ic}) for s in m.standards],
        "file_sources": dict(m.sources),
    }
    if m.energy_calibration is not None:
        c = m.energy_calibration
        metadata["energy_calibration"] = [{"detector": "summed", "offset": c.offset, "gain": c.gain,
                                           "quadratic": c.quadratic}]
    if m.theta is not None:
        b.add("theta", np.float64(m.theta), source=src + (m.theta_source or ""), quantity="theta", units="deg")
        metadata["theta_source"] = m.theta_source
    if m.spectra is not None:
        b.add_external("spectra", m.spectra, source=src + m.sources.get("spectra", "/MAPS/Spectra/mca_arr"),
                       dims=["row", "col", "channel"], quantity="spectra", units="counts")
    metadata["instrument"] = _instrument([pv.name for pv in m.extra_pvs] + list(m.scalers) + [m.scan_name or ""])
    version = "" if m.version is None else f" {m.version}"
    return Mapped(path=m.path, fmt="maps", format_label=f"XRF-Maps/MAPS HDF5{version}", module="maps_hdf5",
                  shape=m.shape, metadata=metadata, quantities=b.quantities, streams={"primary": b.stream},
                  theta=m.theta)


# --------------------------------------------------------------------------- PyXRF


def map_pyxrf(p: PyXRFFile) -> Mapped:
    """A PyXRF file (see the module docs)."""
    b = _Builder(p.path)
    src = "hdf5:/xrfmap/"
    if "x_pos" in p.positions:
        b.add("x_axis", p.positions["x_pos"][0], source=src + "positions/pos[x_pos][0, :]", quantity="x_axis")
    if "y_pos" in p.positions:
        b.add("y_axis", p.positions["y_pos"][:, 0], source=src + "positions/pos[y_pos][:, 0]", quantity="y_axis")
    b.add_stack("positions", [(n, p.positions[n], f"{src}positions/pos[{n}]", "") for n in p.position_names],
                source=src + "positions/pos", dims=["row", "col"])
    i0 = p.i0_name
    if i0 is not None:
        b.add("i0", p.scalers[i0], source=f"{src}scalers/val[{i0}]", quantity="i0", dims=["row", "col"],
              description=f"{i0} (PyXRF scaler)")
    b.add_stack("scalers", [(n, p.scalers[n], f"{src}scalers/val[{n}]", "") for n in p.scaler_names if n != i0],
                source=src + "scalers/val", dims=["row", "col"])
    kinds = [("fit", p.fit), ("roi", p.roi)]
    preferred = next((k for k, maps in kinds if maps), None)
    for kind, maps in kinds:
        others = []
        for name, value in maps.items():
            quantity = _line_quantity(name, pyxrf=True) if kind == preferred else None
            if quantity:
                b.add(quantity, value, source=f"{src}detsum/xrf_{kind}[{name}]", quantity=quantity,
                      dims=["row", "col"])
            else:
                others.append((name, value, f"{src}detsum/xrf_{kind}[{name}]", ""))
        b.add_stack(f"{kind}_maps", others, source=f"{src}detsum/xrf_{kind}", dims=["row", "col"])
    for kind, per_det in (("fit", p.detector_fit), ("roi", p.detector_roi)):
        for det, maps in per_det.items():
            b.add_stack(f"{det}_{kind}_maps", [(n, v, f"{src}{det}/xrf_{kind}[{n}]", "") for n, v in maps.items()],
                        source=f"{src}{det}/xrf_{kind}", dims=["row", "col"])
    meta = p.metadata
    theta = p.theta
    metadata: dict[str, Any] = {
        "scan_number": p.scan_id,
        "scan_time": meta.get("scan_time_start"),
        "scan_uid": meta.get("scan_uid"),
        "file_metadata": plain(meta),
    }
    if p.incident_energy is not None:
        metadata["energy"] = p.incident_energy
    if theta is not None:
        b.add("theta", np.float64(theta), source=src + "scan_metadata@param_theta (mdeg)", quantity="theta",
              units="deg")
        metadata["theta_source"] = "xrfmap/scan_metadata param_theta"
    b.add_external("spectra", p.counts, source=src + "detsum/counts", dims=["row", "col", "channel"],
                   quantity="spectra", units="counts")
    if p.detector_counts:
        names = sorted(p.detector_counts, key=lambda d: int(d[3:]))
        b.add_external("spectra_elements", np.stack([p.detector_counts[d] for d in names]),
                       source=src + ",".join(f"{d}/counts" for d in names),
                       dims=["element", "row", "col", "channel"], units="counts")
    instrument = meta.get("scan_instrument_name") or meta.get("scan_instrument_id")
    metadata["instrument"] = str(instrument) if instrument else "unknown"
    if meta.get("sample_name"):
        metadata["file_sample"] = str(meta["sample_name"])
    version = meta.get("file_format_version", "")
    return Mapped(path=p.path, fmt="pyxrf", format_label=f"NSLS-II PyXRF HDF5 {version}".strip(), module="pyxrf",
                  shape=p.shape, metadata=metadata, quantities=b.quantities, streams={"primary": b.stream},
                  theta=theta)


# --------------------------------------------------------------------------- DXchange


def _in_place(path: Path, dataset: str) -> tuple[InPlace, dict[str, Any]]:
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        chunks = tuple(ds.chunks) if ds.chunks else (1, *ds.shape[1:])
        spec = {"source": f"hdf5:{dataset}", "dtype": "array", "shape": list(ds.shape[1:]),
                "dtype_numpy": ds.dtype.str, "external": "STREAM:", "dims": ["row", "col"]}
        return InPlace(path, dataset, int(ds.shape[0]), chunks), spec


def map_dxchange(dx: DXchangeFile) -> Mapped:
    """A Data Exchange tomography: one event per angle, frames in place (see the module docs)."""
    path = dx.path
    if dx.theta is None:
        raise ImportFormatError(f"{path}: no /{dx.exchange}/theta: the angle of each projection is not recorded "
                                "(dxchange would assume 0..180 evenly); write /exchange/theta in degrees")
    streams: dict[str, Stream] = {}
    for name, dataset, angles in (("primary", "data", dx.theta), ("flat", "data_white", dx.theta_white),
                                  ("dark", "data_dark", dx.theta_dark)):
        if name != "primary" and getattr(dx, dataset) is None:
            continue
        part, spec = _in_place(path, f"/{dx.exchange}/{dataset}")
        stream = Stream(data_keys={dataset: spec}, external={dataset: [part]})
        if angles is not None:
            stream.data_keys["theta"] = {"source": f"hdf5:/{dx.exchange}/theta"
                                         + ("" if name == "primary" else f"_{name}"),
                                         "dtype": "number", "shape": [], "dtype_numpy": "<f8", "units": "deg"}
            if len(angles) != part.n_frames:
                raise ImportFormatError(f"{path}: {len(angles)} angles for the {part.n_frames} frames of "
                                        f"/{dx.exchange}/{dataset}; give one angle per frame")
        stream.events = ([{"theta": float(a)} for a in angles] if angles is not None
                         else [{} for _ in range(part.n_frames)])
        streams[name] = stream
    measurement = {k: plain({"value": v.value, "units": v.units}) for k, v in dx.measurement.items()}
    process = {k: plain({"value": v.value, "units": v.units}) for k, v in dx.process.items()}
    metadata: dict[str, Any] = {
        "implements": list(dx.implements), "exchange": dx.exchange, "measurement": nest_paths(measurement),
        "process": nest_paths(process),
        "data_attrs": dict(dx.data_attrs), "theta_source": f"/{dx.exchange}/theta",
        "angles": [float(a) for a in dx.theta],
    }
    if dx.incident_energy_kev is not None:
        metadata["energy"] = dx.incident_energy_kev
    instrument = next((measurement[k]["value"] for k in ("instrument/name", "instrument/source/beamline",
                                                         "instrument/source/name") if k in measurement), None)
    metadata["instrument"] = str(instrument) if instrument else "unknown"
    if "sample/name" in measurement:
        metadata["file_sample"] = str(measurement["sample/name"]["value"])
    return Mapped(path=path, fmt="dxchange", format_label="Data Exchange HDF5", module="dxchange",
                  shape=dx.shape, metadata=metadata, quantities={"theta": "theta", "projections": "data"},
                  streams=streams)
