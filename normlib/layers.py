r"""The normalization layers of Lubana, Dick & Tanaka (NeurIPS 2021), as ``nn.Module``\ s.

Every layer follows the definition the authors implemented (``layer_defs.py`` of their
official code, summarised in ``papers.md`` section 1.3): affine pairs
:math:`(\gamma, \beta)` are per channel and start at :math:`(1, 0)`, :math:`\epsilon = 10^{-5}`,
inputs are :math:`(N, C, H, W)`. Torch's native kernels do the work wherever the maths is
the same, so BN/LN/IN/GN run as fast as torch's own modules.

The registry maps a short name to a layer and says where it sits in a block:

======  ======================================  ==========  ===================
name    layer(s)                                family      placement
======  ======================================  ==========  ===================
none    Identity, ReLU                          none        after_conv
bn      :class:`BatchNorm2d`, ReLU              activation  after_conv
ln      :class:`LayerNorm2d`, ReLU              activation  after_conv
in      :class:`InstanceNorm2d`, ReLU           activation  after_conv
gn      :class:`GroupNorm2d`, ReLU              activation  after_conv
frn     :class:`FilterResponseNorm2d`, TLU      activation  after_conv
vn      :class:`VarianceNorm2d`, ReLU           activation  after_conv
wn      :class:`WNConv2d`, :class:`ScaledReLU`  parametric  in_conv
sws     :class:`ScaledStdConv2d`, ReLU          parametric  in_conv
evo_b0  :class:`EvoNormB0` (no separate act.)   activation  replaces_activation
evo_s0  :class:`EvoNormS0` (no separate act.)   activation  replaces_activation
======  ======================================  ==========  ===================

The normalizers of Hoffer et al. (2018, "Norm matters") are registered too, after the paper's set
(:data:`NORM_NAMES` stays Lubana et al.'s; :data:`NORM_MATTERS_NAMES` lists these):

======  ====================================================  ==========  ==========
name    layer(s)                                              family      placement
======  ====================================================  ==========  ==========
l1bn    :class:`L1BatchNorm2d`, ReLU                          activation  after_conv
linfbn  :class:`LinfBatchNorm2d`, ReLU                        activation  after_conv
topkbn  :class:`TopkBatchNorm2d`, ReLU                        activation  after_conv
bwn     :class:`BWNConv2d`, :class:`MeanBatchNorm2d`, ReLU    parametric  in_conv
======  ====================================================  ==========  ==========

Build layers with :func:`make_norm`, :func:`make_conv`, :func:`make_activation` or the
whole block with :func:`conv_norm_act`; add your own normalizer with :func:`register_norm`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NORM_NAMES",
    "NormInfo",
    "norm_info",
    "register_norm",
    "make_norm",
    "make_conv",
    "make_activation",
    "conv_norm_act",
    "resolve_groups",
    "BatchNorm2d",
    "LayerNorm2d",
    "InstanceNorm2d",
    "GroupNorm2d",
    "FilterResponseNorm2d",
    "TLU",
    "VarianceNorm2d",
    "WNConv2d",
    "ScaledStdConv2d",
    "ScaledReLU",
    "EvoNormB0",
    "EvoNormS0",
    "NORM_MATTERS_NAMES",
    "L1_CONSTANT",
    "linf_constant",
    "L1BatchNorm2d",
    "LinfBatchNorm2d",
    "TopkBatchNorm2d",
    "MeanBatchNorm2d",
    "BWNConv2d",
]

EPS = 1e-5
DEFAULT_GROUPS = 32  # the authors' ``--p_grouping 32``
RELU_GAIN = math.sqrt(2 * math.pi / (math.pi - 1))  # 1 / std of ReLU(z), z ~ N(0, 1)
RELU_MEAN = 1 / math.sqrt(2 * math.pi)  # mean of ReLU(z), z ~ N(0, 1)


# --------------------------------------------------------------------------- helpers


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(param: str, value) -> None:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{param} must be a positive integer, got {value!r}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _divisor_error(param: str, value, num_channels: int, what: str, note: str = "") -> ValueError:
    valid = ", ".join(map(str, _divisors(num_channels)))
    return ValueError(
        f"{param}={value!r}{note} must be a positive integer dividing num_channels={num_channels}; "
        f"valid {what}: {valid}"
    )


def resolve_groups(num_channels: int, groups: int | None = None, group_size: int | None = None) -> int:
    r"""Number of groups :math:`G` for a grouped normalizer, set by ``groups`` or ``group_size``.

    ``group_size`` :math:`s` means :math:`G = C / s`; with neither given, :math:`G = 32`
    (the authors' default). Raises ``ValueError`` naming the parameter and listing the
    valid values (the divisors of ``num_channels``) when the choice does not split the
    channels evenly, or when both are given.
    """
    _check_positive_int("num_channels", num_channels)
    if groups is not None and group_size is not None:
        raise ValueError(
            f"give either groups or group_size, not both (got groups={groups!r}, group_size={group_size!r})"
        )
    if group_size is not None:
        if not _is_int(group_size) or group_size <= 0 or num_channels % group_size:
            raise _divisor_error("group_size", group_size, num_channels, "group sizes")
        return num_channels // group_size
    note = " (the default)" if groups is None else ""
    groups = DEFAULT_GROUPS if groups is None else groups
    if not _is_int(groups) or groups <= 0 or num_channels % groups:
        raise _divisor_error("groups", groups, num_channels, "groups", note)
    return groups


def _check_4d(x: Tensor, layer: nn.Module) -> None:
    if x.dim() != 4:
        name = type(layer).__name__
        raise ValueError(f"{name} expects a 4D (N, C, H, W) input, got shape {tuple(x.shape)}")


def _per_channel(t: Tensor) -> Tensor:
    """View a ``(C,)`` tensor as ``(1, C, 1, 1)`` to broadcast over ``(N, C, H, W)``."""
    return t.view(1, -1, 1, 1)


def _affine(x: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """``x * scale + bias`` in one fused op; ``bias`` is ``(C,)``, ``scale`` broadcasts to ``x``."""
    return torch.addcmul(_per_channel(bias), x, scale)


def _same_padding(kernel_size, dilation=1):
    if isinstance(kernel_size, int):
        return dilation * (kernel_size - 1) // 2
    return tuple(dilation * (k - 1) // 2 for k in kernel_size)


# ------------------------------------------------------------------ activation-based norms


class BatchNorm2d(nn.BatchNorm2d):
    r"""Batch Normalization (Ioffe & Szegedy, 2015): torch's :class:`~torch.nn.BatchNorm2d`.

    .. math::
        y = \frac{x - \mathrm{E}_{N,H,W}[x]}{\sqrt{\mathrm{Var}_{N,H,W}[x] + \epsilon}} \gamma + \beta

    Statistics are per channel over the batch and spatial dims, with the biased variance.
    Running statistics follow :math:`m \leftarrow 0.9\,m + 0.1\,\text{batch}` (torch
    ``momentum=0.1``, the authors' 0.9) and are used in eval mode. As in torch, the running
    variance is fed the unbiased batch variance.

    Args:
        num_features: number of channels :math:`C`
        eps: added to the variance for numerical stability. Default: 1e-5
        momentum: weight of the new batch in the running statistics. Default: 0.1

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_features: int, eps: float = EPS, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)


class LayerNorm2d(nn.GroupNorm):
    r"""Layer Normalization (Ba et al., 2016) over all of :math:`(C, H, W)`, with a per-channel affine.

    .. math::
        y_{n} = \frac{x_{n} - \mathrm{E}_{C,H,W}[x_{n}]}{\sqrt{\mathrm{Var}_{C,H,W}[x_{n}] + \epsilon}}
                \gamma + \beta

    Statistics are per sample, with the biased variance. Unlike :class:`torch.nn.LayerNorm`,
    whose affine is elementwise over :math:`(C, H, W)`, :math:`\gamma, \beta` have shape
    :math:`(C,)`. This is a group norm with one group, and runs ``F.group_norm(x, 1, ...)``.

    Args:
        num_channels: number of channels :math:`C`
        eps: added to the variance for numerical stability. Default: 1e-5

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, eps: float = EPS) -> None:
        super().__init__(1, num_channels, eps=eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


class InstanceNorm2d(nn.InstanceNorm2d):
    r"""Instance Normalization (Ulyanov et al., 2017): per sample and channel, over :math:`(H, W)`.

    .. math::
        y_{nc} = \frac{x_{nc} - \mathrm{E}_{H,W}[x_{nc}]}{\sqrt{\mathrm{Var}_{H,W}[x_{nc}] + \epsilon}}
                 \gamma_c + \beta_c

    Biased variance, per-channel affine, no running statistics (train and eval agree).
    Torch's :class:`~torch.nn.InstanceNorm2d` with ``affine=True``.

    Args:
        num_features: number of channels :math:`C`
        eps: added to the variance for numerical stability. Default: 1e-5

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_features: int, eps: float = EPS) -> None:
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=False)


