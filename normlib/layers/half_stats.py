r"""Batch norms whose *statistics* are computed in float16, with convolutions left in float32 (Hoffer et al. 2018's
half-precision claim, emulated on a CPU).

:class:`HalfStatsBatchNorm2d` is L2 batch norm (``kind="l2"``, BatchNorm) or L1 batch norm (``kind="l1"``) over the
:math:`n = N H W` values of each channel, in one of two arithmetics:

* ``stats="fp16"``: the values are rounded to float16, :math:`v_i = \mathrm{fl}_{16}(x_i)`, and every sum is a
  **float16 accumulator** (:func:`normlib.numerics.fp16_tree_sum`, every partial sum rounded to float16). The mean
  is :math:`m = \mathrm{fl}_{16}(\sum v_i / n)`, and the deviation is
  :math:`s_{L^2} = \sqrt{\mathrm{fl}_{16}(\sum (v_i - m)^2)/n}` (the sum of squares) or
  :math:`s_{L^1} = C_{L^1}\,\mathrm{fl}_{16}(\sum |v_i - m|)/n` (the sum of absolute deviations). A sum whose
  partial sums reach 65520 is :math:`\infty` (:mod:`normlib.theory.lp`: the sum of squares overflows once
  :math:`n\sigma^2 > 65504`, the sum of absolute deviations once :math:`n\sigma\sqrt{2/\pi} > 65504`, the sum of
  the values once :math:`n|\mu| > 65504`);
* ``stats="fp32"``: the same statistics in float32 (the float32 twin).

The output is :math:`y = (x - m)\,\gamma / s' + \beta` in float32, with :math:`s' = \sqrt{s_{L^2}^2 + \epsilon}` (L2,
as BatchNorm) or :math:`s_{L^1} + \epsilon` (L1, as :class:`~normlib.layers.L1BatchNorm2d`): an overflowed
deviation (:math:`\infty`) zeroes the channel, an overflowed mean makes it NaN. Gradients flow through the float16
statistics (their backward is float16 too).

**Running statistics** are kept in ``running_dtype`` (float16: the buffers of ``model.half()``): L2 keeps the mean
and the biased variance :math:`s_{L^2}^2`, L1 the mean and :math:`s_{L^1}`, each updated
:math:`r \leftarrow r + \text{momentum}\,(b - r)` in that dtype. In float16 a variance above 65504
(:math:`\sigma > 256`) is stored as :math:`\infty`, a deviation only above 65504 (:math:`\sigma > 65504`).

``record`` (off by default) makes each training forward append to :attr:`log` one dict: ``finite`` (every
statistic finite), ``input_finite`` (every input value finite), ``n``, and the per-channel float64 maxima of
:math:`\sum (x_i-\bar x)^2`,
:math:`\sum |x_i-\bar x|`, :math:`|\sum x_i|` and of the biased :math:`\sigma` (``sumsq``, ``sumabs``, ``sum``,
``sigma``), computed from the float32 input: what the theory needs to predict the overflow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from normlib.layers._util import EPS, _check_4d, _per_channel
from normlib.numerics import fp16_tree_sum

__all__ = ["HalfStatsBatchNorm2d", "KINDS", "STATS"]

KINDS = ("l2", "l1")
STATS = ("fp16", "fp32")
_C_L1 = math.sqrt(math.pi / 2)


def _channel_rows(x: Tensor) -> Tensor:
    """``(N, C, H, W)`` as ``(C, N H W)``: each channel's values in one row."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


class HalfStatsBatchNorm2d(nn.Module):
    """L2 or L1 batch norm with float16 (emulated accumulator) or float32 statistics; see the module's doc."""

    def __init__(
        self,
        num_channels: int,
        kind: str = "l2",
        stats: str = "fp16",
        running_dtype: torch.dtype = torch.float16,
        eps: float = EPS,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if stats not in STATS:
            raise ValueError(f"stats must be one of {', '.join(STATS)}, got {stats!r}")
        self.num_channels, self.kind, self.stats = num_channels, kind, stats
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("running_mean", torch.zeros(num_channels, dtype=running_dtype))
        self.register_buffer("running_dev", torch.ones(num_channels, dtype=running_dtype))
        self.record = False
        self.log: list[dict[str, float]] = []

    def _statistics(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and deviation (L2: the biased variance; L1: the scaled mean absolute deviation) of each row, in
        float32 (``inf``/``nan`` kept)."""
        n = rows.shape[1]
        if self.stats == "fp32":
            mean = rows.mean(dim=1)
            centred = rows - mean[:, None]
            dev = centred.square().mean(dim=1) if self.kind == "l2" else centred.abs().mean(dim=1) * _C_L1
            return mean, dev
        half = rows.to(torch.float16)
        mean = fp16_tree_sum(half) * (1.0 / n)
        centred = half - mean[:, None]
        if self.kind == "l2":
            dev = fp16_tree_sum(centred * centred) * (1.0 / n)
        else:
            dev = fp16_tree_sum(centred.abs()) * (1.0 / n) * _C_L1
        return mean.float(), dev.float()

    def _record(self, rows: Tensor, mean: Tensor, dev: Tensor) -> None:
        with torch.no_grad():
            r = rows.double()
            centred = r - r.mean(dim=1, keepdim=True)
            sumsq = centred.square().sum(dim=1)
            self.log.append(
                {
                    "finite": bool(torch.isfinite(mean).all() and torch.isfinite(dev).all()),
                    "input_finite": bool(torch.isfinite(rows).all()),
                    "n": int(rows.shape[1]),
                    "sumsq": float(sumsq.max()),
                    "sumabs": float(centred.abs().sum(dim=1).max()),
                    "sum": float(r.sum(dim=1).abs().max()),
                    "sigma": float((sumsq / rows.shape[1]).sqrt().max()),
                }
            )

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        if self.training:
            rows = _channel_rows(x)
            mean, dev = self._statistics(rows)
            if self.record:
                self._record(rows, mean, dev)
            with torch.no_grad():
                for buffer, value in ((self.running_mean, mean), (self.running_dev, dev)):
                    buffer.copy_(buffer + self.momentum * (value.detach().to(buffer.dtype) - buffer))
        else:
            mean, dev = self.running_mean.float(), self.running_dev.float()
        divisor = torch.sqrt(dev + self.eps) if self.kind == "l2" else dev + self.eps
        return (x - _per_channel(mean)) * _per_channel(self.weight / divisor) + _per_channel(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, kind={self.kind}, stats={self.stats}, "
            f"running_dtype={self.running_mean.dtype}, eps={self.eps}, momentum={self.momentum}"
        )
