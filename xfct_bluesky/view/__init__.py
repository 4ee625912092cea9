"""``xfct-bluesky view``: watch a scan from a browser.

A small web page, served next to the Tiled server (``xfct-bluesky serve``),
that shows the latest scan (or a chosen one) as it is acquired: scan id,
plan, sample and status; projections stored of those planned and the dose
so far; the latest projection's DPC x, DPC y and element (Zn) maps with its
angle; the live DPC alignment's shifts against angle; the live
reconstruction's central slice.

- :mod:`.reader`: :class:`~.reader.LiveReader`, the reads from Tiled (Python
  client, server-side), as plain numbers.
- :mod:`.app`: the Starlette app (the page, ``/api/*`` JSON, a token on every
  request) and :func:`~.app.serve_view` (uvicorn).
- ``static/``: ``index.html``, ``view.js``, ``view.css``: plain HTML and
  JavaScript on canvases; no build step, nothing fetched from the network.

Why polling, server-side, rather than tiled's websocket streaming: tiled
0.2.20 has a websocket route (``/api/v1/stream/single/{path}``), but it
serves only a server started with a streaming cache (``tiled serve ...
--cache memory|redis://``), which ``xfct-bluesky serve`` does not start, and
it would need the browser to hold the Tiled API key (full read and write
access to every run) or a proxy of our own in front of it. Reading with the
Python client in this process keeps the key out of the browser: the page
gets only this view's token, which reads these few numbers. A poll a second
of a few small requests costs the server little on loopback, and what it
can show is bounded by what the writer has stored anyway: events reach
Tiled when the RunEngine's TiledWriter writes them (bluesky-tiled-plugins
batches them until the run's stop unless ``batch_size=1``; see
:func:`~xfct_bluesky.storage.make_tiled_writer`), and the live alignment and
reconstruction publish their derived runs when the scan ends.

Security as for ``serve``: loopback only unless ``--host`` names another
address and ``--allow-remote`` is given; a random token per start, required
on every request (see :mod:`.app`).
"""

from __future__ import annotations

from pathlib import Path

#: Seconds between polls the command accepts.
POLL_RANGE = (0.1, 60.0)


def add_arguments(p) -> None:
    """The options of ``xfct-bluesky view`` (``--data-dir`` is added by the command line)."""
    p.add_argument("--uri", help="the Tiled server (default: the `xfct-bluesky serve` of the data folder, else "
                   "the folder opened in-process)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-file", help="a file holding the Tiled server's API key (default: "
                     "<data dir>/api_key, the key `serve` keeps); better than --api-key, which other local users "
                     "can read on the command line")
    key.add_argument("--api-key", help="the Tiled server's API key")
    p.add_argument("--run", default="latest", help="latest (default: the newest scan, following each new one) or a "
                   "uid, a uid prefix (5+ characters) or a scan id")
    p.add_argument("--element", default="Zn", help="the element map and volume shown (default Zn)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback)")
    p.add_argument("--port", type=int, default=8010, help="port (default 8010)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (behind a firewall)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between the page's updates (default 1)")


def check(args) -> None:
    """Refuse bad options before anything starts (:class:`~xfct_bluesky._cli_checks.OptionError`)."""
    from .. import validate
    from .._cli_checks import OptionError, _option, check_serve

    check_serve(args)  # the port, and loopback unless --allow-remote: as for serve
    with _option():
        validate.between("--poll", args.poll, *POLL_RANGE, unit=" s", fix="e.g. 1 (the default)")
    if args.api_key_file and not Path(args.api_key_file).expanduser().is_file():
        raise OptionError(f"--api-key-file {args.api_key_file}: no such file; give the file holding the Tiled "
                          "server's API key (`serve` keeps it in <data dir>/api_key)")
    run = args.run
    if run != "latest" and not (run.isdigit() and int(run) > 0) and len(run) < 5:
        raise OptionError(f"--run {run!r}: allowed latest, a scan id (> 0), or a uid or uid prefix of 5 or more "
                          "characters; `xfct-bluesky ls` lists the runs")


def main_from_args(args) -> int:
    """Open the catalog read-only, check the run, and serve the view until stopped."""
    from .. import _cli_checks as checks
    from ..storage.server import DERIVED_CONTAINER, derived_container
    from .app import serve_view
    from .reader import LiveReader, RunNotFound

    if args.api_key_file:
        args.api_key = Path(args.api_key_file).expanduser().read_text().strip()
    elif args.uri and not args.api_key:  # the key `serve` keeps in the data folder, if any
        from ..storage.server import stored_api_key

        args.api_key = stored_api_key(checks.data_dir(args))
    with checks.open_session(args, read_only=True) as session:
        client = session.client

        def derived():
            if session.derived is None and DERIVED_CONTAINER in client:  # created since the view started
                session.derived = derived_container(client)
            return session.derived

        reader = LiveReader(session.catalog, derived, run=args.run, element=args.element)
        try:
            reader.state()  # the run exists, the server answers: say so now, not in the browser
        except RunNotFound as err:
            raise checks.CommandError(str(err)) from None
        return serve_view(reader, host=args.host, port=args.port, data_dir=checks.data_dir(args), poll=args.poll,
                          announce=lambda text: print(text, flush=True))
