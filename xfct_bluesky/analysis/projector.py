"""The parallel-beam projector of :mod:`xfct_bluesky.analysis.tomo`: one sparse matrix for all slices.

The projector is a sparse system matrix built once per geometry (number of
detector columns, angles, rotation-axis column), cached, and applied to
every slice of the volume in one sparse-dense product: the slices are the
columns of the dense operand, so a 230-slice volume costs one pass over the
matrix. Also what :mod:`.tomo`, :mod:`.center` and :mod:`.filtering` share:
the input checks (:func:`check_stack`, :func:`check_center`,
:func:`check_volume_like`), the cached matrix (:func:`geometry`,
:func:`system_matrix`, :class:`SystemMatrix`) and the array layouts of its
products (:func:`to_pixels`, :func:`to_volume`, :func:`to_rays`,
:func:`to_stack`, :func:`mask_pixels`, :data:`BLOCK`).

Geometry
--------
``projections`` is the stack as acquired, ``(n_angles, n_rows, n_cols)``
(tomopy's layout); ``theta`` is in **degrees**; a reconstruction is the
volume ``(n_rows, n_cols, n_cols)``: slice index = detector row, then y,
then x. In a slice, pixel ``[i, j]`` (row ``i`` from the top, column ``j``)
sits at::

    x = j - (n_cols - 1) / 2,        y = (n_cols - 1) / 2 - i

(x to the right, y up, as displayed by ``imshow``), so the slice grid is
centred on the rotation axis. The projection at angle ``theta`` is the
Radon transform::

    p(s) = integral of f(x, y) along the line  x cos(theta) + y sin(theta) = s,

recorded at detector column ``center + s``. As ``theta`` grows the detector
axis ``(cos theta, sin theta)`` turns counter-clockwise in the displayed
slice: ``theta = 0`` sums each slice over its rows (``slice.sum(axis=0)``),
``theta = 90`` over its columns, with the column index running from the
bottom of the slice to the top. This is :func:`skimage.transform.radon`'s
convention: for odd ``n_cols`` and the default centre,
``project(img[None], theta)[:, 0]`` equals ``radon(img, theta).T`` up to
interpolation error (for even sizes scikit-image puts the axis on pixel
``n_cols // 2``, half a pixel off this grid, which is astra-toolbox's).
``center`` is the column (float, px) of the rotation axis in the
projections, default ``(n_cols - 1) / 2``.

Other programs' ``center``
~~~~~~~~~~~~~~~~~~~~~~~~~~
Here pixel ``j`` of a projection is centred on position ``j`` (its centre,
not its edge, is at the integer), and the slice grid is always centred on
the axis. The field's programs agree for odd widths and differ for even
ones, by half a pixel:

* **scikit-image** (``radon``, ``iradon``): pixel centres at integers too,
  the axis on pixel ``n // 2`` of the image and of the sinogram. Its
  sinogram of an even-sized image has the axis at our column ``n / 2``:
  pass ``center=n // 2``. The reconstruction is then right, on a grid half
  a pixel from scikit-image's (ours centred on the axis, ``[i, j]`` at
  scikit-image's ``[i + 0.5, j + 0.5]``); with the default ``(n - 1) / 2``
  it is blurred by the half-pixel error (``tests/test_tomo.py`` pins both).
* **tomopy** (``tomopy.recon``; libtomo ``recon/utils.c`` ``preprocessing``:
  ``mov = (n - 1) / 2 - center + 0.5``, and the ray of detector ``d`` at
  ``(1 - n) / 2 + d + mov``): its ``center`` counts from the detector's
  left **edge**, so its column ``c`` is our ``c - 0.5``, and its default
  ``n / 2`` is our default ``(n - 1) / 2``. Convert with
  :func:`center_from_tomopy` and :func:`center_to_tomopy`; ``xfct-bluesky
  reconstruct --tomopy-center`` takes it so.

A 2D ``(n_angles, n_cols)`` sinogram is accepted wherever a stack is, as a
single-row convenience: the reconstruction is then one ``(n_cols, n_cols)``
slice, and :func:`project` of a 2D slice returns a 2D sinogram.

Projector
---------
Distance-driven (De Man & Basu 2004): at angle ``theta`` a unit pixel's
footprint on the detector is a box of width ``w = max(|cos|, |sin|)`` and
height ``1 / w`` (area 1, the pixel's area), and the matrix element is its
overlap with the unit-wide detector bin. Every pixel touches at most two
bins per angle, a uniform image projects without the ripple of
pixel-driven splatting, and the transpose is a good back-projector (at 0 and
90 degrees it is linear interpolation). The matrix is stored once, as
``A^T`` in CSR form with the pixels ordered in 8 x 8 tiles (the detector
bins a tile touches stay in the CPU caches); ``A`` is its transpose, a free
CSC view whose product scatters pixel by pixel. Both products measured
2-3x faster than a ray-major CSR ``A`` on a 2-core EPYC. scipy's sparse
products hold the GIL, so threads do not speed them up; the FFT filtering
uses two ``scipy.fft`` workers. A matrix takes about 8 bytes x 1.9 per
pixel and angle (545 MB for 230 columns and 720 angles, built in ~3 s);
the last 8 geometries are cached (:func:`clear_cache` frees them).

Where the matrix would not fit (2048 columns x 1500 angles: ~100 GB), the
same weights are computed on the fly (:class:`MatrixFreeOperator`, numba
kernels in :mod:`._projector_kernels`: forward parallel over angles, back
over pixel rows, all cores, memory of the volume and data only); the two
agree to float32 rounding and each back-projector is its forward
projector's exact transpose. ``projector="auto"`` (the default of
:func:`project`, :func:`backproject` and the algorithms of :mod:`.tomo`)
takes the matrix where :func:`matrix_bytes` fits under
:data:`MATRIX_BUDGET` and logs its choice; ``"matrix"`` and
``"matrix-free"`` force one.

References
----------
.. [1] B. De Man and S. Basu, "Distance-driven projection and
   backprojection in three dimensions", Phys. Med. Biol. 49, 2463-2475
   (2004), doi:10.1088/0031-9155/49/11/024.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse as _sparse

from ..validate import between, finite, one_of, real
from ._compile_lock import first_call
from .angles import check_theta
from .filtering import BLOCK, filter_rays

logger = logging.getLogger(__name__)

#: Side of the square pixel tiles the system matrix is ordered by.
_TILE = 8
#: Weights below this (relative to a full bin) are left out of the matrix.
_MIN_WEIGHT = 1e-6


# ------------------------------------------------------------- checks ---
def check_stack(projections, theta, *, name: str = "projections"):
    """(float32 stack (n_angles, n_rows, n_cols), theta float64, was_2d): a 2D sinogram is one row."""
    arr = np.asarray(projections)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be a (n_angles, n_rows, n_cols) stack or a (n_angles, n_cols) "
                         f"sinogram, got ndim {arr.ndim} with shape {arr.shape}")
    arr = real(name, arr)
    was_2d = arr.ndim == 2
    if was_2d:
        arr = arr[:, None, :]
    n_angles, n_rows, n_cols = arr.shape
    if n_angles < 2:
        raise ValueError(f"{name} has {n_angles} angle(s) on its first axis; at least 2 are needed")
    if n_rows < 1 or n_cols < 2:
        raise ValueError(f"{name} has shape {arr.shape}; need at least 1 row and 2 columns")
    theta = check_theta(theta, n_angles)
    arr = arr.astype(np.float32, copy=False)
    # a float64 sum of float32 values cannot overflow, so it is finite exactly when every value is: no
    # full-size boolean temporary (a quarter of the stack) for the check that passes
    if not np.isfinite(arr.sum(dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} hold {bad} NaN/inf value(s); all must be finite: replace them "
                         "(e.g. np.nan_to_num) or drop those projections")
    return arr, theta, was_2d


def check_center(center, n_cols: int, *, name: str = "center") -> float:
    """The rotation-axis column ``center`` as a float in ``[0, n_cols - 1]``; ``(n_cols - 1) / 2`` for None."""
    if center is None:
        return (n_cols - 1) / 2
    return between(name, center, 0, n_cols - 1, unit=" px",
                   fix=f"Give the detector column of the rotation axis (pixel centres at integers); default "
                       f"(n_cols - 1) / 2 = {(n_cols - 1) / 2}")


def center_from_tomopy(center: float) -> float:
    """The rotation-axis column of this package from tomopy's ``center`` (counted from the detector's left
    edge, see the module docstring): ``center - 0.5``."""
    return finite("center", center, unit=" px", fix="Give tomopy's center= (counted from the detector's edge)") - 0.5


def center_to_tomopy(center: float) -> float:
    """tomopy's ``center`` for this package's rotation-axis column: ``center + 0.5``."""
    return finite("center", center, unit=" px", fix="Give the rotation-axis column, e.g. Reconstruction.center") + 0.5


def check_volume_like(value, shape: tuple, name: str, *, nonneg: bool = False) -> np.ndarray:
    """``value`` as a finite float32 array of the reconstruction's ``shape`` (a start ``x0``)."""
    arr = np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; it must be {shape} (n_rows, n_cols, n_cols), "
                         "the shape of the reconstruction")
    arr = real(name, arr).astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN/inf values; all must be finite")
    if nonneg and (arr < 0).any():
        raise ValueError(f"{name} has negative values (min {arr.min():g}); MLEM needs a non-negative "
                         "start: clip it with np.clip(x0, 0, None)")
    return arr


