"""EPICS signals of the microprobe's devices: maps, spectra and counts as the IOC sends them."""

from __future__ import annotations

import logging

import numpy as np
from ophyd import EpicsSignalRO

logger = logging.getLogger(__name__)

#: Seconds to wait for a command whose put completes quickly (shutter, file open/close).
COMMAND_TIMEOUT = 30.0


def _from_wire(raw, dtype: np.dtype) -> np.ndarray:
    """Counts travel as DBR_LONG bit patterns of uint32, floats as DBR_FLOAT; undo that."""
    arr = np.asarray(raw)
    if dtype.kind == "u":
        return arr.astype("<i4").view(dtype)
    return arr.astype(dtype)


class MapSignal(EpicsSignalRO):
    """One map: a flattened (ny * nx) waveform, read back as a (ny, nx) array of a fixed dtype.

    The shape is the one of the last acquisition (the parent's
    ``acquired_shape``), else the configured one; ``describe()`` gives the
    configured shape, the dtype as ``dtype_numpy``, as the simulated
    ``ArraySignal`` does. Read with a CA get (not a monitor), so a read after
    the acquisition completes sees the new map.
    """

    def __init__(self, read_pv, *, dtype, **kwargs):
        kwargs.setdefault("auto_monitor", False)
        super().__init__(read_pv, **kwargs)
        self._np_dtype = np.dtype(dtype)

    @property
    def np_dtype(self) -> np.dtype:
        return self._np_dtype

    def get(self, **kwargs):
        flat = _from_wire(super().get(**kwargs), self._np_dtype).ravel()
        if flat.size == 0:
            return np.zeros((0, 0), dtype=self._np_dtype)
        for shape in (getattr(self.parent, "acquired_shape", None), self.parent.expected_shape()):
            if shape is not None and int(np.prod(shape)) == flat.size:
                return flat.reshape(shape)
        raise ValueError(f"{self.name}: the waveform {self.pvname} has {flat.size} values, which is no "
                         f"{self.parent.expected_shape()} map; acquire a map with the current configuration")

    def describe(self):
        return {self.name: {"source": f"PV:{self.pvname}", "dtype": "array",
                            "shape": list(self.parent.expected_shape()), "dtype_numpy": self._np_dtype.str}}


class SpectrumSignal(EpicsSignalRO):
    """An unsigned-count waveform (the mca record's VAL), read as ``<u4`` of the parent's ``num_channels``."""

    def __init__(self, read_pv, *, dtype="<u4", **kwargs):
        kwargs.setdefault("auto_monitor", False)
        super().__init__(read_pv, **kwargs)
        self._np_dtype = np.dtype(dtype)

    def get(self, **kwargs):
        return _from_wire(super().get(**kwargs), self._np_dtype)

    def describe(self):
        n = int(self.parent.num_channels.get())
        return {self.name: {"source": f"PV:{self.pvname}", "dtype": "array", "shape": [n],
                            "dtype_numpy": self._np_dtype.str}}


class CountSignalRO(EpicsSignalRO):
    """A count served as DBR_DOUBLE (exact up to 2**53, as mca ROI sums are): read as int, described as integer."""

    def get(self, **kwargs):
        value = super().get(**kwargs)
        return round(float(value))

    def describe(self):
        desc = super().describe()
        desc[self.name]["dtype"] = "integer"
        desc[self.name].pop("dtype_numpy", None)
        return desc
