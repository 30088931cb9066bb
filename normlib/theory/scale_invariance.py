r"""Hoffer et al. (2018), "Norm matters", part 1: a normalizer makes the weight norm irrelevant to the function, and
so weight decay acts on training only through the step size of the weight *direction*.

Notation: :math:`w\in\mathbb R^n` is one output channel of a convolution followed by BatchNorm (its weights over
input channels and kernel positions), :math:`\hat w = w/\lVert w\rVert`, :math:`g=\nabla_w L` the gradient of the
loss at :math:`w`, :math:`\tilde g = \nabla L(\hat w)` the gradient at the unit-norm point, :math:`\eta` the step
size, :math:`\lambda` the weight decay, :math:`\beta` the momentum.

Where each formula comes from:

* **paper** (Hoffer et al. 2018, the poster's equations): scale invariance :math:`\mathrm{BN}(c\,w x)=\mathrm{BN}(wx)`
  for :math:`c>0` (1); the gradient scales as :math:`g(cw)=g(w)/c`, i.e. :math:`g=\tilde g/\lVert w\rVert` (2); the
  direction moves with the *effective step size* :math:`\eta/\lVert w\rVert^2` to first order in :math:`\eta`
  (:func:`effective_lr`); the learning-rate correction :math:`\eta\,\lVert w\rVert^2/\lVert w_{WD}\rVert^2` that
  mimics weight decay without it (4) (:func:`corrected_lr`).
* **derived** here (in chapter 07 and below): BatchNorm's :math:`\epsilon` breaks (1) by an
  exact factor (:func:`bn_eps_ratio`); the exact angle of a plain SGD step and its second-order deviation from the
  first-order prediction (:func:`sgd_step_chord`, :func:`chord_second_order`); the exact norm recursion without weight
  decay (:func:`norm_sq_after_sgd_step`) and with it (:func:`norm_sq_after_sgd_wd_step`); the equilibrium norm and
  angular step with weight decay (:func:`equilibrium_norm4`, :func:`equilibrium_angular_step`); the fraction of a
  gap that a run closes (:func:`gap_closed_fraction`).

*Why the gradient is orthogonal to the weights* (derived from (1)). For :math:`c>0`, :math:`L(cw)=L(w)`;
differentiating at :math:`c=1` gives :math:`\langle w, g\rangle = 0`, and differentiating in :math:`w` gives
:math:`c\,g(cw)=g(w)`, which is (2). A plain SGD step :math:`w'=w-\eta g` is therefore a right triangle:
:math:`\lVert w'\rVert^2=\lVert w\rVert^2+\eta^2\lVert g\rVert^2` exactly, and the angle :math:`\theta` between
:math:`w` and :math:`w'` has :math:`\tan\theta=\eta\lVert g\rVert/\lVert w\rVert=\eta\lVert\tilde g\rVert/\lVert
w\rVert^2`: the direction moves as if the step size were :math:`\eta/\lVert w\rVert^2` (to first order; exactly,
:math:`\tan\theta` is).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "effective_lr",
    "sgd_step_tangent",
    "sgd_step_chord",
    "chord_second_order",
    "norm_sq_after_sgd_step",
    "norm_sq_after_sgd_wd_step",
    "norm_sq_growth",
    "equilibrium_norm4",
    "equilibrium_angular_step",
    "momentum_balance",
    "bn_eps_ratio",
    "bn_eps_orthogonality",
    "corrected_lr",
    "gap_closed_fraction",
]


def effective_lr(lr, weight_norm):
    r"""The effective step size of the direction :math:`\hat w`, :math:`\eta/\lVert w\rVert^2` (**paper**, §3.2).

    From (2) and :math:`\langle w,g\rangle=0`: :math:`\hat w_{t+1}=\hat w_t-\frac{\eta}{\lVert w_t\rVert^2}(I-\hat w_t
    \hat w_t^\top)\tilde g_t+O(\eta^2)`. Works elementwise on arrays.
    """
    return np.asarray(lr, dtype=float) / np.asarray(weight_norm, dtype=float) ** 2


def sgd_step_tangent(lr, grad_norm, weight_norm):
    r""":math:`x=\eta\lVert g\rVert/\lVert w\rVert=\eta\lVert\tilde g\rVert/\lVert w\rVert^2`: the first-order
    angle of a plain SGD step on a scale-invariant weight, and exactly :math:`\tan\theta` (**derived**: the step
    :math:`-\eta g` is orthogonal to :math:`w`)."""
    return np.asarray(lr, dtype=float) * np.asarray(grad_norm, dtype=float) / np.asarray(weight_norm, dtype=float)


def sgd_step_chord(lr, grad_norm, weight_norm):
    r"""The exact distance :math:`\lVert\hat w_{t+1}-\hat w_t\rVert=2\sin(\theta/2)`, :math:`\theta=\arctan x`, of a
    plain SGD step (no momentum, no weight decay) on a scale-invariant weight (**derived**, exact when
    :math:`\langle w,g\rangle=0`); :math:`x` is :func:`sgd_step_tangent`."""
    theta = np.arctan(sgd_step_tangent(lr, grad_norm, weight_norm))
    return 2.0 * np.sin(theta / 2.0)


def chord_second_order(x):
    r"""The relative deviation of the exact chord from the first-order angle :math:`x` (**derived**):

    .. math:: \frac{2\sin(\tfrac12\arctan x)}{x}-1=-\tfrac38x^2+O(x^4),

    since :math:`\arctan x=x-x^3/3+\dots` and :math:`2\sin(\theta/2)=\theta-\theta^3/24+\dots`. This is what the
    first-order statement "the direction moves by :math:`\eta\lVert\tilde g\rVert/\lVert w\rVert^2`" leaves out.
    """
    x = np.asarray(x, dtype=float)
    return -3.0 / 8.0 * x**2


def norm_sq_after_sgd_step(norm_sq, lr, grad_norm):
    r""":math:`\lVert w_{t+1}\rVert^2=\lVert w_t\rVert^2+\eta^2\lVert g_t\rVert^2` (**derived**
    in chapter 07): exact for plain SGD without momentum or weight decay on a scale-invariant weight, because
    :math:`\langle w_t,g_t\rangle=0`. The norm can only grow, so the effective step :math:`\eta/\lVert w\rVert^2`
    only shrinks. With momentum the step is not orthogonal to :math:`w` and this is not exact."""
    return np.asarray(norm_sq, dtype=float) + (np.asarray(lr, dtype=float) * np.asarray(grad_norm, dtype=float)) ** 2


def norm_sq_after_sgd_wd_step(norm_sq, lr, weight_decay, grad_norm):
    r""":math:`\lVert w_{t+1}\rVert^2=(1-\eta\lambda)^2\lVert w_t\rVert^2+\eta^2\lVert g_t\rVert^2` for plain SGD with
    weight decay, :math:`w_{t+1}=(1-\eta\lambda)w_t-\eta g_t` (**derived**, exact when :math:`\langle w,g\rangle=0`)."""
    decay = (1.0 - np.asarray(lr, dtype=float) * weight_decay) ** 2
    return decay * np.asarray(norm_sq, dtype=float) + (np.asarray(lr, dtype=float) * grad_norm) ** 2


def norm_sq_growth(lrs, grad_norms):
    r"""The predicted total growth :math:`\lVert w_T\rVert^2-\lVert w_0\rVert^2=\sum_t\eta_t^2\lVert g_t\rVert^2` of
    :func:`norm_sq_after_sgd_step` iterated over steps (the last axis of ``grad_norms``) (**derived**)."""
    steps = (np.asarray(lrs, dtype=float) * np.asarray(grad_norms, dtype=float)) ** 2
    return steps.sum(axis=-1)


def equilibrium_norm4(lr, weight_decay, unit_grad_sq, momentum=0.0):
    r"""The weight-decay equilibrium of :math:`\lVert w\rVert^4` on a scale-invariant weight (**derived**).

    *Plain SGD* (exact fixed point of :func:`norm_sq_after_sgd_wd_step` with :math:`\lVert g\rVert^2=\lVert\tilde
    g\rVert^2/\lVert w\rVert^2`): :math:`\lVert w\rVert^2\big(1-(1-\eta\lambda)^2\big)=\eta^2\lVert\tilde g\rVert^2/
    \lVert w\rVert^2`, so

    .. math:: \lVert w\rVert^4\to\frac{\eta\,\lVert\tilde g\rVert^2}{\lambda\,(2-\eta\lambda)} .

    *Momentum* :math:`\beta` (leading order in :math:`\eta\lambda`, and assuming the per-step gradients are
    uncorrelated, so that the tangential momentum buffer has :math:`\lVert v\rVert^2=\lVert g\rVert^2/(1-\beta^2)`):
    with the steady-state balance of :func:`momentum_balance`,
    :math:`\lVert w\rVert^4\to\eta\lVert\tilde g\rVert^2/(2\lambda(1-\beta))`. Correlated gradients make
    :math:`\lVert v\rVert` larger and the norm larger. ``unit_grad_sq`` is :math:`\lVert\tilde g\rVert^2`, the
    squared gradient at unit norm (:math:`\lVert w\rVert^2\lVert g\rVert^2` by (2)).
    """
    lr, unit_grad_sq = np.asarray(lr, dtype=float), np.asarray(unit_grad_sq, dtype=float)
    if momentum == 0:
        return lr * unit_grad_sq / (weight_decay * (2.0 - lr * weight_decay))
    return lr * unit_grad_sq / (2.0 * weight_decay * (1.0 - momentum))


def momentum_balance(lr, weight_decay, momentum=0.0):
    r"""The steady state of SGD with momentum and weight decay on a scale-invariant weight (**derived**):

    .. math:: \eta\,(1+\beta)\,\lVert v\rVert^2 = 2\lambda\,\lVert w\rVert^2 ,

    returned as the factor :math:`2\lambda/(\eta(1+\beta))` that multiplies :math:`\lVert w\rVert^2`.

    Derivation: :math:`v_{t+1}=\beta v_t+g_t+\lambda w_t`, :math:`w_{t+1}=w_t-\eta v_{t+1}` (torch's SGD). With
    :math:`a_t=\langle w_t,v_{t+1}\rangle` and :math:`\langle w_t,g_t\rangle=0`,
    :math:`a_t=\beta(a_{t-1}-\eta\lVert v_t\rVert^2)+\lambda\lVert w_t\rVert^2`, and the norm changes by
    :math:`-2\eta a_t+\eta^2\lVert v_{t+1}\rVert^2`. A steady state (constant :math:`a`, :math:`\lVert v\rVert^2`,
    :math:`\lVert w\rVert^2`) needs :math:`a=\eta\lVert v\rVert^2/2` and :math:`(1-\beta)a=\lambda\lVert w\rVert^2-
    \beta\eta\lVert v\rVert^2`, which give the balance. No assumption on the gradients is needed.
    """
    return 2.0 * weight_decay / (lr * (1.0 + momentum))


def equilibrium_angular_step(lr, weight_decay, momentum=0.0):
    r"""The angular update per step at the weight-decay equilibrium (**derived** here; not a statement of the
    paper):

    .. math:: \lVert\hat w_{t+1}-\hat w_t\rVert\to\sqrt{\frac{2\eta\lambda}{1+\beta}} .

    From :func:`momentum_balance`: the step :math:`\eta v` is tangential to leading order, so the angle is
    :math:`\eta\lVert v\rVert/\lVert w\rVert=\sqrt{\eta^2\cdot 2\lambda/(\eta(1+\beta))}`. It does not depend on the
    gradient: at equilibrium the direction turns at a rate set by :math:`\eta\lambda` alone. For plain SGD the exact
    fixed point gives :math:`\tan\theta=\sqrt{\eta\lambda(2-\eta\lambda)}`, returned when ``momentum == 0``.
    """
    lr = np.asarray(lr, dtype=float)
    if momentum == 0:
        return np.sqrt(lr * weight_decay * (2.0 - lr * weight_decay))
    return np.sqrt(2.0 * lr * weight_decay / (1.0 + momentum))


def bn_eps_ratio(variance, eps, scale):
    r"""How much BatchNorm's :math:`\epsilon` breaks scale invariance (**derived**): per channel,

    .. math:: \frac{\mathrm{BN}_\epsilon(c\,z)}{\mathrm{BN}_\epsilon(z)}=\sqrt{\frac{\sigma^2+\epsilon}
        {\sigma^2+\epsilon/c^2}} ,

    because :math:`\mathrm{BN}_\epsilon(cz)=c(z-\mu)/\sqrt{c^2\sigma^2+\epsilon}=(z-\mu)/\sqrt{\sigma^2+\epsilon/c^2}`
    (before the affine gain and bias; ``variance`` is the biased batch variance :math:`\sigma^2` of the channel's
    conv output). Exactly 1 for :math:`\epsilon=0`; far from 1 once :math:`c^2\sigma^2` approaches :math:`\epsilon`,
    i.e. for weights shrunk very small.
    """
    variance = np.asarray(variance, dtype=float)
    return np.sqrt((variance + eps) / (variance + eps / np.asarray(scale, dtype=float) ** 2))


def bn_eps_orthogonality(variance, eps, gain_times_grad_gain):
    r"""The radial part of the gradient that BatchNorm's :math:`\epsilon` leaves (**derived**):

    .. math:: \langle w,g\rangle=\frac{\epsilon}{\sigma^2+\epsilon}\,\gamma\,\frac{\partial L}{\partial\gamma},

    from :math:`\langle w,g\rangle=\frac{d}{dc}L(cw)\big|_{c=1}` and :math:`\frac{d}{dc}\hat y(c)\big|_{c=1}=\hat y\,
    \epsilon/(\sigma^2+\epsilon)` for :math:`\hat y(c)=c(z-\mu)/\sqrt{c^2\sigma^2+\epsilon}`, with
    :math:`\sum_i\frac{\partial L}{\partial y_i}\gamma\hat y_i=\gamma\,\partial L/\partial\gamma`.
    ``gain_times_grad_gain`` is :math:`\gamma\,\partial L/\partial\gamma` of the channel's BatchNorm.
    """
    variance = np.asarray(variance, dtype=float)
    return eps / (variance + eps) * np.asarray(gain_times_grad_gain, dtype=float)


def corrected_lr(lr, weight_norm, reference_norm):
    r"""The per-channel learning-rate correction (**paper**, eq. (4), ``SGDWDMimic``):

    .. math:: \hat\eta=\eta\,\frac{\lVert w\rVert^2}{\lVert w_{[WD]}\rVert^2},

    with :math:`w_{[WD]}` the same channel in a run *with* weight decay. Its effective step
    :math:`\hat\eta/\lVert w\rVert^2=\eta/\lVert w_{[WD]}\rVert^2` is the weight-decay run's.
    """
    return (
        np.asarray(lr, dtype=float)
        * (np.asarray(weight_norm, dtype=float) / np.asarray(reference_norm, dtype=float)) ** 2
    )


def gap_closed_fraction(with_wd, without_wd, corrected):
    r"""The fraction of the gap between the weight-decay run and the run without it that the corrected run closes,
    :math:`(a_{\text{corr}}-a_{\text{off}})/(a_{\text{on}}-a_{\text{off}})` (1: all of it, 0: none; NaN when the
    gap is 0). The paper's readings (≈ 90.5, 89.2, 90.5 %) give ≈ 1."""
    gap = with_wd - without_wd
    return float("nan") if gap == 0 else (corrected - without_wd) / gap
