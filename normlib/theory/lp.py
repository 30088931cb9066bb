r"""Lp batch norms and float16 (Hoffer et al. 2018, "Norm matters"): the constants that turn a deviation into a
standard deviation, what they really give for a finite batch, and where a float16 accumulator overflows.

Setting: one channel of a batch norm holds :math:`n` values :math:`x_1, \dots, x_n` (:math:`n` = batch x height x
width), i.i.d. :math:`\mathcal N(\mu, \sigma^2)`; the layer centres them by the sample mean :math:`\bar x` and divides
by a *scaled deviation* :math:`s`, which is meant to estimate :math:`\sigma`:

.. math::
    s_{L^2} = \sqrt{\tfrac1n \textstyle\sum_i (x_i - \bar x)^2}, \qquad
    s_{L^1} = C_{L^1}\,\tfrac1n \textstyle\sum_i |x_i - \bar x|, \qquad
    s_{L^\infty} = C_{L^\infty}(n) \max_i |x_i - \bar x|, \qquad
    s_{\text{Top}k} = C_{L^\infty}(n)\,\tfrac1k \textstyle\sum_{j \le k} |x - \bar x|_{(j)} .

**Paper.** :math:`C_{L^1} = \sqrt{\pi/2}` (eq. 5) and :math:`C_{L^\infty}(n) = (1 + \sqrt{\pi \ln 4}) /
(2\sqrt{2 \ln n})` (the official ``TopkBatchNorm2d``, also used for Top-k) — :data:`C_L1`, :func:`c_linf`.

**Derived here** (standard probability, not the paper's statements):

* *Centring.* :math:`x_i - \bar x \sim \mathcal N(0, \sigma^2 (n-1)/n)` exactly, so
  :math:`\mathrm E\,s_{L^1} = \sigma\sqrt{(n-1)/n}` exactly (:func:`l1_deviation_ratio`). The centred values are
  correlated (:math:`-1/(n-1)`); for the order statistics below we neglect that correlation and treat them as
  :math:`n` independent :math:`\mathcal N(0, \sigma^2(n-1)/n)`, an :math:`O(1/n)` approximation.
* *Order statistics of* :math:`|z|`, :math:`z \sim \mathcal N(0, 1)`, with survival
  :math:`S(t) = \mathrm{erfc}(t/\sqrt2)`.
  The :math:`j`-th largest of :math:`n` exceeds :math:`t` when at least :math:`j` of them do, so with
  :math:`B_t \sim \mathrm{Bin}(n, S(t))`

  .. math::
      \mathrm E \sum_{j \le k} |z|_{(j)} = \int_0^\infty \sum_{j=1}^k P(B_t \ge j)\,dt
      = \int_0^\infty \mathrm E \min(B_t, k)\,dt ,

  and for :math:`k = 1`, :math:`\mathrm E \max_i |z_i| = \int_0^\infty 1 - (1 - S(t))^n\,dt`
  (:func:`expected_max_abs`, :func:`expected_topk_abs_mean`, by numerical quadrature).
  Hence :math:`\mathrm E\,s_{L^\infty}/\sigma = C_{L^\infty}(n)\sqrt{(n-1)/n}\;\mathrm E\max|z|`
  (:func:`linf_deviation_ratio`, :func:`topk_deviation_ratio`). :math:`C_{L^\infty}(n)` is the average of the two
  bounds :math:`1/\sqrt{2\ln n}` and :math:`\sqrt{\pi\ln 4}/\sqrt{2\ln n}` on :math:`\sigma/\mathrm E\max`, not that
  ratio, so these ratios are *not* 1: about 1.3-1.5 for :math:`n` from hundreds to a million.
* *Float16 overflow.* IEEE binary16's largest finite value is :data:`FP16_MAX` = 65504 (a sum rounds to ``inf`` from
  65520 on, 0.02 % higher). With every partial sum held in float16 (an *fp16 accumulator*) a sum of non-negative
  terms overflows as soon as its total passes that value, in any summation order. The expected totals are
  :math:`\mathrm E \sum (x_i - \bar x)^2 = (n-1)\sigma^2` (L2) and
  :math:`\mathrm E \sum |x_i - \bar x| = \sigma\sqrt{2/\pi}\sqrt{n(n-1)}` (L1), so the predicted overflow sizes are
  :math:`n^*_{L^2} = 1 + 65504/\sigma^2` and :math:`n^*_{L^1}` solving
  :math:`\sqrt{n(n-1)} = 65504\sqrt{\pi/2}/\sigma` (:func:`l2_overflow_n`, :func:`l1_overflow_n`). L1 lasts longer
  exactly when :math:`\sigma > \sqrt{2/\pi} \approx 0.80`, and by a factor :math:`\approx \sigma\sqrt{\pi/2}`. The
  relative spread of the sum of squares is :math:`\sqrt{2/n}`, which sets how sharp the L2 threshold is
  (:func:`l2_overflow_spread`). A single square overflows when :math:`|x - \bar x| \ge 256` (255.98...), a separate,
  elementwise failure.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import erfc, gammaln

__all__ = [
    "FP16_MAX",
    "C_L1",
    "c_linf",
    "l2_deviation_ratio",
    "l1_deviation_ratio",
    "expected_max_abs",
    "expected_topk_abs_mean",
    "linf_deviation_ratio",
    "topk_deviation_ratio",
    "l2_overflow_n",
    "l1_overflow_n",
    "l2_overflow_spread",
]

#: IEEE 754 binary16's largest finite value.
FP16_MAX = 65504.0

#: :math:`C_{L^1} = \sqrt{\pi/2}` (**paper**, eq. 5): :math:`\mathrm E|z| = \sqrt{2/\pi}` for
#: :math:`z \sim \mathcal N(0,1)`.
C_L1 = math.sqrt(math.pi / 2)

_GRID_POINTS = 10_001


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (values per channel), got {n!r}")
    return int(n)


def c_linf(n: int) -> float:
    r""":math:`C_{L^\infty}(n) = \frac{1 + \sqrt{\pi \ln 4}}{2\sqrt{2\ln n}} \approx \frac{1.543}{\sqrt{2 \ln n}}`
    (**paper's code**: ``TopkBatchNorm2d``, for :math:`L^\infty` and Top-k alike; :math:`n \ge 2`)."""
    n = _check_n(n)
    return (1 + math.sqrt(math.pi * math.log(4))) / (2 * math.sqrt(2 * math.log(n)))


def l2_deviation_ratio(n: int) -> float:
    r""":math:`\mathrm E\,[\sqrt{\tfrac1n\sum(x_i - \bar x)^2}] / \sigma = \sqrt{2/n}\,
    \Gamma(\tfrac n2)/\Gamma(\tfrac{n-1}2)`, exact for Gaussian data (**derived**: the sum is
    :math:`\sigma^2\chi^2_{n-1}`); BatchNorm's biased standard deviation, :math:`1 - 3/(4n) + O(n^{-2})`."""
    n = _check_n(n)
    return math.sqrt(2 / n) * math.exp(gammaln(n / 2) - gammaln((n - 1) / 2))


def l1_deviation_ratio(n: int) -> float:
    r""":math:`\mathrm E\,[C_{L^1}\,\tfrac1n\sum|x_i - \bar x|] / \sigma = \sqrt{(n-1)/n}`, exact for Gaussian data
    (**derived**: :math:`x_i - \bar x \sim \mathcal N(0, \sigma^2(n-1)/n)`). Tends to 1, the paper's intent."""
    n = _check_n(n)
    return math.sqrt((n - 1) / n)


def _upper_limit(n: int) -> float:
    """Beyond this t, n * S(t) < 1e-30: the integrands are zero to double precision."""
    return math.sqrt(2 * math.log(n)) + 12.0


def expected_topk_abs_mean(n: int, k: int) -> float:
    r""":math:`\mathrm E\,\tfrac1k\sum_{j \le k} |z|_{(j)}`, the mean of the :math:`k` largest of :math:`n` i.i.d.
    :math:`|z|`, :math:`z \sim \mathcal N(0, 1)` (**derived**): :math:`\tfrac1k\int_0^\infty \mathrm E\min(B_t, k)\,dt`,
    :math:`B_t \sim \mathrm{Bin}(n, \mathrm{erfc}(t/\sqrt2))`, by the trapezoid rule on 10 001 points (the integrand
    is smooth; the quadrature error is below 1e-6)."""
    n = _check_n(n)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n={n}], got {k!r}")
    t = np.linspace(0.0, _upper_limit(n), _GRID_POINTS)
    survival = erfc(t / math.sqrt(2))
    expected_min = np.zeros_like(t)
    for j in range(1, int(k) + 1):  # E min(B, k) = sum_{j=1}^{k} P(B >= j)
        expected_min += stats.binom.sf(j - 1, n, survival)
    return float(np.trapezoid(expected_min, t) / k)


