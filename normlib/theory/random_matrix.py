r"""Singular values of products of random Gaussian matrices: the limit laws behind Bjorck et al.'s Fig. 7.

Let :math:`P_M = A_M A_{M-1}\cdots A_1` with i.i.d. :math:`N\times N` matrices of i.i.d. entries
:math:`\mathcal N(0, 1/N)` (a deep linear network at initialization, LeCun/Xavier scale, so that
:math:`\mathbb E\lVert A x\rVert^2 = \lVert x\rVert^2`). Bjorck et al. (2018, §4) argue, from random matrix theory,
that such products become ill-conditioned as :math:`M` grows even though every factor is well scaled. The formulas
below are standard results, not the paper's statements (Bjorck et al. 2018: the paper's own formulas were not
recovered); they are labelled **known** with their source, and what is **derived** here from them says so.

**Fuss–Catalan law (known; Banica et al. 2011, Penson & Życzkowski 2011).** As :math:`N\to\infty` the empirical
distribution of the squared singular values :math:`x = s^2` of :math:`P_M` converges to the Fuss–Catalan
distribution with parameter :math:`M`, whose moments are the Fuss–Catalan numbers

.. math:: \int x^k\,\rho_M(x)\,dx = \frac{1}{Mk+1}\binom{(M+1)k}{k},

and whose support is :math:`[0, x_{\max}]`, :math:`x_{\max} = (M+1)^{M+1}/M^M`. Its density has the parametric form
(Haagerup & Möller 2012; Neuschel 2014), for :math:`0 < \varphi < \pi/(M+1)`,

.. math::

    x(\varphi) = \frac{\sin^{M+1}((M+1)\varphi)}{\sin\varphi\,\sin^M(M\varphi)},\qquad
    \rho_M(x(\varphi)) = \frac{1}{\pi}\,
        \frac{\sin^2\!\varphi\,\sin^{M-1}(M\varphi)}{\sin^{M}((M+1)\varphi)} .

For :math:`M = 1` this is Marchenko–Pastur's :math:`\rho_1(x)=\frac{1}{2\pi}\sqrt{(4-x)/x}` (with
:math:`x = 4\cos^2\varphi`), and the singular values :math:`s=\sqrt x` follow the quarter-circle law
:math:`p(s)=\frac1\pi\sqrt{4-s^2}` on :math:`[0, 2]`. The largest singular value tends to
:math:`s_{\max}=\sqrt{x_{\max}}`: 2, 3.08 and 3.86 for :math:`M = 1, 3, 5`.

**Lyapunov exponents (known; Newman 1986).** For fixed :math:`N` and :math:`M\to\infty`,
:math:`\frac1M\log s_i(P_M)\to\mu_i` almost surely, with, for real Gaussian entries of variance :math:`\sigma^2`,

.. math:: \mu_i = \tfrac12\Big[\ln(2\sigma^2) + \psi\big(\tfrac{N-i+1}{2}\big)\Big],\qquad i = 1,\dots,N,

(:math:`\psi` the digamma function; :math:`\sum_i\mu_i = \mathbb E\log\lvert\det A\rvert`, from
:math:`\mathbb E\ln\chi^2_k = \ln 2+\psi(k/2)`). **Derived here:** the condition number
:math:`\kappa(P_M) = s_1/s_N` therefore grows exponentially with depth, :math:`\log\kappa(P_M) = M(\mu_1-\mu_N)
+ O(1)`, at the rate

.. math:: \mu_1 - \mu_N = \tfrac12\big[\psi(N/2) - \psi(1/2)\big]

per layer, independent of :math:`\sigma` (so of the initialization's scale): a well-scaled deep linear network is
exponentially ill-conditioned.
"""

from __future__ import annotations

import numpy as np
from scipy.special import comb, digamma

__all__ = [
    "quarter_circle_density",
    "fuss_catalan_max",
    "fuss_catalan_moment",
    "fuss_catalan_density",
    "fuss_catalan_cdf",
    "fuss_catalan_distance",
    "product_singular_value_density",
    "product_singular_value_max",
    "lyapunov_exponents",
    "condition_number_rate",
]

#: Points of the parametric grid used for the CDF (its error is far below Monte-Carlo noise).
_CDF_GRID = 20_001


def _check_factors(num_factors: int) -> None:
    if not isinstance(num_factors, (int, np.integer)) or isinstance(num_factors, bool) or num_factors < 1:
        raise ValueError(f"num_factors must be an integer >= 1, got {num_factors!r}")


def quarter_circle_density(s: np.ndarray | float) -> np.ndarray:
    r"""The quarter-circle law :math:`p(s) = \frac1\pi\sqrt{4-s^2}` on :math:`[0, 2]` (0 outside): the limit
    density of the singular values of one :math:`N\times N` Gaussian matrix with entries :math:`\mathcal N(0,1/N)`
    (known)."""
    s = np.asarray(s, dtype=float)
    inside = (s >= 0) & (s <= 2)
    return np.where(inside, np.sqrt(np.clip(4.0 - s**2, 0.0, None)) / np.pi, 0.0)


def fuss_catalan_max(num_factors: int) -> float:
    r""":math:`x_{\max} = (M+1)^{M+1}/M^M`, the right end of the Fuss–Catalan support (known)."""
    _check_factors(num_factors)
    m = float(num_factors)
    return (m + 1.0) ** (m + 1.0) / m**m


def product_singular_value_max(num_factors: int) -> float:
    r""":math:`s_{\max} = \sqrt{(M+1)^{M+1}/M^M}`, the limit of the largest singular value of a product of
    :math:`M` Gaussian matrices (known): 2, 3.08, 3.86 for :math:`M = 1, 3, 5`."""
    return float(np.sqrt(fuss_catalan_max(num_factors)))


