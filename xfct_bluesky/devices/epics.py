"""EPICS microprobe: Ophyd devices over Channel Access, twins of :mod:`xfct_bluesky.devices.sim`.

Every class takes a PV prefix; the PV suffixes live in the classes. The
component names (and the data keys, dtypes and shapes of ``describe()``) are
those of the simulated classes, so the plans of :mod:`xfct_bluesky.plans`
run unchanged on either and store the same-looking data:

========================  ==================================================
``RotationStage``         theta (deg), an ``ophyd.EpicsMotor`` (``<P>Rot``)
``ZonePlateStage``        x, y, z ``EpicsMotor`` axes, um (``<P>ZP:X`` ...)
``Shutter``               ``set('open'/'close')``; ``state`` (``<P>Shtr:``)
``VortexMCA``             an ``ophyd.mca.EpicsMCA`` (XIA mca record
                          ``<P>MCA:mca1``) with the simulated twin's names:
                          spectrum, preset/elapsed real time, live time, dead
                          time, one ROI per element; its dxp parameters as
                          ``dxp`` (``ophyd.mca.EpicsDXP``, ``<P>MCA:dxp1:``)
``SegmentedDPCDetector``  quadrant counts q1..q4, total, DPC x, y, diagonal
``FlyRaster``             the fly-scan controller (``<P>Fly:``): one trigger
                          is one 2D map; maps are flattened waveforms reshaped
                          in ``read()``; the IOC writes the full spectra to
                          HDF5 as an areaDetector HDF5 plugin does
                          (``<P>Fly:HDF1:``) and the device announces them with
                          StreamResource/StreamDatum, as the simulated one does
``Microprobe``            rotation, zone_plate, shutter, mca, dpc, scanner
========================  ==================================================

Build one with :func:`make_epics_microprobe`; ``python -m xfct_bluesky.ioc``
serves all these PVs from the physics simulator (see :mod:`xfct_bluesky.ioc`).

ophyd must use a control layer: :func:`use_control_layer` (called by the
factory) selects ophyd's caproto layer unless ``$OPHYD_CONTROL_LAYER`` says
otherwise. Channel Access finds the IOC through ``EPICS_CA_ADDR_LIST``
(``127.0.0.1`` with ``EPICS_CA_AUTO_ADDR_LIST=NO`` for an IOC on loopback).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from pathlib import Path

import numpy as np
from event_model import compose_stream_resource
from event_model.documents.stream_datum import StreamRange
from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO
from ophyd import DynamicDeviceComponent as DDC
from ophyd import FormattedComponent as FCpt
from ophyd.mca import ROI, EpicsDXP, EpicsMCA
from ophyd.status import DeviceStatus

from ..physics._validate import positive, shape2d
from ..physics.specimen import ELEMENT_SYMBOLS
from ..storage.hdf5 import HDF5_MIMETYPE
from ._sim_common import MAP_DTYPES
from .checks import check_position, check_travel

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PREFIX",
    "FlyRaster",
    "Microprobe",
    "RotationStage",
    "SegmentedDPCDetector",
    "Shutter",
    "VortexMCA",
    "ZonePlateStage",
    "make_epics_microprobe",
    "use_control_layer",
]

DEFAULT_PREFIX = "XFCT:"
#: Seconds to wait for a command whose put completes quickly (shutter, file open/close).
COMMAND_TIMEOUT = 30.0


def use_control_layer(layer: str | None = None) -> str:
    """Make ophyd talk Channel Access through ``layer``; return its name.

    Parameters
    ----------
    layer : {"caproto", "pyepics"}, optional
        Default ``$OPHYD_CONTROL_LAYER``, else ``"caproto"`` (pure Python;
        pyepics needs libca). Call it before building EPICS devices: a
        signal keeps the layer it was built with.
    """
    wanted = (layer or os.environ.get("OPHYD_CONTROL_LAYER") or "caproto").lower()
    if wanted not in ("caproto", "pyepics"):
        raise ValueError(f"control layer {wanted!r}: allowed 'caproto' or 'pyepics'")
    import ophyd

    if ophyd.get_cl().name != wanted:
        ophyd.set_cl(wanted)
    return wanted


# ---------------------------------------------------------------- signals ---
def _from_wire(raw, dtype: np.dtype) -> np.ndarray:
    """Counts travel as DBR_LONG bit patterns of uint32, floats as DBR_FLOAT; undo that."""
    arr = np.asarray(raw)
    if dtype.kind == "u":
        return arr.astype("<i4").view(dtype)
    return arr.astype(dtype)


class MapSignal(EpicsSignalRO):
    """One map: a flattened (ny * nx) waveform, read back as a (ny, nx) array of a fixed dtype.

    The shape is the one of the last acquisition (the parent's
    ``acquired_shape``), else the configured one; ``describe()`` gives the
    configured shape, the dtype as ``dtype_numpy``, as the simulated
    ``ArraySignal`` does. Read with a CA get (not a monitor), so a read after
    the acquisition completes sees the new map.
    """

    def __init__(self, read_pv, *, dtype, **kwargs):
        kwargs.setdefault("auto_monitor", False)
        super().__init__(read_pv, **kwargs)
        self._np_dtype = np.dtype(dtype)

    @property
    def np_dtype(self) -> np.dtype:
        return self._np_dtype

    def get(self, **kwargs):
        flat = _from_wire(super().get(**kwargs), self._np_dtype).ravel()
        if flat.size == 0:
            return np.zeros((0, 0), dtype=self._np_dtype)
        for shape in (getattr(self.parent, "acquired_shape", None), self.parent.expected_shape()):
            if shape is not None and int(np.prod(shape)) == flat.size:
                return flat.reshape(shape)
        raise ValueError(f"{self.name}: the waveform {self.pvname} has {flat.size} values, which is no "
                         f"{self.parent.expected_shape()} map; acquire a map with the current configuration")

    def describe(self):
        return {self.name: {"source": f"PV:{self.pvname}", "dtype": "array",
                            "shape": list(self.parent.expected_shape()), "dtype_numpy": self._np_dtype.str}}


class SpectrumSignal(EpicsSignalRO):
    """An unsigned-count waveform (the mca record's VAL), read as ``<u4`` of the parent's ``num_channels``."""

    def __init__(self, read_pv, *, dtype="<u4", **kwargs):
        kwargs.setdefault("auto_monitor", False)
        super().__init__(read_pv, **kwargs)
        self._np_dtype = np.dtype(dtype)

    def get(self, **kwargs):
        return _from_wire(super().get(**kwargs), self._np_dtype)

    def describe(self):
        n = int(self.parent.num_channels.get())
        return {self.name: {"source": f"PV:{self.pvname}", "dtype": "array", "shape": [n],
                            "dtype_numpy": self._np_dtype.str}}


class CountSignalRO(EpicsSignalRO):
    """A count served as DBR_DOUBLE (exact up to 2**53, as mca ROI sums are): read as int, described as integer."""

    def get(self, **kwargs):
        value = super().get(**kwargs)
        return round(float(value))

    def describe(self):
        desc = super().describe()
        desc[self.name]["dtype"] = "integer"
        desc[self.name].pop("dtype_numpy", None)
        return desc


# ----------------------------------------------------------------- stages ---
class StageMotor(EpicsMotor):
    """An ``EpicsMotor`` whose refusals name the value, the limits and the fix, as the simulated motor's."""

    def check_value(self, pos) -> None:
        check_position(self, pos)


class RotationStage(StageMotor):
    """Rotation stage, theta in degrees (a motor record)."""


class ZonePlateStage(Device):
    """Zone-plate stage: x, y move the beam (um), z defocuses it (um)."""

    x = Cpt(StageMotor, "X", kind="normal")
    y = Cpt(StageMotor, "Y", kind="normal")
    z = Cpt(StageMotor, "Z", kind="normal")


class Shutter(Device):
    """Fast shutter: ``set('open')`` / ``set('close')``; ``state`` reads 'open' or 'closed'."""

    state = Cpt(EpicsSignalRO, "State_RBV", string=True, kind="normal")
    command = Cpt(EpicsSignal, "Cmd", string=True, put_complete=True, kind="omitted")

    def set(self, value):
        value = str(value).lower()
        if value not in ("open", "close", "closed"):
            raise ValueError(f"{self.name}: {value!r} is not a shutter command; use 'open' or 'close'")
        return self.command.set("open" if value == "open" else "close", timeout=COMMAND_TIMEOUT)

    @property
    def is_open(self) -> bool:
        return self.state.get(use_monitor=False) == "open"


class BeamParameters(Device):
    """Energy, flux and focal spot of the beam (read for the plans' metadata)."""

    energy = Cpt(EpicsSignalRO, "Energy_RBV", kind="config")  # keV
    flux = Cpt(EpicsSignalRO, "Flux_RBV", kind="config")  # photons/s
    spot_fwhm_h = Cpt(EpicsSignalRO, "SpotFWHMH_RBV", kind="config")  # m
    spot_fwhm_v = Cpt(EpicsSignalRO, "SpotFWHMV_RBV", kind="config")  # m


# ------------------------------------------------------------- detectors ---
class VortexROI(ROI):
    """An mca record ROI with the kinds of the simulated twin's ROI."""

    label = Cpt(EpicsSignal, "NM", kind="config")
    count = Cpt(CountSignalRO, "", kind="hinted")
    lo_chan = Cpt(EpicsSignal, "LO", kind="config")
    hi_chan = Cpt(EpicsSignal, "HI", kind="config")
    net_count = Cpt(EpicsSignalRO, "N", lazy=True, kind="omitted")
    preset_count = Cpt(EpicsSignal, "P", lazy=True, kind="omitted")
    is_preset = Cpt(EpicsSignal, "IP", lazy=True, kind="omitted")
    bkgnd_chans = Cpt(EpicsSignal, "BG", lazy=True, kind="omitted")


class VortexMCA(EpicsMCA):
    """The Vortex on an XIA mca record (prefix: the record, e.g. ``XFCT:MCA:mca1``).

    ``trigger()`` puts ``EraseStart`` and completes when the IOC reports the
    acquisition done (put completion); ``read()`` gives the spectrum
    (``<u4``, ``num_channels``), the elapsed times, the dead time (%) and one
    ROI count per element, named ``<mca>_<element>`` as in the simulation.
    The dxp parameters (``dxp``, ophyd's ``EpicsDXP``) live beside the
    record: ``<system>dxp1:`` for the record ``<system>mca1``.
    """

    preset_real_time = Cpt(EpicsSignal, ".PRTM", kind="config")
    elapsed_real_time = Cpt(EpicsSignalRO, ".ERTM", kind="normal")
    elapsed_live_time = Cpt(EpicsSignalRO, ".ELTM", kind="normal")
    dead_time = Cpt(EpicsSignalRO, ".DTIM", kind="normal")  # percent
    spectrum = Cpt(SpectrumSignal, ".VAL", kind="normal")
    num_channels = Cpt(EpicsSignalRO, ".NUSE", kind="omitted")
    rois = DDC({f"roi{i}": (VortexROI, f".R{i}", {}) for i in range(len(ELEMENT_SYMBOLS))}, kind="normal")
    erase_start = Cpt(EpicsSignal, "EraseStart", trigger_value=1, put_complete=True, kind="omitted")
    dxp = FCpt(EpicsDXP, "{_dxp_prefix}", kind="omitted")

    def __init__(self, prefix="", **kwargs):
        system, _, record = prefix.rpartition("mca")
        self._dxp_prefix = f"{system}dxp{record}:" if record.isdigit() else f"{prefix}dxp1:"
        super().__init__(prefix, **kwargs)
        for i, sym in enumerate(ELEMENT_SYMBOLS):
            getattr(self.rois, f"roi{i}").count.name = f"{self.name}_{sym}"

    def trigger(self):
        preset = self.preset_real_time.get()
        positive("preset_real_time", preset, fix="Set the counting time in seconds, e.g. 1.", unit=" s")
        return self.erase_start.set(1)


class SegmentedDPCDetector(Device):
    """Segmented transmission detector: quadrant counts and DPC at one point (put ``Acquire`` and wait)."""

    preset_time = Cpt(EpicsSignal, "PresetTime", kind="config")
    central_stop_ratio = Cpt(EpicsSignalRO, "CentralStopRatio_RBV", kind="config")
    q1 = Cpt(CountSignalRO, "Q1", kind="normal")
    q2 = Cpt(CountSignalRO, "Q2", kind="normal")
    q3 = Cpt(CountSignalRO, "Q3", kind="normal")
    q4 = Cpt(CountSignalRO, "Q4", kind="normal")
    total = Cpt(CountSignalRO, "Total", kind="normal")
    dpc_x = Cpt(EpicsSignalRO, "DPCX", kind="hinted")
    dpc_y = Cpt(EpicsSignalRO, "DPCY", kind="hinted")
    dpc_diag = Cpt(EpicsSignalRO, "DPCDiag", kind="hinted")
    acquire = Cpt(EpicsSignal, "Acquire", put_complete=True, kind="omitted")

    def trigger(self):
        positive("preset_time", self.preset_time.get(), fix="Set the counting time in seconds, e.g. 0.1.",
                 unit=" s")
        return self.acquire.set(1)


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


def _probe_center_m(device) -> tuple[float, float]:
    """Map centre (y, x) in m from the zone-plate stage, as the simulated devices compute it."""
    zp = getattr(device.root, "zone_plate", None)
    if zp is None:
        return 0.0, 0.0
    return zp.y.position * 1e-6, zp.x.position * 1e-6


class FlyRaster(Device):
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
    dpc_x = Cpt(MapSignal, "Map:DPCX", dtype=MAP_DTYPES["dpc_x"], kind="normal")
    dpc_y = Cpt(MapSignal, "Map:DPCY", dtype=MAP_DTYPES["dpc_y"], kind="normal")
    dpc_diag = Cpt(MapSignal, "Map:DPCDiag", dtype=MAP_DTYPES["dpc_diag"], kind="normal")
    transmission = Cpt(MapSignal, "Map:Transmission", dtype=MAP_DTYPES["transmission"], kind="normal")
    i0 = Cpt(MapSignal, "Map:I0", dtype=MAP_DTYPES["i0"], kind="normal")
    q1 = Cpt(MapSignal, "Map:Q1", dtype=MAP_DTYPES["q1"], kind="normal")
    q2 = Cpt(MapSignal, "Map:Q2", dtype=MAP_DTYPES["q2"], kind="normal")
    q3 = Cpt(MapSignal, "Map:Q3", dtype=MAP_DTYPES["q3"], kind="normal")
    q4 = Cpt(MapSignal, "Map:Q4", dtype=MAP_DTYPES["q4"], kind="normal")
    live_time = Cpt(MapSignal, "Map:LiveTime", dtype=MAP_DTYPES["live_time"], kind="normal")
    P = Cpt(MapSignal, "Map:P", dtype=MAP_DTYPES["P"], kind="normal")
    S = Cpt(MapSignal, "Map:S", dtype=MAP_DTYPES["S"], kind="normal")
    Cl = Cpt(MapSignal, "Map:Cl", dtype=MAP_DTYPES["Cl"], kind="normal")
    K = Cpt(MapSignal, "Map:K", dtype=MAP_DTYPES["K"], kind="normal")
    Ca = Cpt(MapSignal, "Map:Ca", dtype=MAP_DTYPES["Ca"], kind="normal")
    Fe = Cpt(MapSignal, "Map:Fe", dtype=MAP_DTYPES["Fe"], kind="normal")
    Cu = Cpt(MapSignal, "Map:Cu", dtype=MAP_DTYPES["Cu"], kind="normal")
    Zn = Cpt(MapSignal, "Map:Zn", dtype=MAP_DTYPES["Zn"], kind="normal")

    acquire = Cpt(EpicsSignal, "Acquire", kind="omitted")
    acquire_busy = Cpt(EpicsSignalRO, "Acquire_RBV", kind="omitted")
    detector_state = Cpt(EpicsSignalRO, "DetectorState_RBV", string=True, kind="omitted")
    status_message = Cpt(EpicsSignalRO, "StatusMessage_RBV", string=True, kind="omitted")
    map_shape = Cpt(EpicsSignalRO, "MapShape_RBV", kind="omitted")
    line_overhead = Cpt(EpicsSignalRO, "LineOverhead_RBV", kind="omitted")  # s per line
    max_pixels = Cpt(EpicsSignalRO, "MaxPixels_RBV", kind="omitted")
    num_channels = Cpt(EpicsSignalRO, "NumChannels_RBV", kind="omitted")
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
        shape = shape2d("shape", shape, fix="Give (ny, nx) in pixels, e.g. (230, 230).")
        pixel = positive("pixel_size", pixel_size, fix="Give the pixel size in metres, e.g. 300e-9.", unit=" m")
        if pixel > 100e-6:
            raise ValueError(f"pixel_size={pixel_size!r} m is larger than 100 um; give metres (300 nm is 300e-9)")
        most = int(self.max_pixels.get())
        if shape[0] * shape[1] > most:
            raise ValueError(f"{self.name}: a {shape[0]}x{shape[1]} map has {shape[0] * shape[1]} pixels, more "
                             f"than the {most} the IOC's map waveforms hold; use a smaller shape")
        center = _probe_center_m(self)
        check_travel(self.name, shape, pixel, center, float(self.travel.get()))
        return shape, pixel

    def check_configuration(self) -> None:
        """Raise ValueError for a configured map the stage or the IOC cannot do."""
        self.check_field(self.expected_shape(), self.pixel_size.get())
        dwell = positive("dwell", self.dwell.get(), fix="Give the per-pixel dwell in seconds, e.g. 3e-3.",
                         unit=" s")
        if dwell > 10:
            raise ValueError(f"dwell={dwell!r} s is above 10 s per pixel; give seconds (3 ms is 3e-3)")

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
            }
        return desc

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