def expected_max_abs(n: int) -> float:
    r""":math:`\mathrm E \max_{i \le n} |z_i|` for i.i.d. :math:`z_i \sim \mathcal N(0,1)` (**derived**):
    :math:`\int_0^\infty 1 - (1 - \mathrm{erfc}(t/\sqrt2))^n\,dt`, computed as ``-expm1(n log1p(-S))``."""
    n = _check_n(n)
    t = np.linspace(0.0, _upper_limit(n), _GRID_POINTS)
    survival = erfc(t / math.sqrt(2))
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf at t = 0 gives the right value, 1
        return float(np.trapezoid(-np.expm1(n * np.log1p(-survival)), t))


def topk_deviation_ratio(n: int, k: int) -> float:
    r""":math:`\mathrm E\,s_{\text{Top}k}/\sigma \approx C_{L^\infty}(n)\sqrt{(n-1)/n}\;
    \mathrm E\tfrac1k\sum_{j\le k}|z|_{(j)}` (**derived**; the centred values' correlation :math:`-1/(n-1)` is
    neglected). The code's constant, the midpoint of two bounds, does not make this 1 (nor does the paper say it
    does)."""
    return c_linf(n) * math.sqrt((n - 1) / n) * expected_topk_abs_mean(n, k)


def linf_deviation_ratio(n: int) -> float:
    r""":math:`\mathrm E\,s_{L^\infty}/\sigma \approx C_{L^\infty}(n)\sqrt{(n-1)/n}\;\mathrm E\max|z|`
    (**derived**, same approximation as :func:`topk_deviation_ratio` with :math:`k = 1`)."""
    return c_linf(n) * math.sqrt((n - 1) / n) * expected_max_abs(n)


