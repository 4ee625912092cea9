"""Live callbacks: progress bar, live maps, live DPC alignment."""

from .alignment import LiveDPCAlignment
from .plots import LiveMaps
from .progress import ProgressBar

__all__ = ["LiveDPCAlignment", "LiveMaps", "ProgressBar"]
