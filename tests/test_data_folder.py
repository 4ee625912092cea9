"""The data folder as a whole: moved, copied, read-only, damaged, or missing a file (issue 12, items 5 and 6).

One tiny run (two angles, a 4x5 float32 map per event, 4x5x8 uint32 spectra
in an HDF5 file through StreamHDF5Writer) is written once by TiledWriter into
an ``original`` folder; each test works on a copy of it. Tiled servers are
started only where data must be read back (about 4 s each); the checks of
:func:`prepare_data_folder` run without a server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sqlite3
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from xfct_bluesky.storage import (
    DataFolderError,
    StreamHDF5Writer,
    embedded_server,
    load_spectra,
    load_tomo,
)
from xfct_bluesky.storage import folder as folder_module
from xfct_bluesky.storage.folder import ASSETS_SUBDIR, _rebase, prepare_data_folder
from xfct_bluesky.storage.readonly import ReadOnlyTiledServer
from xfct_bluesky.storage.server import runs_container

NY, NX, NCHAN = 4, 5, 8  # 20 pixels: maps above TiledWriter's MAX_ARRAY_SIZE (16) go to zarr, not the table
ANGLES = [0.0, 30.0]


def _device_class():
    """A mapper with one 2D map in its events and its spectra in HDF5 (StreamResource/StreamDatum)."""
    from ophyd import Component as Cpt
    from ophyd import Device, Signal
    from ophyd.status import StatusBase

    class TinyMapper(Device):
        fe = Cpt(Signal, value=np.zeros((NY, NX), np.float32), kind="hinted")

        def __init__(self, *args, asset_dir, **kwargs):
            super().__init__(*args, **kwargs)
            self._writer = StreamHDF5Writer(asset_dir, data_key=f"{self.name}_spectra", dtype=np.uint32,
                                            frame_shape=(NY, NX, NCHAN))
            self._rng = np.random.default_rng(7)
            self.fe_maps, self.spectra = [], []

        def stage(self):
            self._writer.open(self.name)
            return super().stage()

        def unstage(self):
            try:
                return super().unstage()
            finally:
                self._writer.close()

        def trigger(self):
            spectra = self._rng.poisson(4.0, size=(NY, NX, NCHAN)).astype(np.uint32)
            fe = spectra.sum(axis=-1).astype(np.float32)
            self.fe.put(fe)
            self._writer.write(spectra)
            self.fe_maps.append(fe)
            self.spectra.append(spectra)
            status = StatusBase()
            status.set_finished()
            return status

        def describe(self):
            description = super().describe()
            description[self.fe.name]["dtype_numpy"] = np.dtype(np.float32).str
            description.update(self._writer.describe_key())
            return description

        def collect_asset_docs(self, index=None):
            yield from self._writer.collect_asset_docs(index)

        def get_index(self):
            return self._writer.get_index()

    return TinyMapper


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A data folder holding one run written by TiledWriter, and what the device produced."""
    import bluesky.plans as bp
    from bluesky import RunEngine
    from bluesky_tiled_plugins import TiledWriter
    from ophyd.sim import SynAxis
    from tiled.client import from_uri

    root = tmp_path_factory.mktemp("folders") / "original"
    with embedded_server(root) as server:
        client = from_uri(server.uri)
        try:
            engine = RunEngine({})
            engine.subscribe(TiledWriter(runs_container(client)))
            det = _device_class()(name="det", asset_dir=root / ASSETS_SUBDIR)
            (uid,) = engine(bp.list_scan([det], SynAxis(name="theta"), ANGLES))
        finally:
            client.context.close()
    (h5_file,) = (root / ASSETS_SUBDIR).glob("*.h5")
    return types.SimpleNamespace(root=root, uid=uid, fe=np.stack(det.fe_maps), spectra=np.stack(det.spectra),
                                 h5_name=h5_file.name)


