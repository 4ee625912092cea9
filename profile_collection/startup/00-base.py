# The headless/interactive matplotlib backend, logging, the data folder.
print(f"Loading {__file__}")
import logging  # noqa: E402
import os  # noqa: E402

import matplotlib  # noqa: E402

if not os.environ.get("DISPLAY") and os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")  # headless session (CI, ssh without X)

from xfct_bluesky.storage import default_data_dir  # noqa: E402

logging.getLogger("xfct_bluesky").setLevel(logging.INFO)
DATA_DIR = default_data_dir()
