"""Storage layer: StreamHDF5Writer, and a RunEngine -> TiledWriter -> Tiled round trip.

The round trip runs twice, once per catalog (the ``store`` fixture): on the
suite's Tiled server (``shared_tiled`` of ``conftest.py``, SQLite and DuckDB
in its data folder) and on an embedded server whose catalog and tables are in
PostgreSQL (``postgres_store``: a throwaway cluster, ``postgres_server``;
skipped without PostgreSQL, failed under ``CI=true``). A tiny ophyd device
defined here produces two 2D maps (float32, uint16) as Signals and full
(ny, nx, nchan) uint32 spectra through a StreamHDF5Writer; the tests check that
what the device produced is what Tiled serves back, dtypes included, and that
every document the RunEngine emitted is valid.
"""

from __future__ import annotations

import collections
import copy
import time

import event_model
import h5py
import numpy as np
import pytest

from xfct_bluesky.storage import (
    StreamHDF5Writer,
    TomoData,
    default_data_dir,
    embedded_server,
    load_spectra,
    load_tomo,
    make_tiled_writer,
    read_backup,
    replay_backup,
    runs_container,
)
from xfct_bluesky.storage.folder import ASSETS_SUBDIR

# Non-square maps: square 2D arrays get duplicate dim names in xarray (see stack-notes).
NY, NX, NCHAN = 5, 7, 32


# --------------------------------------------------------------------------- device
def _make_device_class():
    """Build the device class lazily so that collecting this module stays cheap."""
    from ophyd import Component as Cpt
    from ophyd import Device, Signal
    from ophyd.status import StatusBase

    class FakeXRFMapper(Device):
        """Simulated XRF mapper: two 2D maps in the event, full spectra in HDF5.

        Same shape as a real fly-scanning detector's interface: ``stage`` opens
        the file, ``trigger`` acquires one map, ``collect_asset_docs``/``get_index``
        describe the frames written.
        """

        # No dtype=/shape= here: ophyd then writes dtype_numpy as np.dtype(...).name
        # ("uint16"), which event-model's schema rejects ("<u2" is required);
        # describe() below adds the schema-valid form.
        fe = Cpt(Signal, value=np.zeros((NY, NX), np.float32), kind="hinted")
        total = Cpt(Signal, value=np.zeros((NY, NX), np.uint16), kind="normal")
        _map_dtypes = {"fe": np.dtype(np.float32), "total": np.dtype(np.uint16)}

        def __init__(self, *args, asset_dir, seed=0, **kwargs):
            super().__init__(*args, **kwargs)
            self.spectra_key = f"{self.name}_spectra"
            self._writer = StreamHDF5Writer(
                asset_dir, data_key=self.spectra_key, dtype=np.uint32, frame_shape=(NY, NX, NCHAN)
            )
            self._rng = np.random.default_rng(seed)
            self.produced: dict[str, list[np.ndarray]] = collections.defaultdict(list)

        def stage(self):
            self._writer.open(self.name)
            return super().stage()

        def unstage(self):
            try:
                return super().unstage()
            finally:
                self._writer.close()

        def trigger(self):
            spectra = self._rng.poisson(3.0, size=(NY, NX, NCHAN)).astype(np.uint32)
            fe = (spectra[..., 10:14].sum(axis=-1) * 0.25).astype(np.float32)
            total = spectra.sum(axis=-1).astype(np.uint16)
            self.fe.put(fe)
            self.total.put(total)
            self._writer.write(spectra)
            self.produced["fe"].append(fe)
            self.produced["total"].append(total)
            self.produced["spectra"].append(spectra)
            status = StatusBase()
            status.set_finished()
            return status

        def describe(self):
            description = super().describe()
            for attr, dtype in self._map_dtypes.items():
                description[getattr(self, attr).name]["dtype_numpy"] = dtype.str
            description.update(self._writer.describe_key())
            return description

        def collect_asset_docs(self, index=None):
            yield from self._writer.collect_asset_docs(index)

        def get_index(self):
            return self._writer.get_index()

    return FakeXRFMapper


