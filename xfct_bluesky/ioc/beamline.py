"""An IOC that serves a beamline configuration's records, with their real layouts, backed by the simulator.

:func:`beamline_ioc` builds, from a :class:`~xfct_bluesky.beamline.BeamlineConfig`, a caproto IOC whose PV
names are the configuration's (APS 2-ID-E: ``2xfm:m53.VAL``, ``2xfm:scaler3.CNT``,
``dxpXMAP2xfm3:mca1.ELTM`` ...) and whose records have the fields of their EPICS record types:

=================  ==================================================================================
role kind          served as
=================  ==================================================================================
``motor``          a synApps motor record (:class:`~.motor.MotorRecord`, every field ophyd's
                   ``EpicsMotor`` reads); EGU, limits and speed from :data:`MOTOR_UNITS`
``scaler``         a scaler record: ``.CNT``, ``.CONT``, ``.TP``, ``.FREQ`` ... and 32 channels
                   ``.S<n>``, ``.NM<n>``, ``.PR<n>``, ``.G<n>``, the fields ophyd's ``ScalerCH`` reads.
                   Channel 1 is the clock, 2 I0, 3-6 the DPC segments A-D.
``counter``        a PV holding the role's rate (counts / s) after each count of the scaler, as
                   2-ID-E's ``scaler3_cts`` records do; its ``fly`` array PV beside it
``xmap``           an XIA xMAP system: every PV ophyd's ``EpicsDXPMultiElementSystem`` reads, one mca
                   record per element (``mca<n>``: ophyd's ``EpicsMCARecord`` fields plus ``.NUSE``
                   and the energy calibration ``.CALO``, ``.CALS``, ``.CALQ``) and its ``dxp<n>:``
                   input and output count rates; ``EraseStart`` acquires ``PresetReal`` seconds
``signal``         one PV (the ring current: 100 mA)
``xspress3``       an Xspress3 in NSLS-II's areaDetector layout (``det1:``, ``MCA<n>:ArrayData``,
                   ``MCA<n>ROI:<i>:``, ``C<n>SCA:<k>:Value_RBV``): :mod:`.xspress3`
fly arrays         the counters' ``fly`` PVs (``2xfm:mcs:mca2.VAL``) as the mca records of an SIS3820 MCS
                   (``2xfm:mcs:``), the xMAP's MCA-mapping mode and buffers, a trigger source and
                   fault injection: :mod:`.beamline_fly`
=================  ==================================================================================

The PVs a class reads are taken from ophyd's classes themselves (:func:`ophyd_suffixes`), so those
classes connect; only the fields that carry the measurement behave (a count, an acquisition), the
others hold what was last written. One count simulates one stationary point
(:meth:`~xfct_bluesky.physics.MicroprobeSimulator.point`) where the motors stand: theta the rotation,
the beam at (zone plate - sample stage) in y and x, defocus the zone plate's z from where it stood
at start. The simulator's spectrum is shared among an xMAP's elements by a multinomial draw
(equal solid angles), so the elements' sum has the simulator's statistics.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from ._common import in_thread, ioc_root, to_wire
from ._ophyd_layout import _group, ophyd_suffixes
from .beamline_fly import FlyBeamline, XmapMapping, fly_groups, mapping_properties
from .motor import MotorRecord

logger = logging.getLogger("xfct_bluesky.ioc")

__all__ = ["MOTOR_UNITS", "beamline_ioc", "ophyd_suffixes"]

#: Motor role -> (EGU, limits, velocity, metres per EGU) served: 2-ID-E's stages are in mm, its rotation in
#: degrees (its files' .EGU); the simulated microprobe's zone plate is in um.
MOTOR_UNITS = {
    "rotation": ("degrees", (-360.0, 360.0), 30.0, None),
    "zone_plate_x": ("mm", (-200.0, 200.0), 1.0, 1e-3),
    "zone_plate_y": ("mm", (-200.0, 200.0), 1.0, 1e-3),
    "zone_plate_z": ("mm", (-500.0, 500.0), 1.0, 1e-3),
    "sample_x": ("mm", (-50.0, 50.0), 1.0, 1e-3),
    "sample_y": ("mm", (-50.0, 50.0), 1.0, 1e-3),
}
#: Scaler channel of each counter role (1 is the clock).
SCALER_CHANNELS = {"i0": 2, "dpc_a": 3, "dpc_b": 4, "dpc_c": 5, "dpc_d": 6}
_QUADRANTS = {"dpc_a": "q1", "dpc_b": "q2", "dpc_c": "q3", "dpc_d": "q4"}
N_CHANNELS = 2048


# -------------------------------------------------------------- the scaler ---
class _ScalerBase(PVGroup):
    """A scaler record: ``.CNT`` = 1 counts for ``.TP`` s, then the channels hold the counts, ``.CNT`` = 0."""

    count = pvproperty(name=".CNT", value=0)
    preset_time = pvproperty(name=".TP", value=1.0, precision=3, units="s")
    freq = pvproperty(name=".FREQ", value=1e7)
    elapsed = pvproperty(name=".T", value=0.0, read_only=True)
    count_mode = pvproperty(name=".CONT", value="OneShot", enum_strings=("OneShot", "AutoCount"),
                            dtype=ChannelType.ENUM)

    @count.startup
    async def count(self, instance, async_lib):
        """The channels' names (``.NM<n>``), as a beamline configures them: clock, I0, the DPC segments."""
        await self.nm1.write("clock")
        for role, channel in SCALER_CHANNELS.items():
            await getattr(self, f"nm{channel}").write(role)
        await self.g1.write("Y")  # the clock gates the count (preset time)

    @count.putter
    async def count(self, instance, value):
        if value:
            try:
                await ioc_root(self).count_scaler(self)
            except Exception:  # reported in the log; the put itself completes
                logger.exception("%s: count failed", instance.pvname)
        return 0


