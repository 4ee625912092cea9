"""The README's "Watching a scan from a browser" figure: the live view of a finished tomography, in Chromium.

A 24-angle tomography of a simulated 7 um cell, 32 x 32 px of 300 nm at 5 ms, runs in a Session on a Tiled
server of this process (the live alignment and reconstruction publish their derived runs); then
``xfct-bluesky view`` serves the page and headless Chromium (Debian's, through playwright) takes it whole.
Run: python docs/figures/make_live_view_figure.py (writes live-view.png beside it; about 2 minutes).
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from playwright.sync_api import sync_playwright
from tiled.client import from_uri

from xfct_bluesky.devices.sim import make_sim_microprobe
from xfct_bluesky.physics import RunoutModel, small_cell
from xfct_bluesky.plans import xfct_tomo
from xfct_bluesky.session import Session
from xfct_bluesky.storage import embedded_server

OUTPUT = Path(__file__).with_name("live-view.png")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PORT = 8765


def microprobe(session):
    return make_sim_microprobe(shape=(32, 32), pixel_size=300e-9, seed=1, specimen=small_cell(7e-6, seed=1),
                               save_spectra=False, runout=RunoutModel(eccentricity=1e-6, seed=1))


def main(root: Path) -> None:
    with embedded_server(root / "server") as server:
        with Session(root / "session", client=from_uri(server.uri), microprobe=microprobe, persistent_md=False,
                     journal=False) as s:
            s.RE(xfct_tomo(s.microprobe, shape=(32, 32), pixel_size=300e-9, n_angles=24, dwell=5e-3,
                           md={"sample": "cell 7 um"}))
            s.wait(600)
        key_file = root / "api_key"
        key_file.write_text(parse_qs(urlparse(server.uri).query)["api_key"][0])
        os.chmod(key_file, 0o600)
        view = subprocess.Popen([str(Path(sys.executable).with_name("xfct-bluesky")), "view", "--uri",
                                 server.uri.split("?")[0], "--api-key-file", str(key_file), "--data-dir",
                                 str(root / "view"), "--port", str(PORT)])
        try:
            token_file = root / "view" / "view_token"
            while not token_file.exists():
                time.sleep(0.5)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1200, "height": 1000})
                page.goto(f"http://127.0.0.1:{PORT}/?token={token_file.read_text().strip()}")
                page.wait_for_function("() => window.xfctView.shifts && window.xfctView.slice", timeout=120000)
                time.sleep(1)
                page.screenshot(path=str(OUTPUT), full_page=True)
                browser.close()
        finally:
            view.terminate()
            view.wait(20)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(tmp))
