"""Tests for normlib.models: configs, shapes, probe points, init, SkipInit and the NF remedy."""

import math

import pytest
import torch
from torch import nn

from normlib import layers, models
from normlib.models import build_model, make_cnn, make_resnet

SMALL = (8, 16, 32)  # ResNet stage widths that keep the tests fast


def opts(norm):
    """Grouped normalizers default to 32 groups; small test widths need fewer."""
    return {"groups": 2} if norm in ("gn", "evo_s0") else {}


def run(model, in_channels=3, size=8, batch=4):
    torch.manual_seed(0)
    return model(torch.randn(batch, in_channels, size, size))


# ----------------------------------------------------------------------------- CNN configs


def test_paper_configs():
    assert models.CNN_CONFIGS["cfg_10"] == [64, (64, 2), 128, (128, 2), 256, (256, 2), 512, (512, 2), 512, 512]
    assert models.CNN_CONFIGS["cfg_20"] == [
        64,
        64,
        64,
        (64, 2),
        128,
        128,
        128,
        (128, 2),
        256,
        256,
        256,
        (256, 2),
        256,
        256,
        256,
        (256, 2),
        512,
        512,
        512,
        512,
    ]
    cfg_40 = models.CNN_CONFIGS["cfg_40"]
    widths = [e[0] if isinstance(e, tuple) else e for e in cfg_40]
    assert len(cfg_40) == 40
    assert [e for e in cfg_40 if isinstance(e, tuple)] == [(64, 2), (128, 2), (256, 2), (512, 2)]
    assert [i for i, e in enumerate(cfg_40, 1) if isinstance(e, tuple)] == [8, 16, 24, 32]
    assert widths == sorted(widths) and set(widths) == {64, 128, 256, 512}
    assert models.uniform_cfg(3) == [64, 64, 64] and models.uniform_cfg(2, width=16) == [16, 16]


@pytest.mark.parametrize("cfg, depth", [("cfg_10", 10), ("cfg_20", 20), ("cfg_40", 40)])
def test_cnn_named_configs_shapes(cfg, depth):
    model = make_cnn(cfg, width=4)
    assert len(model.probe_points()) == len(model.conv_points()) == depth
    assert run(model, size=16).shape == (4, 100)
    assert model.units[0].conv.out_channels == 4 and model.units[-1].conv.out_channels == 32


def test_cnn_uniform_and_explicit_configs():
    model = make_cnn("uniform", depth=5, width=8)
    assert [unit.conv.out_channels for unit in model.units] == [8] * 5
    assert all(unit.conv.stride == (1, 1) for unit in model.units)
    assert run(model).shape == (4, 100)
    assert len(make_cnn("uniform", depth=3).units[0].conv.weight) == 64
    model = make_cnn([8, (16, 2), [16, 1]], num_classes=10)
    assert [unit.conv.stride[0] for unit in model.units] == [1, 2, 1]
    assert run(model).shape == (4, 10)


def test_cnn_config_errors():
    with pytest.raises(ValueError, match="cfg_10, cfg_20, cfg_40, uniform"):
        make_cnn("cfg_11")
    with pytest.raises(ValueError, match="depth"):
        make_cnn("uniform")
    with pytest.raises(ValueError, match="uniform"):
        make_cnn("cfg_10", depth=3)
    with pytest.raises(ValueError, match="entries"):
        make_cnn([8, "wide"])


@pytest.mark.parametrize("norm", layers.NORM_NAMES)
def test_cnn_every_normalizer(norm):
    model = make_cnn("cfg_10", norm=norm, width=8, **opts(norm))
    out = run(model, size=32)  # the paper's CIFAR size: the last layers run at 2x2
    out.sum().backward()
    assert out.shape == (4, 100) and torch.isfinite(out).all()


def test_any_in_channels_and_classes():
    assert run(make_cnn("cfg_10", width=4, in_channels=1, num_classes=7), in_channels=1, size=16).shape == (4, 7)
    assert run(make_resnet(20, SMALL, in_channels=5, num_classes=3), in_channels=5).shape == (4, 3)
    assert run(build_model("resnet", depth=8, widths=SMALL, block="pre", num_classes=2)).shape == (4, 2)


