r"""Optimizers that the training loop of :mod:`normlib.train` can take through its ``optimizer_factory``.

:class:`SGDWDMimic` is Hoffer et al. (2018)'s learning-rate correction (the poster's eq. (4), the official code's
``normmatters_wd/optimizers_lib/custom_sgd.py``): SGD with momentum where, for the weights of chosen param groups,
each output channel's step is multiplied by :math:`\lVert w_c\rVert^2/\lVert w_{[WD],c}\rVert^2`, the ratio of its
current squared norm to the squared norm of the same channel in a run *with* weight decay. On a scale-invariant
weight (a conv followed by BatchNorm) this gives the direction the effective step size
:math:`\eta/\lVert w_{[WD]}\rVert^2` of the weight-decay run, without any weight decay.

The update, per parameter :math:`p` with gradient :math:`g` (torch's SGD with ``dampening=0``, ``nesterov=False``):

.. math::

    d = g + \lambda p,\qquad b \leftarrow \begin{cases} d & \text{first step}\\ \beta b + d & \text{after}
    \end{cases},\qquad p_c \leftarrow p_c - \eta\, s_c\, b_c ,

with :math:`s_c = \min(\lVert p_c\rVert^2/r_c^2,\ s_{\max})` (the norm of row :math:`c` of ``p.view(C, -1)``,
measured before the update, :math:`r_c` the reference norm, and :math:`s_{\max}` the cap ``max_step_scale``,
:math:`\infty` by default as in the paper's code) for a corrected parameter and :math:`s_c = 1` otherwise. Every
channel step whose scale the cap cut is counted (:attr:`SGDWDMimic.clipped`).

Why a cap. The momentum buffer :math:`b` holds gradients of earlier steps, and a scale-invariant gradient is
:math:`\tilde g/\lVert w\rVert`: a gradient taken when the norm was :math:`\lVert w_{t-k}\rVert` turns the channel at
step :math:`t` by :math:`\eta s_t\lVert\tilde g\rVert/(\lVert w_{t-k}\rVert\lVert w_t\rVert)
=\eta\lVert\tilde g\rVert\,\lVert w_t\rVert/(r^2\lVert w_{t-k}\rVert)`, *larger* the more the norm grew since.
Without weight decay the corrected step grows the norm, so a norm growing by a factor :math:`1+\gamma` per step
amplifies the buffer's old gradients by :math:`(1+\gamma)^k` against the decay :math:`\beta^k`: once
:math:`\beta(1+\gamma)\ge1` the step feeds on itself and the run blows up. The cap bounds that feedback.

Differences from the official code: ``p.grad`` is not modified in place (the code adds the weight decay into the
gradient's storage), and NaNs are not silently reset to zero (the code does; here a divergence stays visible and the
training loop records it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch.optim import Optimizer

__all__ = ["SGDWDMimic", "channel_norms", "project_channel_norms"]


def channel_norms(weight: torch.Tensor) -> torch.Tensor:
    """The norm of each output channel of ``weight`` (its first dimension): ``weight.view(C, -1).norm(dim=1)``."""
    return weight.detach().reshape(weight.shape[0], -1).norm(dim=1)


def project_channel_norms(weight: torch.Tensor, target: torch.Tensor) -> None:
    r"""Rescale each output channel of ``weight`` in place to the norm ``target[c]``: :math:`w_c\leftarrow
    w_c\,t_c/\lVert w_c\rVert` (Hoffer et al.'s "norm schedule", the official code's ``WeightsNormalization``). On a
    scale-invariant weight this changes neither the function nor the direction, only the effective step
    :math:`\eta/t_c^2` of the next steps."""
    with torch.no_grad():
        norms = channel_norms(weight)
        factor = target.to(device=weight.device, dtype=weight.dtype) / norms
        weight.mul_(factor.view(-1, *([1] * (weight.dim() - 1))))


class SGDWDMimic(Optimizer):
    """SGD with momentum and a per-channel step scaled by ``||w_c||^2 / r_c^2`` on corrected parameters.

    A param group with ``"correct": True`` is corrected; every parameter in it needs reference norms (one per
    output channel) set with :meth:`set_reference_norms` before a step, and :meth:`reference_norms` reads them back
    (e.g. for a recorder that computes the step scale of the step just taken). Other groups are plain SGD. ``lr``,
    ``momentum`` and ``weight_decay`` can be set per group, as with ``torch.optim.SGD``.

    Args:
        params: parameters or param groups.
        lr: the step size :math:`\\eta`.
        momentum: :math:`\\beta`.
        weight_decay: :math:`\\lambda` (L2, added to the gradient).
        max_step_scale: the cap :math:`s_{\\max}` on a corrected channel's step scale (``inf``: none).

    Attributes:
        clipped: channel steps whose scale the cap cut, since construction.
        clipped_steps: optimizer steps in which the cap cut at least one channel.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        max_step_scale: float = math.inf,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if not max_step_scale > 0:
            raise ValueError(f"max_step_scale must be positive (inf: no cap), got {max_step_scale}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "correct": False})
        self._reference: dict[torch.Tensor, torch.Tensor] = {}
        self.max_step_scale = float(max_step_scale)
        self.clipped = 0
        self.clipped_steps = 0

    def corrected_params(self) -> list[torch.Tensor]:
        """The parameters whose step is corrected, in group order."""
        return [p for group in self.param_groups if group["correct"] for p in group["params"]]

    def set_reference_norms(self, norms: Sequence[torch.Tensor]) -> None:
        """Reference norms :math:`r_c`, one tensor of shape ``(C,)`` per corrected parameter, in the order of
        :meth:`corrected_params`; they stay until set again."""
        params = self.corrected_params()
        if len(norms) != len(params):
            raise ValueError(
                f"expected {len(params)} reference norm tensors (one per corrected parameter), got {len(norms)}"
            )
        for p, r in zip(params, norms):
            if r.shape != (p.shape[0],):
                raise ValueError(
                    f"reference norms of shape {tuple(r.shape)} for a parameter with {p.shape[0]} output channels"
                )
            self._reference[p] = r.to(device=p.device, dtype=p.dtype)

    def reference_norms(self, p: torch.Tensor) -> torch.Tensor:
        """The reference norms :math:`r_c` of the corrected parameter ``p``, shape ``(C,)``, in ``p``'s dtype and
        on its device: those of the latest :meth:`set_reference_norms`, which the next step uses."""
        if p not in self._reference:
            raise RuntimeError(
                "SGDWDMimic: no reference norms set for this parameter (is it in a corrected group? "
                "call set_reference_norms first)"
            )
        return self._reference[p]

    def step_scales(self, p: torch.Tensor) -> torch.Tensor:
        """:math:`s_c=\\lVert p_c\\rVert^2/r_c^2` for a corrected parameter, at its current value (in its dtype),
        before the cap."""
        return (channel_norms(p) / self.reference_norms(p)) ** 2

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clipped_before = self.clipped
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad.add(p, alpha=weight_decay) if weight_decay else p.grad.clone()
                if momentum:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(d)
                    d = state["momentum_buffer"]
                if group["correct"]:
                    scales = self.step_scales(p)
                    if math.isfinite(self.max_step_scale):
                        self.clipped += int((scales > self.max_step_scale).sum())
                        scales = scales.clamp(max=self.max_step_scale)
                    p.sub_(lr * scales.view(-1, *([1] * (p.dim() - 1))) * d)
                else:
                    p.add_(d, alpha=-lr)
        self.clipped_steps += int(self.clipped > clipped_before)
        return loss