class GroupNorm2d(nn.GroupNorm):
    r"""Group Normalization (Wu & He, 2018) with the authors' unbiased group variance.

    The :math:`C` channels are split into :math:`G` groups of :math:`C/G`; each sample and
    group :math:`g` holds :math:`n = (C/G) H W` numbers, normalized together:

    .. math::
        y = \frac{x - \mu_g}{\sqrt{\hat\sigma_g^2 + \epsilon}} \gamma + \beta, \qquad
        \hat\sigma_g^2 = \frac{1}{n - b} \sum_{i \in g} (x_i - \mu_g)^2,

    with :math:`b = 1` (unbiased, ``torch.var``: the authors' ``GN_self``) or :math:`b = 0`
    (biased: torch's :class:`~torch.nn.GroupNorm`). Both use one native ``F.group_norm``
    call: since :math:`\hat\sigma^2_{\text{unbiased}} = \frac{n}{n-1} \sigma^2_{\text{biased}}`,

    .. math::
        \frac{x - \mu}{\sqrt{\frac{n}{n-1}\sigma^2 + \epsilon}}
        = \sqrt{\tfrac{n-1}{n}}\; \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon \frac{n-1}{n}}},

    so the unbiased layer is ``F.group_norm`` with ``eps * (n-1)/n`` and weight
    :math:`\gamma \sqrt{(n-1)/n}`. The unbiased variance needs :math:`n \ge 2`.

    ``group_size=1`` gives InstanceNorm and ``groups=1`` gives LayerNorm (exactly so with
    ``unbiased=False``).

    Args:
        num_channels: number of channels :math:`C`
        groups: number of groups :math:`G`; must divide :math:`C`
        group_size: channels per group :math:`C/G`; must divide :math:`C`. Give ``groups``
            or ``group_size``, not both; with neither, ``groups=32``
        eps: added to the variance for numerical stability. Default: 1e-5
        unbiased: use the unbiased group variance, as the paper's code does. Default: True

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
        unbiased: bool = True,
    ) -> None:
        super().__init__(resolve_groups(num_channels, groups, group_size), num_channels, eps=eps)
        self.unbiased = unbiased

    def forward(self, x: Tensor) -> Tensor:
        if not self.unbiased:
            return super().forward(x)
        n = (self.num_channels // self.num_groups) * math.prod(x.shape[2:])
        if n < 2:
            raise ValueError(
                f"unbiased GroupNorm needs at least 2 numbers per group, got n = (C/G)*H*W = {n} "
                f"for input shape {tuple(x.shape)} and groups={self.num_groups}; use unbiased=False"
            )
        shrink = (n - 1) / n
        return F.group_norm(x, self.num_groups, self.weight * math.sqrt(shrink), self.bias, self.eps * shrink)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.num_groups}, eps={self.eps}, unbiased={self.unbiased}"


class FilterResponseNorm2d(nn.Module):
    r"""Filter Response Normalization (Singh & Krishnan, 2020), without its TLU.

    .. math::
        \nu^2_{nc} = \mathrm{E}_{H,W}[x_{nc}^2], \qquad
        y_{nc} = \gamma_c \frac{x_{nc}}{\sqrt{\nu^2_{nc} + |\epsilon|}} + \beta_c

    No mean is subtracted. :math:`\epsilon` is a learnable scalar (its absolute value is
    used). Pair it with :class:`TLU`.

    Args:
        num_channels: number of channels :math:`C`
        eps: initial value of the learnable :math:`\epsilon`. Default: 1e-5

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, eps: float = EPS) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps_init = eps
        self.weight = nn.Parameter(torch.empty(num_channels))
        self.bias = nn.Parameter(torch.empty(num_channels))
        self.eps = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        nn.init.constant_(self.eps, self.eps_init)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        nu2 = x.square().mean(dim=(2, 3), keepdim=True)
        return _affine(x, torch.rsqrt(nu2 + self.eps.abs()) * _per_channel(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps_init={self.eps_init}"


class TLU(nn.Module):
    r"""Thresholded Linear Unit, the activation of Filter Response Normalization.

    .. math::
        y_{nc} = \max(x_{nc}, \tau_c), \qquad \tau \text{ learnable, initialized to } 0

    Args:
        num_channels: number of channels :math:`C`

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.tau = nn.Parameter(torch.empty(num_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.tau)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        return torch.maximum(x, _per_channel(self.tau))

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


class _BatchVarianceNorm(nn.Module):
    r"""Shared state of the layers that divide by a per-channel batch standard deviation.

    Holds the per-channel affine :math:`(\gamma, \beta)` and a running variance updated
    torch-style, ``running_var <- (1 - momentum) * running_var + momentum * unbiased batch var``
    (as :class:`torch.nn.BatchNorm2d`), and used in eval mode.
    """

    def __init__(self, num_channels: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.empty(num_channels))
        self.bias = nn.Parameter(torch.empty(num_channels))
        self.register_buffer("running_var", torch.empty(num_channels))

    def reset_running_stats(self) -> None:
        nn.init.ones_(self.running_var)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def _channel_variance(self, x: Tensor) -> Tensor:
        """Biased variance over :math:`(N, H, W)` in training (updating the running
        variance), the running variance in eval mode; shape ``(C,)``."""
        _check_4d(x, self)
        if not self.training:
            return self.running_var
        n = x.numel() // x.shape[1]
        if n < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input shape {tuple(x.shape)}"
            )
        var = x.var(dim=(0, 2, 3), correction=0)
        with torch.no_grad():
            self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
        return var

    def _divide_by_std(self, x: Tensor, var: Tensor) -> Tensor:
        """``x / sqrt(var + eps) * weight + bias`` with a per-channel ``var``."""
        return _affine(x, _per_channel(self.weight * torch.rsqrt(var + self.eps)), self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, momentum={self.momentum}"


class VarianceNorm2d(_BatchVarianceNorm):
    r"""Variance Normalization (Daneshmand et al., 2020): BatchNorm without mean subtraction.

    .. math::
        y = \frac{x}{\sqrt{\mathrm{Var}_{N,H,W}[x] + \epsilon}} \gamma + \beta

    Per-channel biased batch variance in training; the running variance (updated
    torch-style with ``momentum``, fed the unbiased batch variance) in eval mode.

    Args:
        num_channels: number of channels :math:`C`
        eps: added to the variance for numerical stability. Default: 1e-5
        momentum: weight of the new batch in the running variance. Default: 0.1

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, eps: float = EPS, momentum: float = 0.1) -> None:
        super().__init__(num_channels, eps, momentum)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self._divide_by_std(x, self._channel_variance(x))


class EvoNormB0(_BatchVarianceNorm):
    r"""EvoNorm-B0 (Liu et al., 2020): a batch normalizer and activation in one layer.

    .. math::
        y = \frac{x}{\max\!\left(\sqrt{\sigma^2_{c} + \epsilon},\; v_c x + s_{nc}(x)\right)}
            \gamma_c + \beta_c,
        \qquad s_{nc}(x) = \sqrt{\mathrm{Var}_{H,W}[x_{nc}] + \epsilon}

    :math:`\sigma^2_c` is the biased batch variance over :math:`(N, H, W)` in training and
    the running variance (torch-style ``momentum``, fed the unbiased batch variance) in eval
    mode; :math:`s_{nc}` is the biased instance standard deviation; :math:`v` is learnable,
    initialized to 1. The max makes the layer nonlinear, so it replaces the activation.

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

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(
        self, num_channels: int, eps: float = EPS, momentum: float = 0.1, apply_act: bool = True
    ) -> None:
        super().__init__(num_channels, eps, momentum)
        self.apply_act = apply_act
        self.v = nn.Parameter(torch.empty(num_channels)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.v is not None:
            nn.init.ones_(self.v)

    def forward(self, x: Tensor) -> Tensor:
        var = self._channel_variance(x)
        if self.v is None:
            return self._divide_by_std(x, var)
        batch_std = _per_channel((var + self.eps).sqrt())
        instance_std = (x.var(dim=(2, 3), correction=0, keepdim=True) + self.eps).sqrt()
        denominator = torch.maximum(batch_std, x * _per_channel(self.v) + instance_std)
        return _affine(x / denominator, _per_channel(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, apply_act={self.apply_act}"


class EvoNormS0(nn.Module):
    r"""EvoNorm-S0 (Liu et al., 2020): a batch-independent normalizer and activation in one layer.

    .. math::
        y = \frac{x\, \mathrm{sigmoid}(v_c x)}{s_{ng}(x)} \gamma_c + \beta_c, \qquad
        s_{ng}(x) = \sqrt{\mathrm{Var}_{g}[x_n] + \epsilon}

    :math:`s_{ng}` is the standard deviation of sample :math:`n` over the :math:`(C/G) H W`
    numbers of its group :math:`g` (biased variance, no mean subtracted from :math:`x`);
    :math:`v` is learnable, initialized to 1. The gate makes the layer nonlinear (a
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
    ) -> None:
        super().__init__()
        self.num_groups = resolve_groups(num_channels, groups, group_size)
        self.num_channels = num_channels
        self.eps = eps
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.empty(num_channels))
        self.bias = nn.Parameter(torch.empty(num_channels))
        self.v = nn.Parameter(torch.empty(num_channels)) if apply_act else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.ones_(self.v)

    def _divide_by_group_std(self, x: Tensor) -> Tensor:
        grouped = x.reshape(x.shape[0], self.num_groups, -1)
        inv_std = torch.rsqrt(grouped.var(dim=-1, correction=0, keepdim=True) + self.eps)
        return (grouped * inv_std).view_as(x)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        y = self._divide_by_group_std(x)
        if self.v is not None:
            y = y * torch.sigmoid(x * _per_channel(self.v))
        return _affine(y, _per_channel(self.weight), self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.num_groups}, eps={self.eps}, apply_act={self.apply_act}"


