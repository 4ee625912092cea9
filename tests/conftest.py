"""Fixtures shared by the test modules.

* ``RE``: a fresh RunEngine per test (``RunEngine({})``, default
  ``call_returns_result``, so ``RE(plan)`` returns the tuple of run uids).
* ``docs``: subscribes to ``RE``, validates every document against
  event-model's JSON schemas as it is emitted and keeps a deep copy of it.
* ``microprobe``: a small, fast simulated microprobe (16 x 20 map of a 5 um
  cell, small runout) writing its spectra under ``tmp_path``.

A test module may override any of them with a fixture of the same name.

Session-scoped servers: ``shared_tiled`` (an embedded Tiled server),
``redis_server`` (``redis-server`` on loopback, for the queue server) and
``postgres_server`` (a throwaway PostgreSQL cluster on loopback, for the
storage tests on a PostgreSQL catalog); the last two skip without the
program, and fail under ``CI=true``.

The files run slowest first (``FILE_SECONDS``, with ``--no-loadscope-reorder``
in the Makefile): see :func:`pytest_collection_modifyitems`.
"""

from __future__ import annotations

import collections
import copy

import pytest


# Seconds each file took (setup + call + teardown summed, `--durations=0`, 2 Dec 2026, 3 workers on the idle
# 2-core machine); files not listed took under 5 s. pytest-xdist's `--dist loadfile` hands each worker the next
# file in collection order, and by default sorts the files by their number of tests: the few-test slow ones
# (the browser, the kill -9, the profile) started last and the suite waited on them at the end. Longest first
# (the classic longest-processing-time rule) ends the workers within a few seconds of each other.
FILE_SECONDS = {
    "test_faults.py": 75, "test_view.py": 60, "test_fitting.py": 57, "test_align_regimes.py": 55,
    "test_crash.py": 55, "test_import_cli.py": 49, "test_live_fit.py": 48, "test_distributed.py": 48,
    "test_cli.py": 47, "test_queueserver.py": 44, "test_profile.py": 38, "test_beamline_fly.py": 35,
    "test_reconstruction.py": 34, "test_plans.py": 33, "test_storage.py": 31, "test_first_use.py": 31,
    "test_import_runs.py": 29, "test_beamline_ioc.py": 29, "test_queueable.py": 26, "test_data_folder.py": 26,
    "test_postgres_catalog.py": 25, "test_compile_lock.py": 25, "test_session.py": 24, "test_paper.py": 21,
    "test_epics.py": 17, "test_live_callbacks.py": 17, "test_quantities.py": 14, "test_fitting_real.py": 12,
    "test_projector.py": 12, "test_plan_checks.py": 11, "test_cli_errors.py": 11, "test_mca_metadata.py": 8,
    "test_beamline_xspress3.py": 8, "test_quantify.py": 7, "test_physics.py": 6, "test_dose_study.py": 6,
}


def pytest_collection_modifyitems(session, config, items):
    """The files in ``FILE_SECONDS`` order, longest first; a stable sort, so each file's tests stay together and in
    their own order, and every worker collects the same order (xdist requires it)."""
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))


class DocumentCollector:
    """RunEngine subscriber: validate each document, then keep a copy of it.

    A document that fails validation raises inside the RunEngine's dispatch,
    which aborts the run, and is also kept in ``invalid`` so the failure is
    visible even if a plan swallows the exception.
    """

    def __init__(self):
        self.docs: list[tuple[str, dict]] = []
        self.invalid: list[tuple[str, dict, Exception]] = []

    def __call__(self, name, doc):
        import event_model

        try:
            event_model.schema_validators[event_model.DocumentNames(name)].validate(doc)
        except Exception as exc:
            self.invalid.append((name, copy.deepcopy(doc), exc))
            raise
        self.docs.append((name, copy.deepcopy(doc)))

    def __len__(self):
        return len(self.docs)

    def __iter__(self):
        return iter(self.docs)

    def names(self) -> list[str]:
        """Document names in emission order."""
        return [name for name, _ in self.docs]

    def counts(self) -> collections.Counter:
        """``{document name: number emitted}``."""
        return collections.Counter(self.names())

    def of(self, name: str) -> list[dict]:
        """Every document of one kind (``"event"``, ``"stream_datum"``...), in order."""
        return [doc for n, doc in self.docs if n == name]

    def events(self, stream: str = "primary") -> list[dict]:
        """The events of one stream, in order."""
        uids = {d["uid"] for d in self.of("descriptor") if d["name"] == stream}
        return [e for e in self.of("event") if e["descriptor"] in uids]

    def clear(self) -> None:
        self.docs.clear()
        self.invalid.clear()


@pytest.fixture
def RE():
    """A fresh RunEngine, halted at teardown if a test left it running or paused."""
    from bluesky import RunEngine

    engine = RunEngine({})
    yield engine
    if engine.state != "idle":
        engine.halt()


@pytest.fixture
def docs(RE):
    """Every document ``RE`` emits, schema-validated; no invalid one at teardown."""
    collector = DocumentCollector()
    token = RE.subscribe(collector)
    yield collector
    RE.unsubscribe(token)
    assert not collector.invalid, f"documents failing event-model validation: {collector.invalid}"


@pytest.fixture
def microprobe(tmp_path):
    """Small simulated microprobe: 16 x 20 map, 300 nm pixels, 5 um cell, seed 0, spectra in ``tmp_path``."""
    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import RunoutModel, small_cell

    runout = RunoutModel(
        eccentricity=0.5e-6,
        harmonics=(0.05e-6,),
        wobble=5e-6,
        lever_arm=20e-3,
        vertical_harmonics=(0.02e-6,),
        jitter=10e-9,
        drift_rate=0.01e-6,
        drift_trend=(0.0, 0.0),
        seed=0,
    )
    return make_sim_microprobe(
        shape=(16, 20),
        pixel_size=300e-9,
        seed=0,
        specimen=small_cell(5e-6),
        hdf5_directory=tmp_path,
        runout=runout,
    )


@pytest.fixture(scope="session")
def shared_tiled(tmp_path_factory):
    """One Tiled server for the suite (embedded, SQLite, HTTP on loopback): ``.data_dir``, ``.server``,
    ``.client``, ``.catalog`` (the scans' container), ``.derived`` (the derived runs' container).

    A server costs 3-8 s to start; tests that only write runs and read them back by uid share this one.
    Spectra the server must read go under ``.data_dir / "assets"``. Tests that need an empty catalog, a
    server that goes down or a folder of their own start their own.
    """
    from types import SimpleNamespace

    from tiled.client import from_uri

    from xfct_bluesky.storage import derived_container, embedded_server, runs_container

    root = tmp_path_factory.mktemp("shared-tiled")
    with embedded_server(root) as server:
        client = from_uri(server.uri)
        yield SimpleNamespace(data_dir=root, server=server, client=client, catalog=runs_container(client),
                              derived=derived_container(client))
        client.context.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """``redis-server`` on 127.0.0.1 and a free port, nothing saved (``.addr``, ``.port``), stopped by its PID.

    Started only by the modules that ask for it (the queue server's); see ``servers.start_redis``.
    """
    from servers import start_redis, stop_process

    redis = start_redis(tmp_path_factory.mktemp("redis"))
    yield redis
    stop_process(redis.proc)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, password authentication for a generated
    superuser (``.uri(db)``, ``.create_database(name)``, ``.env``, ``.pgpass``), stopped by its PID.

    Started only by the tests that ask for it; see ``servers.start_postgres`` (about 6 s on 2 loaded cores).
    """
    from servers import start_postgres, stop_postgres

    pg = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield pg
    stop_postgres(pg)
