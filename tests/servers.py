"""Helpers for tests that run ``xfct-bluesky serve`` in a subprocess (imported by test modules)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

CONSOLE_SCRIPT = Path(sys.executable).with_name("xfct-bluesky")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/api/v1/", timeout=1)
    except httpx.TransportError:
        return False
    return True


def start_server(root: Path, log: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """``xfct-bluesky serve`` in its own process group, up and answering within 20 s."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(CONSOLE_SCRIPT), "serve", "--data-dir", str(root), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60  # a loaded 2-core machine takes 15-25 s
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            pytest.fail(f"server on {url} did not come up in 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, url


def group_pids(pgid: int) -> list[int]:
    """Processes of a process group (Linux /proc)."""
    pids = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(stat_file.parent.name))
    return pids




def kill_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal the server's whole process group (xfct-bluesky and its tiled child) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=20)