class DocumentRecorder:
    """RunEngine subscriber validating each document against event-model's schemas."""

    def __init__(self):
        self.docs: list[tuple[str, dict]] = []

    def __call__(self, name, doc):
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        self.docs.append((name, copy.deepcopy(doc)))

    def counts(self):
        return collections.Counter(name for name, _ in self.docs)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def postgres_store(postgres_server, tmp_path_factory):
    """An embedded Tiled server of this module on a PostgreSQL catalog (and tables), its arrays and assets in a
    data folder: the same attributes as ``shared_tiled``, and ``database`` (its URI, without the password,
    which the server reads from the password file named by ``PGPASSFILE``)."""
    from types import SimpleNamespace

    from tiled.client import from_uri

    database = postgres_server.create_database("storage_tests")
    root = tmp_path_factory.mktemp("postgres-tiled")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PGPASSFILE", str(postgres_server.pgpass))
        with embedded_server(root, catalog=database) as server:
            client = from_uri(server.uri)
            yield SimpleNamespace(data_dir=root, server=server, client=client, catalog=runs_container(client),
                                  database=database)
            client.context.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request):
    """The Tiled server of the round-trip tests, once per catalog: the suite's (SQLite), then ``postgres_store``."""
    return request.getfixturevalue("shared_tiled" if request.param == "sqlite" else "postgres_store")


#: For the tests of the client side (how load_tomo reads), the same whatever the catalog: the SQLite one only.
SQLITE_ONLY = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def data_dir(store):
    return store.data_dir


@pytest.fixture(scope="module")
def server(store):
    return store.server


@pytest.fixture(scope="module")
def client(store):
    return store.client


@pytest.fixture(scope="module")
def catalog(store):
    return store.catalog


@pytest.fixture(scope="module")
def RE(catalog):
    from bluesky import RunEngine

    engine = RunEngine({})
    engine.subscribe(make_tiled_writer(catalog))
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture(scope="module")
def device_class():
    return _make_device_class()


@pytest.fixture(scope="module")
def scan(RE, device_class, data_dir):
    """One list_scan over three angles; the device, documents and uid it produced."""
    import bluesky.plans as bp
    from ophyd.sim import SynAxis

    det = device_class(name="det", asset_dir=data_dir / ASSETS_SUBDIR)
    theta = SynAxis(name="theta")
    recorder = DocumentRecorder()
    token = RE.subscribe(recorder)
    try:
        (uid,) = RE(bp.list_scan([det], theta, [0, 10, 20]), sample="phantom-A", operator="tester")
    finally:
        RE.unsubscribe(token)
    return {"uid": uid, "det": det, "docs": recorder}


# --------------------------------------------------------------------------- StreamHDF5Writer alone
def test_writer_documents_and_file(tmp_path):
    writer = StreamHDF5Writer(tmp_path, data_key="spectra", dtype="<u4", frame_shape=(2, 3, 8))
    assert writer.get_index() == 0
    assert list(writer.collect_asset_docs()) == []  # not open: nothing to describe

    path = writer.open("scan 1/a")
    assert path.parent == tmp_path.resolve() and path.name.startswith("scan_1_a_")
    frames = [np.full((2, 3, 8), i, dtype=np.uint32) for i in range(3)]
    assert [writer.write(frame) for frame in frames[:2]] == [1, 2]
    assert writer.get_index() == 2

    docs = list(writer.collect_asset_docs())
    assert [name for name, _ in docs] == ["stream_resource", "stream_datum"]
    sres, sdatum = docs[0][1], docs[1][1]
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
    assert sres["mimetype"] == "application/x-hdf5"
    assert sres["uri"] == path.as_uri()
    assert sres["data_key"] == "spectra"
    assert sres["parameters"] == {"dataset": "/entry/data/spectra", "chunk_shape": [1, 2, 3, 8], "swmr": True}
    assert sdatum["stream_resource"] == sres["uid"]
    assert sdatum["indices"] == {"start": 0, "stop": 2}
    assert sdatum["seq_nums"] == {"start": 0, "stop": 0}  # filled in by the RunEngine
    writer.close()

    # A new file on each open; indices restart at 0 with a new StreamResource.
    path2 = writer.open("scan 1/a")
    assert path2 != path
    writer.write(frames[2])
    assert [name for name, _ in writer.collect_asset_docs()] == ["stream_resource", "stream_datum"]
    writer.close()

    assert writer.describe_key() == {
        "spectra": {
            "source": "file:spectra",
            "shape": [2, 3, 8],
            "dtype": "array",
            "dtype_numpy": "<u4",
            "external": "STREAM:",
        }
    }