# --------------------------------------------------------------------------- helpers
def _copy(src: Path, dst: Path) -> Path:
    """``cp -r src dst`` (without the server logs, which are not part of the data)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.log"))
    return dst


@contextlib.contextmanager
def _hidden(path: Path):
    """The folder renamed away for the block, as if deleted: anything still reading it fails."""
    away = path.with_name(path.name + ".hidden")
    path.rename(away)
    try:
        yield
    finally:
        away.rename(path)


def _asset_uris(catalog: Path) -> list[str]:
    con = sqlite3.connect(catalog)
    try:
        return [row[0] for row in con.execute("SELECT data_uri FROM assets")]
    finally:
        con.close()


def _marker(root: Path) -> dict:
    return json.loads((root / "tiled" / "folder.json").read_text())


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root``."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _read_back(server, uid: str):
    from tiled.client import from_uri

    client = from_uri(server.uri)
    try:
        run = runs_container(client)[uid]
        return load_tomo(run), load_spectra(run, "det_spectra")
    finally:
        client.context.close()


def _zarr_dir(root: Path, uid: str) -> Path:
    return root / "tiled" / "data" / "raw" / uid / "primary" / "det_fe"


# --------------------------------------------------------------------------- moved and copied folders
def test_rebase_keeps_each_uri_form():
    assert _rebase("file://localhost/d/a/tiled/data/raw/u/primary/k", "/d/a", "/e/b") == \
        "file://localhost/e/b/tiled/data/raw/u/primary/k"
    assert _rebase("duckdb://localhost//d/a/tiled/storage.duckdb", "/d/a", "/e/b") == \
        "duckdb://localhost//e/b/tiled/storage.duckdb"
    assert _rebase("file:///d/a/assets/x.h5", "/d/a", "/e/b") == "file:///e/b/assets/x.h5"
    # Path.as_uri() percent-encodes: matched and rewritten in the same form.
    assert _rebase("file:///d/my%20a/assets/x.h5", "/d/my a", "/e/b c") == "file:///e/b%20c/assets/x.h5"
    assert _rebase("file:///d/ab/assets/x.h5", "/d/a", "/e/b") is None  # /d/ab is not under /d/a
    assert _rebase("postgresql://host/db", "/d/a", "/e/b") is None


def test_copied_then_moved_folder_reads_its_own_files_and_names_a_missing_one(original, tmp_path):
    """``cp -r original copy``, ``mv copy moved``, the spectra modified in ``moved`` and the original
    out of the way: the server reads ``moved``'s own files. Then a deleted spectra file (and a deleted
    map) is named in a DataFolderError, not a bare HTTP 500 after tiled's retries (about 25 s)."""
    copy = prepare_data_folder(_copy(original.root, tmp_path / "copy")).root
    copied = _marker(copy)
    assert copied["copied_from"] == {"path": str(original.root), "id": _marker(original.root)["id"]}
    moved = Path(shutil.move(copy, tmp_path / "moved"))
    with h5py.File(moved / ASSETS_SUBDIR / original.h5_name, "r+") as h5:
        h5["/entry/data/spectra"][...] += 1000

    with _hidden(original.root), embedded_server(moved) as server:
        uris = _asset_uris(moved / "tiled" / "catalog.db")
        assert len(uris) == 3 and all(str(moved) in uri for uri in uris), uris
        assert _marker(moved) == {"format": 1, "id": copied["id"], "path": str(moved), "moved_from": str(copy)}

        tomo, spectra = _read_back(server, original.uid)
        np.testing.assert_array_equal(tomo.theta, ANGLES)
        np.testing.assert_array_equal(tomo.maps["det_fe"], original.fe)
        np.testing.assert_array_equal(spectra, original.spectra + 1000)

        h5_file = moved / ASSETS_SUBDIR / original.h5_name
        with _hidden(h5_file), pytest.raises(DataFolderError) as err:
            _read_back(server, original.uid)
        assert str(err.value) == (
            f"missing file {h5_file}: raw/{original.uid}/primary/det_spectra (data key 'det_spectra') points to "
            "it; restore it from a backup, or from the data folder this one was copied from")
        zarr_dir = _zarr_dir(moved, original.uid)
        with _hidden(zarr_dir), pytest.raises(DataFolderError, match=f"missing file {zarr_dir}: "):
            _read_back(server, original.uid)


def test_copy_gets_an_id_of_its_own_and_leaves_the_original_alone(original, tmp_path, caplog):
    catalog = original.root / "tiled" / "catalog.db"
    before = catalog.read_bytes()
    copy = _copy(original.root, tmp_path / "copy")
    with caplog.at_level("WARNING", logger="xfct_bluesky.storage.folder"):
        prepare_data_folder(copy)
    assert f"Data folder {copy} was used at {original.root} before: rewrote 3 file URIs" in caplog.text
    marker, first = _marker(copy), _marker(original.root)
    assert marker["path"] == str(copy) and marker["id"] != first["id"]
    assert marker["copied_from"] == {"path": str(original.root), "id": first["id"]}
    assert catalog.read_bytes() == before
    caplog.clear()
    prepare_data_folder(copy)  # opened again where it is: nothing to rewrite
    assert "rewrote" not in caplog.text and _marker(copy) == marker


