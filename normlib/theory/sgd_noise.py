r"""The noise of a stochastic gradient step, and how it scales with the step size and the batch size.

Let :math:`\ell_i(x)` be the loss of example :math:`i` of a pool of :math:`N` examples, :math:`\nabla\ell(x)` the
mean gradient over the pool, and :math:`\nabla_{SGD}(x)=\frac1{|B|}\sum_{i\in B}\nabla\ell_i(x)` the gradient of a
mini-batch :math:`B`. A step of size :math:`\alpha` deviates from the full-gradient step by
:math:`\alpha(\nabla\ell-\nabla_{SGD})`. With :math:`C = \frac1N\sum_i\lVert\nabla\ell_i-\nabla\ell\rVert^2` (the
per-example gradient variance), Bjorck et al. (2018, §2) bound its size (**paper**):

.. math:: \mathbb E\big\lVert\alpha\nabla\ell(x)-\alpha\nabla_{SGD}(x)\big\rVert^2 \le \frac{\alpha^2}{|B|}\,C .

**Derived here** (standard survey sampling). If :math:`B` is drawn with replacement the bound is an equality. If
it is drawn *without* replacement, as an epoch's shuffled batches are, the covariance of two distinct draws is
:math:`-C/(N-1)`, so

.. math:: \mathbb E\big\lVert\alpha\nabla\ell-\alpha\nabla_{SGD}\big\rVert^2
    = \frac{\alpha^2 C}{|B|}\cdot\frac{N-|B|}{N-1},

below the bound by the finite-population factor, which vanishes at :math:`|B| = N` (the full batch has no noise).
Either way the noise is proportional to :math:`\alpha^2` and, for :math:`|B|\ll N`, to :math:`1/|B|`: a larger
learning rate means more gradient noise per step, the regularizing effect the paper credits large learning rates
(enabled by BatchNorm) with. Both laws hold for any set of per-example gradients: measuring them on a network checks
the sampling and the code (the book's rows for them are identities), not the regularizing effect itself.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sgd_noise_bound", "sgd_noise"]


def _check(variance: float, batch_size, step_size) -> np.ndarray:
    batch_size = np.asarray(batch_size, dtype=float)
    if variance < 0 or np.any(np.asarray(step_size) < 0):
        raise ValueError("variance and step_size must be non-negative")
    if np.any(batch_size < 1):
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    return batch_size


def sgd_noise_bound(variance: float, batch_size, step_size=1.0) -> np.ndarray:
    r"""The paper's bound :math:`\alpha^2 C/|B|` on :math:`\mathbb E\lVert\alpha\nabla\ell-\alpha\nabla_{SGD}\rVert^2`
    (**paper**), ``variance`` :math:`= C`, ``step_size`` :math:`= \alpha`; exact for batches drawn with
    replacement."""
    batch_size = _check(variance, batch_size, step_size)
    return np.asarray(step_size, dtype=float) ** 2 * variance / batch_size


def sgd_noise(variance: float, batch_size, step_size=1.0, pool_size: int | None = None) -> np.ndarray:
    r"""The expected squared deviation of an SGD step from the full-gradient step (**derived**, module doc):
    :math:`\frac{\alpha^2C}{|B|}\frac{N-|B|}{N-1}` for a batch drawn without replacement from a pool of
    ``pool_size`` :math:`=N` examples; :func:`sgd_noise_bound` when ``pool_size`` is None (with replacement)."""
    batch_size = _check(variance, batch_size, step_size)
    bound = np.asarray(step_size, dtype=float) ** 2 * variance / batch_size
    if pool_size is None:
        return bound
    if pool_size < 2 or np.any(batch_size > pool_size):
        raise ValueError(f"pool_size must be >= 2 and >= every batch size, got {pool_size!r}")
    return bound * (pool_size - batch_size) / (pool_size - 1)
