"""A run survives the death of the process that acquires it: a journal of its documents, and recovery.

TiledWriter batches a run's events until its stop document, and its backup
only catches a server that goes away: if the acquiring process itself dies
(``kill -9``, out of memory, power), every map taken so far is lost and the
run is left in Tiled with a start document and no events.
:class:`JournaledWriter` therefore writes each document, before it reaches the
TiledWriter, to a per-run JSON Lines file in a journal folder (default
``<data dir>/journal``), flushed and fsync'd document by document, and deletes
the file once the run's stop document has been handed on. A crash thus loses
at most the map in flight.

:func:`recover_journal` (``xfct-bluesky recover``) completes each run left in
the journal: it drops a trailing StreamDatum whose event was never emitted,
makes the HDF5 files the run points to readable without SWMR, appends a stop
document (``exit_status: "fail"``, reason "acquisition process died") and
stores the run in Tiled in place of the partial node the dead process left.
``xfct_tomo(resume=uid)`` then acquires only the missing angles.

The journal files have the backup's layout (one ``{"name": ..., "doc": ...}``
per line, arrays encoded by ``event_model.NumpyEncoder``), so
:func:`~xfct_bluesky.storage.writing.read_backup` reads them. A run still being
acquired holds an exclusive ``flock`` on its file; recovery leaves such runs
alone (the lock goes with the process, whatever kills it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)

JOURNAL_SUBDIR = "journal"
"""Sub-folder of the data folder for the journals of runs in progress."""
RECOVERED_SUBDIR = "recovered"
"""Where :func:`recover_journal` moves a journal file once its run is stored."""
DIED_REASON = "acquisition process died"
"""The stop document's ``reason`` of a recovered run (then completed by where it was recovered from)."""


class _RunFile:
    """One run's journal file, locked, appended to with a flush and an fsync per document."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "x", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise

    def append(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()  # releases the lock


class RunJournal:
    """Callback ``(name, doc)`` writing each run's documents to ``{directory}/{uid}.jsonl`` as they come.

    Parameters
    ----------
    directory : str or pathlib.Path
        The journal folder (created if missing), usually ``<data dir>/journal``.

    Notes
    -----
    Thread-safe (derived runs may be emitted from a worker thread while the
    RunEngine emits the next run). Documents are mapped to their run by
    ``run_start`` (descriptor, stream_resource, stop) or through their
    descriptor (event, event_page, stream_datum). A document that cannot be
    encoded raises :class:`TypeError` naming it, before anything of it is
    written, so that the RunEngine aborts the run rather than lose it
    silently. :meth:`finish` (called by :class:`JournaledWriter` once the
    stop document is stored) deletes a completed run's file.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, _RunFile] = {}
        self._run_of: dict[str, str] = {}  # descriptor uid -> run uid

    def path(self, run_uid: str) -> Path:
        """The journal file of a run."""
        return self.directory / f"{run_uid}.jsonl"

    def _run(self, name: str, doc: dict[str, Any]) -> str | None:
        if name == "start":
            return doc["uid"]
        if name in ("descriptor", "stop", "stream_resource", "resource"):
            return doc.get("run_start")
        if name in ("event", "event_page", "stream_datum"):
            return self._run_of.get(doc.get("descriptor", ""))
        if name in ("datum", "datum_page"):
            return None  # legacy Resource/Datum: not used by this package's devices
        return None

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        from event_model import NumpyEncoder

        try:
            line = json.dumps({"name": name, "doc": doc}, cls=NumpyEncoder)
        except (TypeError, ValueError) as err:
            raise TypeError(f"the {name} document of run {doc.get('uid', doc.get('run_start', '?'))!r} cannot be "
                            f"stored ({err}); its metadata must be JSON: numbers, strings, lists, dicts") from err
        with self._lock:
            run = self._run(name, doc)
            if run is None:
                logger.debug("journal: %s document of no known run, not journaled", name)
                return
            if name == "start":
                self._files[run] = _RunFile(self.path(run))
            elif name == "descriptor":
                self._run_of[doc["uid"]] = run
            handle = self._files.get(run)
            if handle is None:
                logger.debug("journal: %s document of run %s, which started before this journal", name, run)
                return
            handle.append(line)

    def finish(self, run_uid: str, *, stored: bool) -> None:
        """Close a run's file after its stop document; delete it if the run is ``stored`` elsewhere."""
        with self._lock:
            handle = self._files.pop(run_uid, None)
            self._run_of = {d: r for d, r in self._run_of.items() if r != run_uid}
        if handle is None:
            return
        handle.close()
        if stored:
            handle.path.unlink(missing_ok=True)
        else:
            logger.warning("run %s was not stored: its documents stay in %s (xfct-bluesky recover)", run_uid,
                           handle.path)


