"""Tests for normlib.probes: each metric on inputs with known answers, the hook machinery, and the per-channel
recorder of scale-invariant weights during training."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normlib import data, probes
from normlib.models import make_cnn, make_resnet
from normlib.optim import SGDWDMimic, channel_norms
from normlib.probes import (
    METRICS,
    ChannelRecorder,
    Probe,
    activation_std,
    activation_variance,
    mean_cosine_similarity,
    probe_model,
    second_moment,
    stable_rank,
)
from normlib.train import TrainConfig, train


def equicorrelated(n, rho):
    """n unit vectors with every pairwise cosine equal to rho: sqrt(rho) u + sqrt(1-rho) e_i."""
    x = math.sqrt(1 - rho) * torch.eye(n, n + 1, dtype=torch.float64)
    x[:, n] = math.sqrt(rho)
    return x


# ----------------------------------------------------------------------------- pure metrics


def test_identical_samples_have_cosine_one_and_stable_rank_one():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 5).expand(8, -1, -1, -1) * torch.linspace(0.5, 3, 8).view(8, 1, 1, 1)
    assert mean_cosine_similarity(x) == pytest.approx(1, abs=1e-6)
    assert stable_rank(x) == pytest.approx(1, abs=1e-6)


def test_orthogonal_samples_have_cosine_zero_and_full_stable_rank():
    n = 6
    x = (3 * torch.eye(n)).reshape(n, n, 1, 1)  # one-hot rows, any scale
    assert mean_cosine_similarity(x) == pytest.approx(0, abs=1e-12)
    assert stable_rank(x) == pytest.approx(n)


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9])
def test_equal_pairwise_cosines_give_papers_stable_rank_identity(rho):
    n = 10
    x = equicorrelated(n, rho)
    assert mean_cosine_similarity(x) == pytest.approx(rho)
    assert stable_rank(x) == pytest.approx(n / (1 + (n - 1) * rho))  # equal pairwise correlation rho


def test_all_zero_sample_counts_as_orthogonal():
    x = torch.zeros(4, 4)
    x[1:, 1:] = torch.eye(3)
    assert mean_cosine_similarity(x) == pytest.approx(0)
    assert stable_rank(x) == pytest.approx(3)


def test_activation_variance_and_std_with_known_channel_variances():
    n, c, h, w = 4, 3, 4, 4
    count = n * h * w
    signs = torch.tensor([1.0, -1.0]).repeat(count // 2).reshape(n, 1, h, w)  # mean 0, Σx² = count
    scales = torch.tensor([1.0, 2.0, 5.0])
    x = signs * scales.view(1, c, 1, 1) + torch.tensor([0.0, 100.0, -7.0]).view(1, c, 1, 1)
    unbiased = count / (count - 1)
    assert activation_variance(x) == pytest.approx((scales**2).mean().item() * unbiased)
    assert activation_std(x) == pytest.approx(scales.mean().item() * math.sqrt(unbiased))


def test_variance_matches_torch_on_offset_data():
    torch.manual_seed(0)
    x = torch.randn(16, 5, 6, 6) * torch.tensor([0.1, 1, 3, 10, 0.5]).view(1, 5, 1, 1) + 1000
    ref = x.double().var(dim=(0, 2, 3))  # a mean 10^4 x the std must not cost precision
    assert activation_variance(x) == pytest.approx(ref.mean().item(), rel=1e-6)
    assert activation_std(x) == pytest.approx(ref.sqrt().mean().item(), rel=1e-6)
    flat = torch.randn(32, 7)  # (N, C) features: variance over the batch
    assert activation_variance(flat) == pytest.approx(flat.var(dim=0).mean().item(), rel=1e-5)


def test_second_moment():
    assert second_moment(torch.full((3, 2, 4, 4), -2.5)) == pytest.approx(6.25)
    x = torch.randn(5, 3, 2, 2)
    assert second_moment(x) == pytest.approx(x.square().mean().item(), rel=1e-6)


def test_cosine_and_stable_rank_match_the_papers_formula_on_random_data():
    torch.manual_seed(0)
    x = torch.randn(12, 3, 4, 4).abs()  # post-ReLU-like: positive cosines
    xh = x.reshape(12, -1).double()
    xh = xh / xh.norm(dim=1, keepdim=True)
    m = xh @ xh.T
    assert mean_cosine_similarity(x) == pytest.approx(((m.sum(1) - 1) / 11).mean().item(), abs=1e-6)
    assert stable_rank(x) == pytest.approx(12 / torch.linalg.eigvalsh(m)[-1].item(), rel=1e-6)


# ----------------------------------------------------------------------------- hooks


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))


def points(net):
    return [("conv", net[0]), ("relu", net[1]), ("out", net[2])]


def test_frame_columns_and_values_match_the_pure_functions():
    net = tiny_net()
    seen = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach()))
        for name, m in points(net)
    ]
    x = torch.randn(5, 2, 4, 4)
    with torch.no_grad(), Probe(points(net), metrics=("variance", "second_moment", "cosine", "std")) as probe:
        net(x)
    df = probe.frame()
    for h in hooks:
        h.remove()
    assert list(df.columns) == ["point", "index", "metric", "value"]
    assert len(df) == 3 * 4
    assert df.groupby("point")["index"].first().to_dict() == {"conv": 0, "relu": 1, "out": 2}
    value = df.set_index(["point", "metric"])["value"]
    for name, out in seen.items():
        assert value[name, "variance"] == pytest.approx(activation_variance(out))
        assert value[name, "second_moment"] == pytest.approx(second_moment(out))
        assert value[name, "cosine"] == pytest.approx(mean_cosine_similarity(out))
        assert value[name, "std"] == pytest.approx(activation_std(out))


def test_step_column_when_set():
    net = tiny_net()
    with torch.no_grad(), Probe(points(net)) as probe:
        for step in (10, 20):
            probe.step = step
            net(torch.randn(3, 2, 4, 4))
    df = probe.frame()
    assert list(df.columns) == ["point", "index", "metric", "value", "step"]
    assert df["step"].tolist() == [10] * 3 + [20] * 3


def test_grad_norm_is_the_frobenius_norm_of_the_output_gradient():
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 3, 3, padding=1)
    c = torch.randn(4, 3, 5, 5)
    df = probe_model(
        layer,
        torch.randn(4, 2, 5, 5),
        metrics="grad_norm",
        points=[("conv", layer)],
        loss_fn=lambda out, target: (out * c).sum(),
    )
    assert df["metric"].tolist() == ["grad_norm"]
    assert df["value"].item() == pytest.approx(torch.linalg.vector_norm(c).item(), rel=1e-6)
    assert layer.weight.grad is None  # probe_model differentiates without touching .grad


def test_grad_norm_during_training_backward():
    net = tiny_net()
    c = torch.randn(3, 2, 4, 4)
    with Probe([("out", net[2])], metrics=("grad_norm",)) as probe:
        (net(torch.randn(3, 2, 4, 4)) * c).sum().backward()
    assert probe.frame()["value"].tolist() == pytest.approx([torch.linalg.vector_norm(c).item()])


def test_hooks_are_removed_on_exit():
    net = tiny_net()
    with Probe(points(net), metrics=("variance", "grad_norm")) as probe:
        assert all(len(m._forward_hooks) == 1 for _, m in points(net))
        net(torch.randn(2, 2, 4, 4)).sum().backward()
    assert all(len(m._forward_hooks) == 0 for _, m in points(net))
    before = len(probe.frame())
    net(torch.randn(2, 2, 4, 4)).sum().backward()
    assert len(probe.frame()) == before == 6


def test_every_samples_every_kth_forward():
    net = tiny_net()
    with torch.no_grad(), Probe(points(net), metrics=("variance", "cosine"), every=2) as probe:
        for step in range(5):
            probe.step = step
            net(torch.randn(3, 2, 4, 4))
    df = probe.frame()
    assert len(df) == 3 * 3 * 2  # forwards 0, 2, 4; three points; two metrics
    assert sorted(df["step"].unique()) == [0, 2, 4]
    probe.reset()
    assert probe.frame().empty


def test_unknown_metric_and_bad_every():
    with pytest.raises(ValueError, match="variance, std, second_moment, cosine, stable_rank, grad_norm"):
        Probe([], metrics=("variance", "kurtosis"))
    with pytest.raises(ValueError, match="every"):
        Probe([], every=0)
    with pytest.raises(ValueError, match="target"):
        net = tiny_net()
        probe_model(net, torch.randn(2, 2, 4, 4), metrics=("grad_norm",), points=points(net))
    assert set(METRICS) == {"variance", "std", "second_moment", "cosine", "stable_rank", "grad_norm"}


def test_probe_model_on_a_resnet_records_every_point_in_forward_order():
    model = make_resnet(20, (8, 16, 32))
    x = torch.randn(6, 3, 8, 8)
    df = probe_model(model, x, metrics=METRICS, target=torch.randint(0, 100, (6,)), step=0)
    assert len(df) == 10 * len(METRICS)
    forward = df[df.metric == "variance"]
    assert forward["point"].tolist() == ["stem"] + [f"block{i}" for i in range(1, 10)]
    assert forward["index"].tolist() == list(range(10))
    grads = df[df.metric == "grad_norm"].sort_values("index")
    assert len(grads) == 10 and (grads["value"] > 0).all()
    assert (df["step"] == 0).all() and df["value"].notna().all()
    assert all(p.grad is None for p in model.parameters())


def test_probe_model_on_cnn_conv_points():
    model = make_cnn("cfg_10", width=4)
    df = probe_model(model, torch.randn(4, 3, 32, 32), metrics=("std", "stable_rank"), points=model.conv_points())
    assert df["point"].unique().tolist() == [f"conv{i}" for i in range(1, 11)]
    stable = df[df.metric == "stable_rank"]["value"]
    assert ((stable >= 1 - 1e-9) & (stable <= 4 + 1e-9)).all()


def test_no_record_is_lost_across_batched_flushes(monkeypatch):
    monkeypatch.setattr(probes, "_FLUSH_EVERY", 4)
    net = tiny_net()
    with torch.no_grad(), Probe(points(net), metrics=("variance",)) as probe:
        for step in range(3):
            probe.step = step
            net(torch.randn(2, 2, 4, 4))
    df = probe.frame()
    assert df["step"].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert df["point"].tolist() == ["conv", "relu", "out"] * 3


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9])
def test_stable_rank_power_iteration_matches_the_exact_eigenvalue(rho):
    """The fast path (power iteration) against the Gram matrix's exact top eigenvalue."""
    torch.manual_seed(0)
    shared = torch.randn(1, 4, 12, 12)
    x = torch.relu(rho**0.5 * shared + (1 - rho) ** 0.5 * torch.randn(64, 4, 12, 12))
    flat = x.reshape(64, -1).double()
    unit = flat / flat.norm(dim=1, keepdim=True)
    exact = 64 / torch.linalg.eigvalsh(unit @ unit.T)[-1].item()
    assert stable_rank(x) == pytest.approx(exact, rel=1e-5)


