"""The beamline run as at a facility, on loopback: Redis, the queue server with our profile, a shared Tiled store.

One of each for the whole module (the manager costs an interpreter and the
worker's profile another): ``redis-server`` (``redis_server``, conftest),
``xfct-bluesky serve`` on a fresh data folder (the shared store), and
``start-re-manager`` running ``profile_collection/startup`` with 0MQ on
127.0.0.1, its worker writing into the store by ``XFCT_BLUESKY_TILED_URI``
and the key file serve keeps in the folder. This process is the second one:
it queues through ``bluesky_queueserver_api`` and reads the runs back from
Tiled while and after the worker writes them. Without redis-server the
queue-server tests skip (they fail under ``CI=true``); the permissions' and
the store's own tests run regardless. The last test stops the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from servers import (
    answers,
    free_port,
    group_pids,
    socket_addresses,
    spawn_server,
    wait_answering,
)

PROFILE = Path(__file__).resolve().parents[1] / "profile_collection"
STARTUP = PROFILE / "startup"
LISTS = PROFILE / "existing_plans_and_devices.yaml"
PERMISSIONS = PROFILE / "user_group_permissions.yaml"
BIN = Path(sys.executable).parent

#: The tomography queued: small enough for seconds, enough angles to pause in the middle.
TOMO = {"shape": [16, 16], "pixel_size": 300e-9, "n_angles": 5, "dwell": 1e-3}


#: The API clients, kept to the end of the session: bluesky-queueserver-api 0.0.13's close() closes its 0MQ
#: sockets but never terminates their three contexts, which pyzmq reports (ResourceWarning, an error here)
#: when they are garbage-collected, in whatever test that happens; at the interpreter's exit it does not.
_KEPT: list = []


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the session's variables or a display, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XFCT_BLUESKY_") and k != "DISPLAY"}
    return {**env, "MPLBACKEND": "Agg", "XFCT_BLUESKY_HARDWARE": "sim", **extra}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """``xfct-bluesky serve`` on a fresh data folder, started here and waited for by :func:`ready`."""
    root = tmp_path_factory.mktemp("qserver-store") / "data"
    log = root.parent / "serve.log"
    proc, url = spawn_server(root, log)
    state = SimpleNamespace(root=root, log=log, proc=proc, url=url, up=False, key=None)

    def ready():
        if not state.up:
            wait_answering(proc, url, log)
            state.up, state.key = True, (root / "api_key").read_text().strip()
        return state

    state.ready = ready
    yield state
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the last test stopped it already, unless it failed first
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def reader(store):
    """This process's client of the store: ``.client``, ``.raw`` (the scans), ``.derived`` (their derived runs)."""
    from tiled.client import from_uri

    from xfct_bluesky.storage import derived_container, runs_container

    store.ready()
    client = from_uri(store.url, api_key=store.key)
    yield SimpleNamespace(client=client, raw=runs_container(client), derived=derived_container(client))
    client.context.close()


