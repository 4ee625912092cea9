"""The IPython profile loads headless, runs plans, stores them in Tiled, and exits cleanly.

The profile runs in a subprocess, as ``xfct-bluesky shell`` would run it: its
embedded Tiled server is closed by a daemon thread when the main thread ends,
which never happens inside the test process. The subprocess also proves the
interpreter exits (regression: an embedded server left running once made every
session hang at exit; ``timeout`` turns that into a failure, not a hung suite).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

STARTUP = Path(__file__).resolve().parents[1] / "profile_collection" / "startup"

# Names the README promises in a session.
PROMISED = ["session", "RE", "cat", "mp", "bp", "bps", "xfct_tomo", "xrf_fly_map", "dwell_pair_series",
            "estimate_tomo", "summarize_plan", "Key", "load_tomo"]

# Executes the startup files as IPython does (sorted, one namespace, __file__
# set per file), then a session's worth of commands; prints one RESULT line.
SCRIPT = r"""
import glob, json, os, sys

startup, session, promised = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ns = {"__name__": "__main__"}
for path in sorted(glob.glob(os.path.join(startup, "*.py"))):
    ns["__file__"] = path
    with open(path) as f:
        code = compile(f.read(), path, "exec")
    exec(code, ns)
RE, mp, cat, Key = ns["RE"], ns["mp"], ns["cat"], ns["Key"]
out = {"missing": [n for n in promised if n not in ns], "data_dir": str(ns["DATA_DIR"]),
       "scan_id_at_start": RE.md.get("scan_id"), "runs_at_start": len(cat)}
uids = list(RE(ns["xrf_fly_map"](mp, shape=(12, 16), pixel_size=300e-9, dwell=1e-3)))
if session == "first":
    uids += RE(ns["xfct_tomo"](mp, shape=(12, 16), pixel_size=300e-9, n_angles=4, dwell=1e-3))
    ns["live_reconstruction"].wait(60)  # it publishes the volumes from its worker thread
    tomo = ns["load_tomo"](cat[uids[-1]])
    out["tomo"] = [int(tomo.theta.size), [list(a.shape) for k, a in tomo.maps.items() if k == "Zn"]]
    out["search"] = list(cat.search(Key("start.plan_name") == "xfct_tomo"))
    derived = ns["session"].derived.search(Key("start.plan_name") == "dpc_alignment")  # apart from the scans
    out["derived"] = [[r.metadata["start"]["raw_uid"], int(r["primary"]["dx"].read().size)]
                      for r in derived.values()]
    volumes = ns["session"].derived.search(Key("start.plan_name") == "xfct_reconstruction")
    out["volumes"] = [[r.metadata["start"]["raw_uid"], list(r["primary"]["Zn"].read().shape)]
                      for r in volumes.values()]
out["uids"] = uids
out["plans"] = [cat[u].metadata["start"]["plan_name"] for u in uids]
out["scan_ids"] = [cat[u].metadata["start"]["scan_id"] for u in uids]
out["scan_id"] = RE.md["scan_id"]
out["latest_by_scan_id"] = cat[RE.md["scan_id"]].metadata["start"]["uid"]
out["runs"] = len(cat)
print("RESULT " + json.dumps(out), flush=True)
"""


def _run_session(session: str) -> tuple[dict, float]:
    """Run the profile plus a few commands in a fresh interpreter; (its RESULT, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(STARTUP), session, json.dumps(PROMISED)],
        env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    for name in sorted(p.name for p in STARTUP.glob("*.py")):
        assert f"Loading {STARTUP / name}" in proc.stdout  # every startup file ran, with its own __file__
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), seconds


@pytest.fixture
def profile_env(tmp_path, monkeypatch):
    """The environment of a headless simulated session writing to ``tmp_path``."""
    monkeypatch.setenv("XFCT_BLUESKY_DATA", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XFCT_BLUESKY_HARDWARE", "sim")
    for name in ("XFCT_BLUESKY_TILED_URI", "XFCT_BLUESKY_API_KEY", "XFCT_BLUESKY_SEED", "DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_profile_runs_plans_into_tiled_and_exits(profile_env):
    from xfct_bluesky.session import make_run_engine

    data = profile_env
    first, seconds = _run_session("first")
    assert first["missing"] == []
    assert Path(first["data_dir"]) == data
    assert first["scan_id_at_start"] is None and first["runs_at_start"] == 0
    assert first["plans"] == ["xrf_fly_map", "xfct_tomo"]
    assert first["scan_ids"] == [1, 2] and first["scan_id"] == 2
    assert first["latest_by_scan_id"] == first["uids"][1]  # cat[scan_id]
    assert first["search"] == [first["uids"][1]]  # cat.search(Key(...)) with the profile's Key
    assert first["tomo"] == [4, [[4, 12, 16]]]  # load_tomo: 4 angles, (n_angles, ny, nx) Zn map
    # the live DPC alignment stored its shifts as a derived run linked to the tomography (not the map)
    assert first["derived"] == [[first["uids"][1], 4]]
    assert first["volumes"] == [[first["uids"][1], [1, 12, 16, 16]]]  # ... and the live reconstruction its volumes
    assert first["runs"] == 2  # the scans: the derived runs are in session.derived
    assert (data / "tiled" / "catalog.db").is_file()
    assert list((data / "assets").glob("*.h5"))  # spectra in the data folder the server may read
    assert not list((data / "backup").glob("*.jsonl"))  # nothing fell back to the backup

    # RE.md persists: a RunEngine made afterwards on the same folder sees the scan id
    assert make_run_engine(data).md["scan_id"] == 2
    assert seconds < 90, f"a session that loads and runs a map and a tomography took {seconds:.0f} s: slow exit?"

    # (a second session on the same folder, scan ids going on: tests/test_session.py, in-process)


def test_unknown_hardware_is_refused(tmp_path, monkeypatch):
    from xfct_bluesky.session import make_microprobe

    monkeypatch.setenv("XFCT_BLUESKY_HARDWARE", "bogus")
    with pytest.raises(ValueError, match=r"XFCT_BLUESKY_HARDWARE='bogus': allowed 'sim' or 'epics'"):
        make_microprobe(tmp_path)
    with pytest.raises(ValueError, match="bogus"):  # the argument wins over the environment, same check
        make_microprobe(tmp_path, "Bogus")
    assert not (tmp_path / "assets").exists()  # refused before anything is made
    # the EPICS microprobe with no IOC answering: a clear timeout, not a hang
    monkeypatch.setenv("XFCT_BLUESKY_PREFIX", "XFCTNOBODY:")
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "127.0.0.1")
    monkeypatch.setenv("EPICS_CA_AUTO_ADDR_LIST", "NO")
    monkeypatch.setenv("XFCT_BLUESKY_CONNECT_TIMEOUT", "1")
    with pytest.raises(TimeoutError, match="XFCTNOBODY:"):
        make_microprobe(tmp_path, "epics")
