"""An Xspress3 in the beamline IOC, NSLS-II's areaDetector layout (:mod:`xfct_bluesky.devices.xspress3`).

Served under the detector's prefix: every PV of ophyd's ``Xspress3DetectorCam`` (``det1:``, with its
``_RBV``), and per channel ``MCA<n>:ArrayData``, ``MCASUM<n>:ArrayData``, ``MCA<n>ROI:<i>:`` (``Name``,
``MinX``, ``SizeX``, ``Use``/``Use_RBV``, ``Total_RBV``; one ROI per element of the maps, set at start from
the simulator's windows, in bins of the 10 eV channels) and ``C<n>SCA:<k>:Value_RBV`` (k = 0..10, as
NSLS-II's ``Sca``). ``det1:Acquire`` = 1 acquires one frame of ``det1:AcquireTime`` s where the stages
stand (the simulator's point; its spectrum shared among the channels by a multinomial draw, equal solid
angles) and completes the put when the frame is published; ``MCASUM`` accumulates the frames since
``det1:ERASE``. The clock of ``SCA:0`` ticks at 80 MHz.
"""

from __future__ import annotations

import logging

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from ._common import ioc_root, to_wire
from ._ophyd_layout import _group, ophyd_suffixes

logger = logging.getLogger("xfct_bluesky.ioc")

__all__ = ["CLOCK_HZ", "xspress3_group"]

#: The Xspress3's time-frame clock (SCA 0 counts its ticks).
CLOCK_HZ = 80e6
N_SCA = 11


def _roi_group() -> type[PVGroup]:
    return type("McaRoi", (PVGroup,), {
        "roi_name": pvproperty(name="Name", value="", dtype=ChannelType.STRING),
        "min_x": pvproperty(name="MinX", value=0),
        "size_x": pvproperty(name="SizeX", value=0),
        "use": pvproperty(name="Use", value=1),
        "use_rbv": pvproperty(name="Use_RBV", value=1, read_only=True),
        "total": pvproperty(name="Total_RBV", value=0.0, read_only=True),
    })


def _channel_group(n: int, n_rois: int, n_bins: int) -> type[PVGroup]:
    ns: dict = {
        "spectrum": pvproperty(name=f"MCA{n}:ArrayData", value=np.zeros(n_bins, "<i4"), dtype=ChannelType.LONG,
                               max_length=n_bins, read_only=True),
        "spectrum_sum": pvproperty(name=f"MCASUM{n}:ArrayData", value=np.zeros(n_bins, "<i4"),
                                   dtype=ChannelType.LONG, max_length=n_bins, read_only=True),
    }
    for k in range(N_SCA):
        ns[f"sca{k}"] = pvproperty(name=f"C{n}SCA:{k}:Value_RBV", value=0.0, read_only=True)
    roi = _roi_group()
    for i in range(1, n_rois + 1):
        ns[f"roi{i}"] = SubGroup(roi, prefix=f"MCA{n}ROI:{i}:")
    return type(f"Xspress3Channel{n}", (PVGroup,), ns)


