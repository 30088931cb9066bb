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
    paper_norms=["bn", "ln", "evo_s0"],
    paper_batch=4,
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
    # the paper's nine normalizers (GN with the authors' 32 groups) and InstanceNorm, 30 steps at batch 128
    assert [key for key, _, _ in inf.train_runs(config)] == ["gn1", *inf.PAPER_SET]
    assert config["subset"] // config["batch_size"] == 30 and config["epochs"] == 1
    assert "group_size" not in inf.train_grid(config)[3]["model_kwargs"]
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
        ({"train_cnn": "uniform", "width": 48, "train_group_sizes": [1]}, r"parameter 'train_norms': 'gn'.*32 groups"),
        ({"train_group_sizes": [64]}, r"parameter 'train_group_sizes'.*1, 2, 4, 8, 16, 32"),
        ({"train_cnn": "vgg"}, r"parameter 'train_cnn'.*book, uniform"),
        ({"pool": 20}, r"parameter 'pool'"),
        ({"batch_size": 1}, r"parameter 'batch_size'"),
        ({"bootstrap": 5}, r"parameter 'bootstrap'"),
        (
            {"centered_runs": ["gn3"]},
            r"parameter 'centered_runs': 'gn3' is not a trained run; allowed: gn1, bn, ln, gn",
        ),
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
        "B.rank_slope",
        "B.ln_above_in_bn",
        "B.mean_field.gn1",
        "B.mean_field.bn",
        "B.mean_field.none",
    } <= ids
    failed = [(c.id, c.predicted, c.measured) for c in checks if not c.passed]
    assert not failed, failed
    kinds = {c.id: c.kind for c in checks}
    assert kinds["B.rank_falls_with_group_size"] == "identity"  # it repeats the similarity row: not counted
    assert kinds["B.rank_slope"] == "derived" and kinds["B.similarity_rises_with_group_size"] == "paper"
    for check in checks:
        assert check.kind in ("paper", "derived", "identity") and check.alternative
        assert check.alternative_passed is not None
        if check.passed:  # a row that passes must fail under its alternative
            assert check.alternative_passed is False, check.id


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


def _paper_set_runs(cosines, accuracies, diverged=None, extra=None):
    """Made-up runs of the paper's nine normalizers (and ``extra`` rows, e.g. InstanceNorm) in train_all's format."""
    keys = list(inf.PAPER_SET)
    frame = pd.DataFrame(
        {
            "key": keys,
            "norm": keys,
            "group_size": 0,
            "init_cosine": cosines,
            "mean_train_acc": accuracies,
            "diverged": False if diverged is None else diverged,
            "steps": 30,
        }
    )
    return pd.concat([frame, pd.DataFrame(extra)], ignore_index=True) if extra else frame


def _speed_row(config, trained):
    fake = pd.DataFrame(
        {"setting": [], "norm": [], "group_size": [], "repeat": [], "layer": [], "metric": [], "value": []}
    )
    empty = dict(config, group_sizes=[], norms=[])
    nothing = {"curves": {}, "alternatives": {}, "ranks": {}}
    rows = chapter.check(empty, {"init": fake, "trained": trained}, nothing)
    return next(r for r in rows if r.id == "B.similarity_speed_paper_set")


def test_fisher_interval():
    """The paper's own r over nine runs only just excludes 0; r = 0 never does; fewer than four runs give none."""
    low, high = inf.fisher_interval(-0.67, 9)
    assert low == pytest.approx(-0.923, abs=2e-3) and high == pytest.approx(-0.011, abs=2e-3)
    low, high = inf.fisher_interval(0.0, 9)
    assert low == pytest.approx(-high) and high > 0.6
    assert np.isnan(inf.fisher_interval(-0.9, 3)[0])


