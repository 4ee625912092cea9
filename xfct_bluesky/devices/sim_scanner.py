"""The simulated fly-scan raster: one triggered acquisition is one whole 2D map, spectra to HDF5."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ophyd import Component as Cpt
from ophyd import Signal
from ophyd.status import DeviceStatus

from ..physics.microprobe import check_travel
from ._sim_common import beam_on, mca_statistics, probe_geometry
from .signals import ArraySignal
from .spec import MAP_DTYPES, map_components, mca_description, mca_hdf5_metadata, with_units

logger = logging.getLogger(__name__)


class FlyRaster(map_components("SimMapSignals", ArraySignal)):  # the maps: one spec, devices/spec.py
    """Fly-scan raster: one triggered acquisition is one whole 2D map.

    Configuration: ``num_rows``, ``num_cols``, ``pixel_size`` (m), ``dwell``
    (s per pixel), ``travel`` (m, half-range of the scanning stage),
    ``save_spectra``. ``read()`` returns the maps (DPC x/y/diagonal,
    transmission, I0, quadrants, live and real time, ICR and OCR, one ROI
    map per element) and
    ``map_dwell``, the dwell the map was acquired with; the
    full spectra (ny, nx, n_channels) are written to an HDF5 file under
    ``hdf5_directory`` and announced with StreamResource/StreamDatum
    documents (data key ``<name>_spectra``).
    """

    num_rows = Cpt(Signal, value=32, kind="config")
    num_cols = Cpt(Signal, value=32, kind="config")
    pixel_size = Cpt(Signal, value=300e-9, kind="config")  # m
    dwell = Cpt(Signal, value=3e-3, kind="config")  # s per pixel
    travel = Cpt(Signal, value=100e-6, kind="config")  # m, half-range of the scanning stage
    save_spectra = Cpt(Signal, value=True, kind="config")

    map_dwell = Cpt(Signal, value=0.0, kind="normal")  # s per pixel of the last map (readback)

    def __init__(self, *args, hdf5_directory=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hdf5_directory = hdf5_directory
        self._writer = None
        self._acquiring = threading.Lock()
        self._interrupt: threading.Event | None = None
        self._unread = False  # a map published but not read into an event yet
        self.last_result = None

    # -- configuration ------------------------------------------------------
    def expected_shape(self) -> tuple[int, int]:
        return int(self.num_rows.get()), int(self.num_cols.get())

    @property
    def spectra_key(self) -> str:
        return f"{self.name}_spectra"

    def check_field(self, shape, pixel_size) -> tuple[tuple[int, int], float]:
        """Validate a field (shape, pixel size) against memory and stage travel; return it normalised."""
        sim = self.root.simulator
        shape, pixel, _ = sim.check_map(shape, pixel_size, 1e-3, spectra=bool(self.save_spectra.get()))
        _, map_center, _ = probe_geometry(self)
        check_travel(shape, pixel, map_center, float(self.travel.get()), name=self.name)
        return shape, pixel

    def check_configuration(self) -> None:
        """Raise ValueError for a configured map the stage or the memory cannot do."""
        self.check_field(self.expected_shape(), self.pixel_size.get())
        self.root.simulator.check_map(self.expected_shape(), self.pixel_size.get(), self.dwell.get(),
                                      spectra=bool(self.save_spectra.get()))

    def map_duration(self, shape, dwell) -> float:
        """Seconds to fly one map."""
        return self.root.simulator.map_duration(shape, dwell)

    # -- staging and external data -------------------------------------------
    def stage(self):
        # refuse a bad configuration before the run opens a file or emits a document
        self.check_configuration()
        staged = super().stage()
        if self.save_spectra.get():
            from ..storage.folder import ASSETS_SUBDIR, default_data_dir
            from ..storage.hdf5 import StreamHDF5Writer

            directory = Path(self.hdf5_directory or default_data_dir() / ASSETS_SUBDIR)
            directory.mkdir(parents=True, exist_ok=True)
            ny, nx = self.expected_shape()
            vortex = self.root.simulator.vortex
            attrs, datasets = mca_hdf5_metadata(mca_description(vortex), vortex.n_channels)
            self._writer = StreamHDF5Writer(
                directory, data_key=self.spectra_key, dtype="<u4",
                frame_shape=(ny, nx, vortex.n_channels), source="sim://xfct-bluesky/vortex",
                attrs=attrs, datasets=datasets,
            )
            self._writer.open(name=self.name)
        return staged

    def unstage(self):
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            self._writer = None
        return super().unstage()

    def describe(self):
        desc = super().describe()
        mca = mca_description(self.root.simulator.vortex)
        if self._writer is not None:
            desc.update(self._writer.describe_key())
            desc[self.spectra_key].update(mca)  # how channels map to keV, the ROIs, the dead time
        for sym, window in mca["roi_windows"].items():  # each ROI map says its window, spectra saved or not
            key = f"{self.name}_{sym}"
            if key in desc:
                desc[key]["roi_window"] = window
        for key in ("live_time", "real_time", "icr", "ocr"):
            if f"{self.name}_{key}" in desc:
                desc[f"{self.name}_{key}"]["dead_time"] = mca["dead_time"]
        return with_units(desc, self)

    def collect_asset_docs(self, index=None):
        if self._writer is not None:
            yield from self._writer.collect_asset_docs(index)

    def get_index(self) -> int:
        return self._writer.get_index() if self._writer is not None else 0

    # -- acquisition ----------------------------------------------------------
    def trigger(self):
        """Fly one map at the current stage positions; maps are published when it completes.

        A map interrupted by :meth:`pause` (a RunEngine pause or suspension,
        e.g. a beam dump) or :meth:`stop` is thrown away: nothing is published
        or written, and the RunEngine repeats it after resuming. Its status
        then completes without error, so that a status the RunEngine has
        already given up on cannot fail the run later.
        """
        self.check_configuration()
        status = DeviceStatus(self)
        theta, map_center, defocus = probe_geometry(self)
        beam = beam_on(self)
        interrupt = self._interrupt = threading.Event()
        t0 = time.monotonic()

        def acquire():
            try:
                with self._acquiring:
                    res = self._simulate(theta, map_center, defocus, beam)
                    if self.root.realtime:
                        interrupt.wait(max(res.duration - (time.monotonic() - t0), 0.0))
                    if interrupt.is_set():
                        self.root.simulator.truth.discard_last()
                        logger.warning("%s: the map at theta=%.3f deg was interrupted and thrown away",
                                       self.name, theta)
                    else:
                        self._publish(res)
                        self._unread = True
            except Exception as exc:  # reported through the status, never lost
                logger.exception("%s: acquisition failed", self.name)
                status.set_exception(exc)
            else:
                status.set_finished()

        threading.Thread(target=acquire, name=f"{self.name}-fly", daemon=True).start()
        return status

    def pause(self):
        """Interrupt the map in flight (the RunEngine calls this on a pause or suspension).

        A map finished but not yet read is dropped from the ground truth too:
        the RunEngine rewinds and takes it again, so ``truth.offsets`` keeps
        one row per map that reaches an event.
        """
        if self._interrupt is not None:
            self._interrupt.set()
        with self._acquiring:  # let a map being computed see the interrupt and throw itself away
            if self._unread:
                self.root.simulator.truth.discard_last()
                self._unread = False

    def read(self):
        reading = super().read()
        self._unread = False
        return reading

    def resume(self):
        pass

    def stop(self, *, success=False):
        self.pause()

    def _simulate(self, theta, map_center, defocus, beam):
        sim = self.root.simulator
        res = sim.simulate_map(self.expected_shape(), self.pixel_size.get(), self.dwell.get(), theta,
                               map_center=map_center, defocus=defocus, spectra=self._writer is not None,
                               beam_on=beam)
        res.maps.update(mca_statistics(sim, res, beam))  # real time, ICR, OCR: the processor's statistics
        return res

    def _publish(self, res):
        ts = time.time()
        self.map_dwell.put(float(res.dwell), timestamp=ts)
        for key in MAP_DTYPES:  # every map of the spec
            getattr(self, key).put(res.maps[key], timestamp=ts)
        if self._writer is not None:
            self._writer.write(res.spectra)
        res.spectra = None  # on disk; do not keep 100s of MB in memory
        self.last_result = res
