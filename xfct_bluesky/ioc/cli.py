"""``xfct-bluesky ioc`` and ``python -m xfct_bluesky.ioc``: options, loopback only by default, run to SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from pathlib import Path

from .._cli_checks import check_folder, check_seed
from ..net import is_loopback
from ._common import DEFAULT_PREFIX
from .server import MicroprobeIOC

logger = logging.getLogger("xfct_bluesky.ioc")

#: A PV prefix: EPICS record-name characters (no '.', the field separator), ending in ':' as the PV
#: suffixes (``Rot``, ``Fly:Acquire``, ...) follow it without one of their own.
PREFIX_FORM = re.compile(r"[A-Za-z0-9_\-+:\[\]<>;{}]+:")


# ---------------------------------------------------------------------- CLI ---
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The IOC's options, for ``python -m xfct_bluesky.ioc`` and ``xfct-bluesky ioc``."""
    parser.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help=f"PV prefix, ending in ':' (default {DEFAULT_PREFIX!r})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the specimen, runout and noise, as make_sim_microprobe(seed=...) (default 0)")
    parser.add_argument("--shape", type=int, nargs=2, default=(32, 32), metavar=("NY", "NX"),
                        help="map shape at start (default 32 32)")
    parser.add_argument("--pixel-size", type=float, default=300e-9, help="pixel size at start, m (default 300e-9)")
    parser.add_argument("--dwell", type=float, default=3e-3, help="dwell at start, s per pixel (default 3e-3)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the HDF5 spectra files (default <xfct-bluesky data dir>/assets); "
                             "Fly:HDF1:FilePath may only point under it")
    parser.add_argument("--interfaces", nargs="+", default=["127.0.0.1"],
                        help="interfaces to serve on (default 127.0.0.1: loopback only)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback interface (the PVs move motors and write files: firewall it)")
    parser.add_argument("--realtime", action="store_true",
                        help="maps and counts take as long as on the hardware (default: as fast as the CPU)")
    parser.add_argument("--beamline", metavar="FILE",
                        help="serve a beamline configuration's records with their real layouts (motor, scaler, "
                             "xMAP), e.g. aps-2ide, instead of the simulated microprobe's own PVs; --prefix, "
                             "--shape, --pixel-size, --dwell and --data-dir do not apply")
    return parser


def check_prefix(prefix: str) -> str:
    """``prefix`` if it has :data:`PREFIX_FORM`; else ValueError naming the form and an example."""
    if not PREFIX_FORM.fullmatch(prefix):
        raise ValueError(f"--prefix {prefix!r}: allowed a PV prefix of letters, digits and _-+:[]<>;{{}} ending "
                         f"in ':', e.g. {DEFAULT_PREFIX!r} (the PVs are <prefix>Rot, <prefix>Fly:Acquire, ...)")
    return prefix


def main_from_args(args: argparse.Namespace) -> int:
    """Run the IOC until interrupted (SIGINT or SIGTERM); 2 if the options are refused."""
    remote = [i for i in args.interfaces if not is_loopback(i)]
    if remote and not args.allow_remote:
        print(f"xfct-bluesky ioc: --interfaces {' '.join(args.interfaces)}: refusing to serve on "
              f"{', '.join(remote)}: the IOC serves loopback only (127.0.0.1); pass --allow-remote to expose its "
              "PVs (they move motors and write files), behind a firewall", file=sys.stderr)
        return 2
    if getattr(args, "beamline", None):
        return _serve_beamline(args)
    try:  # every option refused before a folder is made or a PV served
        check_prefix(args.prefix)
        check_seed(args.seed)
        ioc = MicroprobeIOC(args.prefix, seed=args.seed, shape=tuple(args.shape), pixel_size=args.pixel_size,
                            dwell=args.dwell, data_dir=args.data_dir, realtime=args.realtime)
        check_folder("--data-dir" if args.data_dir else "the spectra folder", Path(ioc.options["data_dir"]),
                     writable=True)
    except ValueError as exc:
        print(f"xfct-bluesky ioc: {exc}", file=sys.stderr)
        return 2
    Path(ioc.options["data_dir"]).mkdir(parents=True, exist_ok=True)
    return _serve(ioc, args, f"under {args.prefix!r}", f"; HDF5 files in {ioc.options['data_dir']}")


def _serve_beamline(args: argparse.Namespace) -> int:
    """``--beamline FILE``: the configuration's records (:mod:`.beamline`), refused whole if the file is bad."""
    from ..beamline import BeamlineConfigError, load_beamline
    from .beamline import beamline_ioc

    try:
        check_seed(args.seed)
        config = load_beamline(args.beamline)
        ioc = beamline_ioc(config, seed=args.seed)
    except (BeamlineConfigError, ValueError) as exc:
        print(f"xfct-bluesky ioc: {exc}", file=sys.stderr)
        return 2
    return _serve(ioc, args, f"of {config.beamline} ({config.path.name})", "")


def _serve(ioc, args: argparse.Namespace, what: str, where: str) -> int:
    """Serve ``ioc`` on ``args.interfaces`` until SIGINT or SIGTERM."""
    remote = [i for i in args.interfaces if not is_loopback(i)]
    os.environ["EPICS_CAS_INTF_ADDR_LIST"] = " ".join(args.interfaces)
    if not remote:
        # beacons to loopback too (not broadcast on every interface)
        os.environ.setdefault("EPICS_CAS_BEACON_ADDR_LIST", "127.0.0.1")
        os.environ.setdefault("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "NO")
    logging.getLogger("caproto.ctx").addFilter(_BeaconFilter())
    # SIGTERM (e.g. a test fixture's terminate) stops the server as Ctrl-C does, closing the HDF5 file
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"xfct-bluesky IOC: {len(ioc.pvdb)} PVs {what} on {', '.join(args.interfaces)} "
          f"(port {os.environ.get('EPICS_CA_SERVER_PORT', '5064')}); seed {args.seed}{where}", flush=True)
    from caproto.server import run

    try:
        run(ioc.pvdb, interfaces=list(args.interfaces))
    except KeyboardInterrupt:
        pass
    finally:
        close = getattr(ioc, "close", None)
        if close is not None:
            close()
    return 0


class _BeaconFilter(logging.Filter):
    """Log a failed beacon once, without its traceback.

    With no CA repeater on the host, every beacon to the loopback repeater
    port is refused; caproto would log a traceback each time.
    """

    def __init__(self):
        super().__init__()
        self._seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to send beacon"):
            return True
        if self._seen:
            return False
        self._seen = True
        record.exc_info = None
        record.msg = str(record.msg) + " (no CA repeater listening; logged once)"
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m xfct_bluesky.ioc", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return main_from_args(args)