# ------------------------------------------------- Lp batch norms (Hoffer et al. 2018, "Norm matters")

#: :math:`C_{L^1} = \sqrt{\pi/2}`: for Gaussian :math:`x`, :math:`\mathrm{E}|x - \mu| = \sigma\sqrt{2/\pi}`, so
#: :math:`C_{L^1}\,\mathrm{mean}|x - \mu|` estimates :math:`\sigma` (the paper's eq. 5 and its ``L1BatchNorm2d``).
L1_CONSTANT = math.sqrt(math.pi / 2)


def linf_constant(n: int) -> float:
    r""":math:`C_{L^\infty}(n) = \frac{1 + \sqrt{\pi \ln 4}}{2\sqrt{2 \ln n}}`, the constant of the official
    ``TopkBatchNorm2d`` (used for :math:`L^\infty` and Top-k alike), for :math:`n \ge 2` numbers per channel."""
    if not _is_int(n) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (numbers per channel), got {n!r}")
    return (1 + math.sqrt(math.pi * math.log(4))) / (2 * math.sqrt(2 * math.log(n)))


class _DeviationBatchNorm2d(nn.Module):
    r"""A batch norm that divides by a per-channel *scaled deviation* :math:`s_c` instead of the standard deviation.

    .. math::
        y = \frac{x - \mu_c}{s_c + \epsilon}\,\gamma_c + \beta_c ,

    with :math:`\mu_c` the mean over :math:`(N, H, W)` and :math:`s_c` computed by the subclass from the
    :math:`n = N H W` centred values of channel :math:`c` (:meth:`scaled_deviation`). :math:`\epsilon` is added to
    the deviation, as in the official code (``1 / (deviation + eps)``), not to a variance. In training the running
    statistics follow torch's convention, ``running <- (1 - momentum) * running + momentum * batch`` (the official
    code weights the *old* value by ``momentum``); they hold :math:`\mu_c` and :math:`s_c` itself (the official
    code averages :math:`1/(s_c + \epsilon)`), and eval mode uses them.
    """

    def __init__(self, num_channels: int, eps: float = EPS, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.empty(num_channels))
        self.bias = nn.Parameter(torch.empty(num_channels))
        self.register_buffer("running_mean", torch.empty(num_channels))
        self.register_buffer("running_dev", torch.empty(num_channels))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        nn.init.zeros_(self.running_mean)
        nn.init.ones_(self.running_dev)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def scaled_deviation(self, centred: Tensor) -> Tensor:
        """The per-channel deviation :math:`s_c` (an estimate of the standard deviation) of ``centred``,
        shape ``(N, C, H, W)`` with zero channel means; returns shape ``(C,)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        if self.training:
            n = x.numel() // x.shape[1]
            if n < 2:
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input shape {tuple(x.shape)}"
                )
            mean = x.mean(dim=(0, 2, 3))
            centred = x - _per_channel(mean)
            dev = self.scaled_deviation(centred)
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_dev.lerp_(dev.to(self.running_dev.dtype), self.momentum)
        else:
            centred = x - _per_channel(self.running_mean)
            dev = self.running_dev
        return _affine(centred, _per_channel(self.weight / (dev + self.eps)), self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, momentum={self.momentum}"


class L1BatchNorm2d(_DeviationBatchNorm2d):
    r"""L1 Batch Normalization (Hoffer et al., 2018, eq. 5): batch norm with the mean absolute deviation.

    .. math::
        y = \frac{x - \mu_c}{C_{L^1}\,\frac1n \lVert x_c - \mu_c \rVert_1 + \epsilon}\,\gamma_c + \beta_c,
        \qquad C_{L^1} = \sqrt{\pi/2},

    over the :math:`n = N H W` values of channel :math:`c`. For Gaussian activations
    :math:`\mathrm{E}|x - \mu| = \sigma\sqrt{2/\pi}`, so the denominator estimates :math:`\sigma`: no squares and
    no square root (the official ``L1BatchNorm2d`` with ``normalized=True``). Running mean and deviation as in
    :class:`_DeviationBatchNorm2d`.

    Args:
        num_channels: number of channels :math:`C`
        eps: added to the deviation. Default: 1e-5
        momentum: weight of the new batch in the running statistics. Default: 0.1

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def scaled_deviation(self, centred: Tensor) -> Tensor:
        return centred.abs().mean(dim=(0, 2, 3)) * L1_CONSTANT


