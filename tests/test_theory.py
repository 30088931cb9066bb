"""normlib.theory against Monte-Carlo simulations written here, and against its own closed forms."""

import numpy as np
import pytest

from normlib import theory


def test_relu_constants_match_monte_carlo():
    z = np.random.default_rng(0).standard_normal(2_000_000)
    relu = np.maximum(z, 0)
    assert np.mean(relu**2) == pytest.approx(theory.RELU_SECOND_MOMENT, abs=2e-3)
    assert np.var(relu) == pytest.approx(theory.RELU_VARIANCE, abs=2e-3)
    assert np.var(np.abs(z)) == pytest.approx(theory.HALF_NORMAL_VARIANCE_FRACTION, abs=2e-3)


def test_linear_growth_closed_form_and_resets():
    values = theory.linear_growth(6, 0.5, 1.0, reset_blocks=[4])
    np.testing.assert_allclose(values, [1.0, 1.5, 2.0, 2.5, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(theory.linear_growth(3, 1.0, 0.0, [2], reset_value=7.0), [0, 1, 7, 8])


def _simulate_lindley(blocks, step_variance, start_variance, resets=(), reset_variance=None, walkers=400_000):
    rng = np.random.default_rng(1)
    x = np.maximum(rng.normal(0, np.sqrt(start_variance), walkers), 0)
    second, variance = [np.mean(x**2)], [np.var(x)]
    for block in range(1, blocks + 1):
        if block in resets:
            x = np.maximum(rng.normal(0, np.sqrt(reset_variance), walkers), 0)
        else:
            x = np.maximum(x + rng.normal(0, np.sqrt(step_variance), walkers), 0)
        second.append(np.mean(x**2))
        variance.append(np.var(x))
    return np.array(second), np.array(variance)


def test_lindley_grid_matches_monte_carlo():
    second, variance = _simulate_lindley(12, 1.0, 1.0, resets=(7,), reset_variance=2.0)
    predicted = theory.lindley_growth(12, 1.0, 1.0, reset_blocks=[7], reset_variance=2.0)
    np.testing.assert_allclose(predicted, second, rtol=0.01)
    predicted_var = theory.lindley_growth(12, 1.0, 1.0, [7], 2.0, statistic="variance")
    np.testing.assert_allclose(predicted_var, variance, rtol=0.01)


def test_lindley_asymptotics():
    """Reflected Gaussian walk: E[x^2] / (s^2 l) -> 1 and Var / E[x^2] -> 1 - 2/pi, with O(1/sqrt(l)) corrections."""
    second = theory.lindley_growth(400, 2.0, 2.0, grid_points=1501)
    variance = theory.lindley_growth(400, 2.0, 2.0, statistic="variance", grid_points=1501)
    gaps = [abs(second[l] / (2.0 * l) - 1) for l in (25, 100, 400)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.05
    assert variance[-1] / second[-1] == pytest.approx(theory.HALF_NORMAL_VARIANCE_FRACTION, rel=0.05)


def test_geometric_flat_and_nf():
    np.testing.assert_allclose(theory.geometric_growth(3, 2.0, 0.5), [0.5, 1, 2, 4])
    np.testing.assert_allclose(theory.flat(2, 3.0), [3, 3, 3])
    np.testing.assert_allclose(theory.nf_expected_variance(4, 0.5, [3]), [1, 1.25, 1.5, 1.25, 1.5])


def test_growth_factor_distinguishes_laws():
    assert theory.growth_factor(theory.geometric_growth(10, 2.0, 1.0)) == pytest.approx(2.0)
    assert theory.growth_factor(theory.flat(10, 1.0)) == pytest.approx(1.0)
    assert theory.growth_factor(np.arange(1.0, 12.0)) == pytest.approx(11.0 ** (1 / 10))
    # a restart is left out when asked
    values = np.array([1.0, 2.0, 4.0, 0.5, 1.0])
    assert theory.growth_factor(values, exclude_blocks=[3]) == pytest.approx(2.0)
    assert np.isnan(theory.growth_factor(np.array([1.0, 0.0, 1.0])))


def test_stages_split_a_curve_at_the_downsampling_blocks():
    assert theory.stages(10, [4, 7]) == [(0, 3), (4, 6), (7, 9)]
    assert theory.stages(5) == [(0, 4)]


def test_increment_acceleration_tells_linear_from_exponential_with_the_same_growth_factor():
    linear = np.arange(1.0, 11.0)  # adds 1 per block
    exponential = linear[0] * theory.growth_factor(linear) ** np.arange(10.0)
    assert theory.growth_factor(exponential) == pytest.approx(theory.growth_factor(linear))
    assert theory.increment_acceleration(linear) == pytest.approx(1.0)
    assert theory.increment_acceleration(exponential) == pytest.approx(theory.growth_factor(linear))
    assert theory.increment_acceleration(theory.geometric_growth(9, 1.7, 2.0)) == pytest.approx(1.7)
    # stages are taken one by one: a restart does not count as an increment
    restarted = np.concatenate([np.arange(1.0, 6.0), np.arange(0.5, 5.5)])
    assert theory.increment_acceleration(restarted, exclude_blocks=[5]) == pytest.approx(1.0)
    settling = 2.0 - 0.5 ** np.arange(10.0)
    assert theory.increment_acceleration(settling) < 1.0
    assert np.isnan(theory.increment_acceleration(theory.flat(8, 1.0)))  # no increments at all


def test_downsampling_jump_is_the_ratio_at_the_restarts():
    values = np.array([1.0, 2.0, 4.0, 1.0, 2.0, 8.0, 16.0])
    assert theory.downsampling_jump(values, [3, 5]) == pytest.approx(np.sqrt(0.25 * 4.0))
    with pytest.raises(ValueError):
        theory.downsampling_jump(values, [])


def test_padding_fraction_counts_taps():
    assert theory.padding_fraction(1) == pytest.approx((1 / 3) ** 2)
    assert theory.padding_fraction(16) == pytest.approx(((3 * 16 - 2) / (3 * 16)) ** 2)
    assert theory.padding_fraction(2000) == pytest.approx(1.0, abs=1e-3)
    # a map of one pixel keeps 1/9 of the taps: f = 1/9 everywhere, so E[f(1 - f)] = (1/9)(8/9)
    assert theory.padding_leak(1) == pytest.approx(8 / 81)
    assert theory.padding_leak(64) < theory.padding_leak(4)


def test_mean_field_reduces_to_closed_forms():
    unit = theory.StreamUnit()  # centring normalizer, He convs, ReLU
    pre = theory.mean_field_stream(unit, 9, block="pre")
    np.testing.assert_allclose(pre, theory.linear_growth(9, 1.0, 0.5), rtol=0.01)
    post = theory.mean_field_stream(unit, 9, block="post", reset_blocks=[5])
    np.testing.assert_allclose(post, theory.lindley_growth(9, 1.0, 1.0, [5], 2.0), rtol=0.01)
    none_pre = theory.mean_field_stream(theory.STREAM_UNITS["none"], 24, block="pre")
    # the stem's output is a ReLU (not symmetric), so the first blocks grow faster; then exactly doubling
    assert theory.growth_factor(none_pre, skip=12) == pytest.approx(2.0, rel=0.01)
    skip = theory.mean_field_stream(unit, 9, block="post", skip_gain=0.0)
    np.testing.assert_allclose(skip, 0.5, rtol=0.01)


def test_mean_field_nf_brings_back_linear_growth():
    for name in ("none", "sws", "wn"):
        plain = theory.mean_field_stream(theory.STREAM_UNITS[name], 12, block="pre")
        values = theory.mean_field_stream(theory.STREAM_UNITS[name], 12, block="pre", nf_alpha=0.5, reset_blocks=[5])
        increments = np.diff(values)[5:]  # within the second stage
        assert theory.growth_factor(plain, skip=6) > 1.8
        assert theory.growth_factor(values, exclude_blocks=[5]) < 1.25
        assert np.std(increments) < 0.1 * np.mean(increments)


def test_mean_field_is_deterministic_and_validates():
    unit = theory.STREAM_UNITS["wn"]
    np.testing.assert_array_equal(theory.mean_field_stream(unit, 5), theory.mean_field_stream(unit, 5))
    with pytest.raises(ValueError, match="block"):
        theory.mean_field_stream(unit, 5, block="middle")
    with pytest.raises(ValueError, match="block='pre'"):
        theory.mean_field_stream(unit, 5, block="post", nf_alpha=0.2)
    with pytest.raises(ValueError, match="sizes"):
        theory.mean_field_stream(unit, 5, sizes=[8, 8])
    with pytest.raises(ValueError, match="reset_blocks"):
        theory.linear_growth(3, 1.0, 1.0, reset_blocks=[9])
