"""X-ray emission line families from xraylib, the Si escape probability and the Compton energy.

An element's *line family* is every emission line of one of its shells that
the beam excites: ``"Zn"`` is zinc's K lines, ``"Au_L"`` gold's L lines (from
the L1, L2 and L3 subshells), ``"Au_M"`` its M lines: the naming of
:mod:`xfct_bluesky.quantities` and of XRF-Maps' ``ELEMENTS_TO_FIT``. A fit
counts the photons of a whole family, so the family's lines need energies and
intensities relative to each other as the beam excites them; both come from
xraylib (no hand tables here):

* energies: ``LineEnergy(Z, line)``;
* relative intensities: ``CS_FluorLine_Kissel_Cascade(Z, line, E0)``, the
  production cross-section of each line at the beam energy ``E0``, with the
  Coster-Kronig transitions and the cascade from deeper vacancies: for K lines
  the ratios are the radiative rates, for L and M lines they also weigh the
  subshells by how often the beam ionises each of them, which changes across
  the L edges.

Why xraylib (pinned ``>=4.3,<4.4`` in pyproject.toml): it is maintained
(tschoonj/xraylib, wheels on PyPI), it is the library the physics sheet's
numbers were computed with (``shared/reference/xraylib-compute.py``, xraylib
4.3.0), so fitted families and the simulator's table agree, and it gives the
cascade cross-sections of whole L and M families at the beam energy; xraydb
(Elam's tables) gives intensities within one initial level only, leaving the
mixing of the L1, L2, L3 subshells to us.

Si escape peaks: a photon absorbed in the silicon sensor may lose a Si K
photon out of the sensor and be recorded 1.74 keV low. The probability, for
a thick sensor at normal incidence (Reed & Ware, J. Phys. E 5:582, 1972; as
in PyMca's ``Elements.getEscape``), is

    P(E) = (omega_K / 2) (1 - 1/r) [1 - (mu_K / mu_E) ln(1 + mu_E / mu_K)]

with the Si K fluorescence yield omega_K, K jump ratio r, and photoabsorption
mu_E at the photon energy and mu_K at the Si K-alpha energy, all from xraylib.

References
----------
T. Schoonjans et al., "The xraylib library for X-ray-matter interactions.
Recent developments", Spectrochim. Acta B 66:776 (2011), doi:10.1016/j.sab.2011.09.011.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np

from ...quantities import CHEMICAL_SYMBOLS, LINE_SUFFIXES, SYMBOLS_BY_Z

__all__ = ["LineFamily", "compton_energy", "line_family", "parse_family", "si_escape_probability"]

#: The shells a family name can ask for: the bare symbol is K, then the suffixes of quantities.LINE_SUFFIXES.
SHELLS = {"": "K", **{suffix: suffix[1:] for suffix in LINE_SUFFIXES}}
#: Initial levels of each shell's lines, in xraylib's IUPAC line names (``KL3_LINE``, ``L3M5_LINE``...).
_INITIAL_LEVELS = {"K": ("K",), "L": ("L1", "L2", "L3"), "M": ("M1", "M2", "M3", "M4", "M5")}
#: Lines weaker than this fraction of their family are dropped (xraylib lists hundreds of weak ones).
MIN_RELATIVE_INTENSITY = 1e-4
#: Electron rest energy (keV).
ELECTRON_REST_KEV = 510.99895

_IUPAC = re.compile(r"(K|L[123]|M[1-5])([KLMNOPQ][1-9])_LINE")


def xraylib_module():
    import xraylib  # imported on first use: importing the package stays cheap

    return xraylib


@functools.lru_cache(maxsize=1)
def _iupac_lines() -> dict[str, tuple[tuple[str, int], ...]]:
    """xraylib's lines by initial level: ``{"K": (("KL1", -1), ("KL2", -2), ...), "L1": ...}``."""
    xraylib = xraylib_module()
    out: dict[str, list[tuple[str, int]]] = {}
    for name in dir(xraylib):
        match = _IUPAC.fullmatch(name)
        if match:
            out.setdefault(match.group(1), []).append((name[:-5], getattr(xraylib, name)))
    return {level: tuple(lines) for level, lines in out.items()}


@dataclass(frozen=True)
class LineFamily:
    """The detected lines of one element's shell, as excited at one beam energy.

    Attributes
    ----------
    name : str
        The family's name: ``"Zn"`` (K lines), ``"Au_L"``, ``"Au_M"``.
    symbol, z, shell : str, int, str
        Element symbol, atomic number and shell (``"K"``, ``"L"`` or ``"M"``).
    labels : tuple of str
        IUPAC names of the lines (``"KL3"`` is K-alpha1, ``"KM3"`` K-beta1).
    energies : numpy.ndarray
        Line energies (keV).
    weights : numpy.ndarray
        Relative intensities, summing to 1.
    incident_energy : float
        Beam energy (keV) the weights are for.
    """

    name: str
    symbol: str
    z: int
    shell: str
    labels: tuple[str, ...]
    energies: np.ndarray
    weights: np.ndarray
    incident_energy: float

    @property
    def mean_energy(self) -> float:
        """Intensity-weighted mean line energy (keV)."""
        return float(self.energies @ self.weights)