def test_speed_row_passes_on_a_falling_trend_and_flips_under_its_alternative():
    config = chapter.resolve("book", **SMALL)
    cos = np.linspace(0.3, 0.9, 9)
    trained = _paper_set_runs(cos, 0.9 - 0.5 * cos + 0.02 * np.sin(np.arange(9)))
    row = _speed_row(config, trained)
    assert row.passed and row.kind == "paper" and row.measured < -0.9
    assert row.predicted == inf.PAPER_R["10-layer CNN"]
    assert row.alternative_passed is False
    flat = _speed_row(config, inf.decorrelated(trained))
    assert flat.passed is False and flat.measured == pytest.approx(0.0, abs=1e-9)


def test_speed_row_fails_on_a_rising_or_weak_trend():
    config = chapter.resolve("book", **SMALL)
    cos = np.linspace(0.3, 0.9, 9)
    assert _speed_row(config, _paper_set_runs(cos, 0.2 + 0.5 * cos)).passed is False
    # r about -0.5 over nine runs: negative, but the interval reaches above 0
    noise = np.array([0.3, -0.2, 0.1, 0.25, -0.3, 0.05, -0.1, 0.2, -0.15])
    weak = _paper_set_runs(cos, 0.6 - 0.3 * cos + 0.5 * noise)
    r, low, high, n = inf.paper_set_correlation(weak)
    assert r < 0 < high and n == 9
    assert _speed_row(config, weak).passed is False


def test_speed_row_leaves_out_diverged_runs_and_instancenorm():
    """A diverged run and InstanceNorm (not in the paper's figure) are not correlated: an InstanceNorm that trains
    slowest at the lowest cosine does not break the paper set's falling trend."""
    config = chapter.resolve("book", **SMALL)
    cos = np.linspace(0.3, 0.9, 9)
    diverged = [False] * 8 + [True]
    trained = _paper_set_runs(
        cos,
        0.9 - 0.5 * cos + 0.01 * np.cos(np.arange(9)),
        diverged,
        extra=[{"key": "gn1", "norm": "gn", "group_size": 1, "init_cosine": 0.2, "mean_train_acc": 0.1,
                "diverged": False, "steps": 30}],
    )  # fmt: skip
    r, low, high, n = inf.paper_set_correlation(trained)
    assert n == 8 and high < 0
    row = _speed_row(config, trained)
    assert row.passed and "diverged, left out: evo_s0" in row.statement
    with_in = inf.in_paper_set(trained) | ~inf.in_paper_figure(trained)
    assert inf.paper_set_correlation(trained, with_in)[3] == 9


# ------------------------------------------------------------------ the verdicts flip under the alternatives


def init_frame(config, cosines):
    """A measurement at initialization in measure_init's format: the given cosine curve per setting, and the stable
    rank its bound gives (equally similar samples)."""
    rows = []
    for (key, norm, g), curve in ((s, cosines[s[0]]) for s in inf.settings(config)):
        for layer, c in enumerate(curve, start=1):
            rank = float(theory.stable_rank_bound(c, config["batch_size"]))
            for metric, value in (("cosine", float(c)), ("stable_rank", rank)):
                rows.append((key, norm, g or 0, 0, layer, metric, value))
    return pd.DataFrame(rows, columns=["setting", "norm", "group_size", "repeat", "layer", "metric", "value"])


@pytest.fixture(scope="module")
def modelled():
    """The book's defaults with the mean-field curves standing in for the measurement (no network is run)."""
    config = chapter.resolve("book", dataset="synthetic", pool=1)
    predicted = chapter.predict(config)
    return config, predicted


def verdicts(config, predicted, cosines, **extra):
    return {c.id: c.passed for c in chapter.check(config, {"init": init_frame(config, cosines), **extra}, predicted)}


def test_a_measurement_that_follows_the_model_passes_the_model_rows(modelled):
    config, predicted = modelled
    passed = verdicts(config, predicted, predicted["curves"])
    assert all(v for k, v in passed.items() if k.startswith("B.mean_field")), passed
    assert passed["B.similarity_rises_with_group_size"] and passed["B.ln_above_in_bn"]


@pytest.mark.parametrize("key", ["gn1", "gn8", "gn64", "bn", "none"])
def test_mean_field_rows_flip_under_their_alternative(modelled, key):
    config, predicted = modelled
    cosines = {**predicted["curves"], key: predicted["alternatives"][key]}
    assert verdicts(config, predicted, cosines)[f"B.mean_field.{key}"] is False


