# The matplotlib backend (Agg when headless or in the queue server's worker), logging, the data folder.
print(f"Loading {__file__}")
import logging  # noqa: E402
import os  # noqa: E402

import matplotlib  # noqa: E402
from bluesky_queueserver import is_re_worker_active  # noqa: E402

if is_re_worker_active() or (not os.environ.get("DISPLAY") and os.environ.get("MPLBACKEND") is None):
    matplotlib.use("Agg")  # the queue server's worker (no window may open there), or a headless session

from xfct_bluesky.storage import default_data_dir  # noqa: E402

logging.getLogger("xfct_bluesky").setLevel(logging.INFO)
DATA_DIR = default_data_dir()
