# Live feedback: a progress bar per run and the latest maps.
print(f"Loading {__file__}")
from xfct_bluesky.callbacks.plots import LiveMaps  # noqa: E402
from xfct_bluesky.callbacks.progress import ProgressBar  # noqa: E402

RE.subscribe(ProgressBar())  # noqa: F821
live_maps = LiveMaps(("dpc_diag", "Zn"))
RE.subscribe(live_maps)  # noqa: F821
