"""What a new user meets first (issue 14, item 7): ``ls`` tells what a run delivered, legal but implausible
values are warned about, reprs are short, ``show | head`` ends quietly, and ``xfct-bluesky shell`` writes
nothing into the profile folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from xfct_bluesky import cli
from xfct_bluesky.plans import PlausibilityWarning, estimate_tomo, xfct_tomo
from xfct_bluesky.storage import load_tomo, make_tiled_writer

PROFILE = Path(__file__).resolve().parents[1] / "profile_collection"


class _Beamdump:
    """A callback that fails at the ``n``-th primary event: the RunEngine ends the run (exit status "fail")."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def __call__(self, name, doc):
        if name == "event":
            self.seen += 1
            if self.seen == self.n:
                raise RuntimeError("the beam dumped")


@pytest.fixture(scope="module")
def cut_short(shared_tiled):
    """A 6-angle tomography stored in the suite's Tiled server, ended after 3 maps."""
    from bluesky import RunEngine

    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import small_cell

    mp = make_sim_microprobe(shape=(16, 20), pixel_size=300e-9, seed=0, specimen=small_cell(5e-6),
                             save_spectra=False)
    RE = RunEngine({})
    RE.subscribe(make_tiled_writer(shared_tiled.catalog))
    RE.subscribe(_Beamdump(3))
    plan = xfct_tomo(mp, shape=(16, 20), pixel_size=300e-9, n_angles=6, dwell=2e-3, md={"sample": "dumped"})
    with pytest.raises(RuntimeError, match="the beam dumped"):
        RE(plan)
    run = shared_tiled.catalog[-1]
    assert run.metadata["start"]["sample"] == "dumped"
    return run


def test_ls_shows_the_dose_delivered_and_the_exit_status(cut_short, shared_tiled, capsys):
    start, stop = cut_short.metadata["start"], cut_short.metadata["stop"]
    done = stop["num_events"]["primary"]  # the events stored before the failure
    assert stop["exit_status"] == "fail" and 1 <= done < 6
    assert cli.main(["ls", "--uri", shared_tiled.server.uri, "-n", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-3:] == ["angles", "dose", "status"]
    (line,) = [row for row in lines if row.startswith(start["uid"][:8])]
    delivered = done * start["dose_per_projection"]
    assert delivered < 0.7 * start["total_dose"]  # the planned dose is not what the specimen received
    assert line.split()[-4:] == [f"{done}/6", f"{delivered:.3g}", "Gy", "fail"], line


def test_show_into_a_closed_pipe_ends_quietly(cut_short, shared_tiled):
    """``xfct-bluesky show UID | head -1``: no BrokenPipeError traceback when head stops reading."""
    uid = cut_short.metadata["start"]["uid"]
    show = subprocess.Popen([sys.executable, "-m", "xfct_bluesky.cli", "show", uid[:8], "--uri",
                             shared_tiled.server.uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = show.stdout.readline()  # what `head -1` reads, then it closes the pipe
    show.stdout.close()
    _, err = show.communicate(timeout=60)
    assert first.startswith(b"uid")
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()


def test_implausible_values_are_warned_about_with_their_cost(microprobe):
    field = dict(shape=(16, 20), pixel_size=300e-9)
    with pytest.warns(PlausibilityWarning, match=r"dwell=3 s per pixel is unusually long .* If you meant 3 ms, "
                      r"give dwell=0.003") as caught:
        estimate_tomo(microprobe, n_angles=60, dwell=3, **field)
    assert " h and give " in str(caught[0].message)
    radians = np.deg2rad(np.linspace(0, 180, 20, endpoint=False))
    with pytest.warns(PlausibilityWarning, match="span only 2.98 deg: angles are in degrees.*np.rad2deg"):
        estimate_tomo(microprobe, angles=list(radians), dwell=2e-3, **field)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the usual values, and a resumption's few last angles: no warning
        estimate_tomo(microprobe, n_angles=60, dwell=3e-3, **field)
        estimate_tomo(microprobe, angles=list(np.linspace(175, 179, 12)), dwell=3e-3, order="explicit",
                      min_angles=1, **field)


def test_reprs_are_one_line(cut_short, microprobe):
    est = estimate_tomo(microprobe, shape=(16, 20), pixel_size=300e-9, n_angles=720, dwell=2e-3)
    text = repr(est)
    assert text.startswith("TomoEstimate(720 angles 0..179.75 deg sequential, dwell=0.002 s") and len(text) < 200
    tomo = load_tomo(cut_short)
    text = repr(tomo)
    n = tomo.theta.size
    assert text.startswith(f"TomoData(uid={tomo.uid[:8]!r}, {n} angles") and f"'Zn': ({n}, 16, 20)" in text
    assert "\n" not in text and len(text) < 600


def test_shell_keeps_ipython_state_out_of_the_profile_folder(tmp_path):
    """IPython's history.sqlite, log/, pid/, security/ go to <IPython dir>/profile_xfct_bluesky."""
    profile = tmp_path / "profile_collection"
    shutil.copytree(PROFILE, profile)
    before = sorted(p.relative_to(profile) for p in profile.rglob("*"))
    env = {**os.environ, "XFCT_BLUESKY_PROFILE": str(profile), "IPYTHONDIR": str(tmp_path / "ipython"),
           "MPLBACKEND": "Agg", "XFCT_BLUESKY_HARDWARE": "sim"}
    env.pop("DISPLAY", None)
    proc = subprocess.run([sys.executable, "-m", "xfct_bluesky.cli", "shell", "--data-dir", str(tmp_path / "data")],
                          input="print('SESSION', type(mp).__name__, RE.state)\n", capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SESSION Microprobe idle" in proc.stdout, proc.stdout[-3000:]
    for name in sorted(p.name for p in (profile / "startup").glob("*.py")):
        assert f"Loading {profile / 'startup' / name}" in proc.stdout  # each startup file ran, with its __file__
    assert sorted(p.relative_to(profile) for p in profile.rglob("*")) == before  # nothing written there
    assert (tmp_path / "ipython" / cli.SHELL_PROFILE / "history.sqlite").is_file()


def test_every_map_and_stage_data_key_has_units(cut_short):
    """The scanner's maps, dwell and spectra and the stages carry ``units`` in the descriptor (item 7)."""
    keys = cut_short["primary"].metadata["data_keys"]
    units = {key: spec.get("units") for key, spec in keys.items()}
    assert units["microprobe_scanner_Zn"] == "counts" and units["microprobe_scanner_live_time"] == "s"
    assert units["microprobe_scanner_dpc_diag"] == "" and units["microprobe_rotation"] == "deg"
    missing = sorted(k for k, u in units.items() if u is None)
    assert missing == [], missing