@pytest.fixture(scope="module")
def manager(redis_server, store, tmp_path_factory):
    """``start-re-manager`` with the profile, 0MQ on 127.0.0.1, the worker environment open: the API client."""
    from bluesky_queueserver_api.zmq import REManagerAPI

    here = tmp_path_factory.mktemp("qserver-manager")
    control, info = free_port(), free_port()
    log = here / "manager.log"
    lists = here / "lists" / LISTS.name  # absent: the manager writes it when the worker's environment opens
    lists.parent.mkdir()
    cmd = [str(BIN / "start-re-manager"), "--startup-dir", str(STARTUP),
           "--existing-plans-devices", str(lists), "--update-existing-plans-devices", "ENVIRONMENT_OPEN",
           "--user-group-permissions", str(PERMISSIONS),
           "--zmq-control-addr", f"tcp://127.0.0.1:{control}", "--zmq-info-addr", f"tcp://127.0.0.1:{info}",
           "--redis-addr", redis_server.addr, "--redis-name-prefix", f"xfct_test_{os.getpid()}",
           "--use-ipython-kernel", "OFF"]
    # the worker's Session: the store's folder and URI; the key from the file serve wrote there (no key given)
    env = _clean_env(XFCT_BLUESKY_DATA=str(store.root), XFCT_BLUESKY_TILED_URI=store.url)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    RM = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{control}", zmq_info_addr=f"tcp://127.0.0.1:{info}",
                      timeout_recv=10)
    _KEPT.append(RM)

    def fail(what):
        pytest.fail(f"{what}; manager log:\n{log.read_text()[-4000:]}", pytrace=False)

    started = time.monotonic()
    timings = {}
    try:
        store.ready()  # serve and the manager start side by side; the worker needs the store
        timings["serve answering"] = time.monotonic() - started
        deadline = time.monotonic() + 30
        while not _listening(control):  # the manager binds its control socket once it is up
            if proc.poll() is not None or time.monotonic() > deadline:
                fail("start-re-manager did not answer on its control socket in 30 s")
            time.sleep(0.2)
        timings["manager answering"] = time.monotonic() - started
        RM.environment_open()
        RM.wait_for_idle(timeout=90)
        if not RM.status()["worker_environment_exists"]:
            fail("the worker environment did not open (the profile failed to load?)")
        deadline = time.monotonic() + 30
        while not RM.plans_allowed()["plans_allowed"]:  # the manager takes the worker's lists after it opens
            if time.monotonic() > deadline:  # (seen lagging the open by seconds on a loaded machine)
                fail("no plan allowed 30 s after the worker environment opened")
            time.sleep(0.2)
        timings["environment open"] = time.monotonic() - started
        manager = SimpleNamespace(RM=RM, proc=proc, log=log, lists=lists, timings=timings)
        yield manager
    finally:
        with contextlib.suppress(Exception):  # a test that failed may leave a plan paused: abort it
            if RM.status()["manager_state"] == "paused":
                RM.re_abort()
                RM.wait_for_idle(timeout=30)
        with contextlib.suppress(Exception):
            if RM.status()["worker_environment_exists"]:
                RM.environment_close()
                RM.wait_for_idle(timeout=60)
        with contextlib.suppress(Exception):
            RM.send_request(method="manager_stop", params={"option": "safe_off"})
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        RM.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_task(RM, task_uid: str, timeout: float = 60) -> dict:
    RM.wait_for_completed_task(task_uid, timeout=timeout)
    return RM.task_result(task_uid)["result"]


def _journaled_events(journal: Path) -> int:
    """Events in the worker's journal of the run in progress (read while it writes: one read of the file,
    its complete lines only; a file iterator would return the line being written as a cut line, then its
    rest as another)."""
    count = 0
    for path in journal.glob("*.jsonl"):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:  # the run ended: its journal is deleted
            continue
        complete = text[:text.rfind("\n") + 1].splitlines()
        count += sum(json.loads(line)["name"] == "event" for line in complete if line.strip())
    return count


# ------------------------------------------------------------------------------------------------ the lists
def test_the_checked_in_lists_are_what_the_queue_server_makes_of_the_profile(manager):
    """The lists the manager wrote from the worker's namespace when its environment opened (bluesky-queueserver's
    ``save_existing_plans_and_devices``, as ``qserver-list-plans-devices`` writes them; into a folder of the test's)
    are the checked-in file: a plan or a device changed without the file fails here."""
    assert manager.lists.exists(), "the manager wrote no lists when the environment opened"
    fresh = manager.lists.read_text()
    assert "xfct_tomo:" in fresh and "\n  mp:\n" in fresh
    assert fresh == LISTS.read_text(), (
        f"{LISTS} is stale: regenerate it with `make qserver-lists` (qserver-list-plans-devices) and commit it")
    RM = manager.RM
    assert sorted(RM.plans_allowed()["plans_allowed"]) == ["dwell_pair_series", "xfct_tomo", "xrf_fly_map"]


def test_the_permissions_allow_our_plans_and_functions_only():
    from bluesky_queueserver.manager.profile_ops import (
        check_if_function_allowed,
        load_user_group_permissions,
    )

    permissions = load_user_group_permissions(str(PERMISSIONS))  # validated against the queue server's schema
    allowed = permissions["user_groups"]["primary"]
    assert allowed["allowed_plans"] == ["xfct_tomo", "xrf_fly_map", "dwell_pair_series"]
    for name, expected in (("estimate_tomo", True), ("summarize_plan", True), ("_device", False), ("eval", False)):
        assert check_if_function_allowed(name, group_name="primary", user_group_permissions=permissions) is expected


