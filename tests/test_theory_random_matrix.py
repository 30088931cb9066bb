"""Random matrix theory against Monte-Carlo: the Fuss-Catalan law, its edge, and the Lyapunov rate."""

import numpy as np
import pytest
from scipy.integrate import quad

from normlib import theory


def product(num_factors, width, rng):
    p = np.eye(width)
    for _ in range(num_factors):
        p = rng.normal(0.0, 1.0 / np.sqrt(width), (width, width)) @ p
    return p


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_density_integrates_to_the_fuss_catalan_moments(m):
    xmax = theory.fuss_catalan_max(m)
    for k in range(3):
        # substitute x = xmax * u**(m+1) to tame the x^(-m/(m+1)) singularity at 0
        def integrand(u, k=k):
            x = xmax * u ** (m + 1)
            return x**k * theory.fuss_catalan_density(x, m)[0] * xmax * (m + 1) * u**m

        value, _ = quad(integrand, 0, 1, limit=200)
        assert value == pytest.approx(theory.fuss_catalan_moment(k, m), rel=2e-3)


def test_one_factor_is_marchenko_pastur_and_the_quarter_circle():
    x = np.linspace(0.05, 3.95, 50)
    np.testing.assert_allclose(theory.fuss_catalan_density(x, 1), np.sqrt((4 - x) / x) / (2 * np.pi), rtol=1e-6)
    s = np.linspace(0.05, 1.95, 50)
    np.testing.assert_allclose(theory.product_singular_value_density(s, 1), theory.quarter_circle_density(s), rtol=1e-6)


def test_largest_singular_values_are_the_papers_figure_ranges():
    assert [round(theory.product_singular_value_max(m), 2) for m in (1, 3, 5)] == [2.0, 3.08, 3.86]
    assert theory.fuss_catalan_moment(2, 3) == 4.0  # binom(8, 2) / 7


@pytest.mark.parametrize("m", [1, 3])
def test_monte_carlo_spectrum_follows_the_cdf(m):
    rng = np.random.default_rng(0)
    squares = np.sort(np.concatenate([np.linalg.svd(product(m, 300, rng), compute_uv=False) ** 2 for _ in range(2)]))
    n = len(squares)
    cdf = theory.fuss_catalan_cdf(squares, m)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 0.02
    wrong = theory.fuss_catalan_cdf(squares, m + 1)  # the law with one factor too many is far off
    assert max(np.max(np.arange(1, n + 1) / n - wrong), np.max(wrong - np.arange(n) / n)) > 0.05


def test_cdf_is_monotone_from_zero_to_one():
    x = np.linspace(-1, 12, 400)
    cdf = theory.fuss_catalan_cdf(x, 3)
    assert cdf[0] == 0 and cdf[-1] == 1 and np.all(np.diff(cdf) >= 0)


def test_lyapunov_exponents_sum_to_the_expected_log_determinant():
    rng = np.random.default_rng(1)
    width = 6
    logdets = [np.linalg.slogdet(rng.normal(0, 1 / np.sqrt(width), (width, width)))[1] for _ in range(20000)]
    assert np.mean(logdets) == pytest.approx(theory.lyapunov_exponents(width).sum(), abs=0.03)


def test_condition_number_rate_matches_deep_products():
    rng = np.random.default_rng(2)
    width, depths = 8, [4, 12]
    means = []
    for depth in depths:
        values = [np.linalg.svd(product(depth, width, rng), compute_uv=False) for _ in range(300)]
        means.append(np.mean([np.log(v[0] / v[-1]) for v in values]))
    slope = (means[1] - means[0]) / (depths[1] - depths[0])
    assert slope == pytest.approx(theory.condition_number_rate(width), rel=0.1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_factors"):
        theory.fuss_catalan_max(0)
    with pytest.raises(ValueError, match="width"):
        theory.lyapunov_exponents(1)


def test_distance_between_laws_is_a_symmetric_sup_and_matches_sampling():
    assert theory.fuss_catalan_distance(3, 3) == 0
    assert theory.fuss_catalan_distance(1, 3) == pytest.approx(theory.fuss_catalan_distance(3, 1))
    # a large sample of the M = 3 law sits at that distance from the M = 1 law
    rng = np.random.default_rng(4)
    squares = np.sort(np.concatenate([np.linalg.svd(product(3, 300, rng), compute_uv=False) ** 2 for _ in range(2)]))
    n = len(squares)
    cdf = theory.fuss_catalan_cdf(squares, 1)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks == pytest.approx(theory.fuss_catalan_distance(3, 1), abs=0.03)
