"""torch's module conventions across normlib.layers: state_dict round trips, the factory keyword arguments
``device`` and ``dtype``, ``reset_parameters``/``extra_repr``, ``track_running_stats``, and the import paths of
the package."""

import io

import pytest
import torch
from torch import nn

from normlib import layers
from normlib.layers import batch, conv_norm_act, make_activation, make_conv, make_norm, registry

ALL_NAMES = layers.NORM_NAMES + layers.NORM_MATTERS_NAMES
C = 32  # the grouped normalizers default to 32 groups
SHAPE = (4, 3, 6, 5)

# Every public layer class, built with the smallest arguments it needs.
BUILDERS = {
    layers.BatchNorm2d: lambda **kw: layers.BatchNorm2d(C, **kw),
    layers.VarianceNorm2d: lambda **kw: layers.VarianceNorm2d(C, **kw),
    layers.L1BatchNorm2d: lambda **kw: layers.L1BatchNorm2d(C, **kw),
    layers.LinfBatchNorm2d: lambda **kw: layers.LinfBatchNorm2d(C, **kw),
    layers.TopkBatchNorm2d: lambda **kw: layers.TopkBatchNorm2d(C, k=3, **kw),
    layers.MeanBatchNorm2d: lambda **kw: layers.MeanBatchNorm2d(C, **kw),
    layers.GroupNorm2d: lambda **kw: layers.GroupNorm2d(C, groups=4, **kw),
    layers.LayerNorm2d: lambda **kw: layers.LayerNorm2d(C, **kw),
    layers.InstanceNorm2d: lambda **kw: layers.InstanceNorm2d(C, **kw),
    layers.FilterResponseNorm2d: lambda **kw: layers.FilterResponseNorm2d(C, **kw),
    layers.TLU: lambda **kw: layers.TLU(C, **kw),
    layers.EvoNormB0: lambda **kw: layers.EvoNormB0(C, **kw),
    layers.EvoNormS0: lambda **kw: layers.EvoNormS0(C, groups=4, **kw),
    layers.WNConv2d: lambda **kw: layers.WNConv2d(C, C, 3, **kw),
    layers.ScaledStdConv2d: lambda **kw: layers.ScaledStdConv2d(C, C, 3, **kw),
    layers.BWNConv2d: lambda **kw: layers.BWNConv2d(C, C, 3, **kw),
}
RUNNING_STATS_LAYERS = [
    layers.VarianceNorm2d,
    layers.EvoNormB0,
    layers.L1BatchNorm2d,
    layers.LinfBatchNorm2d,
    layers.TopkBatchNorm2d,
    layers.MeanBatchNorm2d,
]


def tensors(module):
    return dict(module.state_dict(keep_vars=True))


def floating(module):
    return {name: t for name, t in tensors(module).items() if t.is_floating_point()}


def train_steps(block, steps=3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    block.train()
    for step in range(steps):
        x = torch.randn(SHAPE, generator=gen, dtype=dtype) * (step + 1) + step
        block(x).square().mean().backward()


# ------------------------------------------------------------------------------ state_dict


@pytest.mark.parametrize("name", ALL_NAMES)
def test_state_dict_round_trips(name):
    torch.manual_seed(0)
    block = conv_norm_act(name, 3, C)
    initial = {k: v.clone() for k, v in block.state_dict().items()}
    train_steps(block)
    state = block.state_dict()
    buffers = [k for k, v in state.items() if k.startswith("norm.running")]
    assert all(not torch.equal(state[k], initial[k]) for k in buffers), "training left a running statistic as it was"
    saved = io.BytesIO()
    torch.save(state, saved)
    saved.seek(0)

    torch.manual_seed(1)
    fresh = conv_norm_act(name, 3, C)
    fresh.load_state_dict(torch.load(saved))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    block.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), block(x))
    assert list(fresh.state_dict()) == list(state)


