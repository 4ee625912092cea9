"""EPICS microprobe: Ophyd devices over Channel Access, twins of :mod:`xfct_bluesky.devices.sim`.

Every class takes a PV prefix; the PV suffixes live in the classes. The
component names (and the data keys, dtypes and shapes of ``describe()``) are
those of the simulated classes, so the plans of :mod:`xfct_bluesky.plans`
run unchanged on either and store the same-looking data:

========================  ==================================================
``RotationStage``         theta (deg), an ``ophyd.EpicsMotor`` (``<P>Rot``)
``ZonePlateStage``        x, y, z ``EpicsMotor`` axes, um (``<P>ZP:X`` ...)
``Shutter``               ``set('open'/'close')``; ``state`` (``<P>Shtr:``)
``VortexMCA``             an ``ophyd.mca.EpicsMCA`` (XIA mca record
                          ``<P>MCA:mca1``) with the simulated twin's names:
                          spectrum, preset/elapsed real time, live time, dead
                          time, one ROI per element; its dxp parameters as
                          ``dxp`` (``ophyd.mca.EpicsDXP``, ``<P>MCA:dxp1:``)
``SegmentedDPCDetector``  quadrant counts q1..q4, total, DPC x, y, diagonal
``FlyRaster``             the fly-scan controller (``<P>Fly:``): one trigger
                          is one 2D map; maps are flattened waveforms reshaped
                          in ``read()``; the IOC writes the full spectra to
                          HDF5 as an areaDetector HDF5 plugin does
                          (``<P>Fly:HDF1:``) and the device announces them with
                          StreamResource/StreamDatum, as the simulated one does
``Microprobe``            rotation, zone_plate, shutter, mca, dpc, scanner
========================  ==================================================

``FlyRaster`` lives in :mod:`.epics_scanner` and the map, spectrum and
count signals in :mod:`.epics_signals` (both re-exported here). Build one
with :func:`make_epics_microprobe`; ``python -m xfct_bluesky.ioc``
serves all these PVs from the physics simulator (see :mod:`xfct_bluesky.ioc`).

ophyd must use a control layer: :func:`use_control_layer` (called by the
factory) selects ophyd's caproto layer unless ``$OPHYD_CONTROL_LAYER`` says
otherwise. Channel Access finds the IOC through ``EPICS_CA_ADDR_LIST``
(``127.0.0.1`` with ``EPICS_CA_AUTO_ADDR_LIST=NO`` for an IOC on loopback).
"""

from __future__ import annotations

import logging
import os

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO
from ophyd import DynamicDeviceComponent as DDC
from ophyd import FormattedComponent as FCpt
from ophyd.mca import ROI, EpicsDXP, EpicsMCA

from ..validate import positive
from ..physics.specimen import ELEMENT_SYMBOLS
from .channels import release
from .checks import check_position
from .epics_scanner import FlyRaster
from .epics_signals import COMMAND_TIMEOUT, CountSignalRO, SpectrumSignal

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PREFIX",
    "FlyRaster",
    "Microprobe",
    "RotationStage",
    "SegmentedDPCDetector",
    "Shutter",
    "VortexMCA",
    "ZonePlateStage",
    "make_epics_microprobe",
    "use_control_layer",
]

DEFAULT_PREFIX = "XFCT:"
#: Seconds to wait for a command whose put completes quickly (shutter, file open/close).
def use_control_layer(layer: str | None = None) -> str:
    """Make ophyd talk Channel Access through ``layer``; return its name.

    Parameters
    ----------
    layer : {"caproto", "pyepics"}, optional
        Default ``$OPHYD_CONTROL_LAYER``, else ``"caproto"`` (pure Python;
        pyepics needs libca). Call it before building EPICS devices: a
        signal keeps the layer it was built with.
    """
    wanted = (layer or os.environ.get("OPHYD_CONTROL_LAYER") or "caproto").lower()
    if wanted not in ("caproto", "pyepics"):
        raise ValueError(f"control layer {wanted!r}: allowed 'caproto' or 'pyepics'")
    import ophyd

    if ophyd.get_cl().name != wanted:
        ophyd.set_cl(wanted)
    return wanted


# ----------------------------------------------------------------- stages ---
class StageMotor(EpicsMotor):
    """An ``EpicsMotor`` whose refusals name the value, the limits and the fix, as the simulated motor's."""

    def check_value(self, pos) -> None:
        check_position(self, pos)


class RotationStage(StageMotor):
    """Rotation stage, theta in degrees (a motor record)."""


class ZonePlateStage(Device):
    """Zone-plate stage: x, y move the beam (um), z defocuses it (um)."""

    x = Cpt(StageMotor, "X", kind="normal")
    y = Cpt(StageMotor, "Y", kind="normal")
    z = Cpt(StageMotor, "Z", kind="normal")