# ----------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("norm", ["bn", "gn", "frn", "sws", "evo_s0"])
def test_resnet_shapes(depth, norm):
    model = make_resnet(depth, SMALL, norm=norm, **opts(norm))
    assert run(model).shape == (4, 100)
    assert len(model.blocks) == (depth - 2) // 2


def test_resnet56_probe_and_conv_points():
    model = make_resnet(56, SMALL)
    points = model.probe_points()
    assert len(points) == 1 + 27
    assert [name for name, _ in points] == ["stem"] + [f"block{i}" for i in range(1, 28)]
    assert points[0][1] is model.stem and points[-1][1] is model.blocks[-1]
    convs = model.conv_points()
    assert len(convs) == 1 + 27 * 2 + 2  # stem, two per block, two downsampling shortcuts
    assert [name for name, _ in convs][:4] == ["stem", "block1.conv1", "block1.conv2", "block2.conv1"]
    assert "block10.shortcut" in dict(convs) and "block19.shortcut" in dict(convs)
    assert all(isinstance(conv, nn.Conv2d) for _, conv in convs)


def test_paper_resnet56_widths():
    model = make_resnet()
    assert model.stem.conv.out_channels == 32
    assert [model.blocks[i].conv2.out_channels for i in (0, 9, 18)] == [32, 64, 128]
    assert [model.blocks[i].conv1.stride[0] for i in (0, 9, 18)] == [1, 2, 2]
    assert model.classifier.in_features == 128 and model.classifier.out_features == 100


@pytest.mark.parametrize("depth", [0, 8 + 1, 21, 57, 6.5])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match=r"6n\+2.*20, 32, 44, 56, 110"):
        make_resnet(depth)


def test_resnet_argument_errors():
    with pytest.raises(ValueError, match='block="pre"'):
        make_resnet(20, SMALL, norm="sws", remedy="nf")
    with pytest.raises(ValueError, match="block"):
        make_resnet(20, SMALL, block="mid")
    with pytest.raises(ValueError, match="remedy"):
        make_resnet(20, SMALL, block="pre", remedy="skip")
    with pytest.raises(ValueError, match="3 stage widths"):
        make_resnet(20, (8, 16))


def test_build_model_dispatch():
    assert isinstance(build_model("cnn", cfg="uniform", depth=2, width=4), models.NonResidualCNN)
    assert isinstance(build_model("resnet", depth=8, widths=SMALL), models.ResNet)
    with pytest.raises(ValueError, match="cnn, resnet, vgg"):
        build_model("mlp")


@pytest.mark.parametrize("block", ["post", "pre"])
@pytest.mark.parametrize("norm", layers.NORM_NAMES)
def test_both_blocks_with_every_normalizer(norm, block):
    model = make_resnet(8, SMALL, norm=norm, block=block, **opts(norm))
    out = run(model)
    out.sum().backward()
    assert out.shape == (4, 100) and torch.isfinite(out).all()
    assert all(p.grad is not None for p in model.parameters())


def test_post_block_norm2_has_no_nonlinearity():
    # EvoNorms take the activation slots, as in the authors' code: the branch ends in a plain conv
    # and the EvoNorm (with its nonlinearity) acts on the residual sum.
    evo = make_resnet(8, SMALL, norm="evo_b0").blocks[0]
    assert isinstance(evo.norm1, nn.Identity) and isinstance(evo.norm2, nn.Identity)
    assert isinstance(evo.act1, layers.EvoNormB0) and evo.act1.apply_act
    assert isinstance(evo.act2, layers.EvoNormB0) and evo.act2.apply_act
    s0 = make_resnet(8, SMALL, norm="evo_s0", **opts("evo_s0"))
    assert isinstance(s0.blocks[1].shortcut.norm, nn.Identity)
    frn = make_resnet(8, SMALL, norm="frn").blocks[0]
    assert isinstance(frn.norm2, layers.FilterResponseNorm2d) and isinstance(frn.act2, layers.TLU)


def test_shortcut_only_on_shape_change():
    model = make_resnet(20, SMALL)
    kinds = [type(block.shortcut) for block in model.blocks]
    assert kinds.count(nn.Sequential) == 2 and kinds[3] is nn.Sequential and kinds[6] is nn.Sequential
    shortcut = model.blocks[3].shortcut
    assert shortcut.conv.stride == (2, 2) and isinstance(shortcut.norm, layers.BatchNorm2d)
    assert not hasattr(shortcut, "act")


