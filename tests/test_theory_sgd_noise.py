"""The SGD-noise law against Monte-Carlo sampling of mini-batches."""

import numpy as np
import pytest

from normlib import theory


def test_without_replacement_matches_the_finite_pool_law():
    rng = np.random.default_rng(0)
    pool, dim = 50, 20
    gradients = rng.normal(size=(pool, dim)) * rng.uniform(0.5, 2, dim)
    full = gradients.mean(axis=0)
    variance = ((gradients - full) ** 2).sum(axis=1).mean()
    for size in (1, 5, 25, 49):
        draws = [
            ((gradients[rng.choice(pool, size, replace=False)].mean(axis=0) - full) ** 2).sum() for _ in range(20000)
        ]
        assert np.mean(draws) == pytest.approx(theory.sgd_noise(variance, size, pool_size=pool), rel=0.03)
        assert theory.sgd_noise(variance, size, pool_size=pool) <= theory.sgd_noise_bound(variance, size)


def test_with_replacement_equals_the_papers_bound_and_scales_with_the_step():
    rng = np.random.default_rng(1)
    gradients = rng.normal(size=(40, 10))
    full = gradients.mean(axis=0)
    variance = ((gradients - full) ** 2).sum(axis=1).mean()
    draws = [((gradients[rng.integers(0, 40, 8)].mean(axis=0) - full) ** 2).sum() for _ in range(20000)]
    assert np.mean(draws) == pytest.approx(theory.sgd_noise_bound(variance, 8), rel=0.03)
    assert theory.sgd_noise_bound(variance, 8, 0.1) == pytest.approx(0.01 * theory.sgd_noise_bound(variance, 8))


def test_full_batch_has_no_noise_and_bad_input_is_refused():
    assert theory.sgd_noise(3.0, 10, pool_size=10) == 0
    with pytest.raises(ValueError, match="batch_size"):
        theory.sgd_noise(1.0, 0)
    with pytest.raises(ValueError, match="pool_size"):
        theory.sgd_noise(1.0, 20, pool_size=10)