def test_a_catalog_from_another_folder_is_refused(original, tmp_path):
    """Only tiled/catalog.db copied (its zarr arrays and tables stay behind): refused, catalog unchanged."""
    other = tmp_path / "other"
    (other / "tiled").mkdir(parents=True)
    shutil.copyfile(original.root / "tiled" / "catalog.db", other / "tiled" / "catalog.db")
    before = (other / "tiled" / "catalog.db").read_bytes()
    with pytest.raises(DataFolderError) as err:
        prepare_data_folder(other)
    message = str(err.value)
    assert message.startswith(f"{other}/tiled/catalog.db was written in {original.root} and none of its files")
    assert "it belongs to another data folder" in message and "\n" not in message
    assert (other / "tiled" / "catalog.db").read_bytes() == before
    assert not (other / "tiled" / "folder.json").exists()


def test_runs_written_after_an_unrewritten_move_are_merged(original, tmp_path):
    """A folder moved and written by a version that did not rewrite holds both the old and the new
    URI of its table file; the old one is merged into the new one (data_uri is unique)."""
    moved = _copy(original.root, tmp_path / "moved")
    catalog = moved / "tiled" / "catalog.db"
    (moved / "tiled" / "folder.json").unlink()  # as before markers existed: the old path comes from the catalog
    new_tables = f"duckdb://localhost/{moved}/tiled/storage.duckdb"
    con = sqlite3.connect(catalog)
    with con:
        con.execute("INSERT INTO assets (data_uri, is_directory) VALUES (?, 0)", (new_tables,))
    con.close()
    prepare_data_folder(moved)
    con = sqlite3.connect(catalog)
    try:
        rows = dict(con.execute("SELECT data_uri, id FROM assets"))
        linked = {uri for (uri,) in con.execute(
            "SELECT a.data_uri FROM data_source_asset_association AS l JOIN assets AS a ON a.id = l.asset_id")}
    finally:
        con.close()
    assert len(rows) == 3 and all(str(moved) in uri for uri in rows)
    assert new_tables in linked  # the run's table now points at the surviving row


def test_serve_on_a_moved_folder_serves_the_runs_written_before_the_move(original, tmp_path):
    """``xfct-bluesky serve`` (``tiled serve catalog`` in a subprocess) on a folder moved away from
    where its run was written: the catalog is rewritten first, so the run reads back over HTTP."""
    from servers import kill_server, start_server
    from tiled.client import from_uri

    moved = _copy(original.root, tmp_path / "moved")
    with _hidden(original.root):  # the old path is gone, as after ``mv``
        proc, url = start_server(moved, tmp_path / "serve.log")
        try:
            client = from_uri(url, api_key=(moved / "api_key").read_text().strip())
            try:
                run = runs_container(client)[original.uid]
                tomo, spectra = load_tomo(run), load_spectra(run, "det_spectra")
            finally:
                client.context.close()
        finally:
            kill_server(proc)
    assert all(str(moved) in uri for uri in _asset_uris(moved / "tiled" / "catalog.db"))
    assert _marker(moved)["moved_from"] == str(original.root)
    np.testing.assert_array_equal(tomo.maps["det_fe"], original.fe)
    np.testing.assert_array_equal(spectra, original.spectra)


# --------------------------------------------------------------------------- read-only folders
def test_read_only_folder_is_read_and_never_written(original, tmp_path):
    """Forced read-only (holds as root too): SQLite ``mode=ro``, DuckDB ``READ_ONLY``, writes refused
    with 403. The folder also moved: it is read through a rewritten temporary copy of its catalog."""
    folder = _copy(original.root, tmp_path / "read-only")
    before = _snapshot(folder)
    out = io.StringIO()
    with _hidden(original.root), embedded_server(folder, read_only=True) as server:
        assert isinstance(server, ReadOnlyTiledServer)
        tomo, spectra = _read_back(server, original.uid)
        from xfct_bluesky import cli

        with contextlib.redirect_stdout(out):
            assert cli.main(["show", original.uid[:8], "--uri", server.uri]) == 0
        from tiled.client import from_uri

        client = from_uri(server.uri)
        try:
            with pytest.raises(Exception, match="is open read-only: nothing can be written") as err:
                client.create_container(key="new")
            assert err.value.response.status_code == 403
        finally:
            client.context.close()
    np.testing.assert_array_equal(tomo.maps["det_fe"], original.fe)
    np.testing.assert_array_equal(spectra, original.spectra)
    assert original.uid[:8] in out.getvalue() and "stream primary: " in out.getvalue()
    assert _snapshot(folder) == before  # not a byte, not a new file (no logs, no marker)