class TopkBatchNorm2d(_DeviationBatchNorm2d):
    r"""Top-k Batch Normalization (Hoffer et al., 2018): the mean of the :math:`k` largest absolute deviations.

    .. math::
        y = \frac{x - \mu_c}{C_{L^\infty}(n)\,\frac1k\sum_{j=1}^{k} |x - \mu_c|_{(j)} + \epsilon}\,\gamma_c
            + \beta_c,
        \qquad C_{L^\infty}(n) = \frac{1 + \sqrt{\pi\ln 4}}{2\sqrt{2\ln n}},

    where :math:`|x - \mu_c|_{(j)}` is the :math:`j`-th largest of the :math:`n = N H W` absolute deviations of
    channel :math:`c`. The constant is the official ``TopkBatchNorm2d``'s (:func:`linf_constant`), the same for
    every :math:`k`; ``k=1`` is :math:`L^\infty` batch norm (:class:`LinfBatchNorm2d`), ``k=10`` the paper's
    "Top10" (without the "ghost" moving average of ``GhostTopkBatchNorm2d``). Running statistics as in
    :class:`_DeviationBatchNorm2d`.

    Args:
        num_channels: number of channels :math:`C`
        k: how many of the largest deviations are averaged; at most :math:`n`. Default: 10
        eps: added to the deviation. Default: 1e-5
        momentum: weight of the new batch in the running statistics. Default: 0.1

    Shape:
        - Input: :math:`(N, C, H, W)` with :math:`N H W \ge k` in training
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, k: int = 10, eps: float = EPS, momentum: float = 0.1) -> None:
        _check_positive_int("k", k)
        super().__init__(num_channels, eps, momentum)
        self.k = k

    def scaled_deviation(self, centred: Tensor) -> Tensor:
        n = centred.numel() // centred.shape[1]
        if self.k > n:
            raise ValueError(f"k={self.k} exceeds the n = N*H*W = {n} values per channel of input shape "
                             f"{tuple(centred.shape)}; allowed: k <= n")
        per_channel = centred.transpose(0, 1).reshape(centred.shape[1], n).abs()
        if self.k == 1:
            largest = per_channel.amax(dim=1)
        else:
            largest = per_channel.topk(self.k, dim=1, sorted=False).values.mean(dim=1)
        return largest * linf_constant(n)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, k={self.k}, eps={self.eps}, momentum={self.momentum}"


class LinfBatchNorm2d(TopkBatchNorm2d):
    r""":math:`L^\infty` Batch Normalization (Hoffer et al., 2018, eq. 6): the maximum absolute deviation.

    .. math::
        y = \frac{x - \mu_c}{C_{L^\infty}(n)\,\lVert x_c - \mu_c \rVert_\infty + \epsilon}\,\gamma_c + \beta_c,
        \qquad C_{L^\infty}(n) = \frac{1 + \sqrt{\pi\ln 4}}{2\sqrt{2\ln n}},

    over the :math:`n = N H W` values of channel :math:`c`: :class:`TopkBatchNorm2d` with ``k=1`` (the official
    ``TopkBatchNorm2d``'s default). The constant is the average of two bounds on :math:`\sigma / \mathrm{E}\max`,
    not that ratio itself (see :mod:`normlib.theory.lp`).

    Args:
        num_channels: number of channels :math:`C`
        eps: added to the deviation. Default: 1e-5
        momentum: weight of the new batch in the running statistics. Default: 0.1

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, eps: float = EPS, momentum: float = 0.1) -> None:
        super().__init__(num_channels, k=1, eps=eps, momentum=momentum)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, momentum={self.momentum}"


