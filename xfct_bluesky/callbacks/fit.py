"""Live spectrum fitting: each projection's spectra fitted as they arrive, published as a derived run.

:class:`LiveSpectrumFit` is a live callback (:class:`~._base.LiveCallback`):
the RunEngine's thread only copies and queues each document; on the live
worker's thread a ``RunRouter`` gives every run its own state. For a run
whose ``primary`` stream has full spectra (an external data key: the
``spectra`` quantity, or a key ending in ``spectra``; see :func:`spectra_key`):

1. each event's frame is read from the HDF5 file its StreamResource and
   StreamDatum name (or through ``spectra``, e.g. Tiled), summed over the
   detector elements (a data key with an ``element`` dim);
2. the calibration is fitted once per run, on the summed spectra of the first
   projections (as soon as they hold ``calibration_counts``, else at the stop
   with all of them), starting from the energy axis the run records
   (:func:`energy_axis`); or a given :class:`~xfct_bluesky.analysis.fitting.Calibration`
   is used;
3. every projection is then fitted on the frozen basis
   (:func:`~xfct_bluesky.analysis.fitting.fit_spectra`): per element the
   photons of its line family and their standard errors, per pixel the
   Poisson deviance;
4. at the stop document the derived run (``plan_name`` "live_spectrum_fit",
   ``raw_uid``, the elements and the calibration in the start document, one
   ``primary`` event per fitted projection: ``theta``, ``raw_seq_num``,
   ``counts`` and ``sigma`` (elements, ny, nx: the elements stacked in the
   start document's order, the data key's ``channels``; one Tiled node each,
   not two per element, a fifth of the writing time) and ``deviance``
   (ny, nx)) goes whole to each of ``emit``: the
   session's :class:`~._emit.SerialEmitter` into Tiled and, to have them use the
   fitted maps, the :class:`~.alignment.LiveDPCAlignment` and the
   :class:`~.reconstruction.LiveReconstruction` (they read it with
   :class:`FittedMapsReader`).

The same callback fits a stored run after the fact (``xfct-bluesky fit``):
feed it ``run.documents()``, then :meth:`~._base.LiveCallback.wait`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

import numpy as np
from event_model import compose_run, unpack_event_page

from .._warnings import collected
from ..analysis.fitting import (
    BASIC_FREE,
    DEFAULT_FREE,
    METHODS,
    Calibration,
    CalibrationError,
    fit_spectra,
)
from ..analysis.fitting.calibrate import FITTABLE
from ..analysis.fitting.fit import check_hold_background
from ..analysis.fitting.lines import parse_family
from ..analysis.fitting.maps import element_names
from ..quantities import FIT_PLAN, quantities_of, theta_key
from ..validate import integer, one_of, positive
from ._base import LiveCallback, RunState
from ._emit import send_run, sinks_of
from ._worker import LiveWorker

logger = logging.getLogger(__name__)

__all__ = ["CALIBRATION_COUNTS", "FIT_PLAN", "FittedMaps", "FittedMapsReader", "LiveSpectrumFit", "energy_axis",
           "spectra_key"]

#: The calibration is fitted once the summed spectra hold this many counts (else at the stop, on all of them).
CALIBRATION_COUNTS = 1e5
#: Summed counts from which the calibration also fits the tails and the step (DEFAULT_FREE); below, BASIC_FREE.
TAIL_COUNTS = 1e6
#: The spectra source of the simulated microprobe's Vortex (its data key's ``source``).
SIM_SOURCE = "sim://xfct-bluesky/vortex"
#: Fitted runs kept for raw runs not (yet) consumed, per consumer: at most this many.
MAX_FITS = 16
#: Spectra waiting for the calibration are kept in memory up to this size (bytes), beyond it read again.
MAX_PENDING_BYTES = 256 * 1024**2


# ------------------------------------------------------------------------------------ the run's spectra ---
def spectra_key(data_keys: Mapping[str, Mapping], start: Mapping | None = None) -> str | None:
    """The data key of a stream's full spectra: the ``spectra`` quantity, else the one external key with
    channels last (its ``dims`` end in ``channel``, or its name in ``spectra``); None if there is none."""
    named = quantities_of(data_keys, start).get("spectra")
    if named in data_keys and data_keys[named].get("external"):
        return named
    found = [k for k, v in data_keys.items() if v.get("external") and len(v.get("shape") or []) >= 2
             and ((v.get("dims") or [""])[-1] == "channel" or k.endswith("spectra"))]
    return found[0] if len(found) == 1 else None


def _number(value) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def energy_axis(start: Mapping, data_key: Mapping, n_channels: int, *, required: bool = True
                ) -> tuple[np.ndarray | None, str]:
    """(energy (keV) of each channel, where it came from) of a run's spectra, as the run records it.

    In this order: the data key's ``energy_calibration`` ({offset, gain, quadratic}, keV); the start
    document's ``energy_calibration`` (the importers': one entry per detector element, which must agree to
    within half a channel, as the spectra are summed over the elements); for the simulated microprobe's
    spectra (``source`` :data:`SIM_SOURCE`) its Vortex's channels, ``(i + 0.5) x 10 eV``.

    With ``required=False`` a run that records nothing gives ``(None, "none recorded")``.

    Raises
    ------
    ValueError
        Nothing recorded (``required``), or detector elements whose axes differ (their spectra are summed);
        the message says what to give instead.
    """
    entries = data_key.get("energy_calibration") or start.get("energy_calibration")
    if isinstance(entries, Mapping):
        entries = [entries]
    channels = np.arange(n_channels, dtype=float)
    if isinstance(entries, list) and entries:
        axes = []
        for entry in entries:
            offset, gain = _number(entry.get("offset")), _number(entry.get("gain"))
            quad = _number(entry.get("quadratic")) or 0.0
            if offset is None or gain is None or gain <= 0:
                raise ValueError(f"the energy calibration {dict(entry)!r} has no offset and positive gain (keV); "
                                 "give calibration=Calibration(offset=..., gain=...) (xfct-bluesky fit "
                                 "--calibration FILE: an XRF-Maps maps_fit_parameters_override.txt)")
            axes.append(offset + channels * (gain + channels * quad))
        spread = max(float(np.abs(a - axes[0]).max()) for a in axes) / float(np.median(np.diff(axes[0])))
        if spread > 0.5:
            names = ", ".join(str(e.get("detector", i)) for i, e in enumerate(entries))
            raise ValueError(f"the detector elements' energy axes ({names}) differ by up to {spread:.2g} channels, "
                             "so their spectra cannot be summed; fit each element's spectra apart (fit_spectra)")
        where = "the data key's" if data_key.get("energy_calibration") else "the start document's"
        return axes[0], f"{where} energy_calibration (offset {axes[0][0]:.4g} keV, {len(axes)} detector element(s))"
    if str(data_key.get("source", "")).startswith(SIM_SOURCE):
        from ..physics.detectors import VortexModel

        vortex = VortexModel(n_channels=n_channels)
        return vortex.energies, f"the simulator's Vortex channels ({vortex.channel_width * 1e3:g} eV from 0 keV)"
    if not required:
        return None, "none recorded"
    raise ValueError("the run records no energy calibration of its spectra (no energy_calibration in the start "
                     "document or the data key); give calibration=Calibration(offset=..., gain=...) "
                     "(xfct-bluesky fit --calibration FILE: an XRF-Maps maps_fit_parameters_override.txt)")


def _to_spectra(frame: np.ndarray, data_key: Mapping) -> np.ndarray:
    """One event's frame as (..., n_channels): channels last, summed over the detector elements."""
    dims = list(data_key.get("dims") or [])
    if dims and len(dims) == frame.ndim:
        if "channel" in dims and dims[-1] != "channel":
            frame = np.moveaxis(frame, dims.index("channel"), -1)
            dims.append(dims.pop(dims.index("channel")))
        if "element" in dims[:-1]:
            kind = np.int64 if frame.dtype.kind in "iu" else np.float64
            frame = np.add.reduce(frame, axis=dims.index("element"), dtype=kind)
    return frame


