"""Analysis kernels (numpy/scipy only): DPC, registration, alignment in every regime, tomography."""

from .align import (
    Alignment,
    AlignmentWarning,
    align_projections,
    alignment_consistency,
    alignment_error,
    apply_shifts,
    fit_sinusoid,
    remove_sinusoid,
)
from .dpc import DPCMaps, difference_over_sum, dpc_from_segments, integrate_gradients, optical_path
from .fitting import SpectrumFit, fit_spectra
from .registration import CCWidth, Registration, cc_fwhm, cross_correlation, is_blank, register
from .tomo import ReconstructionWarning

__all__ = [
    "Alignment", "AlignmentWarning", "CCWidth", "DPCMaps", "ReconstructionWarning", "Registration", "SpectrumFit",
    "align_projections", "alignment_consistency", "alignment_error", "apply_shifts",
    "cc_fwhm", "cross_correlation", "difference_over_sum", "dpc_from_segments", "fit_sinusoid", "fit_spectra",
    "integrate_gradients", "is_blank", "optical_path", "register", "remove_sinusoid",
]
