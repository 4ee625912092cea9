"""The field's files as bluesky runs: event-model documents, and the import of files into Tiled.

:func:`documents_from_file` reads one file (synApps MDA, APS flyXRF, XRF-Maps /
MAPS HDF5, NSLS-II PyXRF, Data Exchange; detected from its content when
``fmt`` is None) and returns the documents of one run, composed with
event-model and each validated against its JSON schema. :func:`import_files`
writes such runs into a Tiled container through a TiledWriter, skipping files
already imported; with ``tomo=True`` several maps make one tomography.

The run
-------
Start document: ``plan_name`` "import"; ``source`` (``path``, ``sha256``,
``format``, ``reader``; a flyXRF file imported with its MDA file under
``source["flyxrf"]``; in a tomography of several files each is a list, in
event order); ``instrument`` ("APS 2-ID-E" when the PVs are 2-ID-E's
``2xfm:``, else what the file says, else "unknown"); the scan's own metadata
(``scan_number``, ``scan_time``, ``dimensions``, ``energy`` (keV) where the
file records the incident energy, ``extra_pvs`` name -> value, ...);
``sample`` if given (else the file's sample name, if any); ``shape``
``[rows, cols]``; ``theta`` (degrees) and ``theta_key`` "theta" where the file
has a rotation angle (a tomography: ``angles``, and each file's metadata in
``files``);
and ``quantities``, standard name (:mod:`xfct_bluesky.quantities`) -> data key, so that
readers resolve ``"Zn"`` or ``"i0"`` once, whatever the format called it.
The ``primary`` stream holds one event per map (per angle for a
tomography): the maps as 2D arrays under our runs' names where the quantity
is known (:mod:`._mapping` has the tables, format by format), the other maps
of each group stacked in one ``(channels, rows, cols)`` field whose data key
lists the channels' names, ``x_axis``/``y_axis`` as 1D arrays and ``theta``
as a scalar; each data key's ``source`` names the dataset or PV it came from.

Spectra and frames: in place, or copied
---------------------------------------
Tiled serves an external HDF5 dataset through bluesky-tiled-plugins'
``HDF5Consolidator`` as ``(events, *per-event shape)``, read by tiled's
``HDF5ArrayAdapter`` with the dataset's own axes; its only reshaping
parameters, ``slice`` and ``squeeze``, can drop axes but never add one or
transpose. A dataset can therefore be referenced in place only if its leading
axis is the event axis: Data Exchange's ``/exchange/data`` (angles, rows,
cols), one event per angle, is (and so are ``data_white``/``data_dark``).
Every other layout is copied with :class:`~xfct_bluesky.storage.StreamHDF5Writer`
into ``<asset_dir>/imported/<sha256[:12]>/`` (a tomography:
``imported/tomo-<hash>/``): MDA spectra (XDR, not HDF5), flyXRF ``data_a..d``
and MAPS ``mca_arr`` (channels first, one dataset per element for flyXRF),
PyXRF ``detsum/counts`` (rows, cols, channels: no event axis).

Tiled reads external files only under its readable storage
(``<data dir>/assets`` for :func:`~xfct_bluesky.storage.embedded_server`). A
file to be referenced in place that is not under ``asset_dir`` is copied,
byte for byte, to ``<asset_dir>/imported/<sha256[:12]>/<name>`` once (an
identical copy already there is reused) and referenced there; its
``source.path`` stays the original. Without ``asset_dir`` the original is
referenced where it is (the server must be able to read it) and a file whose
spectra need a copy is refused.

Errors
------
A file of no recognised format, truncated or damaged, missing a dataset, with
an axis that is not monotonic, ... raises a ``ValueError`` naming the file
and the reason before any document is written: :func:`import_files` composes
and validates every run first, and writes none if one file fails (the files
it had copied into ``asset_dir`` are removed again).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import shutil
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import event_model
import h5py

from ..storage.hdf5 import StreamHDF5Writer
from ..validate import one_of
from ._mapping import (
    ImportFormatError,
    InPlace,
    Mapped,
    Stream,
    map_dxchange,
    map_flyxrf,
    map_maps,
    map_mda,
    map_pyxrf,
    plain,
)

__all__ = ["FORMATS", "ImportFormatError", "ImportResult", "detect_format",
           "documents_from_file", "import_files"]

logger = logging.getLogger(__name__)

FORMATS: dict[str, str] = {
    "mda": "synApps MDA (sscan saveData, XDR; versions 1.3, 1.4)",
    "flyxrf": "APS flyXRF raw HDF5 (/MAPS_RAW)",
    "maps": "XRF-Maps / MAPS analysed HDF5 (/MAPS)",
    "pyxrf": "NSLS-II PyXRF HDF5 (/xrfmap)",
    "dxchange": "Data Exchange HDF5 (/exchange)",
}
"""``fmt`` values :func:`documents_from_file` accepts, and what each is."""

THETA_TOLERANCE = 1e-6
"""Degrees: two maps of one tomography closer than this in theta are the same angle (refused)."""
_HDF5_GROUPS = (("MAPS_RAW", "flyxrf"), ("MAPS", "maps"), ("xrfmap", "pyxrf"), ("exchange", "dxchange"))


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_files` did with one file.

    ``outcome`` is "imported" (``uid`` the run's) or "skipped" (``uid`` the run
    that already holds it, or None); ``reason`` says why, in words.
    """

    path: Path
    uid: str | None
    outcome: Literal["imported", "skipped"]
    reason: str


