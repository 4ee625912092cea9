"""Which maps of a tomography to align on, and how to make line integrals of them.

A run holds several maps per angle: DPC (x, y, diagonal), transmission,
fluorescence of each element, I0 and live time. Alignment wants a *channel*:

* for pairwise registration, the sharpest map: diagonal DPC where it exists
  (the founding paper), else any map;
* for projection matching, the centre of mass and the consistency figures, a
  tomographically consistent one: a map that is a line integral of the
  specimen, so that the projection at one angle is predicted by the others.
  Fluorescence (the elements' counts summed, corrected for dead time and I0),
  transmission as ``-log(I / I_air)``, or DPC y (signed: matching only). DPC x
  and diagonal DPC are not: their derivative direction turns with the angle.

Map names are matched by their ending, so the data keys of a run
(``microprobe_scanner_Zn``, ``..._dpc_diag``) work as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..quantities import CHEMICAL_SYMBOLS
from .consistency import background, cut_by_field, informativeness
from .deadtime import correct_maps

#: Channel kinds: how a map relates to the specimen.
KINDS = ("counts", "absorption", "transmission", "dpc_y", "derivative", "unknown")
#: Names (endings) of maps that are not channels of their own.
AUXILIARY = ("i0", "live_time", "q1", "q2", "q3", "q4", "sum")
#: Signal-to-noise (:func:`~.consistency.informativeness`) under which a channel shows noise, not the specimen:
#: the transmission of a thin cell (SNR ~1) is whole in the field but aligns nothing.
INFORMATIVE_MIN = 3.0
_ELEMENT = re.compile(r"(?:^|_)([A-Z][a-z]?)(?:_[KLM]\w*)?$")


def is_element_key(key: str) -> bool:
    """A map name that ends in a chemical symbol, alone or after ``_`` (``microprobe_scanner_Zn``, ``Fe_K``)."""
    match = _ELEMENT.search(key)
    return bool(match) and match.group(1) in CHEMICAL_SYMBOLS


@dataclass(frozen=True)
class Channel:
    """A stack prepared for alignment: background-subtracted line integrals (or a DPC map)."""

    name: str  #: e.g. "fluorescence", "transmission", "dpc_diag", or the caller's name
    kind: str  #: one of KINDS
    stack: np.ndarray  #: (n, ny, nx) float32
    sources: tuple[str, ...]  #: the map names it was made from
    note: str = ""  #: how it was made

    @property
    def consistent(self) -> bool:
        """A line integral of the specimen (reprojection, centre of mass and profiles apply)."""
        return self.kind in ("counts", "absorption", "transmission", "unknown")


def kind_of(name: str) -> str:
    """The channel kind of a map name (matched by its ending)."""
    low = name.lower()
    if low.endswith(("dpc_y",)):
        return "dpc_y"
    if low.endswith(("dpc_x", "dpc_diag")):
        return "derivative"
    if low.endswith(("transmission", "trans")):
        return "transmission"
    if low.endswith(("absorption", "mu_t", "neglog", "phase")):
        return "absorption"
    if low.endswith(("fluorescence", "total_fluorescence")) or is_element_key(name):
        return "counts"
    return "unknown"


def find_map(maps: Mapping[str, np.ndarray], end: str) -> str | None:
    """The first key of ``maps`` that is ``end`` or ends in ``_`` + ``end`` (``..._dpc_x`` for "dpc_x"), else None."""
    for key in maps:
        if key == end or key.endswith("_" + end):
            return key
    return None


def _elements(maps: Mapping[str, np.ndarray]) -> list[str]:
    out = []
    for key in maps:
        tail = key.lower()
        if any(tail == a or tail.endswith("_" + a) for a in AUXILIARY):
            continue
        if kind_of(key) == "counts" and is_element_key(key):
            out.append(key)
    return out


def prepare(name: str, maps: Mapping[str, np.ndarray]) -> Channel:
    """Make the channel ``name`` from ``maps``.

    ``name`` is a key of ``maps`` (or its ending: ``"Zn"``, ``"dpc_diag"``),
    or one of ``"fluorescence"`` (every element map summed), ``"transmission"``
    (``-log`` of the transmission map over its air level: 1 when it is
    already I/I0, else its 99th percentile). Fluorescence is divided by the
    live-time fraction and by I0 (over its mean) where those maps exist.
    Counts and transmission keep their true zero (a background estimate
    would hide a specimen that fills the field); other maps are
    background-subtracted.
    """
    if name in maps:  # a map of that very name (a bare array the caller named)
        return _prepare_map(name, name, maps)
    if name == "fluorescence":
        keys = _elements(maps)
        if not keys:
            raise ValueError(f"channel 'fluorescence' needs element maps (e.g. 'Zn'); the maps are {sorted(maps)}")
        stack = sum(np.asarray(maps[k], np.float64) for k in keys)
        kind, sources = "counts", tuple(keys)
    elif name == "transmission":
        key = find_map(maps, "transmission")
        if key is None:
            raise ValueError(f"channel 'transmission' needs a transmission map; the maps are {sorted(maps)}")
        return _transmission(name, key, maps[key])
    else:
        key = find_map(maps, name)
        if key is None:
            raise ValueError(f"channel {name!r} is not among the maps {sorted(maps)}; give one of them, "
                             "'fluorescence' or 'transmission'")
        return _prepare_map(name, key, maps)
    return _counts(name, kind, stack, sources, maps)


def _prepare_map(name: str, key: str, maps: Mapping[str, np.ndarray]) -> Channel:
    """The channel of one map, by its kind (see :func:`kind_of`)."""
    kind = kind_of(key)
    stack = np.asarray(maps[key], np.float64)
    sources = (key,)
    if kind == "transmission":
        return _transmission(name, key, stack)
    if kind == "unknown" and _signed(stack):
        return Channel(name, "derivative", stack.astype(np.float32), sources,
                       "signed values: treated as a DPC-like derivative map (no centre of mass or reprojection)")
    if kind in ("dpc_y", "derivative"):
        return Channel(name, kind, stack.astype(np.float32), sources, "as measured")
    return _counts(name, kind, stack, sources, maps)


def _transmission(name: str, key: str, t: np.ndarray) -> Channel:
    """``-log`` of a transmission map over its air level: 1 when it is already I/I0, else its 99th percentile."""
    t = np.asarray(t, np.float64)
    air = np.percentile(t, 99)
    if not air > 0:
        raise ValueError(f"transmission map {key!r} has no positive values (99th percentile {air:g})")
    if 0.8 <= air <= 1.25:  # already normalised to the incident beam (I/I0, air = 1): keep it absolute
        air = 1.0
    stack = -np.log(np.clip(t / air, 1e-6, None))
    return _finish(name, "absorption", stack, (key,), f"-log({key} / {air:.4g})", subtract=False)


def _counts(name, kind, stack, sources, maps) -> Channel:
    """Finish a counts or line-integral channel: dead time and I0 for counts; background for the others."""
    note = []
    if kind == "counts":  # counts have a true zero: a background estimate would hide a specimen cut by the field
        live = find_map(maps, "live_time")
        live = live if live is not None and np.all(np.asarray(maps[live]) > 0) else None
        i0 = find_map(maps, "i0")
        i0 = i0 if i0 is not None and np.all(np.asarray(maps[i0]) > 0) else None
        # the one dead-time and I0 correction (analysis.deadtime), relative to the stack's mean live time and I0
        stack = correct_maps({name: stack}, live_time=None if live is None else maps[live],
                             i0=None if i0 is None else maps[i0], dead_time="none" if live is None else "real_live"
                             ).maps[name]
        if live is not None:
            note.append(f"dead-time corrected by {live}")
        if i0 is not None:
            note.append(f"normalised by {i0}")
        return _finish(name, kind, stack, sources, ", ".join(note) or "as measured", subtract=False)
    return _finish(name, kind, stack, sources, ", ".join(note + ["background-subtracted"]))


def _signed(stack: np.ndarray) -> bool:
    """Values of both signs about zero (a DPC map), rather than counts or line integrals over a background."""
    lo, hi = np.percentile(stack[:, :: max(1, stack.shape[1] // 16)], [1, 99])
    return bool(lo < 0 < hi and -lo > 0.3 * hi)


def _finish(name, kind, stack, sources, note, subtract: bool = True) -> Channel:
    stack = np.asarray(stack, np.float32)
    if subtract:
        stack = stack - np.float32(background(stack))
    return Channel(name, kind, stack, tuple(sources), note)


def candidates(maps: Mapping[str, np.ndarray]) -> list[str]:
    """The consistent channels ``maps`` can give, in the order they are tried."""
    out = []
    if _elements(maps):
        out.append("fluorescence")
    if find_map(maps, "transmission") is not None:
        out.append("transmission")
    for key in maps:
        if kind_of(key) in ("absorption", "unknown") and not any(
                key.lower() == a or key.lower().endswith("_" + a) for a in AUXILIARY):
            out.append(key)
    return out


def choose(maps: Mapping[str, np.ndarray], name: str | None = None) -> tuple[Channel | None, Channel]:
    """(the channel ``name`` or None, the consistent channel for the centre of mass, matching and figures).

    The consistent channel is ``name``'s if that is a line integral; else the
    most informative candidate that shows the specimen whole (a capillary
    wider than the field cuts the transmission, not the fluorescence, of the
    cell inside it) above noise (:data:`INFORMATIVE_MIN`: a thin cell's
    transmission is whole but noise, and the fluorescence cut at the field's
    edge is still the better channel); else the most informative candidate;
    else DPC y; else ``name``'s, or the first map's.
    """
    chosen = prepare(name, maps) if name is not None else None
    if chosen is not None and chosen.consistent:
        return chosen, chosen
    names = candidates(maps)
    if names:
        prepared = [(prepare(n, maps), 0.0) for n in names]
        prepared = [(c, informativeness(c.stack)) for c, _ in prepared]
        whole_in = [(c, snr) for c, snr in prepared if snr >= INFORMATIVE_MIN and not cut_by_field(c.stack)]
        return chosen, max(whole_in or prepared, key=lambda pair: pair[1])[0]
    dpc_y = find_map(maps, "dpc_y")
    return chosen, prepare(dpc_y, maps) if dpc_y else (chosen or prepare(next(iter(maps)), maps))
