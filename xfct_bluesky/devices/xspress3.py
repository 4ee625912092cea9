"""An Xspress3 through areaDetector, in NSLS-II's record layout: the second fluorescence-detector option.

The layout is that of NSLS-II's ``nslsii/areadetector/xspress3.py`` (the "new IOC" classes): under the
detector's prefix (SRX: ``XF:05IDD-ES{Xsp:1}:``) the driver ``det1:`` (ophyd's own
``Xspress3DetectorCam``, of ``ophyd.areadetector.Xspress3Detector``) and, per channel ``n``, the spectrum
``MCA<n>:ArrayData``, the running sum ``MCASUM<n>:ArrayData``, the ROIs ``MCA<n>ROI:<i>:`` (``Name``,
``MinX``, ``SizeX`` in 10 eV bins, ``Use``, ``Total_RBV``) and the scalers ``C<n>SCA:<k>:Value_RBV``
(0 clock ticks, 3 all events, 4 all good events, 9 the dead-time correction factor, 10 the dead time in
percent). :func:`xspress3_class` builds the class for a number of channels; ``trigger()`` acquires one
frame of ``cam.acquire_time`` seconds (``det1:Acquire`` = 1, put completion) and ``read()`` gives each
channel's spectrum, ROI totals and dead-time factor. The beamline configuration names it
``fluorescence: {xspress3: "XF:05IDD-ES{Xsp:1}:", channels: 4}``.
"""

from __future__ import annotations

import functools

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd import DynamicDeviceComponent as DDC
from ophyd.areadetector import EpicsSignalWithRBV, Xspress3Detector
from ophyd.areadetector.cam import Xspress3DetectorCam

from ..physics.specimen import ELEMENT_SYMBOLS
from ..validate import integer, positive

__all__ = ["MAX_CHANNELS", "SCA_FIELDS", "Xspress3", "xspress3_class"]

#: Channels an Xspress3 system may have (NSLS-II's ``build_detector_class``: 1-16).
MAX_CHANNELS = 16
#: The scalers read per channel: attribute -> SCA index (NSLS-II's ``Sca``).
SCA_FIELDS = {"clock_ticks": 0, "all_event": 3, "all_good": 4, "dt_factor": 9, "dt_percent": 10}


class McaRoi(Device):
    """One ROI of a channel (``MCA<n>ROI:<i>:``): name, start and width in bins, use, total."""

    roi_name = Cpt(EpicsSignalRO, "Name", string=True, kind="config")
    min_x = Cpt(EpicsSignal, "MinX", kind="config")
    size_x = Cpt(EpicsSignal, "SizeX", kind="config")
    use = Cpt(EpicsSignalWithRBV, "Use", kind="omitted")
    total_rbv = Cpt(EpicsSignalRO, "Total_RBV", kind="normal")


class Sca(Device):
    """A channel's scalers (``C<n>SCA:``) the map needs: events, good events, the dead-time factor."""

    clock_ticks = Cpt(EpicsSignalRO, "0:Value_RBV", kind="omitted")
    all_event = Cpt(EpicsSignalRO, "3:Value_RBV", kind="normal")
    all_good = Cpt(EpicsSignalRO, "4:Value_RBV", kind="normal")
    dt_factor = Cpt(EpicsSignalRO, "9:Value_RBV", kind="normal")
    dt_percent = Cpt(EpicsSignalRO, "10:Value_RBV", kind="omitted")


class Mca(Device):
    """A channel's spectrum of the last frame (an NDStdArrays-like ``ArrayData``)."""

    array_data = Cpt(EpicsSignalRO, "ArrayData", kind="normal")


@functools.lru_cache(maxsize=32)
def channel_class(n: int) -> type[Device]:
    """The class of channel ``n``: ``mca``, ``mca_sum``, ``sca`` and one ROI per element of the maps."""
    rois = DDC({f"mcaroi{i:02d}": (McaRoi, f"MCA{n}ROI:{i}:", {"kind": "normal"})
                for i in range(1, len(ELEMENT_SYMBOLS) + 1)}, kind="normal")
    return type(f"Xspress3Channel{n}", (Device,), {
        "__doc__": f"Channel {n} of an Xspress3 (NSLS-II layout).", "channel_num": n,
        "mca": Cpt(Mca, f"MCA{n}:", kind="normal"), "mca_sum": Cpt(Mca, f"MCASUM{n}:", kind="omitted"),
        "sca": Cpt(Sca, f"C{n}SCA:", kind="normal"), "mcarois": rois})


class Xspress3(Xspress3Detector):
    """ophyd's ``Xspress3Detector`` (its driver ``det1:``) with NSLS-II's channels; one frame per trigger."""

    _default_read_attrs = None  # DetectorBase reads nothing by default; here the components' kinds decide
    _default_configuration_attrs = None
    cam = Cpt(Xspress3DetectorCam, "det1:", kind="omitted")  # ophyd's driver class; its PVs connect lazily
    acquire = Cpt(EpicsSignal, "det1:Acquire", put_complete=True, kind="omitted")
    acquire_time = Cpt(EpicsSignalWithRBV, "det1:AcquireTime", kind="config")

    def trigger(self):
        positive("acquire_time", self.cam.acquire_time.get(), fix="Set cam.acquire_time in seconds, e.g. 0.1.",
                 unit=" s")
        return self.acquire.set(1, timeout=max(60.0, 10 * float(self.cam.acquire_time.get())))


@functools.lru_cache(maxsize=32)
def xspress3_class(channels: int) -> type[Xspress3]:
    """:class:`Xspress3` with ``channels.channel_1`` .. for ``channels`` channels (1..16)."""
    channels = integer("channels", channels, low=1, high=MAX_CHANNELS, fix="Give the Xspress3's channels, e.g. 4.")
    defn = {f"channel_{n}": (channel_class(n), "", {"kind": "normal"}) for n in range(1, channels + 1)}
    return type(f"Xspress3_{channels}channels", (Xspress3,), {"channels": DDC(defn, kind="normal"),
                                                              "num_channels": channels})
