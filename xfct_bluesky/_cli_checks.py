"""The ``xfct-bluesky`` options, checked before a command creates anything.

``check_<command>(args)`` raises :class:`OptionError` (exit status 2) with one
line ``--option VALUE: <what is allowed and the fix>``. The ranges are the
library's own (``plans.planning.estimate_tomo`` and ``tomo_angles``,
``reconstruction.check_options``, ``paper.paper_table``, the simulator's map
and field checks), called on a simulated microprobe built as the command
builds it, so the command line and the Python API refuse the same values.
:func:`check_data_dir` runs for every command that has ``--data-dir``.
:func:`open_session` gives a :class:`~xfct_bluesky.session.Session` on
``--uri`` (:func:`connect` answers an unreachable server in one line,
:class:`CommandError`, exit status 1), on the ``xfct-bluesky serve`` process
serving the data folder, or on an embedded server over the folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from . import validate

#: Hosts ``serve`` binds without ``--allow-remote``.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Seconds to wait for a ``--uri`` server to accept the connection before it is reported unreachable.
CONNECT_TIMEOUT = 3.0
#: ``fit --background``: its values, as ``LiveSpectrumFit``'s hold_background (None: held where a pixel cannot
#: determine it).
FIT_BACKGROUNDS = {"auto": None, "held": True, "free": False}


class OptionError(ValueError):
    """A command-line option refused before anything is created; the message names it (exit status 2)."""


class CommandError(RuntimeError):
    """A command that cannot go on for a reason outside its options; the message is one line (exit status 1)."""


# ----------------------------------------------------------------- helpers ---
@contextlib.contextmanager
def _option(label: str | None = None) -> Iterator[None]:
    """Turn a library ``ValueError`` raised in the block into an :class:`OptionError` led by ``label``; None
    when the message leads with the option itself (a :mod:`~xfct_bluesky.validate` check given its name)."""
    try:
        yield
    except OptionError:
        raise
    except ValueError as err:
        raise OptionError(str(err) if label is None else f"{label}: {err}") from None


def _opt(name: str, value) -> str:
    """``--option VALUE`` as typed (5e+06, -1, '' quoted when empty or with spaces)."""
    return validate.shown(name, value)


def data_dir(args) -> Path:
    """The data folder: ``--data-dir``, else :func:`~xfct_bluesky.storage.default_data_dir` (not created)."""
    from .storage import default_data_dir

    return Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir()


def output_dir(args, default: str) -> Path:
    """``--output``, else ``<data dir>/<default>`` (not created)."""
    return Path(args.output).expanduser() if args.output else data_dir(args) / default


def check_folder(label: str, path: Path, *, writable: bool = False) -> None:
    """Refuse a folder that is a file, lies under a file or (``writable``) cannot be created or written."""
    path = Path(path).expanduser()
    try:
        if path.exists() and not path.is_dir():
            raise OptionError(f"{label} {path}: is a file, not a folder; give a folder (created if missing)")
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as err:
        raise OptionError(f"{label} {path}: cannot be examined ({err.strerror}); give another folder") from None
    if not existing.is_dir():
        raise OptionError(f"{label} {path}: {existing} is a file, so no folder can be made under it; "
                          "give another folder")
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(f"{label} {path}: {existing} is not writable; give a folder you can write to")


def check_data_dir(args) -> None:
    """Refuse a data folder (``--data-dir``, ``$XFCT_BLUESKY_DATA`` or the default) that is a file or under one."""
    if not hasattr(args, "data_dir"):
        return
    from .storage.server import DATA_DIR_ENV

    if args.data_dir:
        label = "--data-dir"
    elif os.environ.get(DATA_DIR_ENV, "").strip():
        label = f"${DATA_DIR_ENV}"
    else:
        label = "the default data folder"
    check_folder(label, data_dir(args))


def _check_output(args, default: str) -> None:
    label = "--output" if args.output else f"--output (default <data dir>/{default})"
    check_folder(label, output_dir(args, default), writable=True)


def check_seed(seed) -> None:
    """Refuse a seed the simulator's generators do not take (:func:`xfct_bluesky.validate.seed`)."""
    with _option():
        validate.seed("--seed", seed)