def test_writer_incremental_datums_and_swmr_read(tmp_path):
    writer = StreamHDF5Writer(tmp_path, data_key="s", dtype=np.uint32, frame_shape=(3, 4, 16), compression="gzip")
    path = writer.open("run")
    rng = np.random.default_rng(1)
    frames = rng.poisson(2.0, size=(300, 3, 4, 16))  # int64 counts, stored as uint32
    for frame in frames[:3]:
        writer.write(frame)

    names = [name for name, _ in writer.collect_asset_docs(index=2)]
    assert names == ["stream_resource", "stream_datum"]
    ((name, doc),) = list(writer.collect_asset_docs())
    assert name == "stream_datum" and doc["indices"] == {"start": 2, "stop": 3}
    assert list(writer.collect_asset_docs()) == []  # nothing new

    # A SWMR reader (as Tiled's HDF5 adapter opens it) sees the frames while the file is open.
    with h5py.File(path, "r", swmr=True, libver="latest") as h5:
        np.testing.assert_array_equal(h5["/entry/data/spectra"][...], frames[:3].astype(np.uint32))

    t0 = time.perf_counter()
    for frame in frames[3:]:
        writer.write(frame)
    elapsed = time.perf_counter() - t0
    assert writer.get_index() == 300
    ((_, doc),) = list(writer.collect_asset_docs())
    assert doc["indices"] == {"start": 3, "stop": 300}
    assert elapsed < 5.0, f"297 small frames took {elapsed:.2f} s"
    writer.close()
    writer.close()  # closing twice is safe

    with h5py.File(path, "r") as h5:
        dset = h5["/entry/data/spectra"]
        assert dset.shape == (300, 3, 4, 16) and dset.dtype == np.uint32
        assert dset.compression == "gzip"
        np.testing.assert_array_equal(dset[...], frames.astype(np.uint32))


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        StreamHDF5Writer(tmp_path, data_key="s", dtype="u4", frame_shape=(2, 2), compression="zstd")
    with pytest.raises(ValueError, match="chunks"):
        StreamHDF5Writer(tmp_path, data_key="s", dtype="u4", frame_shape=(2, 2), chunks=(1, 2))
    writer = StreamHDF5Writer(tmp_path, data_key="s", dtype="u4", frame_shape=(2, 2))
    with pytest.raises(RuntimeError, match="not open"):
        writer.write(np.zeros((2, 2), np.uint32))
    with writer:
        writer.open("x")
        with pytest.raises(RuntimeError, match="already open"):
            writer.open("y")
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((2, 3), np.uint32))
        with pytest.raises(TypeError, match="dtype"):
            writer.write(np.zeros((2, 2), np.float64))
        with pytest.raises(ValueError, match="outside the range"):
            writer.write(np.full((2, 2), -1, np.int64))
        assert writer.get_index() == 0  # nothing was written by the refused frames
    assert not writer.is_open


def test_writer_default_chunks_cap_size(tmp_path):
    writer = StreamHDF5Writer(tmp_path, data_key="s", dtype=np.uint32, frame_shape=(200, 300, 2048))
    assert writer.chunks[0] == 1 and writer.chunks[2:] == (300, 2048)
    assert np.prod(writer.chunks) * 4 <= 4 * 1024 * 1024


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XFCT_BLUESKY_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("XFCT_BLUESKY_DATA")
    assert default_data_dir().name == "xfct-bluesky"


# --------------------------------------------------------------------------- round trip through Tiled
def test_documents_are_valid_and_counted(scan):
    counts = scan["docs"].counts()
    assert counts == {
        "start": 1,
        "descriptor": 1,
        "event": 3,
        "stream_resource": 1,
        "stream_datum": 3,
        "stop": 1,
    }
    docs = collections.defaultdict(list)
    for name, doc in scan["docs"].docs:
        docs[name].append(doc)
    (descriptor,) = docs["descriptor"]
    keys = descriptor["data_keys"]
    assert keys["det_fe"]["dtype_numpy"] == "<f4" and keys["det_fe"]["shape"] == [NY, NX]
    assert keys["det_total"]["dtype_numpy"] == "<u2"
    assert keys["det_spectra"]["external"] == "STREAM:"
    assert keys["det_spectra"]["shape"] == [NY, NX, NCHAN]
    # One frame per event: the writer's indices, and the seq_nums the RunEngine filled in.
    assert [d["indices"] for d in docs["stream_datum"]] == [{"start": i, "stop": i + 1} for i in (0, 1, 2)]
    assert [d["seq_nums"] for d in docs["stream_datum"]] == [{"start": i, "stop": i + 1} for i in (1, 2, 3)]
    assert all(d["descriptor"] == descriptor["uid"] for d in docs["stream_datum"])
    assert docs["stop"][0]["exit_status"] == "success"


