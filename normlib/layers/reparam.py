r"""Weight reparameterizations: convolutions that normalize their own filters, and their activations.

Each conv here is a :class:`torch.nn.Conv2d` whose forward uses :meth:`effective_weight`, a per-filter function
of the raw ``weight`` and a learnable per-filter gain :math:`g`: :class:`WNConv2d` (weight normalization),
:class:`ScaledStdConv2d` (scaled weight standardization) and :class:`BWNConv2d` (bounded weight normalization).
:class:`ScaledReLU` is the activation weight normalization is paired with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlib.layers._util import EPS

RELU_GAIN = math.sqrt(2 * math.pi / (math.pi - 1))  # 1 / std of ReLU(z), z ~ N(0, 1)
RELU_MEAN = 1 / math.sqrt(2 * math.pi)  # mean of ReLU(z), z ~ N(0, 1)


def _same_padding(kernel_size, dilation=1):
    if isinstance(kernel_size, int):
        return dilation * (kernel_size - 1) // 2
    return tuple(dilation * (k - 1) // 2 for k in kernel_size)


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
        device=None,
        dtype=None,
    ) -> None:
        padding = _same_padding(kernel_size, dilation) if padding is None else padding
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, device=device, dtype=dtype
        )
        self.eps = eps
        self.gain = nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if hasattr(self, "gain"):  # nn.Conv2d.__init__ calls this before the gain exists
            nn.init.ones_(self.gain)

    def effective_weight(self) -> Tensor:
        r"""The weight the convolution uses, :math:`\hat W`, computed from ``weight`` and ``gain`` at every call;
        shape ``(C_out, C_in / groups, k, k)``."""
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

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=None,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        eps: float = EPS,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            eps,
            device=device,
            dtype=dtype,
        )

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
        rho = "?" if self.rho.is_meta else f"{self.rho.item():.4g}"
        return f"{super().extra_repr()}, rho={rho}"
