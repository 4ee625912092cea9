"""Benchmark: our upsampled-DFT registration against scikit-image's, same run, same shifts.

For 96 x 96 (the paper's sub-region) and 230 x 230 (a full paper map)
float32 pairs, both textured DPC-like (signal-to-noise ~4, as a 3 ms
diagonal DPC map) and Poisson low-count (2 counts/px), registered by

* ``skimage.registration.phase_cross_correlation`` (normalization None and
  "phase"), one pair per call;
* :func:`xfct_bluesky.analysis.registration.register`, one pair per call
  ("pair"), pairwise stacks as ``align_projections`` calls it ("stack"),
  and a stack against one reference whose FFT is reused ("1-ref");

at upsample 20 and 100. Prints the time per pair (best of ``--repeat``),
the RMS error against the known shifts, the speed-up over scikit-image and
the time in units of one ``scipy.fft.rfft2`` of the same size.

Goals: at upsample 100, >= 3x faster than scikit-image with equal or better
accuracy, and within 4x of one rfft2.

Run: ``.venv/bin/python benchmarks/bench_registration.py [--pairs 32] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import os
import time

# One BLAS thread for both contenders, before numpy loads it: register() limits
# itself to one (see its Notes) but scikit-image's matrix products would
# otherwise spin a second thread, which on a busy 2-core machine costs it a lot.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from scipy import fft, ndimage  # noqa: E402

from xfct_bluesky.analysis.registration import register  # noqa: E402

SIZES = (96, 230)
UPSAMPLES = (20, 100)
SPEEDUP_GOAL = 3.0
FFT_GOAL = 4.0
#: "equal accuracy": RMS within 5 % of scikit-image's. With 32 noisy pairs the
#: RMS itself scatters by more than that between seeds; phase correlation at
#: low counts lands on either side (-1.6 % to +1.4 % over 4 seeds x 64 pairs).
ACCURACY_SLACK = 1.05


def make_pairs(kind: str, n: int, count: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(references, moving, true shifts): moving[k] registers onto references[k] with shift[k]."""
    shifts = rng.uniform(-5, 5, (count, 2))
    if kind == "dpc":
        phase = ndimage.gaussian_filter(rng.standard_normal((n, n)), 1.5, mode="wrap")
        base = (np.roll(phase, -1, 0) - np.roll(phase, 1, 0) + np.roll(phase, -1, 1) - np.roll(phase, 1, 1))
        base /= base.std()
        noise = lambda: 0.25 * rng.standard_normal((n, n))  # noqa: E731
        lam = base
    else:
        g = ndimage.gaussian_filter(rng.standard_normal((n, n)), 2, mode="wrap")
        lam = np.exp(0.5 * g / g.std())
        lam *= 2.0 / lam.mean()
    spectrum = np.fft.fft2(lam)
    refs, movs = [], []
    for s in shifts:
        moved = np.fft.ifft2(ndimage.fourier_shift(spectrum, -s)).real  # moved(x) = lam(x + s)
        if kind == "dpc":
            refs.append(lam + noise())
            movs.append(moved + noise())
        else:
            refs.append(rng.poisson(lam))
            movs.append(rng.poisson(np.clip(moved, 0, None)))
    return np.asarray(refs, np.float32), np.asarray(movs, np.float32), shifts


