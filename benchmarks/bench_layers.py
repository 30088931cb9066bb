"""normlib's BN/LN/IN/GN against torch's own modules: forward + backward time (target <= 1.1x).

Each pair runs on the same input, (N, C, H, W) = (64, 64, 32, 32) in float32, in train mode; one call is a
forward and a backward of a fixed upstream gradient (so the input gradient and the affine gradients are computed).
The two modules of a pair are timed in alternation (``_common.interleaved``), median over rounds.
GroupNorm is normlib's default (32 groups, the paper's unbiased group variance) against ``nn.GroupNorm(32, C)``.

Run: ``python benchmarks/bench_layers.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from _common import Row, interleaved, machine_note
from normlib.layers import make_norm

SHAPE = (64, 64, 32, 32)
GROUPS = 32

PAIRS = {
    "bn": (lambda c: make_norm("bn", c), lambda c: nn.BatchNorm2d(c)),
    "ln": (lambda c: make_norm("ln", c), lambda c: nn.GroupNorm(1, c)),
    "in": (lambda c: make_norm("in", c), lambda c: nn.InstanceNorm2d(c, affine=True)),
    "gn": (lambda c: make_norm("gn", c, groups=GROUPS), lambda c: nn.GroupNorm(GROUPS, c)),
}


def _forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def call() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(grad)

    return call


def main(number: int = 10, rounds: int = 11) -> list[Row]:
    torch.manual_seed(0)
    x = torch.randn(SHAPE, requires_grad=True)
    grad = torch.randn(SHAPE)
    rows = []
    print(f"bench_layers: forward+backward on {SHAPE}; {machine_note()}")
    for name, (ours, theirs) in PAIRS.items():
        times = interleaved(
            {
                "normlib": _forward_backward(ours(SHAPE[1]).train(), x, grad),
                "torch": _forward_backward(theirs(SHAPE[1]).train(), x, grad),
            },
            number,
            rounds,
            warmup=5,
        )
        ratio = times["normlib"] / times["torch"]
        print(
            f"  {name}: normlib {1e3 * times['normlib']:7.2f} ms   torch {1e3 * times['torch']:7.2f} ms   "
            f"ratio {ratio:.3f}"
        )
        rows.append(Row("layers", f"{name} time / torch's module", ratio, 1.1))
    return rows


if __name__ == "__main__":
    main()
