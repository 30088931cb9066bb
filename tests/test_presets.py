"""normlib.presets: the book and paper training setups, their validation, and the paper's small-batch quirk."""

from __future__ import annotations

import pytest

from normlib import data, models
from normlib.params import Param, ParameterError
from normlib.presets import (
    BOOK_CNN,
    SMALL_BATCH_EPOCHS,
    TRAIN_PARAMS,
    TRAIN_PRESETS,
    dataset_options,
    train_config,
    training_spec,
)
from normlib.train import TrainConfig, train

SPEC = training_spec()


def test_both_presets_resolve():
    for preset in ("book", "paper"):
        config = SPEC.resolve(preset)
        assert set(config) == {"preset", *(p.name for p in TRAIN_PARAMS)}
        assert isinstance(train_config(config), TrainConfig)


def test_paper_preset_is_the_papers_setup():
    config = SPEC.resolve("paper")
    assert config["dataset"] == "cifar100" and config["subset"] is None
    assert config["batch_size"] == 256 and config["epochs"] == 60
    assert config["lr"] == 0.1 and config["lr_scale_with_batch"] is True
    assert config["momentum"] == 0.9 and config["weight_decay"] == 1e-4
    assert config["warmup_epochs"] == 0 and config["schedule"] == "paper"
    assert config["augment"] is True  # horizontal flips, the only augmentation
    assert config["seed"] == 0 and config["device"] == "auto"
    cfg = train_config(config)
    assert cfg.peak_lr == pytest.approx(0.1) and cfg.epochs == cfg.total_epochs == 60


def test_book_preset_is_small_and_on_the_cpu():
    config = SPEC.resolve("book")
    assert config["dataset"] == "fashion-mnist" and config["device"] == "cpu"
    assert config["subset"] <= 20_000 and config["batch_size"] == 128 and config["epochs"] <= 3
    assert (config["momentum"], config["weight_decay"]) == (0.9, 1e-4)
    assert dataset_options(config) == {"name": "fashion-mnist", "subset": config["subset"], "test_subset": None}
    model = models.make_cnn(norm="bn", **BOOK_CNN)
    assert model(data.load_dataset("synthetic", shape=(1, 28, 28), size=4).images).shape == (4, 10)


def test_small_batch_quirk_trains_ten_epochs_without_decay():
    config = SPEC.resolve("paper", batch_size=16, warmup_epochs=5)
    cfg = train_config(config)
    assert cfg.epochs == SMALL_BATCH_EPOCHS and cfg.schedule_epochs == 60 and cfg.warmup_epochs == 1
    assert cfg.peak_lr == pytest.approx(1.6)
    # trained: 10 epochs of 2 steps; the schedule: 60 epochs, a 1-epoch warm-up, then the drop after 75 % of the
    # remaining 118 steps; so the LR ramps up and never decays
    tiny = data.load_dataset("synthetic", shape=(3, 8, 8), num_classes=4, size=32)
    model = models.make_cnn([8], norm="bn", in_channels=3, num_classes=4)
    history = train(model, tiny, config=train_config(config, device="cpu")).history
    assert len(history) == 20 and history["epoch"].max() == 9
    assert history["lr"].tolist() == pytest.approx([0.0, 0.8] + [1.6] * 18)
    off = train_config(SPEC.resolve("paper", batch_size=16, paper_small_batch=False))
    assert off.epochs == 60 and off.schedule_epochs is None
    assert train_config(SPEC.resolve("paper", batch_size=32)).epochs == 60  # the rule is bs < 32
    assert train_config(SPEC.resolve("paper", batch_size=8, warmup_epochs=5)).warmup_epochs == 5


def test_train_config_overrides_and_refuses_unknown_fields():
    config = SPEC.resolve("book")
    cfg = train_config(config, batch_size=64, probe_metrics=["variance"], progress=True)
    assert (cfg.batch_size, cfg.probe_metrics, cfg.progress) == (64, ("variance",), True)
    with pytest.raises(ParameterError, match="'batch_sise'"):
        train_config(config, batch_sise=64)


@pytest.mark.parametrize(
    "override,name,allowed",
    [
        ({"dataset": "imagenet"}, "dataset", "fashion-mnist, cifar10, cifar100, synthetic"),
        ({"schedule": "cosine"}, "schedule", "paper, constant"),
        ({"batch_size": 0}, "batch_size", ">= 2"),
        ({"momentum": 1.5}, "momentum", "<= 1"),
        ({"lr": "fast"}, "lr", "a number"),
        ({"device": "tpu"}, "device", "cpu, cuda, auto"),
        ({"augment": "yes"}, "augment", "True or False"),
        ({"warmup_epochs": 61}, "warmup_epochs", "at most the 60 epochs"),
    ],
)
def test_invalid_values_raise_naming_the_parameter(override, name, allowed):
    with pytest.raises(ParameterError, match=f"'{name}'") as error:
        SPEC.resolve("paper", **override)
    assert allowed in str(error.value)


def test_unknown_name_lists_the_allowed_ones():
    with pytest.raises(ParameterError, match="unknown parameter 'learning_rate'") as error:
        SPEC.resolve("book", learning_rate=0.1)
    assert "lr" in str(error.value) and "batch_size" in str(error.value)


def test_training_spec_merges_a_notebooks_parameters():
    norms = Param("norms", "str_list", "normalizers", choices=("bn", "gn"))
    narrow = Param("batch_size", "int", "only the paper's two", minimum=16, maximum=256)
    seen = []
    spec = training_spec(
        [norms, narrow], book={"norms": ["bn"], "epochs": 1}, paper={"norms": ["bn", "gn"]}, checks=(seen.append,)
    )
    assert spec.names[:2] == ["norms", "batch_size"] and spec.names.count("batch_size") == 1
    book = spec.resolve("book")
    assert book["norms"] == ["bn"] and book["epochs"] == 1 and book["lr"] == TRAIN_PRESETS["book"]["lr"]
    assert spec.resolve("paper")["norms"] == ["bn", "gn"] and len(seen) == 2
    with pytest.raises(ParameterError, match="'batch_size'"):
        spec.resolve("book", batch_size=8)
    with pytest.raises(ValueError, match="missing"):
        training_spec([norms])  # no preset value for the notebook's own parameter


def test_paper_resnet56_trains_a_few_steps_on_cifar_shaped_data():
    config = SPEC.resolve("paper", dataset="synthetic", batch_size=4, max_steps=2, device="cpu")
    cfg = train_config(config)
    assert cfg.epochs == SMALL_BATCH_EPOCHS  # batch 4 < 32: the paper's short schedule
    train_set = data.load_dataset("synthetic", shape=(3, 32, 32), num_classes=100, size=8)
    model = models.make_resnet(56, norm="bn", num_classes=100)
    result = train(model, train_set, config=cfg)
    assert len(result.history) == 2 and not result.diverged
    assert result.history["lr"].tolist() == pytest.approx([0.1 * 256 / 4] * 2)