class JournaledWriter:
    """A TiledWriter behind a :class:`RunJournal`: each document is on disk before Tiled sees it.

    Parameters
    ----------
    writer : callable
        The TiledWriter (with or without its backup).
    journal : RunJournal

    Notes
    -----
    A run's journal file is deleted when the writer has handled its stop
    document without raising (TiledWriter with a backup then holds it either
    in Tiled or in the backup folder); if the writer raises, the journal file
    stays for :func:`recover_journal` and the error propagates to the
    RunEngine. Attribute access falls through to the wrapped writer.
    """

    def __init__(self, writer: Any, journal: RunJournal) -> None:
        self.writer = writer
        self.journal = journal

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self.journal(name, doc)
        try:
            self.writer(name, doc)
        except BaseException:
            if name == "stop":
                self.journal.finish(doc["run_start"], stored=False)
            raise
        if name == "stop":
            self.journal.finish(doc["run_start"], stored=True)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.writer, attr)


# ------------------------------------------------------------------ recovery ---
def _complete(docs: list[tuple[str, dict[str, Any]]], path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The documents of a run that died, made whole: trailing StreamDatums dropped, a stop document added."""
    if not docs or docs[0][0] != "start":
        raise ValueError(f"{path} does not begin with a start document; is it a run journal?")
    if any(name == "stop" for name, _ in docs):
        return docs
    start = docs[0][1]
    last_event = max((i for i, (name, _) in enumerate(docs) if name in ("event", "event_page")), default=0)
    # a StreamDatum is emitted just before its event: one after the last event announces a map never sent
    dropped = [i for i, (name, _) in enumerate(docs) if i > last_event and name == "stream_datum"]
    kept = [d for i, d in enumerate(docs) if i not in set(dropped)]
    if dropped:
        logger.info("%s: %d StreamDatum(s) of the map in flight dropped", path, len(dropped))
    streams = {doc["uid"]: doc.get("name", "primary") for name, doc in kept if name == "descriptor"}
    counts: Counter[str] = Counter()
    for name, doc in kept:
        if name == "event":
            counts[streams.get(doc["descriptor"], "primary")] += 1
        elif name == "event_page":
            counts[streams.get(doc["descriptor"], "primary")] += len(doc["seq_num"])
    times = [start["time"]]
    for _, doc in kept:
        t = doc.get("time")
        times.extend(t if isinstance(t, list) else [t] if isinstance(t, int | float) else [])
    stop = {
        "uid": str(uuid.uuid4()),
        "time": max(times),
        "run_start": start["uid"],
        "exit_status": "fail",
        "reason": f"{DIED_REASON}; recovered from the journal {path.name} at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}",
        "num_events": dict(counts),
    }
    return [*kept, ("stop", stop)]


def _hdf5_files(docs: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[Path]:
    for name, doc in docs:
        if name == "stream_resource" and str(doc.get("uri", "")).startswith("file:"):
            yield Path(unquote(urlparse(doc["uri"]).path))


def _make_readable(path: Path) -> bool:
    """Make an HDF5 file left open for SWMR writing by a dead process readable by anyone.

    The file's consistency flags stay set when its writer dies; HDF5 then
    refuses to open it except as a SWMR reader ("may use h5clear"). Its
    content is copied, as a SWMR reader sees it, into a new file that
    replaces it atomically (same path, same datasets). Returns whether it
    had to be repaired.
    """
    import h5py

    if not path.exists():
        raise FileNotFoundError(f"{path}: the HDF5 file this run's spectra point to is missing")
    try:
        with h5py.File(path, "r"):
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".recovering")
    with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
        for key in src:
            src.copy(src[key], dst, name=key)
        for key, value in src.attrs.items():
            dst.attrs[key] = value
    os.replace(tmp, path)
    logger.info("%s: consistency flags left by the dead writer cleared (content copied)", path)
    return True


def _locked(path: Path) -> bool:
    """Whether a live process holds the journal file's lock (a run still being acquired)."""
    with open(path, encoding="utf-8") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    return False


def recover_run(path: str | Path, container: Any) -> str:
    """Store the run of one journal file in Tiled, completed if its process died; return its uid."""
    from .writing import read_backup, replay_documents

    path = Path(path)
    docs = _complete(list(read_backup(path, cut_tail_ok=True)), path)
    for h5 in _hdf5_files(docs):
        _make_readable(h5)
    return replay_documents(iter(docs), container, source=str(path))


def recover_journal(directory: str | Path, container: Any) -> list[tuple[Path, str | None, str]]:
    """Recover every run left in a journal folder into Tiled; move each stored file to ``recovered/``.

    Parameters
    ----------
    directory : str or pathlib.Path
        The journal folder (``<data dir>/journal``).
    container : tiled.client.container.Container
        Where the runs go, usually :func:`~xfct_bluesky.storage.runs_container`.

    Returns
    -------
    list of (path, uid or None, outcome)
        ``outcome`` is "recovered: N events" (the file moved to
        ``recovered/``), "in progress" (a live process holds it: left alone)
        or the error that kept it in place.
    """
    from .writing import store_each

    def recover(path: Path) -> tuple[str, str]:
        uid = recover_run(path, container)
        stop = container[uid].metadata.get("stop") or {}
        n = sum((stop.get("num_events") or {}).values())
        return uid, f"recovered: {n} events, exit status {stop.get('exit_status')}"

    return store_each(directory, container, recover, kind=JOURNAL_SUBDIR, done=RECOVERED_SUBDIR,
                      skip=lambda path: "in progress: a running acquisition holds it" if _locked(path) else None)
