"""The EPICS fly-scan controller: map waveforms, and spectra written by the IOC like an areaDetector HDF5 plugin."""

from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path

import numpy as np
from event_model import compose_stream_resource
from event_model.documents.stream_datum import StreamRange
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import DeviceStatus

from ..physics.microprobe import check_dwell, check_field, check_travel
from ..storage.hdf5 import HDF5_MIMETYPE
from ._sim_common import probe_geometry
from .epics_signals import COMMAND_TIMEOUT, MapSignal
from .spec import map_components, with_units

logger = logging.getLogger(__name__)


class FlyHDF5(Device):
    """The scanner's HDF5 writer, as an areaDetector HDF5 plugin (Stream mode, SWMR)."""

    file_path = Cpt(EpicsSignal, "FilePath", string=True, kind="omitted")
    file_name = Cpt(EpicsSignal, "FileName", string=True, kind="omitted")
    full_file_name = Cpt(EpicsSignalRO, "FullFileName_RBV", string=True, kind="omitted")
    file_path_exists = Cpt(EpicsSignalRO, "FilePathExists_RBV", kind="omitted")
    capture = Cpt(EpicsSignal, "Capture", put_complete=True, kind="omitted")
    capture_rbv = Cpt(EpicsSignalRO, "Capture_RBV", kind="omitted")
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", kind="omitted")
    dataset_name = Cpt(EpicsSignalRO, "DatasetName_RBV", string=True, kind="omitted")
    frame_shape = Cpt(EpicsSignalRO, "FrameShape_RBV", kind="omitted")
    chunk_shape = Cpt(EpicsSignalRO, "ChunkShape_RBV", kind="omitted")
    swmr_mode = Cpt(EpicsSignalRO, "SWMRMode_RBV", kind="omitted")
    write_status = Cpt(EpicsSignalRO, "WriteStatus", string=True, kind="omitted")
    write_message = Cpt(EpicsSignalRO, "WriteMessage", string=True, kind="omitted")

    def check_written(self, action: str) -> None:
        if self.write_status.get(use_monitor=False) != "Write OK":
            raise RuntimeError(f"{self.name}: {action} failed in the IOC: {self.write_message.get(use_monitor=False)}")


