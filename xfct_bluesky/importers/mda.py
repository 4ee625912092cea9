"""Read synApps MDA files (the sscan module's ``saveData`` scans, versions 1.3 and 1.4).

An MDA file is the record of one (possibly nested) sscan-record scan at an APS
beamline: a file header, then the outermost scan, whose header points at the
scans of the next lower dimension, and so on down to the innermost one; after
the scans, the "extra PVs" (the beamline's environment, which saveData records
with the scan).
At a microprobe a rank-2 file is a map (rows x cols) of scaler readings and a
rank-3 file adds an MCA spectrum per pixel (rows x cols x channels).

:func:`read_mda` returns an :class:`MDAFile` of plain Python and NumPy data:
the header, one :class:`ScanDimension` per dimension (outermost first) holding
its positioners, detectors and triggers with their data assembled into arrays
of the nested shape, and the :class:`ExtraPV` list. Nothing here knows about
bluesky or Tiled; mapping an MDA file to bluesky documents is a later layer.

Why a reader of our own
-----------------------
No maintained MDA reader installs from PyPI as a library:

* ``mdaviz`` (BCDA-APS, maintained) is a PyQt6 desktop application
  (``PyQt6``, ``lmfit``, ``psutil`` ... as hard dependencies); its reader is a
  vendored copy of Tim Mooney's ``mda.py`` in the private module
  ``mdaviz.synApps_mdalib.mda``, which prints errors to stdout and returns
  ``None`` instead of raising, and switches between lists and NumPy arrays by
  a module-level flag.
* synApps' own ``mdalib`` wheel (``utils/mdaPythonUtils``) is not on PyPI; the
  PyPI name ``mdalib`` is an unrelated package.
* ``apstools``, ``pyepics`` and ``epicsscan`` do not read MDA files.

The format is small and fixed, so this module reads it with NumPy big-endian
reads (``numpy.frombuffer(..., ">i4")``), which also keeps the project off the
standard library's ``xdrlib`` (deprecated in Python 3.11, removed in 3.13)
and its forks (``xdrlib3``, ``standard-xdrlib``, ``mda-xdrlib``).

The layout
----------
Followed exactly from the two readers of the field, which agree on it:

* T. Mooney, synApps sscan module, ``sscanApp/op/python/mda.py`` (``readMDA``,
  ``readScan``; version 2.1.1 as vendored by mdaviz) and the format note
  ``documentation/saveData_fileFormat.txt``;
* D. A. Arms, ``mda-load`` 1.4 (``mda_loader.c``, ``mda-load.h``), which
  XRF-Maps (AdvancedPhotonSource/XRF-Maps) builds on in
  ``src/io/file/mda_io.cpp``.

All numbers are XDR, i.e. big-endian, and every integer (XDR ``short`` and
``long`` alike) takes 4 bytes:

=================  ==========================================================
file header        version (float), scan number (int), rank (int), dims (rank
                   ints), isRegular (int), offset of the extra PVs (int, 0 if
                   none); the outermost scan follows at once
scan header        rank, npts (requested points), curr_pt (points acquired),
                   and if rank > 1 the npts file offsets of the lower scans;
                   name and time stamp (counted strings); numbers of
                   positioners, detectors and triggers
positioner         number, PV name, description, step mode, unit, readback
                   name, readback description, readback unit
detector           number, PV name, description, unit
trigger            number, PV name, command (float)
data               per positioner npts doubles, then per detector npts floats
extra PVs          count; per PV: name, description, type; if type is not
                   DBR_STRING: count and unit; then the value
=================  ==========================================================

A *counted string* is an int length and, only if it is not zero, an XDR string
(a second length, then the bytes padded to a multiple of 4). Extra-PV types
are the EPICS ``DBR_CTRL_*`` codes: 0 string, 29 short, 30 float, 32 char,
33 long, 34 double; every element of a short or char array still takes 4
bytes. Versions 1.3 and 1.4 share this layout: neither reference reads them
differently (mda-load 1.4 also reads 1.2 the same way, but no 1.2 file was at
hand to test, so this reader refuses it).

Aborted scans
-------------
A scan stopped early has ``curr_pt < npts``. The arrays keep the planned shape;
points not acquired are NaN and :attr:`ScanDimension.acquired` marks the ones
that were. As in mda-load, the lower scan in flight when the outer one stopped
(offset ``curr_pt`` of the outer scan's list) is read too when its offset is
set and it parses; offsets beyond it may be garbage and are not followed.

Errors
------
A file that is not MDA, has an unknown version, absurd rank or dimensions,
offsets out of range, or ends early raises :class:`MDAFormatError` (a
``ValueError``) naming the file, the byte offset and what was expected there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "EXTRA_PV_TYPES",
    "Detector",
    "ExtraPV",
    "MDAFile",
    "MDAFormatError",
    "Positioner",
    "ScanDimension",
    "Trigger",
    "read_mda",
]

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = (1.3, 1.4)
"""MDA versions this reader accepts (the version float is compared to 2 decimals)."""
MAX_RANK = 4
"""Deepest nesting read: the sscan records scan1..scan4 (Mooney's mda.py reads up to 4 too)."""

EXTRA_PV_TYPES: dict[int, str] = {
    0: "DBR_STRING",
    29: "DBR_CTRL_SHORT",
    30: "DBR_CTRL_FLOAT",
    32: "DBR_CTRL_CHAR",
    33: "DBR_CTRL_LONG",
    34: "DBR_CTRL_DOUBLE",
}
"""The EPICS type codes an MDA extra PV may have, and their names."""

# XDR element type and NumPy result type of each numeric extra-PV type. Shorts
# and chars are 4-byte XDR ints on disk (Mooney: unpack_int; Arms: xdr_int16_t/xdr_int8_t).
_EXTRA_PV_DTYPES: dict[int, tuple[str, type]] = {
    29: (">i4", np.int16),
    30: (">f4", np.float32),
    32: (">i4", np.int8),
    33: (">i4", np.int32),
    34: (">f8", np.float64),
}


class MDAFormatError(ValueError):
    """An MDA file cannot be read as it is.

    The message names the file, the byte offset and what was expected there.
    """


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class Positioner:
    """One positioner of a scan dimension: the PV it drove and the positions it took.

    ``data`` has the nested shape of its dimension (see :class:`ScanDimension`),
    float64, NaN where no point was acquired.
    """

    number: int
    name: str
    description: str
    step_mode: str
    unit: str
    readback_name: str
    readback_description: str
    readback_unit: str
    data: np.ndarray = field(repr=False)

    @property
    def field_name(self) -> str:
        """The sscan record field it was: ``"P1"`` .. ``"P4"``."""
        return f"P{self.number + 1}"


@dataclass(frozen=True, eq=False)
class Detector:
    """One detector of a scan dimension: the PV read at each point, and the readings.

    ``data`` has the nested shape of its dimension, float32 (the file's type),
    NaN where no point was acquired.
    """

    number: int
    name: str
    description: str
    unit: str
    data: np.ndarray = field(repr=False)

    @property
    def field_name(self) -> str:
        """The sscan record field it was: ``"D01"`` .. ``"D70"`` (sscan 5.x numbering)."""
        return f"D{self.number + 1:02d}"


@dataclass(frozen=True)
class Trigger:
    """One detector trigger of a scan dimension: the PV written before each point and the value."""

    number: int
    name: str
    command: float

    @property
    def field_name(self) -> str:
        """The sscan record field it was: ``"T1"`` .. ``"T4"``."""
        return f"T{self.number + 1}"


@dataclass(frozen=True, eq=False)
class ScanDimension:
    """All the scans of one dimension of an MDA file, their data assembled into arrays.

    For the dimension at depth ``k`` (0 is the outermost) the data arrays have
    shape ``shape = (npts_0, ..., npts_k)``: a rank-2 map's inner positioners
    and detectors are ``(rows, cols)``, a rank-3 file's innermost detectors
    (the MCA spectra) ``(rows, cols, channels)``.

    Attributes
    ----------
    rank
        1 for the innermost dimension, the file's rank for the outermost.
    npts
        Points requested per scan (the largest among this dimension's scans).
    curr_pt
        Points acquired, the smallest among this dimension's scans that were
        read: ``curr_pt < npts`` means a scan of this dimension stopped early.
    n_scans
        How many scans of this dimension the file holds (1 for the outermost;
        ``rows`` for the middle one of a rank-3 file...).
    name, time
        The sscan record (``"2xfm:scan1"``) and the time stamp of the first
        scan of this dimension; ``start_times`` holds every scan's, in file order.
    acquired
        Boolean array of ``shape``: True where a point was acquired.
    """

    rank: int
    npts: int
    curr_pt: int
    n_scans: int
    name: str
    time: str
    start_times: tuple[str, ...]
    positioners: tuple[Positioner, ...]
    detectors: tuple[Detector, ...]
    triggers: tuple[Trigger, ...]
    acquired: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of every data array of this dimension."""
        return self.acquired.shape

    @property
    def complete(self) -> bool:
        """Whether every planned point of this dimension was acquired."""
        return bool(self.acquired.all())


@dataclass(frozen=True, eq=False)
class ExtraPV:
    """One PV of the file's environment section (the extra PVs saveData records with the scan).

    ``value`` is a ``str`` for DBR_STRING and DBR_CTRL_CHAR (the char array up
    to its first NUL, as Mooney's reader does) and a 1-D NumPy array of
    ``count`` elements otherwise (int16, float32, int32 or float64).
    """

    name: str
    description: str
    type_code: int
    unit: str
    count: int
    value: str | np.ndarray = field(repr=False)

    @property
    def type_name(self) -> str:
        """The EPICS type name (``"DBR_CTRL_DOUBLE"``...)."""
        return EXTRA_PV_TYPES[self.type_code]

    @property
    def scalar(self) -> str | int | float:
        """The value as one Python ``str``, ``int`` or ``float``; a ValueError for an array of several."""
        if isinstance(self.value, str):
            return self.value
        if self.value.size != 1:
            raise ValueError(
                f"extra PV {self.name!r} holds {self.value.size} values, not one: use .value"
            )
        return self.value[0].item()


@dataclass(frozen=True, eq=False)
class MDAFile:
    """The content of one MDA file (see :func:`read_mda`).

    Attributes
    ----------
    path
        The file read.
    version, scan_number, rank, dims, is_regular, extra_pvs_offset
        The file header as written: ``dims`` are the requested points per
        dimension, outermost first (``(11, 11, 2000)`` for an 11 x 11 map with
        2000-channel spectra); the arrays take their shape from the scans
        themselves, which may differ from ``dims`` in files written by buggy
        versions of saveData (XRF-Maps' ``mda_io.cpp`` notes such headers).
    scans
        One :class:`ScanDimension` per dimension, outermost first:
        ``scans[0]`` steps the rows of a map, ``scans[-1]`` is the innermost.
    extra_pvs
        The environment PVs, in file order.
    """

    path: Path
    version: float
    scan_number: int
    rank: int
    dims: tuple[int, ...]
    is_regular: bool
    extra_pvs_offset: int
    scans: tuple[ScanDimension, ...]
    extra_pvs: tuple[ExtraPV, ...] = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the innermost dimension's arrays (the full nested shape of the scan)."""
        return self.scans[-1].shape

    @property
    def complete(self) -> bool:
        """Whether every planned point of every dimension was acquired."""
        return all(scan.complete for scan in self.scans)

    def extra_pv(self, name: str) -> ExtraPV:
        """The extra PV called ``name`` (the first, if the file repeats a name); KeyError if none."""
        for pv in self.extra_pvs:
            if pv.name == name:
                return pv
        raise KeyError(f"{self.path.name}: no extra PV named {name!r}")

    def detector(self, name: str) -> Detector:
        """The detector reading PV ``name``, searched from the outermost dimension in; KeyError if none."""
        for det in self._detectors():
            if det.name == name:
                return det
        raise KeyError(f"{self.path.name}: no detector reads PV {name!r}")

    def positioner(self, name: str) -> Positioner:
        """The positioner driving PV ``name``, searched from the outermost dimension in; KeyError if none."""
        for scan in self.scans:
            for pos in scan.positioners:
                if pos.name == name:
                    return pos
        raise KeyError(f"{self.path.name}: no positioner drives PV {name!r}")

    def _detectors(self) -> Iterator[Detector]:
        for scan in self.scans:
            yield from scan.detectors


# --------------------------------------------------------------------------- reading


class _XDR:
    """A cursor over the file's bytes; every read checks the bounds and names what it reads."""

    def __init__(self, path: Path, buf: bytes):
        self.path = path
        self.buf = buf
        self.size = len(buf)
        self.pos = 0

    def error(self, offset: int, message: str) -> MDAFormatError:
        return MDAFormatError(f"{self.path}: byte {offset}: {message}")

    def _need(self, nbytes: int, what: str) -> None:
        if nbytes < 0 or self.pos + nbytes > self.size:
            raise self.error(
                self.pos,
                f"expected {nbytes} bytes of {what}, but the file ends at byte {self.size} "
                "(truncated, or not an MDA file)",
            )

    def seek(self, offset: int, what: str, *, stored_at: int) -> None:
        """Move to ``offset``, read from the file at byte ``stored_at``."""
        if not 0 < offset < self.size:
            raise self.error(
                stored_at,
                f"the offset of {what} is {offset}, outside the file (1 .. {self.size - 1})",
            )
        self.pos = offset

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        self._need(count * itemsize, what)
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * itemsize
        return out

    def read_int(self, what: str) -> int:
        return int(self.array(">i4", 1, what)[0])

    def read_float(self, what: str) -> float:
        return float(self.array(">f4", 1, what)[0])

    def count(self, what: str, *, bytes_each: int) -> int:
        """A count of items that follow, each taking at least ``bytes_each`` bytes."""
        at = self.pos
        n = self.read_int(what)
        if n < 0 or n * bytes_each > self.size - self.pos:
            raise self.error(
                at,
                f"{what} is {n}, which cannot fit in the {self.size - self.pos} bytes left: "
                "truncated, or not an MDA file",
            )
        return n

    def string(self, what: str) -> str:
        """A counted string: an int length and, if not zero, an XDR string of at most that length."""
        at = self.pos
        length = self.read_int(f"the length of {what}")
        if length == 0:
            return ""
        if length < 0:
            raise self.error(at, f"the length of {what} is {length}, expected >= 0")
        if length > self.size - self.pos:
            raise self.error(
                at,
                f"the length of {what} is {length}, more than the {self.size - self.pos} bytes left: "
                "truncated, or not an MDA file",
            )
        nbytes = self.read_int(f"the XDR length of {what}")
        if not 0 <= nbytes <= length:
            raise self.error(
                at + 4, f"the XDR length of {what} is {nbytes}, expected 0 .. {length} (its counted length)"
            )
        self._need((nbytes + 3) // 4 * 4, what)
        raw = self.buf[self.pos : self.pos + nbytes]
        self.pos += (nbytes + 3) // 4 * 4
        return raw.split(b"\0", 1)[0].decode("latin-1")


@dataclass(eq=False)
class _RawScan:
    """One scan as stored: its header, descriptions, data, and the lower scans it points at."""

    offset: int
    rank: int
    npts: int
    curr_pt: int
    name: str
    time: str
    positioners: list[tuple]
    detectors: list[tuple]
    triggers: list[Trigger]
    positioner_data: np.ndarray  # (np, npts) float64
    detector_data: np.ndarray  # (nd, npts) float32
    subscans: list[_RawScan]


def _read_header(x: _XDR) -> tuple[float, int, int, tuple[int, ...], bool, int]:
    version = x.read_float("the version")
    hundredths = round(version * 100) if math.isfinite(version) else None
    if hundredths not in {round(v * 100) for v in SUPPORTED_VERSIONS}:
        raise x.error(
            0,
            f"the version reads {version:.6g}, expected one of {', '.join(map(str, SUPPORTED_VERSIONS))}: "
            "not an MDA file, or a version this reader does not know",
        )
    scan_number = x.read_int("the scan number")
    at = x.pos
    rank = x.read_int("the rank")
    if not 1 <= rank <= MAX_RANK:
        raise x.error(at, f"the rank is {rank}, expected 1 .. {MAX_RANK}")
    at = x.pos
    dims = tuple(int(d) for d in x.array(">i4", rank, "the dimensions"))
    if any(d < 1 for d in dims):
        raise x.error(at, f"the dimensions are {list(dims)}, expected each >= 1")
    is_regular = x.read_int("isRegular")
    at = x.pos
    extra_offset = x.read_int("the offset of the extra PVs")
    if extra_offset != 0 and not x.pos < extra_offset < x.size:
        raise x.error(
            at,
            f"the offset of the extra PVs is {extra_offset}, outside the file ({x.pos} .. {x.size - 1}): "
            "truncated, or not an MDA file",
        )
    return version, scan_number, rank, dims, bool(is_regular), extra_offset


def _read_scan(x: _XDR, expected_rank: int, label: str) -> _RawScan:
    """Read the scan at the cursor and, recursively, the lower scans it points at."""
    offset = x.pos
    rank = x.read_int(f"the rank of {label}")
    if rank != expected_rank:
        raise x.error(offset, f"{label} has rank {rank}, expected {expected_rank}")
    at = x.pos
    npts = x.read_int(f"the npts of {label}")
    if npts < 1:
        raise x.error(at, f"{label} has npts {npts}, expected >= 1")
    # each point takes at least 4 bytes (a detector float or a lower-scan offset)
    if npts * 4 > x.size - x.pos:
        raise x.error(
            at,
            f"{label} has npts {npts}, more than the {x.size - x.pos} bytes left can hold "
            "(4 or more per point): truncated, or not an MDA file",
        )
    at = x.pos
    curr_pt = x.read_int(f"the curr_pt of {label}")
    if not 0 <= curr_pt <= npts:
        raise x.error(at, f"{label} has curr_pt {curr_pt}, expected 0 .. npts ({npts})")
    offsets_at = x.pos
    offsets = x.array(">i4", npts, f"the lower-scan offsets of {label}") if rank > 1 else None
    name = x.string(f"the name of {label}")
    time = x.string(f"the time stamp of {label}")
    n_pos = x.count(f"the number of positioners of {label}", bytes_each=8 * 4)
    n_det = x.count(f"the number of detectors of {label}", bytes_each=4 * 4)
    n_trg = x.count(f"the number of triggers of {label}", bytes_each=3 * 4)
    positioners = []
    for j in range(n_pos):
        what = f"positioner {j} of {label}"
        positioners.append(
            (
                x.read_int(f"the number of {what}"),
                x.string(f"the PV name of {what}"),
                x.string(f"the description of {what}"),
                x.string(f"the step mode of {what}"),
                x.string(f"the unit of {what}"),
                x.string(f"the readback name of {what}"),
                x.string(f"the readback description of {what}"),
                x.string(f"the readback unit of {what}"),
            )
        )
    detectors = []
    for j in range(n_det):
        what = f"detector {j} of {label}"
        detectors.append(
            (
                x.read_int(f"the number of {what}"),
                x.string(f"the PV name of {what}"),
                x.string(f"the description of {what}"),
                x.string(f"the unit of {what}"),
            )
        )
    triggers = []
    for j in range(n_trg):
        what = f"trigger {j} of {label}"
        number = x.read_int(f"the number of {what}")
        pv = x.string(f"the PV name of {what}")
        triggers.append(Trigger(number, pv, x.read_float(f"the command of {what}")))
    pos_data = x.array(">f8", n_pos * npts, f"the positioner data of {label}").reshape(n_pos, npts)
    det_data = x.array(">f4", n_det * npts, f"the detector data of {label}").reshape(n_det, npts)
    scan = _RawScan(
        offset, rank, npts, curr_pt, name, time, positioners, detectors, triggers,
        pos_data.astype(np.float64), det_data.astype(np.float32), [],
    )
    if offsets is not None:
        _read_subscans(x, scan, offsets, offsets_at, label)
    return scan


def _read_subscans(x: _XDR, scan: _RawScan, offsets: np.ndarray, offsets_at: int, label: str) -> None:
    """The lower scans of ``scan`` (their offsets stored from byte ``offsets_at``).

    Every acquired one, and the one in flight if it is there.
    """
    for i in range(scan.curr_pt):
        if offsets[i] == 0:
            # mda-load: no zero offset among the acquired points; keep those before it
            logger.warning(
                "%s: %s: lower scan %d has offset 0; keeping the %d before it", x.path, label, i, i
            )
            scan.curr_pt = i
            break
        x.seek(int(offsets[i]), f"lower scan {i} of {label}", stored_at=offsets_at + 4 * i)
        scan.subscans.append(_read_scan(x, scan.rank - 1, f"scan {i} below {label}"))
    i = scan.curr_pt
    if i < scan.npts and len(scan.subscans) == i and 0 < offsets[i] < x.size:
        # the lower scan running when this one stopped: partially acquired, read if it parses
        x.pos = int(offsets[i])
        try:
            scan.subscans.append(_read_scan(x, scan.rank - 1, f"scan {i} below {label} (in flight)"))
        except MDAFormatError as exc:
            logger.info("%s: lower scan %d of %s (not acquired) is not readable: %s", x.path, i, label, exc)


def _read_extra_pvs(x: _XDR, offset: int) -> tuple[ExtraPV, ...]:
    x.pos = offset
    n = x.count("the number of extra PVs", bytes_each=3 * 4)
    pvs = []
    for i in range(n):
        what = f"extra PV {i}"
        name = x.string(f"the name of {what}")
        what = f"extra PV {i} ({name})"
        description = x.string(f"the description of {what}")
        at = x.pos
        type_code = x.read_int(f"the type of {what}")
        if type_code not in EXTRA_PV_TYPES:
            raise x.error(
                at,
                f"{what} has type {type_code}, expected one of "
                + ", ".join(f"{c} ({n})" for c, n in EXTRA_PV_TYPES.items()),
            )
        unit, count = "", 1
        if type_code != 0:
            at = x.pos
            count = x.read_int(f"the count of {what}")
            if not 1 <= count <= (x.size - x.pos) // 4:
                raise x.error(at, f"{what} has count {count}, expected 1 .. {(x.size - x.pos) // 4}")
            unit = x.string(f"the unit of {what}")
        if type_code == 0:
            value: str | np.ndarray = x.string(f"the value of {what}")
        else:
            xdr_dtype, dtype = _EXTRA_PV_DTYPES[type_code]
            raw = x.array(xdr_dtype, count, f"the value of {what}")
            if type_code == 32:  # DBR_CTRL_CHAR: a NUL-terminated string, as in Mooney's reader
                chars = (raw.astype(np.int64) & 0xFF).astype(np.uint8).tobytes()
                value = chars.split(b"\0", 1)[0].decode("latin-1")
            else:
                value = raw.astype(dtype)
        pvs.append(ExtraPV(name, description, type_code, unit, count, value))
    return tuple(pvs)


def _assemble(raw: _RawScan, rank: int, x: _XDR) -> tuple[ScanDimension, ...]:
    """Gather the scans of each depth and stack their data into nested-shape arrays."""
    levels: list[list[tuple[tuple[int, ...], _RawScan]]] = [[((), raw)]]
    for _ in range(1, rank):
        levels.append(
            [(index + (i,), sub) for index, scan in levels[-1] for i, sub in enumerate(scan.subscans)]
        )
    dimensions = []
    shape: tuple[int, ...] = ()
    for depth, scans in enumerate(levels):
        if not scans:
            # no lower scan was acquired: the dimension is known only from the header
            raise x.error(
                raw.offset,
                f"the scan has rank {rank} but no scan of depth {depth} was written "
                f"(curr_pt of the scan above is 0): nothing acquired to read",
            )
        first = scans[0][1]
        for _, scan in scans[1:]:
            if [p[1] for p in scan.positioners] != [p[1] for p in first.positioners] or [
                d[1] for d in scan.detectors
            ] != [d[1] for d in first.detectors]:
                raise x.error(
                    scan.offset,
                    f"{scan.name} at depth {depth} records other positioners or detectors than the "
                    f"first scan of that depth (at byte {first.offset}): an irregular file this reader "
                    "does not assemble",
                )
        npts = max(scan.npts for _, scan in scans)
        shape = shape + (npts,)
        pos = np.full((len(first.positioners),) + shape, np.nan, dtype=np.float64)
        det = np.full((len(first.detectors),) + shape, np.nan, dtype=np.float32)
        acquired = np.zeros(shape, dtype=bool)
        for index, scan in scans:
            cp = scan.curr_pt
            pos[(slice(None),) + index + (slice(0, cp),)] = scan.positioner_data[:, :cp]
            det[(slice(None),) + index + (slice(0, cp),)] = scan.detector_data[:, :cp]
            acquired[index + (slice(0, cp),)] = True
        dimensions.append(
            ScanDimension(
                rank=first.rank,
                npts=npts,
                curr_pt=min(scan.curr_pt for _, scan in scans),
                n_scans=len(scans),
                name=first.name,
                time=first.time,
                start_times=tuple(scan.time for _, scan in scans),
                positioners=tuple(Positioner(*meta, data=pos[j]) for j, meta in enumerate(first.positioners)),
                detectors=tuple(Detector(*meta, data=det[j]) for j, meta in enumerate(first.detectors)),
                triggers=tuple(first.triggers),
                acquired=acquired,
            )
        )
    return tuple(dimensions)


def read_mda(path: str | Path) -> MDAFile:
    """Read a synApps MDA file (version 1.3 or 1.4, rank 1 to 4).

    Parameters
    ----------
    path
        The ``.mda`` file.

    Returns
    -------
    MDAFile
        The header, one :class:`ScanDimension` per dimension (outermost
        first) with its positioner and detector data as arrays of the nested
        shape, and the extra PVs.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    MDAFormatError
        A ``ValueError``: the file is not MDA, of an unknown version, has an
        absurd rank, dimensions or offset, or ends early. The message names
        the file, the byte offset and what was expected.

    See Also
    --------
    xfct_bluesky.importers.flyxrf.read_flyxrf : the spectra of a fly scan, whose
        scalers and positions are in a rank-2 MDA file.

    Notes
    -----
    The layout follows Mooney's ``mda.py`` (synApps sscan) and Arms'
    ``mda-load`` (used by XRF-Maps); see the module docstring. Points not
    acquired are NaN; :attr:`ScanDimension.acquired` marks the ones that were.

    Examples
    --------
    >>> mda = read_mda("2xfm_0010.mda")                          # doctest: +SKIP
    >>> mda.dims, [s.name for s in mda.scans]                    # doctest: +SKIP
    ((11, 11, 2000), ['2xfm:scan2', '2xfm:scan1', '2xfm:scanH'])
    >>> mda.scans[-1].detectors[0].data.shape                    # doctest: +SKIP
    (11, 11, 2000)
    """
    path = Path(path)
    x = _XDR(path, path.read_bytes())
    version, scan_number, rank, dims, is_regular, extra_offset = _read_header(x)
    raw = _read_scan(x, rank, "the outermost scan")
    scans = _assemble(raw, rank, x)
    extra_pvs = _read_extra_pvs(x, extra_offset) if extra_offset else ()
    return MDAFile(
        path=path,
        version=round(version, 2),
        scan_number=scan_number,
        rank=rank,
        dims=dims,
        is_regular=is_regular,
        extra_pvs_offset=extra_offset,
        scans=scans,
        extra_pvs=extra_pvs,
    )