class MeanBatchNorm2d(nn.Module):
    r"""Mean-only Batch Normalization (Salimans & Kingma, 2016; the official ``MeanBN``), used after a bounded
    weight-normalized conv.

    .. math::
        y = x - \mathrm{E}_{N,H,W}[x] + \beta

    No division. In training the running mean follows torch's convention
    ``running_mean <- (1 - momentum) * running_mean + momentum * batch mean`` and eval mode uses it.

    Args:
        num_channels: number of channels :math:`C`
        momentum: weight of the new batch in the running mean. Default: 0.1

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.momentum = momentum
        self.bias = nn.Parameter(torch.empty(num_channels))
        self.register_buffer("running_mean", torch.empty(num_channels))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        nn.init.zeros_(self.running_mean)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
        else:
            mean = self.running_mean
        return x + _per_channel(self.bias - mean)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, momentum={self.momentum}"


# ------------------------------------------------------------------ parametric (weight) norms


class _ReparamConv2d(nn.Conv2d):
    """A conv whose weight is re-parametrized per output filter with a learnable gain
    :math:`g` (init 1). Subclasses define :meth:`effective_weight`. The raw weight is He
    initialized (``kaiming_normal_``, fan_in, ReLU) and the bias is on and zero."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=None,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        eps: float = EPS,
    ) -> None:
        padding = _same_padding(kernel_size, dilation) if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.eps = eps
        self.gain = nn.Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if hasattr(self, "gain"):  # nn.Conv2d.__init__ calls this before the gain exists
            nn.init.ones_(self.gain)

    def effective_weight(self) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


