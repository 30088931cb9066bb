"""normlib.train: the LR schedule, divergence, determinism, probes, the optimizer and step hooks, train_model with
its data and model arguments, and pickling."""

from __future__ import annotations

import dataclasses
import math
import pickle

import pandas as pd
import pytest
import torch
from torch import nn

from normlib import data, models
from normlib.params import ParameterError
from normlib.sweep import sweep
from normlib.train import (
    TrainConfig,
    TrainResult,
    evaluate,
    load_splits,
    lr_at,
    model_kwargs_for,
    scaled_lr,
    train,
    train_model,
)

SHAPE = (3, 8, 8)
TINY_CNN = {"cfg": [8, (8, 2)], "norm": "bn"}


def synthetic(split: str = "train", size: int = 64) -> data.Dataset:
    return data.load_dataset("synthetic", split, shape=SHAPE, num_classes=4, size=size)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.make_cnn(in_channels=3, num_classes=4, **TINY_CNN)


def config(**fields) -> TrainConfig:
    return TrainConfig(**{"batch_size": 16, "epochs": 2, "device": "cpu", **fields})


# --------------------------------------------------------------------------------------------- learning rate


def test_warmup_ramps_linearly_from_zero():
    lrs = [lr_at(t, 100, 10, 0.4, "paper") for t in range(12)]
    assert lrs[0] == 0.0
    assert lrs[:10] == pytest.approx([0.04 * t for t in range(10)])
    assert lrs[10] == lrs[11] == 0.4


def test_paper_schedule_drops_to_a_tenth_after_75_percent_of_post_warmup_steps():
    # 60 epochs x 10 steps, no warm-up: 45 epochs at the base rate, 15 at a tenth (the paper's per-iteration rule)
    lrs = [lr_at(t, 600, 0, 0.1, "paper") for t in range(600)]
    assert lrs[:450] == [0.1] * 450 and lrs[450:] == [pytest.approx(0.01)] * 150
    # with warm-up the 75 % count starts after it: W=100, floor(0.75 * 500) = 375
    assert lr_at(474, 600, 100, 1.0, "paper") == 1.0
    assert lr_at(475, 600, 100, 1.0, "paper") == pytest.approx(0.1)
    # floor, as the code's int(decay_iter * 0.75): T=10 -> 7 steps at the base rate
    assert [lr_at(t, 10, 0, 1.0, "paper") for t in (6, 7)] == [1.0, pytest.approx(0.1)]


def test_constant_schedule_never_decays():
    assert [lr_at(t, 100, 0, 0.3, "constant") for t in (0, 74, 75, 99, 500)] == [0.3] * 5
    assert lr_at(5, 100, 10, 0.3, "constant") == pytest.approx(0.15)
    with pytest.raises(ValueError, match="'schedule'.*paper, constant"):
        lr_at(0, 10, 0, 0.1, "cosine")


def test_multistep_schedule_multiplies_at_each_milestone():
    assert [lr_at(t, 100, 0, 1.0, "multistep", [10, 20], 0.5) for t in (0, 9, 10, 19, 20, 99)] == pytest.approx(
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    )
    assert lr_at(2, 100, 4, 1.0, "multistep", [1], 0.1) == pytest.approx(0.5)  # the warm-up comes first
    config = TrainConfig(
        schedule="multistep",
        lr_milestones=[1],
        lr_decay=0.1,
        lr=0.4,
        lr_scale_with_batch=False,
        batch_size=16,
        epochs=2,
        augment=False,
    )
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

    config = TrainConfig(
        lr=0.2, lr_scale_with_batch=False, batch_size=16, epochs=1, schedule="constant", momentum=0.0, augment=False
    )
    train(model, tiny, config=config, optimizer_factory=factory, on_step=on_step)
    assert seen == [(0, pytest.approx(0.1), True), (1, pytest.approx(0.1), True)]


def test_lr_scales_linearly_with_batch_size():
    assert scaled_lr(0.1, 256) == pytest.approx(0.1)
    assert scaled_lr(0.1, 16) == pytest.approx(1.6)  # the paper's bs-16 rate
    assert scaled_lr(0.1, 128) == pytest.approx(0.2)
    assert scaled_lr(0.1, 16, scale_with_batch=False) == 0.1
    assert TrainConfig(batch_size=64).peak_lr == pytest.approx(0.4)