# ----------------------------------------------------------------------------- channel recorder


def recorded_run(record_every=1, optimizer="sgd", momentum=0.0, **recorder_options):
    """Four steps (2 epochs of 2 batches) of a seeded two-unit BatchNorm CNN with a ChannelRecorder; returns the
    recorder, the model and the training result."""
    torch.manual_seed(0)
    model = make_cnn([4, (6, 2)], norm="bn", in_channels=3, num_classes=4)
    units = [(f"conv{i}", unit.conv, unit.norm) for i, unit in enumerate(model.units, 1)]
    recorder = ChannelRecorder(units, record_every, steps_per_epoch=2, **recorder_options)

    def factory(net, cfg):
        recorder.start()
        if optimizer == "sgd":
            return torch.optim.SGD(net.parameters(), lr=cfg.peak_lr, momentum=momentum)
        weights = [conv.weight for _, conv, _ in units]
        rest = [p for p in net.parameters() if all(p is not w for w in weights)]
        opt = SGDWDMimic([{"params": weights, "correct": True}, {"params": rest}], lr=cfg.peak_lr, momentum=momentum)
        opt.set_reference_norms([2 * channel_norms(w) for w in weights])
        return opt

    dataset = data.load_dataset("synthetic", shape=(3, 8, 8), num_classes=4, size=32, seed=0)
    config = TrainConfig(
        lr=0.1,
        lr_scale_with_batch=False,
        batch_size=16,
        epochs=2,
        schedule="constant",
        momentum=momentum,
        weight_decay=0.0,
        augment=False,
    )
    result = train(model, dataset, config=config, optimizer_factory=factory, on_step=recorder)
    recorder.close()
    return recorder, model, result


