"""A beamline's microprobe described by its own PV names: one YAML file per beamline.

A configuration maps the roles the plans need (the rotation stage, the zone
plate, the sample stage, I0, the DPC segments, the fluorescence detector, the
ring current, the shutter) to the records of a beamline's IOCs. Two are
checked in (:data:`CONFIGS`): APS 2-ID-E, written from the PV names its own
scan files record, and the simulated IOC of :mod:`xfct_bluesky.ioc`.

:func:`load_beamline` reads and checks a file (a bad one is refused naming the
key and the fix); :meth:`BeamlineConfig.pvs` lists every PV a role's record
uses; :func:`check_connections` (``xfct-bluesky check --beamline FILE``) tries
each over Channel Access and reports which answer, before anything moves.
"""

from .check import PVStatus, check_connections, format_check
from .config import (
    CONFIGS,
    ROLES,
    BeamlineConfig,
    BeamlineConfigError,
    RoleSpec,
    config_path,
    load_beamline,
)

__all__ = [
    "CONFIGS",
    "ROLES",
    "BeamlineConfig",
    "BeamlineConfigError",
    "PVStatus",
    "RoleSpec",
    "check_connections",
    "config_path",
    "format_check",
    "load_beamline",
]
