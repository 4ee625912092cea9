"""The xfct-bluesky command: demo, ls, show, serve (loopback, API key enforced)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from xfct_bluesky import cli


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A data folder holding one small demo run; yields (folder, uid)."""
    root = tmp_path_factory.mktemp("cli")
    from xfct_bluesky.demo import run_demo

    res = run_demo(root, n_angles=6, shape=(24, 24), progress=False)
    return root, res


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "serve", "shell", "ls", "show"):
        assert command in out


def test_demo_prints_where_data_went(tmp_path, capsys):
    assert cli.main(["demo", "--data-dir", str(tmp_path), "--n-angles", "4", "--size", "20"]) == 0
    out = capsys.readouterr().out
    assert "run uid" in out and str(tmp_path) in out and "xfct-bluesky ls" in out
    png = next((tmp_path / "demo").glob("overview-*.png"))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert list((tmp_path / "assets").glob("*.h5"))  # spectra went to HDF5


def test_ls_and_show(demo_dir, capsys):
    root, res = demo_dir
    assert cli.main(["ls", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith(res.uid[:8]))
    assert "xfct_tomo" in line and "demo cell" in line and " 6 " in line and "Gy" in line
    assert cli.main(["show", res.uid[:8], "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert '"plan_name": "xfct_tomo"' in out and '"n_angles": 6' in out and "stream primary" in out
    assert cli.main(["show", "nonexistent", "--data-dir", str(root)]) == 1
    assert "no run 'nonexistent'" in capsys.readouterr().err


def test_serve_refuses_non_loopback(tmp_path, capsys):
    assert cli.main(["serve", "--data-dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "loopback only" in capsys.readouterr().err


def test_api_key_file_is_private_and_reused(tmp_path):
    key = cli._api_key(tmp_path, None)
    path = tmp_path / "api_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 64 and cli._api_key(tmp_path, None) == key
    assert cli._api_key(tmp_path, "given") == "given"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_requires_the_api_key(demo_dir):
    from tiled.client import from_uri

    from xfct_bluesky.storage import runs_container

    root, res = demo_dir
    port = _free_port()
    exe = Path(sys.executable).with_name("xfct-bluesky")
    proc = subprocess.Popen([str(exe), "serve", "--data-dir", str(root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/api/v1/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
        # without the key: refused
        r = httpx.get(f"{url}/api/v1/metadata/raw", timeout=10)
        assert r.status_code in (401, 403), r.status_code
        r = httpx.post(f"{url}/api/v1/metadata/raw", json={}, timeout=10)
        assert r.status_code in (401, 403), r.status_code
        # with the key: the demo run is there
        key = (root / "api_key").read_text().strip()
        client = from_uri(url, api_key=key)
        assert res.uid in list(runs_container(client))
        client.context.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        proc.stdout.close()
    assert proc.returncode is not None