# ---------------------------------------------------------- the matrix ---
@dataclass(frozen=True, eq=False)
class SystemMatrix:
    """A cached system matrix and its sums (see :func:`system_matrix`)."""

    n_cols: int
    n_angles: int
    n_pad: int
    bt: _sparse.csr_matrix
    ray_sums: np.ndarray
    pixel_sums: np.ndarray

    @property
    def a(self):
        """The projector ``A`` (rays x pixels), a CSC view of ``bt``."""
        return self.bt.T


def geometry(n_cols: int, theta: np.ndarray, center: float) -> tuple:
    """Hashable cache key of a geometry."""
    return int(n_cols), tuple(float(t) for t in theta), float(center)


@functools.lru_cache(maxsize=8)
def system_matrix(n_cols: int, theta: tuple, center: float) -> SystemMatrix:
    """Distance-driven ``A^T`` for ``n_cols`` columns, angles ``theta`` (deg), axis at ``center``.

    Rows are the pixels of an ``n_pad x n_pad`` grid (``n_cols`` rounded up
    to whole tiles; the padding pixels have empty rows) in tile order, and
    the columns are the rays, ``angle * n_cols + column``. About 1.9
    non-zeros per pixel and angle, 8 bytes each.
    """
    t0 = time.perf_counter()
    n, t = n_cols, _TILE
    n_pad = -(-n // t) * t
    m = n_pad // t
    th = np.deg2rad(np.asarray(theta, np.float64))
    n_angles = th.size
    cos, sin = np.cos(th), np.sin(th)
    width = np.maximum(np.abs(cos), np.abs(sin))
    half = width / 2
    c_vol = (n - 1) / 2
    ty_in, tx_in = np.divmod(np.arange(t * t), t)
    ray0 = np.arange(n_angles, dtype=np.int64)[:, None] * n
    indices, data, counts = [], [], []
    for ty in range(m):
        # one row of tiles per pass: (m * t * t, n_angles, 2) entries
        tx = np.repeat(np.arange(m), t * t)
        iy = ty * t + np.tile(ty_in, m)
        ix = tx * t + np.tile(tx_in, m)
        inside = (iy < n) & (ix < n)
        s = center + (ix - c_vol)[:, None] * cos + (c_vol - iy)[:, None] * sin
        left = s - half
        right = s + half
        j0 = np.floor(left + 0.5)
        edge = j0 + 0.5
        w0 = (np.minimum(right, edge) - left) / width
        w1 = np.maximum(right - edge, 0.0) / width
        j = np.stack([j0, j0 + 1], axis=-1)
        w = np.stack([w0, w1], axis=-1)
        keep = (w > _MIN_WEIGHT) & (j >= 0) & (j < n) & inside[:, None, None]
        cols = ray0[None, :, :] + j.astype(np.int64)
        indices.append(cols[keep].astype(np.int32))
        data.append(w[keep].astype(np.float32))
        counts.append(np.count_nonzero(keep, axis=(1, 2)))
    counts = np.concatenate(counts)
    indptr = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    if indptr[-1] >= 2**31:
        raise ValueError(f"the system matrix would have {indptr[-1]} non-zeros (> 2**31): "
                         "reconstruct fewer angles or a smaller detector")
    bt = _sparse.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr.astype(np.int32)),
                            shape=(n_pad * n_pad, n_angles * n))
    bt.has_sorted_indices = True
    ray_sums = bt.T @ np.ones(n_pad * n_pad, np.float32)
    pixel_sums = bt @ np.ones(n_angles * n, np.float32)
    logger.debug("system matrix %d cols x %d angles: %d non-zeros, %.2f s",
                 n, n_angles, bt.nnz, time.perf_counter() - t0)
    return SystemMatrix(n, n_angles, n_pad, bt, ray_sums.astype(np.float32), pixel_sums.astype(np.float32))


