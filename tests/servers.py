"""Helpers for tests that run servers in subprocesses: ``xfct-bluesky serve``, Redis (imported by test modules).

A program a test needs that is not installed (``redis-server``) skips the
test with the reason and the fix; under ``CI=true`` (``.ci/run``, which
installs it) that is a failure instead: CI must never pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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


def spawn_server(root: Path, log: Path, port: int | None = None, *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``xfct-bluesky serve`` on ``root`` (and ``args``, e.g. ``("--catalog", uri)``) in its own process group,
    not yet waited for (:func:`wait_answering`)."""
    port = port or free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(CONSOLE_SCRIPT), "serve", "--data-dir", str(root), "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_answering(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> None:
    """Wait until the server at ``url`` answers; kill its process group and fail the test if it dies or times out."""
    deadline = time.monotonic() + timeout  # a loaded 2-core machine takes 15-25 s
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            pytest.fail(f"server on {url} did not come up in {timeout:g} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def start_server(root: Path, log: Path, port: int | None = None, *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``xfct-bluesky serve`` in its own process group (see :func:`spawn_server`), up and answering within 60 s."""
    proc, url = spawn_server(root, log, port, args=args, env=env)
    wait_answering(proc, url, log)
    return proc, url


def in_ci() -> bool:
    """True in CI (``CI=true``, as ``.ci/run`` runs): missing services fail the tests there, never skip them."""
    return os.environ.get("CI", "").lower() == "true"


def require_program(name: str, fix: str) -> str:
    """The path of program ``name``; if it is not on PATH, skip the test saying so and how to get it (fail in CI)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (not on PATH): {fix}"
        if in_ci():
            pytest.fail(f"CI=true: {reason}; .ci/run must install it", pytrace=False)
        pytest.skip(reason)
    return path


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM to ``proc`` by its PID, SIGKILL if it is still there after ``timeout`` s; reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@dataclass
class Redis:
    """A ``redis-server`` of the tests: ``addr`` (``127.0.0.1:PORT``, for ``--redis-addr``), ``port``, ``proc``."""

    proc: subprocess.Popen
    port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


REDIS_FIX = "install Debian's redis-server (`make services`, as root) to run the queue-server tests"


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(directory: Path) -> Redis:
    """``redis-server`` on 127.0.0.1 and a free port, nothing saved to disk, its files in ``directory``;
    answering PING within 20 s. Skips (fails in CI) without redis-server."""
    program = require_program("redis-server", REDIS_FIX)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "redis.log"
    proc = subprocess.Popen([program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(directory), "--logfile", str(log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not _redis_pong(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"redis-server on 127.0.0.1:{port} did not answer in 20 s (exit {proc.returncode}):\n"
                        f"{log.read_text()[-2000:] if log.exists() else ''}")
        time.sleep(0.05)
    return Redis(proc=proc, port=port)


def socket_addresses(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, local IPv4 address, port) of every TCP/UDP socket process ``pid`` holds (Linux /proc)."""
    import ipaddress
    import struct

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "udp"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                host, port = fields[1].split(":")
                found.append((proto, str(ipaddress.IPv4Address(struct.pack("<I", int(host, 16)))), int(port, 16)))
    return found


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


# --------------------------------------------------------------------------- PostgreSQL
POSTGRES_FIX = "install Debian's postgresql (`make services`, as root) to run the storage tests on a PostgreSQL catalog"
POSTGRES_USER = "xfct"  # the cluster's superuser, with a generated password


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster of the tests (:func:`start_postgres`): ``port``, ``user``, ``password``,
    ``proc`` (the postmaster), ``directory`` (its data and sockets).

    Clients connect over TCP to 127.0.0.1 with the password (``scram-sha-256``); ``env`` gives it as
    ``PGPASSWORD`` for a child process, ``pgpass`` is a password file for it (for ``PGPASSFILE``), :meth:`uri`
    a URI without it.
    """

    proc: subprocess.Popen
    port: int
    user: str
    password: str
    directory: Path
    bin_dir: Path
    pgpass: Path
    owned_tree: Path | None = None  # removed by stop_postgres (a folder made for the postgres user)

    def uri(self, database: str = "postgres", *, with_password: bool = False) -> str:
        secret = f":{self.password}" if with_password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, PGPASSWORD=self.password)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by :attr:`user`); its URI without the password."""
        import asyncio

        import asyncpg

        async def create() -> None:
            con = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                        database="postgres")
            try:
                await con.execute(f'CREATE DATABASE "{name}"')
            finally:
                await con.close()

        asyncio.run(create())
        return self.uri(name)


