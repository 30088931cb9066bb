"""Principle C's theory against Monte-Carlo: the normalizer's backward pass, the BN factor, InstanceNorm's size law."""

import math

import numpy as np
import pytest
import torch

from normlib import theory
from normlib.theory import backward as tb


def test_bn_factor_is_yang_et_al():
    assert theory.bn_growth_factor() == pytest.approx(math.pi / (math.pi - 1))
    assert tb.group_growth_factor(1) == pytest.approx(math.pi / (math.pi - 1))
    assert tb.gradient_ratio(theory.bn_growth_factor(), 10) == pytest.approx(5.6, abs=0.05)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_backward_through_a_normalizer_keeps_n_minus_2_over_n(n):
    """E||dL/dz||^2 = (n-2)/n E[1/sigma^2] ||g||^2 for isotropic g, by autograd through (z - mean)/std."""
    gen = torch.Generator().manual_seed(n)
    trials = 20_000
    z = (torch.randn(trials, n, generator=gen, dtype=torch.float64) * 2.0).requires_grad_(True)
    g = torch.randn(trials, n, generator=gen, dtype=torch.float64)
    zhat = (z - z.mean(1, keepdim=True)) / z.var(1, unbiased=False, keepdim=True).sqrt()
    (grad,) = torch.autograd.grad((zhat * g).sum(), z)
    sigma2 = z.detach().var(1, unbiased=False)
    ratio = ((grad**2).sum(1) * sigma2 / (g**2).sum(1)).mean().item()
    assert ratio == pytest.approx(tb.normalizer_backward_gain(n), rel=0.02)


def test_instance_norm_size_law_by_simulation():
    """(n-2)/n * E[1/sigma_hat^2] for n Gaussian numbers of variance s^2 = 1 - 1/pi."""
    rng = np.random.default_rng(0)
    for n in (8, 16, 64):
        s2 = 1 - 1 / np.pi
        x = rng.standard_normal((200_000, n)) * np.sqrt(s2)
        simulated = (n - 2) / n * np.mean(1 / x.var(axis=1))
        assert simulated == pytest.approx(tb.instance_norm_growth_factor(n), rel=0.02)


def test_bn_factor_in_a_deep_random_relu_net():
    """A deep fully-connected BatchNorm + ReLU net with a large batch: the squared gradient grows by pi/(pi-1)."""
    torch.manual_seed(0)
    width, depth, batch = 256, 12, 1024
    x = torch.randn(batch, width)
    zs, h = [], x
    for _ in range(depth):
        w = torch.randn(width, width) * math.sqrt(2 / width)
        z = (h @ w.T).requires_grad_(True)
        zs.append(z)
        h = torch.relu(torch.nn.functional.batch_norm(z, None, None, training=True))
    loss = (h * torch.randn_like(h)).sum()
    grads = torch.autograd.grad(loss, zs)
    norms = [g.norm().item() for g in grads]
    assert tb.fit_growth_factor(norms, 2, 2) == pytest.approx(math.pi / (math.pi - 1), rel=0.04)


def test_mean_field_kappa_grows_with_the_group_and_starts_at_one_over_two_pi():
    k1, k4, k64 = (tb.mean_field_kappa(g, channels=20_000) for g in (1, 4, 64))
    assert k1 == pytest.approx(1 / (2 * np.pi), rel=1e-3)
    assert k1 < k4 < k64 < 0.5
    factors = [tb.mean_field_growth_factor(g, channels=20_000) for g in (1, 4, 64)]
    assert factors[0] == pytest.approx(math.pi / (math.pi - 1), rel=1e-3)
    assert factors[0] > factors[1] > factors[2] > 1


def test_fit_growth_factor_recovers_a_geometric_curve_and_rejects_bad_input():
    norms = np.sqrt(1.3 ** -np.arange(10.0))
    assert tb.fit_growth_factor(norms) == pytest.approx(1.3)
    assert math.isnan(tb.fit_growth_factor([1, 2, np.nan, 4, 5, 6]))
    with pytest.raises(ValueError):
        tb.fit_growth_factor([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        tb.instance_norm_growth_factor(3)
    with pytest.raises(ValueError):
        tb.group_growth_factor(1, kappa=0.6)
