"""Principle B's experiment: presets, validation, measurement, claim checks that can fail, and the notebook run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from normlib import presets, theory, train
from normlib.experiments import informative_forward as inf
from normlib.params import ParameterError

chapter = inf.EXPERIMENT

ROOT = Path(__file__).resolve().parents[1]

#: Synthetic CIFAR-shaped images (no data files needed), a narrow uniform CNN, a few training steps.
SMALL = dict(
    dataset="synthetic",
    subset=64,
    test_subset=32,
    batch_size=16,
    width=16,
    depth=4,
    group_sizes=[1, 4, 16],
    norms=["bn", "none"],
    pool=4,
    repeats=1,
    train_cnn="uniform",
    train_group_sizes=[1, 4, 16],
    train_norms=["bn", "none"],
    max_steps=3,
    bootstrap=200,
)


def test_paper_preset_is_the_papers_setup():
    config = chapter.resolve("paper")
    assert config["dataset"] == "cifar100" and config["batch_size"] == 256 and config["epochs"] == 60
    assert config["lr"] == 0.1 and config["train_cnn"] == "uniform" and config["width"] == 64
    assert config["pool"] == 1 and config["device"] == "auto"
    assert config["group_sizes"] == [1, 2, 4, 8, 16, 32, 64]
    grid = inf.train_grid(config)
    assert grid[0]["model_kwargs"] == {"cfg": "uniform", "depth": 10, "width": 64, "norm": "gn", "group_size": 1}
    assert grid[0]["dataset"]["name"] == "cifar100" and grid[0]["config"]["batch_size"] == 256


def test_paper_preset_trains_a_few_steps_on_cifar_shaped_data():
    config = chapter.resolve(
        "paper",
        dataset="synthetic",
        subset=512,
        test_subset=64,
        max_steps=2,
        device="cpu",
        train_group_sizes=[8],
        train_norms=["bn"],
    )
    point = inf.train_grid(config)[0]
    result = train.train_model(**point)
    assert len(result.history) == 2 and np.isfinite(result.history.loss).all()


def test_book_preset():
    config = chapter.resolve("book")
    assert config["dataset"] == "fashion-mnist" and config["pool"] == 2 and config["train_cnn"] == "book"
    assert inf.train_grid(config)[0]["model_kwargs"]["cfg"] == [
        list(e) if isinstance(e, tuple) else e for e in presets.BOOK_CNN["cfg"]
    ]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"group_sizes": [1, 3]}, r"parameter 'group_sizes': 3 does not divide the width 64; allowed: .*1, 2, 4"),
        ({"width": 48, "group_sizes": [32]}, r"parameter 'group_sizes'.*1, 2, 3, 4, 6"),
        ({"depth": 0}, r"parameter 'depth'.*>= 1"),
        ({"norms": ["bn", "batchnorm"]}, r"parameter 'norms'.*batchnorm"),
        ({"norms": ["gn"]}, r"parameter 'norms'.*group sizes"),
        ({"train_norms": ["nonorm"]}, r"parameter 'train_norms'"),
        ({"train_group_sizes": [64]}, r"parameter 'train_group_sizes'.*1, 2, 4, 8, 16, 32"),
        ({"train_cnn": "vgg"}, r"parameter 'train_cnn'.*book, uniform"),
        ({"pool": 20}, r"parameter 'pool'"),
        ({"batch_size": 1}, r"parameter 'batch_size'"),
        ({"bootstrap": 5}, r"parameter 'bootstrap'"),
        ({"seed": -1}, r"parameter 'seed'"),
    ],
)
def test_invalid_parameters(overrides, match):
    with pytest.raises(ParameterError, match=match):
        chapter.resolve("book", **overrides)


#: The mean-field model is an infinite-width model: its checks are meant to hold at the book's width, 64.
AT_WIDTH_64 = {**SMALL, "width": 64, "group_sizes": [1, 8, 64], "batch_size": 32}


@pytest.fixture(scope="module")
def small_measurement():
    config = chapter.resolve("book", **AT_WIDTH_64)
    return config, inf.measure_init(config)


def test_measurement_is_tidy_and_deterministic(small_measurement):
    config, measured = small_measurement
    assert list(measured.columns) == ["setting", "norm", "group_size", "repeat", "layer", "metric", "value"]
    assert set(measured.layer) == set(range(1, config["depth"] + 1))
    assert len(measured) == len(inf.settings(config)) * config["depth"] * 2
    pd.testing.assert_frame_equal(measured, inf.measure_init(config))


def test_stable_rank_respects_the_exact_bound(small_measurement):
    config, measured = small_measurement
    for key, _, _ in inf.settings(config):
        rank = inf.mean_curve(measured, key, "stable_rank")
        bound = theory.stable_rank_bound(inf.mean_curve(measured, key), config["batch_size"])
        assert np.all(rank <= bound + 1e-6)


def test_claims_hold_with_the_right_theory(small_measurement):
    config, measured = small_measurement
    checks = chapter.check(config, {"init": measured}, chapter.predict(config))
    ids = {c.id for c in checks}
    assert {
        "B.similarity_rises_with_group_size",
        "B.rank_falls_with_group_size",
        "B.ln_above_in_bn",
        "B.mean_field.gn1",
        "B.mean_field.bn",
        "B.mean_field.none",
    } <= ids
    assert all(c.passed for c in checks), [(c.id, c.predicted, c.measured) for c in checks if not c.passed]


class SaturatedTheory:
    """normlib.theory, except that the cosine stays at 0.99 whatever the normalizer."""

    def __getattr__(self, name):
        return getattr(inf.default_theory, name)

    def cosine_mean_field(self, depth, start, kind, **options):
        return np.full(depth, 0.99)


def test_a_wrong_theory_fails_the_check(small_measurement):
    config, measured = small_measurement
    wrong = chapter.predict(config, theory=SaturatedTheory())
    verdicts = {c.id: c.passed for c in chapter.check(config, {"init": measured}, wrong)}
    assert verdicts["B.mean_field.gn1"] is False and verdicts["B.mean_field.bn"] is False
    assert verdicts["B.mean_field.none"] is False


def test_speed_claim_fails_on_a_positive_correlation():
    config = chapter.resolve("book", **SMALL)
    cos = np.linspace(0.3, 0.9, 6)
    trained = pd.DataFrame(
        {
            "key": [f"gn{i}" for i in range(2, 8)],
            "norm": "gn",
            "group_size": range(2, 8),
            "init_cosine": cos,
            "mean_train_acc": 0.2 + 0.5 * cos,
            "diverged": False,
        }
    )
    r, low, high = inf.speed_correlation(config, trained)
    assert r == pytest.approx(1.0) and low > 0
    fake = pd.DataFrame(
        {"setting": [], "norm": [], "group_size": [], "repeat": [], "layer": [], "metric": [], "value": []}
    )
    empty = dict(config, group_sizes=[], norms=[])
    check = chapter.check(empty, {"init": fake, "trained": trained}, {"curves": {}, "ranks": {}})[-1]
    assert check.id == "B.similarity_slows_training" and check.passed is False
    decreasing = trained.assign(mean_train_acc=0.9 - 0.5 * cos + 0.01 * np.sin(np.arange(6)))
    check = chapter.check(empty, {"init": fake, "trained": decreasing}, {"curves": {}, "ranks": {}})[-1]
    assert check.passed is True


def test_correlation_interval_is_deterministic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = -x + rng.normal(size=12)
    assert inf.correlation(x, y, 500, 0) == inf.correlation(x, y, 500, 0)
    r, low, high = inf.correlation(x, y, 500, 0)
    assert low <= r <= high


def test_notebook_runs_with_tiny_parameters(tmp_path):
    args = []
    for name, value in SMALL.items():
        text = ",".join(value) if isinstance(value, list) and isinstance(value[0], str) else str(value)
        args += ["-p", name, text]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlib",
            "run",
            "notebooks/02_informative_forward.md",
            "--out",
            str(tmp_path),
            "--quiet",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NORMLIB_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("02_informative_forward-")]
    assert len(list((run_dir / "figures").glob("*.png"))) >= 3
    records = json.loads((run_dir / "claims.json").read_text())
    ids = {r["id"] for r in records}
    assert {"B.similarity_rises_with_group_size", "B.mean_field.gn1", "B.similarity_slows_training"} <= ids
    for record in records:
        assert set(record) >= {"id", "predicted", "measured", "tolerance", "passed"}
    parameters = json.loads((run_dir / "parameters.json").read_text())
    assert parameters["width"] == 16 and parameters["group_sizes"] == [1, 4, 16]
