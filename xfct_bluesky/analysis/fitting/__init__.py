"""Spectrum fitting: element counts per pixel by Poisson maximum likelihood on a calibrated basis.

* :func:`fit_spectra` (:mod:`.fit`): the map's spectra to counts of each line family, their standard
  errors, the scatter and the deviance, in a :class:`SpectrumFit`;
* :class:`Calibration` and :func:`build_basis` (:mod:`.model`): the detector response and the fixed basis;
* :func:`calibrate` (:mod:`.calibrate`): the nonlinear Poisson fit of a summed spectrum;
* :func:`line_family` (:mod:`.lines`): a family's lines from xraylib;
* :func:`read_maps_override` (:mod:`.xrfmaps`): XRF-Maps' ``maps_fit_parameters_override.txt``;
* :func:`~.maps.prefer_fitted` (:mod:`.maps`): a fit's element maps in place of a run's ROI maps, for the
  alignment, the reconstruction and the dose study.

The compiled kernels (:mod:`._kernels`, numba) load on the first fit, so importing this package is cheap.
"""

from .calibrate import (
    BASIC_FREE,
    DEFAULT_FREE,
    CalibrationError,
    CalibrationFit,
    calibrate,
)
from .fit import METHODS, SpectrumFit, SpectrumFitWarning, fit_spectra
from .lines import LineFamily, compton_energy, line_family, si_escape_probability
from .model import Calibration, SpectrumBasis, build_basis
from .xrfmaps import MapsOverride, read_maps_override

__all__ = [
    "BASIC_FREE", "DEFAULT_FREE", "METHODS", "Calibration", "CalibrationError", "CalibrationFit", "LineFamily",
    "MapsOverride", "SpectrumBasis", "SpectrumFit", "SpectrumFitWarning", "build_basis", "calibrate", "compton_energy",
    "fit_spectra", "line_family", "read_maps_override", "si_escape_probability",
]
