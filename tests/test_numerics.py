"""normlib.numerics: the emulated float16 accumulator, the mean on either accumulator, torch's own float16 sums, and
the reduced-precision model wrapper."""

import math

import pytest
import torch

from normlib import models, numerics
from normlib.numerics import ReducedPrecision, fp16_mean, fp16_tree_sum, torch_half_sum_accumulates_in_float32


def test_torch_half_sums_accumulate_in_float32_but_the_emulation_does_not():
    assert torch_half_sum_accumulates_in_float32()
    ones = torch.ones(60_000)
    assert float(fp16_tree_sum(ones)) == 60_000.0  # pairwise: exact partial sums of ones up to 2048
    assert torch.isinf(fp16_tree_sum(torch.ones(70_000)))
    assert torch.isfinite(torch.ones(70_000, dtype=torch.float16).mean())  # torch: float32 inside
    # every partial sum is rounded: 2048 + 1 is 2048 in float16
    assert float(fp16_tree_sum(torch.tensor([2048.0, 1.0]))) == 2048.0
    assert fp16_tree_sum(torch.ones(3, 5)).shape == (3,)


def test_tree_sum_pads_odd_levels_and_handles_empty_and_single_values():
    assert float(fp16_tree_sum(torch.arange(1.0, 8.0))) == 28.0  # 7 values: levels of 7, 4, 2, 1
    assert fp16_tree_sum(torch.ones(2, 0)).tolist() == [0.0, 0.0]
    assert fp16_tree_sum(torch.tensor([[3.5]])).dtype == torch.float16
    # the overflow threshold: 65504 is the largest float16, and a sum reaching 65520 rounds to inf
    assert float(fp16_tree_sum(torch.tensor([65504.0, 8.0]))) == 65504.0
    assert math.isinf(float(fp16_tree_sum(torch.tensor([65504.0, 16.0]))))


def test_tree_sum_error_is_within_the_pairwise_bound():
    gen = torch.Generator().manual_seed(0)
    for n in (5, 100, 3000):
        values = torch.rand(64, n, generator=gen, dtype=torch.float64).to(torch.float16).double()
        exact = values.sum(dim=-1)
        k = math.ceil(math.log2(n))
        u = 2.0**-11
        bound = k * u / (1 - k * u) * values.abs().sum(dim=-1)
        assert ((fp16_tree_sum(values).double() - exact).abs() <= bound).all()


def test_mean_on_either_accumulator():
    gen = torch.Generator().manual_seed(1)
    x = 4.0 * torch.randn(3, 2000, generator=gen, dtype=torch.float64)
    exact = x.to(torch.float16).double().mean(dim=-1)
    for accumulator in numerics.ACCUMULATORS:
        mean = fp16_mean(x, accumulator)
        assert mean.dtype == torch.float16 and mean.shape == (3,)
        assert ((mean.double() - exact).abs() <= 0.01 * x.abs().mean(dim=-1)).all()
    # the float16 accumulator overflows with its sum, the float32 one only when the mean does
    ones = torch.ones(70_000)
    assert torch.isinf(fp16_mean(ones, "fp16")) and float(fp16_mean(ones, "fp32")) == 1.0
    assert torch.equal(fp16_mean(x, "fp32"), x.to(torch.float16).mean(dim=-1))
    with pytest.raises(ValueError, match="accumulator"):
        fp16_mean(x, "fp64")
    with pytest.raises(ValueError, match="no values"):
        fp16_mean(torch.ones(2, 0))


def test_reduced_precision_wrapper():
    torch.manual_seed(0)
    net = ReducedPrecision(models.make_cnn([(8, 2), 8], norm="l1bn", in_channels=1, num_classes=3), torch.bfloat16)
    out = net(torch.randn(4, 1, 8, 8))
    assert out.dtype == torch.float32 and out.shape == (4, 3)
    out.sum().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None for p in net.parameters())
    assert len(net.conv_points()) == 2 and len(net.probe_points()) == 2 and "bfloat16" in repr(net)


def test_exact_float32_turns_tf32_off_and_restores_it():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with numerics.exact_float32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with pytest.raises(RuntimeError), numerics.exact_float32():
            raise RuntimeError("restored on the way out too")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_unit_roundoff_is_half_the_machine_epsilon_of_the_dtype():
    assert numerics.unit_roundoff(torch.float32) == 2.0**-24
    assert numerics.unit_roundoff(torch.float64) == 2.0**-53
    assert numerics.unit_roundoff(torch.float16) == 2.0**-11
    assert numerics.unit_roundoff(torch.bfloat16) == 2.0**-8
    # a correctly rounded sum: 1 + u rounds to 1 (a tie, to even), 1 + 2u is exactly representable
    for dtype in (torch.float32, torch.float64):
        u = numerics.unit_roundoff(dtype)
        one = torch.ones((), dtype=dtype)
        assert float(one + u) == 1.0 and float(one + 2 * u) == 1.0 + 2 * u
    with pytest.raises(ValueError, match="floating-point"):
        numerics.unit_roundoff(torch.int32)
