"""Upsampled-DFT registration recovers known shifts (xfct_bluesky.analysis.registration).

Synthetic images are shifted in Fourier space (an exact, periodic sub-pixel
translation) before noise is added, so the true shift is known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage

from xfct_bluesky.analysis.registration import (
    CCWidth,
    Registration,
    cc_fwhm,
    cross_correlation,
    register,
)

FWHM_PER_SIGMA = 2 * math.sqrt(2 * math.log(2))


def fourier_shift(img, shift):
    """``img`` translated by ``shift`` (dy, dx) px, periodically and exactly (band-limited)."""
    return np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(img), shift)).real


def texture(rng, n=128, sigma=2.0, contrast=0.5):
    """Positive log-normal texture of mean 1: exp(contrast * g), g a blurred unit-variance field."""
    g = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma, mode="wrap")
    t = np.exp(contrast * g / g.std())
    return t / t.mean()


def dpc_like(rng, n=96, sigma=1.5):
    """A DPC-like map: the diagonal derivative of a smooth random phase, zero mean."""
    phase = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma, mode="wrap")
    d = (np.roll(phase, -1, 0) - np.roll(phase, 1, 0) + np.roll(phase, -1, 1) - np.roll(phase, 1, 1)) / 4
    return d / d.std()


def rms(errors):
    return float(np.sqrt(np.mean(np.square(errors))))


def gaussian_blob(n, sigma, centre):
    y, x = np.mgrid[:n, :n]
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2))


# --------------------------------------------------------- accuracy ---
# Measured RMS (max) errors, 30 shifts uniform in +-4 px, 128 x 128 log-normal
# texture (sigma 2 px, contrast 0.5, seed 2), upsample 20: 0.46 (1.19) px at
# 0.5 counts/px, 0.18 (0.42) at 2, 0.09 (0.23) at 5. scikit-image with
# normalization=None gives the same; its default "phase" 0.77, 0.52, 0.36.
@pytest.mark.parametrize(("mean_counts", "bound"), [(0.5, 0.6), (2.0, 0.25), (5.0, 0.13)])
def test_low_count_poisson_shifts_recovered(mean_counts, bound):
    rng = np.random.default_rng(2)
    tex = texture(rng) * mean_counts
    errors = []
    for _ in range(30):
        s = rng.uniform(-4, 4, 2)
        a = rng.poisson(tex)
        b = rng.poisson(np.clip(fourier_shift(tex, -s), 0, None))  # b(x) = a(x + s): shift +s registers it
        errors.append(register(a, b).shift - s)
    assert rms(errors) < bound
    assert np.abs(errors).max() < 5 * bound  # no gross failure (a wrong peak would be pixels off)


def test_plain_cc_beats_phase_correlation_at_half_a_count():
    """The reason the default is normalization=None: measured RMS 0.80 px plain,
    10.6 px phase (sigma 3 px texture, 0.5 counts/px)."""
    rng = np.random.default_rng(5)
    tex = texture(rng, sigma=3.0) * 0.5
    plain, phase = [], []
    for _ in range(20):
        s = rng.uniform(-4, 4, 2)
        a = rng.poisson(tex)
        b = rng.poisson(np.clip(fourier_shift(tex, -s), 0, None))
        plain.append(register(a, b).shift - s)
        phase.append(register(a, b, normalization="phase").shift - s)
    assert rms(plain) < 1.0
    assert rms(plain) < rms(phase)


@pytest.mark.parametrize(("normalization", "noise"), [(None, 0.02), ("phase", 0.002)])
def test_high_snr_dpc_like_shift_to_005_px(normalization, noise):
    # measured RMS (max): 0.003 (0.006) px plain at 2 % noise; 0.005 (0.012) px phase at 0.2 %
    # (phase correlation whitens the noise: 0.045 px RMS at 2 %)
    rng = np.random.default_rng(7)
    base = dpc_like(rng)
    errors = []
    for _ in range(20):
        s = rng.uniform(-6, 6, 2)
        a = base + noise * rng.standard_normal(base.shape)
        b = fourier_shift(base, -s) + noise * rng.standard_normal(base.shape)
        errors.append(register(a, b, upsample=100, normalization=normalization).shift - s)
    assert rms(errors) < 0.05
    assert np.abs(errors).max() < 0.1


def test_noise_free_shift_to_one_upsampled_step():
    rng = np.random.default_rng(11)
    base = dpc_like(rng, n=64)
    for s in [(0.0, 0.0), (0.37, -2.81), (-5.5, 3.25), (10.02, -0.49)]:
        r = register(base, fourier_shift(base, np.negative(s)), upsample=100)
        assert_allclose(r.shift, s, atol=0.011)


# --------------------------------------------------- sign convention ---
@pytest.mark.parametrize("normalization", [None, "phase"])
@pytest.mark.parametrize("upsample", [1, 20, 100])
def test_same_sign_convention_as_skimage(normalization, upsample):
    skimage_registration = pytest.importorskip("skimage.registration")
    rng = np.random.default_rng(3)
    a = dpc_like(rng, n=64)
    # phase correlation whitens the noise too: compare it on noise-free images
    noise = 0.01 if normalization is None else 0.0
    b = fourier_shift(a, (2.3, -1.6)) + noise * rng.standard_normal(a.shape)
    ours = register(a, b, upsample=upsample, normalization=normalization).shift
    theirs = skimage_registration.phase_cross_correlation(
        a, b, upsample_factor=upsample, normalization=normalization
    )[0]
    assert_allclose(ours, theirs, atol=1.01 / upsample)
    assert_allclose(ours, (-2.3, 1.6), atol=0.6 if upsample == 1 else 0.05)
    # and applying the shift to moving overlays the reference (the opposite sign does not)
    right = np.corrcoef(fourier_shift(b, ours).ravel(), a.ravel())[0, 1]
    wrong = np.corrcoef(fourier_shift(b, -ours).ravel(), a.ravel())[0, 1]
    assert right > 0.98 if upsample > 1 else right > 0.9
    assert wrong < 0.5


# ------------------------------------------------------------ stacks ---
@pytest.fixture
def pairs():
    rng = np.random.default_rng(13)
    base = dpc_like(rng, n=48)
    shifts = rng.uniform(-3, 3, (5, 2))
    moving = np.stack([fourier_shift(base, -s) + 0.1 * rng.standard_normal(base.shape) for s in shifts])
    refs = np.stack([base + 0.1 * rng.standard_normal(base.shape) for _ in shifts])
    return base, refs, moving, shifts


def _same(stacked: Registration, singles: list[Registration]):
    for field in ("shift", "peak", "fwhm", "psr"):
        assert_allclose(getattr(stacked, field), np.array([getattr(r, field) for r in singles]), rtol=1e-5, atol=1e-9)


def test_stack_against_one_reference_equals_loop(pairs):
    base, _, moving, shifts = pairs
    stacked = register(base, moving, upsample=50)
    assert stacked.shift.shape == (5, 2) and stacked.peak.shape == (5,)
    assert stacked.fwhm.shape == (5, 2) and stacked.psr.shape == (5,)
    _same(stacked, [register(base, m, upsample=50) for m in moving])
    assert_allclose(stacked.shift, shifts, atol=0.1)


def test_pairwise_stacks_equal_loop(pairs):
    _, refs, moving, _ = pairs
    stacked = register(refs, moving, upsample=50, roi=(slice(4, 44), slice(2, 46)))
    _same(stacked, [register(r, m, upsample=50, roi=(slice(4, 44), slice(2, 46))) for r, m in zip(refs, moving)])


def test_broadcast_read_only_inputs(pairs):
    base, _, moving, _ = pairs
    ref = np.broadcast_to(base, moving.shape)  # read-only, zero stride
    assert not ref.flags.writeable
    mov = moving.copy()
    mov.setflags(write=False)
    _same(register(ref, mov, upsample=50), [register(base, m, upsample=50) for m in moving])
    both = register(ref, np.broadcast_to(moving[0], moving.shape), upsample=50)
    assert both.shift.shape == (5, 2)
    assert_allclose(both.shift, np.broadcast_to(register(base, moving[0], upsample=50).shift, (5, 2)))


def test_pair_returns_scalars_and_dataclass_is_frozen(pairs):
    base, _, moving, _ = pairs
    r = register(base, moving[0])
    assert r.shift.shape == (2,) and r.fwhm.shape == (2,)
    assert isinstance(r.peak, float) and isinstance(r.psr, float)
    with pytest.raises(AttributeError):
        r.shift = None


def test_inputs_untouched():
    rng = np.random.default_rng(17)
    a = rng.poisson(3.0, (40, 50)).astype(np.uint32)
    b = np.roll(a, 2, axis=1).astype(np.float64)
    a0, b0 = a.copy(), b.copy()
    for kw in ({}, {"normalization": "phase"}, {"window": "tukey"}, {"roi": a > 2}):
        register(a, b, **kw)
        cross_correlation(a, b, upsample=3, **kw)
    register(a, np.stack([b, b]))
    assert_array_equal(a, a0)
    assert_array_equal(b, b0)
    assert a.dtype == np.uint32 and b.dtype == np.float64


# --------------------------------------------------------------- roi ---
def test_roi_slices_and_mask_bounding_box():
    rng = np.random.default_rng(19)
    base = dpc_like(rng, n=96)
    moved = fourier_shift(base, (-1.25, 2.5))
    sl = (slice(20, 76), slice(10, 90))
    mask = np.zeros(base.shape, bool)
    mask[20, 10] = mask[75, 89] = True  # bounding box == sl
    by_slice = register(base, moved, roi=sl, upsample=100)
    by_mask = register(base, moved, roi=mask, upsample=100)
    assert_array_equal(by_slice.shift, by_mask.shift)
    assert_allclose(by_slice.shift, (1.25, -2.5), atol=0.15)  # not periodic inside the roi: edge effects


def test_window_keeps_the_shift():
    rng = np.random.default_rng(23)
    base = dpc_like(rng, n=96)
    moved = fourier_shift(base, (3.4, -1.7))
    for window in ("hann", "tukey"):
        # the taper stays put while the content moves: a small bias towards 0 (0.04 px measured)
        assert_allclose(register(base, moved, window=window, upsample=50).shift, (-3.4, 1.7), atol=0.1)


# ------------------------------------------------------- bad input ---
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"moving": np.zeros((32, 31))}, r"\(32, 32\).*\(32, 31\)"),
        ({"reference": np.full((32, 32), np.nan)}, "reference contains NaN"),
        ({"moving": np.full((32, 32), np.inf)}, "moving contains NaN or infinity"),
        ({"upsample": 0}, "upsample=0"),
        ({"upsample": 0.5}, "upsample=0.5"),
        ({"upsample": 2.5}, "upsample=2.5"),
        ({"normalization": "none"}, "normalization='none'"),
        ({"window": "hamming"}, "window='hamming'"),
        ({"roi": (slice(5, 5), slice(0, 10))}, r"roi=.*selects 0 px"),
        ({"roi": np.zeros((32, 32), bool)}, "roi mask selects no pixels"),
        ({"roi": np.ones((16, 16), bool)}, r"roi mask has shape \(16, 16\)"),
        ({"moving": np.zeros((3, 32, 32)), "reference": np.zeros((4, 32, 32))}, "4 images.*3"),
        ({"moving": np.zeros(32)}, r"moving has shape \(32,\)"),
        ({"moving": np.zeros((32, 32), complex)}, "complex"),
    ],
)
def test_bad_input_raises_value_error_naming_it(kwargs, match):
    args = {"reference": np.zeros((32, 32)), "moving": np.zeros((32, 32))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        register(args.pop("reference"), args.pop("moving"), **args)


def test_nan_outside_roi_is_ignored():
    rng = np.random.default_rng(29)
    base = dpc_like(rng, n=64)
    moved = fourier_shift(base, (0.0, -2.0))
    base = base.copy()
    base[0, 0] = np.nan
    r = register(base, moved, roi=(slice(8, 56), slice(8, 56)), upsample=20)
    assert_allclose(r.shift, (0.0, 2.0), atol=0.1)  # the known shift, as if the NaN were not there


# ---------------------------------------------------- peak quality ---
def test_fwhm_of_gaussian_blobs():
    """Two Gaussian blobs of sigma s correlate as a Gaussian of sigma s*sqrt(2)."""
    n, sigma = 96, 1.8
    a = gaussian_blob(n, sigma, (40.0, 50.0))
    b = gaussian_blob(n, sigma, (43.3, 47.6))
    r = register(a, b, upsample=100)
    assert_allclose(r.shift, (-3.3, 2.4), atol=0.011)
    expected = FWHM_PER_SIGMA * sigma * math.sqrt(2)
    assert_allclose(r.fwhm, [expected, expected], rtol=0.01)
    assert r.peak == pytest.approx(1.0, abs=0.01)
    # the same width from the 6x upsampled CC image, along x, y and the diagonal
    w = cc_fwhm(cross_correlation(a, b, upsample=6), upsample=6)
    assert_allclose(w, [expected] * 3, rtol=0.01)


def test_psr_separates_signal_from_noise():
    rng = np.random.default_rng(31)
    base = dpc_like(rng, n=96)
    good = register(base, fourier_shift(base, (1.5, 2.0)) + 0.3 * rng.standard_normal(base.shape))
    noise = register(rng.standard_normal((96, 96)), rng.standard_normal((96, 96)))
    assert good.psr > 20 and good.peak > 0.9
    assert noise.psr < 6 and abs(noise.peak) < 0.1


def test_cc_fwhm_recovers_known_gaussian():
    up = 6
    for fwhm_x, fwhm_y in [(1.5, 1.5), (1.5, 3.0), (25.0, 25.0)]:
        n = int(4 * max(fwhm_x, fwhm_y) * up) + 21
        y, x = (np.mgrid[:n, :n] - n // 2) / up + 0.3 / up  # peak between samples
        sx, sy = fwhm_x / FWHM_PER_SIGMA, fwhm_y / FWHM_PER_SIGMA
        cc = np.exp(-(x**2) / (2 * sx**2) - y**2 / (2 * sy**2))
        w = cc_fwhm(cc, upsample=up)
        assert isinstance(w, CCWidth)
        # along the 45-degree line: 1/s_d^2 = (1/sx^2 + 1/sy^2) / 2
        sd = math.sqrt(2 / (1 / sx**2 + 1 / sy**2))
        assert_allclose(w, [fwhm_x, fwhm_y, FWHM_PER_SIGMA * sd], rtol=0.01)


def test_cc_fwhm_nan_when_no_half_maximum():
    assert all(math.isnan(v) for v in cc_fwhm(np.ones((9, 9))))
    with pytest.raises(ValueError, match="upsample=0"):
        cc_fwhm(np.ones((9, 9)), upsample=0)


def test_cross_correlation_centre_is_zero_shift_and_matches_register():
    rng = np.random.default_rng(37)
    a = dpc_like(rng, n=64)
    b = fourier_shift(a, (-2.5, 1.0 + 1 / 3))
    for up in (1, 6):
        cc = cross_correlation(a, b, upsample=up)
        assert cc.shape == (64 * up, 64 * up) and cc.dtype == np.float32
        i, j = np.unravel_index(np.argmax(cc), cc.shape)
        assert_allclose([(i - cc.shape[0] // 2) / up, (j - cc.shape[1] // 2) / up], (2.5, -4 / 3), atol=0.5 / up + 1e-9)
    assert cc.max() == pytest.approx(register(a, b, upsample=60).peak, abs=0.01)
    assert cross_correlation(a, a)[32, 32] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------- simulator ---
def test_simulated_dpc_pairs_register():
    """Two 3 ms maps of a small cell at the same angle (no runout): DPC registers at ~0,
    and a known scan offset of the second map is recovered."""
    from xfct_bluesky.physics import MicroprobeSimulator, no_runout, small_cell

    sim = MicroprobeSimulator(small_cell(8e-6), runout=no_runout(), seed=3)
    p = 200e-9
    a = sim.simulate_map((64, 64), p, 3e-3, 30.0, spectra=False).maps
    b = sim.simulate_map((64, 64), p, 3e-3, 30.0, spectra=False).maps
    offset = np.array([0.7, -2.3])  # px: the second map's scan centre moves by offset * p
    c = sim.simulate_map((64, 64), p, 3e-3, 30.0, map_center=tuple(offset * p), spectra=False).maps
    same = register(a["dpc_diag"], b["dpc_diag"], upsample=100)
    assert np.all(np.abs(same.shift) < 0.1)
    assert same.peak > 0.8
    # moving the scan centre by +d moves the features by -d px: +d registers them back
    moved = register(a["dpc_diag"], c["dpc_diag"], upsample=100)
    assert_allclose(moved.shift, offset, atol=0.1)
    # the DPC peak is far sharper and stronger than the Zn one at this dose
    zn = register(a["Zn"], b["Zn"], upsample=20)
    assert same.peak > 3 * zn.peak
