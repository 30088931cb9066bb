"""Tests of normlib.layers: every normalizer against an independent reference formula
(plain tensor ops, float64) and against torch's own modules, plus the registry/factory."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlib.layers import (
    NORM_NAMES,
    TLU,
    BatchNorm2d,
    EvoNormB0,
    EvoNormS0,
    FilterResponseNorm2d,
    GroupNorm2d,
    InstanceNorm2d,
    LayerNorm2d,
    NormInfo,
    ScaledReLU,
    ScaledStdConv2d,
    VarianceNorm2d,
    WNConv2d,
    conv_norm_act,
    make_activation,
    make_conv,
    make_norm,
    norm_info,
    register_norm,
    registry,
)

EPS = 1e-5
C = 8
SHAPE = (6, C, 5, 4)
TIGHT = dict(rtol=1e-10, atol=1e-10)
GAIN = math.sqrt(2 * math.pi / (math.pi - 1))


@pytest.fixture
def x():
    torch.manual_seed(0)
    return 3 * torch.randn(SHAPE, dtype=torch.float64) + 1.5


def randomize(module):
    """Give every parameter non-trivial random values; returns the module in float64."""
    module = module.double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 + torch.rand(p.shape, generator=gen, dtype=p.dtype))
    return module


def per_channel(t):
    return t.view(1, -1, 1, 1)


def affine(y, m):
    return y * per_channel(m.weight) + per_channel(m.bias)


def standardize(x, dims, unbiased=False, eps=EPS):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    return (x - mean) / torch.sqrt(var + eps)


def grouped(fn, x, groups):
    """Apply ``fn`` to x viewed as (N, G, C/G, H, W), reducing over dims (2, 3, 4)."""
    n, c, h, w = x.shape
    return fn(x.reshape(n, groups, c // groups, h, w), (2, 3, 4)).reshape(n, c, h, w)


# ----------------------------------------------------------- layers vs reference formulas


def test_batchnorm_matches_formula(x):
    m = randomize(BatchNorm2d(C)).train()
    torch.testing.assert_close(m(x), affine(standardize(x, (0, 2, 3)), m), **TIGHT)


def test_layernorm_matches_formula(x):
    m = randomize(LayerNorm2d(C)).train()
    assert m.weight.shape == (C,)
    torch.testing.assert_close(m(x), affine(standardize(x, (1, 2, 3)), m), **TIGHT)


def test_instancenorm_matches_formula(x):
    m = randomize(InstanceNorm2d(C)).train()
    torch.testing.assert_close(m(x), affine(standardize(x, (2, 3)), m), **TIGHT)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_groupnorm_matches_formula(x, groups, unbiased):
    m = randomize(GroupNorm2d(C, groups=groups, unbiased=unbiased))
    expected = affine(grouped(lambda t, d: standardize(t, d, unbiased=unbiased), x, groups), m)
    torch.testing.assert_close(m(x), expected, **TIGHT)


def test_frn_matches_formula(x):
    m = randomize(FilterResponseNorm2d(C))
    with torch.no_grad():
        m.eps.fill_(-0.3)  # learnable eps enters through its absolute value
    nu2 = x.square().mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(m(x), affine(x / torch.sqrt(nu2 + 0.3), m), **TIGHT)


def test_tlu_matches_formula(x):
    m = randomize(TLU(C))
    torch.testing.assert_close(m(x), torch.max(x, per_channel(m.tau)), **TIGHT)


def test_variancenorm_matches_formula(x):
    m = randomize(VarianceNorm2d(C)).train()
    var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
    torch.testing.assert_close(m(x), affine(x / torch.sqrt(var + EPS), m), **TIGHT)


@pytest.mark.parametrize("unbiased", [True, False])
def test_evonorm_b0_matches_formula(x, unbiased):
    m = randomize(EvoNormB0(C, unbiased=unbiased)).train()
    batch_var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
    instance_var = x.var(dim=(2, 3), keepdim=True, unbiased=unbiased)
    den = torch.max(torch.sqrt(batch_var + EPS), per_channel(m.v) * x + torch.sqrt(instance_var + EPS))
    torch.testing.assert_close(m(x), affine(x / den, m), **TIGHT)


def test_evonorm_b0_without_activation_is_variance_norm(x):
    m = randomize(EvoNormB0(C, apply_act=False)).train()
    assert m.v is None
    var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
    torch.testing.assert_close(m(x), affine(x / torch.sqrt(var + EPS), m), **TIGHT)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("apply_act", [True, False])
def test_evonorm_s0_matches_formula(x, apply_act, unbiased):
    m = randomize(EvoNormS0(C, groups=2, apply_act=apply_act, unbiased=unbiased))

    def std(t, dims):
        return torch.sqrt(t.var(dim=dims, keepdim=True, unbiased=unbiased) + EPS).expand_as(t)

    group_std = grouped(std, x, 2)
    gate = torch.sigmoid(per_channel(m.v) * x) if apply_act else 1.0
    torch.testing.assert_close(m(x), affine(x * gate / group_std, m), **TIGHT)


def test_scaled_relu_matches_formula(x):
    expected = GAIN * (torch.clamp(x, min=0) - 1 / math.sqrt(2 * math.pi))
    torch.testing.assert_close(ScaledReLU()(x), expected, **TIGHT)


# --------------------------------------------------------------- layers vs torch modules


def copy_affine(dst, src):
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    return dst


def test_batchnorm_matches_torch_in_train_and_eval(x):
    m = randomize(BatchNorm2d(C))
    ref = copy_affine(nn.BatchNorm2d(C).double(), m)
    for step in range(3):
        batch = x * (step + 1) + step
        torch.testing.assert_close(m(batch), ref(batch), **TIGHT)
    torch.testing.assert_close(m.running_var, ref.running_var, **TIGHT)
    m.eval(), ref.eval()
    torch.testing.assert_close(m(x), ref(x), **TIGHT)


def test_layernorm_matches_torch(x):
    m = randomize(LayerNorm2d(C))
    torch.testing.assert_close(m(x), copy_affine(nn.GroupNorm(1, C).double(), m)(x), **TIGHT)
    plain = nn.LayerNorm(list(SHAPE[1:]), eps=EPS, elementwise_affine=False).double()
    torch.testing.assert_close(m(x), affine(plain(x), m), **TIGHT)


def test_instancenorm_matches_torch(x):
    m = randomize(InstanceNorm2d(C))
    ref = copy_affine(nn.InstanceNorm2d(C, affine=True).double(), m)
    torch.testing.assert_close(m(x), ref(x), **TIGHT)


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_biased_groupnorm_matches_torch(x, groups):
    m = randomize(GroupNorm2d(C, groups=groups, unbiased=False))
    ref = copy_affine(nn.GroupNorm(groups, C).double(), m)
    torch.testing.assert_close(m(x), ref(x), **TIGHT)


def test_groupnorm_ends_are_instance_and_layer_norm(x):
    gn_in = randomize(GroupNorm2d(C, group_size=1, unbiased=False))
    gn_ln = randomize(GroupNorm2d(C, groups=1, unbiased=False))
    torch.testing.assert_close(gn_in(x), copy_affine(InstanceNorm2d(C).double(), gn_in)(x), **TIGHT)
    torch.testing.assert_close(gn_ln(x), copy_affine(LayerNorm2d(C).double(), gn_ln)(x), **TIGHT)


def test_groupnorm_defaults_to_32_unbiased_groups():
    m = GroupNorm2d(64)
    assert (m.num_groups, m.unbiased) == (32, True)
    assert GroupNorm2d(64, group_size=4).num_groups == 16


def test_unbiased_groupnorm_rejects_groups_of_one_number():
    m = GroupNorm2d(C, group_size=1)
    with pytest.raises(ValueError, match=r"unbiased.*n = .* = 1"):
        m(torch.randn(2, C, 1, 1))


# ------------------------------------------------------------ running statistics (eval)


@pytest.mark.parametrize("cls, unbiased_feed", [(BatchNorm2d, True), (VarianceNorm2d, False), (EvoNormB0, False)])
def test_eval_uses_running_variance(cls, unbiased_feed, x):
    m = randomize(cls(C)).train()
    momentum = 0.1
    expected_running_var = torch.ones(C, dtype=torch.float64)
    for step in range(4):
        batch = x * (step + 1)
        m(batch)
        batch_var = batch.var(dim=(0, 2, 3), unbiased=unbiased_feed)
        expected_running_var = (1 - momentum) * expected_running_var + momentum * batch_var
    torch.testing.assert_close(m.running_var, expected_running_var, **TIGHT)

    m.eval()
    single = m(x[:1])
    torch.testing.assert_close(single, m(x)[:1], **TIGHT)  # batch-independent in eval
    frozen = m.running_var.clone()
    m(x)
    torch.testing.assert_close(m.running_var, frozen)


def test_variancenorm_eval_formula(x):
    m = randomize(VarianceNorm2d(C)).eval()
    with torch.no_grad():
        m.running_var.uniform_(0.5, 2.0)
    expected = affine(x / torch.sqrt(per_channel(m.running_var) + EPS), m)
    torch.testing.assert_close(m(x), expected, **TIGHT)


def test_evonorm_b0_eval_formula(x):
    m = randomize(EvoNormB0(C)).eval()
    with torch.no_grad():
        m.running_var.uniform_(0.5, 2.0)
    instance_std = torch.sqrt(x.var(dim=(2, 3), keepdim=True, unbiased=True) + EPS)
    den = torch.max(torch.sqrt(per_channel(m.running_var) + EPS), per_channel(m.v) * x + instance_std)
    torch.testing.assert_close(m(x), affine(x / den, m), **TIGHT)


# ------------------------------------------ conventions: the authors' layer_defs.py, or a stated departure
#
# The book reproduces Lubana et al.'s experiments, so each layer of their ``layer_defs.py`` either follows their code
# or states its departure in its docstring (and the chapter that uses it says so). One test per convention.


def authors_instance_std(x, eps=EPS):
    """``instance_std`` of the authors' code: torch.var (unbiased) over (H, W), zeroed when it is NaN."""
    var = torch.var(x, dim=(2, 3), keepdim=True).expand_as(x)
    if torch.isnan(var).any():
        var = torch.zeros_like(var)
    return torch.sqrt(var + eps)


