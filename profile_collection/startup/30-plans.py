# Plans: bluesky's own and the xfct ones.
print(f"Loading {__file__}")
import bluesky.plan_stubs as bps  # noqa: E402, F401
import bluesky.plans as bp  # noqa: E402, F401
from bluesky.simulators import summarize_plan  # noqa: E402, F401

from xfct_bluesky.plans import dwell_pair_series, estimate_tomo, xfct_tomo, xrf_fly_map  # noqa: E402, F401
