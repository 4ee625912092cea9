"""Metadata checked when a plan is called: what the start document and Tiled can store, and nothing else.

A value the start document cannot carry would otherwise fail late: at the
``open_run`` message, after the scanner has opened its HDF5 file, or in the
Tiled writer after the RunEngine reported success, losing the run. Checked at
the call, each is refused naming its place in ``md`` (``md['a'][0]``), the
value and the fix.

What is stored: ``None``, bools, strings, finite floats, integers within
+-(2**53 - 1) (Tiled keeps larger ones as 2**53 - 1), and lists and dicts of
these, with non-empty string keys free of ``.`` and ``/`` (event-model's
start schema refuses them; Tiled's queries split on ``.``). Numpy scalars
and arrays become their plain Python equivalents (``np.float64(2)`` is
``2.0``, an array a list), as a reader gets them back from Tiled.
"""

import math
from collections.abc import Iterable, Mapping
from typing import Any

import event_model
import numpy as np

#: Start-document keys the RunEngine and event-model write themselves.
RUN_ENGINE_KEYS = {
    "uid": "the run's unique id, made by the RunEngine",
    "time": "the run's start time, set by the RunEngine",
    "scan_id": "the RunEngine's scan counter",
    "plan_type": "set by the RunEngine",
}
#: Keys a plan writes that ``md`` may override: the simulated sample's name is a default.
OVERRIDABLE = frozenset({"sample"})
#: Largest integer magnitude JSON readers (and Tiled) keep exactly.
MAX_SAFE_INTEGER = 2**53 - 1

_EXAMPLE = "md={'sample': 'egg 3', 'proposal': 'GUP-12345'}"


def check_md(md: Any, *, plan: str, written: Iterable[str]) -> dict[str, Any]:
    """Return the user's ``md`` as plain JSON-able Python, or raise ValueError naming what cannot be stored.

    Parameters
    ----------
    md : mapping or None
        The plan's ``md=`` argument.
    plan : str
        The plan's name, for the messages.
    written : iterable of str
        Start-document keys the plan writes itself; ``md`` may not set them
        (except :data:`OVERRIDABLE` ones), nor :data:`RUN_ENGINE_KEYS`.
    """
    if md is None:
        return {}
    if not isinstance(md, Mapping):
        raise ValueError(f"md={_short(md)} is {_kind(md)}, not a mapping; allowed: a dict of metadata for the "
                         f"start document, e.g. {_EXAMPLE}")
    written = set(written) - OVERRIDABLE
    for key in md:
        if key in RUN_ENGINE_KEYS:
            raise ValueError(f"md[{key!r}]={_short(md[key])}: {key!r} is {RUN_ENGINE_KEYS[key]}; allowed: any "
                             f"other key. Rename it, e.g. md={{'my_{key}': ...}}")
        if key in written:
            raise ValueError(f"md[{key!r}]={_short(md[key])}: {key!r} is written by {plan} itself (its record of "
                             f"the run); allowed: any other key. Give it as the plan's argument if it is one, or "
                             f"rename it, e.g. md={{'my_{key}': ...}}")
    clean = plain(md, "md")
    _check_schema(clean)
    return clean


#: What the plans use of a microprobe.
MICROPROBE_PARTS = ("scanner", "rotation", "shutter", "zone_plate", "beam_parameters")


def check_microprobe(microprobe: Any) -> Any:
    """``microprobe`` if it is a microprobe device (it has :data:`MICROPROBE_PARTS`), else ValueError naming it.

    The queue server turns the name of a device of its namespace into the device; a string that reaches a
    plan named none.
    """
    if isinstance(microprobe, str):
        raise ValueError(f"microprobe={microprobe!r} is a string, not a device; allowed: the microprobe device. "
                         "In Python give the device (e.g. mp); through the queue server, the name of a device of "
                         "the worker's namespace (e.g. 'mp'), which it passes as the device")
    missing = [part for part in MICROPROBE_PARTS if not hasattr(microprobe, part)]
    if missing:
        raise ValueError(f"microprobe={_short(microprobe)} is {_kind(microprobe)}, without {', '.join(missing)}; "
                         f"allowed: a microprobe device ({', '.join(MICROPROBE_PARTS)}), e.g. the session's mp. "
                         "Give the microprobe, not one of its parts")
    return microprobe


def check_storable_shape(shape: tuple[int, int]) -> None:
    """Refuse a map too small for Tiled to store: TiledWriter keeps arrays of up to ``MAX_ARRAY_SIZE`` (16)
    elements in its event table, which cannot hold 2D maps, and the run would be lost at its stop."""
    from bluesky_tiled_plugins.writing.tiled_writer import MAX_ARRAY_SIZE

    ny, nx = shape
    if ny * nx <= MAX_ARRAY_SIZE:
        raise ValueError(f"shape=({ny}, {nx}): a map of {ny * nx} pixels is too small to store; allowed: more than "
                         f"{MAX_ARRAY_SIZE} pixels (TiledWriter keeps arrays of up to {MAX_ARRAY_SIZE} elements in a "
                         "table that cannot hold maps, and the run would be lost), e.g. shape=(5, 5)")