def authors_group_std(x, groups, eps=EPS):
    """``group_std`` of the authors' code: torch.var (unbiased) over each sample's group."""
    n, c, h, w = x.shape
    g = x.reshape(n, groups, c // groups, h, w)
    return torch.sqrt(torch.var(g, dim=(2, 3, 4), keepdim=True).expand_as(g) + eps).reshape(n, c, h, w)


@pytest.mark.filterwarnings(r"ignore:var\(\)")  # the authors' torch.var on a 1x1 map warns
@pytest.mark.parametrize("spatial", [(2, 2), (5, 4), (1, 1)])
def test_evonorm_b0_follows_the_authors_unbiased_instance_std(spatial):
    torch.manual_seed(3)
    x = torch.randn(6, C, *spatial, dtype=torch.float64)
    m = EvoNormB0(C).double().train()  # gamma 1, beta 0, v 1: the authors' EvoNormBO at initialization
    batch_std = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + EPS)
    expected = x / torch.max(batch_std, x + authors_instance_std(x))
    torch.testing.assert_close(m(x), expected, **TIGHT)
    assert m.unbiased and "unbiased=True" in repr(m)
    if spatial == (2, 2):  # the biased convention is a different layer: 15 % on the std of 4 numbers
        biased = EvoNormB0(C, unbiased=False).double().train()(x)
        assert not torch.allclose(biased, m(x))


