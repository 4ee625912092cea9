"""DPC alignment of simulated tomographies against the simulator's true runout.

Error metric (issue 4): RMS of shifts + true offsets after removing the
best-fit a + b cos(theta) + c sin(theta) horizontally and the mean
vertically (these only move the reconstructed object).
"""

from __future__ import annotations

import numpy as np
import pytest

from xfct_bluesky.analysis.align import (
    AlignmentWarning,
    align_projections,
    alignment_error,
    apply_shifts,
    fit_sinusoid,
    remove_sinusoid,
)
from xfct_bluesky.physics import MicroprobeSimulator, RunoutModel, small_cell
from xfct_bluesky.plans import tomo_angles

SHAPE = (40, 48)


def _tomo(dwell, n=72, seed=1):
    sim = MicroprobeSimulator(small_cell(7e-6, seed=seed), runout=RunoutModel(eccentricity=1e-6, seed=seed),
                              seed=seed)
    theta = tomo_angles(n, 180, "golden")
    maps = [sim.simulate_map(SHAPE, 300e-9, dwell, t, spectra=False).maps for t in theta]
    stacks = {k: np.stack([m[k] for m in maps]) for k in ("dpc_diag", "dpc_x", "dpc_y", "Zn")}
    return theta, stacks, sim.truth.offsets


@pytest.fixture(scope="module")
def tomo_3ms():
    return _tomo(3e-3)


def test_dpc_alignment_3ms_within_a_tenth_of_a_pixel(tomo_3ms):
    theta, stacks, truth = tomo_3ms
    assert np.ptp(truth[:, 1]) > 4  # the runout is real: several pixels
    al = align_projections(stacks["dpc_diag"], theta)
    err = alignment_error(al.shifts, theta, truth)
    assert np.all(err <= 0.1), err  # measured ~0.03-0.05 px
    assert np.all(al.rms_residual < 0.1)
    # without alignment the error is the runout itself
    assert np.all(alignment_error(np.zeros_like(truth), theta, truth) > 0.3)


def test_zn_alignment_fails_where_dpc_succeeds(tomo_3ms):
    theta, stacks, truth = tomo_3ms
    dpc = alignment_error(align_projections(stacks["dpc_diag"], theta).shifts, theta, truth)
    with pytest.warns(AlignmentWarning, match="not applied"):
        al = align_projections(stacks["Zn"].astype(np.float32), theta)
    # the Zn shifts are worse than none (~2 px against ~2 px of runout): the reprojection error says so
    assert not al.applied and al.consistency["after"] > al.consistency["before"]
    assert np.all(al.shifts == 0)
    zn = alignment_error(al.proposed, theta, truth)
    assert np.all(zn > 5 * dpc), (zn, dpc)  # the paper's point: Zn counts are too few


def test_dpc_alignment_at_tenth_dwell():
    theta, stacks, truth = _tomo(3e-4, n=72, seed=2)
    err = alignment_error(align_projections(stacks["dpc_diag"], theta).shifts, theta, truth)
    assert np.all(err <= 0.25), err  # measured ~0.1 px


def test_center_of_rotation(tomo_3ms):
    theta, stacks, truth = tomo_3ms
    # dpc_x at theta + 180 is minus the mirror of dpc_x at theta
    al = align_projections(stacks["dpc_diag"], theta, center_maps=stacks["dpc_x"], center_parity=-1)
    # aligned projections put the axis at the map centre plus the fitted constant of (shifts + offsets)
    a, _, _ = fit_sinusoid(al.shifts[:, 1] + truth[:, 1], theta)
    expected = (SHAPE[1] - 1) / 2 + a
    assert abs(al.center - expected) < 0.5, (al.center, expected)


def test_sinusoid_helpers():
    theta = np.linspace(0, 180, 40, endpoint=False)
    t = np.radians(theta)
    values = 1.5 + 2 * np.cos(t) - 0.5 * np.sin(t)
    np.testing.assert_allclose(fit_sinusoid(values, theta), [1.5, 2, -0.5], atol=1e-12)
    np.testing.assert_allclose(remove_sinusoid(values, theta), 0, atol=1e-12)


