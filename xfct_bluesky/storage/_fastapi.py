"""Tiled's server answers each request without rebuilding its dependency graph (a FastAPI workaround).

tiled builds its app with one dependency override, ``app.dependency_overrides[get_settings]``, the way it
hands the server's settings to every route. With any override present, FastAPI's ``solve_dependencies``
(0.165) builds every sub-dependency of the route anew on every request, ``get_dependant`` inspecting each
callable's signature again, whether or not that callable is overridden (fastapi/fastapi#8402; the fix
proposed upstream, fastapi/fastapi#16342, reuses the dependant when the callable is not overridden). For
tiled's routes that is a quarter of the server's CPU time per request, measured here on a tomography
written to an embedded server (py-spy, 1 Dec 2026), and the embedded server shares this process's GIL
with the RunEngine and the live analysis.

:func:`reuse_request_dependants` makes that per-request call return the dependant it built the first time
for the same arguments. ``get_dependant`` is a pure function of them (the path, the callable, the
parameter's name, the scopes, the cache scope, the concurrency), so the graph solved, and every value
injected, is the same as before; only the signature inspection is not repeated. Calls made while routes
are built (which pass ``own_oauth_scopes`` or ``use_cache``, and whose dependants FastAPI may extend
afterwards) are not cached. A callable that cannot be a dict key is built anew as before.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

#: The keyword arguments with which ``solve_dependencies`` rebuilds a sub-dependency per request, exactly.
_PER_REQUEST_CALL = frozenset({"path", "call", "name", "parent_oauth_scopes", "scope", "concurrency"})

_lock = threading.Lock()


def reuse_request_dependants() -> None:
    """Install the cache in ``fastapi.dependencies.utils`` (idempotent; the server's process only)."""
    from fastapi.dependencies import utils

    with _lock:
        if getattr(utils.get_dependant, "_xfct_reused", False):
            return
        utils.get_dependant = _reusing(utils.get_dependant)


def _reusing(get_dependant: Any) -> Any:
    built: dict[tuple, Any] = {}

    @functools.wraps(get_dependant)
    def reused(**kwargs: Any) -> Any:
        if kwargs.keys() != _PER_REQUEST_CALL:
            return get_dependant(**kwargs)
        key = (kwargs["path"], kwargs["call"], kwargs["name"], tuple(kwargs["parent_oauth_scopes"] or ()),
               kwargs["scope"], kwargs["concurrency"])
        try:
            return built[key]
        except KeyError:
            return built.setdefault(key, get_dependant(**kwargs))
        except TypeError:  # an unhashable callable (an instance with __eq__ and no __hash__)
            return get_dependant(**kwargs)

    reused._xfct_reused = True
    reused.built = built
    return reused
