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
maps_hdf5 :func:`read_maps_hdf5` -> :class:`MAPSFile`: XRF-Maps / MAPS analysed
       HDF5 (``/MAPS``, and the legacy v9 names): spectra, scalers (I0, DPC),
       element maps by fitting routine, axes, theta, extra PVs, quantification
pyxrf  :func:`read_pyxrf` -> :class:`PyXRFFile`: NSLS-II PyXRF HDF5
       (``xrfmap``): summed and per-channel spectra, positions, scalers,
       fitted and ROI maps, scan metadata
dxchange :func:`read_dxchange` -> :class:`DXchangeFile`: Data Exchange HDF5
       (``/exchange``, tomopy): projections, flats, darks, theta (degrees),
       measurement and process values with units

runs   :func:`documents_from_file`: one file as the event-model documents of one
       bluesky run (format detected from the content, every document
       schema-validated; the start document's ``quantities`` maps the names of
       :mod:`xfct_bluesky.quantities` to data keys); :func:`import_files`: files into a Tiled
       runs container through a TiledWriter, files already there skipped, several
       maps as one tomography with ``tomo=True``; the per-format field tables are
       in ``_mapping``
"""

from .dxchange import (
    DXchangeFile,
    DXchangeFormatError,
    DXValue,
    read_dxchange,
    write_dxchange,
)
from .flyxrf import DEAD_TIME_FORMULA, FlyXRF, FlyXRFFormatError, read_flyxrf
from .maps_hdf5 import (
    EnergyCalibration,
    MAPSChannels,
    MAPSExtraPV,
    MAPSFile,
    MAPSFormatError,
    MAPSStandard,
    read_maps_hdf5,
    write_maps_hdf5,
)
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
from .pyxrf import PyXRFFile, PyXRFFormatError, read_pyxrf, write_pyxrf
from .runs import (
    FORMATS,
    ImportFormatError,
    ImportResult,
    detect_format,
    documents_from_file,
    import_files,
)

__all__ = [
    "DEAD_TIME_FORMULA",
    "EXTRA_PV_TYPES",
    "FORMATS",
    "DXValue",
    "DXchangeFile",
    "DXchangeFormatError",
    "Detector",
    "EnergyCalibration",
    "ExtraPV",
    "FlyXRF",
    "FlyXRFFormatError",
    "ImportFormatError",
    "ImportResult",
    "MAPSChannels",
    "MAPSExtraPV",
    "MAPSFile",
    "MAPSFormatError",
    "MAPSStandard",
    "MDAFile",
    "MDAFormatError",
    "Positioner",
    "PyXRFFile",
    "PyXRFFormatError",
    "ScanDimension",
    "Trigger",
    "detect_format",
    "documents_from_file",
    "import_files",
    "read_dxchange",
    "read_flyxrf",
    "read_maps_hdf5",
    "read_mda",
    "read_pyxrf",
    "write_dxchange",
    "write_maps_hdf5",
    "write_pyxrf",
]