@pytest.mark.parametrize("norm", ["bn", "sws"])
def test_skipinit_post_block_is_act_of_shortcut(norm):
    model = make_resnet(20, SMALL, norm=norm, skipinit=True).eval()
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o))) for b in model.blocks]
    with torch.no_grad():
        run(model)
    for h in hooks:
        h.remove()
    assert len(seen) == 9
    for block, x, out in seen:
        assert isinstance(block.skip_gain, nn.Parameter) and block.skip_gain.item() == 0
        torch.testing.assert_close(out, torch.relu(block.shortcut(x)))
    assert sum(isinstance(b.shortcut, nn.Identity) for b, _, _ in seen) == 7


def test_skipinit_pre_block_is_shortcut():
    model = make_resnet(20, SMALL, norm="wn", block="pre", skipinit=True).eval()
    x = torch.randn(4, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.blocks[0](x), x)  # identity shortcut
        transition = model.blocks[3]
        out = transition(x)
        assert out.shape == (4, 16, 4, 4)
        torch.testing.assert_close(out, transition.shortcut(x))


def test_skip_gain_without_skipinit_is_a_constant_buffer():
    block = make_resnet(8, SMALL).blocks[0]
    assert "skip_gain" in dict(block.named_buffers()) and "skip_gain" not in dict(block.named_parameters())
    assert block.skip_gain.item() == 1
    assert "skip_gain" in dict(make_resnet(8, SMALL, skipinit=True).blocks[0].named_parameters())


def test_nf_betas_are_analytic():
    alpha = 0.2
    model = make_resnet(20, SMALL, norm="sws", block="pre", remedy="nf", alpha=alpha)
    expected_var = [1, 1.04, 1.08, 1.12, 1.04, 1.08, 1.12, 1.04, 1.08]  # resets after blocks 4 and 7
    assert [b.beta for b in model.blocks] == pytest.approx([math.sqrt(v) for v in expected_var])
    assert all(b.alpha == alpha for b in model.blocks)
    assert models.nf_betas([False, True, False], 0.5) == pytest.approx([1, math.sqrt(1.25), math.sqrt(1.25)])
    assert {b.beta for b in make_resnet(20, SMALL, block="pre").blocks} == {1.0}


def test_nf_remedy_tames_parametric_variance_growth():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)

    def stream_var(model):
        out, stream = x, []
        with torch.no_grad():
            out = model.stem(out)
            for block in model.blocks:
                out = block(out)
                stream.append(out.var().item())
        return stream

    plain = stream_var(make_resnet(56, (16, 16, 16), norm="sws", block="pre"))
    nf = stream_var(make_resnet(56, (16, 16, 16), norm="sws", block="pre", remedy="nf"))
    assert plain[-1] / plain[0] > 1e5  # ~2x per block
    assert nf[-1] / nf[0] < 100


def test_he_init_on_plain_convs():
    torch.manual_seed(0)
    model = make_cnn([512], in_channels=256, num_classes=2)
    conv = model.units[0].conv
    assert type(conv) is nn.Conv2d and conv.bias is None
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.01)
    assert conv.weight.mean().abs().item() < 1e-3
    resnet = make_resnet(8, SMALL)
    assert resnet.blocks[0].conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (8 * 9)), rel=0.15)


@pytest.mark.parametrize("norm, conv_cls", [("wn", layers.WNConv2d), ("sws", layers.ScaledStdConv2d)])
def test_parametric_normalizers_use_their_convs(norm, conv_cls):
    for model in (make_cnn("cfg_10", norm=norm, width=4), make_resnet(20, SMALL, norm=norm, block="pre")):
        convs = [conv for _, conv in model.conv_points()]
        assert all(isinstance(conv, conv_cls) for conv in convs)
        assert all(conv.bias is not None and not conv.bias.any() for conv in convs)
    assert all(type(conv) is nn.Conv2d for _, conv in make_resnet(20, SMALL, norm="bn").conv_points())
    block = make_resnet(8, SMALL, norm=norm).blocks[0]
    assert isinstance(block.norm1, nn.Identity) and isinstance(block.norm2, nn.Identity)
