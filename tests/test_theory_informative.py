"""normlib.theory.informative against Monte-Carlo simulations written here."""

import numpy as np
import pytest
import torch

from normlib.theory import informative as inf


def test_relu_correlation_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for rho in (-0.5, 0.0, 0.3, 0.9):
        a = rng.standard_normal(1_000_000)
        b = rho * a + np.sqrt(1 - rho**2) * rng.standard_normal(1_000_000)
        simulated = np.mean(np.maximum(a, 0) * np.maximum(b, 0)) / np.mean(np.maximum(a, 0) ** 2)
        assert inf.relu_correlation(rho) == pytest.approx(simulated, abs=3e-3)
    assert inf.relu_correlation(0.0) == pytest.approx(1 / np.pi)
    assert inf.relu_correlation(1.0) == pytest.approx(1.0)


def test_input_correlations_on_constructed_images():
    # identical images: every correlation class equals the same-sample one, same position gives 1
    image = torch.rand(1, 1, 6, 6)
    c = inf.input_correlations(image.repeat(4, 1, 1, 1))
    assert c.same_position == pytest.approx(1.0)
    assert c.different == pytest.approx(c.same_sample)
    # independent centred noise: all correlations near 0
    noise = inf.input_correlations(torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    for value in (noise.same_sample, noise.same_position, noise.different):
        assert abs(value) < 0.05
    with pytest.raises(ValueError):
        inf.input_correlations(torch.rand(1, 1, 4, 4))


def _simulate_group_norm(c: inf.Correlations, group_size: int, positions: int, trials: int = 100_000):
    """Two samples, one group of `group_size` channels x `positions` positions, entries Gaussian with the given
    correlation classes; subtract each sample's group mean, return the centred correlations."""
    rng = np.random.default_rng(1)
    n = 2 * positions
    cov = np.empty((n, n))
    for a in range(n):
        for b in range(n):
            same_sample = (a < positions) == (b < positions)
            same_pos = a % positions == b % positions
            if a == b:
                cov[a, b] = 1.0
            elif same_sample:
                cov[a, b] = c.same_sample
            else:
                cov[a, b] = c.same_position if same_pos else c.different
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((trials, group_size, n)) @ chol.T  # channels independent, entries correlated
    first, second = z[..., :positions], z[..., positions:]
    first = first - first.mean(axis=(1, 2), keepdims=True)
    second = second - second.mean(axis=(1, 2), keepdims=True)
    var = np.mean(first**2)
    same_pos = np.mean(first * second) / var
    same_sample = np.mean(first[..., 0] * first[..., 1]) / var
    return same_pos, same_sample


@pytest.mark.parametrize("group_size", [1, 4])
def test_group_norm_centring_matches_simulation(group_size):
    c = inf.Correlations(same_sample=0.4, same_position=0.6, different=0.3)
    positions = 4
    predicted = inf.normalize_correlations(c, "gn", group_size=group_size, positions=positions)
    same_pos, same_sample = _simulate_group_norm(c, group_size, positions)
    assert predicted.same_position == pytest.approx(same_pos, abs=0.01)
    assert predicted.same_sample == pytest.approx(same_sample, abs=0.01)


def test_orderings_and_limits():
    start = inf.Correlations(0.3, 0.45, 0.2)
    finals = [
        inf.cosine_mean_field(12, start, "gn", group_size=g, positions=196, batch=32)[-1] for g in (1, 2, 4, 8, 16, 64)
    ]
    assert all(a < b for a, b in zip(finals, finals[1:]))  # similarity rises with group size
    none = inf.cosine_mean_field(40, start, "none")
    assert none[-1] > 0.97 and np.all(np.diff(none) > 0)  # rank collapse without normalization
    assert inf.normalize_correlations(start, "none") == start
    with pytest.raises(ValueError, match="norm"):
        inf.normalize_correlations(start, "ln")


def test_stable_rank_bound_is_exact_for_equicorrelated_samples():
    n, cos = 16, 0.3
    matrix = np.full((n, n), cos) + (1 - cos) * np.eye(n)
    exact = n / np.linalg.eigvalsh(matrix)[-1]
    assert inf.stable_rank_bound(cos, n) == pytest.approx(exact)
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((n, 50)))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = x @ x.T
    mean_off = (m.sum() - n) / (n * (n - 1))
    assert n / np.linalg.eigvalsh(m)[-1] <= inf.stable_rank_bound(mean_off, n) + 1e-12
