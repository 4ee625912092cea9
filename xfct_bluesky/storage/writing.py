"""Writing runs to Tiled, and keeping them when Tiled is away.

:func:`make_tiled_writer` builds the TiledWriter to subscribe to the
RunEngine; a run that could not be stored is kept whole as JSON Lines in a
backup folder, and :func:`replay_backup` / :func:`replay_directory` store it
later (``xfct-bluesky replay``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

class _JSONLinesBackup(MutableMapping):
    """A mapping ``key -> list of documents`` stored as one JSON Lines file per key.

    TiledWriter's ``backup_dictionary`` store: its ``JSONDictWriter`` does
    ``store[key] = []`` then ``store[key].append({"name": ..., "doc": ...})``,
    with ``key`` the first block of the run's uid. Unlike TiledWriter's own
    ``backup_directory`` writer, documents are encoded with
    ``event_model.NumpyEncoder``: events carrying numpy arrays (2D maps) make
    the plain ``json.dump`` there fail half-way through a line, leaving a
    corrupt file. The files have the same layout: ``{key}.jsonl``, one
    ``{"name": ..., "doc": ...}`` per line.
    """

    class _Appender:
        def __init__(self, path: Path) -> None:
            self.path = path

        def append(self, item: dict[str, Any]) -> None:
            from event_model import NumpyEncoder

            line = json.dumps(item, cls=NumpyEncoder)  # encode fully before touching the file
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(line + "\n")

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.jsonl"

    def __getitem__(self, key: str) -> _JSONLinesBackup._Appender:
        if not self._path(key).exists():
            raise KeyError(key)
        return self._Appender(self._path(key))

    def __setitem__(self, key: str, items: list[dict[str, Any]]) -> None:
        self._path(key).write_text("", encoding="utf-8")
        appender = self._Appender(self._path(key))
        for item in items:
            appender.append(item)
        logger.warning("Tiled could not store run %s; its documents go to %s", key, self._path(key))

    def __delitem__(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return (path.stem for path in sorted(self.directory.glob("*.jsonl")))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def make_tiled_writer(
    container: Any,
    backup_directory: str | Path | None = None,
    *,
    journal_directory: str | Path | None = None,
    batch_size: int | None = None,
) -> Any:
    """A TiledWriter writing runs into ``container``, to subscribe to a RunEngine.

    Parameters
    ----------
    container : tiled.client.container.Container
        Usually :func:`runs_container`. The server must already be up:
        building the writer makes an HTTP request.
    backup_directory : str or pathlib.Path, optional
        If given (created if missing), a run that Tiled fails to store (server
        down, ...) is written there in full, as ``{uid[:8]}.jsonl`` (one
        ``{"name": ..., "doc": ...}`` per line), and the scan goes on; store it
        later with :func:`replay_backup`. Without it, a write failure aborts
        the scan after tiled's retries (about 24 s).
    journal_directory : str or pathlib.Path, optional
        If given (created if missing), every document is first written to a
        per-run journal file there, flushed and fsync'd one by one, and the
        file is deleted once the run is stored: if the acquiring process dies,
        :func:`~xfct_bluesky.storage.journal.recover_journal`
        (``xfct-bluesky recover``) stores what it had acquired. Usually
        ``<data dir>/journal``.
    batch_size : int, optional
        Events and StreamDatums gathered before a write; default TiledWriter's
        (10000, i.e. written at the run's stop: fast, not live). ``1`` writes
        each event at once, about 10x slower. Live analysis should subscribe
        to the RunEngine rather than poll Tiled.

    Returns
    -------
    bluesky_tiled_plugins.TiledWriter or JournaledWriter
        Callback ``(name, doc)``; ``RE.subscribe(writer)``. With a journal,
        the TiledWriter wrapped in a
        :class:`~xfct_bluesky.storage.journal.JournaledWriter`.

    Notes
    -----
    The backup goes through TiledWriter's ``backup_dictionary`` with a store
    that writes JSON Lines files, rather than its ``backup_directory``: the
    latter's writer (bluesky-tiled-plugins 2.0.12) cannot encode numpy arrays,
    so any run with array data in its events would leave a truncated file.
    """
    from bluesky_tiled_plugins import TiledWriter

    kwargs: dict[str, Any] = {}
    if backup_directory is not None:
        kwargs["backup_dictionary"] = _JSONLinesBackup(Path(backup_directory))
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1 (1 writes each event at once).")
        kwargs["batch_size"] = int(batch_size)
    writer = TiledWriter(container, **kwargs)
    if journal_directory is None:
        return writer
    from .journal import JournaledWriter, RunJournal

    return JournaledWriter(writer, RunJournal(journal_directory))


def read_backup(path: str | Path, *, cut_tail_ok: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``(name, doc)`` pairs of a backup file written by :func:`make_tiled_writer` (or of a journal).

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.jsonl`` file of the backup directory.
    cut_tail_ok : bool, optional
        Drop (and log) a last line that is not JSON, as a process killed while
        writing it leaves; any other bad line still raises. For journals.

    Yields
    ------
    (str, dict)
        Documents in the order the RunEngine emitted them; arrays as lists.
    """
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                if cut_tail_ok and not file.read().strip():
                    logger.warning("%s: its last line (%d) was cut when the process died; dropped", path, number)
                    return
                raise ValueError(f"{path}, line {number}: not a JSON document ({err}).") from err
            yield item["name"], item["doc"]


def replay_backup(path: str | Path, container: Any) -> str:
    """Store a run kept by the backup of :func:`make_tiled_writer` into Tiled.

    Parameters
    ----------
    path : str or pathlib.Path
        The run's ``.jsonl`` backup file.
    container : tiled.client.container.Container
        Where to write it, usually :func:`runs_container`.

    Returns
    -------
    str
        The uid of the run stored.

    Raises
    ------
    ValueError
        If the file does not start with a start document.

    Notes
    -----
    A run the server lost mid-scan is usually there in part (its start
    document, perhaps some streams, no stop): that partial node is replaced
    by the full run from the backup. A run already stored complete (with its
    stop document) is left alone. Array dtypes are restored from the
    descriptors' ``dtype_numpy``. External files (HDF5 spectra) are
    registered where the documents point: they must lie in the server's
    readable storage to be read.
    """
    return replay_documents(read_backup(path), container, source=str(path))


def replay_documents(documents: Iterator[tuple[str, dict[str, Any]]], container: Any, *, source: str) -> str:
    """Store one run's ``(name, doc)`` pairs into ``container``, replacing a partial node of it (see
    :func:`replay_backup`); ``source`` names where they come from in messages. Returns the run's uid."""
    from bluesky_tiled_plugins import TiledWriter

    first = next(documents, None)
    if first is None or first[0] != "start":
        raise ValueError(f"{source} does not begin with a start document; is it a run backup?")
    uid = first[1]["uid"]
    if uid in container:
        if container[uid].metadata.get("stop"):
            logger.info("Run %s is already stored complete; %s not replayed", uid, source)
            return uid
        logger.info("Replacing the partial run %s left by the interrupted write", uid)
        container.delete_contents(uid, recursive=True, external_only=False)
    writer = TiledWriter(container)
    writer(*first)
    for name, doc in documents:
        writer(name, doc)
    logger.info("Replayed run %s from %s", uid, source)
    return uid


#: Where :func:`replay_directory` moves the backup files it has stored.
REPLAYED_SUBDIR = "replayed"


def replay_directory(directory: str | Path, container: Any) -> list[tuple[Path, str | None, str]]:
    """Replay every backup file of ``directory`` into Tiled; move each stored one aside.

    Returns
    -------
    list of (path, uid or None, outcome)
        ``outcome`` is "stored" (then the file is moved to ``replayed/`` beside
        it, never deleted) or the error that kept it in place.
    """
    return store_each(directory, container, lambda path: (replay_backup(path, container), "stored"),
                      kind="backup", done=REPLAYED_SUBDIR)


def store_each(directory: str | Path, container: Any, store: Any, *, kind: str, done: str,
               skip: Any = None) -> list[tuple[Path, str | None, str]]:
    """Store every ``*.jsonl`` run file of ``directory`` with ``store(path) -> (uid, outcome)``; move each
    stored file to ``done/`` beside it (never deleted), keep and report the others, go on after a failure.

    ``skip(path)`` may return a reason to leave a file alone (reported as the outcome). Shared by
    :func:`replay_directory` (backup) and :func:`~xfct_bluesky.storage.journal.recover_journal` (journal).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a folder; give the {kind} folder (default <data dir>/{kind})")
    results: list[tuple[Path, str | None, str]] = []
    for path in sorted(directory.glob("*.jsonl")):
        reason = skip(path) if skip is not None else None
        if reason:
            results.append((path, None, reason))
            continue
        try:
            uid, outcome = store(path)
        except Exception as exc:  # keep the file, report, go on with the others
            logger.exception("Could not store %s", path)
            results.append((path, None, f"kept: {type(exc).__name__}: {exc}"))
            continue
        (directory / done).mkdir(exist_ok=True)
        target = directory / done / path.name
        path.replace(target)
        results.append((target, uid, outcome))
    return results
