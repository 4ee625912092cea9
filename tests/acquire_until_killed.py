"""Acquire a small tomography into a Tiled server and report each event on stdout (run by test_crash.py).

Usage: python acquire_until_killed.py URI DATA_DIR

The TiledWriter is journaled in DATA_DIR/journal, as the session's is. After
each projection, once every earlier callback (the writer and its journal) has
seen it, one JSON line gives its sequence number, angle and the sha256 of its
Zn map, so the test knows exactly what was emitted before it kills this
process with SIGKILL.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from bluesky import RunEngine
from tiled.client import from_uri

from xfct_bluesky.devices.sim import make_sim_microprobe
from xfct_bluesky.physics import small_cell
from xfct_bluesky.plans import xfct_tomo
from xfct_bluesky.storage import make_tiled_writer, runs_container

N_ANGLES = 7
SHAPE = (16, 20)


def main(uri: str, data_dir: Path) -> None:
    catalog = runs_container(from_uri(uri))
    RE = RunEngine({})
    RE.subscribe(make_tiled_writer(catalog, data_dir / "backup", journal_directory=data_dir / "journal"))
    primary: set[str] = set()

    def report(name, doc):
        if name == "start":
            print(json.dumps({"start": doc["uid"]}), flush=True)
        elif name == "descriptor" and doc["name"] == "primary":
            primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in primary:
            zn = np.asarray(doc["data"]["microprobe_scanner_Zn"], dtype=float)
            print(json.dumps({"seq_num": doc["seq_num"], "theta": doc["data"]["microprobe_rotation"],
                              "zn": hashlib.sha256(zn.tobytes()).hexdigest()}), flush=True)

    RE.subscribe(report)
    mp = make_sim_microprobe(shape=SHAPE, pixel_size=300e-9, seed=0, specimen=small_cell(5e-6),
                             hdf5_directory=data_dir / "assets")
    RE(xfct_tomo(mp, shape=SHAPE, pixel_size=300e-9, n_angles=N_ANGLES, dwell=1e-3, md={"sample": "crash test"}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
