"""Accuracy of DPC and Zn alignment on simulated egg tomographies with known runout (issue 4, item 6).

A golden-order tomography of the simulated mouse egg (300 nm pixels, a field
through its centre) is simulated at each dwell with the default stage runout;
the projections are aligned with :func:`~xfct_bluesky.analysis.align.align_projections`
on the diagonal DPC maps (pairwise registrations solved jointly), then refined
by projection matching on the DPC y maps
(:func:`~xfct_bluesky.analysis.refine.refine_alignment`), and, for
comparison, aligned on the Zn maps. The error is
the RMS of (shifts + true offsets) after removing the best-fit sinusoid
a + b cos(theta) + c sin(theta) horizontally and the mean vertically, which
only move the reconstructed object (:func:`~xfct_bluesky.analysis.align.alignment_error`).

Targets: DPC <= 0.1 px at 3 ms, <= 0.25 px at 0.3 ms.

The default field, 280 x 280 px, holds the whole egg (250 px) and its
runout: in a field inside the egg the pairwise alignment has nothing but
interior texture, whose parallax between angles biases it (3.5 px at 96 px).

The sparse case (issue 10): 36 angles over 180 degrees of a 1.4 mm wire
capillary in a 1600 px field of 1 um pixels, fluorescence only and
transmission only, 2-5 px RMS runout. ``align_projections`` (auto: the
centre of mass, then guarded coarse-to-fine projection matching) against a
plain reprojection-matching loop of the same iterations at full resolution
(FBP, reproject, register, shift, started from zero); time per iteration
against one FBP + one reprojection of the stack (the floor; goal within 3x).

Run: ``.venv/bin/python benchmarks/bench_alignment.py [--angles 90] [--size 280] [--sparse-only]``
(a few minutes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from xfct_bluesky.analysis.align import align_projections, alignment_error
from xfct_bluesky.analysis.refine import refine_alignment
from xfct_bluesky.physics import MicroprobeSimulator, RunoutModel, mouse_egg
from xfct_bluesky.plans import tomo_angles

TARGETS = {3e-3: 0.1, 3e-4: 0.25}


def simulate(dwell: float, n_angles: int, size: int, seed: int):
    sim = MicroprobeSimulator(mouse_egg(seed=seed), runout=RunoutModel(seed=seed), seed=seed)
    theta = tomo_angles(n_angles, 180, "golden")
    maps = [sim.simulate_map((size, size), 300e-9, dwell, t, spectra=False).maps for t in theta]
    return theta, {k: np.stack([m[k] for m in maps]) for k in ("dpc_diag", "dpc_x", "dpc_y", "Zn")}, \
        sim.truth.offsets


def simulate_sparse(seed: int = 1, rows: int = 40):
    from xfct_bluesky.physics.phantoms import wire_capillary

    runout = RunoutModel(eccentricity=5e-6, harmonics=(1.5e-6, 1.0e-6, 0.6e-6), jitter=2.2e-6, seed=seed)
    sim = MicroprobeSimulator(wire_capillary(seed=seed, rows_span=4e-6), runout=runout, seed=seed)
    theta = np.linspace(0, 180, 36, endpoint=False)
    maps = [sim.simulate_map((rows, 1600), 1e-6, 10e-3, t, spectra=False).maps for t in theta]
    keys = ("Cu", "Fe", "Ca", "K", "Zn", "i0", "live_time", "transmission")
    return theta, {k: np.stack([m[k] for m in maps]) for k in keys}, sim.truth.offsets


def plain_matching(stack, theta, iterations, sigma, center):
    """The reference loop: FBP, reproject, register (low-passed), shift; full resolution, from zero."""
    from scipy import ndimage

    from xfct_bluesky.analysis import tomo
    from xfct_bluesky.analysis.align import apply_shifts, remove_sinusoid
    from xfct_bluesky.analysis.registration import register

    shifts = np.zeros((theta.size, 2))
    for _ in range(iterations):
        aligned = apply_shifts(stack, shifts, mode="nearest")
        rep = tomo.project(tomo.fbp(aligned, theta, center=center, filter="shepp-logan"), theta, center=center)
        g = (0, 0, sigma)
        step = np.atleast_2d(register(ndimage.gaussian_filter(rep, g), ndimage.gaussian_filter(aligned, g),
                                      upsample=20, window="tukey").shift)
        shifts[:, 1] += remove_sinusoid(step[:, 1], theta)
    return shifts


def truth_in_gauge(truth, shifts, theta):
    """The true shifts (-offsets) moved by the sinusoid and mean that only move the object, onto ``shifts``' axis."""
    from xfct_bluesky.analysis.align import fit_sinusoid

    out = -np.asarray(truth, float)
    t = np.radians(theta)
    a, b, c = fit_sinusoid(out[:, 1] - shifts[:, 1], theta)
    out[:, 1] -= a + b * np.cos(t) + c * np.sin(t)
    out[:, 0] -= np.mean(out[:, 0] - shifts[:, 0])
    return out


