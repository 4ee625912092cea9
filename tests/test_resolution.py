"""Resolution the way the field measures it (xfct_bluesky.analysis.resolution), against analytic answers.

The object is a white-noise texture blurred by a Gaussian of known sigma
(periodic, ``mode="wrap"``), ``lam = C (1 + g)``, imaged twice with
independent Poisson noise. Its expected FRC is analytic: the signal power
per Fourier sample is ``C^2 sw^2 exp(-4 pi^2 sigma^2 k^2)`` (``sw`` the
texture's standard deviation, ``exp(-2 pi^2 sigma^2 k^2)`` the Gaussian's
transfer function), the Poisson noise power ``C`` at every frequency, so
``FRC(k) = SNR / (1 + SNR)`` with ``SNR = C sw^2 exp(-4 pi^2 sigma^2 k^2)``;
a ring of radius ``k`` holds ``n = 2 pi k N`` samples (a shell
``4 pi k^2 N^2``). The expected crossing solves ``FRC(k) = T(n(k))``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage
from scipy.optimize import brentq

from xfct_bluesky import analysis
from xfct_bluesky.analysis.resolution import (
    Comparison,
    FourierCorrelation,
    compare_to_reference,
    fourier_ring_correlation,
    fourier_shell_correlation,
    half_bit_threshold,
    resolution,
)

SW = 0.6  # standard deviation of the white texture before blurring (keeps lam > 0 at sigma >= 1)


def pair(C, sigma, shape, seed):
    """Two independent Poisson images (or volumes) of the same blurred texture at ``C`` counts per pixel."""
    rng = np.random.default_rng(seed)
    lam = C * (1 + ndimage.gaussian_filter(rng.normal(0, SW, shape), sigma, mode="wrap"))
    assert lam.min() > 0
    return rng.poisson(lam), rng.poisson(lam)


def expected_crossing(C, sigma, N, ndim=2, criterion="half-bit"):
    """Frequency (cycles/px) where the analytic FRC of :func:`pair` meets the threshold."""
    def excess(k):
        snr = C * SW**2 * math.exp(-4 * math.pi**2 * sigma**2 * k**2)
        n = 2 * math.pi * k * N if ndim == 2 else 4 * math.pi * k**2 * N**2
        t = half_bit_threshold(n) if criterion == "half-bit" else 1 / 7
        return snr / (1 + snr) - t
    return brentq(excess, 1.0 / N, 0.5)


def fourier_shift(img, shift):
    """``img`` translated by ``shift`` px per axis, periodically and exactly (band-limited)."""
    return np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(img), shift)).real


def test_exported_from_analysis_without_hiding_the_module():
    # `from .resolution import resolution` in analysis/__init__ would rebind the package attribute to the
    # function, and `import xfct_bluesky.analysis.resolution as m` would then give the function
    import xfct_bluesky.analysis.resolution as module

    assert module.resolution is resolution
    assert analysis.frc_resolution is resolution
    for name in ("Comparison", "FourierCorrelation", "Resolution", "compare_to_reference",
                 "fourier_ring_correlation", "fourier_shell_correlation", "half_bit_threshold"):
        assert getattr(analysis, name) is getattr(module, name)
        assert name in analysis.__all__


# ------------------------------------------------------------ threshold ---
def test_half_bit_threshold_values():
    # van Heel & Schatz 2005: 1 for a single sample, 0.2071/1.2071 for large rings
    assert_allclose(half_bit_threshold([1]), [1.0], rtol=1e-4)
    assert_allclose(half_bit_threshold(1e12), 0.2071 / 1.2071, rtol=1e-5)
    n = 100.0
    assert_allclose(half_bit_threshold(n), (0.2071 + 1.9102 / 10) / (1.2071 + 0.9102 / 10))
    with pytest.raises(ValueError, match="below 1"):
        half_bit_threshold([0.5, 3])


# ------------------------------------------------ Gaussian blur, known sigma ---
N2 = 128
SEEDS = range(4)


@pytest.mark.parametrize("C", [1000, 100, 30])
def test_frc_crossing_moves_down_with_blur_as_expected(C):
    means = []
    for sigma in (1.0, 1.5, 2.0):
        expected = expected_crossing(C, sigma, N2)
        found = []
        for seed in SEEDS:
            a, b = pair(C, sigma, (N2, N2), seed)
            res = resolution(fourier_ring_correlation(a, b, window=None))
            assert res.status == "crossed" and res.valid, res.reason
            assert abs(res.frequency - expected) < 0.03, (sigma, seed, res.frequency, expected)
            assert res.resolution_px == pytest.approx(1 / res.frequency)
            found.append(res.frequency)
        # measured over 12 seeds: mean within 0.005 of the expectation, spread 0.003-0.009
        assert abs(np.mean(found) - expected) < 0.015, (sigma, np.mean(found), expected)
        means.append(np.mean(found))
    assert means[0] > means[1] > means[2]


def test_frc_crossing_moves_down_as_counts_fall():
    sigma = 1.5
    means = []
    for C in (1000, 100, 30):
        found = [resolution(fourier_ring_correlation(*pair(C, sigma, (N2, N2), seed), window=None)).frequency
                 for seed in SEEDS]
        assert abs(np.mean(found) - expected_crossing(C, sigma, N2)) < 0.015
        means.append(np.mean(found))
    assert means[0] > means[1] > means[2]
    # and by the analytic amount: 0.279 -> 0.227 -> 0.193 cycles/px
    assert means[0] - means[2] == pytest.approx(expected_crossing(1000, sigma, N2) - expected_crossing(30, sigma, N2),
                                                abs=0.02)


def test_one_seventh_criterion_is_the_constant_threshold():
    # with a constant threshold the crossing is closed-form: SNR = 1/6
    C, sigma = 100, 1.5
    analytic = math.sqrt(math.log(6 * C * SW**2)) / (2 * math.pi * sigma)
    assert expected_crossing(C, sigma, N2, criterion="1/7") == pytest.approx(analytic)
    found = [resolution(fourier_ring_correlation(*pair(C, sigma, (N2, N2), seed), window=None), "1/7").frequency
             for seed in SEEDS]
    assert np.mean(found) == pytest.approx(analytic, abs=0.015)
    frc = fourier_ring_correlation(*pair(C, sigma, (N2, N2), 0))
    assert_allclose(frc.one_seventh, 1 / 7)


def test_tukey_window_does_not_bias_a_periodic_image():
    C, sigma = 100, 1.5
    found = [resolution(fourier_ring_correlation(*pair(C, sigma, (N2, N2), seed))).frequency for seed in SEEDS]
    assert np.mean(found) == pytest.approx(expected_crossing(C, sigma, N2), abs=0.015)


def test_window_removes_the_edge_correlation_of_a_cut_specimen():
    # a smooth ramp cut by the field's edges: no detail finer than the field, but the FFT's wrap-around
    # makes a step whose power correlates at every frequency. Measured: 0.25-0.30 cycles/px without a
    # window (spurious), 0.09-0.10 with the Tukey window, 0.03-0.05 with Hann
    y, x = np.mgrid[:96, :96]
    lam = 50 * (1 + 2 * x / 96 + y / 96)
    rng = np.random.default_rng(0)
    a, b = rng.poisson(lam), rng.poisson(lam)
    bare = resolution(fourier_ring_correlation(a, b, window=None)).frequency
    tukey = resolution(fourier_ring_correlation(a, b, window="tukey")).frequency
    hann = resolution(fourier_ring_correlation(a, b, window="hann")).frequency
    assert bare > 0.2
    assert tukey < 0.12
    assert hann < tukey


def test_pixel_size_gives_metres():
    a, b = pair(100, 1.5, (64, 64), 0)
    frc = fourier_ring_correlation(a, b, pixel_size=300e-9)
    assert_allclose(frc.frequency_per_m, frc.frequency / 300e-9)
    res = resolution(frc)
    assert res.frequency_per_m == pytest.approx(res.frequency / 300e-9)
    assert res.resolution_m == pytest.approx(300e-9 * res.resolution_px)
    bare = resolution(fourier_ring_correlation(a, b))
    assert bare.frequency_per_m is None and bare.resolution_m is None


def test_rings_and_samples():
    a, b = pair(100, 1.5, (64, 64), 0)
    frc = fourier_ring_correlation(a, b)
    assert frc.correlation.shape == frc.frequency.shape == frc.n_samples.shape == (32,)
    # ring 1 holds the 8 neighbours of DC; ring r about 2 pi r samples
    assert frc.n_samples[0] == 8
    # the half spectrum's samples counted as the full spectrum's: count those directly
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")) * 64
    full = np.bincount(np.rint(radius).astype(int).ravel())[1:33]
    np.testing.assert_array_equal(frc.n_samples, full)
    assert frc.n_samples.sum() == pytest.approx(np.pi * 32.5**2, rel=0.01)
    assert_allclose(frc.frequency, np.arange(1, 33) / 64, atol=0.3 / 64)
    assert_allclose(frc.half_bit, half_bit_threshold(frc.n_samples))
    coarse = fourier_ring_correlation(a, b, rings=8)
    assert coarse.frequency.shape == (8,)
    assert_allclose(coarse.frequency[-1], 0.5, atol=0.02)
    # non-square images: rings as wide as the shorter axis' Fourier pixel
    assert fourier_ring_correlation(a[:, :40], b[:, :40]).frequency.shape == (20,)


# -------------------------------------------------------------- limits ---
def test_identical_images_correlate_fully_and_are_at_nyquist():
    a, _ = pair(100, 1.0, (64, 64), 3)
    frc = fourier_ring_correlation(a, a)
    assert_allclose(frc.correlation, 1.0, atol=1e-12)
    res = resolution(frc)
    assert res.status == "at Nyquist" and not res.valid
    assert math.isnan(res.frequency) and math.isnan(res.resolution_px)
    assert "Nyquist" in res.reason and "2 px" in res.reason


def test_independent_noise_has_no_signal():
    # FRC of independent noise: mean 0 and variance 1/n per ring (n samples, Hermitian pairs counted
    # twice); below the half-bit threshold from the first ring, except when ring 1 (8 samples) happens
    # to exceed it: measured 5 of 40 realisations, then the "crossing" is in the first rings
    statuses, z = [], []
    rng = np.random.default_rng(7)
    for _ in range(40):
        a, b = rng.poisson(50, (64, 64)), rng.poisson(50, (64, 64))
        frc = fourier_ring_correlation(a, b, window=None)
        z.append(frc.correlation * np.sqrt(frc.n_samples))
        res = resolution(frc)
        statuses.append(res.status)
        if res.status == "crossed":
            assert res.resolution_px > 64 / 4
        else:
            assert res.status == "no signal" and not res.valid and math.isnan(res.frequency)
            assert "first ring" in res.reason
    z = np.concatenate(z)
    assert abs(z.mean()) < 0.1  # 1280 values: the mean's standard error is 0.03
    assert np.mean(z**2) == pytest.approx(1.0, abs=0.1)
    assert abs(z).max() < 4.5
    assert statuses.count("no signal") >= 32


def test_constant_images_have_no_signal():
    frc = fourier_ring_correlation(np.full((32, 32), 5.0), np.full((32, 32), 5.0))
    assert_allclose(frc.correlation, 0.0)
    assert resolution(frc).status == "no signal"


# ------------------------------------------------------------------ 3D ---
def test_fsc_of_two_noisy_volumes_crosses_where_expected():
    N = 40
    for C, sigma in ((100, 1.5), (100, 2.5), (10, 1.5)):
        expected = expected_crossing(C, sigma, N, ndim=3)
        a, b = pair(C, sigma, (N, N, N), 0)
        frc = fourier_shell_correlation(a, b, window=None, pixel_size=300e-9)
        # measured over 5 seeds: within 0.005 of the expectation, spread 0.002-0.004
        res = resolution(frc)
        assert res.valid
        assert res.frequency == pytest.approx(expected, abs=0.012), (C, sigma)
        assert res.resolution_m == pytest.approx(300e-9 / res.frequency)
    # shells hold about 4 pi r^2 samples
    assert_allclose(frc.n_samples[9:], 4 * np.pi * np.arange(10, 21) ** 2, rtol=0.1)
    same = fourier_shell_correlation(a, a)
    assert_allclose(same.correlation, 1.0, atol=1e-12)
    assert resolution(same).status == "at Nyquist"


# ---------------------------------------------------------------- errors ---
def test_bad_input_is_refused_with_the_fix():
    a = np.ones((16, 16))
    with pytest.raises(ValueError, match="fourier_shell_correlation"):
        fourier_ring_correlation(np.ones((16, 16, 16)), np.ones((16, 16, 16)))
    with pytest.raises(ValueError, match="fourier_ring_correlation"):
        fourier_shell_correlation(a, a)
    with pytest.raises(ValueError, match=r"a has shape \(16, 16\) and b \(16, 12\)"):
        fourier_ring_correlation(a, np.ones((16, 12)))
    with pytest.raises(ValueError, match="at least 8 px"):
        fourier_ring_correlation(np.ones((6, 16)), np.ones((6, 16)))
    with pytest.raises(ValueError, match="rings=9: allowed an integer in 2..8"):
        fourier_ring_correlation(a, a, rings=9)
    with pytest.raises(ValueError, match="pixel_size=-3e-07 is out of range"):
        fourier_ring_correlation(a, a, pixel_size=-300e-9)
    with pytest.raises(ValueError, match="window='hamming' is not known; allowed: 'tukey', 'hann', None"):
        fourier_ring_correlation(a, a, window="hamming")
    bad = a.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="b holds NaN"):
        fourier_ring_correlation(a, bad)
    with pytest.raises(ValueError, match="complex"):
        fourier_ring_correlation(a + 1j, a)
    frc = fourier_ring_correlation(*pair(100, 1.5, (32, 32), 0))
    with pytest.raises(ValueError, match="criterion='half bit' is not known; allowed: 'half-bit', '1/7'"):
        resolution(frc, "half bit")
    with pytest.raises(TypeError, match="give the FourierCorrelation"):
        resolution(frc.correlation)
    assert isinstance(frc, FourierCorrelation)


def test_inputs_are_not_modified():
    a, b = pair(100, 1.5, (32, 32), 0)
    a = a.astype(np.float32)
    a0, b0 = a.copy(), b.copy()
    fourier_ring_correlation(a, b)
    compare_to_reference(a, b)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


# -------------------------------------------------- against the reference ---
def texture(shape, seed, sigma=2.0):
    """A smooth positive texture: 1 + 0.3 x (unit-variance noise blurred by ``sigma``), periodic."""
    g = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma, mode="wrap")
    return 1 + 0.3 * g / g.std()


def test_compare_recovers_a_known_scale_and_shift():
    ref = texture((96, 96), 1)
    true_shift = np.array([2.337, -1.414])  # what registers the image onto the reference
    img = fourier_shift(ref, -true_shift) / 1.7
    out = compare_to_reference(img, ref)
    assert isinstance(out, Comparison)
    assert_allclose(out.shift, true_shift, atol=0.05)
    assert out.scale == pytest.approx(1.7, rel=1e-3)
    assert out.nrmse < 1e-3
    assert out.ssim > 0.999
    # the pixels the shift wrapped in are left out
    assert out.overlap == (slice(3, 96), slice(0, 94))
    # as it lies, the image is far off
    off = compare_to_reference(img, ref, register=False)
    assert_allclose(off.shift, 0.0)
    assert off.nrmse > 10 * out.nrmse and off.ssim < out.ssim


def test_compare_under_noise_still_finds_the_shift():
    ref = texture((96, 96), 2)
    true_shift = np.array([-1.6, 2.3])
    rng = np.random.default_rng(0)
    counts = 200
    img = rng.poisson(counts * fourier_shift(ref, -true_shift))
    out = compare_to_reference(img, ref)
    assert_allclose(out.shift, true_shift, atol=0.05)
    assert out.scale == pytest.approx(1 / counts, rel=0.01)
    # Poisson noise of sqrt(200 * ref) counts on 200 * ref: NRMSE = sqrt(mean(ref) / 200) / rms(ref)
    crop = ref[out.overlap]
    expected = math.sqrt(crop.mean() / counts) / math.sqrt(np.mean(crop**2))
    assert out.nrmse == pytest.approx(expected, rel=0.1)


def test_compare_exact_image_and_volume():
    ref = texture((48, 48), 3)
    same = compare_to_reference(ref, ref)
    assert same.nrmse < 1e-12 and same.ssim == pytest.approx(1.0, abs=1e-9)
    assert same.scale == pytest.approx(1.0)
    assert_allclose(same.shift, 0.0, atol=1e-9)
    vol = texture((32, 40, 36), 4)
    true_shift = np.array([1.6, -2.3, 1.4])
    out = compare_to_reference(fourier_shift(vol, -true_shift) * 0.5, vol)
    assert_allclose(out.shift, true_shift, atol=0.05)
    assert out.scale == pytest.approx(2.0, rel=1e-3)
    assert out.nrmse < 1e-3 and out.ssim > 0.999


def test_compare_refuses_what_it_cannot_compare():
    ref = texture((32, 32), 5)
    with pytest.raises(ValueError, match=r"image has shape \(32, 30\) and reference \(32, 32\)"):
        compare_to_reference(ref[:, :30], ref)
    with pytest.raises(ValueError, match="reference is all zero"):
        compare_to_reference(ref, np.zeros_like(ref))
    with pytest.raises(ValueError, match="moving has no signal"):
        compare_to_reference(np.zeros_like(ref), ref)
    with pytest.raises(ValueError, match="2D image or a 3D volume"):
        compare_to_reference(ref[0], ref[0])
    with pytest.raises(ValueError, match="upsample=0: allowed an integer >= 1"):
        compare_to_reference(ref, ref, upsample=0)
