"""The warning categories of the analysis (as ``numpy.exceptions`` holds numpy's), below every module that warns."""

from __future__ import annotations

__all__ = ["AlignmentWarning", "ReconstructionWarning"]


class AlignmentWarning(UserWarning):
    """An alignment that could not do its job on these data, or was not applied; the message has the figures."""


class ReconstructionWarning(UserWarning):
    """Data a reconstruction accepts but that limit what it can show (a limited angular range, repeated
    angles, projections left out); the message has the figures and the consequence."""
