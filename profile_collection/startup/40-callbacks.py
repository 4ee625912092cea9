# Live feedback: a progress bar per run, the latest maps, and live DPC alignment
# (its shifts are stored in Tiled as a derived run linked by raw_uid).
print(f"Loading {__file__}")
from xfct_bluesky.callbacks.alignment import LiveDPCAlignment  # noqa: E402
from xfct_bluesky.callbacks.plots import LiveMaps  # noqa: E402
from xfct_bluesky.callbacks.progress import ProgressBar  # noqa: E402

RE.subscribe(ProgressBar())  # noqa: F821
live_maps = LiveMaps(("dpc_diag", "Zn"))
RE.subscribe(live_maps)  # noqa: F821
live_alignment = LiveDPCAlignment(emit=tiled_writer, plot=matplotlib.get_backend().lower() != "agg")  # noqa: F821
RE.subscribe(live_alignment)  # noqa: F821
