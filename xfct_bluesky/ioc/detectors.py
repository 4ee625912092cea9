"""The shutter, the beam, the Vortex (XIA mca/dxp records) and the segmented DPC detector of the microprobe IOC."""

from __future__ import annotations

import asyncio
import logging
import re

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from ..physics import ELEMENT_SYMBOLS
from ._common import N_ROIS, SHUTTER_TIME, in_thread, ioc_root, to_wire

logger = logging.getLogger("xfct_bluesky.ioc")


# ----------------------------------------------------------- shutter, beam ---
class ShutterGroup(PVGroup):
    """Fast shutter: put ``Cmd`` (completes once ``State_RBV`` follows)."""

    command = pvproperty(name="Cmd", value="open", enum_strings=("close", "open"), dtype=ChannelType.ENUM)
    state = pvproperty(name="State_RBV", value="open", enum_strings=("closed", "open"), dtype=ChannelType.ENUM,
                       read_only=True)

    @property
    def is_open(self) -> bool:
        return str(self.state.value) == "open"

    @command.putter
    async def command(self, instance, value):
        if ioc_root(self).options.get("realtime"):
            await asyncio.sleep(SHUTTER_TIME)
        await self.state.write("open" if str(value) == "open" else "closed")
        return value


class BeamGroup(PVGroup):
    """Beam parameters the plans record (energy, flux, spot)."""

    energy = pvproperty(name="Energy_RBV", value=0.0, units="keV", precision=3, read_only=True)
    flux = pvproperty(name="Flux_RBV", value=0.0, units="ph/s", read_only=True)
    spot_fwhm_h = pvproperty(name="SpotFWHMH_RBV", value=0.0, units="m", read_only=True)
    spot_fwhm_v = pvproperty(name="SpotFWHMV_RBV", value=0.0, units="m", read_only=True)

    async def show_probe(self, probe) -> None:
        await self.energy.write(float(probe.energy_kev))
        await self.flux.write(float(probe.flux))
        await self.spot_fwhm_h.write(float(probe.fwhm[0]))
        await self.spot_fwhm_v.write(float(probe.fwhm[1]))


# --------------------------------------------------------------- the Vortex ---
# (name, kind, value, enum strings): "rw" = X and X_RBV (ophyd's EpicsSignalWithRBV), "w" = X, "ro" = X only
_DXP_PARAMETERS: tuple[tuple[str, str, object, tuple[str, ...] | None], ...] = (
    ("PresetMode", "rw", "Real time", ("No preset", "Real time", "Live time", "Events", "Triggers")),
    ("LiveTimeOutput", "rw", "Live time", ("Live time", "Trigger live time")),
    ("ElapsedLiveTime", "w", 0.0, None),
    ("ElapsedRealTime", "w", 0.0, None),
    ("ElapsedTriggerLiveTime", "w", 0.0, None),
    ("TriggerPeakingTime", "rw", 0.1, None),
    ("TriggerThreshold", "rw", 1.0, None),
    ("TriggerGapTime", "rw", 0.0, None),
    ("TriggerOutput", "rw", "Enabled", ("Disabled", "Enabled")),
    ("MaxWidth", "rw", 1.0, None),
    ("PeakingTime", "rw", 2.0, None),
    ("EnergyThreshold", "rw", 0.5, None),
    ("GapTime", "rw", 0.15, None),
    ("BaselineCutPercent", "rw", 5.0, None),
    ("BaselineCutEnable", "rw", 1, None),
    ("BaselineFilterLength", "rw", 128, None),
    ("BaselineThreshold", "rw", 1.0, None),
    ("BaselineEnergyArray", "w", [0.0] * 1024, None),
    ("BaselineHistogram", "w", [0.0] * 1024, None),
    ("PreampGain", "rw", 2.0, None),
    ("DetectorPolarity", "rw", 1, None),
    ("ResetDelay", "rw", 10.0, None),
    ("DecayTime", "rw", 50.0, None),
    ("MaxEnergy", "rw", 20.48, None),
    ("ADCPercentRule", "rw", 5.0, None),
    ("Triggers", "ro", 0, None),
    ("Events", "ro", 0, None),
    ("Overflows", "ro", 0, None),
    ("Underflows", "ro", 0, None),
    ("InputCountRate", "ro", 0.0, None),
    ("OutputCountRate", "ro", 0.0, None),
    ("MCABinWidth_RBV", "ro", 0.01, None),
    ("CalibrationEnergy_RBV", "ro", 0.0, None),
    ("CurrentPixel", "w", 0, None),
    ("DynamicRange_RBV", "ro", 40.0, None),
    ("PresetEvents", "rw", 0, None),
    ("PresetTriggers", "rw", 0, None),
    ("TraceData", "w", [0] * 1024, None),
    ("TraceMode", "rw", "ADC", ("ADC", "ADC average", "Fast filter", "Slow filter")),
    ("TraceTimeArray", "w", [0.0] * 1024, None),
    ("TraceTime", "rw", 0.1, None),
)