def test_evonorm_s0_follows_the_authors_unbiased_group_std():
    torch.manual_seed(4)
    x = torch.randn(3, 64, 2, 2, dtype=torch.float64)
    m = EvoNormS0(64).double()  # 32 groups, as the authors' default
    expected = x * torch.sigmoid(x) / authors_group_std(x, 32)
    torch.testing.assert_close(m(x), expected, **TIGHT)
    with pytest.raises(ValueError, match=r"unbiased EvoNorm-S0.*n = .* = 1"):
        EvoNormS0(C, group_size=1)(torch.randn(2, C, 1, 1))


def test_groupnorm_follows_the_authors_unbiased_group_std():
    torch.manual_seed(5)
    x = torch.randn(3, 64, 2, 2, dtype=torch.float64)
    m = GroupNorm2d(64).double()
    mean = x.reshape(3, 32, 2, 2, 2).mean(dim=(2, 3, 4), keepdim=True).expand(3, 32, 2, 2, 2).reshape(x.shape)
    torch.testing.assert_close(m(x), (x - mean) / authors_group_std(x, 32), **TIGHT)


@pytest.mark.parametrize("cls", [VarianceNorm2d, EvoNormB0])
def test_running_variance_is_fed_the_biased_batch_variance_as_the_authors(cls, x):
    m = cls(C).double().train()
    m(x)
    # the authors: moving_var <- 0.9 moving_var + 0.1 var(unbiased=False), starting at 1
    expected = 0.9 + 0.1 * x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(m.running_var, expected, **TIGHT)


