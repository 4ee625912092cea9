"""Element maps from fitted spectra where a fit covers the projections, else the run's own (ROI) maps.

The live alignment, the live and the stored reconstruction and the dose
study all choose their element maps the same way, with
:func:`prefer_fitted`: an element's fitted counts (a spectrum fit's derived
run, :mod:`xfct_bluesky.callbacks.fit`) replace its map where the fit covers
the same projections, in the same order; and they say which maps they used
(:data:`FITTED`, :data:`ROI`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...quantities import STANDARD_NAMES, is_quantity

__all__ = ["FITTED", "ROI", "element_names", "prefer_fitted"]

#: An element map made of fitted spectra, as the consumers say it ("Zn from fitted spectra").
FITTED = "fitted spectra"
#: The raw run's own element map: our runs' are the counts in an energy window ("Zn from ROI window").
ROI = "ROI window"


def element_names(names) -> list[str]:
    """The element line families among ``names`` (``"Zn"``, ``"Au_L"``), in their order."""
    return [n for n in names if isinstance(n, str) and is_quantity(n) and n not in STANDARD_NAMES]


def prefer_fitted(maps: Mapping[str, np.ndarray], theta, fitted: Mapping[str, np.ndarray] | None,
                  fitted_theta=None, elements: Sequence[str] | None = None, *, raw: str = ROI
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``maps`` with each element's fitted stack in place of its own, where the fit covers the same projections.

    Parameters
    ----------
    maps : mapping of str to (n, ny, nx) arrays
        The run's maps by name (element maps under their family names, ``"Zn"``); not modified.
    theta : (n,) array
        The run's angles (deg), in the order of ``maps``.
    fitted : mapping of str to (m, ny, nx) arrays, or None
        Fitted counts by family name; None: no fit.
    fitted_theta : (m,) array
        The fit's angles (deg), in the order of ``fitted``.
    elements : sequence of str, optional
        Families to choose for; default every family in ``maps`` or ``fitted``.
    raw : str
        What the run's own maps are, for the sources (default :data:`ROI`).

    Returns
    -------
    maps : dict
        A new dict: the fitted stacks (float32) in place of, or beside, the run's.
    sources : dict of str to str
        Per element asked for that has a map: :data:`FITTED`, or ``raw`` (with why, when a fit exists
        but does not cover the projections).
    """
    out = dict(maps)
    fitted = dict(fitted or {})
    theta = np.asarray(theta, float).ravel()
    names = list(elements) if elements is not None else list(dict.fromkeys(element_names([*maps, *fitted])))
    covers, why = bool(fitted), ""
    if fitted:
        f_theta = np.asarray(fitted_theta if fitted_theta is not None else [], float).ravel()
        if f_theta.shape != theta.shape or not np.allclose(f_theta, theta, atol=1e-6, equal_nan=True):
            covers = False
            why = f" (the fit has {f_theta.size} projections, the run {theta.size}, or other angles)"
    sources = {}
    for name in names:
        stack = fitted.get(name) if covers else None
        if stack is not None and name in maps and np.shape(maps[name])[1:] != np.shape(stack)[1:]:
            sources[name] = f"{raw} (the fitted maps are {np.shape(stack)[1:]}, the run's {np.shape(maps[name])[1:]})"
        elif stack is not None:
            out[name] = np.asarray(stack, np.float32)
            sources[name] = FITTED
        elif name in maps:
            sources[name] = raw + (why if name in fitted else "")
    return out, sources
