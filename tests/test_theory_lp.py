"""normlib.theory.lp against Monte Carlo: the expected scaled deviations of the Lp batch norms, the order statistics
of |z|, and the float16 overflow sizes (against the equations they solve)."""

import math

import numpy as np
import pytest

from normlib import theory

RNG_SEED = 7


def mc_ratios(n, repeats=40_000, k=10, seed=RNG_SEED):
    """Monte-Carlo mean and standard error of s / sigma for standard Gaussian samples of size n (numpy, float64)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((repeats, n))
    centred = np.abs(x - x.mean(axis=1, keepdims=True))
    c = (1 + math.sqrt(math.pi * math.log(4))) / (2 * math.sqrt(2 * math.log(n)))
    ratios = {
        "l2": np.sqrt((centred**2).mean(axis=1)),
        "l1": math.sqrt(math.pi / 2) * centred.mean(axis=1),
        "linf": c * centred.max(axis=1),
        "topk": c * np.sort(centred, axis=1)[:, -min(k, n) :].mean(axis=1),
    }
    return {name: (v.mean(), v.std(ddof=1) / math.sqrt(repeats)) for name, v in ratios.items()}


@pytest.mark.parametrize("n", [12, 40, 300])
def test_deviation_ratios_match_monte_carlo(n):
    mc = mc_ratios(n)
    exact = {"l2": theory.l2_deviation_ratio(n), "l1": theory.l1_deviation_ratio(n)}
    for name, value in exact.items():  # exact formulas: within 4 standard errors
        mean, se = mc[name]
        assert abs(mean - value) < 4 * se, (name, mean, value, se)
    approx = {"linf": theory.linf_deviation_ratio(n), "topk": theory.topk_deviation_ratio(n, 10)}
    for name, value in approx.items():  # the neglected -1/(n-1) correlation: within 4 SE + 1/n
        mean, se = mc[name]
        assert abs(mean - value) < 4 * se + 1 / n, (name, mean, value, se)


def test_order_statistics_of_abs_gaussian():
    rng = np.random.default_rng(RNG_SEED)
    for n, k in ((1, 1), (5, 2), (200, 10), (2000, 1)):
        if n < 2:
            with pytest.raises(ValueError, match="n must be an integer >= 2"):
                theory.expected_max_abs(n)
            continue
        z = np.abs(rng.standard_normal((20_000, n)))
        top = np.sort(z, axis=1)[:, -k:].mean(axis=1)
        assert abs(top.mean() - theory.expected_topk_abs_mean(n, k)) < 4 * top.std() / math.sqrt(len(top))
    assert theory.expected_topk_abs_mean(50, 1) == pytest.approx(theory.expected_max_abs(50), rel=1e-6)
    assert theory.expected_topk_abs_mean(7, 7) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-6)  # all of them
    with pytest.raises(ValueError, match="k must be an integer in"):
        theory.expected_topk_abs_mean(5, 6)


def test_limits_and_paper_constants():
    assert theory.C_L1 == pytest.approx(math.sqrt(math.pi / 2))
    assert theory.c_linf(10**4) * math.sqrt(2 * math.log(10**4)) == pytest.approx(1.5434, abs=1e-4)
    assert theory.l1_deviation_ratio(10**6) == pytest.approx(1, abs=1e-6)
    assert theory.l2_deviation_ratio(10**6) == pytest.approx(1 - 3 / (4 * 10**6), abs=1e-9)
    # The L-infinity constant averages two bounds: the ratio stays between them, far from 1.
    for n in (100, 10**4, 10**6):
        assert 1.25 < theory.linf_deviation_ratio(n) < 1.5434


def test_overflow_sizes_solve_their_equations():
    for sigma in (0.5, 1.0, 4.0, 16.0):
        n2 = theory.l2_overflow_n(sigma)
        assert (n2 - 1) * sigma**2 == pytest.approx(theory.FP16_MAX)
        n1 = theory.l1_overflow_n(sigma)
        assert sigma * math.sqrt(2 / math.pi) * math.sqrt(n1 * (n1 - 1)) == pytest.approx(theory.FP16_MAX)
        assert (n1 > n2) == (sigma > math.sqrt(2 / math.pi))
    np.testing.assert_allclose(theory.l2_overflow_n([1.0, 2.0]), [65505.0, 16377.0])
    assert theory.l2_overflow_spread(201) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        theory.l2_overflow_n(0.0)


def test_sum_of_squares_crosses_the_limit_at_the_predicted_n():
    """Monte Carlo in float64 (no rounding): the n at which the running sum of squares of centred values passes
    65504 averages to the prediction."""
    rng = np.random.default_rng(RNG_SEED)
    sigma, crossings = 8.0, []
    for _ in range(200):
        x = sigma * rng.standard_normal(4000)
        crossings.append(np.argmax(np.cumsum(x**2) > theory.FP16_MAX) + 1)
    crossings = np.array(crossings)
    # the running sum of raw squares (mean known) crosses at 65504/sigma^2 + O(1); the centred sum one later
    assert abs(crossings.mean() - (theory.l2_overflow_n(sigma) - 1)) < 4 * crossings.std() / math.sqrt(200) + 1
