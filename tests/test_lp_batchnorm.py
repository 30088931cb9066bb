"""Notebook 08's experiment: presets, validation, the float16 deviations, a tiny measurement, claims that can fail,
and the notebook run through the command line (the float16 accumulator and the reduced-precision wrapper are tested
in test_numerics.py)."""

import json

import pandas as pd
import pytest
import torch

from normlib import presets, theory
from normlib.experiments import lp_batchnorm as lb
from normlib.params import ParameterError

chapter = lb.EXPERIMENT


def verdicts_of(config, measured, theory=None):
    options = {} if theory is None else {"theory": theory}
    predicted = chapter.predict(config, measured, **options)
    return chapter.check(config, measured, predicted)


SYNTH = {"dataset": "synthetic", "subset": 64, "test_subset": 32}
TINY = dict(
    const_ns=[16, 200], const_repeats=64, sigmas=[4.0, 16.0], overflow_repeats=2, width=8, batch_size=32, **SYNTH
)


def test_paper_preset_is_the_official_cifar_regime():
    config = chapter.resolve("paper")
    assert config["dataset"] == "cifar10" and config["arch"] == "resnet" and config["resnet_depth"] == 56
    assert config["width"] == 16 and lb.model_options(config)["widths"] == [16, 32, 64]
    assert config["lr"] == 0.1 and config["momentum"] == 0.9 and config["weight_decay"] == 1e-4
    assert config["schedule"] == "multistep" and config["lr_milestones"] == [81, 122, 164]
    assert config["lr_decay"] == 0.1 and config["epochs"] == 200 and config["batch_size"] == 256
    assert config["seed"] == 123 and config["device"] == "auto" and config["lowp_dtype"] == "float16"
    tc = presets.train_config(config)
    assert tc.peak_lr == pytest.approx(0.1) and tc.epochs == 200
    assert set(config["norms"]) == {"bn", "l1bn", "linfbn", "topkbn", "wn", "bwn"}
    assert config["topk"] == 10


def test_paper_training_runs_a_few_steps_on_cifar_shaped_data():
    config = chapter.resolve("paper", device="cpu", lowp_dtype="bfloat16", resnet_depth=8, width=4)
    point = next(p for p in lb.training_grid(config) if p["norm"] == "bwn")
    point["dataset"] = {"name": "synthetic", "shape": [3, 32, 32], "num_classes": 10, "subset": 32, "test_subset": 16}
    point["train"] = {**point["train"], "max_steps": 2, "batch_size": 16}
    out = lb.train_point(**point)
    assert out["steps"] == 2 and len(out["loss"]) == 2


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"const_ns": [16, 5]}, r"parameter 'const_ns'.*5.*>= topk=10"),
        ({"topk": 0}, r"parameter 'topk'"),
        ({"sigmas": [0.1]}, r"parameter 'sigmas'.*>= 0.3"),
        ({"sigmas": [64.0]}, r"parameter 'sigmas'.*<= 32"),
        ({"norms": ["bn", "gn"]}, r"parameter 'norms'.*bn, l1bn, linfbn, topkbn, wn, bwn"),
        ({"lowp_dtype": "float8"}, r"parameter 'lowp_dtype'.*bfloat16, float16"),
        ({"lowp_dtype": "float16"}, r"parameter 'lowp_dtype'.*'float16' on device 'cpu'"),
        ({"arch": "vgg"}, r"parameter 'arch'.*cnn, resnet"),
        ({"resnet_depth": 21}, r"parameter 'resnet_depth'.*6n\+2"),
        ({"const_repeats": 1}, r"parameter 'const_repeats'"),
        ({"dataset": "imagenet"}, r"parameter 'dataset'"),
        ({"colour": 1}, r"unknown parameter 'colour'"),
    ],
)
def test_invalid_parameters(overrides, match):
    with pytest.raises(ParameterError, match=match):
        chapter.resolve("book", **overrides)


def test_fp16_deviation_matches_float64_below_overflow_and_overflows_above():
    gen = torch.Generator().manual_seed(0)
    x = 4.0 * torch.randn(2, 30_000, generator=gen, dtype=torch.float64)
    small = x[:, :2000]
    for kind in ("l2", "l1"):
        rel = lb.fp16_deviation(small, kind, "fp16") / lb.reference_deviation(small, kind) - 1
        assert rel.abs().max() < 0.01
    assert torch.isinf(lb.fp16_deviation(x[:, :8000], "l2", "fp16")).all()  # predicted n* = 4095
    assert torch.isfinite(lb.fp16_deviation(x[:, :8000], "l1", "fp16")).all()  # predicted n* = 20525
    assert torch.isfinite(lb.fp16_deviation(x[:, :8000], "l2", "fp32")).all()  # float32 accumulator
    n2 = lb.overflow_size(x[0].half(), "l2")
    assert abs(n2 / theory.l2_overflow_n(4.0) - 1) < 0.1
    assert lb.overflow_size(x[0, :100].half(), "l2") == float("inf")


@pytest.fixture(scope="module")
def tiny():
    config = chapter.resolve("book", **TINY)
    return config, chapter.measure(config, cache=False, executor="serial")


