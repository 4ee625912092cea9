"""Which of a configuration's PVs answer over Channel Access: read only, before anything moves."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import BeamlineConfig

__all__ = ["PVStatus", "check_connections", "format_check"]


@dataclass(frozen=True)
class PVStatus:
    """One PV of a role: connected or not, and its value as read (shortened), or why it was not read."""

    role: str
    pv: str
    connected: bool
    value: str = ""


def _shown(value) -> str:
    data = getattr(value, "data", value)
    try:
        items = list(data)
    except TypeError:
        items = [data]
    if len(items) == 1:
        item = items[0]
        return item.decode(errors="replace") if isinstance(item, bytes) else f"{item:g}" \
            if isinstance(item, float) else str(item)
    return f"array of {len(items)}"


def check_connections(config: BeamlineConfig, *, timeout: float = 2.0, context=None) -> list[PVStatus]:
    """Search and read every PV of ``config`` (:meth:`BeamlineConfig.pvs`); never write one.

    Parameters
    ----------
    config : BeamlineConfig
        From :func:`~xfct_bluesky.beamline.load_beamline`.
    timeout : float
        Seconds for all the PVs to connect (searched at once), then for each read.
    context : caproto.threading.client.Context, optional
        Default: a new one, closed at the end (Channel Access settings from ``EPICS_CA_ADDR_LIST``,
        ``EPICS_CA_AUTO_ADDR_LIST``, ``EPICS_CA_SERVER_PORT``).

    Returns
    -------
    list of PVStatus
        In the order of :meth:`BeamlineConfig.pvs`.
    """
    from caproto.threading.client import Context

    own = context is None
    ctx = Context() if own else context
    names = config.pvs()
    try:
        pvs = ctx.get_pvs(*(pv for _, pv in names), timeout=timeout)
        deadline = time.monotonic() + timeout
        out = []
        for (role, name), pv in zip(names, pvs, strict=True):
            try:
                pv.wait_for_connection(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                out.append(PVStatus(role, name, False, "no answer"))
                continue
            try:
                value = _shown(pv.read(timeout=timeout))
            except Exception as err:  # noqa: BLE001 - a read that fails is reported, not raised
                value = f"connected, read failed: {err}"
            out.append(PVStatus(role, name, True, value))
        for pv in pvs:
            pv.go_idle()
        return out
    finally:
        if own:
            ctx.disconnect()


def format_check(config: BeamlineConfig, statuses: list[PVStatus]) -> str:
    """The check as ``xfct-bluesky check --beamline`` prints it: one line a PV, then a summary."""
    width = max((len(s.pv) for s in statuses), default=10)
    lines = [f"{config.beamline} ({config.path}): {len(statuses)} PVs of {len(config.roles)} roles"]
    role = None
    for s in statuses:
        if s.role != role:
            role = s.role
            kind, record, _ = config.roles[role]
            lines.append(f"{role}: {kind} {record}")
        lines.append(f"  {'ok  ' if s.connected else 'MISSING'} {s.pv:<{width}}  {s.value}")
    missing = [s for s in statuses if not s.connected]
    if missing:
        roles = sorted({s.role for s in missing}, key=list(config.roles).index)
        lines.append(f"{len(missing)} of {len(statuses)} PVs did not answer (roles: {', '.join(roles)}): is the IOC "
                     "running, and does EPICS_CA_ADDR_LIST reach it? Nothing was moved.")
    else:
        lines.append(f"all {len(statuses)} PVs answered. Nothing was moved.")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    """The options of ``xfct-bluesky check``."""
    from .config import CONFIGS

    parser.add_argument("--beamline", required=True, metavar="FILE",
                        help=f"a beamline configuration (YAML), or a checked-in one: {', '.join(CONFIGS)}")
    parser.add_argument("--prefix", help="replaces the configuration's {prefix} (the simulated IOC's --prefix)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the PVs (default 2)")


def main_from_args(args) -> int:
    """``xfct-bluesky check --beamline FILE``: 0 if every PV answered, 1 if one did not, 2 for a bad file."""
    import sys

    from .config import BeamlineConfigError, load_beamline

    try:
        config = load_beamline(args.beamline, prefix=args.prefix)
    except BeamlineConfigError as err:
        print(f"xfct-bluesky check: {err}", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print(f"xfct-bluesky check: --timeout {args.timeout!r}: allowed a number of seconds > 0, e.g. 2",
              file=sys.stderr)
        return 2
    statuses = check_connections(config, timeout=args.timeout)
    print(format_check(config, statuses))
    return 0 if all(s.connected for s in statuses) else 1