def _dxp_group() -> type[PVGroup]:
    """The dxp parameters of ophyd's ``EpicsDXP`` (settings kept, not simulated: the Vortex model is fixed)."""

    def mirror(rbv_attr):
        async def put(group, instance, value):
            await getattr(group, rbv_attr).write(value)
            return value

        return put

    ns: dict[str, object] = {"__doc__": "XIA dxp parameters of the Vortex (one channel)."}
    for name, kind, value, enums in _DXP_PARAMETERS:
        attr = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
        kwargs: dict[str, object] = {"value": value}
        if enums is not None:
            kwargs.update(enum_strings=enums, dtype=ChannelType.ENUM)
        if isinstance(value, list):
            kwargs.update(max_length=len(value), max_subscription_backlog=10)
        prop = pvproperty(name=name, read_only=kind == "ro", **kwargs)
        if kind == "rw":
            ns[f"{attr}_rbv"] = pvproperty(name=f"{name}_RBV", read_only=True, **kwargs)
            prop = prop.putter(mirror(f"{attr}_rbv"))
        ns[attr] = prop
    return type("DXPGroup", (PVGroup,), ns)


DXPGroup = _dxp_group()


class _McaRecord(PVGroup):
    """The XIA mca record ``mca1`` of the Vortex (fields as PV names ``mca1.FIELD``) and mca.db's extras.

    A put to ``mca1EraseStart`` counts for PRTM seconds at the current beam
    position and completes when the spectrum, the times and the ROI sums
    (channels LO..HI inclusive, as the record sums them) are posted.
    """

    spectrum = pvproperty(name="mca1.VAL", value=np.zeros(2048, "<i4"), dtype=ChannelType.LONG,
                          max_length=2048, read_only=True, max_subscription_backlog=10)
    background = pvproperty(name="mca1.BG", value=np.zeros(2048, "<i4"), dtype=ChannelType.LONG,
                            max_length=2048, read_only=True, max_subscription_backlog=10)
    channels_used = pvproperty(name="mca1.NUSE", value=2048, read_only=True)
    channels_max = pvproperty(name="mca1.NMAX", value=2048, read_only=True)
    preset_real_time = pvproperty(name="mca1.PRTM", value=1.0, units="s", precision=3)
    preset_live_time = pvproperty(name="mca1.PLTM", value=0.0, units="s", precision=3)
    elapsed_real_time = pvproperty(name="mca1.ERTM", value=0.0, units="s", precision=3, read_only=True)
    elapsed_live_time = pvproperty(name="mca1.ELTM", value=0.0, units="s", precision=3, read_only=True)
    dead_time = pvproperty(name="mca1.DTIM", value=0.0, units="%", precision=2, read_only=True)
    mode = pvproperty(name="mca1.MODE", value="PHA", enum_strings=("PHA", "MCS", "List"), dtype=ChannelType.ENUM)
    stop_field = pvproperty(name="mca1.STOP", value=0)
    acquiring = pvproperty(name="mca1.ACQG", value=0, read_only=True)
    # mca.db
    erase_start = pvproperty(name="mca1EraseStart", value=0)
    start_cmd = pvproperty(name="mca1Start", value=0)
    stop_cmd = pvproperty(name="mca1Stop", value=0)
    erase_cmd = pvproperty(name="mca1Erase", value=0)
    check_acquiring = pvproperty(name="mca1CheckACQG", value=0)
    client_wait = pvproperty(name="mca1ClientWait", value=0)
    enable_wait = pvproperty(name="mca1EnableWait", value=0)
    read_cmd = pvproperty(name="mca1Read", value=0)
    set_client_wait = pvproperty(name="mca1SetClientWait", value=0)
    status_pv = pvproperty(name="mca1Status", value=0)
    when_acq_stops = pvproperty(name="mca1WhenAcqStops", value=0)
    why1 = pvproperty(name="mca1Why1", value=0)
    why2 = pvproperty(name="mca1Why2", value=0)
    why3 = pvproperty(name="mca1Why3", value=0)
    why4 = pvproperty(name="mca1Why4", value=0)

    dxp = SubGroup(DXPGroup, prefix="dxp1:")

    def roi(self, i: int, field: str):
        return getattr(self, f"roi{i}_{field}")

    async def configure(self, vortex) -> None:
        """ROI windows and labels of the Vortex model; channel count; dxp calibration."""
        for i, sym in enumerate(ELEMENT_SYMBOLS):
            lo, hi = vortex.roi_window(sym)
            await self.roi(i, "label").write(sym)
            await self.roi(i, "lo").write(int(lo))
            await self.roi(i, "hi").write(int(hi) - 1)  # inclusive
        await self.channels_used.write(int(vortex.n_channels))
        await self.dxp.mca_bin_width_rbv.write(float(vortex.channel_width))
        await self.dxp.max_energy.write(float(vortex.channel_width * vortex.n_channels))

    @erase_start.putter
    async def erase_start(self, instance, value):
        if value:
            root = ioc_root(self)
            try:
                await self.acquiring.write(1)
                await self._count(root)
            except Exception:  # reported in the log; the put itself must complete
                logger.exception("%s: acquisition failed", instance.pvname)
            finally:
                await self.acquiring.write(0)
        return 0

    async def _count(self, root) -> None:
        preset = float(self.preset_real_time.value)
        theta, map_center, defocus = root.probe_geometry()
        async with root.simulator_lock:
            res = await in_thread(root.simulator.point, preset, theta, map_center=map_center, defocus=defocus,
                                   beam_on=root.beam_on())
        if root.options.get("realtime"):
            await asyncio.sleep(preset)
        spectrum = np.asarray(res.spectra[0, 0])
        live = float(res.maps["live_time"][0, 0])
        await self.spectrum.write(to_wire(spectrum, "<u4"))
        await self.elapsed_real_time.write(preset)
        await self.elapsed_live_time.write(live)
        await self.dead_time.write(100.0 * (1 - live / preset))
        for i in range(N_ROIS):
            lo, hi = int(self.roi(i, "lo").value), int(self.roi(i, "hi").value)
            total = float(spectrum[max(lo, 0): hi + 1].sum()) if hi >= lo else 0.0
            await self.roi(i, "count").write(total)
            await self.roi(i, "net").write(total)


