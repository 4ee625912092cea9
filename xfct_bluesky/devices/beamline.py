"""Ophyd devices on a beamline's real records, from its configuration (:mod:`xfct_bluesky.beamline`).

:func:`make_beamline_devices` builds one Device whose components are the configuration's roles, each of
ophyd's own class for its record type:

===========  ==================================================================================
kind         ophyd class
===========  ==================================================================================
motor        ``EpicsMotor`` (the record name as its prefix)
scaler       :class:`Scaler` (ophyd's ``ScalerCH``: channels named by ``.NM<n>``; ``trigger()`` counts ``.TP`` s)
counter      ``EpicsSignalRO`` on the PV (a scaler channel's rate at 2-ID-E)
signal       ``EpicsSignalRO``
xmap         :class:`XMAPSystem`: ``EpicsDXPMultiElementSystem`` with ``EpicsDXPMapping`` (the
             xMAP's mapping mode), one :class:`CalibratedMCA` (``EpicsMCARecord`` with ``.NUSE`` and
             the energy calibration ``.CALO``/``.CALS``/``.CALQ``) and one ``EpicsDXP`` per element;
             ``trigger()`` puts ``EraseStart`` and completes with the acquisition
xspress3     :func:`~.xspress3.xspress3_class`: ophyd's ``Xspress3Detector`` (driver ``det1:``) with NSLS-II's
             channels (``MCA<n>:ArrayData``, ROIs, SCAs); ``trigger()`` acquires one frame
===========  ==================================================================================

With MCS ``fly`` arrays and an xMAP, a component ``fly`` (:class:`~.beamline_fly.BeamlineFlyRaster`)
flies maps line by line on the MCS and the xMAP's mapping mode (``bp.count([dev.fly])``).

These are the records. A step scan runs on them with bluesky's own plans
(``bp.grid_scan([dev.scaler, dev.fluorescence], dev.sample_y, ..., dev.sample_x, ...)``); the plans of
:mod:`xfct_bluesky.plans` run on the microprobe :func:`~.beamline_fly.make_beamline_microprobe` assembles
from them (rotation, zone plate, the fly raster).
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO
from ophyd import DynamicDeviceComponent as DDC
from ophyd.mca import (
    EpicsDXP,
    EpicsDXPMapping,
    EpicsDXPMultiElementSystem,
    EpicsMCARecord,
)
from ophyd.scaler import ScalerCH, ScalerChannel

from .checks import connect_records

__all__ = ["CalibratedMCA", "Scaler", "XMAPSystem", "make_beamline_devices", "xmap_class"]


class _NamedChannel(ScalerChannel):
    """A scaler channel named by its ``.NM<n>`` once connected (ophyd's reads it at construction, with a 1 s
    timeout that a loaded IOC host misses); :func:`make_beamline_devices` names them after connecting."""

    def match_name(self):
        if self.chname.connected:
            super().match_name()


class Scaler(ScalerCH):
    """ophyd's ``ScalerCH`` (32 channels, ``.S<n>`` named by ``.NM<n>``), its channels named after connection."""

    channels = DDC({f"chan{n:02d}": (_NamedChannel, "", {"ch_num": n, "kind": "normal"}) for n in range(1, 33)})


class CalibratedMCA(EpicsMCARecord):
    """An EPICS mca record of an XIA system, with its channel count and energy calibration (E = CALO + CALS n
    + CALQ n^2, in the record's units: keV at 2-ID-E)."""

    num_channels = Cpt(EpicsSignalRO, ".NUSE", kind="config")
    calibration_offset = Cpt(EpicsSignalRO, ".CALO", kind="config")
    calibration_slope = Cpt(EpicsSignalRO, ".CALS", kind="config")
    calibration_quadratic = Cpt(EpicsSignalRO, ".CALQ", kind="config")


class ElementDXP(EpicsDXP):
    """ophyd's ``EpicsDXP``, its lazy PVs made without waiting for them: ophyd waits 1 s for each lazy PV it
    makes (its default), which a loaded IOC host misses (seen in CI on ``dxp2:Triggers``, a PV that is never
    read). :meth:`XMAPSystem.select_readings` waits for the two it reads."""

    lazy_wait_for_connection = False


