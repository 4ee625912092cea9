"""Analysis kernels (numpy/scipy only): DPC, registration, alignment in every regime, tomography."""

from .align import Alignment, align_projections, alignment_consistency, alignment_error
from .dpc import (
    DPCMaps,
    difference_over_sum,
    dpc_from_segments,
    integrate_gradients,
    optical_path,
)
from .exceptions import AlignmentWarning, ReconstructionWarning
from .fitting import SpectrumFit, fit_spectra
from .quantify import (
    StandardCalibration,
    areal_density,
    calibrate_standard,
    concentration,
    projected_mass,
    read_standard_info,
)
from .registration import (
    CCWidth,
    Registration,
    cc_fwhm,
    cross_correlation,
    is_blank,
    register,
)
from .shifts import apply_shifts, fit_sinusoid, remove_sinusoid

__all__ = [
    "Alignment", "AlignmentWarning", "CCWidth", "DPCMaps", "ReconstructionWarning", "Registration", "SpectrumFit",
    "StandardCalibration",
    "align_projections", "alignment_consistency", "alignment_error", "apply_shifts", "areal_density",
    "calibrate_standard", "cc_fwhm", "concentration", "cross_correlation", "difference_over_sum",
    "dpc_from_segments", "fit_sinusoid", "fit_spectra",
    "integrate_gradients", "is_blank", "optical_path", "projected_mass", "read_standard_info", "register",
    "remove_sinusoid",
]