class WNConv2d(_ReparamConv2d):
    r"""2D convolution with Weight Normalization (Salimans & Kingma, 2016).

    Each output filter :math:`W_o` (shape :math:`C_{in}/\text{groups} \times k \times k`) is
    replaced by

    .. math::
        \hat W_o = g_o \frac{W_o}{\lVert W_o \rVert_2 + \epsilon},

    so :math:`\lVert \hat W_o \rVert_2 \approx g_o`. :math:`g` starts at 1. Pair it with
    :class:`ScaledReLU`. The arguments are those of :class:`torch.nn.Conv2d`, with the
    bias on by default and ``padding=None`` meaning "same" padding :math:`d(k-1)/2`.

    Args:
        eps: added to the filter norm. Default: 1e-5 (the authors' ``WN_self``)

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`
        - Output: :math:`(N, C_{out}, H_{out}, W_{out})`
    """

    def effective_weight(self) -> Tensor:
        norm = torch.linalg.vector_norm(self.weight, dim=(1, 2, 3), keepdim=True)
        return self.gain.view(-1, 1, 1, 1) * self.weight / (norm + self.eps)


class ScaledStdConv2d(_ReparamConv2d):
    r"""2D convolution with Scaled Weight Standardization (Brock et al., 2021).

    Each output filter :math:`W_o` with :math:`\text{fan\_in} = C_{in}/\text{groups} \cdot k^2`
    numbers is replaced by

    .. math::
        \hat W_o = \sqrt{\frac{2\pi}{\pi - 1}}\; g_o\;
                   \frac{W_o - \mu_{W_o}}{(\sigma_{W_o} + \epsilon)\sqrt{\text{fan\_in}}},

    with the filter's mean :math:`\mu_{W_o}` and biased standard deviation
    :math:`\sigma_{W_o}`. The constant :math:`\sqrt{2\pi/(\pi-1)}` is :math:`1/\mathrm{std}[\mathrm{ReLU}(z)]`
    for :math:`z \sim \mathcal N(0, 1)`, so a ReLU layer keeps unit variance. :math:`g`
    starts at 1. The arguments are those of :class:`torch.nn.Conv2d`, with the bias on by
    default and ``padding=None`` meaning "same" padding :math:`d(k-1)/2`.

    Args:
        eps: added to the filter standard deviation. Default: 1e-5

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`
        - Output: :math:`(N, C_{out}, H_{out}, W_{out})`
    """

    def effective_weight(self) -> Tensor:
        std, mean = torch.std_mean(self.weight, dim=(1, 2, 3), correction=0, keepdim=True)
        fan_in = self.weight[0].numel()
        scale = self.gain.view(-1, 1, 1, 1) * (RELU_GAIN / math.sqrt(fan_in))
        return scale * (self.weight - mean) / (std + self.eps)


class ScaledReLU(nn.Module):
    r"""ReLU shifted and scaled to zero mean and unit variance on a standard normal input
    (Arpit et al., 2016), the activation used with Weight Normalization.

    .. math::
        \phi(x) = \sqrt{\frac{2\pi}{\pi - 1}} \left(\mathrm{ReLU}(x) - \frac{1}{\sqrt{2\pi}}\right)

    Shape:
        - Input: :math:`(*)`
        - Output: :math:`(*)` (same shape as input)
    """

    def forward(self, x: Tensor) -> Tensor:
        return (F.relu(x) - RELU_MEAN) * RELU_GAIN


