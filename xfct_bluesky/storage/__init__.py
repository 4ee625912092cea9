"""Storage: external HDF5 writers and Tiled (embedded server, TiledWriter, readers).

hdf5   :class:`StreamHDF5Writer`, per-event arrays in an HDF5 file described by
       StreamResource/StreamDatum documents (no ophyd dependency)
folder  :func:`default_data_dir`, :func:`prepare_data_folder` (checks a data folder, rewrites a moved
        folder's catalog), :class:`DataFolderError`
server  :func:`embedded_server`, :func:`runs_container` (the scans, "raw"), :func:`derived_container`
        (the runs derived from them, "derived"), :func:`derived_runs`
readonly :class:`ReadOnlyTiledServer` (what :func:`embedded_server` starts on a folder it may not write)
writing :func:`make_tiled_writer` (with a JSON Lines backup), :func:`read_backup`,
        :func:`replay_backup`, :func:`replay_directory`
journal :class:`RunJournal`, :class:`JournaledWriter` (each document on disk before Tiled sees
        it), :func:`recover_journal` (runs whose process died, into Tiled)
resume  :func:`find_run` (a run by uid, scan_id or index), :func:`angles_to_resume` (what a resumed tomography still takes)
reading :func:`load_tomo` (a :class:`TomoData`, its :class:`Maps` by quantity name), :func:`load_theta`, :func:`load_spectra`, :func:`v1_broker`
"""

from .folder import DataFolderError, default_data_dir
from .hdf5 import HDF5_MIMETYPE, StreamHDF5Writer
from .journal import JournaledWriter, RunJournal, recover_journal
from .reading import Maps, TomoData, load_spectra, load_theta, load_tomo, v1_broker
from .resume import angles_to_resume, find_run
from .server import derived_container, derived_runs, embedded_server, runs_container
from .writing import make_tiled_writer, read_backup, replay_backup, replay_directory

__all__ = [
    "HDF5_MIMETYPE",
    "DataFolderError",
    "JournaledWriter",
    "Maps",
    "RunJournal",
    "StreamHDF5Writer",
    "TomoData",
    "angles_to_resume",
    "default_data_dir",
    "derived_container",
    "derived_runs",
    "embedded_server",
    "find_run",
    "load_spectra",
    "load_theta",
    "load_tomo",
    "make_tiled_writer",
    "read_backup",
    "recover_journal",
    "replay_backup",
    "replay_directory",
    "runs_container",
    "v1_broker",
]
