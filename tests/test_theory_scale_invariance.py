"""normlib.theory.scale_invariance against direct numerical computation: a BatchNorm layer, plain SGD steps on a
scale-invariant function, and simulated weight-decay dynamics."""

import numpy as np
import pytest
import torch

from normlib import theory


def _bn_loss(w: torch.Tensor, x: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """A scale-invariant loss of one channel's weights: conv (as a matrix product), BatchNorm, a fixed readout."""
    z = x @ w
    y = (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + eps)
    return ((torch.tanh(y) - target) ** 2).mean()


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g, dtype=torch.float64)
    target = torch.randn(256, generator=g, dtype=torch.float64)
    w = torch.randn(20, generator=g, dtype=torch.float64)
    return x, target, w


def _grad(w, x, target, eps=0.0):
    w = w.clone().requires_grad_(True)
    _bn_loss(w, x, target, eps).backward()
    return w.grad


def test_gradient_is_orthogonal_and_scales_inversely(problem):
    x, target, w = problem
    g = _grad(w, x, target)
    assert abs(float(w @ g)) < 1e-12 * float(w.norm() * g.norm())
    for c in (0.3, 7.0):
        assert torch.allclose(c * _grad(c * w, x, target), g, rtol=1e-10, atol=1e-14)


def test_sgd_step_geometry_and_norm_recursion(problem):
    x, target, w = problem
    g = _grad(w, x, target)
    for lr in (0.01, 0.5, 5.0):
        new = w - lr * g
        assert float(new.norm() ** 2) == pytest.approx(
            float(theory.norm_sq_after_sgd_step(w.norm() ** 2, lr, g.norm())), rel=1e-12
        )
        chord = float((new / new.norm() - w / w.norm()).norm())
        assert chord == pytest.approx(float(theory.sgd_step_chord(lr, g.norm(), w.norm())), rel=1e-10)
        x_ = float(theory.sgd_step_tangent(lr, g.norm(), w.norm()))
        assert x_ == pytest.approx(float(theory.effective_lr(lr, w.norm())) * float((w.norm() * g).norm()))


def test_second_order_term_matches_the_exact_chord():
    for x in (1e-3, 1e-2, 5e-2):
        exact = 2 * np.sin(np.arctan(x) / 2) / x - 1
        assert exact == pytest.approx(theory.chord_second_order(x), rel=1e-3 + 2 * x**2)


def test_bn_eps_ratio_and_radial_gradient(problem):
    x, target, w = problem
    eps = 1e-3
    z = x @ w
    variance = float(z.var(unbiased=False))
    for c in (0.05, 0.5, 3.0):
        zc = c * z
        y = (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + eps)
        yc = (zc - zc.mean()) / torch.sqrt(zc.var(unbiased=False) + eps)
        assert float((yc / y).mean()) == pytest.approx(float(theory.bn_eps_ratio(variance, eps, c)), rel=1e-12)
    # <w, g> = eps/(var+eps) * gamma dL/dgamma, with a gain gamma in front of the readout
    gamma = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    wv = w.clone().requires_grad_(True)
    zz = x @ wv
    yy = gamma * (zz - zz.mean()) / torch.sqrt(zz.var(unbiased=False) + eps)
    ((torch.tanh(yy) - target) ** 2).mean().backward()
    predicted = theory.bn_eps_orthogonality(variance, eps, float(gamma.detach() * gamma.grad))
    assert float(w @ wv.grad) == pytest.approx(float(predicted), rel=1e-9)


def _simulate(lr, wd, momentum, steps, dim=400, seed=0):
    """SGD with momentum and weight decay on w with isotropic random gradients orthogonal to w, of norm
    ||g~|| / ||w|| (a scale-invariant loss with pure-noise gradients, ||g~|| = 1): torch's update."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)
    v = np.zeros(dim)
    norms, chords = [], []
    for _ in range(steps):
        noise = rng.standard_normal(dim)
        noise -= (noise @ w) / (w @ w) * w
        g = noise / np.linalg.norm(noise) / np.linalg.norm(w)
        v = momentum * v + g + wd * w
        new = w - lr * v
        chords.append(np.linalg.norm(new / np.linalg.norm(new) - w / np.linalg.norm(w)))
        w = new
        norms.append(w @ w)
    return np.array(norms), np.array(chords), v, w


def test_equilibrium_without_momentum_is_the_fixed_point():
    lr, wd = 0.1, 0.01
    norms, chords, _, _ = _simulate(lr, wd, 0.0, 6000)
    predicted = theory.equilibrium_norm4(lr, wd, 1.0)
    assert np.mean(norms[-2000:] ** 2) == pytest.approx(predicted, rel=0.02)
    angle = np.sqrt(np.mean(chords[-2000:] ** 2))
    assert angle == pytest.approx(float(theory.equilibrium_angular_step(lr, wd)), rel=0.02)


def test_equilibrium_with_momentum_monte_carlo():
    lr, wd, beta = 0.1, 0.005, 0.9
    norms, chords, v, w = _simulate(lr, wd, beta, 12000)
    angle = np.sqrt(np.mean(chords[-4000:] ** 2))
    assert angle == pytest.approx(float(theory.equilibrium_angular_step(lr, wd, beta)), rel=0.05)
    # uncorrelated gradients: ||w||^4 -> eta ||g~||^2 / (2 lambda (1 - beta)), leading order
    assert np.mean(norms[-4000:] ** 2) == pytest.approx(theory.equilibrium_norm4(lr, wd, 1.0, beta), rel=0.1)


def test_momentum_balance_holds_at_steady_state():
    lr, wd, beta = 0.1, 0.005, 0.9
    rng = np.random.default_rng(1)
    ratios = []
    w, v = rng.standard_normal(400), np.zeros(400)
    for t in range(12000):
        noise = rng.standard_normal(400)
        noise -= (noise @ w) / (w @ w) * w
        v = beta * v + noise / np.linalg.norm(noise) / np.linalg.norm(w) + wd * w
        w = w - lr * v
        if t >= 8000:
            ratios.append((v @ v) / (w @ w))
    assert np.mean(ratios) == pytest.approx(theory.momentum_balance(lr, wd, beta), rel=0.05)


def test_corrected_lr_and_gap_fraction():
    assert theory.corrected_lr(0.1, 2.0, 1.0) == pytest.approx(0.4)
    assert theory.effective_lr(theory.corrected_lr(0.1, 3.0, 1.5), 3.0) == pytest.approx(theory.effective_lr(0.1, 1.5))
    assert theory.gap_closed_fraction(0.905, 0.892, 0.905) == pytest.approx(1.0)
    assert np.isnan(theory.gap_closed_fraction(0.9, 0.9, 0.91))