class BWNConv2d(_ReparamConv2d):
    r"""2D convolution with Bounded Weight Normalization (Hoffer et al., 2018, eq. 7), as the official ``bwn.py``.

    Output filter :math:`o` of the direction :math:`v` (``weight``) is rescaled by a per-channel gain
    :math:`g_o` (``gain``), and the gains by a fixed per-layer bound :math:`\rho` (the buffer ``rho``):

    .. math::
        \hat W_o = \rho\,\frac{g_o}{\lVert g \rVert_2}\,\frac{v_o}{\lVert v_o \rVert_2 + \epsilon},
        \qquad \lVert \hat W \rVert_F \approx \rho .

    The layer's weight norm is therefore fixed, :math:`\rho = \lVert W_0 \rVert_F`, the Frobenius norm of the
    He-initialized weight, while the split of that norm over the output channels (:math:`g`, initialized to the
    filter norms :math:`\lVert v_o \rVert`) and every direction are learned. This is what the official code does:
    ``g`` is rescaled every forward so that :math:`\lVert g\rVert` keeps its initial value
    (``weight_g_prenorm``). The paper's eq. 7, :math:`w = \rho\, v / \lVert v \rVert` with :math:`\rho` a fixed
    per-layer scalar, leaves open whether :math:`\rho` is per channel; the code's reading keeps a learnable
    per-channel scale (which plain WN has through :math:`g`) while the layer's norm, and so its effective step size,
    stays bounded. Pair it with :class:`MeanBatchNorm2d` (mean-only BN) and a ReLU. The arguments are those of
    :class:`torch.nn.Conv2d`, with the bias **off** by default (the mean-only BN after it removes any bias) and
    ``padding=None`` meaning "same" padding :math:`d(k-1)/2`.

    Args:
        eps: added to the filter norm. Default: 1e-5

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`
        - Output: :math:`(N, C_{out}, H_{out}, W_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=None, dilation=1,
                 groups: int = 1, bias: bool = False, eps: float = EPS) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, eps)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if not hasattr(self, "gain"):  # nn.Conv2d.__init__ calls this before the gain exists
            return
        with torch.no_grad():
            self.gain.copy_(torch.linalg.vector_norm(self.weight, dim=(1, 2, 3)))
            rho = torch.linalg.vector_norm(self.gain)
        if "rho" in self._buffers:
            self.rho.copy_(rho)
        else:
            self.register_buffer("rho", rho.clone())

    def effective_weight(self) -> Tensor:
        norm = torch.linalg.vector_norm(self.weight, dim=(1, 2, 3), keepdim=True)
        gain = self.gain * (self.rho / torch.linalg.vector_norm(self.gain))
        return gain.view(-1, 1, 1, 1) * self.weight / (norm + self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rho={self.rho.item():.4g}"


# --------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class NormInfo:
    """What the registry knows about a normalizer.

    Attributes:
        name: registry key, e.g. ``"gn"``
        title: display name for plots, e.g. ``"GroupNorm"``
        family: ``"none"``, ``"activation"`` (normalizes activations) or ``"parametric"``
            (normalizes weights)
        placement: ``"after_conv"`` (conv -> norm -> act), ``"replaces_activation"``
            (conv -> norm, the norm being nonlinear) or ``"in_conv"`` (normalized conv -> act)
    """

    name: str
    title: str
    family: str
    placement: str

    FAMILIES = ("none", "activation", "parametric")
    PLACEMENTS = ("after_conv", "replaces_activation", "in_conv")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.family not in self.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(self.FAMILIES)}; got {self.family!r}")
        if self.placement not in self.PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(self.PLACEMENTS)}; got {self.placement!r}")


@dataclass(frozen=True)
class _Entry:
    info: NormInfo
    norm_factory: Callable[..., nn.Module]
    conv_factory: Callable[..., nn.Conv2d]
    act_factory: Callable[[int], nn.Module]
    options: tuple[str, ...] | None  # keyword options of norm_factory; None: it takes **kwargs


def _identity(num_channels: int) -> nn.Module:
    return nn.Identity()


def _relu(num_channels: int) -> nn.Module:
    return nn.ReLU()


def _scaled_relu(num_channels: int) -> nn.Module:
    return ScaledReLU()


def _plain_conv(in_channels, out_channels, kernel_size, stride, padding) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)


def _keyword_options(factory: Callable) -> tuple[str, ...] | None:
    """Names of the options ``factory(channels, **opts)`` accepts, or None if it takes ``**kwargs``."""
    params = list(inspect.signature(factory).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


_REGISTRY: dict[str, _Entry] = {}


def register_norm(
    info: NormInfo,
    norm_factory: Callable[..., nn.Module],
    conv_factory: Callable[..., nn.Conv2d] | None = None,
    act_factory: Callable[[int], nn.Module] | None = None,
) -> None:
    """Add a normalizer to the registry (registering an existing name replaces it).

    Args:
        info: its name, title, family and placement
        norm_factory: ``norm_factory(channels, **opts)`` builds the module in the norm slot;
            its keyword parameters are the options :func:`make_norm` accepts. With placement
            ``"replaces_activation"`` it must take ``apply_act`` (False: no nonlinearity).
        conv_factory: ``conv_factory(in_channels, out_channels, kernel_size, stride, padding)``;
            required for placement ``"in_conv"``. Default: ``nn.Conv2d`` without bias.
        act_factory: ``act_factory(channels)`` builds the activation. Default: ``nn.ReLU``,
            or ``nn.Identity`` for placement ``"replaces_activation"``.
    """
    if not isinstance(info, NormInfo):
        raise TypeError(f"info must be a NormInfo, got {type(info).__name__}")
    options = _keyword_options(norm_factory)
    if info.placement == "in_conv" and conv_factory is None:
        raise ValueError(f"conv_factory is required for placement 'in_conv' (normalizer {info.name!r})")
    if info.placement == "replaces_activation" and options is not None and "apply_act" not in options:
        raise ValueError(
            f"norm_factory of {info.name!r} must accept apply_act for placement 'replaces_activation'"
        )
    if act_factory is None:
        act_factory = _identity if info.placement == "replaces_activation" else _relu
    _REGISTRY[info.name] = _Entry(info, norm_factory, conv_factory or _plain_conv, act_factory, options)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown normalizer name={name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _check_options(entry: _Entry, opts: dict) -> None:
    if entry.options is None:
        return
    unknown = sorted(set(opts) - set(entry.options))
    if unknown:
        allowed = ", ".join(entry.options) or "(none)"
        raise ValueError(
            f"unknown option {', '.join(unknown)} for normalizer {entry.info.name!r}; "
            f"allowed options: {allowed}"
        )


def norm_info(name: str) -> NormInfo:
    """The :class:`NormInfo` of a registered normalizer."""
    return _entry(name).info


def make_norm(name: str, channels: int, **opts) -> nn.Module:
    """The module in the norm slot of normalizer ``name`` for ``channels`` channels.

    ``nn.Identity`` for ``none``, ``wn`` and ``sws`` (they normalize inside the conv). The
    name, ``channels`` and every option are checked before anything is built; an unknown
    option raises ``ValueError`` listing the allowed ones.
    """
    entry = _entry(name)
    _check_positive_int("channels", channels)
    _check_options(entry, opts)
    return entry.norm_factory(channels, **opts)


def make_conv(
    name: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
) -> nn.Conv2d:
    """The conv of normalizer ``name``: :class:`WNConv2d` / :class:`ScaledStdConv2d` (with
    bias) for ``wn`` / ``sws``, a plain ``nn.Conv2d`` without bias otherwise.
    ``padding=None`` means ``kernel_size // 2``."""
    entry = _entry(name)
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("out_channels", out_channels)
    padding = kernel_size // 2 if padding is None else padding
    return entry.conv_factory(in_channels, out_channels, kernel_size, stride=stride, padding=padding)


