r"""The EvoNorms (Liu et al., 2020): a normalizer and an activation in one nonlinear layer.

:class:`EvoNormB0` divides by the larger of a batch and an instance standard deviation; its batch variance and
running variance are :class:`~normlib.layers.VarianceNorm2d`'s. :class:`EvoNormS0` divides by a per-sample group
standard deviation and gates with a sigmoid. Both replace the activation of a block; ``apply_act=False`` keeps
only their normalization.

**The authors' convention.** The per-sample standard deviations (EvoNorm-B0's instance std, EvoNorm-S0's group
std) use the *unbiased* variance by default, as ``instance_std`` and ``group_std`` in Lubana et al.'s
``layer_defs.py`` do (``torch.var``); ``unbiased=False`` gives the biased one (timm's). The difference is the factor
:math:`\sqrt{n/(n-1)}` on the standard deviation, 15 % on a 2x2 map (:math:`n = 4`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlib.layers._util import EPS, _affine, _check_4d, _per_channel
from normlib.layers.batch import _BatchVarianceNorm
from normlib.layers.group import resolve_groups


class EvoNormB0(_BatchVarianceNorm):
    r"""EvoNorm-B0 (Liu et al., 2020): a batch normalizer and activation in one layer.

    .. math::
        y = \frac{x}{\max\!\left(\sqrt{\sigma^2_{c} + \epsilon},\; v_c x + s_{nc}(x)\right)}
            \gamma_c + \beta_c,
        \qquad s_{nc}(x) = \sqrt{\mathrm{Var}_{H,W}[x_{nc}] + \epsilon}

    :math:`\sigma^2_c` is the biased batch variance over :math:`(N, H, W)` in training and
    the running variance (torch-style ``momentum``, fed the biased batch variance, as the
    authors' ``EvoNormBO``) in eval mode; :math:`s_{nc}` is the instance standard deviation
    over the :math:`H W` positions, with the unbiased variance as the authors' ``instance_std``
    (``unbiased=False``: the biased one). A map of one position has no unbiased variance: there,
    as in the authors' code, the instance variance is 0. :math:`v` is learnable, initialized
    to 1. The max makes the layer nonlinear, so it replaces the activation.

    With ``apply_act=False`` (for a norm that must stay linear, e.g. on a shortcut) the
    instance branch and :math:`v` are dropped and the layer keeps its batch normalization,
    :math:`y = x / \sqrt{\sigma^2_c + \epsilon}\, \gamma + \beta`, i.e. :class:`VarianceNorm2d`.
    (timm's ``EvoNorm2dB0(apply_act=False)`` instead drops the normalization too and is
    only the affine map.)

    Args:
        num_channels: number of channels :math:`C`
        eps: added to both variances for numerical stability. Default: 1e-5
        momentum: weight of the new batch in the running variance. Default: 0.1
        apply_act: keep the nonlinear instance branch. Default: True
        track_running_stats: keep the running variance for eval mode; without it eval mode
            uses the batch variance too. Default: True
        unbiased: the instance standard deviation uses the unbiased variance, as the authors'
            code. Default: True
        device, dtype: where and in which dtype the parameters and buffers are created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = EPS,
        momentum: float = 0.1,
        apply_act: bool = True,
        track_running_stats: bool = True,
        unbiased: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_channels, eps, momentum, track_running_stats, device=device, dtype=dtype)
        self.unbiased = unbiased
        self.apply_act = apply_act
        self.v = nn.Parameter(torch.empty(num_channels, device=device, dtype=dtype)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "v", None) is not None:  # the base __init__ calls this before v exists
            nn.init.ones_(self.v)

    def forward(self, x: Tensor) -> Tensor:
        var = self._channel_variance(x)
        if self.v is None:
            return self._divide_by_std(x, var)
        batch_std = _per_channel((var + self.eps).sqrt())
        positions = x.shape[2] * x.shape[3]
        if self.unbiased and positions < 2:  # no unbiased variance of one number: 0, as the authors' guard
            instance_var = torch.zeros_like(x)
        else:
            instance_var = x.var(dim=(2, 3), correction=1 if self.unbiased else 0, keepdim=True)
        instance_std = (instance_var + self.eps).sqrt()
        denominator = torch.maximum(batch_std, x * _per_channel(self.v) + instance_std)
        return _affine(x / denominator, _per_channel(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, apply_act={self.apply_act}, unbiased={self.unbiased}"


class EvoNormS0(nn.Module):
    r"""EvoNorm-S0 (Liu et al., 2020): a batch-independent normalizer and activation in one layer.

    .. math::
        y = \frac{x\, \mathrm{sigmoid}(v_c x)}{s_{ng}(x)} \gamma_c + \beta_c, \qquad
        s_{ng}(x) = \sqrt{\mathrm{Var}_{g}[x_n] + \epsilon}

    :math:`s_{ng}` is the standard deviation of sample :math:`n` over the :math:`(C/G) H W`
    numbers of its group :math:`g` (no mean subtracted from :math:`x`), with the unbiased
    variance as the authors' ``group_std`` (``unbiased=False``: the biased one, timm's); the
    unbiased variance needs at least 2 numbers per group. :math:`v` is learnable, initialized
    to 1. The gate makes the layer nonlinear (a
    Swish when :math:`v = 1`), so it replaces the activation.

    With ``apply_act=False`` the gate and :math:`v` are dropped and the layer stays a group
    normalizer that subtracts no mean, :math:`y = x / s_{ng}(x)\, \gamma + \beta`.
    (timm's ``EvoNorm2dS0(apply_act=False)`` instead drops the normalization too and is
    only the affine map.)

    Args:
        num_channels: number of channels :math:`C`
        groups: number of groups :math:`G`; must divide :math:`C`
        group_size: channels per group :math:`C/G`; must divide :math:`C`. Give ``groups``
            or ``group_size``, not both; with neither, ``groups=32``
        eps: added to the variance for numerical stability. Default: 1e-5
        apply_act: keep the sigmoid gate. Default: True
        unbiased: the group standard deviation uses the unbiased variance, as the authors'
            code. Default: True
        device, dtype: where and in which dtype the parameters are created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(
        self,
        num_channels: int,
        groups: int | None = None,
        group_size: int | None = None,
        eps: float = EPS,
        apply_act: bool = True,
        unbiased: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_groups = resolve_groups(num_channels, groups, group_size)
        self.num_channels = num_channels
        self.eps = eps
        self.unbiased = unbiased
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
        self.bias = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
        self.v = nn.Parameter(torch.empty(num_channels, **factory_kwargs)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.ones_(self.v)

    def _divide_by_group_std(self, x: Tensor) -> Tensor:
        grouped = x.reshape(x.shape[0], self.num_groups, -1)
        if self.unbiased and grouped.shape[-1] < 2:
            raise ValueError(
                f"unbiased EvoNorm-S0 needs at least 2 numbers per group, got n = (C/G)*H*W = {grouped.shape[-1]} "
                f"for input shape {tuple(x.shape)} and groups={self.num_groups}; use unbiased=False"
            )
        variance = grouped.var(dim=-1, correction=1 if self.unbiased else 0, keepdim=True)
        inv_std = torch.rsqrt(variance + self.eps)
        return (grouped * inv_std).view_as(x)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        y = self._divide_by_group_std(x)
        if self.v is not None:
            y = y * torch.sigmoid(x * _per_channel(self.v))
        return _affine(y, _per_channel(self.weight), self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, groups={self.num_groups}, eps={self.eps}, apply_act={self.apply_act}, "
            f"unbiased={self.unbiased}"
        )
