"""Chapter 04, the compass: presets, validation, grades, the RMSNorm identity, and rows that can fail."""

import numpy as np
import pandas as pd
import pytest
import torch

from normlib import models, theory
from normlib.experiments import compass
from normlib.params import ParameterError

chapter = compass.EXPERIMENT


def test_presets_resolve_with_the_papers_ten():
    for preset in ("book", "paper"):
        config = chapter.resolve(preset)
        assert config["norm"] == "rms"
        assert set(config["baseline_norms"]) == {"bn", "ln", "in", "gn", "frn", "vn", "wn", "sws", "evo_b0", "evo_s0"}
    assert chapter.resolve("paper")["init_batch"] == 256


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"norm": "bn"}, r"parameter 'norm'.*also a baseline"),
        ({"train_baselines": ["bn", "none"]}, r"parameter 'train_baselines'.*'none' is not in baseline_norms"),
        ({"resnet_depth": 21}, r"parameter 'resnet_depth'.*6n\+2"),
        ({"baseline_norms": ["bn", "batchnorm"]}, r"parameter 'baseline_norms'.*batchnorm"),
        ({"width": 20}, r"parameter 'width'.*gn cannot be built"),
        ({"pool": 20}, r"parameter 'pool'"),
    ],
)
def test_invalid_parameters(overrides, match):
    with pytest.raises(ParameterError, match=match):
        chapter.resolve("book", **overrides)


def test_grades_and_their_thresholds():
    assert compass.A_LINEAR_MAX == pytest.approx(1.12)
    assert compass.C_EXPLODES_MIN == pytest.approx((1 + np.pi / (np.pi - 1)) / 2)
    assert compass.grade_a(1.02, 1.0) == "linear"
    assert compass.grade_a(1.8, 4.0) == "exponential"
    assert compass.grade_a(float("nan"), 0.1) == "bounded"
    assert compass.grade_b(0.3, 0.6) == "informative" and compass.grade_b(0.9, 0.6) == "similar"
    assert compass.grade_c(1.46) == "explodes" and compass.grade_c(1.05) == "tame"