class FlyRaster(map_components("EpicsMapSignals", MapSignal, pv_prefix="Map:")):  # maps: devices/spec.py
    """Fly-scan controller: one triggered acquisition is one whole 2D map.

    Configuration: ``num_rows``, ``num_cols``, ``pixel_size`` (m), ``dwell``
    (s per pixel), ``travel`` (m, half-range of the scanning stage),
    ``save_spectra``. ``trigger()`` puts ``Acquire`` = 1 and completes when
    the IOC has published the map (put completion; a failure or an abort
    reported in ``DetectorState_RBV`` fails the status). ``read()`` returns
    the maps as (ny, nx) arrays and ``map_dwell``. Staged with
    ``save_spectra``, the IOC writes the full spectra (ny, nx, n_channels)
    of every map into one HDF5 file (``hdf5``); the device announces them
    with StreamResource/StreamDatum documents (data key ``<name>_spectra``),
    as the simulated ``FlyRaster`` does.

    Parameters
    ----------
    hdf5_directory : path, optional
        Folder for the HDF5 files, as the IOC sees it (it must lie under the
        IOC's ``--data-dir``); default: the IOC's own ``FilePath``.
    """

    num_rows = Cpt(EpicsSignal, "NumRows", kind="config")
    num_cols = Cpt(EpicsSignal, "NumCols", kind="config")
    pixel_size = Cpt(EpicsSignal, "PixelSize", kind="config")  # m
    dwell = Cpt(EpicsSignal, "Dwell", kind="config")  # s per pixel
    travel = Cpt(EpicsSignal, "Travel", kind="config")  # m, half-range of the scanning stage
    save_spectra = Cpt(EpicsSignal, "SaveSpectra", kind="config")

    map_dwell = Cpt(EpicsSignalRO, "MapDwell_RBV", kind="normal")  # s per pixel of the last map

    acquire = Cpt(EpicsSignal, "Acquire", kind="omitted")
    acquire_busy = Cpt(EpicsSignalRO, "Acquire_RBV", kind="omitted")
    detector_state = Cpt(EpicsSignalRO, "DetectorState_RBV", string=True, kind="omitted")
    status_message = Cpt(EpicsSignalRO, "StatusMessage_RBV", string=True, kind="omitted")
    map_shape = Cpt(EpicsSignalRO, "MapShape_RBV", kind="omitted")
    line_overhead = Cpt(EpicsSignalRO, "LineOverhead_RBV", kind="omitted")  # s per line
    max_pixels = Cpt(EpicsSignalRO, "MaxPixels_RBV", kind="omitted")
    num_channels = Cpt(EpicsSignalRO, "NumChannels_RBV", kind="omitted")
    # the spectra's energy calibration, the mca record's fields: E(i) = CALO + CALS i + CALQ i^2, in EGU
    calibration_offset = Cpt(EpicsSignalRO, "mca1.CALO", kind="omitted")
    calibration_slope = Cpt(EpicsSignalRO, "mca1.CALS", kind="omitted")
    calibration_quadratic = Cpt(EpicsSignalRO, "mca1.CALQ", kind="omitted")
    calibration_units = Cpt(EpicsSignalRO, "mca1.EGU", string=True, kind="omitted")
    hdf5 = Cpt(FlyHDF5, "HDF1:", kind="omitted")

    def __init__(self, *args, hdf5_directory=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hdf5_directory = hdf5_directory
        self.acquired_shape: tuple[int, int] | None = None
        self._stream: dict | None = None  # the open file: StreamResource, datum factory, counts

    # -- configuration ------------------------------------------------------
    def expected_shape(self) -> tuple[int, int]:
        return int(self.num_rows.get()), int(self.num_cols.get())

    @property
    def spectra_key(self) -> str:
        return f"{self.name}_spectra"

    def check_field(self, shape, pixel_size) -> tuple[tuple[int, int], float]:
        """Validate a field (shape, pixel size) against the IOC's map size and the stage travel; normalise it."""
        shape, pixel = check_field(shape, pixel_size)
        most = int(self.max_pixels.get())
        if shape[0] * shape[1] > most:
            raise ValueError(f"{self.name}: a {shape[0]}x{shape[1]} map has {shape[0] * shape[1]} pixels, more "
                             f"than the {most} the IOC's map waveforms hold; use a smaller shape")
        _, map_center, _ = probe_geometry(self)
        check_travel(shape, pixel, map_center, float(self.travel.get()), name=self.name)
        return shape, pixel

    def check_configuration(self) -> None:
        """Raise ValueError for a configured map the stage or the IOC cannot do."""
        self.check_field(self.expected_shape(), self.pixel_size.get())
        check_dwell(self.dwell.get())

    def map_duration(self, shape, dwell) -> float:
        """Seconds to fly one map."""
        ny, nx = shape
        return ny * (nx * float(dwell) + float(self.line_overhead.get()))

    # -- staging and external data -------------------------------------------
    def stage(self):
        # refuse a bad configuration before the run opens a file or emits a document
        self.check_configuration()
        staged = super().stage()
        try:
            if self.save_spectra.get():
                self._open_file()
        except BaseException:
            super().unstage()
            raise
        return staged

    def _open_file(self) -> None:
        hdf = self.hdf5
        if self.hdf5_directory is not None:
            hdf.file_path.put(str(self.hdf5_directory), wait=True)
            hdf.check_written(f"FilePath {self.hdf5_directory}")
        hdf.file_name.put(self.name, wait=True)
        if hdf.capture_rbv.get(use_monitor=False):
            # a file left open (a session that died while staged): close it, this run gets its own
            hdf.capture.set(0, timeout=COMMAND_TIMEOUT).wait()
        hdf.capture.set(1, timeout=COMMAND_TIMEOUT).wait()
        if not hdf.capture_rbv.get(use_monitor=False):
            hdf.check_written("opening the HDF5 file")
            raise RuntimeError(f"{self.name}: the IOC did not start capturing spectra")
        path = Path(hdf.full_file_name.get(use_monitor=False))
        frame = [int(n) for n in hdf.frame_shape.get(use_monitor=False)]
        bundle = compose_stream_resource(
            mimetype=HDF5_MIMETYPE,
            uri=path.as_uri(),
            data_key=self.spectra_key,
            parameters={
                "dataset": hdf.dataset_name.get(use_monitor=False),
                "chunk_shape": [int(n) for n in hdf.chunk_shape.get(use_monitor=False)],
                "swmr": bool(hdf.swmr_mode.get(use_monitor=False)),
            },
        )
        self._stream = {"resource": bundle.stream_resource_doc, "compose_datum": bundle.compose_stream_datum,
                        "frame": frame, "path": path, "count": 0, "announced": 0, "emitted": False}

    def unstage(self):
        try:
            if self._stream is not None:
                self.hdf5.capture.set(0, timeout=COMMAND_TIMEOUT).wait()
        finally:
            self._stream = None
        return super().unstage()

    def describe(self):
        desc = super().describe()
        if self._stream is not None:
            desc[self.spectra_key] = {
                "source": f"PV:{self.hdf5.full_file_name.pvname}",
                "shape": list(self._stream["frame"]),
                "dtype": "array",
                "dtype_numpy": np.dtype("<u4").str,
                "external": "STREAM:",
                "energy_calibration": self.energy_calibration(),
            }
        return with_units(desc, self)

    def energy_calibration(self) -> dict:
        """``{offset, gain, quadratic, units}`` (keV) of the spectra's channels, from the mca record's
        CALO/CALS/CALQ/EGU: the data-key metadata the simulated FlyRaster records (:func:`.spec.mca_description`)."""
        units = str(self.calibration_units.get(use_monitor=False)).strip()
        scale = {"keV": 1.0, "eV": 1e-3}.get(units)
        if scale is None:
            raise ValueError(f"{self.calibration_units.pvname} = {units!r}; allowed: 'keV' or 'eV' (the units "
                             "of the MCA's energy calibration); set the mca record's EGU")
        values = [float(s.get(use_monitor=False)) * scale
                  for s in (self.calibration_offset, self.calibration_slope, self.calibration_quadratic)]
        return {"offset": values[0], "gain": values[1], "quadratic": values[2], "units": "keV"}

    def collect_asset_docs(self, index=None):
        """StreamResource once per file, then a StreamDatum for the frames not yet announced."""
        stream = self._stream
        if stream is None:
            return
        stop = stream["count"] if index is None else min(int(index), stream["count"])
        if stop <= stream["announced"]:
            return
        if not stream["emitted"]:
            stream["emitted"] = True
            yield "stream_resource", copy.deepcopy(stream["resource"])
        datum = stream["compose_datum"](indices=StreamRange(start=stream["announced"], stop=stop))
        stream["announced"] = stop
        yield "stream_datum", datum

    def get_index(self) -> int:
        return self._stream["count"] if self._stream is not None else 0

    # -- acquisition ----------------------------------------------------------
    def trigger(self):
        """Fly one map at the current stage positions; the status completes when the IOC has published it.

        A map aborted by :meth:`pause` (a RunEngine pause or suspension) is
        thrown away by the IOC, and the RunEngine repeats it after resuming.
        Its status then completes without error (as the simulated twin's):
        the RunEngine has given up on it, and a failure reported later would
        fail the resumed run.
        """
        self.check_configuration()
        status = DeviceStatus(self)

        def finish():
            try:
                state = self.detector_state.get(use_monitor=False)
                message = self.status_message.get(use_monitor=False)
                if state == "Aborted":
                    logger.warning("%s: the map was interrupted and thrown away (%s)", self.name, message)
                    self.acquired_shape = None
                    status.set_finished()
                    return
                if state != "Idle":
                    raise RuntimeError(f"{self.name}: the map failed in the IOC ({state}): {message}")
                self.acquired_shape = tuple(int(n) for n in self.map_shape.get(use_monitor=False))
                if self._stream is not None:
                    self._stream["count"] = int(self.hdf5.num_captured.get(use_monitor=False))
            except Exception as exc:  # noqa: BLE001 - reported through the status, never lost
                logger.error("%s: acquisition failed: %s", self.name, exc)
                status.set_exception(exc)
            else:
                status.set_finished()

        def put_done(*args, **kwargs):
            # off the control layer's callback thread: finish() makes blocking CA reads
            threading.Thread(target=finish, name=f"{self.name}-done", daemon=True).start()

        self.acquire.put(1, use_complete=True, callback=put_done)
        return status

    def pause(self):
        """Abort the map in flight (the RunEngine calls this on a pause or suspension)."""
        if self.connected and self.acquire_busy.get(use_monitor=False):
            self.acquire.put(0)

    def resume(self):
        pass

    def stop(self, *, success=False):
        self.pause()
