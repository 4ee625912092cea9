"""Constants and helpers the PV groups of the microprobe IOC share."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Protocol

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from ..devices.spec import (
    BEAM_OFF_CURRENT,  # noqa: F401 (re-exported to the server)
    MAP_PVS,  # map key -> (PV suffix under Fly:Map:, dtype): the one map spec
    MCA_STATISTICS,
)
from ..physics import ELEMENT_SYMBOLS, MAP_KEYS, MicroprobeSimulator

logger = logging.getLogger("xfct_bluesky.ioc")  # also when run as __main__

DEFAULT_PREFIX = "XFCT:"
#: Pixels a map may have: the length of every map waveform (400 x 400; the paper's maps are 230 x 230).
MAX_MAP_PIXELS = 400 * 400
#: Seconds per motor-record update while moving.
MOTOR_TICK = 0.02
#: Seconds the shutter blades take, in real-time mode.
SHUTTER_TIME = 0.01
#: Characters of the long-string (char waveform) PVs: paths and messages.
LONG_STRING = 4096
#: Path of the spectra inside the HDF5 files.
HDF5_DATASET = "/entry/data/spectra"
#: ROIs of the mca record: one per element, in this order.
N_ROIS = len(ELEMENT_SYMBOLS)

assert set(MAP_PVS) == set(MAP_KEYS) | set(MCA_STATISTICS) | set(ELEMENT_SYMBOLS)


class IOCRoot(Protocol):
    """What the PV groups use of the IOC they sit in (:class:`~.server.MicroprobeIOC`): the groups need
    only this, so they do not import the server that assembles them."""

    simulator: MicroprobeSimulator
    options: dict[str, Any]
    scanner: Any
    sim_control: Any

    @property
    def simulator_lock(self) -> asyncio.Lock: ...

    def probe_geometry(self) -> tuple[float, tuple[float, float], float]: ...

    def beam_on(self) -> bool: ...

    async def reset_simulator(self, seed: int) -> None: ...


def long_string(name: str, value: str = "", **kwargs) -> pvproperty:
    """A char-waveform string PV (DBR_STRING stops at 40 characters; paths are longer)."""
    return pvproperty(name=name, value=value, dtype=ChannelType.CHAR, max_length=LONG_STRING,
                      string_encoding="utf-8", **kwargs)


def to_wire(values, dtype: str) -> np.ndarray:
    """A map or spectrum as the flat array its waveform carries (uint32 as int32 bit patterns)."""
    arr = np.asarray(values)
    if np.dtype(dtype).kind == "u":
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint32).max):
            raise ValueError(f"counts in [{arr.min()}, {arr.max()}] do not fit uint32")
        return arr.astype("<u4").ravel().view("<i4")
    return arr.astype(dtype).ravel()


def ioc_root(group: PVGroup) -> IOCRoot:
    """The IOC a PV group sits in (the group at the top of its parents)."""
    while group.parent is not None:
        group = group.parent
    return group  # type: ignore[return-value]


async def in_thread(func, *args, **kwargs):
    """Run blocking work (the simulator, h5py) off the event loop, so the IOC keeps answering."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))
