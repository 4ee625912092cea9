"""The end-to-end demo: a small simulated low-dose tomography stored in Tiled.

``xfct-bluesky demo`` runs this: a :class:`~xfct_bluesky.session.Session` on
the data folder (embedded Tiled server, journaled writer with a backup folder,
live DPC alignment and reconstruction), a simulated microprobe, ``xfct_tomo``
at a fixed total dose, then everything is read back from Tiled and a PNG
overview is saved.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    uid: str
    data_dir: Path
    figure: Path
    n_angles: int
    shape: tuple[int, int]
    total_dose: float
    seconds: float
    alignment_uid: str | None = None
    alignment_error: tuple[float, float] | None = None
    reconstruction_uid: str | None = None
    alignment_summary: dict | None = None
    fit_uid: str | None = None
    #: Zn counts of the whole tomography from the fitted spectra, and their standard error
    fit_zn: tuple[float, float] | None = None
    #: which maps the reconstruction used per element ("fitted spectra" or "ROI window")
    element_maps: dict | None = None


def overview_figure(tomo, path: Path, *, title: str = "", shifts=None, truth=None, volume=None) -> Path:
    """Save a PNG of the first DPC map, the first Zn map, sinograms of the central row, the shifts
    and the central slice of the reconstructed Zn ``volume``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dpc, zn = tomo.maps["dpc_diag"], tomo.maps["Zn"]  # load_tomo resolves the quantities to data keys
    order = np.argsort(tomo.theta)
    row = dpc.shape[1] // 2
    ncol = 4 + (shifts is not None) + (volume is not None)
    fig, axes = plt.subplots(1, ncol, figsize=(4 * ncol, 4.2), constrained_layout=True)
    extent_sino = [0, dpc.shape[2], tomo.theta[order][-1], tomo.theta[order][0]]
    panels = [
        (dpc[0], f"DPC diagonal, theta = {tomo.theta[0]:.1f} deg", "RdBu_r", None),
        (zn[0], f"Zn K-alpha counts, theta = {tomo.theta[0]:.1f} deg", "magma", None),
        (dpc[order, row, :], f"DPC sinogram, row {row}", "RdBu_r", extent_sino),
        (zn[order, row, :], f"Zn sinogram, row {row}", "magma", extent_sino),
    ]
    if shifts is not None:
        ax = axes[4]
        ax.plot(tomo.theta, shifts[:, 1], "o", ms=3, label="dx (DPC alignment)")
        ax.plot(tomo.theta, shifts[:, 0], "s", ms=3, label="dy (DPC alignment)")
        if truth is not None:
            # the true runout in the shifts' own frame: moved by the vertical mean and the horizontal
            # a + b cos + c sin that alignment_error removes (they only move the reconstructed object), so the
            # gap between the points is the error printed
            from .analysis.align import remove_sinusoid

            diff = np.asarray(shifts, float) + np.asarray(truth, float)
            frame_x = diff[:, 1] - remove_sinusoid(diff[:, 1], tomo.theta)
            ax.plot(tomo.theta, -truth[:, 1] + frame_x, "k.", ms=2, label="-(true runout), same frame")
            ax.plot(tomo.theta, -truth[:, 0] + diff[:, 0].mean(), "k.", ms=2)
        ax.set_xlabel("theta (deg)")
        ax.set_ylabel("shift (px)")
        ax.set_title("live DPC alignment", fontsize=10)
        ax.legend(fontsize=7)
    if volume is not None:
        ax = axes[-1]
        central = volume[volume.shape[0] // 2]
        ax.imshow(central, cmap="magma", vmin=0, vmax=np.percentile(central, 99.5), origin="upper")
        ax.set_title(f"Zn, reconstructed slice {volume.shape[0] // 2} (MLEM)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, (img, label, cmap, extent) in zip(axes[:4], panels, strict=True):
        lo, hi = np.percentile(img, [1, 99])
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, aspect="auto" if extent else "equal",
                       extent=extent, origin="upper" if extent else "lower", interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("theta (deg)" if extent else "y (px)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_demo(
    data_dir: Path | None = None,
    *,
    n_angles: int = 60,
    shape: tuple[int, int] = (56, 56),
    total_dose: float = 5e6,
    seed: int = 0,
    output: Path | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo tomography; return where its data and figure went."""
    from .analysis.align import alignment_error
    from .devices.sim import make_sim_microprobe
    from .physics import RunoutModel, small_cell
    from .physics.cells import EGG_DIAMETER, EGG_ZN_ATOMS
    from .plans import xfct_tomo
    from .session import Session
    from .storage import default_data_dir, load_tomo

    data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
    t0 = time.perf_counter()

    def microprobe(session):
        # a 10 um cell in a 16.8 um field: the stage's runout (2 um) stays in view; it has the egg's
        # Zn per projected area (7.5x its concentration), so the maps have the paper's counts per pixel
        specimen = small_cell(10e-6, seed=seed, zn_atoms=EGG_ZN_ATOMS * (10e-6 / EGG_DIAMETER) ** 2)
        return make_sim_microprobe(shape=shape, pixel_size=300e-9, seed=seed, specimen=specimen,
                                   hdf5_directory=session.assets_dir, runout=RunoutModel(eccentricity=2e-6, seed=seed))

    # the session's writer (journaled, with a backup) stores the run; its live alignment and reconstruction
    # store their derived runs beside it
    with Session(data_dir, microprobe=microprobe, progress=progress, persistent_md=False) as session:
        mp = session.microprobe
        (uid,) = session.RE(xfct_tomo(mp, shape=shape, pixel_size=300e-9, n_angles=n_angles, total_dose=total_dose,
                                      order="golden", md={"sample": "demo cell (simulated)",
                                                          "purpose": "xfct-bluesky demo"}))
        session.wait()  # the live worker has aligned, reconstructed and published the volumes
        tomo = load_tomo(session.catalog[uid])
        aligned = session.live_alignment.results[uid]
        rebuilt = session.live_reconstruction.results.get(uid, {})
        fitted = session.live_fit.results.get(uid, {}) if session.live_fit is not None else {}
        truth = mp.truth.offsets
        err = alignment_error(aligned["shifts"], aligned["theta"], truth)
        figure = overview_figure(tomo, Path(output or data_dir / "demo") / f"overview-{uid[:8]}.png",
                                 title=f"xfct-bluesky demo, run {uid[:8]}: {n_angles} projections, "
                                       f"{total_dose:.2g} Gy in total",
                                 shifts=aligned["shifts"], truth=truth,
                                 volume=rebuilt["reconstruction"].volumes["Zn"] if rebuilt else None)
    return DemoResult(uid, data_dir, figure, n_angles, tuple(shape), total_dose, time.perf_counter() - t0,
                      aligned["derived_uid"], (float(err[0]), float(err[1])), rebuilt.get("derived_uid"),
                      aligned.get("summary"), fitted.get("derived_uid"), _total(fitted, "Zn"),
                      rebuilt.get("element_maps"))


def _total(fitted: dict, element: str) -> tuple[float, float] | None:
    """A fit's total counts of ``element`` over the run and their standard error, if it fitted the element."""
    if element not in fitted.get("counts", {}):
        return None
    counts, sigma = fitted["counts"][element], fitted["sigma"][element]
    return float(counts.sum(dtype=np.float64)), float(np.sqrt(np.sum(np.square(sigma, dtype=np.float64))))