def test_maps_round_trip_keep_dtype(scan, catalog):
    run = catalog[scan["uid"]]
    stream = run["primary"]
    det = scan["det"]
    fe = stream["det_fe"].read()
    total = stream["det_total"].read()
    assert fe.dtype == np.float32 and fe.shape == (3, NY, NX)
    assert total.dtype == np.uint16 and total.shape == (3, NY, NX)
    np.testing.assert_array_equal(fe, np.stack(det.produced["fe"]))
    np.testing.assert_array_equal(total, np.stack(det.produced["total"]))


def test_spectra_read_through_tiled(scan, catalog):
    run = catalog[scan["uid"]]
    expected = np.stack(scan["det"].produced["spectra"])
    spectra = load_spectra(run, "det_spectra")
    assert spectra.dtype == np.uint32 and spectra.shape == (3, NY, NX, NCHAN)
    np.testing.assert_array_equal(spectra, expected)
    # A slice: one pixel's spectrum at every angle.
    np.testing.assert_array_equal(load_spectra(run, "det_spectra", index=(slice(None), 2, 3)), expected[:, 2, 3])
    with pytest.raises(KeyError, match="no data key"):
        load_spectra(run, "nope")


def test_load_tomo(scan, catalog):
    data = load_tomo(catalog[scan["uid"]])
    assert isinstance(data, TomoData)
    assert data.uid == scan["uid"] and data.theta_key == "theta"
    np.testing.assert_allclose(data.theta, [0.0, 10.0, 20.0])
    assert data.theta.dtype == np.float64
    assert sorted(data.maps) == ["det_fe", "det_total"]  # external spectra are not maps
    assert data.maps["det_fe"].dtype == np.float32 and data.maps["det_fe"].shape == (3, NY, NX)
    assert data.maps["det_total"].dtype == np.uint16
    np.testing.assert_array_equal(data.maps["det_fe"], np.stack(scan["det"].produced["fe"]))
    assert data.metadata["sample"] == "phantom-A" and data.metadata["plan_name"] == "list_scan"


def test_search_by_start_metadata(scan, catalog):
    from tiled.queries import Key

    found = catalog.search(Key("start.plan_name") == "list_scan").search(Key("start.sample") == "phantom-A")
    assert scan["uid"] in list(found)
    assert len(catalog.search(Key("start.sample") == "no-such-sample")) == 0
    assert catalog[scan["uid"][:8]].metadata["start"]["uid"] == scan["uid"]  # partial uid


def test_latest_run_and_rotation_readback(RE, catalog, device_class, data_dir):
    """``cat[-1]`` is the newest run; load_tomo finds a '*rotation' readback as theta."""
    import bluesky.plans as bp
    from ophyd.sim import SynAxis

    det = device_class(name="xrf", asset_dir=data_dir / ASSETS_SUBDIR, seed=5)
    rotation = SynAxis(name="microprobe_rotation")
    (uid,) = RE(bp.list_scan([det], rotation, [-30.0, 45.5]), sample="phantom-B")

    latest = catalog[-1]
    assert latest.metadata["start"]["uid"] == uid
    assert catalog[latest.metadata["start"]["scan_id"]].metadata["start"]["uid"] == uid
    data = load_tomo(latest)
    assert data.theta_key == "microprobe_rotation"
    np.testing.assert_allclose(data.theta, [-30.0, 45.5])
    assert data.maps["xrf_total"].shape == (2, NY, NX)
    np.testing.assert_array_equal(load_spectra(latest, "xrf_spectra"), np.stack(det.produced["spectra"]))
    with pytest.raises(KeyError, match="theta_key"):
        load_tomo(latest, theta_key="phi")