def check_run_md(md: Mapping[str, Any]) -> None:
    """A RunEngine ``md_validator``: the metadata of every run (``RE.md``, ``RE(plan, **md)``, the plan's) can
    be stored, else ValueError naming the key, before the start document is emitted.

    The plans check their own ``md=`` when called (:func:`check_md`); this
    catches what reaches the run another way. The session's RunEngine uses it.
    """
    _check_schema(plain(dict(md), "md"))


def plain(value: Any, where: str) -> Any:
    """``value`` as plain Python that JSON holds exactly, or ValueError naming its place (``where[...]``)."""
    return _plain(value, where, ())


def _plain(value: Any, where: str, parents: tuple[int, ...]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, np.generic):
        if isinstance(value, np.bool_ | np.integer | np.floating | np.str_):
            return _plain(value.item(), where, parents)
        return _refuse(where, value)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"{where}={value!r}: allowed integers within +-{MAX_SAFE_INTEGER} (2**53 - 1), which "
                             f"JSON readers and Tiled keep exactly; give a larger one as a string, "
                             f"{where}={str(value)!r}")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}={value!r}: allowed finite numbers (JSON, and so Tiled, holds no NaN or "
                             f"infinity); give None for a missing value, or a string, {where}={str(value)!r}")
        return float(value)
    if id(value) in parents:
        raise ValueError(f"{where} contains itself; allowed: nested lists and dicts without cycles")
    inside = (*parents, id(value))
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, np.str_):
                key = str(key)
            if not isinstance(key, str) or not key or "." in key or "/" in key:
                raise ValueError(f"{where}[{key!r}]: the key {key!r} is refused; allowed keys: non-empty strings "
                                 f"without '.' or '/' (they name fields of the start document and of Tiled's "
                                 f"queries). Rename it, e.g. {where}[{_suggest_key(key)!r}]")
            out[key] = _plain(item, f"{where}[{key!r}]", inside)
        return out
    if isinstance(value, list | tuple):  # a tuple stays one (JSON writes both as arrays)
        return type(value)(_plain(item, f"{where}[{i}]", inside) for i, item in enumerate(value))
    if isinstance(value, np.ndarray):  # each element is checked, and named if refused
        return _plain(value.tolist(), where, inside)
    return _refuse(where, value)


def _refuse(where: str, value: Any):
    if isinstance(value, complex | np.complexfloating):
        fix = f"store the parts, {where}={{'real': ..., 'imag': ...}}, or a string, {where}={str(value)!r}"
    elif isinstance(value, set | frozenset):
        fix = f"give a list, {where}=sorted(...)"
    elif isinstance(value, bytes):
        fix = f"give text, {where}=value.decode()"
    else:
        fix = f"give it as a string, {where}=str(...), or as numbers"
    raise ValueError(f"{where}={_short(value)} is {_kind(value)}, which the start document (JSON) and Tiled cannot "
                     f"store; allowed: None, bools, strings, finite numbers, lists and dicts of them. To keep it, "
                     f"{fix}")


_SCHEMA_TYPES = {"object": "a dict", "string": "a string", "array": "a list", "integer": "an integer",
                 "number": "a number", "boolean": "a bool"}


def _check_schema(md: dict[str, Any]) -> None:
    """Refuse what event-model's start-document schema refuses (``sample`` a list, ``owner`` a number...)."""
    validator = event_model.schema_validators[event_model.DocumentNames.start]
    for error in validator.iter_errors({"uid": "", "time": 0.0, **md}):
        path = "md" + "".join(f"[{p!r}]" for p in error.absolute_path)
        schema = error.schema
        types = [schema["type"]] if "type" in schema else [s["type"] for s in schema.get("anyOf", ()) if "type" in s]
        allowed = " or ".join(_SCHEMA_TYPES.get(t, t) for t in types) or error.message
        about = f" ({schema['description']})" if schema.get("description") else ""
        raise ValueError(f"{path}={_short(error.instance)}: event-model's start-document schema allows {allowed} "
                         f"here{about}; give that, or rename the key")


def _suggest_key(key: Any) -> str:
    return str(key).replace(".", "_").replace("/", "_") or "name"


def _kind(value: Any) -> str:
    if isinstance(value, complex | np.complexfloating):
        return "complex"
    cls = type(value)
    return f"of type {cls.__name__ if cls.__module__ == 'builtins' else cls.__module__ + '.' + cls.__qualname__}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "...)"
