"""DPC from segment counts, deflection angles and gradient integration (xfct_bluesky.analysis.dpc)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from xfct_bluesky.analysis.dpc import (
    DPCMaps,
    deflection,
    difference_over_sum,
    dpc_from_segments,
    gain,
    integrate_gradients,
    optical_path,
)


def test_difference_over_sum_by_hand_and_zero_sum():
    a = np.array([3, 0, 5, 0], np.uint32)
    b = np.array([1, 0, 5, 2], np.uint32)
    out = difference_over_sum(a, b)  # the 0/0 pixel must not warn (warnings are errors here)
    assert out.dtype == np.float32
    assert_allclose(out, [0.5, 0.0, 0.0, -1.0])


def test_segments_by_hand():
    # one pixel: q1 (+x,+y)=3, q2 (-x,+y)=1, q3 (-x,-y)=0, q4 (+x,-y)=2; one pixel of no counts
    q = [np.array([[3, 0]]), np.array([[1, 0]]), np.array([[0, 0]]), np.array([[2, 0]])]
    d = dpc_from_segments(*q)
    assert isinstance(d, DPCMaps) and d.units == "dpc"
    assert_allclose(d.x, [[(3 + 2 - 1 - 0) / 6, 0]])
    assert_allclose(d.y, [[(3 + 1 - 0 - 2) / 6, 0]])
    assert_allclose(d.diagonal, [[(3 - 0) / 3, 0]])
    assert_allclose(d.total, [[6, 0]])
    for m in (d.x, d.y, d.diagonal, d.total):
        assert m.dtype == np.float32


def test_inputs_untouched_and_mapping_form():
    rng = np.random.default_rng(0)
    maps = {k: rng.poisson(5, (6, 7)).astype(np.uint32) for k in ("q1", "q2", "q3", "q4")}
    before = {k: v.copy() for k, v in maps.items()}
    d1 = dpc_from_segments(maps)
    d2 = dpc_from_segments(maps["q1"], maps["q2"], maps["q3"], maps["q4"], numerical_aperture=1e-3)
    for k in maps:
        assert_array_equal(maps[k], before[k])
        assert maps[k].dtype == np.uint32
    assert d2.units == "rad"
    assert_allclose(d2.x, d1.x * 1e-3 / gain("x"), rtol=1e-6)
    assert_allclose(d2.diagonal, d1.diagonal * 1e-3 / gain("diagonal"), rtol=1e-6)


def test_gains_and_deflection_invert_the_detector_model():
    """The simulator's quadrant fractions for a disc shift eps give back alpha = eps * NA."""
    from xfct_bluesky.physics import SegmentedDetectorModel

    det = SegmentedDetectorModel(central_stop_ratio=0.3)
    na = 0.76e-3
    eps_x, eps_y = np.array([0.0, 0.01, -0.05, 0.1]), np.array([0.02, -0.03, 0.0, 0.1])
    f = det.fractions(eps_x, eps_y)
    d = dpc_from_segments(*f, numerical_aperture=na, central_stop_ratio=0.3)
    assert_allclose(d.x, eps_x * na, rtol=1e-5, atol=1e-12)
    assert_allclose(d.y, eps_y * na, rtol=1e-5, atol=1e-12)
    assert_allclose(d.diagonal, (eps_x + eps_y) / math.sqrt(2) * na, rtol=1e-5, atol=1e-12)
    assert gain("x", 0.3) == pytest.approx(det.gain_x)
    assert gain("diagonal", 0.3) == pytest.approx(det.gain_diagonal)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dpc_from_segments(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(4)), r"q4=\(4,\)"),
        (lambda: dpc_from_segments(np.zeros(3), np.zeros(3)), "four segment maps"),
        (lambda: dpc_from_segments({"q1": 1, "q2": 1, "q3": 1}), r"\['q4'\]"),
        (lambda: deflection(0.1, numerical_aperture=0), "numerical_aperture=0"),
        (lambda: deflection(0.1, numerical_aperture=1e-3, central_stop_ratio=1.2), "central_stop_ratio=1.2"),
        (lambda: deflection(0.1, numerical_aperture=1e-3, direction="z"), "direction='z'"),
        (lambda: integrate_gradients(np.zeros((4, 5)), np.zeros((5, 4))), r"\(4, 5\).*\(5, 4\)"),
        (lambda: integrate_gradients(np.full((4, 4), np.nan), np.zeros((4, 4))), "gx contains NaN"),
        (lambda: integrate_gradients(np.zeros((4, 4)), np.zeros((4, 4)), pixel_size=-1), "pixel_size=-1"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _smooth_phase(y, x):
    """A non-periodic smooth map (bump, saddle, tilt, ripple) and its analytic gradients."""
    bump = 3 * np.exp(-((x - 20) ** 2 + (y - 15) ** 2) / (2 * 6**2))
    phi = bump + 0.002 * x * y + 0.5 * np.sin(x / 7) + 0.1 * x - 0.05 * y
    gx = bump * (-(x - 20) / 36) + 0.002 * y + 0.5 / 7 * np.cos(x / 7) + 0.1
    gy = bump * (-(y - 15) / 36) + 0.002 * x - 0.05
    return phi, gx, gy


def test_integrate_gradients_recovers_known_phase():
    # measured: RMS error 0.0022 (0.02 % of the 9.2 range), 0.018 at the corners
    h = 0.5
    y, x = np.mgrid[:80, :100] * h
    phi, gx, gy = _smooth_phase(y, x)
    gx0 = gx.copy()
    out = integrate_gradients(gx, gy, pixel_size=h)
    assert out.dtype == np.float32 and out.shape == phi.shape
    assert_array_equal(gx, gx0)
    truth = phi - phi.mean()
    err = out - truth
    assert np.sqrt(np.mean(err**2)) < 1e-3 * np.ptp(truth)
    assert np.abs(err).max() < 5e-3 * np.ptp(truth)
    assert abs(float(out.mean())) < 1e-5


def test_integrate_gradients_stack_equals_maps():
    h = 1.0
    y, x = np.mgrid[:40, :30] * h
    phi, gx, gy = _smooth_phase(y, x)
    stack = integrate_gradients(np.stack([gx, 2 * gx]), np.stack([gy, 2 * gy]))
    assert_allclose(stack[0], integrate_gradients(gx, gy), atol=1e-5)
    assert_allclose(stack[1], 2 * stack[0], rtol=1e-5, atol=1e-5)


def test_simulator_dpc_maps_and_optical_path():
    """Our DPC equals the simulator's maps, and the integrated deflections give its optical path."""
    from xfct_bluesky.physics import MicroprobeSimulator, no_runout, small_cell

    sim = MicroprobeSimulator(small_cell(8e-6), runout=no_runout(), seed=3)
    p = 200e-9
    res = sim.simulate_map((64, 64), p, 3e-3, 30.0, spectra=False)
    d = dpc_from_segments(res.maps)
    assert_array_equal(d.x, res.maps["dpc_x"])
    assert_array_equal(d.y, res.maps["dpc_y"])
    assert_array_equal(d.diagonal, res.maps["dpc_diag"])
    na, r = sim.probe.numerical_aperture, sim.dpc.central_stop_ratio
    opd = optical_path(d.x, d.y, pixel_size=p, numerical_aperture=na, central_stop_ratio=r)
    truth = res.expected.opd - res.expected.opd.mean()
    # measured at 3 ms: 2.2 % RMS of the optical path's spread, correlation 0.9998
    assert np.sqrt(np.mean((opd - truth) ** 2)) < 0.05 * truth.std()
    assert np.corrcoef(opd.ravel(), truth.ravel())[0, 1] > 0.995
