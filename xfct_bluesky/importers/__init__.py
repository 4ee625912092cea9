"""Importers: read the microprobe field's file formats into plain NumPy/dict structures.

Each reader parses one format and returns a typed, frozen dataclass of NumPy
arrays and strings; none knows about bluesky or Tiled.

mda    :func:`read_mda` -> :class:`MDAFile`: synApps MDA scans (the sscan
       module's saveData, XDR, versions 1.3/1.4, ranks 1-4): header, per
       dimension the positioners, detectors and triggers with their data as
       nested-shape arrays (a rank-3 file's MCA spectra ``(rows, cols, channels)``),
       and the extra PVs
flyxrf :func:`read_flyxrf` -> :class:`FlyXRF`: APS 2-ID-E fly-scan raw HDF5
       (``MAPS_RAW``): spectra ``(elements, rows, cols, channels)``, their sum,
       live/real time, input/output counts and XRF-Maps' dead-time factor

Next, in this package: readers for MAPS / XRF-Maps analysed HDF5 (``/MAPS``),
PyXRF HDF5 (``xrfmap``) and DXchange (``/exchange``), and the mapping of what
the readers return to bluesky documents (event-model ``compose_run``) stored
in Tiled.
"""

from .flyxrf import DEAD_TIME_FORMULA, FlyXRF, FlyXRFFormatError, read_flyxrf
from .mda import (
    EXTRA_PV_TYPES,
    Detector,
    ExtraPV,
    MDAFile,
    MDAFormatError,
    Positioner,
    ScanDimension,
    Trigger,
    read_mda,
)

__all__ = [
    "DEAD_TIME_FORMULA",
    "EXTRA_PV_TYPES",
    "Detector",
    "ExtraPV",
    "FlyXRF",
    "FlyXRFFormatError",
    "MDAFile",
    "MDAFormatError",
    "Positioner",
    "ScanDimension",
    "Trigger",
    "read_flyxrf",
    "read_mda",
]