def best_time(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up (kernel caches, FFT plans)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def rfft2_time(n: int, repeat: int) -> float:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    reps = 200
    best = float("inf")
    fft.rfft2(a, workers=1)
    for _ in range(max(repeat, 5)):
        t0 = time.perf_counter()
        for _ in range(reps):
            fft.rfft2(a, workers=1)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def warm_up(pairs: int, workers: int, seconds: float = 2.0) -> None:
    """Run every mode of ours at every size for a while before timing anything.

    glibc's malloc starts with a 128 kB mmap threshold and raises it only as
    large blocks are freed: until it has, every megabyte-sized temporary of
    a stack registration is a fresh mmap (page faults, zeroing), which made
    whichever case ran first 1.5-2x slower (measured: 95 against 53 us per
    96x96 pair, the same case later in the run; the same with
    MALLOC_MMAP_THRESHOLD_ fixed at 64 MB from the start). A scan's
    alignment makes hundreds of such calls, so the steady state is what counts.
    """
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for n in SIZES:
            refs, movs, _ = make_pairs("poisson", n, pairs, rng)
            for norm in (None, "phase"):
                register(refs, movs, upsample=100, normalization=norm, workers=workers)
                register(refs[0], movs, upsample=100, normalization=norm, workers=workers)


def rms(err) -> float:
    return float(np.sqrt(np.mean(np.square(err))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="scipy.fft threads for ours (skimage uses 1)")
    args = parser.parse_args(argv)
    from skimage.registration import phase_cross_correlation

    rng = np.random.default_rng(2014)
    warm_up(args.pairs, args.workers)
    ok = True
    print(f"{args.pairs} pairs per case, best of {args.repeat}; times in us per pair; "
          f"ours with workers={args.workers}\n")
    header = (f"{'size':>7} {'images':>7} {'norm':>5} {'up':>4} {'skimage':>9} {'rms':>7} | "
              f"{'pair':>7} {'stack':>7} {'1-ref':>7} {'rms':>7} | {'speed-up':>13} {'x rfft2':>17}")
    print(header)
    print("-" * len(header))
    for n in SIZES:
        t_fft = rfft2_time(n, args.repeat)
        print(f"one scipy.fft.rfft2 of {n}x{n} float32: {t_fft * 1e6:.1f} us")
        for kind in ("dpc", "poisson"):
            refs, movs, truth = make_pairs(kind, n, args.pairs, rng)
            for norm in (None, "phase"):
                for up in UPSAMPLES:
                    def sk():
                        return np.array([phase_cross_correlation(r, m, upsample_factor=up, normalization=norm)[0]
                                         for r, m in zip(refs, movs)])

                    def ours_pair():
                        return np.array([register(r, m, upsample=up, normalization=norm, workers=args.workers).shift
                                         for r, m in zip(refs, movs)])

                    def ours_stack():
                        return register(refs, movs, upsample=up, normalization=norm, workers=args.workers).shift

                    def ours_one_ref():
                        return register(refs[0], movs, upsample=up, normalization=norm, workers=args.workers).shift

                    t_sk, s_sk = best_time(sk, args.repeat)
                    t_pair, s_pair = best_time(ours_pair, args.repeat)
                    t_stack, s_stack = best_time(ours_stack, args.repeat)
                    t_one, _ = best_time(ours_one_ref, args.repeat)
                    if not np.allclose(s_pair, s_stack, atol=1e-6):
                        print("  !! stack and pair results differ")
                        ok = False
                    per = 1e6 / args.pairs
                    e_sk, e_ours = rms(s_sk - truth), rms(s_pair - truth)
                    speed_pair, speed_stack = t_sk / t_pair, t_sk / t_stack
                    x_pair, x_stack, x_one = (t / args.pairs / t_fft for t in (t_pair, t_stack, t_one))
                    print(f"{n:>3}x{n:<3} {kind:>7} {str(norm):>5} {up:>4} {t_sk * per:9.1f} {e_sk:7.3f} | "
                          f"{t_pair * per:7.1f} {t_stack * per:7.1f} {t_one * per:7.1f} {e_ours:7.3f} | "
                          f"{speed_pair:5.1f}x {speed_stack:5.1f}x  {x_pair:4.1f} {x_stack:4.1f} {x_one:4.1f}")
                    if up == 100:
                        accurate = e_ours <= e_sk * ACCURACY_SLACK + 1e-3
                        fast = speed_stack >= SPEEDUP_GOAL
                        near_fft = x_one <= FFT_GOAL
                        ok &= accurate and fast
                        misses = [m for m, hit in (("speed-up", fast), ("accuracy", accurate),
                                                   ("4x rfft2 (1-ref)", near_fft)) if not hit]
                        if misses:
                            print(f"  -> goal missed: {', '.join(misses)}")
    print("\ncolumns: skimage/pair/stack/1-ref = time per pair (us); speed-up = skimage / (pair, stack);")
    print("x rfft2 = time per pair / one rfft2 (pair, stack, 1-ref). A pair needs 3 FFTs, a stack 2")
    print("(the reference's is reused in 1-ref), so the 4x goal is for the stacked modes.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