def _hdf5_frame(resource: Mapping, index: int, n_rows: int) -> np.ndarray:
    """Frame ``index`` of a StreamResource's HDF5 dataset (stacked: ``ds[index]``; concatenated: ``n_rows``
    rows); LookupError while the writer has not flushed it yet."""
    import h5py

    params = resource.get("parameters") or {}
    unsupported = [p for p in ("template", "slice", "multiplier") if params.get(p)]
    if unsupported or resource.get("mimetype", "application/x-hdf5") != "application/x-hdf5":
        raise ValueError(f"the spectra's StreamResource ({resource.get('mimetype')}, {unsupported}) is not one "
                         "HDF5 dataset of frames; read it through Tiled instead (LiveSpectrumFit(spectra=...))")
    uri = urlparse(resource["uri"])
    path = unquote(uri.path)
    options = {"swmr": bool(params.get("swmr", True))}
    if params.get("locking") is not None:
        options["locking"] = params["locking"]
    with h5py.File(path, "r", **options) as f:
        ds = f[params["dataset"]]
        if params.get("join_method") == "concat":
            lo = index * n_rows
            if lo + n_rows > ds.shape[0]:
                raise LookupError(index)
            return ds[lo:lo + n_rows]
        if index >= ds.shape[0]:
            raise LookupError(index)
        return ds[index]


