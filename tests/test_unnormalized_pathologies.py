"""Bjorck et al.'s unnormalized pathologies: presets, validation, a tiny measurement, claims that can fail, and the
notebook run."""

import json

import numpy as np
import pytest

from normlib import models, theory
from normlib.experiments import unnormalized_pathologies as up
from normlib.params import ParameterError

chapter = up.EXPERIMENT

TINY = dict(
    depth=8,
    widths=[4, 4, 4],
    dataset="synthetic",
    batch_size=8,
    repeats=1,
    rmt_width=40,
    rmt_factors=[1, 2],
    rmt_trials=1,
    linear_width=6,
    linear_depths=[1, 2, 3],
    linear_trials=10,
)


def test_paper_preset_is_the_papers_setup():
    config = chapter.resolve("paper")
    assert (config["depth"], config["widths"], config["dataset"]) == (110, [16, 32, 64], "cifar10")
    assert config["norm"] == "bn" and config["batch_size"] == 128 and config["rmt_factors"] == [1, 3, 5]
    assert config["device"] == "auto"


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"norm": "none"}, r"parameter 'norm'.*allowed: a normalizer.*bn"),
        ({"norm": "batchnorm"}, r"parameter 'norm'.*bn"),
        ({"depth": 9}, r"parameter 'depth'.*6n\+2"),
        ({"widths": [16, 32]}, r"parameter 'widths'"),
        ({"gradient_layer": 500}, r"parameter 'gradient_layer'.*from 1 to 111"),
        ({"rmt_factors": [1, 1]}, r"parameter 'rmt_factors'.*duplicate"),
        ({"linear_depths": [3]}, r"parameter 'linear_depths'.*at least two"),
        ({"dataset": "imagenet"}, r"parameter 'dataset'.*fashion-mnist"),
        ({"depth_of_field": 3}, r"unknown parameter 'depth_of_field'"),
    ],
)
def test_invalid_parameters(overrides, match):
    with pytest.raises(ParameterError, match=match):
        chapter.resolve("book", **overrides)


def test_conv_count_and_middle_layer():
    model = models.make_resnet(110, (4, 4, 4), norm="none", in_channels=3, num_classes=10)
    assert up.num_convs(110) == len(model.conv_points()) == 111
    assert up.gradient_layer(chapter.resolve("book")) == 56


@pytest.fixture(scope="module")
def tiny():
    config = chapter.resolve("book", **TINY)
    return config, chapter.measure(config, cache=False)


def test_measurement_is_tidy_and_deterministic(tiny):
    config, measured = tiny
    assert set(measured) == {"stream", "gradients", "logit_gradients", "singular_values", "condition"}
    assert set(measured["stream"].norm) == {"bn", "none"}
    assert len(measured["stream"]) == 2 * (1 + 3)  # stem + 3 blocks, two networks
    assert len(measured["singular_values"]) == 2 * 40 and len(measured["condition"]) == 3 * 10
    again = chapter.compute(config)
    for key in measured:
        assert measured[key].equals(again[key]), key


def test_summaries_on_known_cases(tiny):
    config, measured = tiny
    logit = measured["logit_gradients"].copy()
    logit["predicted"] = 3  # every image predicted as class 3
    assert up.one_class_fraction({**measured, "logit_gradients": logit}, "none") == 1.0
    values = measured["singular_values"].copy()
    values.loc[values.factors == 1, "singular_value"] = np.sqrt(np.linspace(1e-6, 4, (values.factors == 1).sum()))
    assert up.ks_distance({**measured, "singular_values": values}, 1) > 0.05  # uniform in s^2, not Marchenko-Pastur


class WrongTheory:
    """normlib.theory, except that the stream grows x10 per block and every product's edge is at 10."""

    def __getattr__(self, name):
        return getattr(theory, name)

    def mean_field_stream(self, unit, blocks, **options):
        return 10.0 ** np.arange(1 + blocks)

    def product_singular_value_max(self, m):
        return 10.0


def test_claims_fail_when_the_theory_is_wrong(tiny):
    config, measured = tiny
    ids = {c.id for c in chapter.check(config, measured, chapter.predict(config, measured))}
    assert {
        "U.none_growth",
        "U.norm_growth",
        "U.gradient_scale",
        "U.one_class",
        "R.smax_1",
        "R.law_2",
        "R.condition",
    } <= ids
    wrong = chapter.predict(config, measured, theory=WrongTheory())
    verdicts = {c.id: c.passed for c in chapter.check(config, measured, wrong)}
    assert not verdicts["U.none_growth"] and not verdicts["R.smax_1"]


def test_run_executes_the_notebook_with_papermill(run_notebook):
    run_dir = run_notebook("06_unnormalized_pathologies", TINY)
    assert (run_dir / "06_unnormalized_pathologies.ipynb").exists()
    assert len(list((run_dir / "figures").glob("*.png"))) >= 5
    records = json.loads((run_dir / "claims.json").read_text())
    assert "R.condition" in {r["id"] for r in records}
    assert json.loads((run_dir / "parameters.json").read_text())["rmt_width"] == 40