def _mca_group() -> type[PVGroup]:
    ns: dict[str, object] = {"__doc__": _McaRecord.__doc__}
    for i in range(N_ROIS):
        ns[f"roi{i}_count"] = pvproperty(name=f"mca1.R{i}", value=0.0, read_only=True)
        ns[f"roi{i}_net"] = pvproperty(name=f"mca1.R{i}N", value=0.0, read_only=True)
        ns[f"roi{i}_lo"] = pvproperty(name=f"mca1.R{i}LO", value=0)
        ns[f"roi{i}_hi"] = pvproperty(name=f"mca1.R{i}HI", value=0)
        ns[f"roi{i}_label"] = pvproperty(name=f"mca1.R{i}NM", value="", dtype=ChannelType.STRING)
        ns[f"roi{i}_bg"] = pvproperty(name=f"mca1.R{i}BG", value=0)
        ns[f"roi{i}_ip"] = pvproperty(name=f"mca1.R{i}IP", value=0)
        ns[f"roi{i}_preset"] = pvproperty(name=f"mca1.R{i}P", value=0.0)
    return type("McaGroup", (_McaRecord,), ns)


McaGroup = _mca_group()


# ------------------------------------------------------------- DPC detector ---
class DpcGroup(PVGroup):
    """Segmented transmission detector at one point: put ``Acquire`` and wait."""

    preset_time = pvproperty(name="PresetTime", value=0.1, units="s", precision=3)
    central_stop_ratio = pvproperty(name="CentralStopRatio_RBV", value=0.0, precision=3, read_only=True)
    acquire = pvproperty(name="Acquire", value=0)
    q1 = pvproperty(name="Q1", value=0.0, read_only=True)
    q2 = pvproperty(name="Q2", value=0.0, read_only=True)
    q3 = pvproperty(name="Q3", value=0.0, read_only=True)
    q4 = pvproperty(name="Q4", value=0.0, read_only=True)
    total = pvproperty(name="Total", value=0.0, read_only=True)
    dpc_x = pvproperty(name="DPCX", value=0.0, precision=5, read_only=True)
    dpc_y = pvproperty(name="DPCY", value=0.0, precision=5, read_only=True)
    dpc_diag = pvproperty(name="DPCDiag", value=0.0, precision=5, read_only=True)

    @acquire.putter
    async def acquire(self, instance, value):
        if value:
            try:
                await self._count(ioc_root(self))
            except Exception:  # reported in the log; the put itself must complete
                logger.exception("%s: acquisition failed", instance.pvname)
        return 0

    async def _count(self, root) -> None:
        preset = float(self.preset_time.value)
        theta, map_center, defocus = root.probe_geometry()
        async with root.simulator_lock:
            res = await in_thread(root.simulator.point, preset, theta, map_center=map_center, defocus=defocus,
                                   beam_on=root.beam_on(), spectra=False)
        if root.options.get("realtime"):
            await asyncio.sleep(preset)
        quads = [int(res.maps[k][0, 0]) for k in ("q1", "q2", "q3", "q4")]
        for prop, count in zip((self.q1, self.q2, self.q3, self.q4), quads, strict=True):
            await prop.write(float(count))
        await self.total.write(float(sum(quads)))
        for key in ("dpc_x", "dpc_y", "dpc_diag"):
            await getattr(self, key).write(float(res.maps[key][0, 0]))