@SQLITE_ONLY
def test_load_tomo_prefers_the_start_documents_theta_key(RE, catalog, device_class, data_dir):
    """The plans record ``theta_key``; it wins over the 'theta' / '*rotation' guess."""
    import bluesky.plans as bp
    from ophyd.sim import SynAxis

    det = device_class(name="tk", asset_dir=data_dir / ASSETS_SUBDIR, seed=3)
    theta, stage = SynAxis(name="theta"), SynAxis(name="stage_rotation")
    (uid,) = RE(bp.list_scan([det], theta, [1.0, 2.0], stage, [30.0, 60.0]), theta_key="stage_rotation")
    data = load_tomo(catalog[uid])
    assert data.theta_key == "stage_rotation"
    np.testing.assert_allclose(data.theta, [30.0, 60.0])
    explicit = load_tomo(catalog[uid], theta_key="theta")  # the argument still comes first
    assert explicit.theta_key == "theta"
    np.testing.assert_allclose(explicit.theta, [1.0, 2.0])


def test_is_loopback():
    from xfct_bluesky.net import is_loopback

    assert is_loopback("http://127.0.0.1:8000/api/v1/")
    assert is_loopback("http://localhost/api/v1/")
    assert is_loopback("http://[::1]:8000/api/v1/")
    assert not is_loopback("https://tiled.example.org/api/v1/")
    assert not is_loopback("http://10.0.0.5:8000/api/v1/")
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")  # the IOC's interfaces


@pytest.fixture
def counting_client(server):
    """A client of its own whose HTTP requests are recorded as (path, Accept-Encoding)."""
    from tiled.client import from_uri

    requests = []
    tiled_client = from_uri(server.uri)
    tiled_client.context.http_client.event_hooks = {
        "request": [lambda request: requests.append((request.url.path, request.headers.get("accept-encoding")))]
    }
    yield tiled_client, requests
    tiled_client.context.close()


@SQLITE_ONLY
def test_load_tomo_request_count_and_encoding(scan, counting_client):
    """Regression: load_tomo asked the composite stream for each key, two requests per key
    before each read (4.1 s for 18 maps of 360x128x128 in benchmarks/bench_storage.py).
    Now: the stream, one listing, one table request, one request per map."""
    tiled_client, requests = counting_client
    run = runs_container(tiled_client)[scan["uid"]]
    requests.clear()
    data = load_tomo(run)
    n_maps = len(data.maps)
    assert n_maps == 2
    assert len(requests) == n_maps + 3, requests
    array_requests = [enc for path, enc in requests if "/array/full/" in path]
    assert array_requests == ["identity"] * n_maps  # raw bytes: the server is on loopback

    requests.clear()
    compressed = load_tomo(run, compression=True, max_workers=1)
    assert all(enc != "identity" for path, enc in requests if "/array/full/" in path)
    for key in data.maps:
        np.testing.assert_array_equal(compressed.maps[key], data.maps[key])
        assert compressed.maps[key].dtype == data.maps[key].dtype


@SQLITE_ONLY
def test_load_tomo_arrays_are_writable_and_owned(scan, catalog):
    data = load_tomo(catalog[scan["uid"]])
    for arr in data.maps.values():
        assert arr.flags.writeable and arr.flags.c_contiguous and arr.flags.owndata
    with pytest.raises(ValueError, match="max_workers"):
        load_tomo(catalog[scan["uid"]], max_workers=0)


@SQLITE_ONLY
def test_load_tomo_splits_large_arrays(scan, counting_client, monkeypatch):
    """Arrays above tiled's response limit come in blocks of rows, as ArrayClient.read splits them."""
    from tiled.client.array import ArrayClient

    tiled_client, requests = counting_client
    run = runs_container(tiled_client)[scan["uid"]]
    # One float32 row per request: 3 for det_fe; two uint16 rows per request: 2 for det_total.
    monkeypatch.setattr(ArrayClient, "RESPONSE_BYTESIZE_LIMIT", NY * NX * 4)
    requests.clear()
    data = load_tomo(run, max_workers=2)
    assert sum("/array/full/" in path for path, _ in requests) == 5
    np.testing.assert_array_equal(data.maps["det_fe"], np.stack(scan["det"].produced["fe"]))
    np.testing.assert_array_equal(data.maps["det_total"], np.stack(scan["det"].produced["total"]))
    assert data.maps["det_total"].dtype == np.uint16


