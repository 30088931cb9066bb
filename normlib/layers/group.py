r"""Batch-independent normalizers: statistics per sample, over groups of channels and the spatial dims.

:class:`GroupNorm2d` splits the :math:`C` channels into :math:`G` groups (:func:`resolve_groups` picks
:math:`G`); :class:`LayerNorm2d` is its one-group end and :class:`InstanceNorm2d` its one-channel-per-group end.
:class:`FilterResponseNorm2d` divides each sample's channel by its root mean square over :math:`(H, W)`, and
:class:`TLU` is the activation it comes with. None of them keeps running statistics: train and eval mode agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlib.layers._util import EPS, _affine, _check_4d, _check_positive_int, _is_int, _per_channel

DEFAULT_GROUPS = 32  # the authors' ``--p_grouping 32``


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
        device, dtype: where and in which dtype the parameters are created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, eps: float = EPS, device=None, dtype=None) -> None:
        super().__init__(1, num_channels, eps=eps, device=device, dtype=dtype)

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
        device, dtype: where and in which dtype the parameters are created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_features: int, eps: float = EPS, device=None, dtype=None) -> None:
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=False, device=device, dtype=dtype)


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
        unbiased: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        groups = resolve_groups(num_channels, groups, group_size)
        super().__init__(groups, num_channels, eps=eps, device=device, dtype=dtype)
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
        device, dtype: where and in which dtype the parameters are created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, eps: float = EPS, device=None, dtype=None) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_channels = num_channels
        self.eps_init = eps
        self.weight = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
        self.bias = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
        self.eps = nn.Parameter(torch.empty(1, **factory_kwargs))
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
        device, dtype: where and in which dtype the parameter is created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(self, num_channels: int, device=None, dtype=None) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.tau = nn.Parameter(torch.empty(num_channels, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.tau)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        return torch.maximum(x, _per_channel(self.tau))

    def extra_repr(self) -> str:
        return f"{self.num_channels}"
