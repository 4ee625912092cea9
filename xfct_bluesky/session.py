"""A beamline session: :class:`Session`, one front door for the RunEngine, the data, Tiled and the live analysis.

The IPython profile (``profile_collection/startup``), the demo, the command
line, the paper table and the dose study all set up through it, so that a
run is stored, journaled and analysed live the same way whoever starts it::

    from xfct_bluesky import Session, xfct_tomo

    with Session("~/xfct-data", microprobe="sim") as s:  # embedded Tiled server over the folder
        uid, = s.RE(xfct_tomo(s.microprobe, shape=(64, 64), pixel_size=300e-9, n_angles=60, dwell=3e-3))
        s.wait()                                          # the live alignment and reconstruction
        tomo = load_tomo(s.catalog[uid])

The pieces (:func:`make_run_engine`, :func:`make_microprobe`) stay public
for sessions wired by hand.

Environment
-----------
XFCT_BLUESKY_DATA        data folder (default: the user data dir)
XFCT_BLUESKY_TILED_URI   a running Tiled server to write to, e.g. ``xfct-bluesky
                         serve`` (default: an embedded server over the data folder)
XFCT_BLUESKY_TILED_API_KEY  API key for that server (default: the key ``xfct-bluesky
                         serve`` keeps in the data folder, ``<data dir>/api_key``)
XFCT_BLUESKY_HARDWARE    "sim" (default), "epics" (the simulated IOC's own layout) or "beamline" (the plans'
                         microprobe on XFCT_BLUESKY_BEAMLINE's records and its ``beam:`` section)
XFCT_BLUESKY_PREFIX      EPICS PV prefix of the microprobe (with "epics")
XFCT_BLUESKY_BEAMLINE    a beamline configuration (a YAML file, or ``aps-2ide``, ``sim-ioc``): its records
                         as ``session.beamline`` (:func:`~xfct_bluesky.devices.beamline.make_beamline_devices`);
                         with "beamline", the microprobe's records
                         (:func:`~xfct_bluesky.devices.beamline_fly.make_beamline_microprobe`); with "epics",
                         the microprobe's prefix when its records are the simulated IOC's
XFCT_BLUESKY_CONNECT_TIMEOUT  seconds the EPICS microprobe waits for its records (10 with "epics", 30 with
                         "beamline"), and a Session's ``beamline`` for its records (30)
XFCT_BLUESKY_SEED        seed of the simulated microprobe (default 0)
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def make_run_engine(data_dir: Path):
    """A RunEngine whose metadata (scan_id, proposal, ...) persists across sessions."""
    from bluesky import RunEngine
    from bluesky.utils import PersistentDict

    md_dir = Path(data_dir) / "runengine-metadata"
    md_dir.mkdir(parents=True, exist_ok=True)
    from .plans._checks import check_run_md

    RE = RunEngine()
    RE.md = PersistentDict(str(md_dir))
    RE.md_validator = check_run_md  # metadata that cannot be stored is refused before the run starts
    logging.getLogger("bluesky").addFilter(_AbortWithoutTraceback(RE))
    return RE


class _AbortWithoutTraceback(logging.Filter):
    """Log ``RE.abort()`` of this RunEngine's run as one line, not the plan's traceback.

    The RunEngine logs every aborted run with ``log.exception("Run aborted")``:
    after the user's own ``RE.abort()`` that is some 30 lines of generator
    frames ending in ``RequestAbort``, for a request, not an error. Other
    aborts (a failed pause, a halt) keep their traceback.
    """

    def __init__(self, RE) -> None:
        super().__init__()
        self._RE = weakref.ref(RE)

    def filter(self, record: logging.LogRecord) -> bool:
        from bluesky.utils import RequestAbort

        exc = record.exc_info[0] if record.exc_info else None
        if getattr(record, "RE", None) is self._RE() and exc is RequestAbort:
            record.exc_info = record.exc_text = None
            record.msg, record.args = "Run aborted by RE.abort(): cleanup ran, exit_status 'abort'", ()
        return True


def _recover_dead_runs(journal: Path, catalog) -> None:
    """Store the runs a crashed session left in the journal (``xfct-bluesky recover``), saying so."""
    from .storage import recover_journal

    if not journal.is_dir() or not any(journal.glob("*.jsonl")):
        return
    for path, uid, outcome in recover_journal(journal, catalog):
        level = logging.WARNING if uid else logging.INFO if outcome.startswith("in progress") else logging.ERROR
        logger.log(level, "journal %s: %s%s", path.name, outcome, f" (run {uid})" if uid else "")


def _close_at_exit(stack: ExitStack) -> None:
    """Stop the embedded server when the interpreter ends.

    ``atexit`` is too late: at exit Python first joins the non-daemon threads,
    among them the server's, and would wait forever. A daemon thread that
    waits for the main thread to finish (it is marked finished before that
    join) closes the server in time.
    """
    main = threading.main_thread()

    def watch():
        main.join()
        stack.close()

    threading.Thread(target=watch, name="xfct-tiled-closer", daemon=True).start()


def connect_timeout(default: float) -> float:
    """Seconds to wait for a device's PVs: ``$XFCT_BLUESKY_CONNECT_TIMEOUT``, else ``default`` (30 s for a
    beamline's records: 2-ID-E's 769 PVs take 6-7 s on loopback on an idle 2-core machine, more under load)."""
    return float(os.environ.get("XFCT_BLUESKY_CONNECT_TIMEOUT", default))


def make_microprobe(data_dir: Path, hardware: str | None = None, *, config=None):
    """The microprobe: simulated (default), EPICS or on a beamline's records, chosen by $XFCT_BLUESKY_HARDWARE.

    Parameters
    ----------
    data_dir : pathlib.Path
        The data folder: spectra go to ``<data dir>/assets``, where Tiled reads them.
    hardware : {"sim", "epics", "beamline"}, optional
        Default $XFCT_BLUESKY_HARDWARE, else "sim". "epics": the simulated IOC's own layout, its PV
        prefix from $XFCT_BLUESKY_PREFIX (default ``XFCT:``), waiting $XFCT_BLUESKY_CONNECT_TIMEOUT
        seconds (10); the IOC must write its HDF5 spectra into ``<data dir>/assets`` (``xfct-bluesky ioc
        --data-dir <data dir>/assets``). "beamline": the plans' microprobe on ``config``'s records
        (:func:`~xfct_bluesky.devices.beamline_fly.make_beamline_microprobe`, the beam from the file's
        ``beam:`` section), waiting $XFCT_BLUESKY_CONNECT_TIMEOUT seconds (30).
    config : BeamlineConfig, optional
        With "beamline": the configuration (default $XFCT_BLUESKY_BEAMLINE's).

    Raises
    ------
    ValueError
        Unknown hardware, or "beamline" without a configuration or on one that lacks the ``beam:`` section
        or the fly raster's records (:func:`~xfct_bluesky.beamline.config.check_microprobe`), before
        anything connects.
    """
    from .storage.folder import ASSETS_SUBDIR

    hardware = (hardware or os.environ.get("XFCT_BLUESKY_HARDWARE", "sim")).lower()
    if hardware == "beamline":
        from .beamline.config import check_microprobe

        config = config if config is not None else beamline_config()
        if config is None:
            raise ValueError("XFCT_BLUESKY_HARDWARE=beamline builds the plans' microprobe on a beamline "
                             "configuration's records, and none is given: set XFCT_BLUESKY_BEAMLINE (a YAML file, "
                             "or aps-2ide), give Session(beamline=...), or `xfct-bluesky shell --beamline FILE`")
        beam = check_microprobe(config)  # the beam: section and the fly raster's roles, before anything connects
        from .devices.beamline_fly import make_beamline_microprobe

        return make_beamline_microprobe(config, **beam, hdf5_directory=Path(data_dir) / ASSETS_SUBDIR,
                                        connect=connect_timeout(30.0))
    if hardware == "sim":
        from .devices.sim import make_sim_microprobe
        from .physics import small_cell

        seed = int(os.environ.get("XFCT_BLUESKY_SEED", "0"))
        # a 10 um cell, so that the session's 64 x 64 px field of 300 nm (19 um) holds it and the stage's
        # runout at every angle: a first tomography then aligns (the 75 um egg would be cut by the field)
        return make_sim_microprobe(shape=(64, 64), pixel_size=300e-9, seed=seed,
                                   specimen=small_cell(10e-6, seed=seed), hdf5_directory=Path(data_dir) / ASSETS_SUBDIR)
    if hardware == "epics":
        from .devices.epics import make_epics_microprobe

        prefix = os.environ.get("XFCT_BLUESKY_PREFIX")
        if os.environ.get("XFCT_BLUESKY_BEAMLINE"):
            prefix = _microprobe_prefix(beamline_config(), prefix)
        return make_epics_microprobe(prefix or "XFCT:",
                                     hdf5_directory=Path(data_dir) / ASSETS_SUBDIR,
                                     connection_timeout=connect_timeout(10.0))
    raise ValueError(f"XFCT_BLUESKY_HARDWARE={hardware!r}: allowed 'sim' or 'epics', or 'beamline' with a beamline "
                     "configuration (XFCT_BLUESKY_BEAMLINE)")


def beamline_config(spec: str | Path | None = None):
    """The beamline configuration ``spec`` names (default $XFCT_BLUESKY_BEAMLINE), checked; None if neither."""
    spec = spec if spec is not None else os.environ.get("XFCT_BLUESKY_BEAMLINE") or None
    if spec is None:
        return None
    from .beamline import load_beamline

    return load_beamline(spec)


def _microprobe_prefix(config, prefix: str | None) -> str:
    """The EPICS microprobe's prefix on ``config``'s records: "epics" drives the simulated IOC's own layout only."""
    if config.record("rotation") != f"{config.prefix}Rot":
        raise ValueError(f"XFCT_BLUESKY_HARDWARE=epics drives the simulated IOC's own layout (<prefix>Rot, <prefix>Fly:...), "
                         f"not {config.beamline}'s records (XFCT_BLUESKY_BEAMLINE={config.path}): for the plans' "
                         "microprobe on them set XFCT_BLUESKY_HARDWARE=beamline (Session(microprobe='beamline'); "
                         "the file's beam: section gives the beam), or use the sim-ioc configuration")
    if prefix is not None and prefix != config.prefix:
        raise ValueError(f"XFCT_BLUESKY_PREFIX={prefix!r} and XFCT_BLUESKY_BEAMLINE={config.path} (prefix "
                         f"{config.prefix!r}) disagree: give one of them")
    return config.prefix


class Session:
    """RunEngine, data folder, Tiled, writer with backup and journal, live callbacks, suspenders: one object.

    Parameters
    ----------
    data_dir : str or pathlib.Path, optional
        The data folder (default $XFCT_BLUESKY_DATA or the user data dir):
        Tiled catalog, spectra (``assets/``), backup, journal, RunEngine
        metadata.
    uri, api_key : str, optional
        A running Tiled server to write to (default $XFCT_BLUESKY_TILED_URI)
        and its key (default $XFCT_BLUESKY_TILED_API_KEY, else the key file
        ``xfct-bluesky serve`` writes in ``data_dir``); otherwise an embedded
        server over ``data_dir``, stopped at :meth:`close`. On a given server
        (``uri`` or ``client``), ``scan_id`` continues from the catalog's
        largest (:func:`~xfct_bluesky.storage.server.scan_id_source`): other
        processes may write there too.
    client : tiled client, optional
        An open client instead (e.g. the command line's, already checked);
        the session closes it at :meth:`close`.
    store : bool
        False: no Tiled at all (a RunEngine and the callbacks only, for the
        in-memory studies); ``catalog`` and ``writer`` are then None.
    microprobe : {"sim", "epics", "beamline"}, Device, callable or None
        The hardware: :func:`make_microprobe`'s ("sim", "epics" or
        "beamline"; default $XFCT_BLUESKY_HARDWARE if set, else none), a
        device, or a callable ``f(session) -> device`` (e.g. one whose
        spectra go to ``session.assets_dir``). "beamline": the plans'
        microprobe on the ``beamline`` configuration's records
        (:func:`~xfct_bluesky.devices.beamline_fly.make_beamline_microprobe`,
        the beam from its ``beam:`` section, spectra in ``assets_dir``); a
        configuration without ``beam:`` or the fly raster's records is
        refused here, before anything connects.
    live : bool
        Subscribe the live spectrum fit, DPC alignment and reconstruction:
        their derived runs (``raw_uid``) go through the same writer; the fit's
        maps (of every element the run records) also to the alignment and
        the reconstruction, which use them in place of the ROI-window maps.
    elements : sequence of str
        What the live reconstruction reconstructs.
    plots : bool
        Live figures (maps, shifts, slice), drawn on the main thread; off in
        a headless session whatever is asked.
    progress : bool
        A progress bar per run.
    persistent_md : bool
        ``RE.md`` (scan_id, proposal, ...) kept in ``<data dir>/runengine-metadata``
        across sessions; False: an in-memory ``RE.md``.
    journal : bool
        Journal every document in ``<data dir>/journal`` before Tiled sees it
        (a crash loses at most the map in flight), and store what a dead
        session left there when this one opens.
    batch_size : int, optional
        Events the scans' writer gathers before it stores them. Default: 1 on a
        given server (``uri``, ``client``: other processes read the scan while it
        runs, e.g. ``xfct-bluesky view``), else TiledWriter's (a run is stored at
        its stop: the embedded server is this process's alone).
    beamline : str or pathlib.Path, optional
        A beamline configuration (default $XFCT_BLUESKY_BEAMLINE): its records connected as
        :attr:`beamline` when the session opens (checked here, before anything connects).
    beam_loss : dict or bool
        Install :func:`~xfct_bluesky.plans.beam_loss_suspender` on the
        microprobe (True: its defaults; a dict: its keyword arguments).
    read_only : bool
        Only read the catalog (``ls``, ``show``): no writer, no journal, no
        RunEngine (an embedded server still creates a new folder's catalog,
        and serves a folder it may not write read-only).

    Attributes
    ----------
    RE, data_dir, assets_dir, server (None for a given server), client, catalog (the
    scans: ``raw``, so ``catalog[-1]`` is the last scan), derived (the runs derived from
    them: ``derived``, each with its scan's ``raw_uid``; see
    :func:`~xfct_bluesky.storage.derived_runs`), writer (what the RunEngine writes through),
    derived_writer (what the live callbacks write their derived runs through; both
    :class:`~xfct_bluesky.callbacks.SerialEmitter`, journaled, with a backup: derived
    runs' in ``backup/derived`` and ``journal/derived``), microprobe, beamline (the configuration's
    records, or None) and beamline_config, live_fit, live_alignment,
    live_reconstruction, callbacks (every subscribed callback by name).
    """

    def __init__(self, data_dir: str | Path | None = None, *, uri: str | None = None, api_key: str | None = None,
                 client: Any = None, store: bool = True, microprobe: str | Any | Callable | None = None,
                 live: bool = True, elements: Sequence[str] = ("Zn",), plots: bool = False, progress: bool = False,
                 persistent_md: bool = True, journal: bool = True, beam_loss: dict | bool = False,
                 read_only: bool = False, beamline: str | Path | None = None, batch_size: int | None = None):
        from .reconstruction import check_elements
        from .storage import default_data_dir
        from .validate import integer

        self.data_dir = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
        self._options = dict(uri=uri if uri is not None else os.environ.get("XFCT_BLUESKY_TILED_URI"),
                             api_key=api_key if api_key is not None else os.environ.get("XFCT_BLUESKY_TILED_API_KEY"),
                             client=client, store=store, live=live, elements=check_elements(elements),
                             plots=plots, progress=progress, persistent_md=persistent_md, journal=journal,
                             beam_loss=beam_loss, read_only=read_only,
                             batch_size=None if batch_size is None else integer(
                                 "batch_size", batch_size, low=1, fix="Give 1 to store each projection at once."))
        if read_only and (live or microprobe is not None):
            raise ValueError("read_only=True reads the catalog only: give live=False and no microprobe")
        if microprobe is None:
            microprobe = os.environ.get("XFCT_BLUESKY_HARDWARE") or None
        if isinstance(microprobe, str) and microprobe.lower() not in ("sim", "epics", "beamline"):
            raise ValueError(f"microprobe={microprobe!r}: allowed 'sim', 'epics', 'beamline' (with a beamline "
                             "configuration), a device, a callable f(session) -> device, or None")
        self._microprobe_spec = microprobe
        self.beamline_config = beamline_config(beamline)  # a bad file is refused here, naming the key
        if isinstance(microprobe, str) and microprobe.lower() == "beamline":
            from .beamline.config import check_microprobe

            if self.beamline_config is None:
                raise ValueError("microprobe='beamline' builds the plans' microprobe on a beamline configuration's "
                                 "records, and none is given: give beamline='aps-2ide' (or a YAML file), or set "
                                 "XFCT_BLUESKY_BEAMLINE")
            check_microprobe(self.beamline_config)  # the beam: section and the fly raster's roles, here
        self.beamline = None
        self._stack = ExitStack()
        self.RE = None
        self.server = None
        self.client = None
        self.catalog = None
        self.derived = None
        self.writer = None
        self.derived_writer = None
        self.microprobe = None
        self.live_fit = None
        self.live_alignment = None
        self.live_reconstruction = None
        self.callbacks: dict[str, Callable] = {}
        self._open = False

    @property
    def assets_dir(self) -> Path:
        """Where detector files must go for the embedded server to read them: ``<data dir>/assets``."""
        from .storage.folder import ASSETS_SUBDIR

        return self.data_dir / ASSETS_SUBDIR

    #: The session opened last and not closed since (a weak reference): see :meth:`current`.
    _current: weakref.ref | None = None

    @classmethod
    def current(cls) -> Session | None:
        """The active session: the one opened last, if it is still open, else None.

        Set by :meth:`open`, cleared by :meth:`close`. Plans run by the queue
        server get only JSON arguments: ``xfct_tomo(mp, resume=<uid or
        scan_id>)`` searches this session's catalog when no ``catalog=`` is
        given.
        """
        session = cls._current() if cls._current is not None else None
        return session if session is not None and session._open else None

    # ---------------------------------------------------------------- life
    def open(self) -> Session:
        """Start everything (idempotent); see the class docstring. Returns the session."""
        if self._open:
            return self
        try:
            self._open_storage()
            if not self._options["read_only"]:
                self._open_run_engine()
                self._open_microprobe()
                self._open_callbacks()
        except BaseException:
            self._stack.close()
            raise
        self._open = True
        Session._current = weakref.ref(self)
        return self

    def close(self) -> None:
        """Wait for the live analysis (up to 10 min), then close the client and stop an embedded server."""
        if any(cb is not None for cb in (self.live_fit, self.live_alignment, self.live_reconstruction)):
            self.wait(600)
        self._release_md()
        self._stack.close()
        self._open = False
        if Session._current is not None and Session._current() is self:
            Session._current = None

    def _release_md(self) -> None:
        """Write ``RE.md`` to disk now, and not again when it is garbage-collected.

        bluesky's PersistentDict also syncs from a finalizer at garbage
        collection; by then a later session may have rewritten the folder
        (zict keeps its own file names per instance), and the late sync fails.
        """
        md = getattr(self.RE, "md", None)
        if hasattr(md, "flush"):
            md.flush()
            finalizer = getattr(md, "_finalizer", None)
            if finalizer is not None:
                finalizer.detach()

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def close_at_exit(self) -> None:
        """Stop an embedded server when the interpreter ends (an interactive session that never calls close)."""
        _close_at_exit(self._stack)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the live callbacks have finished every run given to them so far."""
        for cb in (self.live_fit, self.live_alignment, self.live_reconstruction):
            if cb is not None:
                cb.wait(timeout)

    def subscribe(self, name: str, callback: Callable) -> Callable:
        """Subscribe ``callback`` to the RunEngine and keep it in ``callbacks[name]``."""
        self.RE.subscribe(callback)
        self.callbacks[name] = callback
        return callback

    # ------------------------------------------------------------- pieces
    def _open_storage(self) -> None:
        opts = self._options
        if not opts["store"]:
            return
        from tiled.client import from_uri

        from .callbacks import SerialEmitter
        from .storage import (
            derived_container,
            embedded_server,
            make_tiled_writer,
            runs_container,
        )
        from .storage.journal import JOURNAL_SUBDIR
        from .storage.server import DERIVED_CONTAINER

        client = opts["client"]
        if client is not None:
            self._stack.callback(client.context.close)
        elif opts["uri"]:
            from .storage.server import stored_api_key

            client = from_uri(opts["uri"], api_key=opts["api_key"] or stored_api_key(self.data_dir))
            self._stack.callback(client.context.close)
        elif client is None:
            self.server = self._stack.enter_context(embedded_server(self.data_dir))
            client = from_uri(self.server.uri)
            self._stack.callback(client.context.close)  # LIFO: the client closes before the server stops
        self.client = client
        self.catalog = runs_container(client)
        if opts["read_only"]:
            # a catalog written before the derived container existed has none (and may not create one)
            self.derived = derived_container(client) if DERIVED_CONTAINER in client else None
            return
        self.derived = derived_container(client)
        journal = self.data_dir / JOURNAL_SUBDIR if opts["journal"] else None
        backup = self.data_dir / "backup"
        if journal is not None:
            _recover_dead_runs(journal, self.catalog)
            _recover_dead_runs(journal / DERIVED_CONTAINER, self.derived)
        batch = opts["batch_size"]
        if batch is None and self.server is None:  # a shared server: others read the scan while it runs
            batch = 1
        self.writer = SerialEmitter(make_tiled_writer(self.catalog, backup, journal_directory=journal,
                                                      batch_size=batch))
        # one lock for both writers: tiled 0.2.20 serves every table through one DuckDB connection, and two
        # appends at once (a scan's events, a derived run's) crash the server or duplicate rows
        self.derived_writer = SerialEmitter(make_tiled_writer(
            self.derived, backup / DERIVED_CONTAINER,
            journal_directory=None if journal is None else journal / DERIVED_CONTAINER), lock=self.writer.lock)

    def _open_run_engine(self) -> None:
        from bluesky import RunEngine

        from .plans._checks import check_run_md

        if self._options["persistent_md"]:
            self.RE = make_run_engine(self.data_dir)
        else:
            self.RE = RunEngine({})
            self.RE.md_validator = check_run_md
        if self.server is None and self.catalog is not None:  # a shared server: other processes number runs too
            from .storage.server import scan_id_source

            self.RE.scan_id_source = scan_id_source(self.catalog)
        if self.writer is not None:
            self.subscribe("writer", self.writer)

    def _open_microprobe(self) -> None:
        from .devices.channels import release

        if self.beamline_config is not None:
            from .devices.beamline import make_beamline_devices

            self.beamline = make_beamline_devices(self.beamline_config, connect=connect_timeout(30.0))
            self._stack.callback(release, self.beamline)
        spec = self._microprobe_spec
        if spec is None:
            return
        if isinstance(spec, str):
            self.microprobe = make_microprobe(self.data_dir, spec, config=self.beamline_config)
            if spec.lower() == "beamline":
                self._stack.callback(release, self.microprobe)
        elif callable(spec) and not hasattr(spec, "read"):  # a factory, not a device
            self.microprobe = spec(self)
        else:
            self.microprobe = spec
        beam_loss = self._options["beam_loss"]
        if beam_loss:
            from .plans import beam_loss_suspender

            self.RE.install_suspender(beam_loss_suspender(self.microprobe,
                                                          **(beam_loss if isinstance(beam_loss, dict) else {})))

    def _open_callbacks(self) -> None:
        opts = self._options
        from .callbacks import (
            LiveDPCAlignment,
            LiveMaps,
            LiveReconstruction,
            LiveSpectrumFit,
            ProgressBar,
            live_figures,
        )

        if opts["progress"]:
            self.subscribe("progress", ProgressBar())
        plots = opts["plots"] and _interactive_backend()
        if plots:
            self.subscribe("live_maps", LiveMaps(("dpc_diag", "Zn")))
        if opts["live"]:
            sinks = [self.derived_writer] if self.derived_writer is not None else []
            self.live_reconstruction = LiveReconstruction(emit=sinks or None, elements=opts["elements"],
                                                          plot=plots)
            # its shifts go to Tiled and to the reconstruction, which uses them (the order does not matter)
            self.live_alignment = LiveDPCAlignment(emit=[*sinks, self.live_reconstruction], plot=plots)
            # the fitted maps go to Tiled, the alignment and the reconstruction (they wait for them at the stop)
            self.live_fit = LiveSpectrumFit(emit=[*sinks, self.live_alignment, self.live_reconstruction])
            self.subscribe("live_spectrum_fit", self.live_fit)
            self.subscribe("live_alignment", self.live_alignment)
            self.subscribe("live_reconstruction", self.live_reconstruction)
        if plots:
            live_figures().start()

    def __repr__(self) -> str:
        where = ("no storage" if self.catalog is None else
                 f"embedded Tiled on {self.data_dir}" if self.server is not None else "Tiled at a given server")
        return (f"Session({where}, microprobe={type(self.microprobe).__name__ if self.microprobe else None}, "
                f"callbacks={list(self.callbacks)}{'' if self._open else ', closed'})")


def _interactive_backend() -> bool:
    import matplotlib

    return matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template")