def _field(shape, seed, *, pixel_size: float = 300e-9, spectra: bool):
    """A simulated microprobe (a small cell: cheap) whose scanner accepted ``shape``; ValueError if not."""
    from .devices.sim import make_sim_microprobe
    from .physics import small_cell

    mp = make_sim_microprobe(shape=shape, pixel_size=pixel_size, seed=seed, specimen=small_cell(10e-6, seed=seed),
                             save_spectra=spectra)
    mp.scanner.check_field(shape, pixel_size)
    return mp


# ---------------------------------------------------------------- commands ---
def check_demo(args) -> None:
    """``demo``: the checks ``run_demo`` meets (its microprobe, ``xfct_tomo`` and TiledWriter), without running it."""
    from .plans._checks import check_storable_shape
    from .plans.planning import estimate_tomo, tomo_angles

    _check_output(args, "demo")
    with _option(_opt("--n-angles", args.n_angles)):
        tomo_angles(args.n_angles, order="golden")
    check_seed(args.seed)
    shape = (args.size, args.size)
    with _option(_opt("--size", args.size)):
        mp = _field(shape, args.seed, spectra=True)
        check_storable_shape(shape)
    with _option(f"{_opt('--total-dose', args.total_dose)} over {_opt('--n-angles', args.n_angles)}"):
        estimate_tomo(mp, shape=shape, pixel_size=300e-9, n_angles=args.n_angles, total_dose=args.total_dose,
                      order="golden")


def check_serve(args) -> None:
    with _option():
        validate.integer("--port", args.port, low=1, high=65535,
                         fix="A TCP port, e.g. 8000 (the default); 0 would let the system pick one that could not "
                             "be printed for the clients")
    if args.host not in LOOPBACK and not args.allow_remote:
        raise OptionError(f"--host {args.host}: refusing to bind {args.host!r}: the server binds loopback only "
                          "(127.0.0.1); pass --allow-remote to expose it, behind a firewall")


def check_ls(args) -> None:
    with _option():
        validate.integer("-n", args.n, low=1, fix="How many of the newest runs to list, e.g. 20")