def _scaler_group() -> type[PVGroup]:
    from ophyd.scaler import ScalerCH

    ns: dict = {}
    for n in range(1, 33):
        ns[f"s{n}"] = pvproperty(name=f".S{n}", value=0.0, read_only=True)
        ns[f"nm{n}"] = pvproperty(name=f".NM{n}", value="", dtype=ChannelType.STRING)
        ns[f"pr{n}"] = pvproperty(name=f".PR{n}", value=0.0)
        ns[f"g{n}"] = pvproperty(name=f".G{n}", value="N", enum_strings=("N", "Y"), dtype=ChannelType.ENUM)
    base = _group("ScalerFields", [s for s in ophyd_suffixes(ScalerCH)
                                   if s[0] not in {p.pvspec.name for p in vars(_ScalerBase).values()
                                                   if isinstance(p, pvproperty)}], ns)
    return type("ScalerRecord", (_ScalerBase, base), {"__doc__": _ScalerBase.__doc__})


# --------------------------------------------------------------- the xMAP ---
def _xmap_group(elements: int) -> type[PVGroup]:
    from ophyd.mca import (
        EpicsDXP,
        EpicsDXPMapping,
        EpicsDXPMultiElementSystem,
        EpicsMCARecord,
    )

    mca_fields = [(suffix, string or suffix.endswith("NM")) for suffix, string in ophyd_suffixes(EpicsMCARecord)]
    mca_fields += [(".NUSE", False), (".CALO", False), (".CALS", False), (".CALQ", False)]
    mca_ns = {"spectrum": pvproperty(name=".VAL", value=np.zeros(N_CHANNELS, "<i4"), dtype=ChannelType.LONG,
                                     max_length=N_CHANNELS, read_only=True)}
    mca_cls = _group("McaRecord", mca_fields, mca_ns)
    dxp_cls = _group("DxpChannel", ophyd_suffixes(EpicsDXP), {})

    class _System(PVGroup):
        erase_start = pvproperty(name="EraseStart", value=0)
        stop_all = pvproperty(name="StopAll", value=0)
        preset_real = pvproperty(name="PresetReal", value=1.0, precision=3, units="s")
        acquiring = pvproperty(name="Acquiring", value=0, read_only=True)
        elapsed_real = pvproperty(name="ElapsedReal", value=0.0, read_only=True)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.mapping_state = XmapMapping(self)

        @erase_start.startup
        async def erase_start(self, instance, async_lib):
            """Each element's ROIs (``.R<i>NM``/``LO``/``HI``, channels LO..HI inclusive) and calibration, as a
            beamline sets them: one ROI per element of the simulator's windows."""
            vortex = ioc_root(self).simulator.vortex
            cal = vortex.energy_calibration
            for k in range(1, self.elements + 1):
                mca = getattr(self, f"mca{k}")
                for i, sym in enumerate(vortex.elements):
                    lo, hi = vortex.roi_window(sym)
                    await _by_name(mca, f".R{i}NM").write(sym)
                    await _by_name(mca, f".R{i}LO").write(float(lo))
                    await _by_name(mca, f".R{i}HI").write(float(hi - 1))
                for suffix, value in ((".CALO", cal["offset"]), (".CALS", cal["gain"]),
                                      (".CALQ", cal.get("quadratic", 0.0)), (".NUSE", vortex.n_channels)):
                    await _by_name(mca, suffix).write(float(value))

        @erase_start.putter
        async def erase_start(self, instance, value):
            if value and XmapMapping.mapping(self):  # mapping mode: the run starts, the trigger steps it
                await self.mapping_state.start()
            elif value:
                try:
                    await self.acquiring.write(1)
                    await ioc_root(self).acquire_xmap(self)
                except Exception:  # reported in the log; the put itself completes
                    logger.exception("%s: acquisition failed", instance.pvname)
                finally:
                    await self.acquiring.write(0)
            return 0

        @stop_all.putter
        async def stop_all(self, instance, value):
            if value and XmapMapping.mapping(self):
                await self.mapping_state.stop()
            return 0

    ns = {f"mca{n}": SubGroup(mca_cls, prefix=f"mca{n}") for n in range(1, elements + 1)}
    ns.update({f"dxp{n}": SubGroup(dxp_cls, prefix=f"dxp{n}:") for n in range(1, elements + 1)})
    mapping = mapping_properties()  # the mapping mode's PVs (dxpXMAP.template) behave: .beamline_fly
    served = {"EraseStart", "StopAll", "PresetReal", "Acquiring", "ElapsedReal",
              *(p.pvspec.name for p in mapping.values() if isinstance(p, pvproperty))}
    system_fields = [s for s in ophyd_suffixes(EpicsDXPMultiElementSystem) + ophyd_suffixes(EpicsDXPMapping)
                     if s[0] not in served]
    ns.update(mapping)
    ns["elements"] = elements
    return type("XmapSystem", (_System, _group("XmapFields", system_fields, {})), ns)