def test_batchnorm_departs_from_the_authors_as_its_docstring_says(x):
    """torch's BatchNorm2d (running mean from 0, running variance fed the unbiased batch variance), not the
    authors' BN_self (running mean from 1, biased feed): only eval mode differs, and the docstring says so."""
    m = BatchNorm2d(C).double().train()
    assert torch.equal(m.running_mean, torch.zeros(C, dtype=torch.float64))
    m(x)
    n = SHAPE[0] * SHAPE[2] * SHAPE[3]
    torch.testing.assert_close(m.running_var, 0.9 + 0.1 * x.var(dim=(0, 2, 3), unbiased=False) * n / (n - 1))
    torch.testing.assert_close(m.running_mean, 0.1 * x.mean(dim=(0, 2, 3)))
    doc = " ".join(BatchNorm2d.__doc__.split())
    assert "Departure from the authors' code" in doc and "running *mean* starts at 1" in doc


@pytest.mark.parametrize("cls", [VarianceNorm2d, EvoNormB0])
def test_batch_variance_needs_two_values_per_channel_in_training(cls):
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        cls(C)(torch.randn(1, C, 1, 1))


# ---------------------------------------------------------------------- weight norms


def test_wn_effective_weight_has_filter_norm_g():
    conv = WNConv2d(4, 6, 3)
    with torch.no_grad():
        conv.gain.uniform_(0.5, 2.0)
    norms = torch.linalg.vector_norm(conv.effective_weight(), dim=(1, 2, 3))
    torch.testing.assert_close(norms, conv.gain, rtol=1e-4, atol=0)


def test_sws_effective_weight_is_standardized():
    conv = ScaledStdConv2d(4, 6, 3).double()
    fan_in = 4 * 9
    w = conv.weight
    sigma = w.std(dim=(1, 2, 3), unbiased=False)
    w_hat = conv.effective_weight()
    torch.testing.assert_close(w_hat.mean(dim=(1, 2, 3)), torch.zeros(6, dtype=torch.float64), **TIGHT)
    expected_std = GAIN / math.sqrt(fan_in) * sigma / (sigma + EPS)
    torch.testing.assert_close(w_hat.std(dim=(1, 2, 3), unbiased=False), expected_std, **TIGHT)
    nominal = torch.full_like(expected_std, GAIN / math.sqrt(fan_in))
    torch.testing.assert_close(expected_std, nominal, rtol=1e-3, atol=0)


@pytest.mark.parametrize("cls", [WNConv2d, ScaledStdConv2d])
def test_reparam_conv_forward_and_init(cls, x):
    torch.manual_seed(0)
    conv = randomize(cls(C, 16, 3, stride=2))
    expected = F.conv2d(x, conv.effective_weight(), conv.bias, stride=2, padding=1)
    torch.testing.assert_close(conv(x), expected, **TIGHT)
    conv.reset_parameters()
    assert torch.all(conv.gain == 1) and torch.all(conv.bias == 0)
    fan_in = C * 9
    assert abs(conv.weight.std().item() - math.sqrt(2 / fan_in)) < 0.1 * math.sqrt(2 / fan_in)


def test_scaled_relu_standardizes_a_gaussian():
    z = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = ScaledReLU()(z)
    assert abs(y.mean().item()) < 0.01
    assert abs(y.var().item() - 1) < 0.01