def test_rmsnorm_cnn_has_exactly_the_cosines_of_the_cnn_without_normalizer():
    """The derivation behind C04.B.rms: one positive number per sample passes through convs and ReLUs."""
    x = torch.randn(8, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    outs = {}
    for norm in ("rms", "none"):
        torch.manual_seed(3)
        model = models.make_cnn("uniform", depth=6, width=16, in_channels=1, num_classes=10, norm=norm)
        h = x
        for unit in model.units:
            h = unit(h)
        feats = torch.nn.functional.normalize(h.flatten(1), dim=1)
        outs[norm] = feats @ feats.T
    torch.testing.assert_close(outs["rms"], outs["none"], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def bn_ln_card():
    """The report card's measurement of BatchNorm and LayerNorm at the book's sizes (one repeat)."""
    config = chapter.resolve("book", norm="ln", baseline_norms=["bn"], train_baselines=["bn"], repeats=1)
    init = compass.measure_init(config, cache=False)
    return compass.report_card(config, init, chapter.predict(config))


@pytest.mark.training
def test_report_card_grades_bn_and_ln_as_chapters_01_to_03_found(bn_ln_card):
    card = bn_ln_card.set_index("norm")
    assert tuple(card.loc["bn", ["A", "B", "C"]]) == ("linear", "informative", "explodes")
    assert tuple(card.loc["ln", ["A", "B", "C"]]) == ("linear", "similar", "tame")
    assert card.loc["bn", "C theory"].startswith("factor 1.467")
    assert "no prediction" not in card.loc["ln"].to_list()


def _fake(config, values, accuracies):
    """A measurement with the given (acceleration, late_rise, cosine, grad_factor) per layer and training accuracies."""
    init = pd.DataFrame(
        [{"norm": n, "acceleration": a, "late_rise": r, "growth": 1.3, "cosine": c, "stable_rank": 1.0,
          "grad_factor": g} for n, (a, r, c, g) in values.items()]
    )  # fmt: skip
    trained = pd.DataFrame([{"norm": n, "mean_train_acc": acc, "test_acc": acc, "diverged": False,
                             "diverged_step": None} for n, acc in accuracies.items()])  # fmt: skip
    return {"init": init, "train": trained}


CONFIG = dict(baseline_norms=["bn", "ln", "evo_s0"], train_baselines=["bn", "evo_s0", "ln"])
GOOD = {
    "rms": (1.03, 1.1, 0.88, 1.05),
    "bn": (1.02, 1.1, 0.45, 1.46),
    "ln": (1.02, 1.1, 0.87, 1.05),
    "evo_s0": (float("nan"), 0.1, 0.45, 1.3),
}
FAST_FIRST = {"bn": 0.45, "evo_s0": 0.3, "rms": 0.2, "ln": 0.15}


@pytest.fixture(scope="module")
def config():
    return chapter.resolve("book", **CONFIG)


def _rows(config, values, accuracies):
    measured = _fake(config, values, accuracies)
    return {c.id: c for c in chapter.check(config, measured, chapter.predict(config, measured))}


def test_every_row_passes_on_the_expected_measurement_and_fails_under_its_alternative(config):
    rows = _rows(config, GOOD, FAST_FIRST)
    assert set(rows) == {"C04.A.rms", "C04.B.rms", "C04.C.rms", "C04.grades.bn", "C04.grades.ln", "C04.train.order"}
    for row in rows.values():
        assert row.passed, row
        assert row.alternative and row.alternative_passed is False, row
    # consistency checks of the card, and RMSNorm's cosine, which is the unnormalized net's exactly, are identities
    identities = {"C04.B.rms", "C04.grades.bn", "C04.grades.ln"}
    assert {i for i, r in rows.items() if r.kind == "identity"} == identities
    assert all(r.kind == "derived" for i, r in rows.items() if i not in identities)


@pytest.mark.parametrize(
    "row_id, change",
    [
        ("C04.A.rms", {"rms": (1.24, 2.0, 0.88, 1.05)}),  # the alternative: exponential by 1.24 per block
        ("C04.B.rms", {"rms": (1.03, 1.1, 0.34, 1.05)}),  # the alternative: BatchNorm's cosine
        ("C04.C.rms", {"rms": (1.03, 1.1, 0.88, np.pi / (np.pi - 1))}),  # the alternative: BatchNorm's factor
        ("C04.grades.bn", {"bn": (1.02, 1.1, 0.87, 1.05)}),  # the alternative: BatchNorm graded like LayerNorm
        ("C04.grades.ln", {"ln": (1.02, 1.1, 0.45, 1.46)}),  # the alternative: LayerNorm graded like BatchNorm
    ],
)
def test_each_row_flips_when_fed_its_alternative(config, row_id, change):
    assert not _rows(config, {**GOOD, **change}, FAST_FIRST)[row_id].passed


def test_the_order_row_flips_under_the_reversed_order(config):
    reversed_speed = {"bn": 0.15, "evo_s0": 0.2, "rms": 0.3, "ln": 0.45}
    assert not _rows(config, GOOD, reversed_speed)["C04.train.order"].passed
    # pairs closer than the tie width are not ordered: LayerNorm and RMSNorm may come either way
    assert _rows(config, GOOD, {**FAST_FIRST, "rms": 0.1})["C04.train.order"].passed
    measured = _fake(config, GOOD, FAST_FIRST)
    pairs = compass.separated_pairs(
        measured["init"], compass.predicted_order(measured["init"], ["rms", *CONFIG["train_baselines"]])
    )
    assert ("rms", "ln") not in pairs and ("ln", "rms") not in pairs and ("bn", "ln") in pairs


def test_theory_places_rms_and_says_no_prediction_for_a_plugin(config):
    assert compass.a_law("rms") == "linear" and compass.a_law("wn") == "exponential"
    assert compass.a_law("examples/maxnorm.py:MaxNorm2d") is None
    assert compass.c_factor(config, "rms") == 1.0
    assert compass.c_factor(config, "bn") == pytest.approx(theory.bn_growth_factor())
    assert compass.c_factor(config, "frn") is None and compass.b_setting(config, "frn") is None
    assert compass.b_setting(config, "rms") == ("none", None)


def test_advice_names_skipinit_and_small_batch_risk():
    card = pd.DataFrame([{"norm": "x", "A": "exponential", "B": "informative", "C": "explodes"}])
    words = " ".join(compass.advice(card, "x"))
    assert "SkipInit" in words and "small batch" in words and "fast" in words