# ----------------------------------------------------------------- the IOC ---
class _BeamlineBase(FlyBeamline, PVGroup):
    """The behaviour the record groups call: counts of the simulator where the motors stand."""

    def __init__(self, *args, config, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        from ..physics import MicroprobeSimulator, mouse_egg

        self.config = config
        self.simulator = MicroprobeSimulator(mouse_egg(seed=seed), seed=seed)
        self._lock: asyncio.Lock | None = None
        self._focus: float | None = None
        self._rng = np.random.default_rng(seed + 1)

    def _position(self, role: str, override: dict | None = None) -> float:
        group = getattr(self, role, None)
        if group is None:
            return 0.0
        scale = MOTOR_UNITS[role][3]
        value = group.readback if not override or role not in override else float(override[role])
        return value * (scale if scale is not None else 1.0)

    def probe_geometry(self, override: dict | None = None) -> tuple[float, tuple[float, float], float]:
        """(theta deg, beam (y, x) m on the sample, defocus m) from the motor readbacks (or ``override``:
        role -> position in the motor's units, for a pixel of a fly scan)."""
        if self._focus is None:
            self._focus = self._position("zone_plate_z")
        pos = lambda role: self._position(role, override)
        beam = (pos("zone_plate_y") - pos("sample_y"), pos("zone_plate_x") - pos("sample_x"))
        return pos("rotation"), beam, pos("zone_plate_z") - self._focus

    async def _point(self, dwell: float, spectra: bool, override: dict | None = None):
        if self._lock is None:
            self._lock = asyncio.Lock()
        theta, beam, defocus = self.probe_geometry(override)
        async with self._lock:
            return await in_thread(self.simulator.point, dwell, theta, map_center=beam, defocus=defocus,
                                   spectra=spectra)

    async def count_scaler(self, scaler) -> None:
        preset = float(scaler.preset_time.value)
        res = await self._point(preset, spectra=False)
        counts = {"i0": float(res.maps["i0"][0, 0]),
                  **{role: float(res.maps[q][0, 0]) for role, q in _QUADRANTS.items()}}
        await scaler.s1.write(float(scaler.freq.value) * preset)
        for role, channel in SCALER_CHANNELS.items():
            await getattr(scaler, f"s{channel}").write(counts[role])
            counter = getattr(self, role, None)
            if isinstance(counter, PVGroup) or counter is None:
                continue
            await counter.write(counts[role] / preset)  # a rate, as 2-ID-E's scaler3_cts records
        await scaler.elapsed.write(preset)

    async def acquire_xmap(self, system) -> None:
        preset = float(system.preset_real.value)
        res = await self._point(preset, spectra=True)
        spectrum = np.asarray(res.spectra[0, 0]).astype(np.int64)
        n = system.elements
        shares = np.stack([self._rng.multinomial(int(c), [1 / n] * n) for c in spectrum], axis=1)  # (n, channels)
        live = float(res.maps["live_time"][0, 0])
        cal = self.simulator.vortex.energy_calibration
        for k in range(n):
            mca = getattr(system, f"mca{k + 1}")
            await mca.spectrum.write(to_wire(shares[k], "<u4"))
            for suffix, value in ((".ELTM", live), (".ERTM", preset), (".PRTM", preset),
                                  (".NUSE", float(spectrum.size)), (".CALO", float(cal["offset"])),
                                  (".CALS", float(cal["gain"])), (".CALQ", float(cal.get("quadratic", 0.0)))):
                await _by_name(mca, suffix).write(value)
            dxp = getattr(system, f"dxp{k + 1}")
            ocr = float(shares[k].sum()) / preset
            await _by_name(dxp, "InputCountRate").write(ocr * preset / live if live > 0 else ocr)
            await _by_name(dxp, "OutputCountRate").write(ocr)
        await system.elapsed_real.write(preset)


    async def acquire_xspress3(self, system, preset: float) -> None:
        """One Xspress3 frame of ``preset`` s where the stages stand (:mod:`.xspress3`)."""
        from ..devices._sim_common import mca_statistics
        from .xspress3 import publish_frame

        res = await self._point(preset, spectra=True)
        stats = mca_statistics(self.simulator, res)
        await publish_frame(system, res.spectra[0, 0], float(res.maps["live_time"][0, 0]), preset,
                            float(stats["icr"][0, 0]), self._rng)


def _by_name(group: PVGroup, suffix: str):
    return group.pvdb[group.prefix + suffix]


def beamline_ioc(config, *, seed: int = 0) -> PVGroup:
    """The IOC serving ``config``'s records (see the module docstring); run it with caproto's ``run``.

    Raises
    ------
    ValueError
        A role whose kind this IOC does not serve (``mca``: the simulated microprobe's own layout,
        served by ``xfct-bluesky ioc``).
    """
    ns: dict = fly_groups(config)  # the MCS, the trigger source, the fault injection (.beamline_fly)
    for role, (kind, record, extras) in config.roles.items():
        if kind == "motor":
            egu, limits, velocity, _ = MOTOR_UNITS[role]
            ns[role] = SubGroup(MotorRecord, prefix=record, egu=egu, limits=limits, velocity=velocity,
                                description=extras.get("source", role)[:40])
        elif kind == "scaler":
            ns[role] = SubGroup(_scaler_group(), prefix=record)
        elif kind == "xmap":
            ns[role] = SubGroup(_xmap_group(extras["elements"]), prefix=record)
        elif kind == "xspress3":
            from ..physics.specimen import ELEMENT_SYMBOLS
            from .xspress3 import xspress3_group

            ns[role] = SubGroup(xspress3_group(extras["channels"], len(ELEMENT_SYMBOLS)), prefix=record)
        elif kind in ("counter", "signal"):
            value = 100.0 if role == "ring_current" else 0.0
            ns[role] = pvproperty(name=record, value=value, units="mA" if role == "ring_current" else "")
            if "fly" in extras and "mcs" not in ns:
                ns[f"{role}_fly"] = pvproperty(name=extras["fly"], value=np.zeros(1, "<i4"),
                                               dtype=ChannelType.LONG, max_length=8192)  # one line of a fly scan
        else:
            raise ValueError(f"{config.path}: roles.{role}: a {kind} record is served by `xfct-bluesky ioc` "
                             "(the simulated microprobe's own layout), not by the beamline IOC")
    cls = type("BeamlineIOC", (_BeamlineBase,), ns)
    return cls(prefix="", config=config, seed=seed, macros=_literal_braces(config))


class _Braces:
    """A caproto macro that formats back to itself: caproto expands ``{name}`` in PV names (str.format),
    and NSLS-II's names carry braces (``XF:05IDD-ES{Xsp:1}:``) that are part of the name."""

    def __init__(self, name: str):
        self.name = name

    def __format__(self, spec: str) -> str:
        return "{" + self.name + (":" + spec if spec else "") + "}"


def _literal_braces(config) -> dict:
    import re

    names = set()
    for _, record, extras in config.roles.values():
        for text in (record, extras.get("fly", "")):
            names.update(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)", text))
    return {name: _Braces(name) for name in names}
