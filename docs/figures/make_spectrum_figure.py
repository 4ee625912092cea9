"""The README's "From spectra to concentrations" figure, from the simulator (a minute on 2 cores).

A thin film of the AXO standard's certified areal densities is the standard; a 10 um freeze-dried protein
sphere with 200 ppm Zn (Fe and Cu at a tenth) is the specimen, 32 x 32 px of 400 nm at 50 ms. Both are
fitted by Poisson maximum likelihood; the specimen's Zn becomes ug/cm^2 through the standard and ppm
through the mass from its DPC. Panels: one pixel's spectrum with the fit and its components; Zn in
ug/cm^2; Zn in ppm. Run: python docs/figures/make_spectrum_figure.py (writes spectrum-fit.png beside it).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from xfct_bluesky.analysis import fit_spectra
from xfct_bluesky.analysis.fitting import Calibration
from xfct_bluesky.analysis.quantify import (
    areal_density,
    calibrate_standard,
    concentration,
    projected_mass,
)
from xfct_bluesky.physics import (
    AnalyticSpecimen,
    Ellipsoids,
    Material,
    MicroprobeSimulator,
    Probe,
    no_runout,
)
from xfct_bluesky.physics.detectors import VortexModel

ELEMENTS = ("Ca", "Fe", "Cu", "Zn")
SIMULATOR = Calibration(f_tail=0.0, f_step=0.005, escape=0.0, compton_f_tail=0.0, compton_angle=90.1)
FILM = {"Ca": 1.931, "Fe": 0.504, "Cu": 0.284, "Zn": 0.30}  # ug/cm^2


def simulator(specimen, seed, flux_factor=1.0):
    return MicroprobeSimulator(specimen, seed=seed, runout=no_runout(), probe=Probe(flux=Probe().flux * flux_factor),
                               vortex=VortexModel(self_absorption=False, dead_time=19e-6))


def exposure(result):
    return {"i0": result.maps["i0"], "live_time": result.maps["live_time"], "real_time": result.dwell}


FIGURE = Path(__file__).with_name("spectrum-fit.png")


def main(path=FIGURE):
    thickness = 1e-5
    film = Ellipsoids([[0, 0, 0]], [[1e-2, 1e-2, thickness / 200]],
                      Material(density=3.0, elements={k: v / thickness for k, v in FILM.items()}))
    std_sim = simulator(AnalyticSpecimen([film], radius=1e-4), seed=1, flux_factor=2.0)
    std = std_sim.simulate_map((20, 20), 500e-9, 10e-3, record=False)
    std_fit = fit_spectra(std.spectra, std_sim.vortex.energies, ELEMENTS, calibration=SIMULATOR)
    cal = calibrate_standard(std_fit, FILM, **exposure(std))

    zn = 200e-6 * 0.3 * 1e6  # ug/cm^3: 200 ppm of 0.3 g/cm^3
    body = Ellipsoids([[0, 0, 0]], [[5e-6] * 3], Material(density=0.3, elements={"Zn": zn, "Fe": zn / 10, "Cu": zn / 10}))
    sim = simulator(AnalyticSpecimen([body], radius=5e-6), seed=2)
    res = sim.simulate_map((32, 32), 400e-9, 50e-3, record=False)
    fit = fit_spectra(res.spectra, sim.vortex.energies, ELEMENTS, calibration=SIMULATOR)
    density = areal_density(fit, cal, **exposure(res))
    mass = projected_mass(res.maps["dpc_x"], res.maps["dpc_y"], pixel_size=res.pixel_size,
                          numerical_aperture=sim.probe.numerical_aperture,
                          central_stop_ratio=sim.dpc.central_stop_ratio, energy=sim.probe.energy_kev)
    ppm = concentration(density.values["Zn"], mass.mass, element="Zn", metal_sigma=density.sigma["Zn"])

    pixel = (16, 16)
    energy = sim.vortex.energies
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1.8, 1, 1]})
    ax = axes[0]
    b = 5  # channels per bin: a pixel holds tens of counts, so 50 eV bins show them

    def binned(a):
        n = a.size // b * b
        return a[:n].reshape(-1, b).sum(axis=1)

    e = binned(energy) / b
    ax.step(e, binned(np.asarray(res.spectra[pixel], float)), where="mid", color="0.55", lw=0.9,
            label="counts (one pixel, 50 ms)")
    ax.plot(e, binned(fit.model(pixel)), "k", lw=1.3, label="Poisson fit")
    for name, comp in fit.components(pixel).items():
        if binned(comp).max() > 0.05:
            ax.plot(e, binned(comp), lw=1.0, label=name)
    ax.set_xlim(2.5, 11)
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("counts per 50 eV")
    z, s = fit.counts["Zn"][pixel], fit.sigma["Zn"][pixel]
    ax.set_title(f"pixel {pixel}: Zn {z:.0f} +- {s:.0f} counts", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    for ax, img, label in ((axes[1], density.values["Zn"], "Zn (ug/cm^2), from the AXO-like standard"),
                           (axes[2], ppm.ppm, "Zn (ppm of the DPC mass; truth 200)")):
        im = ax.imshow(img, cmap="magma", origin="lower")
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    inside = np.isfinite(ppm.ppm)
    region = np.nansum(density.values["Zn"][inside]) / np.nansum(mass.mass[inside])
    fig.suptitle(f"From spectra to concentrations (simulated): Zn over the cell {region:.0f} ppm", fontsize=11)
    fig.savefig(path, dpi=90)
    print(f"wrote {path}; region Zn {region:.1f} ppm")


if __name__ == "__main__":
    main()
