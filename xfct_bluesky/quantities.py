"""Which data key of a run holds which quantity: the standard names, and resolving them.

Every run, ours and imported, records in its start document, under
:data:`START_KEY` (``"quantities"``), the data key that holds each quantity::

    "quantities": {"theta": "microprobe_rotation", "Zn": "microprobe_scanner_Zn",
                   "dpc_diag": "microprobe_scanner_dpc_diag", "i0": "microprobe_scanner_i0", ...}

Readers resolve the names once, at the boundary: :func:`~xfct_bluesky.storage.load_tomo`
gives ``tomo.maps["Zn"]``, and the live callbacks find their maps and the
rotation angle the same way, so no code downstream searches data keys by
their ending. The vocabulary, the same for our runs and imported ones
(:mod:`xfct_bluesky.importers`), is :data:`STANDARD_NAMES` (each name with
what it holds) and the elements' fluorescence maps: the chemical symbol
(:data:`CHEMICAL_SYMBOLS`) for the K lines or an unresolved ROI (``"Zn"``),
with :data:`LINE_SUFFIXES` for the L and M lines (``"Zn_L"``, ``"Au_M"``);
:func:`is_quantity` tells whether a name is one of them.

Resolution, for one stream's data keys:

* :func:`theta_key`: the rotation angle's data key, in this order: the
  caller's argument, ``start["quantities"]["theta"]``, ``start["theta_key"]``
  (runs before ``quantities``), a key named ``"theta"``, the single scalar
  key ending in ``"rotation"``; anything else is a ``KeyError`` naming the
  keys and the fix.
* :func:`quantities_of`: every quantity's data key: the start document's
  ``quantities`` where it has them, else (older runs) the names read off the
  data keys themselves by :func:`names_from_keys`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: The start-document key of the mapping {quantity name: data key}.
START_KEY = "quantities"
#: ``plan_name`` of the derived runs the live callbacks publish, linked to their scan by ``raw_uid``: the spectrum
#: fit's, the DPC alignment's, the reconstruction's (named once here for the callbacks and for their readers).
FIT_PLAN = "live_spectrum_fit"
ALIGNMENT_PLAN = "dpc_alignment"
RECONSTRUCTION_PLAN = "xfct_reconstruction"

#: The standard quantity names but the elements, each with what its data key holds.
STANDARD_NAMES: dict[str, str] = {
    "theta": "rotation angle of the projection (deg), one number per event",
    "dpc_x": "differential phase contrast along x (horizontal, the fast axis): (right - left) / (right + left) "
             "of the segmented transmission detector's quadrants, per pixel",
    "dpc_y": "differential phase contrast along y (vertical): (top - bottom) / (top + bottom), per pixel",
    "dpc_diag": "diagonal differential phase contrast (q1 - q3) / (q1 + q3), per pixel",
    "transmission": "transmitted intensity per pixel: the segmented detector's total over the incident beam "
                    "(I / I0), or its counts",
    "i0": "incident beam intensity per pixel (upstream ion chamber or beam monitor counts)",
    "live_time": "the fluorescence detector's live time per pixel (s): real time less dead time",
    "real_time": "the fluorescence detector's real (counting) time per pixel (s)",
    "icr": "the fluorescence detector's input count rate per pixel (counts/s): photons reaching it",
    "ocr": "the fluorescence detector's output count rate per pixel (counts/s): photons recorded",
    "q1": "counts of the segmented transmission detector's quadrant 1 (+x, +y) per pixel",
    "q2": "counts of quadrant 2 (-x, +y) per pixel",
    "q3": "counts of quadrant 3 (-x, -y) per pixel",
    "q4": "counts of quadrant 4 (+x, -y) per pixel",
    "spectra": "full fluorescence spectra per pixel, external; the data key's dims name the axes",
    "x_axis": "horizontal position of each column, (cols,), in the units the data key gives",
    "y_axis": "vertical position of each row, (rows,)",
    "projections": "tomographic projections as stored (e.g. Data Exchange /exchange/data), one frame per event, "
                   "external; flats and darks in the streams 'flat' and 'dark'",
}

#: The chemical symbols H .. Lr by atomic number (``SYMBOLS_BY_Z[z - 1]``).
SYMBOLS_BY_Z: tuple[str, ...] = tuple((
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr"
).split())
#: Chemical symbols: an element's quantity name is its symbol ("Zn"), and its data key holds the element's
#: fluorescence per pixel (counts in the element's region of interest, or its fitted line intensities).
CHEMICAL_SYMBOLS: frozenset[str] = frozenset(SYMBOLS_BY_Z)
#: The quantity-name suffixes of an element's L and M lines ("Zn_L", "Au_M"); the bare symbol is its K lines.
LINE_SUFFIXES: dict[str, str] = {"_L": "L lines", "_M": "M lines"}


def _element_line(name: str) -> tuple[str, str] | None:
    """(symbol, suffix) of an element's quantity name, ``("Zn", "")``, ``("Zn", "_L")``; else None."""
    if name in CHEMICAL_SYMBOLS:
        return name, ""
    symbol, suffix = name[:-2], name[-2:]
    return (symbol, suffix) if suffix in LINE_SUFFIXES and symbol in CHEMICAL_SYMBOLS else None


def is_quantity(name: str) -> bool:
    """Whether ``name`` is a standard quantity name: one of :data:`STANDARD_NAMES`, a chemical symbol, or a
    chemical symbol with one of :data:`LINE_SUFFIXES`."""
    return name in STANDARD_NAMES or _element_line(name) is not None


