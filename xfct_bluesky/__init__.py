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

#: The public API, importable from the package itself (``from xfct_bluesky import Session, xfct_tomo``):
#: name -> the module that defines it, imported on first use (the package stays light to import).
_API = {
    "Session": "session",
    "xfct_tomo": "plans", "xrf_fly_map": "plans", "dwell_pair_series": "plans", "estimate_tomo": "plans",
    "tomo_angles": "plans", "beam_loss_suspender": "plans",
    "align_projections": "analysis", "apply_shifts": "analysis", "fit_spectra": "analysis",
    "reconstruct_tomo": "reconstruction", "reconstruct_maps": "reconstruction",
    "load_tomo": "storage", "load_spectra": "storage", "runs_container": "storage", "embedded_server": "storage",
    "import_files": "importers",
    "make_sim_microprobe": "devices.sim",
}
__all__ = ["__version__", *_API.keys()]  # noqa: PLE0604 (a list of str)


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'xfct_bluesky' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_API})