def clear_cache() -> None:
    """Free the cached system matrices (about 8 bytes per pixel, angle and 1.9 bins each)."""
    system_matrix.cache_clear()


# --------------------------------------------------- projector choice ---
#: The projectors: ``"matrix"`` (the cached sparse matrix), ``"matrix-free"``
#: (numba kernels, :mod:`._projector_kernels`) and ``"auto"`` (the matrix
#: where its estimate fits under :data:`MATRIX_BUDGET`).
PROJECTORS = ("auto", "matrix", "matrix-free")
#: Largest system matrix (bytes, estimated by :func:`matrix_bytes`) that ``projector="auto"`` builds and caches.
MATRIX_BUDGET = 2 * 1024 ** 3


def matrix_bytes(n_cols: int, n_angles: int) -> int:
    """Upper estimate of the memory (bytes) of the system matrix for ``n_cols`` columns and ``n_angles`` angles.

    Every pixel of the padded ``n_pad x n_pad`` grid touches at most two bins
    per angle, 8 bytes each (float32 weight, int32 index), plus the row
    pointers and the two sums: measured 1.73-1.78 non-zeros per pixel and
    angle from 32 to 230 columns, so the estimate is 10-15 % high.
    """
    n_pad = -(-int(n_cols) // _TILE) * _TILE
    return 8 * 2 * n_pad * n_pad * int(n_angles) + 4 * (2 * n_pad * n_pad + 1 + int(n_angles) * int(n_cols))


def choose_projector(projector: str, n_cols: int, n_angles: int, *, budget: int | None = None) -> str:
    """``"matrix"`` or ``"matrix-free"`` for the option ``projector`` (one of :data:`PROJECTORS`).

    ``"auto"`` takes the cached matrix where :func:`matrix_bytes` fits under
    ``budget`` (default :data:`MATRIX_BUDGET`), else the matrix-free
    kernels, and logs the choice (INFO) with the estimate and the budget.
    """
    one_of("projector", projector, PROJECTORS,
           fix="'auto' picks the cached matrix where it fits in memory; 'matrix-free' computes the weights on the fly")
    if projector != "auto":
        return projector
    budget = MATRIX_BUDGET if budget is None else budget
    need = matrix_bytes(n_cols, n_angles)
    choice = "matrix" if need <= budget else "matrix-free"
    logger.info("projector %s: the system matrix for %d columns x %d angles would take ~%.3g GB, %s the "
                "budget of %.3g GB (projector.MATRIX_BUDGET)", choice, n_cols, n_angles, need / 1e9,
                "within" if choice == "matrix" else "over", budget / 1e9)
    return choice


def operator(projector: str, n_cols: int, theta: np.ndarray, center: float, *, kind: str | None = None):
    """The projector pair for a geometry: a :class:`MatrixOperator` or a :class:`MatrixFreeOperator`.

    ``kind`` (``"matrix"`` or ``"matrix-free"``), when the caller has
    already chosen, skips :func:`choose_projector` (and its log line).
    """
    kind = kind or choose_projector(projector, n_cols, np.size(theta))
    if kind == "matrix":
        return MatrixOperator(system_matrix(*geometry(n_cols, theta, center)))
    return MatrixFreeOperator(n_cols, theta, center)


# ------------------------------------------------------------- layouts ---
# The sparse products want one row per pixel or ray and one column per slice;
# the arrays the caller sees have the slices first. numpy's transposing copies
# are several times faster in blocks of BLOCK slices (the strided side stays
# in the caches; BLOCK is defined in .filtering, which copies in the same blocks).


def to_pixels(volume: np.ndarray, n_pad: int) -> np.ndarray:
    """(k, n, n) volume -> (n_pad**2, k) tile-ordered pixel rows (a new array)."""
    k, n, _ = volume.shape
    t, m = _TILE, n_pad // _TILE
    if n != n_pad:
        padded = np.zeros((k, n_pad, n_pad), np.float32)
        padded[:, :n, :n] = volume
        volume = padded
    src = volume.reshape(k, m, t, m, t)
    out = np.empty((m, m, t, t, k), np.float32)
    for i in range(0, k, BLOCK):
        out[..., i:i + BLOCK] = src[i:i + BLOCK].transpose(1, 3, 2, 4, 0)
    return out.reshape(n_pad * n_pad, k)


def to_volume(pixels: np.ndarray, n: int) -> np.ndarray:
    """(n_pad**2, k) tile-ordered pixel rows -> (k, n, n) volume (a new array)."""
    k = pixels.shape[1]
    t = _TILE
    m = math.isqrt(pixels.shape[0]) // t
    src = pixels.reshape(m, m, t, t, k)
    out = np.empty((k, m, t, m, t), np.float32)
    for i in range(0, k, BLOCK):
        out[i:i + BLOCK] = src[..., i:i + BLOCK].transpose(4, 0, 2, 1, 3)
    out = out.reshape(k, m * t, m * t)
    return out if m * t == n else np.ascontiguousarray(out[:, :n, :n])


def to_rays(stack: np.ndarray) -> np.ndarray:
    """(n_angles, k, n_cols) stack -> (n_angles * n_cols, k) ray rows (a new array)."""
    na, k, nc = stack.shape
    out = np.empty((na, nc, k), np.float32)
    for i in range(0, k, BLOCK):
        out[:, :, i:i + BLOCK] = stack[:, i:i + BLOCK].transpose(0, 2, 1)
    return out.reshape(na * nc, k)


def to_stack(rays: np.ndarray, n_angles: int) -> np.ndarray:
    """(n_angles * n_cols, k) ray rows -> (n_angles, k, n_cols) stack (a new array)."""
    k = rays.shape[1]
    src = rays.reshape(n_angles, -1, k)
    out = np.empty((n_angles, k, src.shape[1]), np.float32)
    for i in range(0, k, BLOCK):
        out[:, i:i + BLOCK] = src[:, :, i:i + BLOCK].transpose(0, 2, 1)
    return out


def mask_pixels(mask, n_rows: int, n_cols: int, n_pad: int) -> np.ndarray | None:
    """A mask option as float32 tile-ordered pixel weights, (n_pad**2, 1) or (n_pad**2, n_rows)."""
    vol = mask_volume(mask, n_rows, n_cols)
    return None if vol is None else to_pixels(vol, n_pad)


def mask_volume(mask, n_rows: int, n_cols: int) -> np.ndarray | None:
    """A mask option as float32 voxel weights, (1, n_cols, n_cols) or (n_rows, n_cols, n_cols)."""
    if mask is None:
        return None
    if isinstance(mask, str):
        one_of("mask", mask, ("circle",), fix=f"Or give None, or a boolean array of shape ({n_cols}, {n_cols}) "
                                              f"or ({n_rows}, {n_cols}, {n_cols})")
        c = (n_cols - 1) / 2
        yy, xx = np.mgrid[:n_cols, :n_cols]
        mask = (yy - c) ** 2 + (xx - c) ** 2 <= (n_cols / 2) ** 2
    arr = np.asarray(mask)
    if arr.shape not in ((n_cols, n_cols), (n_rows, n_cols, n_cols)):
        raise ValueError(f"mask has shape {arr.shape}; it must be ({n_cols}, {n_cols}) (every slice) or "
                         f"({n_rows}, {n_cols}, {n_cols}) (per slice), or 'circle'")
    if arr.dtype != bool:
        raise ValueError(f"mask must be boolean (True = reconstruct this voxel), got dtype {arr.dtype}")
    vol = arr[None] if arr.ndim == 2 else arr
    return vol.astype(np.float32)


def _workspace(stack: np.ndarray, overwrite: bool) -> np.ndarray | None:
    """``stack``'s memory, flat, where the caller lets it be overwritten and it can be (C-contiguous,
    writeable float32); else None (the filter then allocates its output)."""
    if overwrite and stack.dtype == np.float32 and stack.flags.c_contiguous and stack.flags.writeable:
        return stack.reshape(-1)
    return None


# ------------------------------------------------------------ operators ---
# The algorithms of :mod:`.tomo` run on either operator through the same
# methods: each keeps volumes and data in its own layout (the matrix's
# pixel and ray rows, or the matrix-free kernels' (k, n, n) volume and
# (n_angles, k, n) stack), and its sums broadcast against that layout.
class MatrixOperator:
    """The cached sparse matrix as a projector pair; volumes are tile-ordered pixel rows, data ray rows."""

    kind = "matrix"

    def __init__(self, system: SystemMatrix):
        self.system = system
        self.n_cols = system.n_cols
        self.n_angles = system.n_angles
        self.ray_sums = system.ray_sums[:, None]
        self.pixel_sums = system.pixel_sums[:, None]

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.system.a @ x

    def back(self, y: np.ndarray) -> np.ndarray:
        return self.system.bt @ y

    def volume_in(self, volume: np.ndarray) -> np.ndarray:
        return to_pixels(volume, self.system.n_pad)

    def volume_out(self, x: np.ndarray) -> np.ndarray:
        return to_volume(x, self.n_cols)

    def data_in(self, stack: np.ndarray) -> np.ndarray:
        return to_rays(stack)

    def data_out(self, y: np.ndarray) -> np.ndarray:
        return to_stack(y, self.n_angles)

    def back_filtered(self, stack: np.ndarray, name: str, scale: float, *, overwrite: bool = False) -> np.ndarray:
        """FBP's back-projection of ``stack`` filtered (:func:`.filtering.filter_rays`); ``overwrite``: as
        :meth:`MatrixFreeOperator.back_filtered`."""
        return self.back(filter_rays(stack, name, scale, out=_workspace(stack, overwrite)))

    def mask(self, mask, n_rows: int) -> np.ndarray | None:
        return mask_pixels(mask, n_rows, self.n_cols, self.system.n_pad)

    def zeros(self, n_rows: int) -> np.ndarray:
        return np.zeros((self.system.n_pad ** 2, n_rows), np.float32)

    def volume_shape(self, n_rows: int) -> tuple:
        return self.system.n_pad ** 2, n_rows

    def weighted_sums(self, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Per slice, ``sum(weights * x)`` in float64, ``weights`` a volume-layout sum such as ``pixel_sums``."""
        return weights[:, 0].astype(np.float64) @ x

    def scale_slices(self, x: np.ndarray, factors: np.ndarray) -> None:
        x *= factors.astype(np.float32)


class MatrixFreeOperator:
    """The distance-driven projector of :func:`system_matrix` computed on the fly (:mod:`._projector_kernels`).

    Volumes are ``(k, n_cols, n_cols)`` float32, data ``(n_angles, k,
    n_cols)`` float32; memory is that of the arrays and one row of
    slices per thread, whatever the geometry.
    """

    kind = "matrix-free"

    def __init__(self, n_cols: int, theta: np.ndarray, center: float):
        th = np.deg2rad(np.asarray(theta, np.float64))
        self.n_cols = int(n_cols)
        self.n_angles = th.size
        self.center = float(center)
        self._cos = np.ascontiguousarray(np.cos(th))
        self._sin = np.ascontiguousarray(np.sin(th))

    def forward(self, x: np.ndarray) -> np.ndarray:
        from . import (
            _projector_kernels,  # numba: compiled (or loaded from its cache) on first use
        )

        out = np.empty((self.n_angles, x.shape[0], self.n_cols), np.float32)
        with first_call("forward"):  # one process on the machine compiles it, the others load its cache
            _projector_kernels.forward(np.ascontiguousarray(x, np.float32), self._cos, self._sin, self.center, out)
        return out

    def back(self, y: np.ndarray) -> np.ndarray:
        from . import _projector_kernels

        out = np.empty((y.shape[1], self.n_cols, self.n_cols), np.float32)
        with first_call("back"):
            _projector_kernels.back(np.ascontiguousarray(y, np.float32), self._cos, self._sin, self.center, out)
        return out

    @functools.cached_property
    def ray_sums(self) -> np.ndarray:
        """``A 1``, (n_angles, 1, n_cols)."""
        return self.forward(np.ones((1, self.n_cols, self.n_cols), np.float32))

    @functools.cached_property
    def pixel_sums(self) -> np.ndarray:
        """``A^T 1``, (1, n_cols, n_cols)."""
        return self.back(np.ones((self.n_angles, 1, self.n_cols), np.float32))

    def volume_in(self, volume: np.ndarray) -> np.ndarray:
        return np.array(volume, np.float32, order="C")  # a copy: the caller's array is never changed

    def volume_out(self, x: np.ndarray) -> np.ndarray:
        return x

    def data_in(self, stack: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(stack, np.float32)

    def data_out(self, y: np.ndarray) -> np.ndarray:
        return y

    def back_filtered(self, stack: np.ndarray, name: str, scale: float, *, overwrite: bool = False) -> np.ndarray:
        """FBP's back-projection: the rows of ``stack`` filtered (:func:`.filtering.filter_rays`), then back-projected.

        The filter writes its rays bins first, the layout :func:`._projector_kernels.back_bins` reads, so
        the data is laid out once (not filtered, then copied bins first). ``overwrite=True`` lets the
        filter write into ``stack`` itself (when it is C-contiguous float32): the caller gives the stack
        up, and the peak memory is the data and the volume, with no second copy of the data.
        """
        from . import _projector_kernels

        na, k, nc = stack.shape
        bins = filter_rays(stack, name, scale, out=_workspace(stack, overwrite)).reshape(na, nc, k)
        out = np.empty((k, self.n_cols, self.n_cols), np.float32)
        with first_call(("back_bins", bins.flags.c_contiguous)):
            _projector_kernels.back_bins(bins, self._cos, self._sin, self.center, out)
        return out

    def mask(self, mask, n_rows: int) -> np.ndarray | None:
        return mask_volume(mask, n_rows, self.n_cols)

    def zeros(self, n_rows: int) -> np.ndarray:
        return np.zeros((n_rows, self.n_cols, self.n_cols), np.float32)

    def volume_shape(self, n_rows: int) -> tuple:
        return n_rows, self.n_cols, self.n_cols

    def weighted_sums(self, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
        w = weights.reshape(-1).astype(np.float64)
        return x.reshape(x.shape[0], -1) @ w

    def scale_slices(self, x: np.ndarray, factors: np.ndarray) -> None:
        x *= factors.astype(np.float32)[:, None, None]


# ---------------------------------------------------- projector pair ---
def project(volume, theta, *, center=None, projector="auto") -> np.ndarray:
    """Forward-project a volume: the parallel-beam Radon transform of every slice.

    Parameters
    ----------
    volume : (n_rows, n_cols, n_cols) array_like
        Slices (row of the detector, y, x); a 2D ``(n_cols, n_cols)``
        slice is projected to a 2D sinogram.
    theta : (n_angles,) array_like
        Projection angles in degrees, at least 2.
    center : float, optional
        Detector column of the rotation axis, in ``[0, n_cols - 1]``;
        default ``(n_cols - 1) / 2``.
    projector : {"auto", "matrix", "matrix-free"}
        The cached sparse matrix, the same weights computed on the fly
        (numba, all cores, no matrix in memory), or ``"auto"``: the matrix
        where its estimate (:func:`matrix_bytes`) fits under
        :data:`MATRIX_BUDGET`. Both give the same result to float32
        rounding.

    Returns
    -------
    projections : (n_angles, n_rows, n_cols) float32 ndarray
        Line integrals in units of pixels x voxel value, as
        :func:`skimage.transform.radon` (``(n_angles, n_cols)`` for a 2D
        slice).

    See Also
    --------
    backproject : the exact adjoint (transpose) of this operator.

    Notes
    -----
    The geometry is the module's (see the module docstring); the
    distance-driven model gives each detector bin the bin-averaged line
    integral of pixel-sized squares.
    """
    arr = np.asarray(volume)
    if arr.ndim not in (2, 3) or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"volume must be (n_rows, n_cols, n_cols) or a square 2D slice, got shape {arr.shape}")
    arr = real("volume", arr)
    was_2d = arr.ndim == 2
    vol = (arr[None] if was_2d else arr).astype(np.float32, copy=False)
    if not np.isfinite(vol).all():
        raise ValueError("volume holds NaN/inf values; all must be finite")
    n_cols = vol.shape[-1]
    if n_cols < 2:
        raise ValueError(f"volume slices are {n_cols} x {n_cols}; at least 2 x 2 are needed")
    theta = check_theta(theta)
    op = operator(projector, n_cols, theta, check_center(center, n_cols))
    out = op.data_out(op.forward(op.volume_in(vol)))
    return out[:, 0] if was_2d else out


def backproject(projections, theta, *, center=None, projector="auto") -> np.ndarray:
    """Back-project a stack: the adjoint of :func:`project`, unfiltered and unscaled.

    Parameters
    ----------
    projections : (n_angles, n_rows, n_cols) array_like
        Stack as acquired, or a 2D ``(n_angles, n_cols)`` sinogram.
    theta : (n_angles,) array_like
        Angles in degrees.
    center : float, optional
        Detector column of the rotation axis; default ``(n_cols - 1) / 2``.
    projector : {"auto", "matrix", "matrix-free"}
        As in :func:`project`.

    Returns
    -------
    volume : (n_rows, n_cols, n_cols) float32 ndarray
        ``A^T p`` for every slice (a 2D slice for a 2D sinogram). Up to
        float32 rounding, ``<project(x), p> == <x, backproject(p)>``.
    """
    stack, theta, was_2d = check_stack(projections, theta)
    n_cols = stack.shape[2]
    op = operator(projector, n_cols, theta, check_center(center, n_cols))
    vol = op.volume_out(op.back(op.data_in(stack)))
    return vol[0] if was_2d else vol
