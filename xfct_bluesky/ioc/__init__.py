"""Channel Access IOC of the XRF microprobe, backed by the physics simulator.

``python -m xfct_bluesky.ioc --prefix XFCT:`` serves, under the prefix, every
PV that :mod:`xfct_bluesky.devices.epics` connects to. Behind the PVs runs the
same :class:`~xfct_bluesky.physics.MicroprobeSimulator` as
:func:`~xfct_bluesky.devices.sim.make_sim_microprobe` (the simulated mouse egg,
the same seed), so a plan run against the EPICS classes gives the same maps as
the in-process simulation with the same seed and settings.

PVs under the prefix ``P``
--------------------------
=============================  =====================================================
``P Rot``                      motor record, theta (deg): .VAL .RBV .DMOV .MOVN .STOP
                               .HLM .LLM .HLS .LLS .LVIO .VELO .ACCL .EGU .DESC .PREC
                               .OFF .DIR .SET .FOFF .CNEN .TDIR (caproto motor fields)
``P ZP:X`` ``ZP:Y`` ``ZP:Z``   motor records, zone-plate stage (um)
``P Shtr:``                    ``Cmd`` (close/open), ``State_RBV`` (closed/open)
``P BeamCurrent``              storage-ring current (mA); below 1 mA there is no beam
``P Beam:``                    ``Energy_RBV`` (keV), ``Flux_RBV`` (photons/s),
                               ``SpotFWHMH_RBV``, ``SpotFWHMV_RBV`` (m)
``P MCA:mca1``                 XIA mca record of the Vortex: .VAL (spectrum) .NUSE
                               .PRTM .PLTM .ERTM .ELTM .DTIM .BG .MODE .STOP
                               .R0-.R7 (one ROI per element: count, N, LO, HI, NM,
                               BG, IP, P) and mca.db's EraseStart, Start, Stop, ...
``P MCA:dxp1:``                the dxp parameters ophyd's ``EpicsDXP`` uses
``P DPC:``                     ``PresetTime``, ``Acquire``, ``Q1``-``Q4``, ``Total``,
                               ``DPCX``, ``DPCY``, ``DPCDiag``, ``CentralStopRatio_RBV``
``P Fly:``                     fly-scan controller: ``NumRows``, ``NumCols``,
                               ``PixelSize`` (m), ``Dwell`` (s), ``Travel`` (m),
                               ``SaveSpectra``, ``Acquire`` (put 1 and wait: one map),
                               ``Acquire_RBV``, ``DetectorState_RBV``,
                               ``StatusMessage_RBV``, ``MapDwell_RBV``,
                               ``MapShape_RBV``, ``LineOverhead_RBV``,
                               ``MaxPixels_RBV``, ``NumChannels_RBV``
``P Fly:Map:``                 one flattened (ny*nx) waveform per map: ``DPCX``,
                               ``DPCY``, ``DPCDiag``, ``Transmission``, ``I0``,
                               ``Q1``-``Q4``, ``LiveTime``, ``P`` ``S`` ``Cl`` ``K``
                               ``Ca`` ``Fe`` ``Cu`` ``Zn``
``P Fly:HDF1:``                full spectra to HDF5, as an areaDetector HDF5 plugin:
                               ``FilePath``, ``FileName``, ``FullFileName_RBV``,
                               ``FilePathExists_RBV``, ``Capture``, ``Capture_RBV``,
                               ``NumCaptured_RBV``, ``DatasetName_RBV``,
                               ``FrameShape_RBV``, ``ChunkShape_RBV``,
                               ``SWMRMode_RBV``, ``WriteStatus``, ``WriteMessage``
``P Sim:``                     the simulation only: ``Seed``, ``Reset`` (put 1: a fresh
                               simulator, as if the IOC had just started),
                               ``Realtime`` (0/1, as ``--realtime``),
                               ``NumMaps_RBV``, ``Specimen_RBV``
=============================  =====================================================

Unsigned counts (maps, spectra) travel as the bit pattern of DBR_LONG
(``uint32.view(int32)``): exact for every count; the EPICS classes view them
back as ``<u4``. Quadrant, ROI and DPC point counts are DBR_DOUBLE (exact
integers up to 2**53), as the mca record's ROI sums are.

Commands that a client waits on (``Fly:Acquire``, ``MCA:mca1EraseStart``,
``DPC:Acquire``, ``Shtr:Cmd``, ``Fly:HDF1:Capture``) never fail the put: a
problem is reported in ``DetectorState_RBV``/``StatusMessage_RBV`` or
``WriteStatus``/``WriteMessage`` (a failed put with completion would leave a
caproto client waiting forever).

Loopback only by default: the server binds 127.0.0.1 and sends its beacons
there; another interface needs ``--allow-remote``. Clients use
``EPICS_CA_ADDR_LIST=127.0.0.1 EPICS_CA_AUTO_ADDR_LIST=NO``.
"""

from ._common import DEFAULT_PREFIX, MAP_PVS, MAX_MAP_PIXELS
from .cli import add_arguments, main, main_from_args
from .detectors import BeamGroup, DpcGroup, ShutterGroup
from .motor import MotorRecord, ZonePlateGroup
from .scanner import HDF5Group, ScannerGroup, SimControlGroup
from .server import MicroprobeIOC

__all__ = [
    "DEFAULT_PREFIX", "MAP_PVS", "MAX_MAP_PIXELS", "BeamGroup", "DpcGroup", "HDF5Group", "MicroprobeIOC", "MotorRecord",
    "ScannerGroup", "ShutterGroup", "SimControlGroup", "ZonePlateGroup", "add_arguments", "main", "main_from_args",
]