class Microprobe(Device):
    """The scanning XRF microprobe as one Device, over Channel Access."""

    rotation = Cpt(RotationStage, "Rot", kind="normal")
    zone_plate = Cpt(ZonePlateStage, "ZP:", kind="normal")
    shutter = Cpt(Shutter, "Shtr:", kind="normal")
    mca = Cpt(VortexMCA, "MCA:mca1", kind="normal")
    dpc = Cpt(SegmentedDPCDetector, "DPC:", kind="normal")
    scanner = Cpt(FlyRaster, "Fly:", kind="normal")
    #: storage-ring current (mA): the beam-loss suspender watches it; below 1 mA there is no beam
    beam_current = Cpt(EpicsSignalRO, "BeamCurrent", kind="omitted")
    beam = Cpt(BeamParameters, "Beam:", kind="omitted")

    def __init__(self, prefix=DEFAULT_PREFIX, *, hdf5_directory=None, **kwargs):
        super().__init__(prefix, **kwargs)
        self.scanner.hdf5_directory = hdf5_directory

    def beam_parameters(self) -> dict:
        """Energy (keV), flux (photons/s) and spot FWHM (m, [h, v]) for plans' metadata."""
        beam = self.beam
        return {"energy_kev": float(beam.energy.get()), "flux": float(beam.flux.get()),
                "spot_fwhm": [float(beam.spot_fwhm_h.get()), float(beam.spot_fwhm_v.get())]}

    # let bp.count([microprobe]) carry the scanner's external spectra
    def collect_asset_docs(self, index=None):
        yield from self.scanner.collect_asset_docs(index)

    def get_index(self) -> int:
        return self.scanner.get_index()