@pytest.mark.parametrize("method", ["linear", "fourier"])
def test_apply_shifts_recovers_known_shift(method):
    yy, xx = np.mgrid[0:64, 0:64]
    img = np.exp(-((yy - 30.0) ** 2 + (xx - 33.0) ** 2) / (2 * 5.0**2)).astype(np.float32)
    moved = np.exp(-((yy - 32.3) ** 2 + (xx - 30.4) ** 2) / (2 * 5.0**2)).astype(np.float32)
    out = apply_shifts(moved[None], np.array([[-2.3, 2.6]]), method=method)
    assert out.dtype == np.float32
    assert np.abs(out[0] - img).max() < 0.02
    counts = np.ones((2, 8, 8), np.uint32)
    assert apply_shifts(counts, np.zeros((2, 2))).dtype == np.float32  # integer maps become float32


def test_bad_input():
    stack = np.zeros((3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="theta has 2 angles but there are 3 projections"):
        align_projections(stack, [0, 1])
    with pytest.raises(ValueError, match="at least 2"):
        align_projections(stack[:1], [0])
    with pytest.raises(ValueError, match="NaN"):
        align_projections(stack, [0, np.nan, 2])
    bad = stack.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        align_projections(bad, [0, 1, 2])
    with pytest.raises(ValueError, match="3D"):
        align_projections(stack[0], [0])
    with pytest.raises(ValueError, match="method='cubic'"):
        apply_shifts(stack, np.zeros((3, 2)), method="cubic")


# ------------------------------------------------------------------ projection matching
@pytest.fixture(scope="module")
def tall_dpc_y():
    """90 golden angles of DPC y over a 64-row field (vertical refinement on), with the true offsets."""
    sim = MicroprobeSimulator(small_cell(10e-6, seed=4), runout=RunoutModel(eccentricity=1e-6, seed=4), seed=4)
    theta = tomo_angles(90, 180, "golden")
    maps = [sim.simulate_map((64, 56), 300e-9, 3e-3, t, spectra=False).maps["dpc_y"] for t in theta]
    return theta, np.stack(maps), sim.truth.offsets


def test_projection_matching_removes_per_projection_errors(tall_dpc_y):
    from xfct_bluesky.analysis.refine import refine_alignment

    theta, stack, truth = tall_dpc_y
    start = -truth + np.random.default_rng(0).normal(0, 0.5, truth.shape)  # 0.5 px errors, no pattern
    assert np.all(alignment_error(start, theta, truth) > 0.4)
    ref = refine_alignment(stack, theta, start, center=(56 - 1) / 2)
    err = alignment_error(ref.shifts, theta, truth)
    assert np.all(err < 0.1), err  # measured 0.024 / 0.055 px
    assert ref.steps[-1].max() < 0.03 < ref.steps[0].min()  # converged from a large first correction
    # the corrections carry no object motion: no sinusoid horizontally, no mean vertically
    change = ref.shifts - start
    assert abs(change[:, 0].mean()) < 1e-9
    np.testing.assert_allclose(fit_sinusoid(change[:, 1], theta), 0, atol=1e-9)


def test_projection_matching_keeps_correct_shifts(tall_dpc_y):
    from xfct_bluesky.analysis.refine import refine_alignment

    theta, stack, truth = tall_dpc_y
    err = alignment_error(refine_alignment(stack, theta, -truth, center=(56 - 1) / 2).shifts, theta, truth)
    assert np.all(err < 0.05), err  # measured 0.022 / 0.031 px: the truth is (close to) a fixed point


def test_projection_matching_refuses_bad_input(tall_dpc_y):
    from xfct_bluesky.analysis.refine import refine_alignment

    theta, stack, truth = tall_dpc_y
    with pytest.raises(ValueError, match=r"theta has 89 angles but there are 90 projections"):
        refine_alignment(stack, theta[:-1], -truth)
    with pytest.raises(ValueError, match=r"iterations=0: allowed an integer >= 1"):
        refine_alignment(stack, theta, -truth, iterations=0)
