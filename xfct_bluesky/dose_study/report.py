"""The study's table (text and markdown) and its figure."""

from __future__ import annotations

import math

import numpy as np

from .study import StudyResult, crowther_period


def _pm(value, spread, digits=2, count=None, seeds=None, why="") -> str:
    """``mean +- spread`` (``(k/n)`` when only k of n seeds gave a number; ``why`` (or "-") when none did)."""
    if not math.isfinite(value):
        return why or "-"
    text = f"{value:.{digits}f}" + (f" +- {spread:.{digits}f}" if math.isfinite(spread) else "")
    return text + (f" ({count}/{seeds})" if count is not None and seeds and count < seeds else "")


def _rows(result: StudyResult):
    s = result.settings
    diameter = s["cell_diameter"] / s["pixel_size"]
    for (schedule, align), row in result.summary().items():
        err = row["alignment_error"]
        kept = "" if row["applied"] is None else f"{row['applied']}/{row['seeds']}"
        yield (schedule, f"{crowther_period(row['n_angles'], diameter):.1f}", align,
               _pm(*row["frc_half"][:2], 1, row["frc_half"][2], row["seeds"], row["frc_half_status"]),
               _pm(*row["frc_phantom"][:2], 1, row["frc_phantom"][2], row["seeds"], row["frc_phantom_status"]),
               _pm(*row["nrmse"][:2], 3), _pm(*row["ssim"][:2], 3),
               "" if err is None else f"{err[0]:.2f} / {err[1]:.2f}", kept)


HEADER = ("schedule", "Crowther (px)", "alignment", "FRC halves (px)", "FRC phantom (px)", "NRMSE", "SSIM",
          "align err y/x (px)", "kept")


def _footer(result: StudyResult) -> str:
    s = result.settings
    its = f" ({s['iterations']} iterations)" if s["algorithm"] != "fbp" else ""
    seeds = s["seeds"]
    return (f"Zn from {s.get('zn_maps', 'ROI window')}; {s['algorithm'].upper()}{its} of a "
            f"{s['cell_diameter'] * 1e6:g} um cell: the central {s['rows']} of {s['rows'] + 2 * s['margin']} rows, "
            f"{s['size']} x {s['size']} voxels of {s['pixel_size'] * 1e9:.0f} nm; mean +- standard deviation over "
            f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))}); resolution = period at the "
            "half-bit threshold (px; 'no signal': below it from the first ring, 'at Nyquist': never below it; "
            "(k/n): only k seeds crossed); Crowther = pi D / N; kept = "
            f"seeds whose alignment passed its consistency check; {result.seconds:.0f} s.")


def format_study(result: StudyResult) -> str:
    """The study's table as text: one line per (schedule, alignment), then what it is."""
    rows = [HEADER, *_rows(result)]
    widths = [max(len(r[k]) for r in rows) for k in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([*lines, _footer(result)])


def markdown_table(result: StudyResult) -> str:
    """The same table in markdown (for the README)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    return "\n".join([*lines, "", _footer(result)])


def study_figure(result: StudyResult, path) -> object:
    """Resolution against the number of projections at equal dose for each alignment, and central slices."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    s = result.settings
    px_nm = s["pixel_size"] * 1e9
    summary = result.summary()
    schedules = list(dict.fromkeys(c.schedule for c in result.cases))
    aligns = list(dict.fromkeys(c.align for c in result.cases))
    n_by = {c.schedule: c.n_angles for c in result.cases}
    fig = plt.figure(figsize=(3.0 + 2.2 * (len(aligns) + 1), max(2.4 * len(schedules), 6.0)), constrained_layout=True)
    grid = fig.add_gridspec(len(schedules), len(aligns) + 3)
    top = fig.add_subplot(grid[: max(len(schedules) // 2, 1), :2])
    bottom = fig.add_subplot(grid[max(len(schedules) // 2, 1):, :2]) if len(schedules) > 1 else None
    n = np.array([n_by[x] for x in schedules], float)
    diameter = s["cell_diameter"] / s["pixel_size"]
    for ax, metric, title in ((top, "frc_half", "FRC even/odd halves"), (bottom, "frc_phantom", "FRC vs phantom")):
        if ax is None:
            continue
        for al in aligns:
            mean = np.array([summary[(x, al)][metric][0] for x in schedules]) * px_nm
            err = np.nan_to_num(np.array([summary[(x, al)][metric][1] for x in schedules]) * px_nm)
            ax.errorbar(n, mean, yerr=err, marker="o", capsize=3, label=al)
        nn = np.geomspace(n.min(), n.max(), 50)
        ax.plot(nn, np.maximum(crowther_period(1, diameter) / nn, 2) * px_nm, "k:", label="Crowther pi D / N (>= 2 px)")
        ax.set_xscale("log")
        ax.set_ylabel("resolution, period (nm)")
        ax.set_title(f"{title}, equal dose", fontsize=9)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(n, [str(int(v)) for v in n])
        ax.legend(fontsize=7)
    (bottom or top).set_xlabel("projections (same total dose)")
    truth = result.phantom[result.phantom.shape[0] // 2]
    for r, sched in enumerate(schedules):
        ax = fig.add_subplot(grid[r, 2])
        ax.imshow(truth, cmap="magma")
        ax.set_title("phantom Zn" if r == 0 else "", fontsize=8)
        ax.set_ylabel(sched, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        for c, al in enumerate(aligns, start=3):
            ax = fig.add_subplot(grid[r, c])
            img = result.slices[(sched, al)]
            row = summary[(sched, al)]
            ax.imshow(img, cmap="magma", vmin=0, vmax=float(np.percentile(truth, 99.8)))
            res = row["frc_phantom"][0]
            ax.set_title(f"{al}: {res * px_nm:.0f} nm, NRMSE {row['nrmse'][0]:.2f}" if math.isfinite(res) else
                         f"{al}: -, NRMSE {row['nrmse'][0]:.2f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
