"""The matrix-free projector equals the cached system matrix (xfct_bluesky.analysis.projector).

Both compute the distance-driven weights of :func:`projector.system_matrix`;
the matrix-free kernels (numba) compute them on the fly. The tests compare
the two operators on a disc phantom and on random data, check that each is
the adjoint of its back-projector, that FBP/SIRT/MLEM/OSEM give the same
volume with either and recover the phantom, and that ``projector="auto"``
falls back to matrix-free (and says so) when the matrix would not fit.
Bounds were set from measured values (in the comments).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from numpy.testing import assert_allclose

from xfct_bluesky.analysis import projector, tomo

N = 48
THETA = np.linspace(0, 180, 60, endpoint=False)
#: (x0, y0, radius, density) in px, y up, about the slice centre
DISCS = [(0, 0, 20, 0.2), (6, -4, 5, 1.0), (-8, 7, 4, 0.6), (9, 9, 3, 1.4), (-4, -10, 4, 0.5)]


def disc_sinogram(n, theta, center):
    """Exact bin-averaged projections of ``DISCS``, (n_angles, n): column j at s = j - center."""
    th = np.deg2rad(np.asarray(theta))[:, None]
    s = np.arange(n)[None, :] - center
    out = np.zeros((th.shape[0], n))
    for x0, y0, r, rho in DISCS:
        s0 = x0 * np.cos(th) + y0 * np.sin(th)
        for sign, u in ((1, s - s0 + 0.5), (-1, s - s0 - 0.5)):
            u = np.clip(u, -r, r)
            out += sign * rho * (u * np.sqrt(r * r - u * u) + r * r * np.arcsin(u / r))
    return out.astype(np.float32)


def disc_image(n, sub=8):
    """Pixel-averaged ``DISCS`` (sub x sub samples per pixel), row 0 at the top."""
    c = (n - 1) / 2
    x = (np.arange(n)[:, None] + (np.arange(sub) + 0.5) / sub - 0.5 - c).ravel()
    img = np.zeros((n * sub, n * sub))
    for x0, y0, r, rho in DISCS:
        img += rho * ((x[None, :] - x0) ** 2 + (-x[:, None] - y0) ** 2 <= r * r)
    return img.reshape(n, sub, n, sub).mean(axis=(1, 3)).astype(np.float32)


def disc_mask(n, margin=1.0):
    yy, xx = np.mgrid[:n, :n]
    c = (n - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= (n / 2 - margin) ** 2


def rel(a, b):
    return float(np.abs(np.asarray(a, float) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def truth():
    return disc_image(N)


@pytest.fixture(scope="module")
def volume(truth):
    """Three slices: the phantom, its mirror image at half density and random noise."""
    noise = np.random.default_rng(1).random((N, N), dtype=np.float32)
    return np.stack([truth, 0.5 * truth[:, ::-1], noise])


@pytest.fixture(scope="module")
def sinogram():
    return disc_sinogram(N, THETA, (N - 1) / 2)


# ------------------------------------------------------- the operators ---
@pytest.mark.parametrize("center", [None, 20.3, 27.5])
def test_forward_equals_matrix(volume, center):
    free = tomo.project(volume, THETA, center=center, projector="matrix-free")
    matrix = tomo.project(volume, THETA, center=center, projector="matrix")
    assert free.dtype == np.float32 and free.shape == (THETA.size, 3, N)
    assert rel(free, matrix) < 1e-5  # measured 4.1e-7-5.2e-7
    # a 2D slice gives a 2D sinogram, equal to the row of the stack
    assert_allclose(tomo.project(volume[0], THETA, center=center, projector="matrix-free"), free[:, 0], rtol=0,
                    atol=1e-6 * np.abs(free).max())


@pytest.mark.parametrize("center", [None, 20.3, 27.5])
def test_back_equals_matrix(center):
    data = np.random.default_rng(2).random((THETA.size, 3, N), dtype=np.float32)
    free = tomo.backproject(data, THETA, center=center, projector="matrix-free")
    matrix = tomo.backproject(data, THETA, center=center, projector="matrix")
    assert free.dtype == np.float32 and free.shape == (3, N, N)
    assert rel(free, matrix) < 1e-5  # measured 4.1e-7-5.2e-7


@pytest.mark.parametrize("kind", ["matrix", "matrix-free"])
@pytest.mark.parametrize("center", [None, 21.7])
def test_adjoint(kind, center):
    """<A x, y> == <x, A^T y> to float32 rounding, for random x and y with several slices."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, N, N)).astype(np.float32)
    y = rng.standard_normal((THETA.size, 2, N)).astype(np.float32)
    ax = tomo.project(x, THETA, center=center, projector=kind)
    aty = tomo.backproject(y, THETA, center=center, projector=kind)
    lhs = np.vdot(ax.astype(np.float64), y)
    rhs = np.vdot(x.astype(np.float64), aty)
    scale = np.linalg.norm(ax.astype(np.float64)) * np.linalg.norm(y.astype(np.float64))
    assert abs(lhs - rhs) < 1e-7 * scale  # measured 1e-9-3e-9 (matrix), 5e-11-3e-10 (matrix-free)


def test_matrix_free_builds_no_matrix(volume):
    tomo.clear_cache()
    tomo.project(volume, THETA, projector="matrix-free")
    tomo.fbp(tomo.project(volume, THETA, projector="matrix-free"), THETA, projector="matrix-free")
    assert projector.system_matrix.cache_info().currsize == 0