def fuss_catalan_moment(k: int, num_factors: int) -> float:
    r"""The :math:`k`-th moment of the Fuss–Catalan law, :math:`\binom{(M+1)k}{k}/(Mk+1)` (known)."""
    _check_factors(num_factors)
    return float(comb((num_factors + 1) * k, k, exact=True)) / (num_factors * k + 1)


def _parametric(phi: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``x(phi)`` and ``rho(x(phi))`` of the parametric form (module doc)."""
    s1, sm, sm1 = np.sin(phi), np.sin(m * phi), np.sin((m + 1) * phi)
    x = sm1 ** (m + 1) / (s1 * sm**m)
    rho = s1**2 * sm ** (m - 1) / (np.pi * sm1**m)
    return x, rho


def _invert(x: np.ndarray, m: int) -> np.ndarray:
    """The ``phi`` in (0, pi/(m+1)) with ``x(phi) = x``, by bisection (``x`` decreases in ``phi``)."""
    lo = np.full_like(x, 0.0)
    hi = np.full_like(x, np.pi / (m + 1))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = _parametric(mid, m)[0] > x
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return 0.5 * (lo + hi)


def fuss_catalan_density(x: np.ndarray | float, num_factors: int) -> np.ndarray:
    r"""The Fuss–Catalan density :math:`\rho_M(x)` of the squared singular values of a product of :math:`M`
    Gaussian matrices (known; parametric form in the module doc, inverted by bisection). 0 outside
    :math:`(0, x_{\max})`; it diverges like :math:`x^{-M/(M+1)}` at 0."""
    _check_factors(num_factors)
    x = np.atleast_1d(np.asarray(x, dtype=float))
    inside = (x > 0) & (x < fuss_catalan_max(num_factors))
    out = np.zeros_like(x)
    if inside.any():
        out[inside] = _parametric(_invert(x[inside], num_factors), num_factors)[1]
    return out


def fuss_catalan_cdf(x: np.ndarray | float, num_factors: int) -> np.ndarray:
    r""":math:`F_M(x) = \int_0^x\rho_M`, integrated along the parametrization (trapezoid rule on a fine grid of
    :math:`\varphi`, where the density is smooth), normalized so that :math:`F_M(x_{\max}) = 1` exactly."""
    _check_factors(num_factors)
    phi = np.linspace(0.0, np.pi / (num_factors + 1), _CDF_GRID)[1:-1]
    xs, rho = _parametric(phi, num_factors)
    xs, rho = xs[::-1], rho[::-1]  # increasing x
    xs = np.concatenate([[0.0], xs, [fuss_catalan_max(num_factors)]])
    # rho ~ x^(-M/(M+1)) at 0: integrate the first interval exactly for that power law.
    power = num_factors / (num_factors + 1.0)
    first = rho[0] * xs[1] / (1.0 - power)
    steps = 0.5 * (rho[1:] + rho[:-1]) * np.diff(xs[1:-1])
    cumulative = np.concatenate([[0.0, first], first + np.cumsum(steps), [np.nan]])
    cumulative[-1] = cumulative[-2]
    cumulative /= cumulative[-1]
    return np.interp(np.asarray(x, dtype=float), xs, cumulative, left=0.0, right=1.0)


def fuss_catalan_distance(num_factors: int, other_factors: int, points: int = 20_001) -> float:
    r"""The Kolmogorov–Smirnov distance :math:`\sup_x\lvert F_M(x)-F_{M'}(x)\rvert` between two Fuss–Catalan laws
    (``num_factors`` :math:`=M`, ``other_factors`` :math:`=M'`), on a grid of ``points`` over the wider support:
    the distance a spectrum that follows the law of :math:`M'` factors keeps, as :math:`N\to\infty`, from the law of
    :math:`M` (computed from the known laws, so itself known)."""
    top = max(fuss_catalan_max(num_factors), fuss_catalan_max(other_factors))
    x = np.linspace(0.0, top, points)
    return float(np.max(np.abs(fuss_catalan_cdf(x, num_factors) - fuss_catalan_cdf(x, other_factors))))


def product_singular_value_density(s: np.ndarray | float, num_factors: int) -> np.ndarray:
    r"""The limit density of the singular values :math:`s = \sqrt x` themselves, :math:`p_M(s) = 2s\,\rho_M(s^2)`
    (a change of variables; for :math:`M=1` the quarter-circle law)."""
    s = np.asarray(s, dtype=float)
    return 2.0 * s * fuss_catalan_density(s**2, num_factors).reshape(s.shape)


def lyapunov_exponents(width: int, variance: float | None = None) -> np.ndarray:
    r""":math:`\mu_1\ge\dots\ge\mu_N` of products of real :math:`N\times N` Gaussian matrices with entry variance
    :math:`\sigma^2` (default :math:`1/N`): :math:`\tfrac12[\ln(2\sigma^2)+\psi((N-i+1)/2)]` (known, Newman 1986)."""
    if not isinstance(width, (int, np.integer)) or width < 2:
        raise ValueError(f"width must be an integer >= 2, got {width!r}")
    variance = 1.0 / width if variance is None else float(variance)
    i = np.arange(1, width + 1)
    return 0.5 * (np.log(2.0 * variance) + digamma((width - i + 1) / 2.0))


def condition_number_rate(width: int) -> float:
    r"""Growth rate of :math:`\log\kappa(P_M)` per factor, :math:`\mu_1-\mu_N = \tfrac12[\psi(N/2)-\psi(1/2)]`
    (derived here from Newman's exponents): the condition number of a deep linear network of width :math:`N`
    grows like :math:`e^{M(\mu_1-\mu_N)}` with depth :math:`M`."""
    mu = lyapunov_exponents(width)
    return float(mu[0] - mu[-1])
