# RunEngine with persistent metadata, logging, matplotlib.
print(f"Loading {__file__}")
import logging  # noqa: E402
import os  # noqa: E402

import matplotlib  # noqa: E402

if not os.environ.get("DISPLAY") and os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")  # headless session (CI, ssh without X)

from bluesky.callbacks.best_effort import BestEffortCallback  # noqa: E402

from xfct_bluesky.session import make_run_engine  # noqa: E402
from xfct_bluesky.storage import default_data_dir  # noqa: E402

logging.getLogger("xfct_bluesky").setLevel(logging.INFO)
DATA_DIR = default_data_dir()
RE = make_run_engine(DATA_DIR)
bec = BestEffortCallback()
bec.disable_plots() if matplotlib.get_backend().lower() == "agg" else None
RE.subscribe(bec)