def test_history_lr_follows_the_schedule():
    # 64 images / 16 = 4 steps per epoch, 4 epochs = 16 steps, 1 warm-up epoch: W=4, decay after 4 + 9 steps
    result = train(tiny_model(), synthetic(), config=config(epochs=4, warmup_epochs=1, lr=0.1))
    lrs = result.history["lr"].tolist()
    assert lrs[:5] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    assert lrs[5:13] == pytest.approx([1.6] * 8) and lrs[13:] == pytest.approx([0.16] * 3)
    assert result.history["epoch"].tolist() == [e for e in range(4) for _ in range(4)]


def test_schedule_epochs_longer_than_training_never_decays():
    result = train(tiny_model(), synthetic(), config=config(epochs=2, schedule_epochs=12))
    assert result.history["lr"].nunique() == 1


# --------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "fields,name",
    [
        ({"schedule": "cosine"}, "schedule"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"device": "tpu"}, "device"),
        ({"probe_metrics": ["variance", "entropy"]}, "probe_metrics"),
        ({"warmup_epochs": 3}, "warmup_epochs"),
    ],
)
def test_invalid_config_names_the_field(fields, name):
    with pytest.raises(ParameterError, match=f"'{name}'"):
        config(**fields)


def test_config_round_trips_through_plain_json_types():
    cfg = config(probe_metrics=["variance"], conv_metrics=("grad_norm",))
    assert cfg.probe_metrics == ("variance",)
    as_dict = cfg.to_dict()
    assert as_dict["conv_metrics"] == ["grad_norm"] and TrainConfig(**as_dict) == cfg


def test_replace_validates_the_changed_copy():
    cfg = config(probe_metrics=["variance"], schedule="multistep", lr_milestones=[1])
    longer = dataclasses.replace(cfg, epochs=5)
    assert longer == TrainConfig(**{**cfg.to_dict(), "epochs": 5}) and longer.lr_milestones == (1,)
    assert dataclasses.replace(cfg, lr_milestones=[1, 2]).lr_milestones == (1, 2)  # coerced, as on construction
    with pytest.raises(ParameterError, match="'lr_milestones'"):
        dataclasses.replace(cfg, schedule="constant")
    with pytest.raises(ParameterError, match="'epochs'"):
        dataclasses.replace(cfg, epochs=0)


# --------------------------------------------------------------------------------------------- divergence


def test_absurd_learning_rate_diverges_and_is_recorded():
    result = train(tiny_model(), synthetic(), synthetic("test"), config(lr=1e6, epochs=3))
    assert result.diverged and result.diverged_step is not None
    history = result.history
    assert history["step"].iloc[-1] == result.diverged_step
    assert history["diverged"].tolist() == [False] * (len(history) - 1) + [True]
    last = history["loss"].iloc[-1]
    assert not math.isfinite(last) or last > 1e3 * history["loss"].iloc[0]
    assert math.isnan(result.test_accuracy) and math.isnan(result.train_accuracy)


class NaNAfter(nn.Module):
    """A classifier whose output turns NaN from its ``n``-th forward on."""

    def __init__(self, n: int):
        super().__init__()
        self.linear = nn.Linear(math.prod(SHAPE), 4)
        self.calls, self.n = 0, n

    def forward(self, x):
        self.calls += 1
        out = self.linear(x.flatten(1))
        return out * float("nan") if self.calls > self.n else out


def test_non_finite_loss_is_recorded_not_raised():
    result = train(NaNAfter(3), synthetic(), config=config(epochs=5, divergence_factor=float("inf")))
    assert result.diverged and result.diverged_step == 3 and len(result.history) == 4
    assert math.isnan(result.history["loss"].iloc[-1])
    first = train(NaNAfter(0), synthetic(), config=config())
    assert first.diverged and first.diverged_step == 0


def test_stable_run_does_not_diverge():
    result = train(tiny_model(), synthetic(), synthetic("test"), config(lr=0.01))
    assert not result.diverged and result.diverged_step is None
    assert not result.history["diverged"].any()
    assert 0 <= result.train_accuracy <= 1 and 0 <= result.test_accuracy <= 1