def test_load_tomo_with_a_dask_client(scan, server):
    from tiled.client import from_uri

    dask_client = from_uri(server.uri, "dask")
    try:
        data = load_tomo(runs_container(dask_client)[scan["uid"]])
    finally:
        dask_client.context.close()
    assert type(data.maps["det_fe"]) is np.ndarray and type(data.theta) is np.ndarray
    np.testing.assert_allclose(data.theta, [0.0, 10.0, 20.0])
    np.testing.assert_array_equal(data.maps["det_fe"], np.stack(scan["det"].produced["fe"]))


def test_the_server_reuses_its_request_dependants_and_keeps_its_settings(scan, server, client):
    """The FastAPI workaround (storage/_fastapi.py): the second and later requests of a route build no new
    dependant, and what the override injects (the server's settings: its API key) still rules."""
    import httpx
    from fastapi.dependencies import utils

    built = utils.get_dependant.built
    url = f"{server.uri.split('?')[0].rstrip('/')}/metadata/{runs_container(client).item['id']}/{scan['uid']}"
    key = {"Authorization": f"Apikey {client.context.api_key}"}
    assert httpx.get(url, headers=key).status_code == 200
    before = len(built)
    assert before > 0  # the per-request rebuilds went through the cache
    for _ in range(3):
        response = httpx.get(url, headers=key)
        assert response.status_code == 200 and response.json()["data"]["id"] == scan["uid"]
    assert len(built) == before  # ... and built nothing new
    assert httpx.get(url).status_code == 401  # the settings' single-user key is still required
    assert httpx.get(url, headers={"Authorization": "Apikey wrong"}).status_code == 401


def test_run_documents_replay(scan, catalog):
    """The server-side json-seq exporter was registered: stored runs replay as documents."""
    names = collections.Counter(name for name, _ in catalog[scan["uid"]].documents())
    assert names["start"] == 1 and names["stop"] == 1 and names["stream_resource"] == 1
    assert names["event"] + names["event_page"] >= 1


def test_runs_container_is_idempotent(client, catalog):
    again = runs_container(client)
    assert again.uri == catalog.uri
    client.create_container(key="plain")
    with pytest.raises(ValueError, match="CatalogOfBlueskyRuns"):
        runs_container(client, name="plain")


def test_backup_directory_keeps_documents_when_server_down(tmp_path, device_class):
    """With the server gone the scan finishes and the run is kept as JSON Lines;
    after a restart on the same folder (the catalog persists) it replays into Tiled."""
    import bluesky.plans as bp
    import stamina
    from bluesky import RunEngine
    from ophyd.sim import SynAxis
    from tiled.client import from_uri

    data = tmp_path / "data"
    with embedded_server(data) as srv:
        down_client = from_uri(srv.uri)
        writer = make_tiled_writer(runs_container(down_client), backup_directory=tmp_path / "backup")
    # The server is closed now. No back-off between tiled's retries, one attempt each.
    RE = RunEngine({})
    RE.subscribe(writer)
    recorder = DocumentRecorder()
    RE.subscribe(recorder)
    det = device_class(name="det", asset_dir=data / ASSETS_SUBDIR, seed=9)
    try:
        with stamina.set_testing(True, attempts=1):
            (uid,) = RE(bp.list_scan([det], SynAxis(name="theta"), [0, 1]), sample="offline")
    finally:
        down_client.context.close()
    assert recorder.docs[-1][1]["exit_status"] == "success"

    (backup_file,) = (tmp_path / "backup").iterdir()
    assert backup_file.name == f"{uid.split('-')[0]}.jsonl"
    docs = list(read_backup(backup_file))
    names = collections.Counter(name for name, _ in docs)
    assert docs[0][0] == "start" and docs[-1][0] == "stop" and docs[0][1]["uid"] == uid
    assert names["stream_resource"] == 1 and names["stream_datum"] == 2
    assert names["event"] + sum(len(d["seq_num"]) for n, d in docs if n == "event_page") == 2

    with embedded_server(data) as srv:
        client = from_uri(srv.uri)
        try:
            assert "raw" in client  # created before the restart
            catalog = runs_container(client)
            assert replay_backup(backup_file, catalog) == uid
            replayed = load_tomo(catalog[uid])
            assert replayed.maps["det_total"].dtype == np.uint16  # dtype restored from the descriptor
            np.testing.assert_array_equal(replayed.maps["det_fe"], np.stack(det.produced["fe"]))
            np.testing.assert_array_equal(
                load_spectra(catalog[uid], "det_spectra"), np.stack(det.produced["spectra"])
            )
        finally:
            client.context.close()
