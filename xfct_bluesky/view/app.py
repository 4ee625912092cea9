"""The live view's web server: the page, its JSON endpoints, the token that guards both.

:func:`make_app` builds a Starlette app over a :class:`~.reader.LiveReader`;
:func:`serve_view` runs it with uvicorn until SIGTERM or Ctrl-C.

Access: every request needs the view's token, a random string made at each
start (:func:`new_token`, kept in ``<data dir>/view_token``, mode 0600, while
the server runs), given once as ``?token=`` in the URL the command prints;
that request sets an HttpOnly, SameSite=Strict cookie and redirects to the
bare page, so the token leaves the address bar, and the page's own requests
carry the cookie (scripts may also send ``Authorization: Bearer <token>``).
Anything else is answered 401. uvicorn's access log is off: it would write
the URL with the token into the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .reader import LiveReader, RunNotFound

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: The file in the data folder holding the running view's token (mode 0600), removed when it stops.
TOKEN_FILE = "view_token"
COOKIE = "xfct_view_token"
#: Seconds between the page's polls of /api/state, unless ``?poll=`` says otherwise.
POLL = 1.0

_REFUSED = ("401 Unauthorized: this live view needs its token. Open the URL `xfct-bluesky view` printed when it "
            "started (http://HOST:PORT/?token=...); the token is also in <data dir>/view_token while it runs.\n")


def new_token() -> str:
    """A random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


@contextlib.contextmanager
def token_file(data_dir: Path, token: str) -> Iterator[Path]:
    """Write ``token`` to ``data_dir / TOKEN_FILE`` (mode 0600, replacing an old one) for the ``with`` block."""
    path = Path(data_dir) / TOKEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a dead view's file: its token is void
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text().strip() == token:  # not another view's, started since
                path.unlink()


def _json(payload: Any, status: int = 200):
    from starlette.responses import Response

    return Response(json.dumps(payload, allow_nan=False), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def make_app(reader: LiveReader, token: str, *, poll: float = POLL) -> Any:
    """The Starlette app of the live view.

    Parameters
    ----------
    reader : LiveReader
        What the endpoints answer from.
    token : str
        The token every request must carry (query ``token``, cookie, or bearer header).
    poll : float
        Default seconds between the page's polls.

    Notes
    -----
    Routes: ``/`` the page, ``/static/*`` its script and style, and JSON:
    ``/api/state``, ``/api/maps?uid=&index=``, ``/api/shifts?uid=``,
    ``/api/slice?uid=`` (see :class:`~.reader.LiveReader`). A read that
    fails answers 502 with the reason; an unknown run 404.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import (
        FileResponse,
        PlainTextResponse,
        RedirectResponse,
        Response,
    )
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def given(request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE) or request.query_params.get("token")

    class TokenRequired(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            offered = given(request)
            if offered is None or not secrets.compare_digest(offered.encode(), token.encode()):
                return PlainTextResponse(_REFUSED, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            if request.url.path == "/" and "token" in request.query_params:  # set the cookie, drop the token
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse("/" + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
                return response
            response = await call_next(request)
            response.headers["Cache-Control"] = "no-store"
            response.headers["Referrer-Policy"] = "no-referrer"
            return response

    def answer(call):
        import httpx

        try:
            return _json(call())
        except RunNotFound as err:
            return _json({"error": str(err)}, 404)
        except (KeyError, IndexError) as err:
            return _json({"error": f"{type(err).__name__}: {err}"}, 404)
        except (httpx.HTTPError, OSError) as err:
            logger.warning("live view: Tiled read failed: %s: %s", type(err).__name__, err)
            return _json({"error": f"the Tiled read failed ({type(err).__name__}: {err})"}, 502)

    def page(request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    def state(request) -> Response:
        return answer(lambda: {**reader.state(), "poll": poll, "element": reader.element})

    def maps(request) -> Response:
        try:
            index = int(request.query_params.get("index", ""))
        except ValueError:
            return _json({"error": f"index={request.query_params.get('index')!r}: give a projection index >= 0"},
                         400)
        return answer(lambda: reader.maps(request.query_params["uid"], index))

    def shifts(request) -> Response:
        return answer(lambda: reader.shifts(request.query_params["uid"]))

    def slice_(request) -> Response:
        return answer(lambda: reader.slice(request.query_params["uid"]))

    routes = [Route("/", page), Route("/api/state", state), Route("/api/maps", maps),
              Route("/api/shifts", shifts), Route("/api/slice", slice_),
              Mount("/static", app=StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, middleware=[Middleware(TokenRequired)])


def serve_view(reader: LiveReader, *, host: str, port: int, data_dir: Path, poll: float = POLL,
               announce: Any = print) -> int:
    """Serve the live view on ``host:port`` until stopped (SIGTERM, Ctrl-C); returns 0.

    A new token is made (:func:`new_token`), kept in ``data_dir / TOKEN_FILE``
    while the server runs, and given once to ``announce`` as the URL to open.
    """
    import uvicorn

    token = new_token()
    shown = f"[{host}]" if ":" in host else host
    with token_file(data_dir, token) as path:
        announce(f"Live view on http://{shown}:{port}/ ; open (once; the token is also in {path}):\n"
                 f"  http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/?token={token}")
        config = uvicorn.Config(make_app(reader, token, poll=poll), host=host, port=port, access_log=False,
                                log_level="warning", lifespan="off")
        # uvicorn stops gracefully on SIGTERM or SIGINT, then raises the signal again to the handler it
        # found: this one ends the with blocks (the token file, the Tiled client) instead of the process
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            uvicorn.Server(config).run()
        except _Stopped:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0


class _Stopped(Exception):
    """SIGTERM or SIGINT, raised again by uvicorn after its graceful stop."""


def _stop(signum, frame) -> None:
    raise _Stopped(signum)