def test_channel_recorder_records_each_channels_step():
    recorder, model, result = recorded_run(bn_terms=True, reference="step")
    frame = recorder.frame()
    assert len(frame) == 4 * (4 + 6) and frame.groupby("layer").size().to_dict() == {"conv1": 16, "conv2": 24}
    assert list(frame.columns[:3]) == ["step", "layer", "channel"]
    conv2 = frame[frame.layer == "conv2"].set_index(["step", "channel"])
    # the weights after step t are the weights before step t + 1, and the last ones are the model's
    after = conv2["norm_sq_after"].unstack().to_numpy()
    before = conv2["norm_sq_before"].unstack().to_numpy()
    assert (after[:-1] == before[1:]).all()
    final = model.units[1].conv.weight.detach().double().reshape(6, -1).pow(2).sum(1).numpy()
    assert after[-1] == pytest.approx(final, rel=1e-12)
    # plain SGD: ||w - eta g||^2 = ||w||^2 - 2 eta <w, g> + eta^2 ||g||^2, up to float32 rounding of the weights
    eta = conv2["lr"]
    predicted = conv2["norm_sq_before"] - 2 * eta * conv2["w_dot_g"] + eta**2 * conv2["grad_sq"]
    assert (conv2["norm_sq_after"] / predicted - 1).abs().max() < 1e-6
    # the chord is 2 sin(theta/2) for the angle theta of the step: tan(theta) = eta ||g_perp|| / (||w|| - eta <w, g>
    # / ||w||), g_perp the part of g orthogonal to w (float32 rounding of w_{t+1} moves it by ~1e-7 / theta)
    norm = np.sqrt(conv2["norm_sq_before"])
    g_perp = np.sqrt(conv2["grad_sq"] - conv2["w_dot_g"] ** 2 / conv2["norm_sq_before"])
    theta = np.arctan2(eta * g_perp, norm - eta * conv2["w_dot_g"] / norm)
    assert (conv2["chord"] / (2 * np.sin(theta / 2)) - 1).abs().max() < 1e-4
    assert frame["lr"].to_numpy() == pytest.approx(0.1) and (frame["step_scale"] == 1).all()
    assert frame["buffer_sq"].isna().all()  # no momentum
    assert (frame["bn_variance"] > 0).all() and frame["gain_grad"].notna().all()
    assert result.history["step"].tolist() == [0, 1, 2, 3]
    # the norms before every step, and after the last
    assert len(recorder.reference_norms) == 5
    assert torch.equal(recorder.reference_norms[-1][1], channel_norms(model.units[1].conv.weight))
    assert not model.units[0].conv._forward_hooks  # closed


def test_channel_recorder_every_kth_step_matches_recording_every_step():
    every, _, _ = recorded_run(record_every=1, momentum=0.9)
    sparse, _, _ = recorded_run(record_every=2, momentum=0.9, reference="epoch")
    full = every.frame()
    pd.testing.assert_frame_equal(sparse.frame(), full[full.step.isin([0, 2])].reset_index(drop=True), check_exact=True)
    assert full["buffer_sq"].gt(0).all() and "bn_variance" not in full
    assert len(sparse.reference_norms) == 2  # after each of the two epochs
    assert every.reference_norms == []


def test_channel_recorder_reads_the_corrections_step_scale():
    recorder, _, _ = recorded_run(optimizer="mimic", momentum=0.9)
    frame = recorder.frame()
    first = frame[frame.step == 0]
    assert first["step_scale"].to_numpy() == pytest.approx(0.25, rel=1e-6)  # reference norms twice the initial ones
    assert (frame["step_scale"] != 1).all() and frame["chord"].gt(0).all()
    with pytest.raises(ValueError, match="reference"):
        ChannelRecorder([], reference="batch")
