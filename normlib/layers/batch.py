r"""Batch normalizers: per-channel statistics over :math:`(N, H, W)` in training, running estimates in eval mode.

:class:`BatchNorm2d` is torch's own. Every other layer here is built on :class:`_RunningStatsNorm2d`, which holds
the per-channel affine, the running statistics and their update; a subclass says which statistics it keeps and
computes them from the batch:

=========================  ========================================  ==================================
layer                      divides by                                running statistics
=========================  ========================================  ==================================
:class:`VarianceNorm2d`    batch standard deviation (no centring)    ``running_var``
:class:`L1BatchNorm2d`     scaled mean absolute deviation            ``running_mean``, ``running_dev``
:class:`TopkBatchNorm2d`   scaled mean of the k largest deviations   ``running_mean``, ``running_dev``
:class:`LinfBatchNorm2d`   scaled maximum absolute deviation         ``running_mean``, ``running_dev``
:class:`MeanBatchNorm2d`   nothing (it only centres)                 ``running_mean``
=========================  ========================================  ==================================

EvoNorm-B0 (:mod:`normlib.layers.evonorm`) uses the same batch variance as :class:`VarianceNorm2d`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from normlib.layers._util import EPS, _affine, _check_4d, _check_positive_int, _is_int, _per_channel


class BatchNorm2d(nn.BatchNorm2d):
    r"""Batch Normalization (Ioffe & Szegedy, 2015): torch's :class:`~torch.nn.BatchNorm2d`.

    .. math::
        y = \frac{x - \mathrm{E}_{N,H,W}[x]}{\sqrt{\mathrm{Var}_{N,H,W}[x] + \epsilon}} \gamma + \beta

    Statistics are per channel over the batch and spatial dims, with the biased variance.
    Running statistics follow :math:`m \leftarrow 0.9\,m + 0.1\,\text{batch}` (torch
    ``momentum=0.1``, the authors' 0.9) and are used in eval mode. As in torch, the running
    variance is fed the unbiased batch variance.

    **Departure from the authors' code** (``BN_self`` in Lubana et al.'s ``layer_defs.py``), kept on purpose: this
    is torch's own module, shared by every chapter of the book. The authors' running *mean* starts at 1 (torch's
    at 0) and their running variance is fed the *biased* batch variance. Both only change eval-mode outputs: the
    starting value's weight decays as :math:`0.9^t` (below :math:`10^{-4}` after about 90 steps), and the biased
    feed differs by the factor :math:`n/(n-1)` for :math:`n = N H W` values per channel. Training-mode outputs,
    which every claim at initialization and every training curve uses, are identical.

    Args:
        num_features: number of channels :math:`C`
        eps: added to the variance for numerical stability. Default: 1e-5
        momentum: weight of the new batch in the running statistics. Default: 0.1
        track_running_stats: keep running statistics for eval mode; without them eval mode
            uses the batch statistics too. Default: True
        device, dtype: where and in which dtype the parameters and buffers are created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(
        self,
        num_features: int,
        eps: float = EPS,
        momentum: float = 0.1,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )


