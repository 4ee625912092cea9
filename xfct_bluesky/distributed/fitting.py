"""Spectrum fitting on a Dask cluster: :func:`fit_spectra` of a map in blocks of rows.

The serial fit (:func:`xfct_bluesky.analysis.fitting.fit.fit_spectra`)
calibrates on the summed spectrum, then fits every pixel with one fixed
basis. Here the workers read their blocks (along the first axis) and sum
them; the driver adds the sums and fits the summed spectrum once (the same
calibration, basis and start as the serial fit: a one-pixel fit of the sum
is the serial fit's first stage); the workers fit their pixels with that
basis (the serial per-pixel solver), and the driver places every block into
the maps as it finishes. The result equals the serial one.
"""

from __future__ import annotations

import numpy as np

from .._warnings import collected, warn
from .cluster import connect
from .recon import BLOCK_BYTES
from .sources import read_block, shape_of


def _blocks(shape: tuple, itemsize: int, block_bytes: int, block_rows: int | None) -> list[tuple[int, int]]:
    per_row = int(np.prod(shape[1:])) * itemsize
    rows = block_rows or max(1, block_bytes // max(per_row, 1))
    return [(r0, min(r0 + rows, shape[0])) for r0 in range(0, shape[0], rows)]


def _summed(source, r0: int, r1: int) -> tuple[int, np.ndarray]:
    """(first row, float64 summed spectrum) of rows r0..r1, refusing NaN and negative counts as the fit does."""
    from ..analysis.fitting.fit import summed_spectrum

    block = np.asarray(read_block(source, (slice(r0, r1),)))
    try:
        return r0, summed_spectrum(block.reshape(-1, block.shape[-1]))
    except ValueError as exc:
        raise ValueError(f"rows {r0}..{r1 - 1} of the spectra: {exc}") from None


def _solver_options(options: dict) -> dict:
    """The serial per-pixel solver's (:func:`~xfct_bluesky.analysis.fitting.fit.fit_pixels`) options by name:
    ``fit_spectra``'s keywords of the same names, as given or their defaults (``want_sigma`` is ``sigma``)."""
    import inspect

    from ..analysis.fitting import fit

    defaults = {k: p.default for k, p in inspect.signature(fit.fit_spectra).parameters.items()}
    out = {}
    for name in list(inspect.signature(fit.fit_pixels).parameters)[4:]:  # after a2, basis, a0, held
        key = "sigma" if name == "want_sigma" else name
        out[name] = options.get(key, defaults[key])
    return out


def _fit_block(source, r0, r1, basis, a0, held, solver):
    """Fitted (amplitudes, deviance, iterations, flags, errors) of rows r0..r1, by the serial per-pixel solver."""
    from ..analysis.fitting import fit

    block = np.asarray(read_block(source, (slice(r0, r1),)))
    a2 = block.reshape(-1, block.shape[-1])
    a2 = fit.native_counts(a2)
    return r0, r1, fit.fit_pixels(a2, basis, a0, held, **solver)


def fit_on_cluster(client, spectra, energy, elements, *, block_bytes: int = BLOCK_BYTES,
                   block_rows: int | None = None, **options):
    """:func:`~xfct_bluesky.analysis.fitting.fit.fit_spectra` over blocks of rows on a Dask cluster.

    Parameters
    ----------
    client : "local", distributed.Client or str
        The cluster (:func:`.cluster.connect`).
    spectra : array or source (..., n_channels)
        Counts; an :class:`~.sources.HDF5Array` or :class:`~.sources.TiledArray`
        is read by the workers themselves, an array is sent block by block.
    energy, elements, **options
        As ``fit_spectra`` (``calibration``, ``method``, ``sigma``, ``chunk`` ...).
    block_bytes, block_rows : int
        Rows of the first axis per task: ``block_rows``, or as many as fill ``block_bytes``.

    Returns
    -------
    SpectrumFit
        Equal to the serial fit's.
    """
    from distributed import as_completed

    from ..analysis.fitting import fit
    from ..analysis.fitting.fit import SpectrumFitWarning, fit_spectra

    shape = shape_of(spectra)
    if len(shape) < 2:
        raise ValueError(f"spectra have shape {shape}; a distributed fit needs (rows, ..., n_channels)")
    itemsize = np.dtype(getattr(spectra, "dtype", None) or np.float64).itemsize
    blocks = _blocks(shape, itemsize, block_bytes, block_rows)
    map_shape = shape[:-1]
    solver = _solver_options(options)
    method, sigma = solver["method"], solver["want_sigma"]
    with connect(client) as dask_client:
        # in memory: each block sent once (scattered); a source: read by the workers
        parts = [dask_client.scatter(np.ascontiguousarray(spectra[r0:r1])) if isinstance(spectra, np.ndarray)
                 else spectra for r0, r1 in blocks]
        sums = dask_client.gather([dask_client.submit(_summed, part, *_local(blk, spectra), pure=False)
                                   for part, blk in zip(parts, blocks, strict=True)])
        summed = np.add.reduce([s for _, s in sorted(sums, key=lambda item: item[0])], dtype=np.float64)
        # the serial fit's first stage: calibration, basis and summed amplitudes of the summed spectrum
        with collected() as caught:
            first = fit_spectra(summed[None], energy, elements, **options)
        for w in caught:
            if not (issubclass(w.category, SpectrumFitWarning) and "stopped before" in str(w.message)):
                warn(str(w.message), w.category, stacklevel=2)
        basis = first.basis
        n_pix = int(np.prod(map_shape))
        a0 = fit.pixel_start(first.summed_amplitudes, basis, n_pix)
        held = fit.held_shares(first.summed_amplitudes, basis, n_pix, method, options.get("hold_background"))
        K = len(basis.names)
        amplitudes, deviance = np.empty((n_pix, K)), np.empty(n_pix)
        iterations, flags = np.zeros(n_pix, np.int64), np.zeros(n_pix, np.int64)
        errors = np.full((n_pix, K), np.nan) if sigma else None
        per_row = n_pix // shape[0]
        futures = [dask_client.submit(_fit_block, part, *_local(blk, spectra), basis, a0, held, solver, pure=False)
                   for part, blk in zip(parts, blocks, strict=True)]
        offsets = {id(f): blk[0] for f, blk in zip(futures, blocks, strict=True)}
        for fut in as_completed(futures):
            _, _, (A, dev, its, flg, err) = fut.result()
            p0 = offsets[id(fut)] * per_row
            p1 = p0 + A.shape[0]
            amplitudes[p0:p1], deviance[p0:p1], iterations[p0:p1], flags[p0:p1] = A, dev, its, flg
            if sigma:
                errors[p0:p1] = err
    return fit.fit_of_pixels(amplitudes, deviance, iterations, flags, errors, map_shape=map_shape, basis=basis,
                             names=first.elements, calibration=first.calibration,
                             calibration_fit=first.calibration_fit, method=method,
                             summed_amplitudes=first.summed_amplitudes,
                             held=fit.held_names(basis, held), stacklevel=2)


def _local(block: tuple[int, int], spectra) -> tuple[int, int]:
    """The rows of a task's part: a block of an in-memory array starts at 0; a source is read at the block."""
    r0, r1 = block
    return (0, r1 - r0) if isinstance(spectra, np.ndarray) else (r0, r1)
