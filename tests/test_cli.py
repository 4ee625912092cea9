"""The xfct-bluesky command: demo, ls, show, serve (loopback only, API key enforced)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from servers import answers as _answers
from servers import group_pids as _group_pids
from servers import start_server

from xfct_bluesky import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONSOLE_SCRIPT = Path(sys.executable).with_name("xfct-bluesky")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``xfct-bluesky demo --n-angles 6 --size 24`` into a fresh data folder: (folder, stdout, uid)."""
    root = tmp_path_factory.mktemp("cli") / "data"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):  # and the progress bar
        code = cli.main(["demo", "--data-dir", str(root), "--n-angles", "6", "--size", "24"])
    assert code == 0, out.getvalue()
    match = re.search(r"run uid\s+([0-9a-f-]{36})", out.getvalue())
    assert match, out.getvalue()
    return root, out.getvalue(), match.group(1)


def test_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "xfct_bluesky.cli", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("demo", "serve", "shell", "ls", "show", "paper-table"):
        assert re.search(rf"^\s+{command}\b", proc.stdout, re.MULTILINE), (command, proc.stdout)


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "usage: xfct-bluesky" in capsys.readouterr().out


def test_demo_reports_uid_data_and_figure(demo):
    root, out, uid = demo
    # the live spectrum fit's run, and the reconstruction made from its fitted Zn
    assert re.search(r"^\s+fit\s+run [0-9a-f]{8} \(live spectrum fit, per pixel counts and errors: "
                     r"Zn \d+ \+- \d+ counts in all\)$", out, re.MULTILINE), out
    assert "Zn from fitted spectra)" in out, out
    assert re.search(rf"^\s+data\s+{re.escape(str(root))}\s", out, re.MULTILINE), out
    match = re.search(r"^\s+overview\s+(\S+\.png)$", out, re.MULTILINE)
    assert match, out
    png = Path(match.group(1))
    assert png == root / "demo" / f"overview-{uid[:8]}.png"
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    assert len(data) > 20_000  # four panels with colour bars, not an empty canvas
    assert f"xfct-bluesky show {uid[:8]}" in out
    assert list((root / "assets").glob("*.h5"))  # spectra went to HDF5 beside the catalog
    # the final alignment's method, channel and consistency figures are printed
    match = re.search(r"final: (pairwise|matching) on (\S+), (applied|NOT applied)", out)
    assert match, out
    before, after = map(float, re.search(r"before ([\d.e-]+) -> after ([\d.e-]+)", out).groups())
    assert 0 < after < before, out


def test_ls_lists_the_demo_run(demo, capsys):
    root, _, uid = demo
    assert cli.main(["ls", "--data-dir", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["uid", "time", "plan", "source", "sample"]
    (line,) = [line for line in lines if line.startswith(uid[:8])]
    assert re.search(r"\sxfct_tomo\s+bluesky\s+demo cell \(simulated\)\s+6\s+5e\+06 Gy  success$", line), line


def test_show_prints_the_run_metadata(demo, capsys):
    root, _, uid = demo
    assert cli.main(["show", uid[:8], "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    for text in ('"plan_name": "xfct_tomo"', '"sample": "demo cell (simulated)"', '"n_angles": 6',
                 '"total_dose": 5000000.0', '"order": "golden"', "exit status: success",
                 "'primary': 6", "stream primary:", "microprobe_scanner_Zn"):
        assert text in out, (text, out)
    # the alignment derived from it, read back from Tiled: method, reason, consistency
    assert re.search(r"alignment \(run \w{8}\): (pairwise|matching) on \S+", out), out
    assert "  reason: " in out and re.search(r"consistency \(reprojection error on \S+\): before", out), out


def test_serve_refuses_a_non_loopback_host(tmp_path, capsys):
    assert cli.main(["serve", "--data-dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to bind '0.0.0.0'" in err and "--allow-remote" in err
    assert not (tmp_path / "api_key").exists()  # refused before anything is written


def test_api_key_file_is_private_and_reused(tmp_path):
    folder = tmp_path / "new" / "data"
    key = cli._api_key(folder, None)  # creates the folder
    path = folder / "api_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", key)  # tiled wants an alphanumeric key
    assert path.read_text() == key + "\n"
    assert cli._api_key(folder, None) == key  # kept across runs
    assert cli._api_key(folder, "given") == "given"


def test_serve_requires_the_api_key(demo, tmp_path, capsys):
    from tiled.client import from_uri

    from xfct_bluesky.storage import runs_container

    root, _, uid = demo
    proc, url = start_server(root, tmp_path / "serve.log")
    try:
        # without a key, or with a wrong one: refused
        for headers in ({}, {"Authorization": "Apikey 0123abcd"}):
            r = httpx.get(f"{url}/api/v1/metadata/", headers=headers, timeout=10)
            assert r.status_code in (401, 403), (headers, r.status_code, r.text)
        r = httpx.get(f"{url}/api/v1/search/raw", timeout=10)
        assert r.status_code in (401, 403), r.status_code

        # with the key kept in the data folder: the demo run is there
        key = (root / "api_key").read_text().strip()
        client = from_uri(url, api_key=key)
        try:
            cat = runs_container(client)
            assert uid in list(cat)
            assert cat[uid].metadata["start"]["plan_name"] == "xfct_tomo"
        finally:
            client.context.close()

        # ls / show --uri against it
        assert cli.main(["ls", "--uri", url, "--api-key", key]) == 0
        assert uid[:8] in capsys.readouterr().out
        assert cli.main(["show", "nonexistent", "--uri", url, "--api-key", key]) == 1
        assert "no run 'nonexistent' in the catalog" in capsys.readouterr().err
        # regression: a uid under 5 characters (or a scan id) raised ValueError from
        # bluesky-tiled-plugins' partial-uid lookup, a traceback instead of the message
        assert cli.main(["show", "zzzz", "--uri", url, "--api-key", key]) == 1
        assert "no run 'zzzz' in the catalog" in capsys.readouterr().err

        # without --uri, on the served folder: ls and show use the running server, not one of their own
        from xfct_bluesky.storage.folder import running_server

        assert running_server(root) == url
        served = (tmp_path / "serve.log").read_text().count("/api/v1/")
        assert cli.main(["ls", "--data-dir", str(root)]) == 0 and uid[:8] in capsys.readouterr().out
        assert cli.main(["show", uid, "--data-dir", str(root)]) == 0 and "xfct_tomo" in capsys.readouterr().out
        assert (tmp_path / "serve.log").read_text().count("/api/v1/") > served  # the requests went there

        # the key stays off the command lines (readable by every local user through ps)
        if Path("/proc").is_dir():
            pids = _group_pids(proc.pid)
            assert len(pids) >= 2, pids  # xfct-bluesky and its tiled server
            for pid in pids:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert key.encode() not in cmdline, cmdline
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode is not None
    deadline = time.monotonic() + 10
    while _answers(url):
        assert time.monotonic() < deadline, f"{url} still answers after SIGTERM to the process group"
        time.sleep(0.2)
    assert running_server(root) is None  # a stopped server is not taken for a running one
