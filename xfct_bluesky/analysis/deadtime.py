"""Element maps corrected for the detector's dead time and normalised by the incident beam (I0).

A fluorescence map's counts are the photons recorded while the detector was live, from the photons the
beam brought. Maps comparable from pixel to pixel and from angle to angle are

    corrected = counts x dead-time factor x i0_reference / I0,

with the dead-time factor ``real_time / live_time`` (what the MCA's ERTM/ELTM, or an Xspress3's clock
counts, give) or ``ICR / OCR`` (its input and output count rates). For a paralyzable detector both equal
exp(ICR tau); for XIA and Xspress3 processors the field uses either (PyXRF: ``ICR / OCR``; XRF-Maps:
``real / live`` as "elapsed_realtime / elapsed_livetime"). :func:`correct_maps` returns the corrected maps
and a :class:`MapCorrection` that records which correction was applied, so that a derived map says how it
was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..validate import counts as counts_array
from ..validate import one_of, positive, real

__all__ = ["DEAD_TIME_METHODS", "CorrectedMaps", "MapCorrection", "correct_maps"]

#: ``dead_time`` options of :func:`correct_maps`.
DEAD_TIME_METHODS = ("auto", "real_live", "icr_ocr", "none")


@dataclass(frozen=True)
class MapCorrection:
    """What :func:`correct_maps` applied: corrected = counts x ``factor``.

    ``dead_time`` is ``"real_time / live_time"``, ``"mean(live_time) / live_time"`` (no real time given: a
    correction relative to the map's mean live time), ``"ICR / OCR"`` or ``"none"``; ``i0_reference`` the
    I0 counts the maps are normalised to (``None``: not normalised by I0); ``undefined`` the number of
    pixels (zero live time, OCR or I0: no beam) whose corrected value is NaN.
    """

    dead_time: str
    i0_reference: float | None
    factor: np.ndarray = field(repr=False)
    undefined: int = 0

    @property
    def note(self) -> str:
        """One line for a document or a log: how the maps were corrected."""
        parts = [f"dead-time corrected by {self.dead_time}" if self.dead_time != "none" else "no dead-time correction"]
        if self.i0_reference is not None:
            parts.append(f"normalised to I0 = {self.i0_reference:.6g} counts")
        if self.undefined:
            parts.append(f"{self.undefined} pixel(s) without beam or live time set to NaN")
        return ", ".join(parts)

    def as_metadata(self) -> dict:
        """JSON-ready record of the correction (for a derived run's start document or a file's attributes)."""
        finite = self.factor[np.isfinite(self.factor)]
        return {"dead_time": self.dead_time, "i0_reference": self.i0_reference, "undefined_pixels": self.undefined,
                "factor_range": [float(finite.min()), float(finite.max())] if finite.size else None,
                "note": self.note}


@dataclass(frozen=True)
class CorrectedMaps:
    """The corrected maps (float64, the input's names) and the :class:`MapCorrection` applied."""

    maps: dict[str, np.ndarray]
    correction: MapCorrection


def _positive_array(name, value, shape):
    a = counts_array(name, value, fix=f"Give {name} per pixel, as the detector recorded it.").astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or infinite values; allowed: finite values >= 0. Give {name} per pixel")
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {a.shape}, the maps {shape}; give one value per pixel "
                         "(or one for all)") from None


def correct_maps(maps: Mapping[str, np.ndarray], *, i0=None, live_time=None, real_time=None, icr=None, ocr=None,
                 dead_time: str = "auto", i0_reference: float | str = "mean") -> CorrectedMaps:
    """Element maps corrected for dead time and normalised by I0, with the correction recorded.

    Parameters
    ----------
    maps : mapping of str to array
        Counts per pixel (ROI windows or fitted line families, which may be negative), all of one shape;
        not modified.
    i0 : array or float, optional
        Incident-beam counts per pixel (the upstream ion chamber's scaler). None: no I0 normalisation.
    live_time, real_time : array or float, optional
        The detector's live and real (counting) time per pixel, s (the mca record's ELTM and ERTM).
    icr, ocr : array or float, optional
        Input and output count rates per pixel, counts/s.
    dead_time : {"auto", "real_live", "icr_ocr", "none"}
        ``"real_live"``: x real_time / live_time (without ``real_time``, x mean(live_time) / live_time);
        ``"icr_ocr"``: x ICR / OCR; ``"auto"`` (default): real_live if ``live_time`` is given, else icr_ocr
        if ICR and OCR are, else none.
    i0_reference : float or "mean"
        I0 counts the maps are normalised to: counts x i0_reference / I0. ``"mean"`` (default): the mean I0
        of the pixels with beam, which keeps the maps in counts; 1: counts per incident photon.

    Returns
    -------
    CorrectedMaps
        ``.maps`` (float64) and ``.correction`` (:class:`MapCorrection`: the method and factor per pixel).

    Raises
    ------
    ValueError
        Maps of different shapes, negative or non-finite times, rates or I0, a live time above the real time,
        an OCR above the ICR, or a ``dead_time`` method whose inputs are missing; the message says what to give.

    Notes
    -----
    Pixels where the factor is undefined (zero live time or OCR, zero I0: the beam was off) are NaN in the
    corrected maps and counted in ``correction.undefined``, rather than silently 0.

    Examples
    --------
    >>> out = correct_maps({"Zn": [[10, 20]]}, i0=[[100, 200]], live_time=0.5, real_time=1.0, i0_reference=100)
    >>> out.maps["Zn"].tolist(), out.correction.dead_time
    ([[20.0, 20.0]], 'real_time / live_time')
    """
    one_of("dead_time", dead_time, DEAD_TIME_METHODS,
           fix="real_live uses live_time (and real_time), icr_ocr the ICR and OCR; auto picks the first given.")
    if not maps:
        raise ValueError("maps is empty; give the element maps to correct, e.g. {'Zn': counts}")
    arrays = {name: real(f"map {name!r}", m).astype(np.float64) for name, m in maps.items()}
    shapes = {name: a.shape for name, a in arrays.items()}
    shape = next(iter(shapes.values()))
    if any(s != shape for s in shapes.values()):
        raise ValueError(f"the maps have different shapes {shapes}; give maps of one field (one shape)")
    if dead_time == "auto":
        dead_time = "real_live" if live_time is not None else "icr_ocr" if icr is not None and ocr is not None \
            else "none"

    factor = np.ones(shape)
    undefined = np.zeros(shape, dtype=bool)
    if dead_time == "real_live":
        if live_time is None:
            raise ValueError("dead_time='real_live' needs live_time (s per pixel); give it, or use 'icr_ocr' "
                             "with icr and ocr")
        live = _positive_array("live_time", live_time, shape)
        if real_time is None:
            real_t, method = np.full(shape, live[live > 0].mean() if np.any(live > 0) else 0.0), \
                "mean(live_time) / live_time"
        else:
            real_t, method = _positive_array("real_time", real_time, shape), "real_time / live_time"
            if np.any(live > real_t * (1 + 1e-6) + 1e-12):
                bad = np.unravel_index(int(np.argmax(live - real_t)), shape) if shape else ()
                raise ValueError(f"live_time exceeds real_time (at pixel {tuple(int(i) for i in bad)}: "
                                 f"{float(live[bad]):g} s > {float(real_t[bad]):g} s); allowed: live_time <= "
                                 "real_time. Check which is which, and that both are in seconds")
        undefined |= live <= 0
        np.divide(real_t, live, out=factor, where=~undefined)
    elif dead_time == "icr_ocr":
        if icr is None or ocr is None:
            raise ValueError("dead_time='icr_ocr' needs icr and ocr (counts/s per pixel); give both, or use "
                             "'real_live' with live_time and real_time")
        icr_a, ocr_a = _positive_array("icr", icr, shape), _positive_array("ocr", ocr, shape)
        if np.any(ocr_a > icr_a * (1 + 1e-6) + 1e-9):
            bad = np.unravel_index(int(np.argmax(ocr_a - icr_a)), shape) if shape else ()
            raise ValueError(f"ocr exceeds icr (at pixel {tuple(int(i) for i in bad)}: {float(ocr_a[bad]):g} > "
                             f"{float(icr_a[bad]):g} counts/s); allowed: ocr <= icr. Check which is which")
        undefined |= (ocr_a <= 0) & (icr_a > 0)
        np.divide(icr_a, ocr_a, out=factor, where=ocr_a > 0)
        method = "ICR / OCR"
    else:
        method = "none"

    reference = None
    if i0 is not None:
        io = _positive_array("i0", i0, shape)
        if isinstance(i0_reference, str):
            one_of("i0_reference", i0_reference, ("mean",), fix="Or give the I0 counts to normalise to, e.g. 1.")
            reference = float(io[io > 0].mean()) if np.any(io > 0) else 1.0
        else:
            reference = positive("i0_reference", i0_reference, fix="Give the I0 counts to normalise to, e.g. 1.")
        undefined |= io <= 0
        np.divide(factor * reference, io, out=factor, where=io > 0)
    factor[undefined] = np.nan
    corrected = {name: a * factor for name, a in arrays.items()}
    return CorrectedMaps(corrected, MapCorrection(method, reference, factor, int(np.count_nonzero(undefined))))
