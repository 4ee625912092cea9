"""What a beamline session sets up: RunEngine, Tiled storage, devices.

The IPython profile (``profile_collection/startup``) calls these, so that the
startup files stay thin and the logic is tested with the package.

Environment
-----------
XFCT_BLUESKY_DATA        data folder (default: the user data dir)
XFCT_BLUESKY_TILED_URI   a running Tiled server to write to (default: an
                         embedded server over the data folder)
XFCT_BLUESKY_API_KEY     API key for that server
XFCT_BLUESKY_HARDWARE    "sim" (default) or "epics"
XFCT_BLUESKY_PREFIX      EPICS PV prefix of the microprobe (with "epics")
XFCT_BLUESKY_SEED        seed of the simulated microprobe (default 0)
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import ExitStack
from pathlib import Path

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
    return RE


def connect_storage(RE, data_dir: Path):
    """Subscribe a TiledWriter (with a backup folder and a journal) to ``RE``; return the runs catalog and the writer.

    Every document is journaled in ``<data dir>/journal`` before Tiled sees it,
    so that a crash of this process loses at most the map in flight
    (``xfct-bluesky recover`` stores the rest).

    Uses $XFCT_BLUESKY_TILED_URI if set, else starts an embedded server over
    ``data_dir`` that stops when the interpreter exits.
    """
    from tiled.client import from_uri

    from .storage import embedded_server, make_tiled_writer, runs_container
    from .storage.journal import JOURNAL_SUBDIR

    uri = os.environ.get("XFCT_BLUESKY_TILED_URI")
    if uri:
        client = from_uri(uri, api_key=os.environ.get("XFCT_BLUESKY_API_KEY"))
    else:
        stack = ExitStack()
        server = stack.enter_context(embedded_server(data_dir))
        _close_at_exit(stack)
        client = from_uri(server.uri)
    catalog = runs_container(client)
    journal = Path(data_dir) / JOURNAL_SUBDIR
    _recover_dead_runs(journal, catalog)
    writer = make_tiled_writer(catalog, Path(data_dir) / "backup", journal_directory=journal)
    RE.subscribe(writer)
    return catalog, writer


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


def make_microprobe(data_dir: Path, hardware: str | None = None):
    """The microprobe: simulated (default) or EPICS, chosen by $XFCT_BLUESKY_HARDWARE.

    EPICS devices take their PV prefix from $XFCT_BLUESKY_PREFIX (default
    ``XFCT:``) and wait $XFCT_BLUESKY_CONNECT_TIMEOUT seconds (10) for it;
    the IOC must write its HDF5 spectra into ``<data dir>/assets``
    (``xfct-bluesky ioc --data-dir <data dir>/assets``), where Tiled reads them.
    """
    from .storage.tiled import ASSETS_SUBDIR

    hardware = (hardware or os.environ.get("XFCT_BLUESKY_HARDWARE", "sim")).lower()
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

        return make_epics_microprobe(os.environ.get("XFCT_BLUESKY_PREFIX", "XFCT:"),
                                     hdf5_directory=Path(data_dir) / ASSETS_SUBDIR,
                                     connection_timeout=float(os.environ.get("XFCT_BLUESKY_CONNECT_TIMEOUT", "10")))
    raise ValueError(f"XFCT_BLUESKY_HARDWARE={hardware!r}: allowed 'sim' or 'epics'")