@contextmanager
def _numba_threads(n: int | None) -> Iterator[None]:
    """numba's threads for the kernels launched from this thread (thread-local), restored on leaving."""
    if n is None:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ------------------------------------------------------------------------------------- the callback ---
class LiveSpectrumFit(LiveCallback):
    """Fit each projection's full spectra as it arrives, off the RunEngine's thread; publish the fitted maps.

    Parameters
    ----------
    emit : callable(name, doc) or sequence of them, optional
        Each receives the derived run whole, from the worker's thread: the session's
        :class:`~._emit.SerialEmitter` (Tiled), a :class:`~.alignment.LiveDPCAlignment` and a
        :class:`~.reconstruction.LiveReconstruction` (so that they use the fitted maps), a list.
    elements : sequence of str, optional
        Line families to fit (``"Zn"``, ``"Au_L"``); every family with lines in the fitted range should
        be listed (a missing one is absorbed by its neighbours). Default: the element maps the run records
        (its ``quantities``: P, S, Cl, K, Ca, Fe, Cu, Zn for the simulated microprobe's runs).
    calibration : "auto" or Calibration
        ``"auto"`` (or None): fitted on the summed spectra of the first projections, from the run's
        energy axis (:func:`energy_axis`). A :class:`~xfct_bluesky.analysis.fitting.Calibration`: used as
        it is, or with ``refine=True`` as the start of that fit (an XRF-Maps override file's).
    refine : bool, optional
        Fit the calibration on the summed spectra; default True for "auto", False for a given one.
    method : {"poisson", "linear", "nnls"}
        The per-pixel fit (:func:`~xfct_bluesky.analysis.fitting.fit_spectra`); "poisson" (default), the
        non-negative Poisson maximum likelihood, gives maps >= 0 (what MLEM reconstructs).
    hold_background : bool, optional
        ``method="poisson"``: hold each pixel's background at its share of the projection's counts (True),
        fit it (False), or hold it where the projection's mean pixel cannot determine it (None, default;
        ``fit_spectra``'s ``hold_background``). What was held is recorded (``held``).
    energy_range : (float, float), optional
        Fitted energies (keV); default 1 keV to the incident energy + 1 keV.
    calibration_counts : float
        Summed counts the calibration waits for (:data:`CALIBRATION_COUNTS`); at the stop document it is
        fitted on all the projections if they hold fewer.
    free : sequence of str, optional
        Calibration parameters fitted (:data:`~xfct_bluesky.analysis.fitting.DEFAULT_FREE`). Default: all of
        them from :data:`TAIL_COUNTS` summed counts, below that
        :data:`~xfct_bluesky.analysis.fitting.BASIC_FREE` (the tails and step held at the start's values);
        a fit of all of them that fails is tried again with those.
    threads : int or None
        numba threads of the fits on the worker (default 1: the other core stays the RunEngine's); None:
        numba's default (all cores, for a fit after the fact).
    spectra : callable(key, row) -> array, optional
        Reads event ``row`` (its ``seq_num`` - 1) of data key ``key``, e.g. through Tiled
        (:func:`~xfct_bluesky.storage.reading.spectra_rows`); default: the HDF5 file of its StreamResource.
    fitted_by : str
        Recorded in the derived run's start document (``"live"``, ``"xfct-bluesky fit"``).
    worker : LiveWorker, optional
        Default: the one the live callbacks share (the alignment and reconstruction this callback feeds
        must use the same one).

    Attributes
    ----------
    results : dict
        Per raw-run uid: ``derived_uid``, ``calibration`` (Calibration), ``calibration_fit`` (summary
        dict or None), ``energy_source``, ``elements``, ``theta`` (n,), ``seq_nums``, ``counts`` and
        ``sigma`` ({element: (n, ny, nx) float32}), ``deviance`` (n, ny, nx), ``fitted_channels``,
        ``held`` ({component: projections whose fit held it}), ``warnings``.
    errors : list
        Exceptions caught (logged, never raised into the RunEngine).
    """

    def __init__(self, emit: Callable | Sequence[Callable] | None = None, *, elements: Sequence[str] | None = None,
                 calibration: str | Calibration | None = "auto", refine: bool | None = None, method: str = "poisson",
                 hold_background: bool | None = None, energy_range: tuple[float, float] | None = None,
                 calibration_counts: float = CALIBRATION_COUNTS, free: Sequence[str] | None = None,
                 threads: int | None = 1,
                 spectra: Callable[[str, int], np.ndarray] | None = None, fitted_by: str = "live",
                 worker: LiveWorker | None = None):
        self.method = one_of("method", method, METHODS, fix="LiveSpectrumFit fits each pixel by one of them")
        try:
            self.hold_background = check_hold_background(hold_background, self.method)
        except ValueError as err:
            raise ValueError(f"LiveSpectrumFit: {err}") from None
        if calibration is None or (isinstance(calibration, str) and calibration == "auto"):
            calibration = "auto"
        elif not isinstance(calibration, Calibration):
            raise ValueError(
                f"LiveSpectrumFit: calibration={calibration!r}; allowed: 'auto' (fitted on the summed spectra) or a "
                "Calibration (e.g. read_maps_override(path).calibration)")
        if isinstance(elements, str):
            raise TypeError(f"LiveSpectrumFit: elements={elements!r} is one string; give a sequence, e.g. "
                            f"elements=({elements!r},)")
        self.elements = None if elements is None else tuple(elements)
        for name in self.elements or ():
            parse_family(name)
        if self.elements == ():
            raise ValueError("LiveSpectrumFit: elements=() is empty; give line families, e.g. ('Ca', 'Fe', 'Zn'), "
                             "or None for the run's element maps")
        self.calibration = calibration
        self.refine = (calibration == "auto") if refine is None else bool(refine)
        if calibration == "auto" and not self.refine:
            raise ValueError("LiveSpectrumFit: calibration='auto' with refine=False leaves nothing to fit the "
                             "calibration; give a Calibration, or refine=True")
        self.energy_range = None if energy_range is None else (float(energy_range[0]), float(energy_range[1]))
        self.calibration_counts = positive("calibration_counts", calibration_counts,
                                           fix="Give the summed counts to calibrate on, e.g. 1e5")
        self.free = None if free is None else tuple(free)
        unknown = [n for n in self.free or () if n not in FITTABLE]
        if unknown:
            raise ValueError(f"LiveSpectrumFit: free={self.free!r}: unknown parameters {unknown}; allowed: "
                             f"{', '.join(FITTABLE)}")
        self.threads = None if threads is None else integer("threads", threads, low=1, fix="Give 1 (default)")
        self.spectra = spectra
        self.fitted_by = str(fitted_by)
        super().__init__(worker=worker)
        self.sinks = sinks_of(emit, "LiveSpectrumFit")

    def _factory(self, name, start):
        if start.get("raw_uid"):  # a derived run: no spectra of its own
            return [], []
        return [_FitRun(self, start)], []