def make_activation(name: str, channels: int) -> nn.Module:
    """The activation paired with normalizer ``name``: ``nn.ReLU``, :class:`TLU` for
    ``frn``, :class:`ScaledReLU` for ``wn``, ``nn.Identity`` for the EvoNorms (they are
    their own activation)."""
    entry = _entry(name)
    _check_positive_int("channels", channels)
    return entry.act_factory(channels)


def conv_norm_act(
    name: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    act: bool = True,
    **opts,
) -> nn.Sequential:
    """``conv -> norm -> act`` for normalizer ``name``, as ``nn.Sequential`` with children
    ``conv``, ``norm`` and (if ``act``) ``act``; slots a normalizer does not use hold
    ``nn.Identity``. ``opts`` go to :func:`make_norm`.

    ``act=False`` gives a block with no nonlinearity: ``conv -> norm`` (FRN without TLU,
    WN/SWS just the conv); a normalizer placed ``"replaces_activation"`` (the EvoNorms) is
    built with ``apply_act=False``.
    """
    entry = _entry(name)
    if "apply_act" in opts:
        raise ValueError("conv_norm_act sets apply_act from act; pass act=False instead of apply_act")
    if not act and entry.info.placement == "replaces_activation":
        opts = {**opts, "apply_act": False}
    norm = make_norm(name, out_channels, **opts)  # first: it validates opts before a conv is built
    layers = OrderedDict(conv=make_conv(name, in_channels, out_channels, kernel_size, stride), norm=norm)
    if act:
        layers["act"] = make_activation(name, out_channels)
    return nn.Sequential(layers)


_BUILTINS = (
    (NormInfo("none", "No norm", "none", "after_conv"), _identity, None, None),
    (NormInfo("bn", "BatchNorm", "activation", "after_conv"), BatchNorm2d, None, None),
    (NormInfo("ln", "LayerNorm", "activation", "after_conv"), LayerNorm2d, None, None),
    (NormInfo("in", "InstanceNorm", "activation", "after_conv"), InstanceNorm2d, None, None),
    (NormInfo("gn", "GroupNorm", "activation", "after_conv"), GroupNorm2d, None, None),
    (NormInfo("frn", "FilterResponseNorm", "activation", "after_conv"), FilterResponseNorm2d, None, TLU),
    (NormInfo("vn", "VarianceNorm", "activation", "after_conv"), VarianceNorm2d, None, None),
    (NormInfo("wn", "WeightNorm", "parametric", "in_conv"), _identity, WNConv2d, _scaled_relu),
    (NormInfo("sws", "ScaledWS", "parametric", "in_conv"), _identity, ScaledStdConv2d, None),
    (NormInfo("evo_b0", "EvoNorm-B0", "activation", "replaces_activation"), EvoNormB0, None, None),
    (NormInfo("evo_s0", "EvoNorm-S0", "activation", "replaces_activation"), EvoNormS0, None, None),
)
for _builtin in _BUILTINS:
    register_norm(*_builtin)
del _builtin

NORM_NAMES: tuple[str, ...] = tuple(info.name for info, *_ in _BUILTINS)


def _bwn_conv(in_channels, out_channels, kernel_size, stride, padding) -> BWNConv2d:
    return BWNConv2d(in_channels, out_channels, kernel_size, stride, padding)


_NORM_MATTERS = (
    (NormInfo("l1bn", "L1 BatchNorm", "activation", "after_conv"), L1BatchNorm2d, None, None),
    (NormInfo("linfbn", "L∞ BatchNorm", "activation", "after_conv"), LinfBatchNorm2d, None, None),
    (NormInfo("topkbn", "Top-k BatchNorm", "activation", "after_conv"), TopkBatchNorm2d, None, None),
    (NormInfo("bwn", "Bounded WN", "parametric", "in_conv"), MeanBatchNorm2d, _bwn_conv, None),
)
for _extra in _NORM_MATTERS:
    register_norm(*_extra)
del _extra

#: The normalizers of Hoffer et al. (2018), registered after the paper's :data:`NORM_NAMES`.
NORM_MATTERS_NAMES: tuple[str, ...] = tuple(info.name for info, *_ in _NORM_MATTERS)
