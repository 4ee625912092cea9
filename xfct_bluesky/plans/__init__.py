"""Bluesky plans: fly maps, many-angle low-dose tomography, the paper's dwell experiment."""

from .planning import ORDERS, TomoEstimate, estimate_tomo, tomo_angles
from .xrf import dwell_pair_series, xfct_tomo, xrf_fly_map

__all__ = ["ORDERS", "TomoEstimate", "dwell_pair_series", "estimate_tomo", "tomo_angles", "xfct_tomo", "xrf_fly_map"]
