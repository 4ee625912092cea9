"""Bluesky plans: fly maps, many-angle low-dose tomography, the paper's dwell experiment."""

from .acquire import DetectorTimeout
from .planning import ORDERS, PlausibilityWarning, TomoEstimate, estimate_tomo, tomo_angles
from .suspenders import beam_loss_suspender
from .xrf import dwell_pair_series, xfct_tomo, xrf_fly_map

__all__ = [
    "ORDERS", "DetectorTimeout", "PlausibilityWarning", "TomoEstimate", "beam_loss_suspender", "dwell_pair_series", "estimate_tomo",
    "tomo_angles", "xfct_tomo", "xrf_fly_map",
]