class Shutter(Device):
    """Fast shutter: ``set('open')`` / ``set('close')``; ``state`` reads 'open' or 'closed'."""

    state = Cpt(EpicsSignalRO, "State_RBV", string=True, kind="normal")
    command = Cpt(EpicsSignal, "Cmd", string=True, put_complete=True, kind="omitted")

    def set(self, value):
        value = str(value).lower()
        if value not in ("open", "close", "closed"):
            raise ValueError(f"{self.name}: {value!r} is not a shutter command; use 'open' or 'close'")
        return self.command.set("open" if value == "open" else "close", timeout=COMMAND_TIMEOUT)

    @property
    def is_open(self) -> bool:
        return self.state.get(use_monitor=False) == "open"


class BeamParameters(Device):
    """Energy, flux and focal spot of the beam (read for the plans' metadata)."""

    energy = Cpt(EpicsSignalRO, "Energy_RBV", kind="config")  # keV
    flux = Cpt(EpicsSignalRO, "Flux_RBV", kind="config")  # photons/s
    spot_fwhm_h = Cpt(EpicsSignalRO, "SpotFWHMH_RBV", kind="config")  # m
    spot_fwhm_v = Cpt(EpicsSignalRO, "SpotFWHMV_RBV", kind="config")  # m


# ------------------------------------------------------------- detectors ---
class VortexROI(ROI):
    """An mca record ROI with the kinds of the simulated twin's ROI."""

    label = Cpt(EpicsSignal, "NM", kind="config")
    count = Cpt(CountSignalRO, "", kind="hinted")
    lo_chan = Cpt(EpicsSignal, "LO", kind="config")
    hi_chan = Cpt(EpicsSignal, "HI", kind="config")
    net_count = Cpt(EpicsSignalRO, "N", lazy=True, kind="omitted")
    preset_count = Cpt(EpicsSignal, "P", lazy=True, kind="omitted")
    is_preset = Cpt(EpicsSignal, "IP", lazy=True, kind="omitted")
    bkgnd_chans = Cpt(EpicsSignal, "BG", lazy=True, kind="omitted")


class VortexMCA(EpicsMCA):
    """The Vortex on an XIA mca record (prefix: the record, e.g. ``XFCT:MCA:mca1``).

    ``trigger()`` puts ``EraseStart`` and completes when the IOC reports the
    acquisition done (put completion); ``read()`` gives the spectrum
    (``<u4``, ``num_channels``), the elapsed times, the dead time (%) and one
    ROI count per element, named ``<mca>_<element>`` as in the simulation.
    The dxp parameters (``dxp``, ophyd's ``EpicsDXP``) live beside the
    record: ``<system>dxp1:`` for the record ``<system>mca1``.
    """

    preset_real_time = Cpt(EpicsSignal, ".PRTM", kind="config")
    elapsed_real_time = Cpt(EpicsSignalRO, ".ERTM", kind="normal")
    elapsed_live_time = Cpt(EpicsSignalRO, ".ELTM", kind="normal")
    dead_time = Cpt(EpicsSignalRO, ".DTIM", kind="normal")  # percent
    spectrum = Cpt(SpectrumSignal, ".VAL", kind="normal")
    num_channels = Cpt(EpicsSignalRO, ".NUSE", kind="omitted")
    rois = DDC({f"roi{i}": (VortexROI, f".R{i}", {}) for i in range(len(ELEMENT_SYMBOLS))}, kind="normal")
    erase_start = Cpt(EpicsSignal, "EraseStart", trigger_value=1, put_complete=True, kind="omitted")
    dxp = FCpt(EpicsDXP, "{_dxp_prefix}", kind="omitted")

    def __init__(self, prefix="", **kwargs):
        system, _, record = prefix.rpartition("mca")
        self._dxp_prefix = f"{system}dxp{record}:" if record.isdigit() else f"{prefix}dxp1:"
        super().__init__(prefix, **kwargs)
        for i, sym in enumerate(ELEMENT_SYMBOLS):
            getattr(self.rois, f"roi{i}").count.name = f"{self.name}_{sym}"

    def trigger(self):
        preset = self.preset_real_time.get()
        positive("preset_real_time", preset, fix="Set the counting time in seconds, e.g. 1.", unit=" s")
        return self.erase_start.set(1)


