"""Compile the package's numba kernels into numba's on-disk cache, once, at install.

The kernels compile on first use (``cache=True``): on a fresh install the first spectrum fit stalls for
about 35 s and the first matrix-free projection for several seconds more, which at the beamline is the
first projection of a live fit falling that far behind its scan. ``make install`` (and so ``make demo`` and
``make test``) runs this module after installing the package, as a package with C extensions compiles them
at install: each kernel for the argument types the package gives it (the solvers take float64 whatever the
map; the readers of raw counts one version per common dtype, others compile on first use in a few
seconds). Each kernel compiles under :func:`._compile_lock.first_call`, so a process starting meanwhile
loads what this one wrote instead of compiling it again.

Run: ``python -m xfct_bluesky.analysis.compile`` (prints what it compiled and how long it took).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .fitting import Calibration, fit_spectra
from .fitting.model import build_basis
from .projector import MatrixFreeOperator

#: Raw spectrum dtypes whose reader is compiled ahead: detectors' integer counts, dead-time-corrected floats.
RAW_DTYPES = ("uint16", "uint32", "int32", "int64", "float32", "float64")


def compile_kernels(raw_dtypes=RAW_DTYPES, *, report=print) -> float:
    """Call every kernel once on tiny inputs (compiling it, or loading it from the cache); returns seconds."""
    t_all = time.perf_counter()
    energy = Calibration().energy(np.arange(2048))
    spectra = np.random.default_rng(0).poisson(0.05, (4, 2048))
    steps = [(f"fit ({method})", lambda m=method: fit_spectra(spectra.astype(np.uint32), energy, ("Ca", "Zn"),
                                                                calibration=Calibration(), method=m))
             for method in ("poisson", "linear", "nnls")]
    steps.append(("calibration", lambda: fit_spectra(_calibration_spectrum(energy), energy, ("Ca", "Zn"))))
    steps += [(f"raw reader ({dtype})", lambda d=dtype: fit_spectra(spectra.astype(d), energy, ("Ca", "Zn"),
                                                                      calibration=Calibration()))
              for dtype in raw_dtypes]
    op = MatrixFreeOperator(8, np.linspace(0.0, 180.0, 4, endpoint=False), 3.5)
    stack = np.ones((4, 2, 8), np.float32)
    steps += [("projector (forward)", lambda: op.forward(np.ones((2, 8, 8), np.float32))),
              ("projector (back)", lambda: op.back(stack)),
              ("projector (filtered back)", lambda: op.back_filtered(stack.copy(), "ramp", 1.0))]
    for name, step in steps:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step()
        report(f"  {name}: {time.perf_counter() - t0:.1f} s")
    return time.perf_counter() - t_all


def _calibration_spectrum(energy: np.ndarray) -> np.ndarray:
    """A summed spectrum the calibration converges on: the model's own, at high counts."""
    cal = Calibration()
    channels = slice(int(np.searchsorted(energy, 1.0)), int(np.searchsorted(energy, cal.incident_energy + 1.0)))
    basis = build_basis(cal, ("Ca", "Zn"), energy.size, channels, background=np.zeros(1))
    y = np.zeros(energy.size)
    y[channels] = basis.matrix @ np.full(basis.matrix.shape[1], 2e4)
    return np.random.default_rng(1).poisson(y)[None, :].repeat(2, axis=0)


def main() -> int:
    print("compiling xfct-bluesky's numba kernels into numba's cache (once per install):")
    seconds = compile_kernels()
    print(f"done in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
