r"""Principle C: stable backward propagation in non-residual networks at initialization.

Notation: :math:`z_l` is the output of the :math:`l`-th convolution of a constant-width non-residual CNN
(conv -> normalizer -> ReLU), :math:`\lVert\partial\mathcal L/\partial z_l\rVert^2` its squared gradient norm over
the whole batch (the paper's ``grads_norms`` probe, squared), and the **per-layer growth factor** :math:`r` is the
ratio of squared gradient norms of two successive layers, going backwards: :math:`\lVert\partial\mathcal L/\partial
z_{l}\rVert^2 \approx r\,\lVert\partial\mathcal L/\partial z_{l+1}\rVert^2`.

Where each formula comes from:

* **Yang et al. 2019** (their mean-field theory of BatchNorm, large-batch limit, ReLU): :math:`r_{\text{BN}} =
  \pi/(\pi-1)\approx1.467` (:func:`bn_growth_factor`). Not Lubana et al.'s formula.
* **Derived** (in chapter 03, reconstructed; not the paper's statement, whose exact factor was not recovered):
  the backward pass through a normalizer over :math:`n` numbers (:func:`normalizer_backward_gain`), the group-size
  law :math:`r(G)\approx1/(1-2\kappa/G)` (:func:`group_growth_factor`), InstanceNorm's dependence on the spatial
  size (:func:`instance_norm_growth_factor`) and a mean-field model that supplies :math:`\kappa`
  (:func:`mean_field_kappa`), so that no constant is fitted to a measurement.

*One layer, backwards* (derived). With He initialization (:math:`W\sim\mathcal N(0,2/\text{fan-in})`, constant
width) the transposed convolution doubles the expected squared norm of the gradient and the ReLU keeps the half
whose pre-activation is positive: the two cancel. What is left is the normalizer. For :math:`\hat z=(z-\bar z)/
\hat\sigma` over a set of :math:`n` numbers and upstream gradient :math:`g`,

.. math:: \frac{\partial\mathcal L}{\partial z}=\frac1{\hat\sigma}\Big(g-\bar g-\hat z\,\overline{g\hat z}\Big)
    =\frac1{\hat\sigma}\,P\,g,

with :math:`P` the projection that removes the two directions :math:`\mathbf 1` and :math:`\hat z`, so for
:math:`g` isotropic :math:`\mathbb E\lVert\partial\mathcal L/\partial z\rVert^2=\frac{n-2}{n}\,
\mathbb E[\hat\sigma^{-2}]\,\lVert g\rVert^2`. The growth factor is :math:`r=\frac{n-2}n\,\mathbb E[\hat\sigma^{-2}]`
in units where the conv output has second moment 1, which He initialization gives (:math:`\mathbb E z^2 = 2\,
\mathbb E[\mathrm{ReLU}(\hat x)^2]=1` for a symmetric unit-power input).

*What* :math:`\hat\sigma^2` *is* (derived). Split each channel of :math:`z` into its spatial (or batch) mean
:math:`m_c` and a fluctuation of variance :math:`s_c^2`. The normalizer's variance over a group of :math:`G`
channels is :math:`\hat\sigma^2=\overline{s^2}+\overline{(m-\bar m)^2}`, and with :math:`\mathbb E[m_c^2]=2\kappa`,
:math:`\mathbb E[s_c^2]=1-2\kappa` it has mean :math:`1-2\kappa/G`: hence :math:`r(G)\approx1/(1-2\kappa/G)`.
When the input channels have zero mean before the ReLU (BN, IN), the ReLU's mean :math:`1/\sqrt{2\pi}` gives
:math:`2\kappa=1/\pi`, so :math:`r=\pi/(\pi-1)`, Yang et al.'s factor, for BN and IN alike (both normalize one
channel over many numbers). In larger groups the channel means survive the normalizer, the ReLU turns them into
larger means, and :math:`\kappa` grows with :math:`G`: :func:`mean_field_kappa` computes it as the fixed point of
that map.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.special import ndtr

__all__ = [
    "BN_GROWTH_FACTOR",
    "IN_KAPPA",
    "bn_growth_factor",
    "normalizer_backward_gain",
    "group_growth_factor",
    "instance_norm_growth_factor",
    "mean_field_kappa",
    "mean_field_growth_factor",
    "gradient_ratio",
    "fit_growth_factor",
]

#: Yang et al. (2019): per-layer growth of the squared gradient norm through BatchNorm + ReLU, large batch.
BN_GROWTH_FACTOR = float(np.pi / (np.pi - 1.0))
#: :math:`\kappa` when every input channel is centred before its ReLU (BN, IN): :math:`1/(2\pi)` (derived).
IN_KAPPA = float(1.0 / (2.0 * np.pi))


def bn_growth_factor() -> float:
    r""":math:`\pi/(\pi-1)\approx1.467`: Yang et al. (2019)'s mean-field growth of the squared gradient norm per
    layer of a deep BatchNorm + ReLU network at initialization, in the large-batch limit (**their result**, not the
    Lubana et al. paper's). The book's derivation (module docstring) gets the same number from
    :math:`1/(1-2\kappa)` with :math:`2\kappa=1/\pi`, the second moment of a ReLU's mean."""
    return BN_GROWTH_FACTOR


def normalizer_backward_gain(n: int | np.ndarray) -> float | np.ndarray:
    r""":math:`(n-2)/n`: the expected fraction of :math:`\lVert g\rVert^2` that survives the projection :math:`P`
    of the backward pass through a normalizer over :math:`n` numbers (derived): :math:`P` removes the directions
    :math:`\mathbf 1` and :math:`\hat z` (orthogonal, since :math:`\hat z` is centred), and an isotropic
    :math:`g` keeps :math:`(n-2)/n` of its squared norm on average. Multiply by :math:`\mathbb E[\hat\sigma^{-2}]`
    for the full factor."""
    n_arr = np.asarray(n, dtype=float)
    if np.any(n_arr < 2):
        raise ValueError(f"n must be >= 2 (a normalizer over fewer numbers is undefined), got {n!r}")
    out = (n_arr - 2.0) / n_arr
    return float(out) if out.ndim == 0 else out


def group_growth_factor(group_size: int | np.ndarray, kappa: float | np.ndarray = IN_KAPPA) -> float | np.ndarray:
    r""":math:`r(G)\approx1/(1-2\kappa/G)` (derived in chapter 03; **not** the paper's formula).

    :math:`G` is the number of channels per group (1: InstanceNorm, the width: LayerNorm) and :math:`2\kappa` the
    second moment of a channel's mean relative to the conv output's second moment. With the smallest
    :math:`\kappa=1/(2\pi)` this is the lower bound :math:`\pi G/(\pi G-1)`: :math:`\pi/(\pi-1)` at :math:`G=1`,
    tending to 1 as :math:`G` grows. Neglects the fluctuation of :math:`\hat\sigma^2` (Jensen:
    :math:`\mathbb E[\hat\sigma^{-2}]\ge1/\mathbb E[\hat\sigma^2]`) and the finite number of entries per group.
    """
    g = np.asarray(group_size, dtype=float)
    k = np.asarray(kappa, dtype=float)
    if np.any(g < 1):
        raise ValueError(f"group_size must be >= 1, got {group_size!r}")
    if np.any(k < 0) or np.any(2 * k >= g):
        raise ValueError(f"kappa must satisfy 0 <= 2*kappa < group_size, got kappa={kappa!r}")
    out = 1.0 / (1.0 - 2.0 * k / g)
    return float(out) if out.ndim == 0 else out


def instance_norm_growth_factor(n: int | np.ndarray) -> float | np.ndarray:
    r""":math:`\frac{n-2}{n-3}\,\frac{\pi}{\pi-1}`: InstanceNorm's factor on maps of :math:`n=H W` positions
    (derived). The projection keeps :math:`(n-2)/n` (:func:`normalizer_backward_gain`); the sample variance of
    :math:`n` roughly Gaussian numbers of variance :math:`s^2` is :math:`s^2\chi^2_{n-1}/n`, whose inverse has mean
    :math:`n/((n-3)s^2)` (the heavy tail of an inverse :math:`\chi^2`); and :math:`s^2=1-1/\pi` once the channel
    mean is removed. The product tends to :math:`\pi/(\pi-1)` for large maps and doubles it at :math:`2\times2`
    (:math:`n=4`). Treats the :math:`n` positions as independent, which the overlapping 3x3 patches and the zero
    padding of small maps are not; undefined for :math:`n\le3`."""
    n_arr = np.asarray(n, dtype=float)
    if np.any(n_arr <= 3):
        raise ValueError(f"n must be > 3 (E[1/sigma^2] is infinite for n <= 3), got {n!r}")
    out = (n_arr - 2.0) / (n_arr - 3.0) * BN_GROWTH_FACTOR
    return float(out) if out.ndim == 0 else out


def _relu_moments(mu: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and second moment of ReLU(mu + tau * xi), xi ~ N(0, 1)."""
    t = mu / tau
    pdf = np.exp(-0.5 * t**2) / np.sqrt(2.0 * np.pi)
    cdf = ndtr(t)
    mean = tau * pdf + mu * cdf
    second = (mu**2 + tau**2) * cdf + mu * tau * pdf
    return mean, second


def _group_state(group_size: int, two_kappa: float, groups: int, rng: np.random.Generator):
    """Sample ``groups`` groups of channel means and return (sigma^2 per group, normalized means mu, tau)."""
    means = rng.standard_normal((groups, group_size)) * np.sqrt(two_kappa)
    spread = means - means.mean(axis=1, keepdims=True)
    fluct = 1.0 - two_kappa
    sigma2 = fluct + (spread**2).mean(axis=1)
    if group_size == 1:  # the channel mean is removed exactly
        sigma2 = np.full(groups, fluct)
    mu = spread / np.sqrt(sigma2)[:, None]
    tau = np.sqrt(fluct / sigma2)[:, None] * np.ones_like(mu)
    return sigma2, mu, tau


def mean_field_kappa(group_size: int, *, channels: int = 100_000, iterations: int = 100, seed: int = 0) -> float:
    r""":math:`\kappa(G)`, half the relative second moment of a channel's mean, at the fixed point of a deep
    constant-width GroupNorm + ReLU network at initialization (derived: a mean-field model, nothing fitted).

    The model follows one layer to the next. The conv output's channel means are
    :math:`m_c\sim\mathcal N(0,2\kappa)` (independent across channels: zero-mean random weights), its fluctuations
    have variance :math:`1-2\kappa` (a concentrated quadratic form at large fan-in). GroupNorm over groups of
    :math:`G` channels subtracts the group mean and divides by :math:`\hat\sigma`, so channel :math:`c` of the
    normalized map is :math:`\mathcal N(\mu_c,\tau^2)` with :math:`\mu_c=(m_c-\bar m)/\hat\sigma`,
    :math:`\tau^2=(1-2\kappa)/\hat\sigma^2`. After the ReLU its mean is :math:`a_c=\mathbb E\,\mathrm{ReLU}
    (\mu_c+\tau\xi)` and its second moment :math:`q_c`; the next He convolution then has channel means of relative
    second moment :math:`2\kappa'=\mathbb E[a_c^2]/\mathbb E[q_c]`. Iterating from :math:`2\kappa=1/\pi` gives the
    fixed point. :math:`G=1` stays at :math:`\kappa=1/(2\pi)` exactly; :math:`\kappa` grows with :math:`G`. Spatial
    correlations, zero padding and finite-width fluctuations are neglected. Monte Carlo over ``groups`` groups
    with common random numbers over about ``channels`` channels (deterministic for a given ``seed``).
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size!r}")
    groups = max(1, channels // group_size)
    two_kappa = 1.0 / np.pi
    for _ in range(iterations):
        rng = np.random.default_rng(seed)
        _, mu, tau = _group_state(group_size, two_kappa, groups, rng)
        mean, second = _relu_moments(mu, tau)
        new = float(np.mean(mean**2) / np.mean(second))
        if abs(new - two_kappa) < 1e-6:
            two_kappa = new
            break
        two_kappa = new
    return two_kappa / 2.0


def mean_field_growth_factor(
    group_size: int, entries_per_group: int | None = None, *, channels: int = 100_000, seed: int = 0
) -> float:
    r"""The growth factor :math:`\frac{n-2}{n}\,\mathbb E[\hat\sigma^{-2}]` of GroupNorm with ``group_size``
    channels per group, from the mean-field model of :func:`mean_field_kappa` (derived, nothing fitted).

    :math:`\mathbb E[\hat\sigma^{-2}]` is averaged over the model's groups, so it includes the spread of
    :math:`\hat\sigma^2` that :func:`group_growth_factor` neglects (Jensen). ``entries_per_group`` is
    :math:`n=G\,H\,W`; when given, the finite-sample factor :math:`\frac{n-2}{n}\cdot\frac{n}{n-3}` of
    :func:`instance_norm_growth_factor` is applied (projection times inverse-:math:`\chi^2` inflation); ``None`` is
    the limit of large maps. At :math:`G=1` and large maps it equals :math:`\pi/(\pi-1)`.
    """
    kappa = mean_field_kappa(group_size, channels=channels, seed=seed)
    groups = max(1, channels // group_size)
    rng = np.random.default_rng(seed)
    sigma2, _, _ = _group_state(group_size, 2.0 * kappa, groups, rng)
    factor = float(np.mean(1.0 / sigma2))
    if entries_per_group is not None:
        n = float(entries_per_group)
        if n <= 3:
            raise ValueError(f"entries_per_group must be > 3, got {entries_per_group!r}")
        factor *= (n - 2.0) / (n - 3.0)
    return factor


def gradient_ratio(factor: float, layers: int) -> float:
    r""":math:`\lVert\nabla_{\text{first}}\rVert/\lVert\nabla_{\text{last}}\rVert\approx r^{(L-1)/2}` over ``layers``
    layers growing by ``factor`` each (derived): about 5.6 for :math:`r=\pi/(\pi-1)` and 10 layers."""
    return float(factor ** ((layers - 1) / 2.0))


def fit_growth_factor(grad_norms: Iterable[float], skip_first: int = 1, skip_last: int = 2) -> float:
    r"""The measured per-layer growth factor of the squared gradient norm: :math:`\exp(-b)` with :math:`b` the
    least-squares slope of :math:`\log\lVert\partial\mathcal L/\partial z_l\rVert^2` against the layer index
    :math:`l` (the gradient grows *backwards*, towards small :math:`l`).

    The first ``skip_first`` layers (the first convolution sees the image, not a normalized map) and the last
    ``skip_last`` (the gradient arriving from global average pooling is constant over positions, not yet the
    isotropic gradient the derivation assumes) are left out. Non-finite or non-positive norms give NaN.
    """
    values = np.asarray(list(grad_norms), dtype=float)
    kept = values[skip_first : len(values) - skip_last]
    if len(kept) < 2:
        raise ValueError(f"need at least 2 layers after skipping {skip_first} + {skip_last}, got {len(values)}")
    if not (np.all(np.isfinite(kept)) and np.all(kept > 0)):
        return float("nan")
    index = np.arange(len(kept), dtype=float)
    slope = np.polyfit(index, np.log(kept**2), 1)[0]
    return float(np.exp(-slope))
