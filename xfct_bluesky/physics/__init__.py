"""Pure numpy/scipy simulator of the scanning XRF microprobe (no bluesky imports).

See :class:`~xfct_bluesky.physics.microprobe.MicroprobeSimulator` for the
pipeline and :mod:`~xfct_bluesky.physics.specimen` for the geometry convention.
"""

from .cells import cell, mouse_egg, small_cell
from .detectors import SegmentedDetectorModel, VortexModel
from .dose import dose_per_projection, dwell_for_dose
from .microprobe import MAP_KEYS, MapResult, MicroprobeSimulator, Truth, expected_counts
from .probe import Probe
from .runout import RunoutModel, no_runout
from .specimen import (
    ELEMENT_SYMBOLS,
    QUANTITIES,
    AnalyticSpecimen,
    Ellipsoids,
    GaussianBlobs,
    HollowCylinder,
    Material,
    Particles,
    Projection,
    Specimen,
    VoxelSpecimen,
    voxelize,
)

__all__ = [
    "ELEMENT_SYMBOLS", "MAP_KEYS", "QUANTITIES", "AnalyticSpecimen", "Ellipsoids", "GaussianBlobs",
    "HollowCylinder", "MapResult", "Material", "MicroprobeSimulator", "Particles", "Probe", "Projection",
    "RunoutModel", "SegmentedDetectorModel", "Specimen", "Truth", "VortexModel", "VoxelSpecimen", "cell",
    "dose_per_projection", "dwell_for_dose", "expected_counts", "mouse_egg", "no_runout", "small_cell", "voxelize",
]
