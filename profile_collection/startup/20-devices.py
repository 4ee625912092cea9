# The microprobe: simulated by default, EPICS with XFCT_BLUESKY_HARDWARE=epics.
print(f"Loading {__file__}")
from xfct_bluesky.session import make_microprobe  # noqa: E402

mp = make_microprobe(DATA_DIR)  # noqa: F821
microprobe = mp
