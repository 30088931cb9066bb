"""What the layer modules share: the default epsilon, argument checks and per-channel broadcasting."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

EPS = 1e-5


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(param: str, value) -> None:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{param} must be a positive integer, got {value!r}")


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