# ------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", NORM_NAMES)
@pytest.mark.parametrize("act", [True, False])
def test_gradients_flow(name, act):
    torch.manual_seed(0)
    block = conv_norm_act(name, 3, 32, act=act).double()
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    block(x).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_frn_eps_is_learned(x):
    m = FilterResponseNorm2d(C).double()
    m(x).sum().backward()
    assert isinstance(m.eps, nn.Parameter) and m.eps.grad is not None


# ----------------------------------------------------------------- registry and factory


def test_norm_names_and_info():
    assert NORM_NAMES == ("none", "bn", "ln", "in", "gn", "frn", "vn", "wn", "sws", "evo_b0", "evo_s0")
    families = {name: norm_info(name).family for name in NORM_NAMES}
    assert families["none"] == "none"
    assert {n for n, f in families.items() if f == "parametric"} == {"wn", "sws"}
    assert all(norm_info(n).placement == "in_conv" for n in ("wn", "sws"))
    assert all(norm_info(n).placement == "replaces_activation" for n in ("evo_b0", "evo_s0"))
    assert norm_info("gn").title == "GroupNorm" and norm_info("bn").name == "bn"


EXPECTED = {
    "none": (nn.Identity, nn.Conv2d, nn.ReLU),
    "bn": (BatchNorm2d, nn.Conv2d, nn.ReLU),
    "ln": (LayerNorm2d, nn.Conv2d, nn.ReLU),
    "in": (InstanceNorm2d, nn.Conv2d, nn.ReLU),
    "gn": (GroupNorm2d, nn.Conv2d, nn.ReLU),
    "frn": (FilterResponseNorm2d, nn.Conv2d, TLU),
    "vn": (VarianceNorm2d, nn.Conv2d, nn.ReLU),
    "wn": (nn.Identity, WNConv2d, ScaledReLU),
    "sws": (nn.Identity, ScaledStdConv2d, nn.ReLU),
    "evo_b0": (EvoNormB0, nn.Conv2d, nn.Identity),
    "evo_s0": (EvoNormS0, nn.Conv2d, nn.Identity),
}


@pytest.mark.parametrize("name", NORM_NAMES)
def test_factories_build_every_name(name):
    norm_cls, conv_cls, act_cls = EXPECTED[name]
    assert type(make_norm(name, 64)) is norm_cls
    conv = make_conv(name, 3, 64)
    assert type(conv) is conv_cls and conv.padding == (1, 1)
    assert make_conv(name, 3, 64, kernel_size=5, stride=2).padding == (2, 2)
    assert make_conv(name, 3, 64, kernel_size=1, padding=0).padding == (0, 0)
    assert (conv.bias is not None) == (name in ("wn", "sws"))
    assert type(make_activation(name, 64)) is act_cls
    assert repr(make_norm(name, 64)) and repr(conv) and repr(make_activation(name, 64))