@pytest.mark.parametrize("name", ["bn", "vn", "evo_b0", "l1bn", "linfbn", "topkbn", "bwn"])
def test_running_statistics_keep_their_buffer_names(name):
    expected = {
        "bn": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"],
        "vn": ["weight", "bias", "running_var"],
        "evo_b0": ["weight", "bias", "v", "running_var"],
        "bwn": ["bias", "running_mean"],
    }
    deviation = ["weight", "bias", "running_mean", "running_dev"]
    assert list(make_norm(name, C).state_dict()) == expected.get(name, deviation)


# -------------------------------------------------------------------------- device and dtype


@pytest.mark.parametrize("name", ALL_NAMES)
def test_make_norm_creates_float64_layers(name):
    norm = make_norm(name, C, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in floating(norm).values())
    assert floating(norm).keys() == floating(make_norm(name, C)).keys()
    for key, value in make_norm(name, C).double().state_dict().items():  # the same initialization
        torch.testing.assert_close(norm.state_dict()[key], value, rtol=1e-7, atol=0, msg=key)
    x = torch.randn(SHAPE[0], C, *SHAPE[2:], dtype=torch.float64)
    assert norm(x).dtype == torch.float64


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_builder_takes_dtype(name):
    torch.manual_seed(0)
    block = conv_norm_act(name, 3, C, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in floating(block).values())
    assert all(t.dtype == torch.float64 for t in floating(make_conv(name, 3, C, dtype=torch.float64)).values())
    assert all(t.dtype == torch.float64 for t in floating(make_activation(name, C, dtype=torch.float64)).values())
    train_steps(block, dtype=torch.float64)
    assert block.eval()(torch.randn(SHAPE, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("device", ["meta", "cpu", torch.device("cpu")])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_builder_takes_device(name, device):
    block = conv_norm_act(name, 3, C, device=device)
    norm = make_norm(name, C, device=device)
    for module in (block, norm, make_conv(name, 3, C, device=device), make_activation(name, C, device=device)):
        assert all(t.device.type == torch.device(device).type for t in tensors(module).values())
    assert repr(block) and repr(norm)


@pytest.mark.parametrize("cls", list(BUILDERS))
def test_every_layer_takes_device_and_dtype(cls):
    module = BUILDERS[cls](device="cpu", dtype=torch.float64)
    assert floating(module) and all(t.dtype == torch.float64 for t in floating(module).values())
    assert list(tensors(module)) == list(tensors(BUILDERS[cls]()))
    meta = BUILDERS[cls](device="meta")
    assert all(t.is_meta for t in tensors(meta).values())
    assert repr(meta)


def test_make_norm_moves_a_factory_without_factory_kwargs(monkeypatch):
    class Scale(nn.Module):
        def __init__(self, num_channels):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(num_channels))

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    layers.register_norm(layers.NormInfo("scale", "Scale", "activation", "after_conv"), Scale)
    assert make_norm("scale", 4, dtype=torch.float64).weight.dtype == torch.float64
    assert make_norm("scale", 4, device="meta").weight.is_meta
    assert make_norm("scale", 4).weight.dtype == torch.float32
    with pytest.raises(ValueError, match="allowed options: \\(none\\)$"):
        make_norm("scale", 4, eps=1.0)


# ------------------------------------------------------------- reset_parameters, extra_repr


@pytest.mark.parametrize("cls", list(BUILDERS))
def test_every_layer_has_reset_parameters_and_extra_repr(cls):
    module = BUILDERS[cls]()
    assert type(module).extra_repr is not nn.Module.extra_repr and module.extra_repr()
    fresh = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        for t in floating(module).values():
            t.add_(1.5)
    module.reset_parameters()
    drawn = {"weight", "gain", "rho"} if isinstance(module, nn.Conv2d) else set()  # a fresh He weight and its norms
    for key, value in module.state_dict().items():
        if key not in drawn:
            assert torch.equal(value, fresh[key]), key
    if isinstance(module, layers.BWNConv2d):
        torch.testing.assert_close(module.rho, torch.linalg.vector_norm(module.weight))
    elif isinstance(module, nn.Conv2d):
        assert torch.equal(module.gain, torch.ones(C))


# -------------------------------------------------------------------- running statistics


@pytest.mark.parametrize("cls", RUNNING_STATS_LAYERS)
def test_batch_normalizers_share_one_running_statistics_base(cls):
    assert issubclass(cls, batch._RunningStatsNorm2d)
    module = BUILDERS[cls]()
    names = [name for name, _ in cls.running_stats]
    assert [name for name, _ in module.named_buffers()] == names
    assert module.track_running_stats and module.momentum == 0.1


@pytest.mark.parametrize("cls", [layers.BatchNorm2d, *RUNNING_STATS_LAYERS])
def test_without_running_statistics_eval_uses_the_batch(cls):
    module = BUILDERS[cls](track_running_stats=False, dtype=torch.float64)
    assert not [name for name, _ in module.named_buffers() if name.startswith("running")]
    assert "track_running_stats=False" in repr(module)
    x = torch.randn(SHAPE[0], C, *SHAPE[2:], dtype=torch.float64) * 2 + 1
    trained = module.train()(x)
    assert torch.equal(module.eval()(x), trained)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_bfloat16_autocast_keeps_float32_running_statistics(name):
    torch.manual_seed(0)
    block = conv_norm_act(name, 3, C)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(torch.randn(SHAPE))
    assert torch.isfinite(y).all()
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in floating(block).values())