class _RunningStatsNorm2d(nn.Module):
    r"""Base of the batch normalizers that keep their own running statistics.

    It holds the per-channel affine :math:`(\gamma, \beta)`, initialized to :math:`(1, 0)` (mean-only batch norm
    has no :math:`\gamma`: ``scale=False``), and one ``(C,)`` buffer per entry of :attr:`running_stats`, a
    ``(buffer name, reset value)`` pair. A subclass computes its batch statistics in ``forward`` and passes them
    to :meth:`_update_running_stats`, which follows torch's convention,

    .. math::
        \hat s \leftarrow (1 - \text{momentum})\, \hat s + \text{momentum}\, s_{\text{batch}},

    in training. Eval mode uses the running statistics. With ``track_running_stats=False`` the buffers are
    ``None`` and every mode uses the batch statistics, as in torch. There is no ``num_batches_tracked``:
    ``momentum`` is always a number (no cumulative average).
    """

    running_stats: tuple[tuple[str, float], ...] = ()

    def __init__(
        self,
        num_channels: int,
        momentum: float,
        track_running_stats: bool,
        *,
        scale: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_channels = num_channels
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        if scale:
            self.weight = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
        else:
            self.register_parameter("weight", None)
        self.bias = nn.Parameter(torch.empty(num_channels, **factory_kwargs))
        for name, _ in self.running_stats:
            self.register_buffer(name, torch.empty(num_channels, **factory_kwargs) if track_running_stats else None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            for name, value in self.running_stats:
                nn.init.constant_(getattr(self, name), value)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def _uses_batch_stats(self) -> bool:
        """Training, or eval mode without running statistics."""
        return self.training or not self.track_running_stats

    def _values_per_channel(self, x: Tensor) -> int:
        """:math:`n = N H W`, the number of values behind each batch statistic; at least 2."""
        n = x.numel() // x.shape[1]
        if n < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input shape {tuple(x.shape)}")
        return n

    def _update_running_stats(self, **batch_stats: Tensor) -> None:
        """``running <- (1 - momentum) * running + momentum * batch`` for each named statistic, in training."""
        if not (self.training and self.track_running_stats):
            return
        with torch.no_grad():
            for name, value in batch_stats.items():
                running = getattr(self, name)
                running.lerp_(value.to(running.dtype), self.momentum)

    def _running_stats_repr(self) -> str:
        tracking = "" if self.track_running_stats else ", track_running_stats=False"
        return f"momentum={self.momentum}{tracking}"

    def extra_repr(self) -> str:
        return f"{self.num_channels}, {self._running_stats_repr()}"


class _BatchVarianceNorm(_RunningStatsNorm2d):
    r"""A batch normalizer that divides by the per-channel batch standard deviation without centring.

    Its running statistic is ``running_var``, fed the *biased* batch variance, as the authors' ``VN_self`` and
    ``EvoNormBO`` do (``torch.var(..., unbiased=False)``; :class:`torch.nn.BatchNorm2d` feeds the unbiased one).
    """

    running_stats = (("running_var", 1.0),)

    def __init__(
        self,
        num_channels: int,
        eps: float,
        momentum: float,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_channels, momentum, track_running_stats, device=device, dtype=dtype)
        self.eps = eps

    def _channel_variance(self, x: Tensor) -> Tensor:
        """Biased variance over :math:`(N, H, W)` in training (updating the running
        variance), the running variance in eval mode; shape ``(C,)``."""
        _check_4d(x, self)
        if not self._uses_batch_stats():
            return self.running_var
        self._values_per_channel(x)
        var = x.var(dim=(0, 2, 3), correction=0)
        self._update_running_stats(running_var=var.detach())
        return var

    def _divide_by_std(self, x: Tensor, var: Tensor) -> Tensor:
        """``x / sqrt(var + eps) * weight + bias`` with a per-channel ``var``."""
        return _affine(x, _per_channel(self.weight * torch.rsqrt(var + self.eps)), self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, {self._running_stats_repr()}"


class VarianceNorm2d(_BatchVarianceNorm):
    r"""Variance Normalization (Daneshmand et al., 2020): BatchNorm without mean subtraction.

    .. math::
        y = \frac{x}{\sqrt{\mathrm{Var}_{N,H,W}[x] + \epsilon}} \gamma + \beta

    Per-channel biased batch variance in training; the running variance (updated
    torch-style with ``momentum``) in eval mode. The running variance is fed the *biased* batch
    variance, as in the authors' ``VN_self`` (torch's :class:`~torch.nn.BatchNorm2d` feeds the
    unbiased one); the two differ by :math:`n/(n-1)` for :math:`n = N H W` values per channel.

    Args:
        num_channels: number of channels :math:`C`
        eps: added to the variance for numerical stability. Default: 1e-5
        momentum: weight of the new batch in the running variance. Default: 0.1
        track_running_stats: keep the running variance for eval mode; without it eval mode
            uses the batch variance too. Default: True
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
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_channels, eps, momentum, track_running_stats, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self._divide_by_std(x, self._channel_variance(x))


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


class _DeviationBatchNorm2d(_RunningStatsNorm2d):
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

    running_stats = (("running_mean", 0.0), ("running_dev", 1.0))

    def __init__(
        self,
        num_channels: int,
        eps: float = EPS,
        momentum: float = 0.1,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_channels, momentum, track_running_stats, device=device, dtype=dtype)
        self.eps = eps

    def scaled_deviation(self, centred: Tensor) -> Tensor:
        """The per-channel deviation :math:`s_c` (an estimate of the standard deviation) of ``centred``,
        shape ``(N, C, H, W)`` with zero channel means; returns shape ``(C,)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        if self._uses_batch_stats():
            self._values_per_channel(x)
            mean = x.mean(dim=(0, 2, 3))
            centred = x - _per_channel(mean)
            dev = self.scaled_deviation(centred)
            self._update_running_stats(running_mean=mean, running_dev=dev)
        else:
            centred = x - _per_channel(self.running_mean)
            dev = self.running_dev
        return _affine(centred, _per_channel(self.weight / (dev + self.eps)), self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, {self._running_stats_repr()}"


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
        track_running_stats: keep running statistics for eval mode; without them eval mode
            uses the batch statistics too. Default: True
        c_factor: multiplies :math:`C_{L^1}` (the paper's ablation of the constant: 1/4, 1, 4). Default: 1
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
        track_running_stats: bool = True,
        c_factor: float = 1.0,
        device=None,
        dtype=None,
    ) -> None:
        if not (isinstance(c_factor, (int, float)) and math.isfinite(c_factor) and c_factor > 0):
            raise ValueError(f"c_factor must be a finite number > 0, got {c_factor!r}")
        super().__init__(num_channels, eps, momentum, track_running_stats, device=device, dtype=dtype)
        self.c_factor = float(c_factor)

    def scaled_deviation(self, centred: Tensor) -> Tensor:
        return centred.abs().mean(dim=(0, 2, 3)) * (L1_CONSTANT * self.c_factor)

    def extra_repr(self) -> str:
        factor = f", c_factor={self.c_factor:g}" if self.c_factor != 1 else ""
        return f"{self.num_channels}, eps={self.eps}{factor}, {self._running_stats_repr()}"


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
        track_running_stats: keep running statistics for eval mode; without them eval mode
            uses the batch statistics too. Default: True
        device, dtype: where and in which dtype the parameters and buffers are created

    Shape:
        - Input: :math:`(N, C, H, W)` with :math:`N H W \ge k` in training
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    def __init__(
        self,
        num_channels: int,
        k: int = 10,
        eps: float = EPS,
        momentum: float = 0.1,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        _check_positive_int("k", k)
        super().__init__(num_channels, eps, momentum, track_running_stats, device=device, dtype=dtype)
        self.k = k

    def scaled_deviation(self, centred: Tensor) -> Tensor:
        n = centred.numel() // centred.shape[1]
        if self.k > n:
            raise ValueError(
                f"k={self.k} exceeds the n = N*H*W = {n} values per channel of input shape "
                f"{tuple(centred.shape)}; allowed: k <= n"
            )
        per_channel = centred.transpose(0, 1).reshape(centred.shape[1], n).abs()
        if self.k == 1:
            largest = per_channel.amax(dim=1)
        else:
            largest = per_channel.topk(self.k, dim=1, sorted=False).values.mean(dim=1)
        return largest * linf_constant(n)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, k={self.k}, eps={self.eps}, {self._running_stats_repr()}"


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
        track_running_stats: keep running statistics for eval mode; without them eval mode
            uses the batch statistics too. Default: True
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
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            num_channels,
            k=1,
            eps=eps,
            momentum=momentum,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, {self._running_stats_repr()}"


class MeanBatchNorm2d(_RunningStatsNorm2d):
    r"""Mean-only Batch Normalization (Salimans & Kingma, 2016; the official ``MeanBN``), used after a bounded
    weight-normalized conv.

    .. math::
        y = x - \mathrm{E}_{N,H,W}[x] + \beta

    No division and no :math:`\gamma`. In training the running mean follows torch's convention
    ``running_mean <- (1 - momentum) * running_mean + momentum * batch mean`` and eval mode uses it.

    Args:
        num_channels: number of channels :math:`C`
        momentum: weight of the new batch in the running mean. Default: 0.1
        track_running_stats: keep the running mean for eval mode; without it eval mode uses
            the batch mean too. Default: True
        device, dtype: where and in which dtype the parameters and buffers are created

    Shape:
        - Input: :math:`(N, C, H, W)`
        - Output: :math:`(N, C, H, W)` (same shape as input)
    """

    running_stats = (("running_mean", 0.0),)

    def __init__(
        self,
        num_channels: int,
        momentum: float = 0.1,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_channels, momentum, track_running_stats, scale=False, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        if self._uses_batch_stats():
            mean = x.mean(dim=(0, 2, 3))
            self._update_running_stats(running_mean=mean)
        else:
            mean = self.running_mean
        return x + _per_channel(self.bias - mean)