def test_measurement_is_tidy_and_deterministic(tiny):
    config, measured = tiny
    assert set(measured) == {"constants", "thresholds", "curves", "window", "train"}
    constants = measured["constants"]
    assert set(constants.deviation) == set(lb.DEVIATIONS) and set(constants.n) == {16, 200}
    assert set(measured["thresholds"].kind) == {"l2", "l1"} and len(measured["thresholds"]) == 2 * 2 * 2
    assert set(zip(measured["train"].norm, measured["train"].precision)) == set(lb.training_runs(config))
    assert len(measured["train"]) == 6 + 2
    again = chapter.measure(config, cache=False, executor="serial")
    for key in ("constants", "thresholds", "curves", "window"):
        pd.testing.assert_frame_equal(measured[key], again[key])
    cols = ["norm", "precision", "diverged", "final_loss", "test_accuracy", "steps"]
    pd.testing.assert_frame_equal(measured["train"][cols], again["train"][cols])


def test_claims_hold_with_the_right_theory(tiny):
    config, measured = tiny
    verdicts = {c.id: c for c in verdicts_of(config, measured)}
    assert {
        "L.c_l1",
        "L.c_linf",
        "L.c_topk",
        "L.c_derived",
        "L.overflow_l2.s4",
        "L.overflow_l2.s16",
        "L.l1_survives",
        "L.l1_vs_l2",
        "L.bwn_vs_wn",
        "L.lowp_l1bn",
        "L.lowp_bn",
    } == set(verdicts)
    for cid in ("L.c_l1", "L.c_derived", "L.overflow_l2.s4", "L.overflow_l2.s16", "L.l1_survives"):
        assert verdicts[cid].passed, verdicts[cid]
    assert not verdicts["L.c_linf"].passed and verdicts["L.c_linf"].measured > 1.2  # the code's constant


class DoubleOverflow:
    """normlib.theory, except that float16's L2 sum overflows at twice the predicted size."""

    def __getattr__(self, name):
        return getattr(theory, name)

    def l2_overflow_n(self, sigma):
        return 2 * theory.l2_overflow_n(sigma)


class UnbiasedConstants:
    """normlib.theory, except that every scaled deviation estimates sigma exactly."""

    def __getattr__(self, name):
        return getattr(theory, name)

    def l2_deviation_ratio(self, n):
        return 1.0

    l1_deviation_ratio = linf_deviation_ratio = l2_deviation_ratio

    def topk_deviation_ratio(self, n, k):
        return 1.0


def test_wrong_theories_fail_the_checks(tiny):
    config, measured = tiny
    verdicts = {c.id: c.passed for c in verdicts_of(config, measured, DoubleOverflow())}
    assert not verdicts["L.overflow_l2.s4"] and not verdicts["L.overflow_l2.s16"]
    assert not {c.id: c.passed for c in verdicts_of(config, measured, UnbiasedConstants())}["L.c_derived"]


def test_training_claims_follow_the_accuracies(tiny):
    config, measured = tiny
    train = measured["train"].copy()
    train.loc[train.norm == "wn", ["diverged", "test_accuracy"]] = [True, float("nan")]
    train.loc[(train.norm == "l1bn") & (train.precision == "float32"), "test_accuracy"] = 0.0
    train.loc[(train.norm == "bn") & (train.precision == "float32"), "test_accuracy"] = 0.9
    verdicts = {c.id: c.passed for c in verdicts_of(config, {**measured, "train": train})}
    assert verdicts["L.bwn_vs_wn"] or bool(train[train.norm == "bwn"].diverged.iloc[0])  # a diverged WN scores 0
    assert not verdicts["L.l1_vs_l2"]
    only = chapter.resolve("book", **{**TINY, "norms": ["bn", "wn"], "lowp_norms": ["bn"]})
    ids = {c.id for c in verdicts_of(only, measured)}
    assert "L.l1_vs_l2" not in ids and "L.bwn_vs_wn" not in ids and "L.lowp_bn" in ids


def test_run_executes_the_notebook_with_papermill(run_notebook):
    run_dir = run_notebook(
        "08_lp_batchnorm_low_precision",
        {
            "const_ns": [16, 128],
            "const_repeats": 16,
            "sigmas": [4, 16],
            "overflow_repeats": 1,
            "norms": "bn,l1bn,bwn",
            "lowp_norms": "l1bn",
            "width": 4,
            "dataset": "synthetic",
            "subset": 32,
            "test_subset": 16,
            "batch_size": 16,
        },
    )
    assert (run_dir / "08_lp_batchnorm_low_precision.ipynb").exists()
    assert len(list((run_dir / "figures").glob("*.png"))) >= 3
    records = json.loads((run_dir / "claims.json").read_text())
    ids = {r["id"] for r in records}
    assert {"L.c_l1", "L.overflow_l2.s4", "L.l1_survives", "L.l1_vs_l2", "L.lowp_l1bn"} <= ids
    assert "L.bwn_vs_wn" not in ids and "L.lowp_bn" not in ids
    assert json.loads((run_dir / "parameters.json").read_text())["width"] == 4