def test_ordering_rows_flip_when_the_group_size_does_not_matter(modelled):
    config, predicted = modelled
    flat = {k: (predicted["curves"]["gn1"] if k.startswith("gn") else v) for k, v in predicted["curves"].items()}
    jitter = {k: v + 1e-3 * i for i, (k, v) in enumerate(flat.items())}  # no order left but the noise's
    rng = np.random.default_rng(0)
    shuffled = dict(zip(jitter, rng.permutation(list(jitter.values()))))
    passed = verdicts(config, predicted, {**jitter, **{k: v for k, v in shuffled.items() if k.startswith("gn")}})
    assert passed["B.similarity_rises_with_group_size"] is False or passed["B.rank_falls_with_group_size"] is False
    gap = verdicts(config, predicted, {**predicted["curves"], f"gn{config['width']}": predicted["curves"]["gn1"]})
    assert gap["B.ln_above_in_bn"] is False


def test_rank_slope_row_fails_when_the_rank_scales_like_the_papers_bound(modelled):
    config, predicted = modelled
    sizes = sorted(config["group_sizes"])
    frame = init_frame(config, predicted["curves"])
    (row,) = [c for c in chapter.check(config, {"init": frame}, predicted) if c.id == "B.rank_slope"]
    assert row.passed and row.alternative_passed is False and row.kind == "derived"
    assert row.predicted == pytest.approx(row.measured) and row.predicted < 1 - inf.RANK_SLOPE_ABS_TOL
    ranks = frame.metric == "stable_rank"
    for g in sizes:  # the alternative: a rank in proportion to sqrt(width / group size)
        frame.loc[ranks & (frame.setting == f"gn{g}"), "value"] = 3.0 * np.sqrt(config["width"] / g)
    (row,) = [c for c in chapter.check(config, {"init": frame}, predicted) if c.id == "B.rank_slope"]
    assert row.measured == pytest.approx(1.0) and row.passed is False


def test_rank_order_row_is_a_sanity_check_of_the_cosine_order(modelled):
    config, predicted = modelled
    frame = init_frame(config, predicted["curves"])
    (row,) = [c for c in chapter.check(config, {"init": frame}, predicted) if c.id == "B.rank_falls_with_group_size"]
    assert row.kind == "identity" and row.passed and row.predicted == pytest.approx(-1.0)
    sizes = sorted(config["group_sizes"])
    mixed = init_frame(config, predicted["curves"])
    rank_rows = mixed.metric == "stable_rank"
    for g in sizes:  # the ranks of a network whose rank does not depend on the group size
        mixed.loc[rank_rows & (mixed.setting == f"gn{g}"), "value"] = 2.0 + 1e-3 * ((g * 7) % 5)
    (row,) = [c for c in chapter.check(config, {"init": mixed}, predicted) if c.id == "B.rank_falls_with_group_size"]
    assert row.passed is False


def test_gap_row_needs_more_than_noise(modelled):
    config, predicted = modelled
    curves = predicted["curves"]
    ln, others = f"gn{config['width']}", ["gn1", "bn"]
    top = np.max([curves[k] for k in others], axis=0)
    small = verdicts(config, predicted, {**curves, ln: top + 0.5 * inf.GAP_MIN})
    assert small["B.ln_above_in_bn"] is False  # above, but by less than the finite-width scale
    (row,) = [
        c for c in chapter.check(config, {"init": init_frame(config, curves)}, predicted) if c.id == "B.ln_above_in_bn"
    ]
    assert row.passed and row.alternative_passed is False
    # two initializations of LayerNorm that differ by more than the gap: the gap is within noise, the alternative passes
    noisy = pd.concat(
        [init_frame(config, curves), init_frame(config, {**curves, ln: curves[ln] - 0.3}).assign(repeat=1)]
    )
    assert inf.repeat_spread(noisy, [ln, *others]) == pytest.approx(0.3)
    (row,) = [c for c in chapter.check(config, {"init": noisy}, predicted) if c.id == "B.ln_above_in_bn"]
    assert row.alternative_passed is True