@dataclass
class _Projection:
    seq_num: int
    theta: float
    frame: np.ndarray | None = None  # its spectra while it waits for the calibration (or None: read again)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    sigma: dict[str, np.ndarray] = field(default_factory=dict)
    deviance: np.ndarray | None = None
    held: tuple[str, ...] = ()  # the components its fit held (SpectrumFit.held)


def _held_counts(done: list[_Projection]) -> dict[str, int]:
    """The components the projections' fits held (``fit_spectra``'s ``hold_background``), by how many held each."""
    return {name: sum(name in p.held for p in done) for name in sorted({n for p in done for n in p.held})}


class _FitRun(RunState):
    """One run's spectra, calibration and fits (worker thread only)."""

    failure = "could not fit the spectra of"

    def __init__(self, owner: LiveSpectrumFit, start: dict):
        super().__init__(owner, start)
        self.primary: set[str] = set()
        self.key: str | None = None
        self.data_key: dict = {}
        self.theta_key: str | None = None
        self.elements: tuple[str, ...] = ()
        self.energy: np.ndarray | None = None
        self.energy_source = ""
        self.resources: dict[str, dict] = {}  # StreamResource uid -> document
        self.datums: list[tuple[int, int, int, str]] = []  # (first seq_num, stop seq_num, first index, resource)
        self.unread: dict[int, float] = {}  # seq_num -> theta: events whose frame is not located or written yet
        self.pending: list[_Projection] = []  # read, waiting for the calibration
        self.done: list[_Projection] = []
        self.summed: np.ndarray | None = None
        self.pending_bytes = 0
        self.needed = owner.calibration_counts
        self.tried_at = -1.0
        self.calibration = owner.calibration if not owner.refine else None
        self.calibration_info: dict | None = None
        self.warnings: list[str] = []
        self.n_fit = 0

    # -- documents -------------------------------------------------------------------------------
    def descriptor(self, doc):
        if doc.get("name") != "primary":
            return
        self.primary.add(doc["uid"])
        if self.key is not None:
            return
        keys = doc["data_keys"]
        key = spectra_key(keys, self.start_doc)
        if key is None:
            logger.info("LiveSpectrumFit: run %s (%s) has no spectra in 'primary': not fitted", self.uid[:8],
                        self.start_doc.get("plan_name", "?"))
            return
        owner = self.owner
        elements = owner.elements or tuple(element_names(quantities_of(keys, self.start_doc)))
        if not elements:
            logger.warning("LiveSpectrumFit: run %s records no element maps to say what to fit: not fitted; give "
                           "elements=('Ca', 'Fe', 'Zn', ...)", self.uid[:8])
            return
        shape = list(keys[key].get("shape") or [])
        dims = list(keys[key].get("dims") or [])
        n_channels = int(shape[dims.index("channel")] if "channel" in dims and len(dims) == len(shape) else shape[-1])
        given = isinstance(owner.calibration, Calibration)
        self.energy, self.energy_source = energy_axis(self.start_doc, keys[key], n_channels, required=not given)
        if given:  # the run's axis only checked (its detector elements agree: they are summed)
            self.energy = owner.calibration.energy(np.arange(n_channels))
            self.energy_source = f"the calibration given (the run's axis: {self.energy_source})"
        try:
            self.theta_key = theta_key(keys, self.start_doc)
        except KeyError:  # a single map: no rotation angle to record
            self.theta_key = None
        self.key, self.data_key, self.elements = key, dict(keys[key]), tuple(elements)

    def stream_resource(self, doc):
        self.resources[doc["uid"]] = doc

    def stream_datum(self, doc):
        if doc.get("descriptor") in self.primary and doc["stream_resource"] in self.resources:
            self.datums.append((doc["seq_nums"]["start"], doc["seq_nums"]["stop"], doc["indices"]["start"],
                                doc["stream_resource"]))
            self._read_unread()

    def event(self, doc):
        if doc["descriptor"] not in self.primary or self.key is None:
            return
        data = doc["data"]
        theta = float(data[self.theta_key]) if self.theta_key in data else float("nan")
        self.unread[int(doc["seq_num"])] = theta
        self._read_unread()

    def event_page(self, doc):
        for ev in unpack_event_page(doc):
            self.event(ev)

    def stop(self, doc):
        if self.key is None:
            return
        owner = self.owner
        self._read_unread()
        if self.unread:
            logger.error("LiveSpectrumFit: run %s: the spectra of %d event(s) (seq_num %s) were never found in "
                         "the HDF5 file: not fitted", self.uid[:8], len(self.unread), sorted(self.unread)[:5])
        if self.calibration is None and self.pending:
            self._calibrate(final=True)
        if not self.done:
            return
        docs = self._derived() if owner.sinks else []
        done = sorted(self.done, key=lambda p: p.seq_num)
        owner.results[self.uid] = {
            "derived_uid": docs[0][1]["uid"] if docs else None, "calibration": self.calibration,
            "calibration_fit": self.calibration_info, "energy_source": self.energy_source,
            "elements": self.elements, "theta": np.array([p.theta for p in done]),
            "seq_nums": [p.seq_num for p in done],
            "counts": {e: np.stack([p.counts[e] for p in done]) for e in self.elements},
            "sigma": {e: np.stack([p.sigma[e] for p in done]) for e in self.elements},
            "deviance": np.stack([p.deviance for p in done]), "fitted_channels": self.n_fit,
            "held": _held_counts(done), "warnings": list(self.warnings)}
        logger.info("LiveSpectrumFit: run %s: %d projections fitted (%s)", self.uid[:8], len(done),
                    ", ".join(f"{e} {owner.results[self.uid]['counts'][e].sum():.4g}" for e in self.elements))
        if docs:
            send_run(owner.sinks, docs, owner._failed)

    # -- work ------------------------------------------------------------------------------------
    def _locate(self, seq_num: int) -> tuple[dict, int] | None:
        for first, stop, index, resource in self.datums:
            if first <= seq_num < stop:
                return self.resources[resource], index + seq_num - first
        return None

    def _frame(self, seq_num: int) -> np.ndarray | None:
        """The event's spectra (..., n_channels), or None while its frame is not there yet."""
        if self.owner.spectra is not None:
            frame = self.owner.spectra(self.key, seq_num - 1)
        else:
            where = self._locate(seq_num)
            if where is None:
                return None
            shape = self.data_key.get("shape") or [1]
            try:
                frame = _hdf5_frame(where[0], where[1], int(shape[0]))
            except LookupError:
                return None
        return _to_spectra(np.asarray(frame), self.data_key)

    def _read_unread(self) -> None:
        for seq_num in sorted(self.unread):
            try:
                frame = self._frame(seq_num)
            except Exception as exc:  # noqa: BLE001 - logged and kept in .errors, never raised into the RunEngine
                self.owner._failed(exc, f"could not read the spectra of run {self.uid[:8]}, seq_num {seq_num}")
                del self.unread[seq_num]
                continue
            if frame is None:
                continue
            projection = _Projection(seq_num, self.unread.pop(seq_num))
            if self.calibration is not None:
                self._fit(projection, frame)
                continue
            summed = np.add.reduce(frame.reshape(-1, frame.shape[-1]), axis=0, dtype=np.float64)
            self.summed = summed if self.summed is None else self.summed + summed
            if self.pending_bytes + frame.nbytes <= MAX_PENDING_BYTES:
                projection.frame = frame
                self.pending_bytes += frame.nbytes
            self.pending.append(projection)
            if self.summed.sum() >= self.needed:
                self._calibrate()

    def _calibrate(self, final: bool = False) -> None:
        """Fit the calibration on the summed spectra; then fit the projections that waited for it."""
        owner = self.owner
        counts = float(self.summed.sum())
        if counts <= self.tried_at:
            return
        self.tried_at = counts
        start = owner.calibration if isinstance(owner.calibration, Calibration) else None
        energy = self.start_doc.get("energy")  # keV: the elastic peak to start from
        free = owner.free or (DEFAULT_FREE if counts >= TAIL_COUNTS else BASIC_FREE)
        for attempt in (free, BASIC_FREE):
            try:
                with collected() as caught, _numba_threads(owner.threads):
                    fit = fit_spectra(self.summed[None], self.energy, self.elements, calibration=start, refine=True,
                                      incident_energy=_number(energy) if start is None else None,
                                      energy_range=owner.energy_range, free=attempt, sigma=False)
                break
            except CalibrationError as exc:
                if attempt != BASIC_FREE and set(free) > set(BASIC_FREE):
                    self._note(f"the calibration of {len(free)} parameters failed ({exc}); fitted again with "
                               "the tails and step held")
                    free = BASIC_FREE
                    continue
                if final:
                    raise
                logger.warning("LiveSpectrumFit: run %s: the calibration on %.3g summed counts failed (%s); trying "
                               "again with more projections", self.uid[:8], counts, exc)
                self.needed = 4 * counts
                return
            except Exception:  # bad input (an element not excited...): this run is not fitted, said once
                self.key = None
                raise
        self._warned(caught)
        cal_fit = fit.calibration_fit
        self.calibration = fit.calibration
        self.calibration_info = {
            "projections": len(self.pending), "counts": counts, "free": list(free), "deviance": float(cal_fit.deviance),
            "deviance_per_dof": float(cal_fit.deviance_per_dof), "fitted_channels": int(cal_fit.n_fit),
            "converged": bool(cal_fit.converged), "summary": cal_fit.summary()}
        logger.info("LiveSpectrumFit: run %s calibrated on %d projection(s), %.3g counts: %s", self.uid[:8],
                    len(self.pending), counts, cal_fit.summary())
        waiting, self.pending, self.pending_bytes = self.pending, [], 0
        for projection in waiting:
            frame, projection.frame = projection.frame, None
            if frame is None:  # not kept (MAX_PENDING_BYTES): read again
                frame = self._frame(projection.seq_num)
            if frame is None:
                raise RuntimeError(f"the spectra of seq_num {projection.seq_num} can no longer be read")
            self._fit(projection, frame)

    def _fit(self, projection: _Projection, frame: np.ndarray) -> None:
        owner = self.owner
        try:
            with collected() as caught, _numba_threads(owner.threads):
                fit = fit_spectra(frame, self.energy, self.elements, calibration=self.calibration, refine=False,
                                  method=owner.method, hold_background=owner.hold_background,
                                  energy_range=owner.energy_range)
        except Exception as exc:  # noqa: BLE001 - logged and kept in .errors, never raised into the RunEngine
            owner._failed(exc, f"could not fit projection seq_num {projection.seq_num} of run {self.uid[:8]}")
            return
        if self.calibration_info is not None:  # calibrated on these spectra: the calibration said how it fits them
            caught = [w for w in caught if "misses the summed spectrum with this calibration" not in str(w.message)]
        self._warned(caught, f"seq_num {projection.seq_num}: ")
        projection.counts = {e: fit.counts[e].astype(np.float32) for e in self.elements}
        projection.sigma = {e: fit.sigma[e].astype(np.float32) for e in self.elements}
        projection.deviance = fit.deviance.astype(np.float32)
        projection.held = fit.held
        self.n_fit = int(fit.basis.matrix.shape[0])
        self.done.append(projection)

    def _warned(self, caught, prefix: str = "") -> None:
        for w in caught:
            self._note(f"{prefix}{w.message}")

    def _note(self, text: str) -> None:
        """Log a warning and keep it (the first 20) for the derived run's start document."""
        logger.warning("LiveSpectrumFit: run %s: %s", self.uid[:8], text)
        if len(self.warnings) < 20:
            self.warnings.append(text)

    def _derived(self) -> list[tuple[str, dict]]:
        """The derived run's documents: start (raw_uid, calibration), one event per fitted projection, stop."""
        from ..reconstruction import raw_metadata

        owner = self.owner
        done = sorted(self.done, key=lambda p: p.seq_num)
        shape = list(done[0].deviance.shape)
        md = {
            **raw_metadata(self.start_doc),
            "plan_name": FIT_PLAN, "raw_uid": self.uid, "fitted_by": owner.fitted_by,
            "purpose": "element maps fitted on the full spectra of each projection (photons of each line "
                       "family, before dead-time correction), their standard errors and the Poisson deviance",
            "elements": list(self.elements), "method": owner.method, "spectra_key": self.key,
            "calibration": self.calibration.to_dict(), "calibration_fit": self.calibration_info,
            "calibration_source": (f"fitted on the summed spectra of {self.calibration_info['projections']} "
                                   f"projection(s), starting from {self.energy_source}" if self.calibration_info
                                   else "given"),
            "fitted_channels": self.n_fit, "quantities": {"theta": "theta"}, "warnings": list(self.warnings),
            # components held at their share of each pixel's counts (fit_spectra's hold_background), by the
            # number of projections they were held in, and what was asked
            "held": _held_counts(done), "hold_background": owner.hold_background,
        }
        if owner.energy_range is not None:
            md["energy_range"] = list(owner.energy_range)
        bundle = compose_run(metadata=md)
        docs: list[tuple[str, dict]] = [("start", bundle.start_doc)]
        keys = {"theta": {"dtype": "number", "shape": [], "source": "derived", "units": "deg"},
                "raw_seq_num": {"dtype": "integer", "shape": [], "source": "derived"}}
        stack = {"dtype": "array", "dtype_numpy": "<f4", "shape": [len(self.elements), *shape], "source": "derived",
                 "dims": ["channel", "row", "col"], "channels": list(self.elements), "units": "counts"}
        keys["counts"] = {**stack, "description": "photons of each element's line family per pixel"}
        keys["sigma"] = {**stack, "description": "their standard errors (Fisher information at the estimate)"}
        keys["deviance"] = {"dtype": "array", "dtype_numpy": "<f4", "shape": shape, "source": "derived",
                            "description": f"Poisson deviance of each pixel over the {self.n_fit} fitted channels"}
        desc = bundle.compose_descriptor(name="primary", data_keys=keys)
        docs.append(("descriptor", desc.descriptor_doc))
        now = time.time()
        for p in done:
            data = {"theta": p.theta, "raw_seq_num": p.seq_num, "deviance": p.deviance,
                    "counts": np.stack([p.counts[e] for e in self.elements]),
                    "sigma": np.stack([p.sigma[e] for e in self.elements])}
            docs.append(("event", desc.compose_event(data=data, timestamps=dict.fromkeys(data, now))))
        docs.append(("stop", bundle.compose_stop()))
        return docs