class SegmentedDPCDetector(Device):
    """Segmented transmission detector: quadrant counts and DPC at one point (put ``Acquire`` and wait)."""

    preset_time = Cpt(EpicsSignal, "PresetTime", kind="config")
    central_stop_ratio = Cpt(EpicsSignalRO, "CentralStopRatio_RBV", kind="config")
    q1 = Cpt(CountSignalRO, "Q1", kind="normal")
    q2 = Cpt(CountSignalRO, "Q2", kind="normal")
    q3 = Cpt(CountSignalRO, "Q3", kind="normal")
    q4 = Cpt(CountSignalRO, "Q4", kind="normal")
    total = Cpt(CountSignalRO, "Total", kind="normal")
    dpc_x = Cpt(EpicsSignalRO, "DPCX", kind="hinted")
    dpc_y = Cpt(EpicsSignalRO, "DPCY", kind="hinted")
    dpc_diag = Cpt(EpicsSignalRO, "DPCDiag", kind="hinted")
    acquire = Cpt(EpicsSignal, "Acquire", put_complete=True, kind="omitted")

    def trigger(self):
        positive("preset_time", self.preset_time.get(), fix="Set the counting time in seconds, e.g. 0.1.",
                 unit=" s")
        return self.acquire.set(1)


class Microprobe(Device):
    """The scanning XRF microprobe as one Device, over Channel Access."""

    rotation = Cpt(RotationStage, "Rot", kind="normal")
    zone_plate = Cpt(ZonePlateStage, "ZP:", kind="normal")
    shutter = Cpt(Shutter, "Shtr:", kind="normal")
    mca = Cpt(VortexMCA, "MCA:mca1", kind="normal")
    dpc = Cpt(SegmentedDPCDetector, "DPC:", kind="normal")
    scanner = Cpt(FlyRaster, "Fly:", kind="normal")
    #: storage-ring current (mA): the beam-loss suspender watches it; below 1 mA there is no beam
    beam_current = Cpt(EpicsSignalRO, "BeamCurrent", kind="omitted")
    beam = Cpt(BeamParameters, "Beam:", kind="omitted")

    def __init__(self, prefix=DEFAULT_PREFIX, *, hdf5_directory=None, **kwargs):
        super().__init__(prefix, **kwargs)
        self.scanner.hdf5_directory = hdf5_directory

    def beam_parameters(self) -> dict:
        """Energy (keV), flux (photons/s) and spot FWHM (m, [h, v]) for plans' metadata."""
        beam = self.beam
        return {"energy_kev": float(beam.energy.get()), "flux": float(beam.flux.get()),
                "spot_fwhm": [float(beam.spot_fwhm_h.get()), float(beam.spot_fwhm_v.get())]}

    # let bp.count([microprobe]) carry the scanner's external spectra
    def collect_asset_docs(self, index=None):
        yield from self.scanner.collect_asset_docs(index)

    def get_index(self) -> int:
        return self.scanner.get_index()


def make_epics_microprobe(
    prefix: str = DEFAULT_PREFIX,
    *,
    name: str = "microprobe",
    connection_timeout: float = 10.0,
    hdf5_directory=None,
    control_layer: str | None = None,
) -> Microprobe:
    """Connect to the microprobe's IOC (``python -m xfct_bluesky.ioc`` or the real one).

    Parameters
    ----------
    prefix : str
        PV prefix of the microprobe, e.g. ``"XFCT:"``.
    name : str
        Device name (prefix of every data key), as ``make_sim_microprobe``'s.
    connection_timeout : float
        Seconds to wait for every PV to connect.
    hdf5_directory : path, optional
        Folder for the spectra files as the IOC sees it (under its
        ``--data-dir``; it must also be readable by the Tiled server);
        default: the IOC's ``Fly:HDF1:FilePath``.
    control_layer : {"caproto", "pyepics"}, optional
        See :func:`use_control_layer`.

    Returns
    -------
    Microprobe
        with components ``rotation``, ``zone_plate``, ``shutter``, ``mca``,
        ``dpc``, ``scanner`` (and ``beam_current``, ``beam``), connected.

    Raises
    ------
    TimeoutError
        If a PV does not connect in time: the IOC is not running under that
        prefix, or Channel Access does not reach it.
    """
    use_control_layer(control_layer)
    mp = Microprobe(prefix, name=name, hdf5_directory=hdf5_directory)
    try:
        mp.wait_for_connection(timeout=connection_timeout)
    except TimeoutError as exc:
        release(mp)
        raise TimeoutError(
            f"the microprobe's PVs under {prefix!r} did not connect within {connection_timeout:g} s ({exc}). "
            f"Is its IOC running (python -m xfct_bluesky.ioc --prefix {prefix})? Channel Access searches "
            f"EPICS_CA_ADDR_LIST={os.environ.get('EPICS_CA_ADDR_LIST', '(unset)')!r}, port "
            f"{os.environ.get('EPICS_CA_SERVER_PORT', '5064')}."
        ) from exc
    return mp