def make_epics_microprobe(
    prefix: str = DEFAULT_PREFIX,
    *,
    name: str = "microprobe",
    connection_timeout: float = 10.0,
    hdf5_directory=None,
    control_layer: str | None = None,
) -> Microprobe:
    """Connect to the microprobe's IOC (``python -m xfct_bluesky.ioc`` or the real one).

    Parameters
    ----------
    prefix : str
        PV prefix of the microprobe, e.g. ``"XFCT:"``.
    name : str
        Device name (prefix of every data key), as ``make_sim_microprobe``'s.
    connection_timeout : float
        Seconds to wait for every PV to connect.
    hdf5_directory : path, optional
        Folder for the spectra files as the IOC sees it (under its
        ``--data-dir``; it must also be readable by the Tiled server);
        default: the IOC's ``Fly:HDF1:FilePath``.
    control_layer : {"caproto", "pyepics"}, optional
        See :func:`use_control_layer`.

    Returns
    -------
    Microprobe
        with components ``rotation``, ``zone_plate``, ``shutter``, ``mca``,
        ``dpc``, ``scanner`` (and ``beam_current``, ``beam``), connected.

    Raises
    ------
    TimeoutError
        If a PV does not connect in time: the IOC is not running under that
        prefix, or Channel Access does not reach it.
    """
    use_control_layer(control_layer)
    mp = Microprobe(prefix, name=name, hdf5_directory=hdf5_directory)
    try:
        mp.wait_for_connection(timeout=connection_timeout)
    except TimeoutError as exc:
        mp.destroy()
        raise TimeoutError(
            f"the microprobe's PVs under {prefix!r} did not connect within {connection_timeout:g} s ({exc}). "
            f"Is its IOC running (python -m xfct_bluesky.ioc --prefix {prefix})? Channel Access searches "
            f"EPICS_CA_ADDR_LIST={os.environ.get('EPICS_CA_ADDR_LIST', '(unset)')!r}, port "
            f"{os.environ.get('EPICS_CA_SERVER_PORT', '5064')}."
        ) from exc
    return mp