class XMAPSystem(EpicsDXPMultiElementSystem, EpicsDXPMapping):
    """An XIA xMAP system: acquisition for ``PresetReal`` s on ``trigger()`` (``EraseStart``, put completion)."""

    erase_start = Cpt(EpicsSignal, "EraseStart", trigger_value=1, kind="omitted")

    def select_readings(self, timeout: float = 30.0) -> None:
        """Read what a map needs (after connecting: the dxp's count rates are lazy PVs, waited for here up to
        ``timeout`` s).

        An event holds each element's spectrum, live and real time and count rates; the set-up (preset,
        channels, calibration) goes to the configuration; the system's other PVs are not read.
        """
        from ophyd import Kind

        def only(device, normal=(), config=()):
            for name in device.component_names:
                part = getattr(device, name)
                if name in normal:
                    part.kind = Kind.normal
                elif name in config:
                    part.kind = Kind.config
                elif not isinstance(part, Device):
                    part.kind = Kind.omitted

        only(self, normal=("mcas", "dxps"), config=("preset_real_time",))
        for name in self.mcas.component_names:
            mca = getattr(self.mcas, name)
            mca.kind = Kind.normal | Kind.config
            only(mca, normal=("spectrum", "elapsed_live_time", "elapsed_real_time"),
                 config=("num_channels", "calibration_offset", "calibration_slope", "calibration_quadratic"))
        for name in self.dxps.component_names:
            dxp = getattr(self.dxps, name)
            dxp.kind = Kind.normal
            only(dxp, normal=("input_count_rate", "output_count_rate"))
            for rate in (dxp.input_count_rate, dxp.output_count_rate):
                rate.wait_for_connection(timeout=timeout)


def xmap_class(elements: int) -> type[XMAPSystem]:
    """:class:`XMAPSystem` with ``mcas.mca1`` .. and ``dxps.dxp1`` .. for ``elements`` detector elements."""
    mcas = DDC({f"mca{n}": (CalibratedMCA, f"mca{n}", {}) for n in range(1, elements + 1)}, kind="normal")
    dxps = DDC({f"dxp{n}": (ElementDXP, f"dxp{n}:", {}) for n in range(1, elements + 1)}, kind="omitted")
    return type(f"XMAPSystem{elements}", (XMAPSystem,), {"mcas": mcas, "dxps": dxps})


def make_beamline_devices(config, *, name: str = "beamline", connect: float | None = 30.0) -> Device:
    """One Device with a component per role of ``config``, on ophyd's classes (see the module docstring).

    Parameters
    ----------
    config : BeamlineConfig
        From :func:`~xfct_bluesky.beamline.load_beamline`.
    name : str
        Device name: the prefix of every data key (``beamline_i0``).
    connect : float or None
        Seconds to wait for every PV to connect (default 30, as a Session waits: 2-ID-E's 769 PVs take 6-7 s
        on loopback on an idle 2-core machine); None: do not wait (to list the PVs without an IOC).

    Raises
    ------
    TimeoutError
        Naming the PVs that did not connect (``xfct-bluesky check --beamline`` lists them all).
    """
    from .epics import use_control_layer

    use_control_layer()
    components = {}
    for role, (kind, record, extras) in config.roles.items():
        if kind == "motor":
            components[role] = Cpt(EpicsMotor, record, kind="normal")
        elif kind == "scaler":
            components[role] = Cpt(Scaler, record, kind="normal")
        elif kind == "xmap":
            components[role] = Cpt(xmap_class(extras["elements"]), record, kind="normal")
        elif kind == "mca":
            components[role] = Cpt(CalibratedMCA, record, kind="normal")
        elif kind == "xspress3":
            from .xspress3 import xspress3_class

            components[role] = Cpt(xspress3_class(extras["channels"]), record, kind="normal")
        else:  # counter, signal: the whole PV name as the suffix of an empty prefix
            components[role] = Cpt(EpicsSignalRO, record, kind="config" if role == "ring_current" else "normal")
    from .beamline_fly import fly_raster_component

    fly = fly_raster_component(config)
    if fly is not None:
        components["fly"] = fly
    cls = type("Beamline", (Device,), {"__doc__": f"{config.beamline}: {', '.join(config.roles)}", **components})
    device = cls("", name=name)
    if connect is not None:
        connect_records(device, config, connect, "the records")
        for part in device.walk_components():
            if isinstance(part.item.cls, type) and issubclass(part.item.cls, ScalerCH):
                getattr(device, part.dotted_name).select_channels()  # the named channels (ophyd's way)
            elif isinstance(part.item.cls, type) and issubclass(part.item.cls, XMAPSystem):
                getattr(device, part.dotted_name).select_readings(connect)
    return device