def xspress3_group(channels: int, n_rois: int, n_bins: int = 4096) -> type[PVGroup]:
    """The Xspress3's PVs for ``channels`` channels (module docstring)."""
    from ophyd.areadetector.cam import Xspress3DetectorCam

    class _Cam(PVGroup):
        acquire = pvproperty(name="Acquire", value=0)
        acquire_rbv = pvproperty(name="Acquire_RBV", value=0, read_only=True)
        acquire_time = pvproperty(name="AcquireTime", value=1.0, precision=4, units="s")
        acquire_time_rbv = pvproperty(name="AcquireTime_RBV", value=1.0, precision=4, read_only=True)
        erase = pvproperty(name="ERASE", value=0)
        detector_state = pvproperty(name="DetectorState_RBV", value="Idle", dtype=ChannelType.ENUM,
                                    enum_strings=("Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting",
                                                  "Error", "Waiting"), read_only=True)

        @acquire_time.putter
        async def acquire_time(self, instance, value):
            await self.acquire_time_rbv.write(value)
            return value

        @erase.startup
        async def erase(self, instance, async_lib):
            await set_rois(self.parent, ioc_root(self).simulator.vortex)

        @erase.putter
        async def erase(self, instance, value):
            if value:
                for ch in self.parent.channel_groups():
                    await ch.spectrum_sum.write(np.zeros(ch.spectrum_sum.max_length, "<i4"))
                    ch.accumulated = None
            return 0

        @acquire.putter
        async def acquire(self, instance, value):
            if not value:
                return 0
            await self.acquire_rbv.write(1)
            await self.detector_state.write("Acquire")
            try:
                await ioc_root(self).acquire_xspress3(self.parent, float(self.acquire_time.value))
            except Exception:  # reported in the log; the put itself completes
                logger.exception("%s: acquisition failed", instance.pvname)
            finally:
                await self.detector_state.write("Idle")
                await self.acquire_rbv.write(0)
            return 0

    served = {p.pvspec.name for p in vars(_Cam).values() if isinstance(p, pvproperty)}
    cam = type("Xspress3Cam", (_Cam, _group("Xspress3CamFields", [s for s in ophyd_suffixes(Xspress3DetectorCam)
                                                                  if s[0] not in served], {})), {})

    class _System(PVGroup):
        def channel_groups(self):
            return [getattr(self, f"channel{n}") for n in range(1, self.num_channels + 1)]

        @property
        def n_bins(self) -> int:
            return n_bins

    ns = {"cam": SubGroup(cam, prefix="det1:"), "num_channels": channels}
    ns.update({f"channel{n}": SubGroup(_channel_group(n, n_rois, n_bins), prefix="") for n in range(1, channels + 1)})
    return type("Xspress3System", (_System,), ns)


async def set_rois(system, vortex) -> None:
    """Each channel's ROIs: one per element of the maps, from the simulator's windows (bins [lo, lo + size))."""
    for ch in system.channel_groups():
        for i, sym in enumerate(vortex.elements, start=1):
            lo, hi = vortex.roi_window(sym)
            roi = getattr(ch, f"roi{i}")
            await roi.roi_name.write(sym)
            await roi.min_x.write(int(lo))
            await roi.size_x.write(int(hi - lo))


async def publish_frame(system, spectrum, live: float, real: float, icr: float, rng) -> None:
    """One frame: ``spectrum`` shared among the channels; their ROIs, scalers and running sums."""
    channels = system.channel_groups()
    n = len(channels)
    spectrum = np.asarray(spectrum).astype(np.int64)
    shares = np.stack([rng.multinomial(int(c), [1 / n] * n) for c in spectrum], axis=1)  # (n, bins)
    bins = system.n_bins
    for k, ch in enumerate(channels):
        frame = np.zeros(bins, np.int64)
        frame[:min(bins, shares.shape[1])] = shares[k, :bins]
        await ch.spectrum.write(to_wire(frame, "<u4"))
        acc = getattr(ch, "accumulated", None)
        ch.accumulated = frame if acc is None else acc + frame
        await ch.spectrum_sum.write(to_wire(ch.accumulated, "<u4"))
        for i in range(1, 64):
            roi = getattr(ch, f"roi{i}", None)
            if roi is None:
                break
            lo, size = int(roi.min_x.value), int(roi.size_x.value)
            await roi.total.write(float(frame[lo:lo + size].sum()))
        good = float(frame.sum())
        events = round(icr * real / n)
        factor = real / live if live > 0 else 1.0
        values = {0: round(CLOCK_HZ * real), 3: events, 4: good, 9: factor, 10: 100.0 * (1 - live / real)}
        for idx, value in values.items():
            await getattr(ch, f"sca{idx}").write(float(value))