def _check_sigma(sigma) -> np.ndarray:
    sigma = np.asarray(sigma, dtype=float)
    if np.any(~np.isfinite(sigma)) or np.any(sigma <= 0):
        raise ValueError(f"sigma must be positive and finite, got {sigma!r}")
    return sigma


def l2_overflow_n(sigma, max_value: float = FP16_MAX):
    r"""Predicted batch size (values per channel) at which an fp16 accumulator of :math:`\sum (x_i - \bar x)^2`
    overflows: :math:`n^* = 1 + \text{max}/\sigma^2`, where the expected sum :math:`(n-1)\sigma^2` reaches
    ``max_value`` (**derived**). Scalar or array in ``sigma``."""
    sigma = _check_sigma(sigma)
    out = 1.0 + max_value / sigma**2
    return float(out) if out.ndim == 0 else out


def l1_overflow_n(sigma, max_value: float = FP16_MAX):
    r"""Predicted batch size at which an fp16 accumulator of :math:`\sum |x_i - \bar x|` overflows: the :math:`n`
    with :math:`\sigma\sqrt{2/\pi}\sqrt{n(n-1)} = \text{max}`, i.e. :math:`n^* = (1 + \sqrt{1 + 4A^2})/2` with
    :math:`A = \text{max}\sqrt{\pi/2}/\sigma` (**derived**; :math:`\approx A + 1/2`)."""
    sigma = _check_sigma(sigma)
    a = max_value * C_L1 / sigma
    out = (1.0 + np.sqrt(1.0 + 4.0 * a**2)) / 2.0
    return float(out) if out.ndim == 0 else out


def l2_overflow_spread(n):
    r"""Relative standard deviation :math:`\sqrt{2/(n-1)}` of :math:`\sum_{i\le n}(x_i - \bar x)^2`
    (:math:`\sigma^2\chi^2_{n-1}`), hence of the measured overflow size around :func:`l2_overflow_n`
    (**derived**)."""
    n = np.asarray(n, dtype=float)
    out = np.sqrt(2.0 / (n - 1.0))
    return float(out) if out.ndim == 0 else out
