"""The end-to-end demo: a small simulated low-dose tomography stored in Tiled.

``xfct-bluesky demo`` runs this: an embedded Tiled server on the data folder,
a RunEngine writing through TiledWriter (with a backup folder), a simulated
microprobe, ``xfct_tomo`` at a fixed total dose, then everything is read back
from Tiled and a PNG overview is saved.
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
            ax.plot(tomo.theta, -truth[:, 1], "k.", ms=2, label="-(true runout)")
            ax.plot(tomo.theta, -truth[:, 0], "k.", ms=2)
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
    from bluesky import RunEngine

    from .analysis.align import alignment_error
    from .callbacks.alignment import LiveDPCAlignment
    from .callbacks.progress import ProgressBar
    from .callbacks.reconstruction import LiveReconstruction
    from .devices.sim import make_sim_microprobe
    from .physics import RunoutModel, small_cell
    from .physics.cells import EGG_DIAMETER, EGG_ZN_ATOMS
    from .plans import xfct_tomo
    from .storage import default_data_dir, embedded_server, load_tomo, make_tiled_writer, runs_container
    from .storage.journal import JOURNAL_SUBDIR
    from .storage.tiled import ASSETS_SUBDIR

    data_dir = Path(data_dir or default_data_dir()).expanduser().resolve()
    t0 = time.perf_counter()
    with embedded_server(data_dir) as server:
        from tiled.client import from_uri

        client = from_uri(server.uri)
        catalog = runs_container(client)
        RE = RunEngine({})
        writer = make_tiled_writer(catalog, data_dir / "backup", journal_directory=data_dir / JOURNAL_SUBDIR)
        RE.subscribe(writer)
        live = LiveDPCAlignment(emit=writer)  # shifts stored in Tiled as a derived run
        RE.subscribe(live)
        recon = LiveReconstruction(emit=writer, alignment=live, elements=("Zn",))  # after the alignment
        RE.subscribe(recon)
        if progress:
            RE.subscribe(ProgressBar())
        # a 10 um cell in a 16.8 um field: the stage's runout (2 um) stays in view; it has the egg's
        # Zn per projected area (7.5x its concentration), so the maps have the paper's counts per pixel
        specimen = small_cell(10e-6, seed=seed, zn_atoms=EGG_ZN_ATOMS * (10e-6 / EGG_DIAMETER) ** 2)
        mp = make_sim_microprobe(
            shape=shape, pixel_size=300e-9, seed=seed, specimen=specimen,
            hdf5_directory=data_dir / ASSETS_SUBDIR, runout=RunoutModel(eccentricity=2e-6, seed=seed),
        )
        (uid,) = RE(xfct_tomo(mp, shape=shape, pixel_size=300e-9, n_angles=n_angles, total_dose=total_dose,
                              order="golden", md={"sample": "demo cell (simulated)", "purpose": "xfct-bluesky demo"}))
        recon.wait()  # the volumes are published from its worker thread
        tomo = load_tomo(catalog[uid])
        aligned = live.results[uid]
        rebuilt = recon.results.get(uid, {})
        truth = mp.truth.offsets
        err = alignment_error(aligned["shifts"], truth, aligned["theta"])
        figure = overview_figure(tomo, Path(output or data_dir / "demo") / f"overview-{uid[:8]}.png",
                                 title=f"xfct-bluesky demo, run {uid[:8]}: {n_angles} projections, "
                                       f"{total_dose:.2g} Gy in total",
                                 shifts=aligned["shifts"], truth=truth,
                                 volume=rebuilt["reconstruction"].volumes["Zn"] if rebuilt else None)
        client.context.close()
    return DemoResult(uid, data_dir, figure, n_angles, tuple(shape), total_dose, time.perf_counter() - t0,
                      aligned["derived_uid"], (float(err[0]), float(err[1])), rebuilt.get("derived_uid"),
                      aligned.get("summary"))