def paper_frame(cosines):
    return pd.DataFrame({"norm": list(inf.PAPER_COSINES_10), "cosine": cosines, "paper": inf.PAPER_COSINES_10.values()})


def test_paper_rows_hold_on_the_papers_readings_and_fail_without_an_order(modelled):
    config, predicted = modelled
    readings = np.array(list(inf.PAPER_COSINES_10.values()))
    on_paper = verdicts(config, predicted, predicted["curves"], paper_cnn=paper_frame(readings))
    assert on_paper["B.paper_cosine_order"] and on_paper["B.paper_cosines"]  # the expected miss flips
    alike = verdicts(config, predicted, predicted["curves"], paper_cnn=paper_frame(readings[::-1]))
    assert alike["B.paper_cosine_order"] is False and alike["B.paper_cosines"] is False


def _mean_removal_row(lead_lost: float):
    """``B.in_mean_removal`` on made-up runs: BN and LN lead InstanceNorm by 0.4 and 0.2 in mean training accuracy,
    and centring the images costs each ``lead_lost`` of its lead."""
    config = chapter.resolve("book", **SMALL)
    trained = pd.DataFrame(
        {
            "key": ["gn1", "ln", "bn"],
            "norm": ["gn", "ln", "bn"],
            "group_size": [1, 0, 0],
            "init_cosine": [0.2, 0.8, 0.3],
            "mean_train_acc": [0.2, 0.4, 0.6],
            "diverged": False,
        }
    )
    centered = pd.DataFrame(
        {
            "key": ["gn1", "ln", "bn"],
            "mean_train_acc": [0.2, 0.4 - 0.2 * lead_lost, 0.6 - 0.4 * lead_lost],
            "test_acc": 0.5,
            "diverged": False,
        }
    )
    fake = pd.DataFrame(
        {"setting": [], "norm": [], "group_size": [], "repeat": [], "layer": [], "metric": [], "value": []}
    )
    empty = dict(config, group_sizes=[], norms=[])
    nothing = {"curves": {}, "alternatives": {}, "ranks": {}}
    rows = chapter.check(empty, {"init": fake, "trained": trained, "centered": centered}, nothing)
    return next(r for r in rows if r.id == "B.in_mean_removal")


def test_mean_removal_row_passes_when_centring_costs_the_lead_and_fails_under_its_alternative():
    row = _mean_removal_row(0.9)
    assert row.passed and row.measured == pytest.approx(0.9) and row.kind == "derived"
    assert row.alternative_passed is False
    assert _mean_removal_row(0.0).passed is False
    assert _mean_removal_row(0.3).passed is False


def test_mean_removal_shares_skip_runs_without_a_lead():
    trained = pd.DataFrame({"key": ["gn1", "bn"], "mean_train_acc": [0.5, 0.4], "diverged": False})
    centered = pd.DataFrame({"key": ["bn"], "mean_train_acc": [0.3], "test_acc": [0.5], "diverged": [False]})
    shares = inf.mean_removal_shares(trained, centered)
    assert shares.lead.iloc[0] == pytest.approx(-0.1) and np.isnan(shares.share.iloc[0])


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
    assert {"B.similarity_rises_with_group_size", "B.mean_field.gn1", "B.similarity_speed_paper_set"} <= ids
    assert {"B.paper_cosine_order", "B.paper_cosines", "B.rank_slope"} <= ids
    for record in records:
        assert set(record) >= {"id", "predicted", "measured", "tolerance", "passed"}
        # every row of the chapter, at tiny parameters: a kind, and an alternative with its verdict
        assert record["kind"] in ("paper", "derived", "known", "identity"), record["id"]
        assert record["alternative"] and record["alternative_passed"] is not None, record["id"]
    parameters = json.loads((run_dir / "parameters.json").read_text())
    assert parameters["width"] == 16 and parameters["group_sizes"] == [1, 4, 16]