@pytest.mark.parametrize("name", NORM_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_norm_act_shapes(name, stride):
    block = conv_norm_act(name, 3, 32, stride=stride)
    assert list(dict(block.named_children())) == ["conv", "norm", "act"]
    assert block(torch.randn(2, 3, 8, 8)).shape == (2, 32, 8 // stride, 8 // stride)


def test_conv_norm_act_without_activation():
    assert list(dict(conv_norm_act("bn", 3, 8, act=False).named_children())) == ["conv", "norm"]
    assert type(conv_norm_act("frn", 3, 8, act=False).norm) is FilterResponseNorm2d
    for name in ("evo_b0", "evo_s0"):
        assert conv_norm_act(name, 3, 32, act=False).norm.apply_act is False
    assert type(conv_norm_act("wn", 3, 8, act=False).norm) is nn.Identity


def test_make_norm_passes_options():
    m = make_norm("gn", 16, group_size=4, eps=1e-3, unbiased=False)
    assert (m.num_groups, m.eps, m.unbiased) == (4, 1e-3, False)
    assert make_norm("bn", 16, momentum=0.2).momentum == 0.2
    assert make_norm("evo_s0", 16, groups=4, apply_act=False).v is None


def test_unknown_name_lists_valid_names():
    valid = "none, bn, ln, in, gn, frn, vn, wn, sws, evo_b0, evo_s0"
    with pytest.raises(ValueError, match=rf"name='batchnorm'.*valid names: {valid}"):
        make_norm("batchnorm", 8)
    for factory in (norm_info, lambda n: make_activation(n, 8), lambda n: make_conv(n, 3, 8)):
        with pytest.raises(ValueError, match="valid names"):
            factory("nope")


@pytest.mark.parametrize(
    "name, opts, allowed",
    [
        ("bn", {"groups": 2}, "eps, momentum, track_running_stats"),
        ("ln", {"momentum": 0.1}, "eps"),
        ("gn", {"momentum": 0.1}, "groups, group_size, eps, unbiased"),
        ("frn", {"unbiased": True}, "eps"),
        ("evo_b0", {"groups": 2}, "eps, momentum, apply_act, track_running_stats, unbiased"),
        ("evo_s0", {"momentum": 0.1}, "groups, group_size, eps, apply_act, unbiased"),
        ("wn", {"eps": 1e-3}, r"\(none\)"),
    ],
)
def test_unknown_option_names_it_and_the_allowed_ones(name, opts, allowed):
    (option,) = opts
    with pytest.raises(ValueError, match=rf"unknown option {option} .*allowed options: {allowed}$"):
        make_norm(name, 8, **opts)


@pytest.mark.parametrize("name", ["gn", "evo_s0"])
def test_group_options_are_validated(name):
    with pytest.raises(ValueError, match=r"group_size=3 .*num_channels=8; valid group sizes: 1, 2, 4, 8$"):
        make_norm(name, 8, group_size=3)
    valid_groups = "valid groups: 1, 2, 3, 4, 6, 12$"
    with pytest.raises(ValueError, match=rf"groups=5 .*num_channels=12; {valid_groups}") as err:
        make_norm(name, 12, groups=5)
    assert "default" not in str(err.value)
    with pytest.raises(ValueError, match=r"groups=32 \(the default\) .*valid groups: 1, 2, 4, 8, 16$"):
        make_norm(name, 16)
    with pytest.raises(ValueError, match=r"either groups or group_size, not both"):
        make_norm(name, 8, groups=2, group_size=4)
    with pytest.raises(ValueError, match=r"groups=0 "):
        make_norm(name, 8, groups=0)


@pytest.mark.parametrize("channels", [0, -4, 2.0])
def test_channels_must_be_positive_int(channels):
    with pytest.raises(ValueError, match=r"channels must be a positive integer"):
        make_norm("bn", channels)
    with pytest.raises(ValueError, match=r"channels must be a positive integer"):
        make_activation("frn", channels)
    with pytest.raises(ValueError, match=r"out_channels must be a positive integer"):
        make_conv("wn", 3, channels)


def test_conv_norm_act_rejects_apply_act():
    with pytest.raises(ValueError, match="apply_act"):
        conv_norm_act("evo_b0", 3, 8, apply_act=False)


def test_norm_info_validates_its_fields():
    with pytest.raises(ValueError, match="family must be one of none, activation, parametric"):
        NormInfo("x", "X", "weights", "after_conv")
    with pytest.raises(ValueError, match="placement must be one of after_conv, replaces_activation, in_conv"):
        NormInfo("x", "X", "activation", "before_conv")


class RMSNorm2d(nn.Module):
    """A user normalizer: y = x / sqrt(E_{C,H,W}[x^2] + eps)."""

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(dim=(1, 2, 3), keepdim=True) + self.eps)


def test_register_norm_adds_a_custom_normalizer(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored after the test
    register_norm(NormInfo("rms", "RMSNorm", "activation", "after_conv"), RMSNorm2d)
    assert norm_info("rms").title == "RMSNorm"
    assert make_norm("rms", 8, eps=1e-3).eps == 1e-3
    with pytest.raises(ValueError, match="allowed options: eps"):
        make_norm("rms", 8, groups=2)
    block = conv_norm_act("rms", 3, 8)
    assert type(block.norm) is RMSNorm2d and type(block.act) is nn.ReLU
    assert NORM_NAMES[-1] == "evo_s0"  # NORM_NAMES stays the paper's set
    with pytest.raises(ValueError, match="valid names: .*evo_s0, .*, rms$"):
        make_norm("nope", 8)


def test_register_norm_checks_placement_requirements(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="conv_factory is required"):
        register_norm(NormInfo("c", "C", "parametric", "in_conv"), registry._identity)
    with pytest.raises(ValueError, match="must accept apply_act"):
        register_norm(NormInfo("e", "E", "activation", "replaces_activation"), RMSNorm2d)


# ---------------------------------------------------------------------- module basics


ALL_MODULES = [
    lambda: BatchNorm2d(C),
    lambda: LayerNorm2d(C),
    lambda: InstanceNorm2d(C),
    lambda: GroupNorm2d(C, groups=2),
    lambda: FilterResponseNorm2d(C),
    lambda: TLU(C),
    lambda: VarianceNorm2d(C),
    lambda: EvoNormB0(C),
    lambda: EvoNormS0(C, group_size=4),
    lambda: WNConv2d(C, C, 3),
    lambda: ScaledStdConv2d(C, C, 3),
]


@pytest.mark.parametrize("build", ALL_MODULES)
def test_reset_parameters_restores_init(build):
    fresh = build()
    changed = randomize(build()).float()
    changed.reset_parameters()
    for (name, p), q in zip(changed.named_parameters(), fresh.parameters()):
        if name != "weight" or not isinstance(fresh, nn.Conv2d):  # conv weights are random
            torch.testing.assert_close(p, q, msg=name)


def test_extra_repr_shows_the_settings():
    assert repr(GroupNorm2d(C, group_size=2)) == "GroupNorm2d(8, groups=4, eps=1e-05, unbiased=True)"
    assert repr(LayerNorm2d(C)) == "LayerNorm2d(8, eps=1e-05)"
    assert repr(FilterResponseNorm2d(C)) == "FilterResponseNorm2d(8, eps_init=1e-05)"
    assert repr(TLU(C)) == "TLU(8)"
    assert repr(VarianceNorm2d(C)) == "VarianceNorm2d(8, eps=1e-05, momentum=0.1)"
    evo_b0 = "EvoNormB0(8, eps=1e-05, momentum=0.1, apply_act=False, unbiased=True)"
    assert repr(EvoNormB0(C, apply_act=False)) == evo_b0
    assert repr(EvoNormS0(C, groups=2)) == "EvoNormS0(8, groups=2, eps=1e-05, apply_act=True, unbiased=True)"
    assert "eps=1e-05" in repr(WNConv2d(3, C, 3)) and "eps=1e-05" in repr(ScaledStdConv2d(3, C, 3))
    assert repr(ScaledReLU()) == "ScaledReLU()"


@pytest.mark.parametrize("build", ALL_MODULES[4:9])
def test_custom_norms_reject_non_4d_input(build):
    with pytest.raises(ValueError, match=r"expects a 4D \(N, C, H, W\) input"):
        build()(torch.randn(2, C, 5))


# --- RMSNorm (chapter 04) ----------------------------------------------------------------------------------------


def test_rmsnorm_matches_its_formula():
    """y = x / sqrt(mean over (C, H, W) of x^2 + eps) * gain_c, written out in float64."""
    from normlib.layers import RMSNorm2d

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 5, 4, 6, generator=gen) * 3 + 1).double()
    layer = RMSNorm2d(5, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1, 6, dtype=torch.float64))
    expected = torch.empty_like(x)
    for n in range(3):
        rms = math.sqrt(float((x[n] ** 2).sum()) / x[n].numel() + 1e-5)
        for c in range(5):
            expected[n, c] = x[n, c] / rms * (c + 1)
    torch.testing.assert_close(layer(x), expected)
    layer.eval()
    torch.testing.assert_close(layer(x), expected)  # no running statistics


def test_rmsnorm_conventions_and_registry():
    from normlib.layers import RMSNorm2d

    layer = RMSNorm2d(4, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and "4, eps=1e-05" in repr(layer)
    with torch.no_grad():
        layer.weight.mul_(3)
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(4, dtype=torch.float64))
    assert norm_info("rms").title == "RMSNorm" and norm_info("rms").family == "activation"
    assert isinstance(make_norm("rms", 8, device="cpu"), RMSNorm2d)
    assert "rms" not in NORM_NAMES  # NORM_NAMES stays the paper's set
    with pytest.raises(ValueError, match="num_channels"):
        RMSNorm2d(0)