@pytest.mark.parametrize("cls", RUNNING_STATS_LAYERS)
def test_reset_running_stats(cls):
    module = BUILDERS[cls]()
    fresh = {k: v.clone() for k, v in module.named_buffers()}
    module(torch.randn(SHAPE[0], C, *SHAPE[2:]) * 3 + 1)
    assert any(not torch.equal(v, fresh[k]) for k, v in module.named_buffers())
    module.reset_running_stats()
    assert all(torch.equal(v, fresh[k]) for k, v in module.named_buffers())


# -------------------------------------------------------------------------------- imports

# normlib.layers.__all__ before the module became a package
FORMER_ALL = [
    "NORM_NAMES",
    "NormInfo",
    "norm_info",
    "register_norm",
    "make_norm",
    "make_conv",
    "make_activation",
    "conv_norm_act",
    "resolve_groups",
    "BatchNorm2d",
    "LayerNorm2d",
    "InstanceNorm2d",
    "GroupNorm2d",
    "FilterResponseNorm2d",
    "TLU",
    "VarianceNorm2d",
    "WNConv2d",
    "ScaledStdConv2d",
    "ScaledReLU",
    "EvoNormB0",
    "EvoNormS0",
    "NORM_MATTERS_NAMES",
    "L1_CONSTANT",
    "linf_constant",
    "L1BatchNorm2d",
    "LinfBatchNorm2d",
    "TopkBatchNorm2d",
    "MeanBatchNorm2d",
    "BWNConv2d",
]


def test_every_former_name_is_importable_from_the_package():
    assert sorted(layers.__all__) == sorted(FORMER_ALL)
    for name in [*FORMER_ALL, "EPS", "DEFAULT_GROUPS", "RELU_GAIN", "RELU_MEAN", "_REGISTRY", "_identity"]:
        exec(f"from normlib.layers import {name}", {})
        assert getattr(layers, name) is not None
    assert layers._REGISTRY is registry._REGISTRY


def test_every_public_class_and_function_is_defined_in_a_mechanism_module():
    for name in layers.__all__:
        obj = getattr(layers, name)
        if callable(obj):
            assert obj.__module__ in {
                f"normlib.layers.{m}" for m in ("batch", "group", "evonorm", "reparam", "registry")
            }, name
