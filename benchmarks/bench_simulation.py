"""Benchmark: simulate one paper-size projection (230 x 230 px, 300 nm, 3 ms).

Goal on the 2-core machine (issue 2): <= 1 s with full 2048-channel spectra,
<= 0.2 s without. Also prints the simulated per-pixel counts beside the
physics sheet's expectations, at 3 ms and 30 ms.

Run: ``.venv/bin/python benchmarks/bench_simulation.py [--repeat 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from xfct_bluesky.physics import MicroprobeSimulator, expected_counts, mouse_egg
from xfct_bluesky.physics.dose import dose_per_projection

GOALS = {True: 1.0, False: 0.2}
SHAPE = (230, 230)
PIXEL = 300e-9


def time_projection(sim, spectra: bool, repeat: int, dwell: float = 3e-3) -> list[float]:
    sim.simulate_map(SHAPE, PIXEL, dwell, 0.0, spectra=spectra)  # warm the kernel cache
    times = []
    for k in range(repeat):
        t0 = time.perf_counter()
        sim.simulate_map(SHAPE, PIXEL, dwell, 2.0 * k, spectra=spectra)
        times.append(time.perf_counter() - t0)
    return times


def counts_table(sim) -> None:
    c = slice(SHAPE[0] // 2 - 20, SHAPE[0] // 2 + 20)
    print("\nPer-pixel counts, central 40x40 px of the egg (simulated vs physics sheet):")
    print(f"{'dwell':>6} {'Zn Ka exp':>10} {'Zn ROI':>8} {'var/mean':>9} {'transmitted':>12} "
          f"{'DPC noise':>10} {'DPC diag std':>12} {'dose Gy':>9}")
    print("(Zn ROI: var/mean of the ROI counts about their per-pixel expectation; DPC diag std: texture + noise)")
    sheet = {3e-3: ("~3 (4.4 centre)", "1.5e7", "3.8e-4"), 30e-3: ("~29 (44 centre)", "1.5e8", "1.2e-4")}
    for dwell in (3e-3, 30e-3):
        res = sim.simulate_map(SHAPE, PIXEL, dwell, 0.0, spectra=False, record=False)
        exp = expected_counts(sim, res)
        zn = res.maps["Zn"][c, c].astype(float)
        lam = exp["Zn_roi"][c, c]
        poisson = np.var(zn - lam) / lam.mean()  # residual variance about the per-pixel mean
        print(f"{dwell * 1e3:4.0f}ms {exp['Zn_ka'][c, c].mean():10.2f} {zn.mean():8.2f} {poisson:9.2f} "
              f"{exp['transmitted'][c, c].mean():12.3e} {exp['dpc_diag_noise'][c, c].mean():10.2e} "
              f"{res.maps['dpc_diag'][c, c].std():12.2e} {dose_per_projection(dwell, PIXEL):9.2e}")
        print(f"{'sheet':>6} {sheet[dwell][0]:>10} {'':8} {'1 (Poisson)':>9} {sheet[dwell][1]:>12} "
              f"{sheet[dwell][2]:>10} {'(texture)':>12} {'9.7e4' if dwell == 3e-3 else '9.7e5':>9}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    egg = mouse_egg(seed=0)
    build = time.perf_counter() - t0
    sim = MicroprobeSimulator(egg, seed=0)
    print(f"mouse egg built in {build:.2f} s: {egg.info}")
    ok = True
    for spectra in (False, True):
        times = time_projection(sim, spectra, args.repeat)
        med = statistics.median(times)
        goal = GOALS[spectra]
        verdict = "OK" if med <= goal else "SLOWER THAN GOAL"
        ok &= med <= goal
        label = "with spectra" if spectra else "without spectra"
        print(f"230x230 projection {label:16s}: median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}, "
              f"n={len(times)}); goal <= {goal} s: {verdict}; ratio goal/median = {goal / med:.1f}x")
    counts_table(sim)
    spec_mb = SHAPE[0] * SHAPE[1] * sim.vortex.n_channels * 4 / 1e6
    print(f"\nspectra of one projection: {spec_mb:.0f} MB as uint32 in memory")
    return 0 if ok else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