# ------------------------------------------------------------------------------------------------ the queue
def test_the_managers_sockets_are_on_loopback(manager):
    if not Path("/proc/self/net/tcp").exists():
        pytest.skip("needs Linux /proc")
    pids = group_pids(manager.proc.pid)  # the manager and its worker
    assert len(pids) >= 2, pids
    sockets = [s for pid in pids for s in socket_addresses(pid) if s[0] == "tcp"]
    assert sockets and all(addr.startswith("127.") for _, addr, _ in sockets), sockets


def test_functions_answer_in_json(manager):
    from bluesky_queueserver_api import BFunc

    RM = manager.RM
    est = _wait_task(RM, RM.function_execute(BFunc("estimate_tomo", "mp", **TOMO))["task_uid"])  # one at a time
    assert est["success"], est["msg"]
    value = est["return_value"]
    angles = np.linspace(0, 180, TOMO["n_angles"], endpoint=False)
    assert value["angles"] == angles.tolist() and value["n_angles"] == TOMO["n_angles"]
    assert value["shape"] == TOMO["shape"] and value["dwell"] == TOMO["dwell"] and value["order"] == "sequential"
    assert value["total_dose"] == pytest.approx(TOMO["n_angles"] * value["dose_per_projection"], rel=1e-12)
    assert value["summary"].startswith(f"{TOMO['n_angles']} projections of 16x16 px at 300 nm, 1 ms/px")
    text = _wait_task(RM, RM.function_execute(BFunc("summarize_plan", "xfct_tomo", "mp", **TOMO))["task_uid"])
    assert text["success"], text["msg"]
    lines = text["return_value"]["summary"]
    assert sum("Open Run" in line for line in lines) == 1
    moves = [line for line in lines if line.startswith("microprobe_rotation -> ")]
    assert moves[:TOMO["n_angles"]] == [f"microprobe_rotation -> {a}" for a in angles]

    # a device the worker does not have, and a function the permissions do not allow: refused, named
    bad = _wait_task(RM, RM.function_execute(BFunc("estimate_tomo", "nonexistent", **TOMO))["task_uid"])
    assert not bad["success"] and "microprobe='nonexistent'" in bad["msg"], bad
    with pytest.raises(RM.RequestFailedError, match="Function '_device' is not allowed"):
        RM.function_execute(BFunc("_device", "mp"))


def test_bad_arguments_are_refused_before_anything_runs(manager):
    from bluesky_queueserver_api import BPlan

    RM = manager.RM
    history = len(RM.history_get()["items"])
    for kwargs, named in (({**TOMO, "n_angles": "many"}, "n_angles"), ({**TOMO, "n_angles": 6.5}, "n_angles"),
                          ({**TOMO, "order": "random"}, "order"), ({**TOMO, "dwel": 1e-3}, "dwel")):
        with pytest.raises(RM.RequestFailedError) as refused:
            RM.item_add(BPlan("xfct_tomo", "mp", **kwargs))
        assert named in str(refused.value), refused.value
    with pytest.raises(RM.RequestFailedError, match="count"):  # not one of the profile's plans
        RM.item_add(BPlan("count", ["mp"]))
    assert RM.queue_get()["items"] == [] and len(RM.history_get()["items"]) == history


