"""Storage: external HDF5 writers and Tiled (embedded server, TiledWriter, readers).

hdf5   :class:`StreamHDF5Writer`, per-event arrays in an HDF5 file described by
       StreamResource/StreamDatum documents (no ophyd dependency)
tiled  :func:`embedded_server`, :func:`runs_container`, :func:`make_tiled_writer`,
       :func:`load_tomo`, :func:`load_theta`, :func:`load_spectra`, :func:`replay_backup`
"""

from .hdf5 import HDF5_MIMETYPE, StreamHDF5Writer
from .tiled import (
    TomoData,
    default_data_dir,
    embedded_server,
    load_spectra,
    load_theta,
    load_tomo,
    make_tiled_writer,
    read_backup,
    replay_backup,
    replay_directory,
    runs_container,
    v1_broker,
)

__all__ = [
    "HDF5_MIMETYPE",
    "StreamHDF5Writer",
    "TomoData",
    "default_data_dir",
    "embedded_server",
    "load_spectra",
    "load_theta",
    "load_tomo",
    "make_tiled_writer",
    "read_backup",
    "replay_backup",
    "replay_directory",
    "runs_container",
    "v1_broker",
]