def parse_family(name: str) -> tuple[str, int, str]:
    """(symbol, Z, shell) of a family name (``"Zn"`` -> ``("Zn", 30, "K")``, ``"Au_L"`` -> ``("Au", 79, "L")``).

    Raises
    ------
    ValueError
        Not a chemical symbol, alone or with ``_L`` / ``_M``; the message suggests the spelling meant.
    """
    if not isinstance(name, str):
        raise ValueError(  # noqa: TRY004 - the package refuses bad arguments with ValueError
            f"element {name!r} is of type {type(name).__name__}; allowed: a string such as 'Zn', 'Au_L'")
    symbol, suffix = name, ""
    if len(name) > 2 and name[-2] == "_":
        symbol, suffix = name[:-2], name[-2:]
    if symbol in CHEMICAL_SYMBOLS and suffix in SHELLS:
        return symbol, SYMBOLS_BY_Z.index(symbol) + 1, SHELLS[suffix]
    hint = ""
    if symbol in CHEMICAL_SYMBOLS and suffix == "_K":
        hint = f" For the K lines write {symbol!r} (the bare symbol, as in xfct_bluesky.quantities)."
    elif symbol.capitalize() in CHEMICAL_SYMBOLS:
        hint = f" Symbols are case-sensitive: {symbol.capitalize() + suffix!r}?"
    raise ValueError(f"unknown element line family {name!r}; allowed: a chemical symbol for its K lines ('Zn'), "
                     f"or with '_L' / '_M' for its L or M lines ('Au_L', 'Au_M').{hint}")


@functools.lru_cache(maxsize=512)
def _family(name: str, incident_energy: float) -> LineFamily:
    symbol, z, shell = parse_family(name)
    xraylib = xraylib_module()
    labels, energies, cross = [], [], []
    for level in _INITIAL_LEVELS[shell]:
        for label, line in _iupac_lines().get(level, ()):
            try:
                cs = xraylib.CS_FluorLine_Kissel_Cascade(z, line, incident_energy)
                energy = xraylib.LineEnergy(z, line)
            except ValueError:  # xraylib: line not in its tables, or shell not excited at this energy
                continue
            if cs > 0 and energy > 0:
                labels.append(label)
                energies.append(energy)
                cross.append(cs)
    if not cross:
        edge_shell = {"K": xraylib.K_SHELL, "L": xraylib.L3_SHELL, "M": xraylib.M5_SHELL}[shell]
        try:
            edge = f"its {shell} edge{' (L3)' if shell == 'L' else ' (M5)' if shell == 'M' else ''} is at " \
                   f"{xraylib.EdgeEnergy(z, edge_shell):.3f} keV"
        except ValueError:
            edge = "xraylib has no such lines"
        order = list(SHELLS.values())
        others = [f"{symbol}{s}" for s, sh in SHELLS.items() if order.index(sh) > order.index(shell)]
        instead = f"fit {' or '.join(repr(o) for o in others)} instead, or " if others else ""
        raise ValueError(f"{name!r}: no {shell} line of {symbol} is excited at {incident_energy:g} keV ({edge}); "
                         f"{instead}check the incident energy")
    cross = np.asarray(cross)
    weights = cross / cross.sum()
    keep = weights >= MIN_RELATIVE_INTENSITY
    weights = weights[keep] / weights[keep].sum()
    return LineFamily(name, symbol, z, shell, tuple(str(v) for v in np.asarray(labels)[keep]), np.asarray(energies)[keep],
                      weights, incident_energy)


def line_family(name: str, incident_energy: float) -> LineFamily:
    """The lines of family ``name`` (``"Zn"``, ``"Au_L"``) excited at ``incident_energy`` (keV), from xraylib.

    Raises
    ------
    ValueError
        Unknown name (see :func:`parse_family`), or no line of the shell is excited at this energy (the
        message gives the edge and the other families to fit).
    """
    return _family(name, round(float(incident_energy), 4))


@functools.lru_cache(maxsize=1)
def _silicon():
    xraylib = xraylib_module()
    return (xraylib.FluorYield(14, xraylib.K_SHELL), xraylib.JumpFactor(14, xraylib.K_SHELL),
            xraylib.LineEnergy(14, xraylib.KL3_LINE), xraylib.EdgeEnergy(14, xraylib.K_SHELL))


def si_escape_energy() -> float:
    """Energy (keV) a Si escape takes away: Si K-alpha."""
    return _silicon()[2]


@functools.lru_cache(maxsize=4096)
def _escape(energy: float) -> float:
    omega, jump, e_ka, edge = _silicon()
    xraylib = xraylib_module()
    if energy <= edge:
        return 0.0
    mu_k = xraylib.CS_Photo(14, e_ka)
    mu_e = xraylib.CS_Photo(14, energy)
    ratio = mu_e / mu_k
    return 0.5 * omega * (1 - 1 / jump) * (1 - math.log1p(ratio) / ratio)


def si_escape_probability(energy) -> np.ndarray:
    """Probability (0-1) that a photon of ``energy`` (keV) absorbed in a Si sensor is recorded as an escape.

    Zero at and below the Si K edge (1.839 keV); about 1 % at 3.7 keV and 0.16 % at 8.6 keV.
    """
    e = np.atleast_1d(np.asarray(energy, dtype=float))
    return np.array([_escape(round(float(v), 4)) for v in e.ravel()]).reshape(e.shape)


def compton_energy(incident_energy: float, angle_deg: float) -> float:
    """Energy (keV) of a photon of ``incident_energy`` (keV) Compton-scattered by ``angle_deg`` degrees."""
    return incident_energy / (1 + incident_energy / ELECTRON_REST_KEV * (1 - math.cos(math.radians(angle_deg))))