def check_import(args) -> None:
    """``import``: the files exist and are files; --flyxrf and --no-flyxrf not both; the asset folder usable."""
    missing = [p for p in args.paths if not Path(p).expanduser().is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise OptionError(f"PATH {shown}: no such file{'s' if len(missing) > 1 else ''}; give the files to import "
                          "(nothing was imported)")
    if args.flyxrf and args.no_flyxrf:
        raise OptionError(f"{_opt('--flyxrf', args.flyxrf)} with --no-flyxrf: give one of them")
    if args.flyxrf and not Path(args.flyxrf).expanduser().is_file():
        raise OptionError(f"{_opt('--flyxrf', args.flyxrf)}: no such file; give the flyXRF HDF5 file of the MDA scan")
    if args.asset_dir:
        check_folder("--asset-dir", Path(args.asset_dir), writable=True)


def check_reconstruct(args) -> None:
    """``reconstruct``: ``reconstruction.check_options`` one option at a time, the elements, the DXchange path."""
    from .reconstruction import check_options

    with _option(_opt("--algorithm", args.algorithm)):
        check_options(args.algorithm, None, 1, "none")
    with _option(_opt("--align", args.align)):
        check_options(args.algorithm, None, 1, args.align)
    if args.iterations is not None:
        with _option(_opt("--iterations", args.iterations)):
            check_options(args.algorithm, args.iterations, 1, args.align)
    with _option(_opt("--subsets", args.subsets)):
        check_options(args.algorithm, args.iterations, args.subsets, args.align)
    if not [e for e in args.elements.split(",") if e.strip()]:
        raise OptionError(f"--elements {args.elements!r}: give at least one element, e.g. Zn or Zn,Fe")
    if args.dxchange:
        path = Path(args.dxchange).expanduser()
        if path.is_dir():
            raise OptionError(f"--dxchange {path}: is a folder; give the HDF5 file to write, e.g. {path / 'rec.h5'}")
        check_folder("--dxchange", path.parent, writable=True)


def check_fit(args) -> None:
    """``fit``: the per-pixel method, the line families (xraylib's names), the calibration file (read now)."""
    from .analysis.fitting import METHODS, read_maps_override
    from .analysis.fitting.lines import parse_family

    with _option():
        validate.one_of("--method", args.method, METHODS,
                        fix="poisson (default: non-negative Poisson maximum likelihood), linear or nnls")
        validate.one_of("--background", args.background, tuple(FIT_BACKGROUNDS),
                        fix="auto (default: held where a pixel cannot determine it), held or free")
    if args.background == "held" and args.method != "poisson":
        raise OptionError(f"--background held with --method {args.method}: only the poisson fit holds a background; "
                          "give --method poisson, or --background auto")
    if args.elements is not None:
        names = [e.strip() for e in args.elements.split(",") if e.strip()]
        if not names:
            raise OptionError(f"{_opt('--elements', args.elements)}: give at least one line family, e.g. Ca,Fe,Zn")
        with _option(_opt("--elements", args.elements)):
            for name in names:
                parse_family(name)
    if args.calibration != "auto":
        path = Path(args.calibration).expanduser()
        if not path.is_file():
            raise OptionError(f"{_opt('--calibration', args.calibration)}: no such file; allowed: auto (fitted on "
                              "the summed spectra) or an XRF-Maps maps_fit_parameters_override.txt")
        with _option(_opt("--calibration", args.calibration)):
            read_maps_override(path)


def int_list(option: str, text: str) -> tuple[int, ...]:
    """``"24,72,240"`` as (24, 72, 240), or an OptionError naming ``option``."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise OptionError(f"{_opt(option, text)}: give integers separated by commas, e.g. 24,72,240,720")
    return values


def dose_schedules(args) -> tuple[tuple[int, float], ...]:
    """``dose-study``'s schedules: each of ``--angles`` with ``--total-dwell`` shared out among them."""
    return tuple((n, args.total_dwell / n if n else args.total_dwell) for n in int_list("--angles", args.angles))


def dose_alignments(args) -> tuple[str, ...]:
    """``dose-study``'s ``--alignments`` as a tuple of names (checked by :func:`check_dose_study`)."""
    names = tuple(a.strip().lower() for a in str(args.alignments).split(",") if a.strip())
    if not names:
        raise OptionError(f"{_opt('--alignments', args.alignments)}: give one or more of auto, dpc, zn, none, "
                          "truth, separated by commas")
    return names


def check_dose_study(args) -> None:
    """``dose-study``: every option as ``dose_study`` checks it (schedules, field, cell), before any work."""
    from .dose_study import PIXEL
    from .dose_study.study import MARGIN, check_study
    from .reconstruction import check_options

    _check_output(args, "dose-study")
    with _option(_opt("--algorithm", args.algorithm)):
        check_options(args.algorithm, None, 1, "dpc")
    with _option(_opt("--iterations", args.iterations)):
        check_options(args.algorithm, args.iterations, 1, "dpc")
    for name in dose_alignments(args):
        with _option(_opt("--alignments", args.alignments)):
            check_options(args.algorithm, args.iterations, 1, name)
    for seed in int_list("--seeds", args.seeds):
        with _option(_opt("--seeds", args.seeds)):
            validate.seed("seed", seed)
    with _option(_opt("--pipeline", args.pipeline)):
        validate.one_of("pipeline", args.pipeline, ("simulator", "bluesky"))
    with _option():
        validate.integer("--rows", args.rows, low=7, fix="The central rows compared, e.g. 16 (3D SSIM needs 7)")
    with _option(_opt("--total-dwell", args.total_dwell)):
        validate.positive("total_dwell", args.total_dwell, unit=" s", fix="e.g. 0.72 (240 x 3 ms)")
    schedules = dose_schedules(args)
    field = (args.rows + 2 * MARGIN, args.size)
    with _option(f"{_opt('--rows', args.rows)} and {_opt('--size', args.size)} (a field of {field[0]}x{field[1]} px)"):
        _field(field, 0, pixel_size=PIXEL, spectra=False)
    label = (f"{_opt('--angles', args.angles)} with {_opt('--total-dwell', args.total_dwell)}, "
             f"{_opt('--size', args.size)}, {_opt('--rows', args.rows)}, "
             f"{_opt('--cell-diameter', args.cell_diameter)}")
    with _option(label):
        check_study(schedules, size=args.size, rows=args.rows, margin=MARGIN, cell_diameter=args.cell_diameter)


def check_paper_table(args) -> None:
    """``paper-table``: ``paper_table``'s own checks, the field check of its microprobe, the CC upsampling."""
    from .analysis._regprep import check_upsample
    from .paper import paper_table

    _check_output(args, "paper")
    check_seed(args.seed)
    shape = (args.size, args.size)
    with _option(_opt("--size", args.size)):
        _field(shape, args.seed, spectra=False)
    with _option(f"{_opt('--region', args.region)} with {_opt('--size', args.size)}"):
        paper_table(shape=shape, region=args.region, upsample=args.upsample, spots=())  # no spot: checks only
    with _option(_opt("--upsample", args.upsample)):
        check_upsample(args.upsample)  # what cross_correlation and cc_fwhm check, after the simulation


# ------------------------------------------------------------------ --uri ---
def connect(uri: str, api_key: str | None):
    """A Tiled client on ``uri``; one try of at most :data:`CONNECT_TIMEOUT` s tells an unreachable server.

    tiled's own retries (``TILED_RETRY_ATTEMPTS``/``TILED_RETRY_TIMEOUT``, 10
    attempts over about 26 s by default, each printing "Retrying..." where
    stderr is not a terminal) are read once when ``tiled.client`` is imported
    and would hold for the whole command; they are left as they are for the
    requests after this probe.

    Raises
    ------
    OptionError
        ``uri`` is not an http(s) address.
    CommandError
        Nothing answers at ``uri``, or the server refuses the client (e.g. a wrong API key).
    """
    import httpx
    from tiled.client import from_uri

    try:
        httpx.get(uri, timeout=httpx.Timeout(10.0, connect=CONNECT_TIMEOUT))
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
        raise OptionError(f"--uri {uri}: not an address of a Tiled server ({err}); "
                          "give http://host:port, e.g. http://127.0.0.1:8000") from None
    except httpx.TransportError as err:
        raise CommandError(f"--uri {uri}: no Tiled server answers ({str(err) or type(err).__name__}); start one "
                           "(`xfct-bluesky serve`) or check the address") from None
    try:
        return from_uri(uri, api_key=api_key)
    except httpx.HTTPStatusError as err:
        if err.response.status_code in (401, 403):
            raise CommandError(f"--uri {uri}: the server refused the client ({err}); give the server's key with "
                               "--api-key (it is in <data dir>/api_key of the server)") from None
        raise CommandError(f"--uri {uri}: the server answered with an error ({err}); is it a Tiled server, "
                           "at this address?") from None


def open_session(args, *, read_only: bool = False, journal: bool = True):
    """A :class:`~xfct_bluesky.session.Session` on ``--uri`` (:func:`connect`, which tells an unreachable server
    in one line), else on the ``xfct-bluesky serve`` process serving the data folder
    (:func:`~xfct_bluesky.storage.folder.running_server`), else on an embedded server over the folder;
    no live analysis, no persistent ``RE.md``.
    Use it as a context manager; ``.catalog`` is the runs container, ``.writer`` the writer with backup."""
    from .session import Session
    from .storage.folder import running_server
    from .storage.server import stored_api_key

    client = connect(args.uri, args.api_key) if args.uri else None
    served = None if args.uri else running_server(data_dir(args))
    if served:  # `xfct-bluesky serve` is serving this folder: use it rather than start a second server
        try:
            client = connect(served, stored_api_key(data_dir(args)))
        except CommandError as err:
            print(f"note: the server that serves {data_dir(args)} ({served}) cannot be used ({err}); "
                  "starting one of this command's own", file=sys.stderr)
    return Session(data_dir(args), client=client, live=False, persistent_md=False, read_only=read_only,
                   journal=journal and not read_only)