def test_a_queued_tomography_paused_and_resumed_is_stored_whole(manager, store, reader):
    """The worker acquires, this process reads: while paused, the open run in Tiled and the journal; at the
    end, every projection once, scan_id after this process's own run, and the live alignment's and
    reconstruction's derived runs."""
    import bluesky.plans as bp
    from bluesky_queueserver_api import BPlan
    from ophyd.sim import det
    from tiled.queries import Key

    from xfct_bluesky.session import Session
    from xfct_bluesky.storage import derived_runs, load_tomo

    RM = manager.RM
    # a run of this process into the shared store first: the worker's scan_id must follow it
    with Session(store.root / "reader", uri=store.url, api_key=store.key, live=False, journal=False,
                 persistent_md=False) as mine:
        mine.RE.md["scan_id"] = 41
        (before,) = mine.RE(bp.count([det]))
    assert reader.raw[before].metadata["start"]["scan_id"] == 42

    answer = RM.item_add(BPlan("xfct_tomo", "mp", **TOMO, md={"sample": "queued"}))
    assert answer["success"], answer["msg"]
    t0 = time.monotonic()
    RM.queue_start()
    journal = store.root / "journal"
    deadline = time.monotonic() + 60
    while _journaled_events(journal) < 2:  # two projections done: pause in the middle
        assert time.monotonic() < deadline, f"no 2 projections journaled in 60 s: {RM.status()}"
        time.sleep(0.02)
    RM.re_pause(option="immediate")  # in the middle of a map: rewound to the checkpoint before it
    RM.wait_for_idle_or_paused(timeout=30)
    status = RM.status()
    assert status["manager_state"] == "paused" and status["re_state"] == "paused", status
    (live,) = reader.raw.search(Key("start.sample") == "queued").values()  # written by the worker, read here
    uid = live.metadata["start"]["uid"]
    assert "stop" not in live.metadata  # still open
    paused_at = _journaled_events(journal)
    assert 2 <= paused_at < TOMO["n_angles"], paused_at
    RM.re_resume()
    RM.wait_for_idle(timeout=120)
    seconds = time.monotonic() - t0

    (item,) = [i for i in RM.history_get()["items"] if i["item_uid"] == answer["item"]["item_uid"]]
    assert item["result"]["exit_status"] == "completed", item["result"]
    assert item["result"]["run_uids"] == [uid]
    run = reader.raw[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["start"]["scan_id"] == 43  # after this process's 42: one numbering across processes

    # The live callbacks publish from their own threads after the scan. Tables are read only once they are
    # done: tiled 0.2.20 serves every DuckDB table through one shared connection (a StaticPool), and a read
    # concurrent with a write fails (HTTP 500; the writer retries, and may duplicate rows) or crashes tiled.
    deadline = time.monotonic() + 90
    while True:
        runs = derived_runs(reader.derived, uid)
        derived = {r.metadata["start"]["plan_name"]: r for r in runs}
        if {"dpc_alignment", "xfct_reconstruction"} <= set(derived) and all("stop" in r.metadata for r in runs):
            break
        assert time.monotonic() < deadline, f"derived runs 90 s after the scan: {sorted(derived)}"
        time.sleep(0.5)
    derived_seconds = time.monotonic() - t0
    assert len(derived) == len(runs), sorted(r.metadata["start"]["plan_name"] for r in runs)  # one of each
    tomo = load_tomo(run)
    planned = np.linspace(0, 180, TOMO["n_angles"], endpoint=False)
    assert len(tomo.theta) == TOMO["n_angles"]  # as many events as angles: none lost, none twice ...
    assert np.allclose(np.sort(tomo.theta), planned), tomo.theta  # ... and each angle once
    assert tomo.maps["Zn"].shape == (TOMO["n_angles"], 16, 16)
    assert derived["dpc_alignment"]["primary"]["dx"].read().size == TOMO["n_angles"]
    assert derived["xfct_reconstruction"]["primary"]["Zn"].read().shape[-2:] == (16, 16)

    # and back: this process's next run continues after the worker's
    with Session(store.root / "reader", uri=store.url, api_key=store.key, live=False, journal=False,
                 persistent_md=False) as mine:
        (after,) = mine.RE(bp.count([det]))
    assert reader.raw[after].metadata["start"]["scan_id"] == 44
    print(f"\nqueued tomography: {TOMO['n_angles']} projections, paused after {paused_at}, done in {seconds:.1f} s, "
          f"its derived runs in Tiled after {derived_seconds:.1f} s; "
          f"start-up (s since the fixture began): {', '.join(f'{k} {v:.1f}' for k, v in manager.timings.items())}")


# ------------------------------------------------------------------------------------------------ the store
def test_serve_keeps_its_key_out_of_its_output_and_takes_tiled_down_with_it(store):
    """Last: SIGTERM to ``xfct-bluesky serve`` alone (not its group) stops its tiled child and frees the port."""
    store.ready()
    pids = group_pids(store.proc.pid)
    assert len(pids) >= 2, pids  # serve and its tiled server
    output = store.log.read_text()
    assert "api_key=<hidden>" in output  # tiled's banner, filtered
    assert store.key not in output

    os.kill(store.proc.pid, signal.SIGTERM)
    assert store.proc.wait(timeout=30) == 0
    deadline = time.monotonic() + 15
    while group_pids(store.proc.pid):
        assert time.monotonic() < deadline, f"left running after serve stopped: {group_pids(store.proc.pid)}"
        time.sleep(0.1)
    assert not answers(store.url)
    port = int(store.url.rsplit(":", 1)[1])
    assert not _listening(port)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: past the closed connections
        s.bind(("127.0.0.1", port))  # free for the next server
    assert not (store.root / "tiled" / "server.json").exists()  # nothing advertises a stopped server
    assert store.key not in store.log.read_text()