# --------------------------------------------------------------------------------------------- determinism


def test_same_config_gives_bit_identical_history():
    cfg = config(epochs=2, warmup_epochs=0.5, probe_metrics=("variance",))
    first = train(tiny_model(), synthetic(), synthetic("test"), cfg)
    second = train(tiny_model(), synthetic(), synthetic("test"), cfg)
    pd.testing.assert_frame_equal(first.history, second.history, check_exact=True)
    pd.testing.assert_frame_equal(first.probes, second.probes, check_exact=True)
    assert first.test_accuracy == second.test_accuracy
    other = train(tiny_model(), synthetic(), config=config(epochs=2, warmup_epochs=0.5, seed=1))
    assert not other.history["loss"].equals(first.history["loss"])


def test_history_columns_and_train_accuracy():
    result = train(tiny_model(), synthetic(size=56), config=config(epochs=2))  # 4 steps per epoch, last has 8
    history = result.history
    assert list(history.columns) == ["step", "epoch", "loss", "accuracy", "lr", "diverged"]
    assert history["step"].tolist() == list(range(8))
    assert str(history["step"].dtype) == "int64" and history["diverged"].dtype == bool
    assert ((history["accuracy"] >= 0) & (history["accuracy"] <= 1)).all()
    last = history[history["epoch"] == 1]["accuracy"].to_numpy()
    assert result.train_accuracy == pytest.approx((last[:3].sum() * 16 + last[3] * 8) / 56)


def test_progress_bar_shows_loss_and_accuracy(capsys):
    train(tiny_model(), synthetic(), config=config(max_steps=3, progress=True))
    err = capsys.readouterr().err
    assert "train" in err and "3/3" in err and "loss=" in err and "acc=" in err


def test_max_steps_stops_early():
    result = train(tiny_model(), synthetic(), config=config(epochs=5, max_steps=6))
    assert result.history["step"].tolist() == list(range(6))
    assert result.history["epoch"].tolist() == [0] * 4 + [1] * 2


# --------------------------------------------------------------------------------------------- probes


def test_probes_every_k_steps_land_in_result_probes():
    cfg = config(
        epochs=2, probe_metrics=("variance", "cosine", "grad_norm"), conv_metrics=("grad_norm",), probe_every=3
    )
    result = train(tiny_model(), synthetic(), config=cfg)
    probes = result.probes
    assert sorted(probes["step"].unique()) == [0, 3, 6]
    assert set(probes["metric"]) == {"variance", "cosine", "grad_norm"}
    assert set(probes["point"]) == {"layer1", "layer2", "conv1", "conv2"}
    # per sampled step: 2 layers x 3 metrics + 2 convs x grad_norm
    assert probes.groupby("step").size().tolist() == [8, 8, 8]
    assert probes["value"].notna().all() and (probes["value"] > 0).all()


def test_no_probes_gives_an_empty_frame():
    result = train(tiny_model(), synthetic(), config=config(max_steps=2))
    assert result.probes.empty and "step" in result.probes.columns


def test_explicit_probe_points():
    model = tiny_model()
    result = train(
        model, synthetic(), config=config(max_steps=2, probe_metrics=("std",)), probes=[("first", model.units[0])]
    )
    assert set(result.probes["point"]) == {"first"} and result.probes["step"].tolist() == [0, 1]


# --------------------------------------------------------------------------------------------- train_model


def test_train_model_from_json_arguments_and_pickle():
    dataset = {"name": "synthetic", "shape": [3, 8, 8], "num_classes": 4, "size": 48, "test_size": 32}
    model_kwargs = {"cfg": [8, [8, 2]], "norm": "gn", "group_size": 4}
    cfg = config(epochs=1, probe_metrics=["variance"]).to_dict()
    result = train_model("cnn", model_kwargs, dataset, cfg)
    assert isinstance(result, TrainResult) and len(result.history) == 3
    assert not result.diverged and 0 <= result.test_accuracy <= 1
    assert result.wall_time_s > 0 and result.config == TrainConfig(**cfg)
    again = pickle.loads(pickle.dumps(result))
    pd.testing.assert_frame_equal(again.history, result.history, check_exact=True)
    pd.testing.assert_frame_equal(again.probes, result.probes, check_exact=True)
    # deterministic from the arguments alone
    pd.testing.assert_frame_equal(
        train_model("cnn", model_kwargs, dataset, cfg).history, result.history, check_exact=True
    )