def wire_compactness(cu, theta, shifts, center) -> float:
    """Fraction of each wire's reconstructed Cu within 3 px of its peak (of that within 12 px), mean of the wires.

    The figure of the issue's real dataset (0.29 unaligned there, 0.035 after the old aligner).
    """
    from scipy import ndimage

    from xfct_bluesky.analysis import tomo
    from xfct_bluesky.analysis.align import apply_shifts

    rows = slice(cu.shape[1] // 2 - 4, cu.shape[1] // 2 + 4)
    sl = tomo.fbp(apply_shifts(cu[:, rows], shifts, mode="nearest"), theta, center=center,
                  filter="shepp-logan").mean(axis=0)
    sl = np.clip(sl, 0, None)
    peaks = (sl == ndimage.maximum_filter(sl, 25)) & (sl > 0.3 * sl.max())
    yy, xx = np.mgrid[: sl.shape[0], : sl.shape[1]]
    out = []
    for py, px in zip(*np.nonzero(peaks), strict=True):
        r2 = (yy - py) ** 2 + (xx - px) ** 2
        out.append(sl[r2 <= 9].sum() / sl[r2 <= 144].sum())
    return float(np.mean(out)) if out else float("nan")


def sparse_case() -> bool:
    from xfct_bluesky.analysis import channels, tomo

    theta, stacks, truth = simulate_sparse()
    none = alignment_error(np.zeros_like(truth), theta, truth)
    print(f"\nsparse: 36 angles, wire capillary, 40 x 1600 px of 1 um, runout RMS {none[0]:.2f} / {none[1]:.2f} px")
    print(f"{'channel':>13} {'method':>9} {'error y/x':>15} {'consistency':>19} {'iterations':>10} {'s':>6} "
          f"{'s/iter':>7} {'plain loop y/x':>15} {'s/iter':>7} {'floor s':>7} {'ratio':>6}")
    ok = True
    for names, label in ((("Cu", "Fe", "Ca", "K", "Zn", "i0", "live_time"), "fluorescence"),
                         (("transmission", "i0"), "transmission")):
        maps = {k: stacks[k] for k in names}
        t0 = time.perf_counter()
        al = align_projections(maps, theta)
        t1 = time.perf_counter()
        err = alignment_error(al.shifts, theta, truth)
        n_it = max(len(al.steps), 1)
        converged = al.params.get("converged")
        stack = channels.prepare(label, maps).stack
        center = al.center
        t2 = time.perf_counter()
        plain = plain_matching(stack, theta, n_it, 46.0, center)
        t3 = time.perf_counter()
        perr = alignment_error(plain, theta, truth)
        t4 = time.perf_counter()
        tomo.project(tomo.fbp(stack, theta, center=center, filter="shepp-logan"), theta, center=center)
        floor = time.perf_counter() - t4
        per = (t1 - t0) / n_it
        c = al.consistency
        cu = channels.prepare("Cu", maps).stack if "Cu" in maps else None
        compact = ("" if cu is None else "  wire compactness none / ours / truth: " + " / ".join(
            f"{wire_compactness(cu, theta, s, center):.3f}"
            for s in (np.zeros_like(truth), al.shifts, truth_in_gauge(truth, al.shifts, theta))))
        met = bool(np.all(err <= 0.3))
        ok &= met
        print(f"{label:>13} {al.method:>9} {err[0]:7.3f} / {err[1]:5.3f} {c['before']:8.4f} -> {c['after']:7.4f} "
              f"{n_it:10d} {t1 - t0:6.1f} {per:7.2f} {perr[0]:7.3f} / {perr[1]:5.3f} {(t3 - t2) / n_it:7.2f} "
              f"{floor:7.2f} {per / floor:5.2f}x  {'met' if met else 'MISSED'}"
              f"{'' if converged else ' (not converged)'}{compact}")
    print("consistency: reprojection error before -> after; ratio: our time per iteration / one FBP + reprojection")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--angles", type=int, default=90)
    parser.add_argument("--size", type=int, default=280, help="field side, px of 300 nm, centred on the egg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparse-only", action="store_true", help="only the sparse-angle case")
    args = parser.parse_args(argv)
    if args.sparse_only:
        return 0 if sparse_case() else 1
    ok = sparse_case()
    print(f"simulated egg, {args.angles} golden-order angles, {args.size}x{args.size} px of 300 nm, default runout\n")
    print(f"{'dwell':>7} {'runout ptp y/x':>15} {'DPC pairwise y/x':>17} {'DPC + matching':>15} {'Zn y/x':>14} "
          f"{'target':>7} {'Zn/DPC':>7} {'seconds':>12}")
    for dwell, target in TARGETS.items():
        theta, stacks, truth = simulate(dwell, args.angles, args.size, args.seed)
        t0 = time.perf_counter()
        al = align_projections(stacks["dpc_diag"], theta, center_maps=stacks["dpc_x"], center_parity=-1)
        t1 = time.perf_counter()
        refined = refine_alignment(stacks["dpc_y"], theta, al.shifts, center=al.center)
        t2 = time.perf_counter()
        pairwise = alignment_error(al.shifts, theta, truth)
        dpc = alignment_error(refined.shifts, theta, truth)
        zn = alignment_error(align_projections(stacks["Zn"].astype(np.float32), theta).shifts, theta, truth)
        met = bool(np.all(dpc <= target))
        ok &= met
        print(f"{dwell * 1e3:5.1f}ms {np.ptp(truth[:, 0]):6.2f} / {np.ptp(truth[:, 1]):5.2f} "
              f"{pairwise[0]:8.3f} / {pairwise[1]:5.3f} {dpc[0]:6.3f} / {dpc[1]:5.3f} {zn[0]:6.3f} / {zn[1]:5.3f} "
              f"{target:7.2f} {float(np.max(zn / dpc)):6.0f}x {t1 - t0:5.1f} + {t2 - t1:4.1f}  "
              f"{'met' if met else 'MISSED'}")
    print("\nerrors: RMS px of shifts + true offsets after removing the best-fit sinusoid (x) and mean (y);")
    print("seconds: pairwise alignment + projection matching (iterations until the correction is < 0.01 px).")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