# ------------------------------------------------------------------------------------ the consumers ---
@dataclass(frozen=True)
class FittedMaps:
    """A spectrum fit's element maps of one raw run, as read from its derived run."""

    uid: str  #: the derived run's uid
    theta: np.ndarray  #: (n,) deg, in the raw run's event order
    counts: dict[str, np.ndarray]  #: {element: (n, ny, nx)}


class FitInbox:
    """The fitted maps a consumer received, by raw uid, until it uses them (at most :data:`MAX_FITS`)."""

    def __init__(self):
        self._fits: OrderedDict[str, FittedMaps] = OrderedDict()

    def put(self, raw_uid: str, fitted: FittedMaps) -> None:
        self._fits[raw_uid] = fitted
        while len(self._fits) > MAX_FITS:
            self._fits.popitem(last=False)

    def pop(self, raw_uid: str) -> FittedMaps | None:
        return self._fits.pop(raw_uid, None)


class FittedMapsReader(RunState):
    """A "live_spectrum_fit" derived run, read for its raw run's fitted maps (worker thread only).

    At its stop document the maps go to ``owner.fits`` (a :class:`FitInbox`) under the raw run's uid.
    """

    failure = "could not read the spectrum-fit run"

    def __init__(self, owner: LiveCallback, start: dict):
        super().__init__(owner, start)
        self.raw_uid = start["raw_uid"]
        self.elements = tuple(start.get("elements") or ())
        self.primary: set[str] = set()
        self.theta: list[float] = []
        self.maps: dict[str, list[np.ndarray]] = {e: [] for e in self.elements}

    def descriptor(self, doc):
        if doc.get("name") == "primary":
            self.primary.add(doc["uid"])

    def event(self, doc):
        if doc["descriptor"] in self.primary:
            data = doc["data"]
            self.theta.append(float("nan") if data.get("theta") is None else float(data["theta"]))
            counts = np.asarray(data["counts"])
            for k, e in enumerate(self.elements):
                self.maps[e].append(counts[k])

    def event_page(self, doc):
        for ev in unpack_event_page(doc):
            self.event(ev)

    def stop(self, doc):
        if self.theta:
            self.owner.fits.put(self.raw_uid, FittedMaps(self.uid, np.asarray(self.theta, float),
                                                         {e: np.stack(v) for e, v in self.maps.items()}))
