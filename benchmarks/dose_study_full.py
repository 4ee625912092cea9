"""The full dose-fractionation study (issue 17): 24 x 30 ms to 720 x 1 ms, a 25 um cell in 128 px, several seeds.

Writes the table (markdown, ``--output``/dose-study.md), the text table and the figure
(``docs/figures/dose-study.png`` by default) after each seed, so an interrupted run keeps the seeds done.

    nice .venv/bin/python benchmarks/dose_study_full.py                 # 3 seeds, ROI Zn
    nice .venv/bin/python benchmarks/dose_study_full.py --seeds 0 --fit # fitted Zn (slower)
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import time
from pathlib import Path

from xfct_bluesky.dose_study import (
    SCHEDULES,
    dose_study,
    format_study,
    markdown_table,
    study_figure,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--angles", type=int, nargs="+", default=[n for n, _ in SCHEDULES],
                   help="projections of each schedule (default 24 72 240 720)")
    p.add_argument("--total-dwell", type=float, default=0.72,
                   help="dwell per pixel summed over the projections, s (0.72: the paper's 2.3e7 Gy)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--cell-diameter", type=float, default=25e-6)
    p.add_argument("--fit", action="store_true", help="Zn from fitted spectra (default: ROI window)")
    p.add_argument("--output", default="benchmarks/results", help="folder of dose-study.md and .txt")
    p.add_argument("--figure", default="docs/figures/dose-study.png")
    p.add_argument("--replot", metavar="PICKLE", help="only redraw the table and figure of a saved study")
    args = p.parse_args(argv)
    out = Path(args.output)
    if args.replot:
        total = pickle.loads(Path(args.replot).read_bytes())
        (out / "dose-study.md").write_text(markdown_table(total) + "\n")
        study_figure(total, args.figure)
        print(format_study(total))
        return 0
    schedules = tuple((n, args.total_dwell / n) for n in args.angles)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = None
    for seed in args.seeds:
        res = dose_study(schedules=schedules, size=args.size, rows=args.rows, cell_diameter=args.cell_diameter,
                         seeds=(seed,), fit=args.fit,
                         progress=lambda text: print(f"{time.perf_counter() - t0:7.0f} s  {text}", flush=True))
        if total is None:
            total = res
        else:
            total = dataclasses.replace(total, cases=total.cases + res.cases, seconds=total.seconds + res.seconds,
                                        settings={**total.settings, "seeds": total.settings["seeds"] + [seed]})
        (out / "dose-study.pkl").write_bytes(pickle.dumps(total))  # for --replot
        (out / "dose-study.md").write_text(markdown_table(total) + "\n")
        (out / "dose-study.txt").write_text(format_study(total) + "\n")
        study_figure(total, args.figure)
        print(format_study(total), flush=True)
    print(f"{time.perf_counter() - t0:.0f} s in all; {out / 'dose-study.md'}, {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