def postgres_bin_dir() -> Path:
    """The folder of ``initdb``, ``postgres`` and ``pg_isready``: Debian's newest ``/usr/lib/postgresql/*/bin``
    (not on PATH), else the one on PATH. Skips (fails in CI) without PostgreSQL."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    return Path(require_program("initdb", POSTGRES_FIX)).parent


def _as_cluster_owner() -> dict:
    """``subprocess`` arguments that run a PostgreSQL program as a non-root user: as root (CI), Debian's
    ``postgres`` user (initdb and postgres refuse root); otherwise the current user (no arguments)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        reason = "running as root, and there is no `postgres` user to run PostgreSQL as (initdb refuses root)"
        if in_ci():
            pytest.fail(f"CI=true: {reason}; {POSTGRES_FIX}", pytrace=False)
        pytest.skip(f"{reason}: {POSTGRES_FIX}")
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def start_postgres(directory: Path, timeout: float = 30) -> Postgres:
    """A PostgreSQL cluster on 127.0.0.1 and a free port, answering within ``timeout`` s; stop it with
    :func:`stop_postgres`. Skips (fails in CI) without PostgreSQL.

    ``initdb`` and ``postgres`` run as a non-root user (as root: Debian's ``postgres``, in a folder of the
    system's temporary directory that user owns, since pytest's are private to root); TCP on 127.0.0.1 only,
    the Unix socket in a private folder of the cluster (``-k``), password authentication (``scram-sha-256``)
    for one generated superuser, durability off (``fsync``, ``synchronous_commit``: a throwaway cluster).
    """
    import secrets
    import tempfile

    bin_dir = postgres_bin_dir()
    owner = _as_cluster_owner()
    directory.mkdir(parents=True, exist_ok=True)
    owned_tree = None
    if owner:
        owned_tree = Path(tempfile.mkdtemp(prefix="xfct-postgres-"))
        os.chown(owned_tree, owner["user"], owner["group"])
        base = owned_tree
    else:
        base = directory
    data, sockets = base / "data", base / "sockets"
    password = secrets.token_urlsafe(24)
    pwfile = base / "pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    if owner:
        os.chown(pwfile, owner["user"], owner["group"])
    init = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--pwfile", str(pwfile),
                           "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
                           "--no-locale", "--no-sync"],
                          check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True, **owner)
    pwfile.unlink()
    if init.returncode != 0:
        if owned_tree is not None:
            shutil.rmtree(owned_tree, ignore_errors=True)
        pytest.fail(f"initdb failed (exit {init.returncode}):\n{init.stderr[-2000:]}")
    sockets.mkdir(mode=0o700)
    if owner:
        os.chown(sockets, owner["user"], owner["group"])
    port = free_port()
    log = directory / "postgres.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **owner)
    pgpass = directory / "pgpass"  # libpq's format; mode 0600, or libpq ignores it
    fd = os.open(pgpass, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"127.0.0.1:{port}:*:{POSTGRES_USER}:{password}\n")
    pg = Postgres(proc=proc, port=port, user=POSTGRES_USER, password=password, directory=base, bin_dir=bin_dir,
                  pgpass=pgpass, owned_tree=owned_tree)
    deadline = time.monotonic() + timeout
    while subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                         check=False, stdin=subprocess.DEVNULL, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_postgres(pg)
            pytest.fail(f"PostgreSQL on 127.0.0.1:{port} did not answer in {timeout:g} s (exit {proc.returncode}):"
                        f"\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return pg


def stop_postgres(pg: Postgres, timeout: float = 20) -> None:
    """Stop the cluster by its postmaster's PID (SIGINT: PostgreSQL's fast shutdown; SIGKILL after ``timeout``
    s) and remove a folder made for the ``postgres`` user."""
    if pg.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            pg.proc.send_signal(signal.SIGINT)
        try:
            pg.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pg.proc.kill()
            pg.proc.wait(timeout=timeout)
    if pg.owned_tree is not None:
        shutil.rmtree(pg.owned_tree, ignore_errors=True)


def ca_port() -> int:
    """A port free for both TCP and UDP on loopback (Channel Access serves searches on UDP, channels on TCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no port free for both TCP and UDP on loopback")


@contextlib.contextmanager
def running_ioc(args: list[str], log: Path, timeout: float = 30):
    """``python -m xfct_bluesky.ioc ARGS`` on loopback at a free Channel Access port, stopped by its PID.

    While it runs this process's CA settings point at it (``EPICS_CA_ADDR_LIST=127.0.0.1``, no auto list,
    the port) and are restored after. Yields ``{"port", "pid", "log"}`` once the IOC's TCP port accepts
    (searching before it is up only makes a CA client back off).
    """
    port = ca_port()
    ca_env = {"EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_SERVER_PORT": str(port)}
    saved = {key: os.environ.get(key) for key in ca_env}
    os.environ.update(ca_env)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "xfct_bluesky.ioc", *args], env=dict(os.environ),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the IOC exited with {proc.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the IOC did not listen on port {port} within {timeout:g} s:\n{log.read_text()}")
                time.sleep(0.05)
        yield {"port": port, "pid": proc.pid, "log": log}
    finally:
        stop_process(proc)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
