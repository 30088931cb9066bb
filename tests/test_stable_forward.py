"""Principle A's experiment: presets, validation, measurement, and claim checks that can fail."""

import numpy as np
import pandas as pd
import pytest

from normlib import theory
from normlib.experiments import stable_forward as sf
from normlib.params import ParameterError

chapter = sf.EXPERIMENT

SMALL = dict(norms=["bn", "sws", "none"], depth=20, widths=[16, 16, 16], batch_size=8, image_size=8, repeats=1)


def test_paper_preset_is_the_papers_resnet56_on_cifar100_shapes():
    config = chapter.resolve("paper")
    assert config["depth"] == 56 and config["widths"] == [32, 64, 128] and config["block"] == "post"
    assert config["image_size"] == 32 and config["batch_size"] == 256 and config["device"] == "auto"
    assert set(config["norms"]) == {"none", "bn", "ln", "in", "gn", "frn", "vn", "wn", "sws", "evo_b0", "evo_s0"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"depth": 21}, r"parameter 'depth'.*6n\+2"),
        ({"norms": ["bn", "batchnorm"]}, r"parameter 'norms'.*batchnorm.*bn, ln"),
        ({"group_size": 3}, r"parameter 'group_size'.*valid group sizes: 1, 2, 4"),
        ({"widths": [32, 64]}, r"parameter 'widths'.*three stage widths"),
        ({"variants": ["plain", "fixup"]}, r"parameter 'variants'.*plain, skipinit, nf"),
        ({"block": "sideways"}, r"parameter 'block'.*post, pre"),
        ({"seed": -1}, r"parameter 'seed'"),
    ],
)
def test_invalid_parameters(overrides, match):
    with pytest.raises(ParameterError, match=match):
        chapter.resolve("book", **overrides)


def test_runs_skip_the_nf_remedy_for_activation_based_layers():
    pairs = sf.runs(chapter.resolve("book", norms=["bn", "wn"]))
    assert ("bn", "nf") not in pairs and ("wn", "nf") in pairs and ("bn", "skipinit") in pairs


def test_map_sizes_and_transitions():
    config = chapter.resolve("book", **SMALL)
    assert sf.transition_blocks(20) == (4, 7)
    assert sf.map_sizes(config) == [8, 8, 8, 8, 4, 4, 4, 2, 2, 2]


@pytest.fixture(scope="module")
def small_measurement():
    config = chapter.resolve("book", **SMALL)
    return config, chapter.measure(config, cache=False)


def test_measurement_is_tidy_and_deterministic(small_measurement):
    config, measured = small_measurement
    assert list(measured.columns) == ["norm", "variant", "repeat", "block", "point", "metric", "value"]
    blocks = 3 * ((config["depth"] - 2) // 6)
    assert set(measured.block) == set(range(blocks + 1))
    assert len(measured) == len(sf.runs(config)) * (blocks + 1) * 2
    again = chapter.measure(config, cache=False)
    pd.testing.assert_frame_equal(measured, again)


def test_claims_hold_with_the_right_theory(small_measurement):
    config, measured = small_measurement
    checks = chapter.check(config, measured, chapter.predict(config, measured))
    assert {c.id for c in checks} >= {"A.linear.bn", "A.exponential.sws", "A.exponential.none", "A.flat.bn"}
    assert all(c.passed for c in checks), [(c.id, c.predicted, c.measured) for c in checks if not c.passed]


class DoublingTheory:
    """normlib.theory, except that every residual stream doubles at every block."""

    def __getattr__(self, name):
        return getattr(theory, name)

    def mean_field_stream(self, unit, blocks, **options):
        return theory.geometric_growth(blocks, 2.0, 1.0)


def test_a_wrong_theory_fails_the_check(small_measurement):
    config, measured = small_measurement
    # Claim that BatchNorm doubles the stream at every block: the check must say "not reproduced".
    wrong = chapter.predict(config, measured, theory=DoublingTheory())
    verdicts = {c.id: c.passed for c in chapter.check(config, measured, wrong)}
    assert verdicts["A.linear.bn"] is False
    assert verdicts["A.flat.bn"] is False


def test_growth_separates_the_laws(small_measurement):
    config, measured = small_measurement
    bn = sf.growth(config, sf.mean_curve(measured, "bn", "plain"))
    sws = sf.growth(config, sf.mean_curve(measured, "sws", "plain"))
    flat = sf.growth(config, sf.mean_curve(measured, "bn", "skipinit"))
    assert sws > bn > 1.0  # short stages: linear growth from the stem still looks steep
    assert flat == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.isfinite(sf.mean_curve(measured, "none", "nf")))
