"""Bias and spread of the per-pixel fits against the Cramer-Rao bound, at ~0.3 and ~3 Zn counts per pixel.

The draw and the bound of ``tests/test_fitting.py`` (photons drawn from the exact basis with the simulated
egg's composition at 3 ms, seed 11), for the three methods of ``fit_spectra``: bias of the fitted minus the
drawn photons (+- its standard error), standard deviation over the Cramer-Rao bound, rms of the per-pixel
errors over the observed spread. The README's table. Run: python benchmarks/bench_fitting_bias.py (minutes).
"""

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_fitting import ELEMENTS, ENERGY, N_CHANNELS, TRUTH, cramer_rao, draw, scaled

from xfct_bluesky.analysis.fitting import build_basis, fit_spectra
from xfct_bluesky.physics import MicroprobeSimulator, mouse_egg


def main() -> None:
    warnings.simplefilter("ignore")
    print("load average", " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    sim = MicroprobeSimulator(mouse_egg(seed=0), seed=0)
    res = sim.simulate_map((3, 3), 300e-9, 3e-3, 0.0, spectra=False, record=False)
    v = sim.vortex
    rates = v.rates(res.expected.elements, res.expected.mass, sim.probe.flux)
    lam = rates * (3e-3 * v.live_fraction(rates))[None]
    rates = dict(zip(v.component_names, lam[:, 1, 1], strict=True))
    basis = build_basis(TRUTH, ELEMENTS, N_CHANNELS, slice(0, N_CHANNELS), background=1)
    for factor, n in ((0.1, 60000), (1.0, 20000)):
        truth = scaled(rates, factor)
        spectra, drawn = draw(basis, truth, n, np.random.default_rng(11))
        for method in ("poisson", "linear", "nnls"):
            t0 = time.perf_counter()
            fit = fit_spectra(spectra, ENERGY, ELEMENTS, calibration=TRUTH, method=method)
            seconds = time.perf_counter() - t0
            crb = cramer_rao(fit, truth)
            for el in ("Zn", "Ca"):
                z = fit.counts[el]
                d = z - drawn[el]
                print(f"{truth[el]:6.3f} {el} per px, {n:6d} px, {method:8s}: bias {100 * d.mean() / truth[el]:+.2f} "
                      f"+- {100 * d.std() / np.sqrt(n) / truth[el]:.2f} %, std/CRB {z.std() / crb[el]:.3f}, "
                      f"rms sigma/std {np.sqrt(np.mean(fit.sigma[el] ** 2)) / z.std():.3f}, {n / seconds:.0f} px/s",
                      flush=True)
    heterogeneous(basis, rates)
    print("load average", " ".join(f"{v:.2f}" for v in os.getloadavg()))


def heterogeneous(basis, rates: dict[str, float], n_base: int = 18000, n_rich: int = 2000) -> None:
    """A map unlike its mean: 10 % of its pixels at 10x and 30x the Zn, fitted with the rest. The linear fit's
    weights are the mean spectrum's; its spread in either population against that population's bound."""
    for zn_factor in (10.0, 30.0):
        rng = np.random.default_rng(4)
        rich = {**rates, "Zn": rates["Zn"] * zn_factor}
        (s1, d1), (s2, d2) = draw(basis, rates, n_base, rng), draw(basis, rich, n_rich, rng)
        spectra, drawn = np.concatenate([s1, s2]), np.concatenate([d1["Zn"], d2["Zn"]])
        for method in ("poisson", "linear"):
            fit = fit_spectra(spectra, ENERGY, ELEMENTS, calibration=TRUTH, method=method)
            parts = (("base", slice(0, n_base), rates), (f"Zn x{zn_factor:g}", slice(n_base, None), rich))
            for label, part, truth in parts:
                z, d, zn = fit.counts["Zn"][part], (fit.counts["Zn"] - drawn)[part], truth["Zn"]
                bound = cramer_rao(fit, truth)["Zn"]
                print(f"map with 10 % at Zn x{zn_factor:g}, {method:8s} {label:8s} ({z.size} px, {zn:.2f} Zn): "
                      f"bias {100 * d.mean() / zn:+.2f} +- {100 * d.std() / np.sqrt(z.size) / zn:.2f} %, "
                      f"std/CRB {z.std() / bound:.3f}", flush=True)


if __name__ == "__main__":
    main()