def test_load_splits_reads_a_name_or_options():
    train_set, test_set = load_splits("synthetic", seed=3)
    assert (train_set.split, test_set.split) == ("train", "test")
    assert torch.equal(train_set.images, data.load_dataset("synthetic", "train", seed=3).images)
    options = {"name": "synthetic", "shape": [3, 8, 8], "num_classes": 4, "subset": 20, "test_subset": 10}
    train_set, test_set = load_splits(options, seed=1)
    assert (len(train_set), len(test_set)) == (20, 10) and train_set.images.shape[1:] == SHAPE
    expected = data.load_dataset("synthetic", "test", shape=SHAPE, num_classes=4, subset=10, seed=1)
    assert torch.equal(test_set.images, expected.images)
    assert options["shape"] == [3, 8, 8]  # not changed
    no_test_subset = load_splits({"name": "synthetic", "size": 48, "test_size": 32, "subset": 20}, seed=0)[1]
    assert len(no_test_subset) == 32  # subset is the training split's only
    seeded = load_splits({"name": "synthetic", "subset": 20, "seed": 5}, seed=1)[0]
    assert torch.equal(seeded.images, data.load_dataset("synthetic", subset=20, seed=5).images)
    with pytest.raises(ParameterError, match="'dataset'"):
        load_splits({"subset": 20}, seed=0)


def test_model_kwargs_for_fills_in_the_dataset_and_reads_json_lists():
    dataset = synthetic(size=8)
    json_kwargs = {"cfg": [8, [8, 2]], "norm": "gn", "group_size": 4}
    kwargs = model_kwargs_for(json_kwargs, dataset)
    assert kwargs == {"in_channels": 3, "num_classes": 4, "cfg": [8, (8, 2)], "norm": "gn", "group_size": 4}
    assert json_kwargs["cfg"] == [8, [8, 2]]  # not changed
    assert model_kwargs_for({"widths": [4, 8, 16], "num_classes": 7}, dataset) == {
        "in_channels": 3,
        "num_classes": 7,
        "widths": (4, 8, 16),
    }
    model = models.build_model("resnet", depth=8, **model_kwargs_for({"widths": [4, 8, 16]}, dataset))
    assert model(dataset.images[:2]).shape == (2, 4)


def test_train_model_runs_through_a_cached_sweep(tmp_path):
    dataset = {"name": "synthetic", "shape": SHAPE, "num_classes": 4, "size": 32, "test_size": 16}
    grid = {
        "arch": ["cnn"],
        "model_kwargs": [TINY_CNN],
        "dataset": [dataset],
        "config": [config(epochs=1, lr=lr).to_dict() for lr in (0.01, 0.1)],
    }
    first = sweep(train_model, grid, executor="serial", cache_root=tmp_path, progress=False)
    again = sweep(train_model, grid, executor="serial", cache_root=tmp_path, progress=False)  # read from the cache
    for a, b in zip(first["result"], again["result"]):
        pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    assert [r.config.lr for r in again["result"]] == [0.01, 0.1]


def test_evaluate_counts_hits():
    dataset = synthetic("test", size=40)

    class Oracle(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(4))

        def forward(self, x):  # logits that pick the label stored in pixel (0, 0) of channel 0
            return nn.functional.one_hot(x[:, 0, 0, 0].long(), 4).float() + self.bias

    images = dataset.images.clone()
    images[:, 0, 0, 0] = dataset.labels.float()
    images[:10, 0, 0, 0] = (dataset.labels[:10] + 1).remainder(4).float()  # 10 wrong
    labelled = data.Dataset(
        images=images,
        labels=dataset.labels,
        name="synthetic",
        split="test",
        num_classes=4,
        mean=dataset.mean,
        std=dataset.std,
    )
    assert evaluate(Oracle(), labelled, batch_size=16) == pytest.approx(30 / 40)