def describe(name: str) -> str:
    """What the data key of quantity ``name`` holds (``KeyError`` for a name outside the vocabulary)."""
    line = _element_line(name)
    if line is None:
        return STANDARD_NAMES[name]
    symbol, suffix = line
    if suffix:
        return f"{symbol} fluorescence per pixel, {LINE_SUFFIXES[suffix]} (an ROI's counts or a fit's, as recorded)"
    return (f"{symbol} fluorescence per pixel (counts in its region of interest, or its fitted lines; "
            "the K lines where the L or M lines are recorded apart)")


# ------------------------------------------------------------------------------------------ theta ---
def _recorded_theta_keys(start: Mapping[str, Any] | None):
    """(where, data key) of the rotation angle as the start document records it, most explicit first."""
    start = start or {}
    recorded = start.get(START_KEY)
    yield "quantities['theta']", recorded.get("theta") if isinstance(recorded, Mapping) else None
    yield "theta_key", start.get("theta_key")


def recorded_theta_key(start: Mapping[str, Any] | None) -> str | None:
    """The rotation angle's data key as the start document records it: ``quantities["theta"]``, else
    ``theta_key`` (runs before ``quantities``), else None."""
    return next((key for _, key in _recorded_theta_keys(start) if isinstance(key, str) and key), None)


def theta_key(data_keys: Mapping[str, Mapping[str, Any]], start: Mapping[str, Any] | None = None,
              explicit: str | None = None) -> str:
    """The data key of the rotation angle among one stream's ``data_keys``.

    In this order: ``explicit`` (the caller's choice; it must be a data key),
    the start document's ``quantities["theta"]``, its ``theta_key``, a key
    named ``"theta"``, the single scalar key ending in ``"rotation"`` (a
    rotation stage's readback, e.g. ``"microprobe_rotation"``). A recorded
    key that the stream lacks is warned about and the next step tried.

    Raises
    ------
    KeyError
        ``explicit`` is not a data key; or nothing recorded is, and there is
        no ``"theta"`` and no or several scalar ``*rotation`` keys. The
        message names the keys and the fix (``theta_key=...``).
    """
    if explicit is not None:
        if explicit not in data_keys:
            raise KeyError(f"theta_key={explicit!r} is not a data key of the stream; keys: {sorted(data_keys)}.")
        return explicit
    for label, key in _recorded_theta_keys(start):
        if not (isinstance(key, str) and key):
            continue
        if key in data_keys:
            return key
        logger.warning("The start document names %s=%r, which is not a data key of this stream; "
                       "trying the next way to find the rotation angle.", label, key)
    if "theta" in data_keys:
        return "theta"
    candidates = sorted(k for k, v in data_keys.items() if k.endswith("rotation") and not v.get("shape"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise KeyError(f"No rotation angle in the stream: the start document names none of its keys, and there "
                       f"is no 'theta' and no scalar key ending in 'rotation' among {sorted(data_keys)}; "
                       "pass theta_key=...")
    raise KeyError(f"Several candidate rotation keys {candidates}; pass theta_key=... to choose one.")


# ------------------------------------------------------------------------------------- quantities ---
def _split(key: str) -> tuple[str, str] | None:
    """(device prefix, quantity name) of a data key ``<prefix>_<name>``, the longest name first; else None.

    A prefix whose last part is a chemical symbol is not a device's (``Fe_K`` is iron's K line, not
    potassium).
    """
    for i, char in enumerate(key):
        if char != "_" or i == 0:
            continue
        prefix, name = key[:i], key[i + 1:]
        if is_quantity(name) and prefix.rsplit("_", 1)[-1] not in CHEMICAL_SYMBOLS:
            return prefix, name
    return None


def names_from_keys(keys: Iterable[str]) -> dict[str, str]:
    """{quantity name: data key} read off data keys alone, for runs that do not record ``quantities``.

    A key that is itself a quantity name (``"Zn"``, ``"dpc_x"``) names
    itself. Else the device prefix that most keys share before a quantity
    name (``microprobe_scanner`` in ``microprobe_scanner_Zn``) is stripped
    from the keys that carry it: ``{"Zn": "microprobe_scanner_Zn", ...}``.
    With two prefixes equally common, no prefix is stripped (which
    device's ``Zn`` would ``"Zn"`` be?). Other keys get no name.
    """
    keys = list(keys)
    named = {key: key for key in keys if is_quantity(key)}
    split = {key: parts for key in keys if key not in named and (parts := _split(key))}
    counts: dict[str, int] = {}
    for prefix, _ in split.values():
        counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        return named
    most = max(counts.values())
    common = [prefix for prefix, n in counts.items() if n == most]
    if len(common) > 1:
        logger.debug("data keys with a quantity name after several prefixes %s: none is stripped", sorted(common))
        return named
    for key, (prefix, name) in split.items():
        if prefix == common[0] and name not in named:
            named[name] = key
    return named


def quantities_of(data_keys: Mapping[str, Mapping[str, Any]],
                  start: Mapping[str, Any] | None = None) -> dict[str, str]:
    """{quantity name: data key} of one stream, ``"theta"`` aside (see :func:`theta_key`).

    The start document's ``quantities``, for the entries whose data key the
    stream has; a run that records none (older runs) gets the names of
    :func:`names_from_keys` over the stream's 2D, non-external keys (its
    maps). A name that is also a data key of another map is not used: that
    map keeps its own name.
    """
    recorded = (start or {}).get(START_KEY)
    if isinstance(recorded, Mapping) and recorded:
        found = {name: key for name, key in recorded.items()
                 if name != "theta" and isinstance(name, str) and isinstance(key, str) and key in data_keys}
    else:
        found = names_from_keys(k for k, v in data_keys.items() if len(v.get("shape") or []) == 2
                                and not v.get("external"))
    for name, key in list(found.items()):
        if name in data_keys and name != key:
            logger.warning("quantity %r is recorded as data key %r, but %r is itself a data key: "
                           "the name is not used", name, key, name)
            del found[name]
    return found
