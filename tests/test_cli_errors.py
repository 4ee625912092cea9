"""Every bad option of ``xfct-bluesky`` is answered in one line, before anything is created (issue 12, item 6).

A refused option: exit status 2 and one line ``xfct-bluesky <command>:
--option VALUE: <what is allowed>``; a data folder or server that cannot be
used: exit status 1, one line. No traceback, and no data folder, output
folder or API key file afterwards. Nothing here runs a simulation or starts a
Tiled server: the checks run the library's own validation on a simulated
microprobe, which is cheap.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xfct_bluesky import cli


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """(data folder, an existing file): the data folder does not exist; the default one is under tmp_path too."""
    monkeypatch.setenv("XFCT_BLUESKY_DATA", str(tmp_path / "default"))
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    return tmp_path / "data", afile


def _refused(capsys, argv, code=2) -> str:
    """Run ``main(argv)``; check the exit status and that stderr is one line, stdout empty; return that line."""
    assert cli.main(argv) == code
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"xfct-bluesky {argv[0]}: "), lines[0]
    return lines[0]


def _nothing_created(tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


# ------------------------------------------------------------- bad options ---
BAD_OPTIONS = [
    # (argv, texts the line must hold: the option and its value, then the allowed range)
    (["ls", "-n", "0"], ["-n 0: allowed an integer >= 1"]),  # was: tail(0) of the catalog, for minutes
    (["ls", "-n", "-3"], ["-n -3: allowed an integer >= 1"]),
    (["demo", "--n-angles", "1"], ["--n-angles 1: ", "n_angles=1", "allowed"]),
    (["demo", "--size", "0"], ["--size 0: ", "1..8192"]),
    (["demo", "--size", "4"], ["--size 4: ", "a map of 16 pixels is too small to store; allowed: more than 16 pixels"]),
    (["demo", "--size", "2000"], ["--size 2000: ", "GB"]),  # beyond the simulator's memory limit
    (["demo", "--total-dose", "-1"], ["--total-dose -1 over --n-angles 60: ", "allowed a finite"]),
    (["demo", "--total-dose", "1e12"], ["--total-dose 1e+12 over --n-angles 60: ", "allowed 0.0001..10 s"]),
    (["demo", "--seed", "-1"], ["--seed -1: allowed an integer >= 0"]),
    (["dose-study", "--angles", "0"], ["--angles 0 with --total-dwell 0.72", "n_angles=0", "allowed"]),
    (["dose-study", "--angles", "24,x"], ["--angles 24,x: give integers separated by commas"]),
    (["dose-study", "--total-dwell", "-3"], ["--total-dwell -3: ", "allowed: a finite number > 0 s"]),
    (["dose-study", "--total-dwell", "nan"], ["--total-dwell nan: ", "not finite"]),
    (["dose-study", "--total-dwell", "1000"], ["--angles 24,72,240,720 with --total-dwell 1000",
                                               "allowed 0.0001..10 s per pixel"]),
    (["dose-study", "--algorithm", "foo"], ["--algorithm foo: ", "allowed: 'fbp', 'sirt', 'mlem', 'osem'"]),
    (["dose-study", "--iterations", "0"], ["--iterations 0: ", "allowed an integer >= 1"]),
    (["dose-study", "--rows", "999"], ["--rows 999 and --size 128", "beyond the scanning stage travel"]),
    (["dose-study", "--rows", "0"], ["--rows 0: allowed an integer >= 7"]),
    (["dose-study", "--size", "64"], ["--size 64", "needs 29.0 um", "allowed: size >= 97 px"]),
    (["dose-study", "--alignments", "foo"], ["--alignments foo: ", "allowed: 'auto'"]),
    (["dose-study", "--seeds", "-1"], ["--seeds -1: ", "allowed an integer >= 0"]),
    (["paper-table", "--region", "500", "--size", "100"], ["--region 500 with --size 100: ", "allowed 8 to 100 px"]),
    (["paper-table", "--upsample", "0"], ["--upsample 0: ", "integer >= 1"]),
    (["paper-table", "--size", "0"], ["--size 0: ", "1..8192"]),
    # --port 99999 was: listened elsewhere
    (["serve", "--port", "99999"], ["--port 99999: allowed an integer in 1..65535", "A TCP port"]),
    (["serve", "--port", "0"], ["--port 0: allowed an integer in 1..65535", "A TCP port"]),
    (["serve", "--port", "-1"], ["--port -1: allowed an integer in 1..65535", "A TCP port"]),
    (["serve", "--host", "0.0.0.0"], ["--host 0.0.0.0: refusing to bind '0.0.0.0'", "--allow-remote"]),
    (["reconstruct", "0123abcd", "--iterations", "0"], ["--iterations 0: ", "allowed an integer >= 1"]),
    (["reconstruct", "0123abcd", "--align", "foo"], ["--align foo: ", "allowed: 'auto'"]),
    (["reconstruct", "0123abcd", "--subsets", "0"], ["--subsets 0: ", "allowed an integer >= 1"]),
    (["reconstruct", "0123abcd", "--elements", ","], ["--elements ',': give at least one element"]),
    (["ioc", "--prefix", ""], ["--prefix '': allowed a PV prefix", "ending in ':'", "'XFCT:'"]),
    (["ioc", "--prefix", "XFCT"], ["--prefix 'XFCT': allowed a PV prefix"]),
    (["ioc", "--prefix", "XF.CT:"], ["--prefix 'XF.CT:': allowed a PV prefix"]),  # '.' starts a field name
    (["ioc", "--seed", "-2"], ["--seed -2: allowed an integer >= 0"]),
    (["ioc", "--interfaces", "0.0.0.0"], ["--interfaces 0.0.0.0: refusing to serve on 0.0.0.0", "--allow-remote"]),
]


@pytest.mark.parametrize("argv, texts", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_a_bad_option_is_refused_in_one_line_before_anything_is_created(argv, texts, folders, capsys, tmp_path):
    data, _ = folders
    line = _refused(capsys, [*argv, "--data-dir", str(data)])
    for text in texts:
        assert text in line, (text, line)
    _nothing_created(tmp_path)


@pytest.mark.parametrize("command", ["demo", "dose-study", "paper-table"])
@pytest.mark.parametrize("under", [False, True], ids=["file", "under a file"])
def test_an_output_that_is_a_file_is_refused_before_any_work(command, under, folders, capsys, tmp_path):
    data, afile = folders
    output = afile / "sub" if under else afile
    line = _refused(capsys, [command, "--output", str(output), "--data-dir", str(data)])
    assert f"--output {output}: " in line
    assert ("is a file, so no folder can be made under it" if under else "is a file, not a folder") in line
    _nothing_created(tmp_path)


def test_dxchange_at_a_folder_is_refused(folders, capsys, tmp_path):
    data, _ = folders
    line = _refused(capsys, ["reconstruct", "0123abcd", "--dxchange", str(tmp_path), "--data-dir", str(data)])
    assert f"--dxchange {tmp_path}: is a folder; give the HDF5 file" in line
    _nothing_created(tmp_path)


# ------------------------------------------------------------- data folder ---
COMMANDS = [["ls"], ["show", "0123abcd"], ["replay"], ["fit", "0123abcd"], ["reconstruct", "0123abcd"], ["demo"],
            ["serve"], ["shell"], ["paper-table"], ["dose-study"], ["ioc"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=[a[0] for a in COMMANDS])
def test_a_data_dir_that_is_a_file_is_refused_by_every_command(argv, folders, capsys, tmp_path):
    _, afile = folders
    line = _refused(capsys, [*argv, "--data-dir", str(afile)])
    assert line.endswith(f"--data-dir {afile}: is a file, not a folder; give a folder (created if missing)"), line
    _nothing_created(tmp_path)


def test_a_data_dir_under_a_file_is_refused(folders, capsys, tmp_path):
    _, afile = folders
    line = _refused(capsys, ["ls", "--data-dir", str(afile / "data")])
    assert f"--data-dir {afile / 'data'}: {afile} is a file, so no folder can be made under it" in line
    _nothing_created(tmp_path)


def test_the_data_folder_of_the_environment_is_checked_too(folders, capsys, tmp_path, monkeypatch):
    _, afile = folders
    monkeypatch.setenv("XFCT_BLUESKY_DATA", str(afile))
    line = _refused(capsys, ["ls"])
    assert f"$XFCT_BLUESKY_DATA {afile}: is a file, not a folder" in line
    _nothing_created(tmp_path)


def test_a_data_folder_error_is_one_line_with_status_1(folders, capsys, tmp_path, monkeypatch):
    """``storage.DataFolderError`` (corrupt catalog, moved folder, ...) from any command: its message, exit 1."""
    from xfct_bluesky import storage

    data, _ = folders
    message = f"the catalog {data}/tiled/catalog.db is not an SQLite database; move it away to start a new one"

    def broken(_directory):
        raise storage.DataFolderError(message)

    monkeypatch.setattr(storage, "embedded_server", broken)
    for argv in (["ls"], ["show", "0123abcd"]):
        assert _refused(capsys, [*argv, "--data-dir", str(data)], code=1) == f"xfct-bluesky {argv[0]}: {message}"


# -------------------------------------------------------------------- --uri ---
def test_a_uri_that_is_no_address_is_refused(folders, capsys, tmp_path):
    data, _ = folders
    line = _refused(capsys, ["ls", "--uri", "notaurl", "--data-dir", str(data)])
    assert "--uri notaurl: not an address of a Tiled server" in line and "http://host:port" in line
    _nothing_created(tmp_path)


@pytest.fixture
def refusing_server():
    """The URL of a loopback HTTP server that answers 401 to everything, as Tiled does to a wrong API key."""
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"detail": "Invalid API key"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_refused_api_key_is_reported_in_one_line(refusing_server, folders, capsys, tmp_path):
    line = _refused(capsys, ["ls", "--uri", refusing_server, "--api-key", "wrong"], code=1)
    assert f"--uri {refusing_server}: the server refused the client (401: Invalid API key" in line
    assert "give the server's key with --api-key" in line
    _nothing_created(tmp_path)


def test_an_unreachable_server_is_reported_in_one_line_within_seconds(tmp_path):
    """Regression: tiled's retries took 26 s, then an httpx traceback."""
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "xfct_bluesky.cli", "ls", "--uri", url], check=False,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, XFCT_BLUESKY_DATA=str(tmp_path)))
    seconds = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert seconds < 10, seconds
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"xfct-bluesky ls: --uri {url}: no Tiled server answers ("), line
    assert "xfct-bluesky serve" in line
    assert list(Path(tmp_path).iterdir()) == []


# ------------------------------------------------------------ good options ---
GOOD_OPTIONS = [["demo"], ["demo", "--n-angles", "6", "--size", "24"], ["dose-study"], ["paper-table"],
                ["paper-table", "--size", "40", "--region", "32", "--upsample", "2"], ["serve"], ["ls"],
                ["reconstruct", "0123abcd", "--algorithm", "osem"]]


@pytest.mark.parametrize("argv", GOOD_OPTIONS, ids=[" ".join(a) for a in GOOD_OPTIONS])
def test_the_defaults_and_the_documented_examples_pass_the_checks(argv, folders, tmp_path):
    data, _ = folders
    args = cli.build_parser().parse_args([*argv, "--data-dir", str(data)])
    args.check(args)
    _nothing_created(tmp_path)