def test_ls_on_a_folder_this_process_may_not_write(original, tmp_path, monkeypatch, capsys):
    """``ls`` with write access denied. As root ``os.access`` grants everything, so the check of the
    folder's permissions is made to report the catalog unwritable; the CLI's own path is unchanged."""
    from xfct_bluesky import cli

    folder = prepare_data_folder(_copy(original.root, tmp_path / "locked")).root
    before = _snapshot(folder)
    monkeypatch.setattr(folder_module, "_first_unwritable", lambda f: f.catalog_path)
    assert prepare_data_folder(folder).read_only
    assert cli.main(["ls", "--data-dir", str(folder)]) == 0
    assert original.uid[:8] in capsys.readouterr().out
    assert _snapshot(folder) == before
    with pytest.raises(DataFolderError, match=f"data folder {folder} is not writable .*chmod -R u\\+w"):
        prepare_data_folder(folder, read_only=False)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write a chmod a-w folder: the read-only path is tested by forcing it instead")
def test_chmod_read_only_folder_is_opened_read_only(original, tmp_path):
    from tiled.client import from_uri

    folder = prepare_data_folder(_copy(original.root, tmp_path / "chmod")).root
    paths = [folder, *folder.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        assert prepare_data_folder(folder).read_only
        with embedded_server(folder) as server:
            assert isinstance(server, ReadOnlyTiledServer)
            client = from_uri(server.uri)
            try:
                assert original.uid in runs_container(client)
            finally:
                client.context.close()
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)


# --------------------------------------------------------------------------- unusable paths and catalogs
def test_a_file_is_not_a_data_folder(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    with pytest.raises(DataFolderError, match=f"data folder {path}: {path} is a file, not a folder; move"), \
            embedded_server(path):
        pass
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "tiled").write_text("x")
    with pytest.raises(DataFolderError, match=f"{tmp_path / 'd' / 'tiled'} is a file, not a folder"):
        prepare_data_folder(tmp_path / "d")


def test_a_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "data"
    expected = f"cannot create the data folder {target} \\({tmp_path / 'file'} is a file\\); give a data folder"
    with pytest.raises(DataFolderError, match=expected), embedded_server(target):
        pass


def _garbage_header(catalog: Path) -> None:
    catalog.write_bytes(b"this is not SQLite" * 100)


def _garbage_pages(catalog: Path) -> None:
    data = bytearray(catalog.read_bytes())
    data[4096 * 2: 4096 * 12] = np.random.default_rng(0).integers(0, 256, 4096 * 10, dtype=np.uint8).tobytes()
    catalog.write_bytes(bytes(data))


def _other_sqlite(catalog: Path) -> None:
    catalog.unlink()
    con = sqlite3.connect(catalog)
    con.execute("CREATE TABLE notes (x)")
    con.close()


@pytest.mark.parametrize(("damage", "expected"), [
    (_garbage_header, "is not a usable SQLite catalog (file is not a database)"),
    (_garbage_pages, "is damaged (SQLite: "),
    (_other_sqlite, "is an SQLite file but not a Tiled catalog"),
])
def test_a_damaged_catalog_is_named_before_any_server_starts(original, tmp_path, damage, expected):
    folder = _copy(original.root, tmp_path / "damaged")
    catalog = folder / "tiled" / "catalog.db"
    damage(catalog)
    with pytest.raises(DataFolderError) as err, embedded_server(folder):
        pass
    message = str(err.value)
    assert message.startswith(f"{catalog} {expected}"), message
    assert "\n" not in message
    if damage is not _other_sqlite:
        assert message.endswith(f"restore it from a backup, or move it aside (mv {catalog} {catalog}.damaged) "
                                "to start an empty catalog")
    assert not (folder / "tiled" / "error.log").exists()  # no server was started


def test_a_damaged_marker_is_named(original, tmp_path):
    folder = _copy(original.root, tmp_path / "marker")
    (folder / "tiled" / "folder.json").write_text("{not json")
    with pytest.raises(DataFolderError, match=r"folder.json is damaged \(.*\); delete it"):
        prepare_data_folder(folder)
