"""The normalizers of Hoffer et al. (2018) in normlib.layers: L1, L-infinity and Top-k batch norm, mean-only batch
norm and bounded weight normalization, each against an independent formula written here (float64), in training
and eval mode, plus the registry entries."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlib import layers, models, theory
from normlib.layers import (
    BWNConv2d,
    L1BatchNorm2d,
    LinfBatchNorm2d,
    MeanBatchNorm2d,
    TopkBatchNorm2d,
    conv_norm_act,
    make_activation,
    make_conv,
    make_norm,
    norm_info,
)

EPS = 1e-5
C = 5
SHAPE = (6, C, 4, 3)
N = 6 * 4 * 3
TIGHT = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture
def x():
    torch.manual_seed(0)
    return 2.5 * torch.randn(SHAPE, dtype=torch.float64) - 0.7


def randomize(module):
    module = module.double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 + torch.rand(p.shape, generator=gen, dtype=p.dtype))
    return module


def columns(x):
    """(N, C, H, W) -> (C, N*H*W): the values of each channel in a row."""
    return x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)


def linf_c(n):
    return (1 + math.sqrt(math.pi * math.log(4))) / (2 * math.sqrt(2 * math.log(n)))


def reference(x, deviation, weight, bias, eps=EPS):
    """y = (x - mean) / (deviation + eps) * weight + bias, per channel, from (C,) deviations."""
    mean = columns(x).mean(dim=1)
    scale = weight / (deviation + eps)
    return (x - mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def l1_dev(x):
    cols = columns(x)
    return math.sqrt(math.pi / 2) * (cols - cols.mean(dim=1, keepdim=True)).abs().mean(dim=1)


def topk_dev(x, k):
    cols = columns(x)
    centred = (cols - cols.mean(dim=1, keepdim=True)).abs()
    largest = torch.sort(centred, dim=1, descending=True).values[:, :k]
    return linf_c(cols.shape[1]) * largest.mean(dim=1)


@pytest.mark.parametrize(
    "make, deviation",
    [
        (lambda: L1BatchNorm2d(C), l1_dev),
        (lambda: LinfBatchNorm2d(C), lambda x: topk_dev(x, 1)),
        (lambda: TopkBatchNorm2d(C, k=4), lambda x: topk_dev(x, 4)),
        (lambda: TopkBatchNorm2d(C), lambda x: topk_dev(x, 10)),
    ],
)
def test_training_forward_matches_the_formula(x, make, deviation):
    m = randomize(make())
    torch.testing.assert_close(m(x), reference(x, deviation(x), m.weight, m.bias), **TIGHT)


def test_linf_is_the_maximum_absolute_deviation(x):
    cols = columns(x)
    expected = linf_c(N) * (cols - cols.mean(dim=1, keepdim=True)).abs().amax(dim=1)
    centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
    torch.testing.assert_close(LinfBatchNorm2d(C).scaled_deviation(centred), expected, **TIGHT)


@pytest.mark.parametrize(
    "make, deviation",
    [
        (lambda: L1BatchNorm2d(C, momentum=0.3), l1_dev),
        (lambda: TopkBatchNorm2d(C, k=2, momentum=0.3), lambda x: topk_dev(x, 2)),
    ],
)
def test_running_statistics_and_eval_mode(x, make, deviation):
    m = randomize(make())
    m(x)
    mean = columns(x).mean(dim=1)
    torch.testing.assert_close(m.running_mean, 0.3 * mean, **TIGHT)  # from 0: torch's momentum convention
    torch.testing.assert_close(m.running_dev, 0.7 + 0.3 * deviation(x), **TIGHT)  # from 1
    m.eval()
    other = x.flip(0) * 0.5 + 3
    expected = (other - m.running_mean.view(1, -1, 1, 1)) * (m.weight / (m.running_dev + EPS)).view(
        1, -1, 1, 1
    ) + m.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m(other), expected, **TIGHT)
    before = m.running_dev.clone()
    m(other)
    torch.testing.assert_close(m.running_dev, before, **TIGHT)  # eval mode leaves the statistics alone


def test_l1_output_has_unit_scale_on_gaussian_data():
    torch.manual_seed(3)
    y = L1BatchNorm2d(4)(torch.randn(64, 4, 16, 16, dtype=torch.float64) * 7 + 2)
    assert abs(y.std().item() - 1) < 0.01 and abs(y.mean().item()) < 1e-10


def test_l1_c_factor_scales_the_output_and_only_the_output():
    torch.manual_seed(3)
    x = torch.randn(16, 4, 8, 8, dtype=torch.float64) * 3 + 1
    plain, quarter = L1BatchNorm2d(4).double(), L1BatchNorm2d(4, c_factor=0.25).double()
    y, y4 = plain(x), quarter(x)
    assert torch.allclose(y4, 4 * y, rtol=1e-4)  # C/4: outputs four times larger (eps aside)
    # the running deviation holds the scaled deviation: 0.9 * 1 + 0.1 * (C_L1 * f * mean|x - mu|)
    assert torch.allclose(quarter.running_dev - 0.9, 0.25 * (plain.running_dev - 0.9), rtol=1e-6)
    assert torch.allclose(quarter.running_mean, plain.running_mean)
    assert "c_factor=0.25" in repr(quarter) and "c_factor" not in repr(plain)
    assert make_norm("l1bn", 4, c_factor=4.0).c_factor == 4.0
    for bad in (0, -1.0, float("inf"), "2"):
        with pytest.raises(ValueError, match="c_factor must be a finite number > 0"):
            L1BatchNorm2d(4, c_factor=bad)


def test_mean_only_batch_norm(x):
    m = randomize(MeanBatchNorm2d(C, momentum=0.2))
    mean = columns(x).mean(dim=1)
    torch.testing.assert_close(m(x), x - mean.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1), **TIGHT)
    torch.testing.assert_close(m.running_mean, 0.2 * mean, **TIGHT)
    m.eval()
    torch.testing.assert_close(m(x), x - m.running_mean.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1), **TIGHT)
    assert [name for name, _ in m.named_parameters()] == ["bias"]


def test_bounded_weight_norm_conv():
    torch.manual_seed(0)
    conv = BWNConv2d(3, 6, 3).double()
    w0 = conv.weight.detach().clone()
    rho0 = torch.linalg.vector_norm(w0)
    assert conv.bias is None and "rho" in dict(conv.named_buffers()) and "rho" not in dict(conv.named_parameters())
    initialized = dict(rtol=1e-6, atol=0)  # set in float32 before .double()
    torch.testing.assert_close(conv.rho, rho0, **initialized)
    torch.testing.assert_close(conv.gain, torch.linalg.vector_norm(w0, dim=(1, 2, 3)), **initialized)
    with torch.no_grad():  # any gains and directions: the layer's norm stays rho
        conv.gain.copy_(torch.tensor([0.1, 5.0, 2.0, 1.0, 3.0, 0.5], dtype=torch.float64))
        conv.weight.mul_(torch.rand(6, 1, 1, 1, dtype=torch.float64) * 10)
    v, g = conv.weight, conv.gain
    expected = (
        (conv.rho * g / torch.linalg.vector_norm(g)).view(-1, 1, 1, 1)
        * v
        / (torch.linalg.vector_norm(v, dim=(1, 2, 3), keepdim=True) + EPS)
    )
    torch.testing.assert_close(conv.effective_weight(), expected, **TIGHT)
    assert abs(torch.linalg.vector_norm(conv.effective_weight()).item() - rho0.item()) < 1e-4 * rho0.item()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(conv(x), F.conv2d(x, expected, padding=1), **TIGHT)
    conv.reset_parameters()  # a fresh initialization sets a fresh bound
    torch.testing.assert_close(conv.rho, torch.linalg.vector_norm(conv.weight), rtol=1e-12, atol=0)


def test_bwn_keeps_its_norm_through_training_steps():
    torch.manual_seed(0)
    block = conv_norm_act("bwn", 3, 8)
    rho = block.conv.rho.item()
    opt = torch.optim.SGD(block.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        block(torch.randn(4, 3, 6, 6)).square().mean().backward()
        opt.step()
    assert abs(torch.linalg.vector_norm(block.conv.effective_weight()).item() - rho) < 1e-3 * rho
    assert torch.linalg.vector_norm(block.conv.weight).item() != pytest.approx(rho)  # v itself moved freely


@pytest.mark.parametrize("name", layers.NORM_MATTERS_NAMES)
@pytest.mark.parametrize("act", [True, False])
def test_gradients_flow(name, act):
    torch.manual_seed(0)
    block = conv_norm_act(name, 3, 8, act=act).double()
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    block(x).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", layers.NORM_MATTERS_NAMES)
def test_models_with_every_new_normalizer(name):
    torch.manual_seed(0)
    cnn = models.make_cnn([(8, 2), 16], norm=name, in_channels=1, num_classes=10)
    out = cnn(torch.randn(4, 1, 12, 12))
    out.sum().backward()
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    resnet = models.make_resnet(8, (4, 8, 16), norm=name, num_classes=3)
    assert resnet(torch.randn(2, 3, 16, 16)).shape == (2, 3)
    if name == "bwn":  # he_init_ leaves the bounded convs alone; their bound is the He weight's norm
        conv = cnn.units[1].conv
        assert type(conv) is BWNConv2d and conv.rho.item() == pytest.approx(math.sqrt(2 * 16), rel=0.2)


def test_registry_entries():
    assert layers.NORM_NAMES == ("none", "bn", "ln", "in", "gn", "frn", "vn", "wn", "sws", "evo_b0", "evo_s0")
    assert layers.NORM_MATTERS_NAMES == ("l1bn", "linfbn", "topkbn", "bwn")
    assert {n: norm_info(n).family for n in layers.NORM_MATTERS_NAMES} == {
        "l1bn": "activation",
        "linfbn": "activation",
        "topkbn": "activation",
        "bwn": "parametric",
    }
    assert norm_info("bwn").placement == "in_conv" and norm_info("l1bn").placement == "after_conv"
    expected = {"l1bn": L1BatchNorm2d, "linfbn": LinfBatchNorm2d, "topkbn": TopkBatchNorm2d, "bwn": MeanBatchNorm2d}
    for name, cls in expected.items():
        assert type(make_norm(name, 8)) is cls and repr(make_norm(name, 8))
        assert type(make_activation(name, 8)) is nn.ReLU
    assert type(make_conv("bwn", 3, 8)) is BWNConv2d and make_conv("bwn", 3, 8).bias is None
    assert type(make_conv("l1bn", 3, 8)) is nn.Conv2d
    assert make_norm("topkbn", 8).k == 10 and make_norm("topkbn", 8, k=3).k == 3


@pytest.mark.parametrize(
    "name, opts, allowed",
    [
        ("l1bn", {"k": 2}, "eps, momentum, track_running_stats, c_factor"),
        ("linfbn", {"k": 2}, "eps, momentum, track_running_stats"),
        ("topkbn", {"groups": 2}, "k, eps, momentum, track_running_stats"),
        ("bwn", {"eps": 1e-3}, "momentum, track_running_stats"),
    ],
)
def test_unknown_options_are_named(name, opts, allowed):
    (option,) = opts
    with pytest.raises(ValueError, match=rf"unknown option {option} .*allowed options: {allowed}$"):
        make_norm(name, 8, **opts)


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        TopkBatchNorm2d(4, k=0)
    with pytest.raises(ValueError, match=r"k=10 exceeds the n = N\*H\*W = 8 .*allowed: k <= n"):
        TopkBatchNorm2d(2)(torch.randn(2, 2, 2, 2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        L1BatchNorm2d(2)(torch.randn(1, 2, 1, 1))
    with pytest.raises(ValueError, match="4D"):
        L1BatchNorm2d(2)(torch.randn(3, 2))
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="n must be an integer >= 2"):
            layers.linf_constant(bad)


def test_layer_constants_are_the_theory_constants():
    assert layers.L1_CONSTANT == pytest.approx(theory.C_L1, abs=1e-15) == pytest.approx(math.sqrt(math.pi / 2))
    for n in (2, 10, 12544, 10**6):
        assert layers.linf_constant(n) == pytest.approx(theory.c_linf(n), rel=1e-14) == pytest.approx(linf_c(n))


def test_bfloat16_autocast_forward():
    torch.manual_seed(0)
    block = conv_norm_act("l1bn", 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(torch.randn(4, 3, 6, 6))
    assert torch.isfinite(y).all()
    assert torch.isfinite(block.norm.running_dev).all() and block.norm.running_dev.dtype == torch.float32


# ------------------------------------------------- float16 statistics (normlib.layers.half_stats)


def _half_stats_input(sigma, n_per_channel, channels=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return sigma * torch.randn(n_per_channel // 16, channels, 4, 4, generator=gen)


def test_half_stats_in_float32_is_batchnorm_and_l1_batchnorm():
    from normlib.layers.half_stats import HalfStatsBatchNorm2d

    x = _half_stats_input(2.0, 256)
    bn = nn.BatchNorm2d(3).train()
    torch.testing.assert_close(HalfStatsBatchNorm2d(3, "l2", "fp32").train()(x), bn(x), rtol=1e-4, atol=1e-4)
    l1 = L1BatchNorm2d(3).train()
    torch.testing.assert_close(HalfStatsBatchNorm2d(3, "l1", "fp32").train()(x), l1(x), rtol=1e-5, atol=1e-5)


def test_half_stats_l2_overflows_where_n_sigma2_passes_65504_and_l1_survives():
    from normlib.layers.half_stats import HalfStatsBatchNorm2d
    from normlib.theory import lp

    sigma = 4.0  # n* = 1 + 65504 / 16 = 4095 for L2, about 20525 for L1
    for n, l2_finite in ((2048, True), (8192, False)):
        x = _half_stats_input(sigma, n)
        layer = HalfStatsBatchNorm2d(3, "l2", "fp16").train()
        layer.record = True
        y = layer(x)
        assert layer.log[0]["finite"] is l2_finite and layer.log[0]["n"] == n
        assert (layer.log[0]["sumsq"] >= lp.FP16_MAX) is not l2_finite
        if not l2_finite:
            assert (y == layer.bias.view(1, -1, 1, 1)).any()  # an overflowed channel is zeroed, then shifted
            assert not torch.isfinite(layer.running_dev).all()  # and its float16 running variance is inf
        l1 = HalfStatsBatchNorm2d(3, "l1", "fp16").train()
        reference = HalfStatsBatchNorm2d(3, "l1", "fp32").train()
        torch.testing.assert_close(l1(x), reference(x), rtol=0.02, atol=0.02)


def test_half_stats_gradients_flow_and_eval_uses_float16_buffers():
    from normlib.layers.half_stats import HalfStatsBatchNorm2d

    x = _half_stats_input(1.0, 512).requires_grad_()
    layer = HalfStatsBatchNorm2d(3, "l1", "fp16").train()
    layer(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert layer.running_mean.dtype == torch.float16 and layer.running_dev.dtype == torch.float16
    layer.eval()
    assert torch.isfinite(layer(x)).all()
    with pytest.raises(ValueError, match="kind"):
        HalfStatsBatchNorm2d(3, "l3")
    with pytest.raises(ValueError, match="stats"):
        HalfStatsBatchNorm2d(3, "l2", "fp8")
