"""Read XRF-Maps' (and MAPS') ``maps_fit_parameters_override.txt``: a beamline's fit parameters.

The file is lines of ``KEY: value`` (a number, or a comma-separated list),
with explanations on indented lines between them (format: XRF-Maps
``src/io/file/aps/aps_fit_params_import.cpp``; the 2-ID-E file of the shared
real dataset is an example). The keys this package uses, and what they
become:

=============================  ================================================
``CAL_OFFSET_[E_OFFSET]``      :attr:`Calibration.offset` (keV)
``CAL_SLOPE_[E_LINEAR]``       :attr:`Calibration.gain` (keV per channel)
``CAL_QUAD_[E_QUADRATIC]``     :attr:`Calibration.quadratic`
``FWHM_OFFSET``                :attr:`Calibration.fwhm_offset` (keV)
``FWHM_FANOPRIME``             :attr:`Calibration.fanoprime`
``COHERENT_SCT_ENERGY``        :attr:`Calibration.incident_energy` (keV)
``COMPTON_ANGLE``, ``COMPTON_FWHM_CORR``, ``COMPTON_F_TAIL``, ``COMPTON_GAMMA``, ``COMPTON_HI_F_TAIL``,
``COMPTON_HI_GAMMA``           the Compton parameters of the same names
``F_TAIL_OFFSET``, ``GAMMA_OFFSET``, ``STEP_OFFSET``
                               :attr:`Calibration.f_tail`, ``gamma``, ``f_step``
``ELEMENTS_TO_FIT``            the line families (``Ca``, ``Au_L``: the same naming)
``ELEMENTS_WITH_PILEUP``       pile-up components (``Si_Si`` becomes ``"Si+Si"``)
``MIN/MAX_ENERGY_TO_FIT``      the fitted energy range (keV)
=============================  ================================================

XRF-Maps' tail model differs (a tail on K-beta lines only, ``KB_F_TAIL_*``)
and so does its escape model: those keys are kept in :attr:`MapsOverride.raw`
only. Our tails and step start from the file's values and are refitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .model import Calibration

__all__ = ["MapsOverride", "read_maps_override"]

_KEY = re.compile(r"^([A-Z][A-Z0-9_\[\]]*):\s*(.*?)\s*$")
_CALIBRATION_KEYS = {
    "CAL_OFFSET_[E_OFFSET]": "offset",
    "CAL_SLOPE_[E_LINEAR]": "gain",
    "CAL_QUAD_[E_QUADRATIC]": "quadratic",
    "FWHM_OFFSET": "fwhm_offset",
    "FWHM_FANOPRIME": "fanoprime",
    "COHERENT_SCT_ENERGY": "incident_energy",
    "COMPTON_ANGLE": "compton_angle",
    "COMPTON_FWHM_CORR": "compton_fwhm_corr",
    "COMPTON_F_TAIL": "compton_f_tail",
    "COMPTON_GAMMA": "compton_gamma",
    "COMPTON_HI_F_TAIL": "compton_hi_f_tail",
    "COMPTON_HI_GAMMA": "compton_hi_gamma",
    "F_TAIL_OFFSET": "f_tail",
    "GAMMA_OFFSET": "gamma",
    "STEP_OFFSET": "f_step",
}


@dataclass(frozen=True)
class MapsOverride:
    """The fit parameters of one override file.

    Attributes
    ----------
    path : Path
    calibration : Calibration
        The file's calibration and response (missing keys keep :class:`Calibration`'s defaults).
    elements : tuple of str
        ``ELEMENTS_TO_FIT``.
    pileup : tuple of str
        ``ELEMENTS_WITH_PILEUP`` as ``"A+B"``.
    energy_range : (float, float)
        ``MIN_ENERGY_TO_FIT``, ``MAX_ENERGY_TO_FIT`` (keV; default 1 and 11).
    raw : dict of str to list of str
        Every key's values as written (a key given several times has several).
    """

    path: Path
    calibration: Calibration
    elements: tuple[str, ...]
    pileup: tuple[str, ...]
    energy_range: tuple[float, float]
    raw: dict[str, list[str]] = field(repr=False)


def read_maps_override(path) -> MapsOverride:
    """Read an XRF-Maps ``maps_fit_parameters_override.txt`` (see the module notes).

    Raises
    ------
    ValueError
        A value that should be a number is not, or a calibration value is out of range; the message
        names the file, the key and the value.
    """
    path = Path(path)
    raw: dict[str, list[str]] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = _KEY.match(line)
        if match:
            raw.setdefault(match.group(1), []).append(match.group(2))

    def number(key: str, default: float | None = None) -> float | None:
        values = raw.get(key)
        if not values or values[-1] == "":
            return default
        try:
            return float(values[-1])
        except ValueError:
            raise ValueError(f"{path.name}: {key}: {values[-1]!r} is not a number") from None

    values = {attr: number(key) for key, attr in _CALIBRATION_KEYS.items()}
    values = {k: v for k, v in values.items() if v is not None}
    values = {k: abs(v) if k in ("f_tail", "f_step", "compton_f_tail", "compton_hi_f_tail") else v
              for k, v in values.items()}
    try:
        calibration = Calibration(**values)
    except ValueError as err:
        raise ValueError(f"{path.name}: {err}") from None

    def names(key: str) -> tuple[str, ...]:
        text = ",".join(raw.get(key, []))
        return tuple(part.strip() for part in text.split(",") if part.strip())

    pileup = []
    for name in names("ELEMENTS_WITH_PILEUP"):
        parts = name.split("_")
        if len(parts) == 2:
            pileup.append(f"{parts[0]}+{parts[1]}")
        else:
            raise ValueError(f"{path.name}: ELEMENTS_WITH_PILEUP: {name!r} is not two K-line elements joined by "
                             "'_'; give pile-up of L or M lines as pileup=('A+B_L',) to fit_spectra")
    energy_range = (number("MIN_ENERGY_TO_FIT", 1.0), number("MAX_ENERGY_TO_FIT", 11.0))
    return MapsOverride(path, calibration, names("ELEMENTS_TO_FIT"), tuple(pileup), energy_range, raw)
