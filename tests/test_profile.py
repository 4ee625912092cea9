"""The IPython profile loads headless, runs plans, stores them in Tiled, and exits cleanly.

The profile runs in a subprocess: that also proves the interpreter exits (an
embedded Tiled server left running once made every session hang at exit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROFILE = Path(__file__).resolve().parents[1] / "profile_collection" / "startup"

SCRIPT = r"""
import glob, json, os, sys
ns = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.py"))):
    ns["__file__"] = path
    exec(compile(open(path).read(), path, "exec"), ns)
RE, mp, cat = ns["RE"], ns["mp"], ns["cat"]
uids = []
uids += RE(ns["xrf_fly_map"](mp, shape=(12, 16), pixel_size=300e-9, dwell=1e-3))
uids += RE(ns["xfct_tomo"](mp, shape=(12, 16), pixel_size=300e-9, n_angles=4, dwell=1e-3))
names = ["RE", "cat", "mp", "bp", "bps", "xfct_tomo", "xrf_fly_map", "dwell_pair_series",
         "estimate_tomo", "summarize_plan", "Key", "load_tomo"]
print("RESULT " + json.dumps({
    "plans": [cat[u].metadata["start"]["plan_name"] for u in uids],
    "scan_id": RE.md["scan_id"],
    "missing": [n for n in names if n not in ns],
    "n_angles": int(ns["load_tomo"](cat[uids[-1]]).theta.size),
}))
"""


def _run_profile(data_dir: Path) -> dict:
    env = dict(os.environ, XFCT_BLUESKY_DATA=str(data_dir), MPLBACKEND="Agg", XFCT_BLUESKY_HARDWARE="sim")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(PROFILE)], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_profile_runs_plans_and_persists_metadata(tmp_path):
    first = _run_profile(tmp_path)
    assert first["plans"] == ["xrf_fly_map", "xfct_tomo"]
    assert first["missing"] == []
    assert first["n_angles"] == 4
    assert first["scan_id"] == 2
    # a second session on the same data folder continues the scan ids (RE.md persists)
    second = _run_profile(tmp_path)
    assert second["scan_id"] == 4
    assert (tmp_path / "tiled" / "catalog.db").exists()


def test_unknown_hardware_is_refused(tmp_path):
    from xfct_bluesky.session import make_microprobe

    with pytest.raises(ValueError, match="XFCT_BLUESKY_HARDWARE='bogus': allowed 'sim' or 'epics'"):
        make_microprobe(tmp_path, "bogus")
    with pytest.raises(RuntimeError, match="not written yet"):
        make_microprobe(tmp_path, "epics")
