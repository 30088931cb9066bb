"""Notebook 07's experiment (Hoffer et al. 2018, weight decay and the effective learning rate): the paper preset,
validation, the multistep schedule and training hooks it needs, VGG-11, the correction optimizer, a tiny
measurement, claims that can fail, and the notebook run."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from normlib import data, models, presets, theory
from normlib.experiments import weight_decay as wd
from normlib.optim import SGDWDMimic, channel_norms
from normlib.params import ParameterError
from normlib.train import TrainConfig, lr_at, train

TINY = dict(dataset="synthetic", subset=96, test_subset=32, batch_size=32, epochs=2, lr_milestones=[1],
            repeats=2, sgd_steps=4, invariance_batch=8, invariance_scales=[0.1, 4.0], width=4)


# -- the paper preset ---------------------------------------------------------------------------------------------

def test_paper_preset_is_the_papers_setup():
    config = wd.resolve("paper")
    assert config["arch"] == "vgg" and config["width"] == 64 and config["dataset"] == "cifar10"
    assert config["subset"] is None and config["batch_size"] == 128 and config["epochs"] == 80
    assert config["lr"] == 0.1 and config["lr_scale_with_batch"] is False and config["momentum"] == 0.9
    assert config["schedule"] == "multistep" and config["lr_milestones"] == [20, 40, 60]
    assert config["lr_decay"] == 0.1 and config["weight_decay"] == 5e-4 and config["seed"] == 2019
    assert config["device"] == "auto" and config["init"] == "torch" and config["correction_interval"] == "epoch"
    tc = presets.train_config(config)
    assert tc.peak_lr == pytest.approx(0.1) and tc.epochs == 80 and tc.lr_milestones == (20, 40, 60)
    steps = 391  # ceil(50000 / 128)
    lrs = [lr_at(t, 80 * steps, 0, tc.peak_lr, tc.schedule, [m * steps for m in tc.lr_milestones], tc.lr_decay)
           for t in (0, 20 * steps - 1, 20 * steps, 40 * steps, 60 * steps, 80 * steps - 1)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001, 1e-4, 1e-4])


def test_paper_groups_put_weight_decay_on_the_last_layer_only():
    model = wd.build_network(wd.resolve("paper"), 3, 10, seed=0)
    assert len(wd.invariant_units(model)) == 8  # VGG-11: eight conv-BN units
    groups = wd._param_groups(model, "wd_off", 5e-4)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert {id(p) for p in decayed} == {id(model.classifier.weight), id(model.classifier.bias)}
    corrected = wd._param_groups(model, "corrected", 5e-4)
    assert [len(g["params"]) for g in corrected if g.get("correct")] == [8]
    assert sum(len(g["params"]) for g in corrected) == len(list(model.parameters()))


def test_paper_runs_a_few_steps_on_cifar_shaped_data():
    config = wd.resolve("paper", device="cpu", dataset="synthetic", max_steps=2, width=8, record_every=1)
    train_set = data.load_dataset("synthetic", size=16, seed=0)
    test_set = data.load_dataset("synthetic", split="test", size=8, seed=0)
    on = wd.train_run(config, "wd_on", 0, train_set, test_set)
    corrected = wd.train_run(config, "corrected", 0, train_set, test_set, on["reference"])
    assert on["steps"] == corrected["steps"] == 2 and not corrected["diverged"]


# -- validation ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, match", [
    ({"weight_decay": 0.0}, r"parameter 'weight_decay'.*positive"),
    ({"invariance_scales": [1.0, 0.0]}, r"parameter 'invariance_scales'.*positive"),
    ({"arch": "resnet"}, r"parameter 'arch'.*cnn, vgg"),
    ({"arch": "vgg"}, r"parameter 'arch'.*32x32"),
    ({"correction_interval": "batch"}, r"parameter 'correction_interval'.*step, epoch"),
    ({"lr_milestones": [3, 2]}, r"parameter 'lr_milestones'.*strictly increasing"),
    ({"schedule": "paper"}, r"parameter 'lr_milestones'.*multistep"),
    ({"lr_decay": 1.5}, r"parameter 'lr_decay'"),
    ({"repeats": 0}, r"parameter 'repeats'"),
])
def test_invalid_parameters(overrides, match):
    with pytest.raises(ParameterError, match=match):
        wd.resolve("book", **overrides)


# -- the shared pieces: multistep schedule, training hooks, VGG, the correction optimizer -------------------------

def test_multistep_schedule_multiplies_at_each_milestone():
    assert [lr_at(t, 100, 0, 1.0, "multistep", [10, 20], 0.5) for t in (0, 9, 10, 19, 20, 99)] == \
        pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    assert lr_at(2, 100, 4, 1.0, "multistep", [1], 0.1) == pytest.approx(0.5)  # the warm-up comes first
    config = TrainConfig(schedule="multistep", lr_milestones=[1], lr_decay=0.1, lr=0.4, lr_scale_with_batch=False,
                         batch_size=16, epochs=2, augment=False)
    tiny = data.load_dataset("synthetic", shape=(3, 8, 8), num_classes=4, size=32)
    history = train(models.make_cnn([4], norm="bn", in_channels=3, num_classes=4), tiny, config=config).history
    assert history["lr"].tolist() == pytest.approx([0.4, 0.4, 0.04, 0.04])
    assert TrainConfig(lr_milestones=[]).lr_milestones == ()
    with pytest.raises(ParameterError, match="lr_milestones"):
        TrainConfig(schedule="constant", lr_milestones=[2])


def test_train_hooks_replace_the_optimizer_and_see_every_step():
    tiny = data.load_dataset("synthetic", shape=(3, 8, 8), num_classes=4, size=32)
    model = models.make_cnn([4], norm="bn", in_channels=3, num_classes=4)
    seen = []

    def factory(net, cfg):
        return torch.optim.SGD([{"params": list(net.parameters()), "lr_scale": 0.5}], lr=cfg.peak_lr)

    def on_step(step, net, optimizer):
        seen.append((step, optimizer.param_groups[0]["lr"], net.units[0].conv.weight.grad is not None))

    config = TrainConfig(lr=0.2, lr_scale_with_batch=False, batch_size=16, epochs=1, schedule="constant",
                         momentum=0.0, augment=False)
    train(model, tiny, config=config, optimizer_factory=factory, on_step=on_step)
    assert seen == [(0, pytest.approx(0.1), True), (1, pytest.approx(0.1), True)]


def test_vgg11_is_the_papers_network():
    model = models.build_model("vgg", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert model.classifier.in_features == 512 and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(model.conv_points()) == len(model.probe_points()) == 8
    narrow = models.make_vgg(width=16, norm="gn", group_size=4)
    assert [c.out_channels for c in narrow.modules() if isinstance(c, torch.nn.Conv2d)][:2] == [16, 32]
    with pytest.raises(ValueError, match="unknown VGG cfg"):
        models.make_vgg("E")


def test_correction_optimizer_scales_each_channel_by_the_norm_ratio():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 2, 3, 3))
    w.grad = torch.randn_like(w)
    reference = channel_norms(w) * torch.tensor([1.0, 2.0, 0.5])
    before = w.detach().clone()
    opt = SGDWDMimic([{"params": [w], "correct": True}], lr=0.1)
    opt.set_reference_norms([reference])
    opt.step()
    scales = (channel_norms(before) / reference) ** 2
    expected = before - 0.1 * scales.view(3, 1, 1, 1) * w.grad
    assert torch.allclose(w.detach(), expected)
    assert scales.tolist() == pytest.approx([1.0, 0.25, 4.0])
    with pytest.raises(ValueError, match="reference norm"):
        opt.set_reference_norms([reference, reference])


def test_correction_optimizer_without_correction_is_torch_sgd():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(4, 5))
    b = torch.nn.Parameter(a.detach().clone())
    mine = SGDWDMimic([a], lr=0.1, momentum=0.9, weight_decay=1e-2)
    ref = torch.optim.SGD([b], lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(3):
        grad = torch.randn(4, 5)
        a.grad, b.grad = grad.clone(), grad.clone()
        mine.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)


# -- the measurement ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    config = wd.resolve("book", **TINY)
    return config, wd.measure(config, cache=False)


def test_measurement_is_tidy_and_deterministic(tiny):
    config, measured = tiny
    assert set(measured["runs"].run) == set(wd.RUNS) and len(measured["runs"]) == 3 * config["repeats"]
    channels = measured["channels"]
    assert set(channels.layer) == {"conv1", "conv2", "conv3"}
    assert {"norm_sq_before", "norm_sq_after", "grad_sq", "w_dot_g", "chord", "lr", "step_scale"} <= set(channels)
    assert len(measured["sgd"]) == config["sgd_steps"] * (4 + 8 + 16)
    assert measured["invariance"].groupby(["dtype", "eps"]).size().tolist() == [6, 6, 6]
    again = wd.measure(config, cache=False)
    pd.testing.assert_frame_equal(measured["runs"], again["runs"])
    pd.testing.assert_frame_equal(measured["channels"], again["channels"])
    pd.testing.assert_frame_equal(measured["sgd"], again["sgd"])


def test_correction_gives_the_wd_runs_effective_step(tiny):
    _, measured = tiny
    curves = wd.layer_curves(measured["channels"])
    on = curves[curves.run == "wd_on"].set_index(["repeat", "layer", "step"]).effective_lr
    corrected = curves[curves.run == "corrected"].set_index(["repeat", "layer", "step"]).effective_lr
    assert np.allclose(on, corrected.loc[on.index], rtol=1e-5)
    off = curves[curves.run == "wd_off"].set_index(["repeat", "layer", "step"]).effective_lr
    assert (off.groupby("step").median().iloc[-1] < on.groupby("step").median().iloc[-1])


def test_claims_hold_with_the_right_theory(tiny):
    config, measured = tiny
    verdicts = {c.id: c for c in wd.check_claims(config, measured)}
    assert set(verdicts) == {"W.invariance", "W.gradient", "W.eps", "W.angular", "W.recursion", "W.equilibrium",
                             "W.gap", "W.correction"}
    for claim in ("W.invariance", "W.gradient", "W.eps", "W.angular", "W.recursion"):
        assert verdicts[claim].passed, verdicts[claim]


def test_a_wrong_prediction_fails_the_check(tiny, monkeypatch):
    config, measured = tiny
    # claim that BatchNorm's epsilon makes no difference, or that the chord is twice the first-order angle
    monkeypatch.setattr(theory, "bn_eps_ratio", lambda variance, eps, scale: np.ones_like(variance))
    monkeypatch.setattr(theory, "sgd_step_tangent", lambda lr, g, w: 2 * np.asarray(lr) * np.asarray(g) / np.asarray(w))
    monkeypatch.setattr(theory, "bn_eps_orthogonality", lambda v, e, gg: 0 * np.asarray(gg) + 1.0)
    remeasured = {**measured, "invariance": wd.invariance_frame(
        config, wd.build_network(config, 3, 10, 0), torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))}
    verdicts = {c.id: c.passed for c in wd.check_claims(config, remeasured)}
    assert not verdicts["W.eps"] and not verdicts["W.angular"] and not verdicts["W.recursion"]


def test_gap_needs_to_exceed_the_noise(tiny):
    config, measured = tiny
    runs = measured["runs"].copy()
    runs["diverged"] = False
    for on, off, corrected, expect in ((0.9, 0.8, 0.88, True), (0.9, 0.8, 0.82, False), (0.8, 0.8, 0.8, False)):
        runs["test_accuracy"] = runs["run"].map({"wd_on": on, "wd_off": off, "corrected": corrected})
        runs.loc[runs.repeat == 1, "test_accuracy"] += 0.001
        fake = {**measured, "runs": runs}
        verdicts = {c.id: c for c in wd.check_claims(config, fake)}
        assert verdicts["W.correction"].passed is expect
        if on > off:
            assert verdicts["W.gap"].passed and math.isclose(verdicts["W.correction"].measured,
                                                            (corrected - off) / (on - off), rel_tol=1e-6)


def test_run_executes_the_notebook_with_papermill(run_notebook):
    run_dir = run_notebook("07_weight_decay_effective_lr", TINY)
    assert list((run_dir / "figures").glob("*.png"))
    records = json.loads((run_dir / "claims.json").read_text())
    assert {r["id"] for r in records} == {"W.invariance", "W.gradient", "W.eps", "W.angular", "W.recursion",
                                          "W.equilibrium", "W.gap", "W.correction"}
    assert json.loads((run_dir / "parameters.json").read_text())["width"] == 4
