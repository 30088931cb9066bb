r"""Reduced-precision arithmetic: an emulated float16 accumulator, and a model run under autocast.

**Float16** (IEEE binary16) keeps an 11-bit significand, unit roundoff :math:`u=2^{-11}`, and its largest finite
value is :math:`65504=(2-2^{-10})\,2^{15}`; with round-to-nearest every result of magnitude at least
:math:`65520` (halfway to :math:`2^{16}`) becomes :math:`\pm\infty`. **Bfloat16** keeps float32's exponent range
with an 8-bit significand, :math:`u=2^{-8}`. Write :math:`\mathrm{fl}_{16}(a)` for :math:`a` rounded to float16.

Torch's own CPU reductions of a float16 tensor (``sum``, ``mean``) accumulate in float32 and round only the result
(:func:`torch_half_sum_accumulates_in_float32` checks it), so they cannot show what a float16 *accumulator* does: a
sum overflows as soon as a partial sum reaches 65520, although every term and the mean are small.
:func:`fp16_tree_sum` emulates that accumulator, :func:`fp16_mean` builds the mean on either accumulator, and
:class:`ReducedPrecision` runs a whole model's forward in a reduced dtype under :func:`torch.autocast`.

**Float32 on a GPU.** By default cuDNN runs float32 convolutions in TF32 (a 10-bit significand, :math:`u=2^{-11}`),
so "float32" on a GPU is not float32 on a CPU. :func:`exact_float32` turns TF32 off for a measurement, and
:func:`unit_roundoff` gives the rounding unit :math:`u=\varepsilon/2` of the dtype a measurement actually used, for
bounds that follow the arithmetic instead of assuming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "ACCUMULATORS",
    "fp16_tree_sum",
    "fp16_mean",
    "torch_half_sum_accumulates_in_float32",
    "ReducedPrecision",
    "exact_float32",
    "unit_roundoff",
]

#: The accumulators of :func:`fp16_mean`: float16 partial sums (emulated) or torch's float32 ones.
ACCUMULATORS = ("fp16", "fp32")


def fp16_tree_sum(values: Tensor) -> Tensor:
    r"""Sum over the last dimension with a **float16 accumulator**.

    The values are rounded to float16, :math:`v_i=\mathrm{fl}_{16}(x_i)`, then added pairwise, level by level,

    .. math:: s = \mathrm{fl}_{16}\bigl(\mathrm{fl}_{16}(v_1+v_2)+\mathrm{fl}_{16}(v_3+v_4)\bigr)+\dots ,

    each addition of two float16 tensors rounding its result to float16 (an odd level is padded with a 0). So the
    result is not finite as soon as any partial sum reaches 65520 in magnitude (:math:`\pm\infty`, or NaN when
    overflows of both signs meet), however small the terms; otherwise its rounding error is at most
    :math:`\gamma_{\lceil\log_2 n\rceil}\sum_i|v_i|` with :math:`\gamma_k=ku/(1-ku)`, :math:`u=2^{-11}` (each term
    passes through :math:`\lceil\log_2 n\rceil` additions). Pairwise (tree) summation is how a GPU reduction combines
    partial sums; a sequential float16 accumulator would in addition stop growing once the sum's spacing exceeds
    twice the terms ("swamping": :math:`\mathrm{fl}_{16}(2048+1)=2048`).

    Args:
        values: any shape ``(..., n)``; ``n = 0`` gives 0.

    Returns:
        A float16 tensor of shape ``(...)``.
    """
    x = values.to(torch.float16)
    if x.shape[-1] == 0:
        return x.sum(dim=-1)
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], dim=-1)
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def fp16_mean(values: Tensor, accumulator: str = "fp16") -> Tensor:
    r"""The mean over the last dimension of the float16 values :math:`v_i=\mathrm{fl}_{16}(x_i)`, ``n`` of them.

    * ``accumulator="fp16"``: :math:`\mathrm{fl}_{16}\bigl(s\cdot\mathrm{fl}_{32}(1/n)\bigr)` with :math:`s` the
      float16 :func:`fp16_tree_sum` (torch multiplies a float16 tensor by a Python scalar in float32 and rounds once),
      so the mean is :math:`\infty` whenever the sum overflows, however small the mean itself;
    * ``accumulator="fp32"``: torch's float16 ``mean``: sum and division in float32, only the result rounded,
      :math:`\mathrm{fl}_{16}\bigl(\mathrm{fl}_{32}(\sum_i v_i)/n\bigr)`: it overflows only when the mean does.

    Returns a float16 tensor of shape ``values.shape[:-1]``.
    """
    if accumulator not in ACCUMULATORS:
        raise ValueError(f"accumulator must be one of {', '.join(ACCUMULATORS)}, got {accumulator!r}")
    n = values.shape[-1]
    if n == 0:
        raise ValueError("the mean of no values is undefined (the last dimension is empty)")
    if accumulator == "fp16":
        return fp16_tree_sum(values) * (1.0 / n)
    return values.to(torch.float16).mean(dim=-1)


def torch_half_sum_accumulates_in_float32() -> bool:
    r"""Whether torch's own ``sum`` of a float16 tensor accumulates in float32 on this machine.

    3001 ones sum to :math:`\mathrm{fl}_{16}(3001)=3000` with a float32 accumulator (the float16 spacing is 2 in
    :math:`[2048, 4096)` and the tie goes to the even significand), and to 2048 with a sequential float16 one
    (:math:`\mathrm{fl}_{16}(2048+1)=2048`); 70 000 ones give ``inf`` either way, since the result is float16.
    """
    return float(torch.ones(3001, dtype=torch.float16).sum()) == 3000.0


class ReducedPrecision(nn.Module):
    r"""Runs ``model``'s forward under ``torch.autocast(device_type, dtype)`` and returns float32 logits.

    Mixed precision: under autocast, convolutions and linear layers round their inputs and weights to ``dtype``
    and return ``dtype`` results, :math:`y=\mathrm{fl}_d(\mathrm{fl}_d(W)\,\mathrm{fl}_d(x))` (the products are
    accumulated in float32 inside); the normalizers receive ``dtype`` tensors and compute in that dtype, except that
    torch's reductions (means, sums) accumulate in float32 (see :func:`torch_half_sum_accumulates_in_float32`). The
    parameters, the optimizer and the weight updates stay float32, and there is no loss scaling (:mod:`normlib.train`
    has none), so in float16 a backward value below half the smallest subnormal, :math:`2^{-25}`, underflows to 0.
    ``probe_points``/``conv_points`` are the wrapped model's.

    Args:
        model: any classifier.
        dtype: the reduced dtype, ``torch.bfloat16`` or ``torch.float16`` (float16 autocast needs a GPU to be fast).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.model(x).float()

    def probe_points(self):
        return self.model.probe_points()

    def conv_points(self):
        return self.model.conv_points()

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    r"""Within the block, float32 matrix products and cuDNN convolutions on a GPU compute in IEEE float32, not TF32:
    ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` are set to ``False`` and
    restored afterwards (also when the block raises). On a CPU nothing changes: it has no TF32.

    TF32 rounds the inputs of each product to a 10-bit significand (:math:`u=2^{-11}`, 8192 times float32's), which
    is enough to change a precision-sensitive verdict, or the course of a training run, between devices.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def unit_roundoff(dtype: torch.dtype) -> float:
    r"""The unit roundoff :math:`u=\varepsilon/2` of a floating-point ``dtype`` (``torch.finfo(dtype).eps / 2``):
    :math:`2^{-24}` for float32, :math:`2^{-53}` for float64, :math:`2^{-11}` for float16, :math:`2^{-8}` for
    bfloat16. A correctly rounded operation has a relative error of at most :math:`u`."""
    if not dtype.is_floating_point:
        raise ValueError(f"unit_roundoff needs a floating-point dtype, got {dtype}")
    return float(torch.finfo(dtype).eps) / 2