# ------------------------------------------------------ the algorithms ---
ALGORITHMS = {
    # name: (call, nrmse bound (measured), agreement bound between the projectors (measured))
    "fbp": (lambda s, **kw: tomo.fbp(s, THETA, filter="shepp-logan", **kw), 0.14, 1e-5),  # 0.112; 3.7e-7
    "sirt": (lambda s, **kw: tomo.sirt(s, THETA, iterations=50, **kw), 0.145, 1e-5),  # 0.117; 2.2e-7
    "mlem": (lambda s, **kw: tomo.mlem(s, THETA, iterations=50, **kw), 0.115, 3e-5),  # 0.091; 2.9e-6
    "osem": (lambda s, **kw: tomo.mlem(s, THETA, iterations=5, subsets=10, **kw), 0.115, 1e-5),  # 0.091; 8.6e-7
}


@pytest.mark.parametrize("name", ALGORITHMS)
def test_reconstructions_agree_and_recover_phantom(name, sinogram, truth):
    call, bound, agree = ALGORITHMS[name]
    free = call(sinogram, projector="matrix-free")
    matrix = call(sinogram, projector="matrix")
    assert free.dtype == np.float32 and free.shape == (N, N)
    assert rel(free, matrix) < agree
    for rec in (free, matrix):
        assert tomo.nrmse(rec, truth, disc_mask(N)) < bound


def test_mask_start_and_slices_agree(sinogram):
    """The options that touch the layouts: a circle mask, a start x0 (left unchanged), several slices."""
    stack = np.stack([sinogram, 2 * sinogram], axis=1)
    x0 = np.full((2, N, N), 0.1, np.float32)
    before = x0.copy()
    for call in (lambda **kw: tomo.sirt(stack, THETA, iterations=20, mask="circle", x0=x0, **kw),
                 lambda **kw: tomo.mlem(stack, THETA, iterations=10, subsets=3, mask="circle", x0=x0, **kw),
                 lambda **kw: tomo.mlem(stack, THETA, iterations=10, mask=disc_mask(N, 6)) * 1.0):
        free = call(projector="matrix-free")
        matrix = call(projector="matrix")
        assert free.shape == (2, N, N)
        assert rel(free, matrix) < 1e-4
        assert (free[:, ~disc_mask(N, -0.5)] == 0).all()  # outside the circle: held at zero
    np.testing.assert_array_equal(x0, before)


@pytest.mark.parametrize("kind", ["matrix", "matrix-free"])
def test_fbp_overwrite_input_gives_the_same_volume(kind, sinogram):
    """FBP filtering in place (``overwrite_input=True``, the distributed tasks' memory saving) gives exactly
    the volume of the default, which leaves the caller's stack unchanged; a stack FBP may not overwrite
    (not C-contiguous) is left unchanged too."""
    stack = np.stack([sinogram, 2 * sinogram, -sinogram], axis=1)
    before = stack.copy()
    expected = tomo.fbp(stack, THETA, filter="shepp-logan", projector=kind)
    np.testing.assert_array_equal(stack, before)
    work = stack.copy()
    assert_allclose(tomo.fbp(work, THETA, filter="shepp-logan", projector=kind, overwrite_input=True), expected,
                    rtol=0, atol=0)
    view = stack[:, ::2]  # rows 0 and 2: not contiguous, so filtered into a new array
    assert_allclose(tomo.fbp(view, THETA, filter="shepp-logan", projector=kind, overwrite_input=True),
                    expected[::2], rtol=0, atol=0)
    np.testing.assert_array_equal(stack, before)


# ------------------------------------------------------------ the choice ---
def test_auto_falls_back_to_matrix_free_over_budget(sinogram, monkeypatch, caplog):
    need = projector.matrix_bytes(N, THETA.size)
    assert 8 * 1.7 * N * N * THETA.size < need < 8 * 2.1 * N * N * THETA.size
    with caplog.at_level(logging.INFO, logger="xfct_bluesky.analysis.projector"):
        assert projector.choose_projector("auto", N, THETA.size) == "matrix"
        assert "within the budget" in caplog.text
        caplog.clear()
        tomo.clear_cache()
        monkeypatch.setattr(projector, "MATRIX_BUDGET", need // 2)
        rec = tomo.fbp(sinogram, THETA)
    assert projector.system_matrix.cache_info().currsize == 0  # no matrix was built
    assert_allclose(rec, tomo.fbp(sinogram, THETA, projector="matrix-free"), rtol=0, atol=0)
    [record] = [r for r in caplog.records if "projector" in r.getMessage()]
    assert record.levelname == "INFO"
    text = record.getMessage()
    assert "projector matrix-free" in text and f"{need / 1e9:.3g} GB" in text and "over the budget" in text
    # an explicit choice is not second-guessed: the matrix is built although it is over the budget
    tomo.fbp(sinogram, THETA, projector="matrix")
    assert projector.system_matrix.cache_info().currsize == 1


def test_bad_projector_rejected(sinogram):
    with pytest.raises(ValueError, match=r"projector.*'gpu'.*allowed: 'auto', 'matrix', 'matrix-free'"):
        tomo.sirt(sinogram, THETA, projector="gpu")
    from xfct_bluesky.reconstruction import reconstruct_maps

    with pytest.raises(ValueError, match=r"projector.*'gpu'.*allowed: 'auto', 'matrix', 'matrix-free'"):
        reconstruct_maps({"Zn": np.ones((THETA.size, 4, N))}, THETA, projector="gpu")  # refused before any work