# --------------------------------------------------------------------------- reading a file


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unknown(path: Path, what: str) -> ImportFormatError:
    known = "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
    return ImportFormatError(f"{path}: {what}; the formats recognised are {known} (give fmt= to force one)")


def detect_format(path: str | Path) -> str:
    """The format of a file (a key of :data:`FORMATS`), from its content.

    HDF5 files by their top-level group (``MAPS_RAW``, ``MAPS``, ``xrfmap``,
    ``exchange``, in that order); MDA by its XDR header (version 1.3 or 1.4,
    rank 1 to 4), or its ``.mda`` extension. A ``ValueError`` names the file
    and the formats recognised otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                groups = sorted(f)
        except OSError as err:
            raise ImportFormatError(f"{path}: an HDF5 file that cannot be opened ({err}): truncated or damaged; "
                                    "copy it again from its source") from None
        for group, fmt in _HDF5_GROUPS:
            if group in groups:
                return fmt
        raise _unknown(path, f"an HDF5 file with none of the groups the formats use (it has {groups[:8]})")
    head = path.read_bytes()[:12]
    if len(head) == 12:
        version, _, rank = struct.unpack(">fii", head)
        if round(version * 100) in (130, 140) and 1 <= rank <= 4:
            return "mda"
    if path.suffix.lower() == ".mda":
        return "mda"  # the reader says what is wrong with it
    raise _unknown(path, f"neither HDF5 nor MDA ({path.stat().st_size} bytes)")


def _map(path: Path, fmt: str | None, *, theta_pv: str | None, flyxrf) -> Mapped:
    fmt = detect_format(path) if fmt is None else one_of("fmt", fmt, sorted(FORMATS),
                                                          fix="Or None: detect the format from the content.")
    try:
        return _read_and_map(path, fmt, theta_pv=theta_pv, flyxrf=flyxrf)
    except FileNotFoundError:
        raise
    except OSError as err:  # h5py on a file cut short or damaged past its superblock
        raise ImportFormatError(f"{path}: cannot be read as {FORMATS[fmt]} ({err}): truncated or damaged; "
                                "copy it again from its source") from None
    except ImportFormatError:
        raise
    except ValueError as err:  # the reader's own error names the file, the place and the fix
        raise ImportFormatError(f"{err} [read as {fmt}: {FORMATS[fmt]}; the formats recognised are "
                                f"{', '.join(FORMATS)}]") from err


def _read_and_map(path: Path, fmt: str, *, theta_pv: str | None, flyxrf) -> Mapped:
    from .dxchange import read_dxchange
    from .flyxrf import read_flyxrf
    from .maps_hdf5 import read_maps_hdf5
    from .mda import read_mda
    from .pyxrf import read_pyxrf

    if fmt == "mda":
        return map_mda(read_mda(path), theta_pv=theta_pv, flyxrf=flyxrf)
    if fmt == "maps":
        return map_maps(read_maps_hdf5(path, theta_pv=theta_pv))
    if theta_pv is not None:
        raise ValueError(f"theta_pv={theta_pv!r} is for MDA and MAPS files (their extra PVs); {path} is {fmt}")
    if fmt == "flyxrf":
        return map_flyxrf(read_flyxrf(path))
    if fmt == "pyxrf":
        return map_pyxrf(read_pyxrf(path))
    return map_dxchange(read_dxchange(path))


# --------------------------------------------------------------------------- composing a run


class _Composer:
    """The documents of one run from one or more mapped files; the files it writes in ``asset_dir``."""

    def __init__(self, asset_dir: str | Path | None):
        self.asset_dir = None if asset_dir is None else Path(asset_dir).resolve()
        self.created: list[Path] = []

    def cleanup(self) -> None:
        """Remove the files (and folders left empty) this composer created."""
        for path in reversed(self.created):
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)
        self.created.clear()

    def _folder(self, name: str, path: Path, why: str) -> Path:
        if self.asset_dir is None:
            raise ImportFormatError(
                f"{path}: {why}, into an HDF5 file the Tiled server can read; give asset_dir= (the data "
                "folder's assets/, e.g. <data dir>/assets)")
        folder = self.asset_dir / "imported" / name
        for parent in reversed([folder, *folder.parents]):
            if not parent.exists():
                parent.mkdir()
                self.created.append(parent)
        return folder

    def _readable(self, part: InPlace, sha: str) -> Path:
        """Where the server reads ``part.path``: itself if under asset_dir (or no asset_dir), else a copy there."""
        source = part.path.resolve()
        if self.asset_dir is None or source.is_relative_to(self.asset_dir):
            return source
        target = self._folder(sha[:12], part.path, "it is outside the server's readable storage and is copied")
        target = target / source.name
        if target.exists() and sha256_of(target) == sha:
            return target
        shutil.copyfile(source, target)
        self.created.append(target)
        if sha256_of(target) != sha:
            raise OSError(f"{target}: the copy of {source} differs from it (sha256); the disk may be full")
        return target

    def compose(self, files: list[Mapped], shas: list[dict[str, str]], *, sample: str | None,
                tomo: bool) -> list[tuple[str, dict]]:
        now = time.time()
        primary = _merge(files) if tomo else files[0].streams["primary"]
        streams = {"primary": primary, **{k: v for k, v in files[0].streams.items() if k != "primary"}}
        md = _start_metadata(files, shas, sample=sample, tomo=tomo)
        bundle = event_model.compose_run(time=now, metadata=md)
        docs: list[tuple[str, dict]] = [("start", bundle.start_doc)]
        asset_name = shas[0]["sha256"][:12] if len(files) == 1 else "tomo-" + hashlib.sha256(
            "".join(s["sha256"] for s in shas).encode()).hexdigest()[:12]
        for name, stream in streams.items():
            _check_storable(files[0].path, name, stream)
            desc = bundle.compose_descriptor(name=name, data_keys=stream.data_keys)
            docs.append(("descriptor", desc.descriptor_doc))
            for key, sources in stream.external.items():
                start = 0
                for sres_doc, n in self._external(key, sources, stream.data_keys[key], files, shas, asset_name,
                                                  bundle):
                    docs.append(("stream_resource", sres_doc.stream_resource_doc))
                    docs.append(("stream_datum", sres_doc.compose_stream_datum(
                        indices={"start": 0, "stop": n}, seq_nums={"start": start + 1, "stop": start + n + 1},
                        descriptor=desc.descriptor_doc)))
                    start += n
            for event in stream.events:
                docs.append(("event", desc.compose_event(data=dict(event), timestamps={k: now for k in event})))
        docs.append(("stop", bundle.compose_stop(exit_status="success")))
        for name, doc in docs:
            event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        return docs

    def _external(self, key, sources, spec, files, shas, asset_name, bundle):
        """(stream-resource bundle, frames it holds) for one external data key."""
        if isinstance(sources[0], InPlace):
            for part in sources:
                sha = next(s["sha256"] for m, s in zip(files, shas, strict=True) if m.path == part.path)
                uri = self._readable(part, sha).as_uri()
                yield bundle.compose_stream_resource(
                    mimetype="application/x-hdf5", uri=uri, data_key=key,
                    parameters={"dataset": part.dataset, "chunk_shape": list(part.chunk_shape), "swmr": False},
                ), part.n_frames
            return
        folder = self._folder(asset_name, files[0].path, f"its {key} ({spec['source']}) must be copied")
        writer = StreamHDF5Writer(folder, data_key=key, dtype=sources[0].dtype, frame_shape=sources[0].shape,
                                  source=spec["source"], swmr=False)
        path = writer.open(f"{files[0].path.stem}_{key}")
        self.created.append(path)
        try:
            for frame in sources:
                writer.write(frame)
            announced = dict(writer.collect_asset_docs())["stream_resource"]
        finally:
            writer.close()
        yield bundle.compose_stream_resource(mimetype=announced["mimetype"], uri=announced["uri"], data_key=key,
                                             parameters=announced["parameters"]), len(sources)


def _check_storable(path: Path, name: str, stream: Stream) -> None:
    """Refuse maps TiledWriter cannot store: it keeps arrays of up to ``MAX_ARRAY_SIZE`` elements in the event
    table, which holds no 2D arrays, and the run would fail half-written (see ``plans._checks``)."""
    from bluesky_tiled_plugins.writing.tiled_writer import MAX_ARRAY_SIZE

    for key, spec in stream.data_keys.items():
        shape = spec.get("shape") or []
        if key not in stream.external and len(shape) >= 2 and math.prod(shape) <= MAX_ARRAY_SIZE:
            raise ImportFormatError(
                f"{path}: its {name} field {key!r} ({spec.get('source', '')}) is {tuple(shape)}, {math.prod(shape)} "
                f"values: too small to store (TiledWriter keeps arrays of up to {MAX_ARRAY_SIZE} values in a table "
                f"that cannot hold maps); maps need more than {MAX_ARRAY_SIZE} pixels")


def _start_metadata(files: list[Mapped], shas: list[dict[str, str]], *, sample, tomo: bool) -> dict[str, Any]:
    """The start document's metadata: the scan's (each file's, in a tomography), then source, shape, quantities."""
    first = files[0]
    md: dict[str, Any] = {}
    if not tomo:
        md.update({k: v for k, v in first.metadata.items() if v is not None})
        source = {"path": str(first.path.resolve()), "sha256": shas[0]["sha256"], "format": first.format_label,
                  "reader": first.reader}
        for role, path in first.companions.items():
            source[role] = {"path": str(path.resolve()), "sha256": shas[0][role],
                            "format": first.companion_formats[role],
                            "reader": f"xfct_bluesky.importers.{role} {first.reader.rsplit(' ', 1)[-1]}"}
        if first.theta is not None:
            md["theta"] = first.theta
    else:
        instruments = sorted({m.metadata.get("instrument", "unknown") for m in files})
        md["instrument"] = instruments[0] if len(instruments) == 1 else instruments
        md["files"] = [{"path": str(m.path.resolve()),
                        **{k: v for k, v in m.metadata.items() if k != "instrument" and v is not None}}
                       for m in files]
        md["angles"] = [m.theta for m in files]
        source = {"path": [str(m.path.resolve()) for m in files], "sha256": [s["sha256"] for s in shas],
                  "format": [m.format_label for m in files], "reader": first.reader}
        for role in sorted({r for m in files for r in m.companions}):
            source[role] = {"path": [str(m.companions[role].resolve()) if role in m.companions else None
                                     for m in files],
                            "sha256": [s.get(role) for s in shas]}
        md["hints"] = {"dimensions": [(["theta"], "primary")]}
    file_sample = md.pop("file_sample", None) if not tomo else first.metadata.get("file_sample")
    md.update(plan_name="import", source=source, shape=list(first.shape), quantities=dict(first.quantities))
    if sample is not None or file_sample is not None:
        md["sample"] = sample if sample is not None else file_sample
    if "theta" in first.streams["primary"].data_keys:
        md["theta_key"] = "theta"
    return plain(md)


def _merge(files: list[Mapped]) -> Stream:
    """One ``primary`` stream of the files' single events, in the order given (sorted by theta)."""
    ref = files[0].streams["primary"]
    signature = {k: (v["shape"], v["dtype_numpy"], "external" in v) for k, v in ref.data_keys.items()}
    merged = Stream(data_keys=dict(ref.data_keys), external={k: [] for k in ref.external})
    for m in files:
        stream = m.streams["primary"]
        other = {k: (v["shape"], v["dtype_numpy"], "external" in v) for k, v in stream.data_keys.items()}
        if other != signature:
            extra, missing = sorted(set(other) - set(signature)), sorted(set(signature) - set(other))
            differ = sorted(k for k in set(other) & set(signature) if other[k] != signature[k])
            raise ImportFormatError(
                f"{m.path}: its maps differ from those of {files[0].path} (keys only here: {extra[:6]}, only "
                f"there: {missing[:6]}, other shape or dtype: "
                f"{[(k, other[k][:2], signature[k][:2]) for k in differ[:4]]}); one tomography needs maps "
                "of one kind and size")
        if len(stream.events) != 1 or len(m.streams) != 1:
            raise ImportFormatError(f"{m.path}: already a stack of {len(stream.events)} frames, not one map; "
                                    "import it on its own (tomo=False)")
        merged.events.append(stream.events[0])
        for key, frames in stream.external.items():
            merged.external[key].extend(frames)
    return merged


def _order_by_theta(files: list[Mapped], theta_pv: str | None) -> list[Mapped]:
    for m in files:
        if m.fmt == "dxchange":
            raise ImportFormatError(f"{m.path}: a Data Exchange file is a tomography already; import it with "
                                    "tomo=False")
        if m.theta is None:
            hint = ("give theta_pv= the rotation stage's extra PV (e.g. theta_pv='2xfm:m53.VAL')"
                    if m.fmt in ("mda", "maps") else "its format has no other place for the angle")
            raise ImportFormatError(f"{m.path}: no rotation angle recorded, so it cannot be placed in a "
                                    f"tomography; {hint}" + (f" (theta_pv={theta_pv!r} was given)" if theta_pv
                                                             else ""))
    ordered = sorted(files, key=lambda m: m.theta)
    for a, b in itertools.pairwise(ordered):
        if abs(a.theta - b.theta) <= THETA_TOLERANCE:
            raise ImportFormatError(f"{a.path} and {b.path} are at the same angle, theta = {a.theta:g} and "
                                    f"{b.theta:g} deg: one tomography takes one map per angle; leave one out")
    return ordered


def documents_from_file(path: str | Path, *, fmt: str | None = None, sample: str | None = None,
                        asset_dir: str | Path | None = None, theta_pv: str | None = None,
                        flyxrf: str | Path | bool | None = None) -> list[tuple[str, dict]]:
    """The documents of one run holding one file, composed with event-model and schema-validated.

    Parameters
    ----------
    path : str or pathlib.Path
        The file.
    fmt : {"mda", "flyxrf", "maps", "pyxrf", "dxchange"}, optional
        Its format (:data:`FORMATS`); default: detected from its content
        (:func:`detect_format`).
    sample : str, optional
        The start document's ``sample`` (default: the file's sample name, if any).
    asset_dir : str or pathlib.Path, optional
        A folder the Tiled server reads (``<data dir>/assets``): spectra that
        cannot be referenced in place are copied there, and a file to be
        referenced in place that lies elsewhere is copied there once (see the
        module docstring). Required for files with such spectra.
    theta_pv : str, optional
        MDA and MAPS: the extra PV holding the rotation angle (degrees),
        e.g. ``"2xfm:m53.VAL"``. Default: MDA the motor described as "tomo
        rotation", MAPS ``/MAPS/Scan/theta``.
    flyxrf : path, bool or None, optional
        A rank-2 MDA fly scan's spectra file: None (default) looks where
        XRF-Maps does (``../flyXRF/<stem>_*__0.h5``) and imports it if there;
        True requires it there; a path names it; False imports the MDA alone.

    Returns
    -------
    list of (str, dict)
        start, descriptor(s), stream_resource / stream_datum, event(s), stop.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        Unknown format, truncated or damaged file, missing dataset,
        non-monotonic axis, ... (the reader's error, or
        :class:`ImportFormatError`): the message names the file and the reason.
        Files copied into ``asset_dir`` before the error are removed.

    Examples
    --------
    >>> docs = documents_from_file("2xfm_0010.mda", asset_dir=data_dir / "assets")    # doctest: +SKIP
    >>> docs[0][1]["quantities"]["i0"], docs[0][1]["source"]["format"]                  # doctest: +SKIP
    ('i0', 'synApps MDA 1.3')
    """
    path = Path(path)
    mapped = _map(path, fmt, theta_pv=theta_pv, flyxrf=flyxrf)
    composer = _Composer(asset_dir)
    try:
        return composer.compose([mapped], [_shas(mapped)], sample=sample, tomo=False)
    except BaseException:
        composer.cleanup()
        raise


def _shas(m: Mapped, known: dict[Path, str] | None = None) -> dict[str, str]:
    """The sha256 of the file and of each companion (``known``: those already computed, by path)."""
    known = known or {}

    def sha(path: Path) -> str:
        return known.get(path) or sha256_of(path)

    return {"sha256": sha(m.path), **{role: sha(p) for role, p in m.companions.items()}}


# --------------------------------------------------------------------------- importing into Tiled


def _imported_as(container: Any, sha: str) -> tuple[str, bool] | None:
    """(uid, complete) of a run of ``container`` holding the file of this sha256 (alone, as a companion, or in
    a tomography), None if there is none; ``complete`` is False for a run without its stop document."""
    from tiled.queries import Contains, Key

    for query in (Key("start.source.sha256") == sha, Key("start.source.flyxrf.sha256") == sha,
                  Contains("start.source.sha256", sha), Contains("start.source.flyxrf.sha256", sha)):
        for uid, run in container.search(query).items():
            return uid, bool(run.metadata.get("stop"))
    return None


def _tomography_of(container: Any, shas: set[str]) -> str | None:
    """The uid of a tomography run of ``container`` made of exactly these files, or None."""
    from tiled.queries import Contains

    for uid, run in container.search(Contains("start.source.sha256", next(iter(shas)))).items():
        held = run.metadata["start"]["source"]["sha256"]
        if isinstance(held, list) and set(held) == shas:
            return uid
    return None


def import_files(paths: Iterable[str | Path], container: Any, *, tomo: bool = False, sample: str | None = None,
                 asset_dir: str | Path | None = None, theta_pv: str | None = None,
                 flyxrf: str | Path | bool | None = None) -> list[ImportResult]:
    """Import files into a Tiled runs container: one run per file, or one tomography of them all.

    Parameters
    ----------
    paths : iterable of str or pathlib.Path
        The files (any of :data:`FORMATS`, detected from their content).
    container : tiled container
        Where the runs go, e.g. :func:`~xfct_bluesky.storage.runs_container`.
    tomo : bool, optional
        One run of all the files, one ``primary`` event per file sorted by
        theta (maps of one kind and size, each with its angle; two at the
        same angle, within :data:`THETA_TOLERANCE`, are refused naming both).
        Files imported before as runs of their own may join a tomography;
        the same set of files as a tomography already there is skipped.
    sample, asset_dir, theta_pv, flyxrf
        As for :func:`documents_from_file`.

    Returns
    -------
    list of ImportResult
        One per path, in the order given: ``imported`` with the run's uid,
        or ``skipped`` (already in the container, found by
        ``start.source.sha256``; the same content twice in ``paths``; the
        flyXRF file of an MDA file also given) with the reason.

    Raises
    ------
    ValueError
        If any file cannot be imported (no such file, unknown format,
        truncated, missing dataset, non-monotonic axis, no angle for a
        tomography, ...): the message names every such file and why.
        Every run is composed and validated before the first document is
        written, so then nothing is written to the container.

    Notes
    -----
    The checks cover the files; a server that fails while the runs are
    written (TiledWriter's own error, after its retries) leaves the runs
    written so far, and the one in flight partial: import the same files
    again once it is back; those stored complete are skipped, and the
    partial one is reported (skipped, with how to delete it).

    Examples
    --------
    >>> results = import_files(["2xfm_0010.mda", "axo_std.mda"], cat, asset_dir=data_dir / "assets")  # doctest: +SKIP
    >>> [(r.outcome, r.uid is not None) for r in results]                             # doctest: +SKIP
    [('imported', True), ('imported', True)]
    """
    from ..storage.writing import make_tiled_writer

    paths = [Path(p) for p in paths]
    results: dict[int, ImportResult] = {}
    errors: list[str] = []
    by_sha: dict[str, int] = {}
    todo: list[int] = []
    for i, path in enumerate(paths):
        if not path.is_file():
            errors.append(f"{path}: no such file")
            continue
        sha = sha256_of(path)
        if sha in by_sha:
            results[i] = ImportResult(path, None, "skipped", f"the same content as {paths[by_sha[sha]]}, given too")
        elif not tomo and (found := _imported_as(container, sha)) is not None:
            uid, complete = found
            results[i] = ImportResult(path, uid, "skipped", f"already imported: run {uid} holds it (sha256 {sha})"
                                      if complete else f"run {uid} holds it but has no stop document (its "
                                      f"import was cut short): delete it (container.delete_contents('{uid}', "
                                      "recursive=True, external_only=False)), then import again")
        else:
            by_sha[sha] = i
            todo.append(i)
    if tomo and todo and (uid := _tomography_of(container, set(by_sha))) is not None:
        for i in todo:
            results[i] = ImportResult(paths[i], uid, "skipped", f"already imported: the tomography run {uid} "
                                      "holds these files")
        todo = []
    mapped: dict[int, Mapped] = {}
    for i in todo:
        try:
            mapped[i] = _map(paths[i], None, theta_pv=theta_pv, flyxrf=flyxrf)
        except (ValueError, OSError, KeyError) as err:
            errors.append(str(err) if str(paths[i]) in str(err) else f"{paths[i]}: {err}")
    companions = {p.resolve(): i for i, m in mapped.items() for p in m.companions.values()}
    for i in list(mapped):
        owner = companions.get(paths[i].resolve())
        if owner is not None and owner != i:
            results[i] = ImportResult(paths[i], None, "skipped",
                                      f"imported with {paths[owner]} as its spectra (its flyXRF file)")
            del mapped[i]
    composer = _Composer(asset_dir)
    runs: list[tuple[list[int], list[tuple[str, dict]]]] = []
    try:
        if not errors and mapped:
            groups = [list(mapped)] if tomo else [[i] for i in mapped]
            for group in groups:
                try:
                    files = [mapped[i] for i in group]
                    if tomo:
                        files = _order_by_theta(files, theta_pv)
                    order = [next(i for i in group if mapped[i] is m) for m in files]
                    known = {paths[i]: sha for sha, i in by_sha.items()}
                    docs = composer.compose(files, [_shas(m, known) for m in files], sample=sample, tomo=tomo)
                    runs.append((order, docs))
                except (ValueError, OSError) as err:
                    errors.append(str(err))
        if errors:
            raise ValueError(f"nothing imported: {len(errors)} file(s) cannot be: " + "; ".join(errors))
    except BaseException:
        composer.cleanup()
        raise
    for order, docs in runs:
        writer = make_tiled_writer(container)
        for name, doc in docs:
            writer(name, doc)
        uid = docs[0][1]["uid"]
        for k, i in enumerate(order):
            reason = (f"event {k + 1} of {len(order)} of the tomography, theta = {mapped[i].theta:g} deg"
                      if tomo else "a run of its own")
            results[i] = ImportResult(paths[i], uid, "imported", reason)
        logger.info("Imported %s as run %s", ", ".join(str(paths[i]) for i in order), uid)
    return [results[i] for i in range(len(paths))]
