"""xfct-bluesky: low-dose X-ray fluorescence nanotomography with DPC alignment.

Subpackages
-----------
physics   pure-numpy simulator of the microprobe (specimen, probe, runout, detectors, dose)
devices   Ophyd devices: simulated twins and EPICS classes with the same component names
plans     Bluesky plans (fly maps, many-angle low-dose tomography, the dwell experiment)
callbacks live analysis callbacks (alignment, reconstruction, plots)
analysis  pure-numpy analysis kernels (DPC, registration, alignment, tomography)
storage   Tiled storage (embedded server, TiledWriter, readers) and HDF5 writers

quantities (a module) names what a run's data keys hold ({"Zn": "microprobe_scanner_Zn", ...}, in the
start document's ``quantities``) and resolves those names, the rotation angle's included
"""

__version__ = "0.1.0"
