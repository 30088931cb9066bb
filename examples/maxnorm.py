"""A normalizer of your own, for `python -m normlib report-card examples/maxnorm.py:MaxNorm2d`.

MaxNorm divides each sample by the largest magnitude over its channels and positions, then applies a learned
per-channel gain. Any nn.Module built as ``Class(num_channels)`` that keeps the tensor's shape works.
"""

import torch
from torch import nn


class MaxNorm2d(nn.Module):
    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.abs().amax(dim=(1, 2, 3), keepdim=True) + self.eps
        return x / scale * self.weight.view(1, -1, 1, 1)
