"""Distributed reconstruction and spectrum fitting on Dask (``dask.distributed``).

``reconstruct_tomo(..., client=...)`` runs here when given a cluster, and
:func:`fit_on_cluster` is ``fit_spectra`` over blocks of rows on one (the
analysis layer below knows nothing of Dask): ``"local"`` (a LocalCluster on this
machine), a :class:`distributed.Client` (any cluster: dask-jobqueue,
Kubernetes), or a scheduler address. :mod:`.cluster` resolves the option,
:mod:`.sources` names the data the workers read themselves (HDF5, Tiled),
:mod:`.recon` splits a reconstruction into tasks per element and block of
sinogram rows and writes the blocks as they finish, :mod:`.fitting` fits
spectra over blocks of rows.
"""

from .cluster import connect
from .fitting import fit_on_cluster
from .recon import BLOCK_BYTES, Report, reconstruct_one, reconstruct_stacks, row_blocks
from .sources import HDF5Array, TiledArray, tiled_sources

__all__ = ["BLOCK_BYTES", "HDF5Array", "Report", "TiledArray", "connect", "fit_on_cluster", "reconstruct_one",
           "reconstruct_stacks", "row_blocks", "tiled_sources"]
