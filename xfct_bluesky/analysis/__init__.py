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
from .resolution import (  # resolution() is frc_resolution here: the name stays the module's
    Comparison,
    FourierCorrelation,
    Resolution,
    compare_to_reference,
    fourier_ring_correlation,
    fourier_shell_correlation,
    half_bit_threshold,
)
from .resolution import resolution as frc_resolution
from .shifts import apply_shifts, fit_sinusoid, remove_sinusoid

__all__ = [
    "Alignment", "AlignmentWarning", "CCWidth", "Comparison", "DPCMaps", "FourierCorrelation",
    "ReconstructionWarning", "Registration", "Resolution", "SpectrumFit", "StandardCalibration",
    "align_projections", "alignment_consistency", "alignment_error", "apply_shifts", "areal_density",
    "calibrate_standard", "cc_fwhm", "compare_to_reference", "concentration", "cross_correlation",
    "difference_over_sum", "dpc_from_segments", "fit_sinusoid", "fit_spectra", "fourier_ring_correlation",
    "fourier_shell_correlation", "frc_resolution", "half_bit_threshold",
    "integrate_gradients", "is_blank", "optical_path", "projected_mass", "read_standard_info", "register",
    "remove_sinusoid",
]
