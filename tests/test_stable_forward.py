"""Principle A's experiment: presets, validation, measurement, and claim checks that can fail."""

import numpy as np
import pandas as pd
import pytest

from normlib import theory
from normlib.experiments import stable_forward as sf
from normlib.params import ParameterError

chapter = sf.EXPERIMENT

#: One normalizer of every law: linear (bn), exponential (sws, none, wn), bounded (evo_b0); with SkipInit flat (an
#: identity) or rescaled (wn, evo_b0); the NF remedy for the parametric ones and none.
SMALL = dict(
    norms=["bn", "sws", "none", "wn", "evo_b0"], depth=20, widths=[16, 16, 16], batch_size=8, image_size=8, repeats=1,
    train_norms=["bn"], train_depth=8, train_widths=[4, 4, 4], train_batch_size=8, train_steps=10,
    dataset="synthetic",
)  # fmt: skip


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
        ({"train_depth": 21}, r"parameter 'train_depth'.*6n\+2"),
        ({"train_widths": [8, 16]}, r"parameter 'train_widths'.*three stage widths"),
        ({"train_norms": ["bn", "batchnorm"]}, r"parameter 'train_norms'.*batchnorm"),
        ({"downsample": 8}, r"parameter 'downsample'"),
        ({"train_steps": 5}, r"parameter 'train_steps'"),
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
    return config, chapter.measure(config, executor="serial", cache=False)


def test_measurement_is_tidy_and_deterministic(small_measurement):
    config, both = small_measurement
    measured = both["streams"]
    assert list(measured.columns) == ["norm", "variant", "repeat", "block", "point", "metric", "value"]
    blocks = 3 * ((config["depth"] - 2) // 6)
    assert set(measured.block) == set(range(blocks + 1))
    assert len(measured) == len(sf.runs(config)) * (blocks + 1) * 2
    again = chapter.measure(config, executor="serial", cache=False)
    pd.testing.assert_frame_equal(measured, again["streams"])
    train = both["train"]
    assert list(zip(train.norm, train.variant)) == [("bn", "plain"), ("bn", "skipinit")]
    assert set(train.steps) <= {config["train_steps"]} | set(train.diverged_step.dropna() + 1)
    pd.testing.assert_frame_equal(train, again["train"])


def test_every_row_has_a_kind_and_an_alternative(small_measurement):
    config, measured = small_measurement
    checks = chapter.check(config, measured, chapter.predict(config, measured))
    ids = {c.id for c in checks}
    assert {"A.linear.bn", "A.exponential.sws", "A.exponential.none", "A.flat.bn", "A.nf.sws", "A.nf_jump.none"} <= ids
    assert {"A.rescaled.wn", "A.flat.wn", "A.bounded.evo_b0", "A.rescaled.evo_b0"} <= ids
    for check in checks:
        assert check.kind in ("paper", "derived", "known", "identity"), check.id
        if check.kind != "identity":
            assert check.alternative and check.alternative_passed is not None, check.id
    assert "A.train.bn" in ids
    identities = {c.id for c in checks if c.kind == "identity"}
    assert identities == {"A.flat.bn", "A.flat.sws", "A.flat.none"}
    (remedy,) = [c for c in checks if c.id == "A.flat.wn"]
    assert remedy.expected is False and "scaled ReLU" in remedy.reason
    # the factor of a large non-negative stream is the scaled ReLU's gain squared, 2 pi/(pi - 1) = 2.93
    assert "2 pi/(pi - 1) = 2.93" in remedy.reason and "not the authors' WN block" in remedy.reason
    assert "this book's block" in remedy.statement
    # the NF-ResNet scheme is Brock et al.'s; every other row is property A of the paper
    for check in checks:
        expected_paper = sf.NF_PAPER if check.id.startswith(("A.nf.", "A.nf_jump.")) else sf.PAPER
        assert check.paper == expected_paper, check.id
        if check.kind != "identity" and not check.id.startswith("A.train."):
            assert "second moment" in check.statement and "per-channel variance" in check.statement, check.id


def test_claims_hold_with_the_right_theory(small_measurement):
    """At tiny parameters (3 blocks a stage, one small batch) the accelerations are noisy, so only the rows that
    do not depend on a long stage are asserted here; the book's defaults are checked by ``normlib claims``."""
    config, measured = small_measurement
    checks = {c.id: c for c in chapter.check(config, measured, chapter.predict(config, measured))}
    for key in ("A.flat.bn", "A.flat.sws", "A.flat.none", "A.linear.bn", "A.rescaled.wn", "A.nf.sws"):
        assert checks[key].passed, (key, checks[key].predicted, checks[key].measured)
    assert not checks["A.flat.wn"].passed


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
    assert verdicts["A.flat.bn"] is False  # an identity fails only on a bug, and a wrong model is one


# ------------------------------------------------------------------ the verdicts flip under the alternatives


def frame_of(config, curves):
    """A measurement in the tidy format of measure_streams, with the given curve for every (norm, variant)."""
    rows = [
        {"norm": n, "variant": v, "repeat": 0, "block": b, "point": f"block{b}", "metric": "second_moment", "value": x}
        for (n, v), curve in curves.items()
        for b, x in enumerate(curve)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def book():
    """The book's defaults with the mean-field curves standing in for the measurement (no network is run)."""
    config = chapter.resolve("book", norms=["bn", "none", "wn", "sws", "evo_b0", "evo_s0"])
    predicted = chapter.predict(config)
    return config, predicted


def verdicts(config, predicted, curves):
    return {c.id: c.passed for c in chapter.check(config, frame_of(config, curves), predicted)}


def test_a_measurement_that_follows_the_model_reproduces_every_row_but_the_remedy(book):
    config, predicted = book
    passed = verdicts(config, predicted, predicted["curves"])
    assert not passed["A.flat.wn"]
    assert all(v for k, v in passed.items() if k != "A.flat.wn"), passed


def test_linear_rows_flip_under_exponential_growth_with_the_same_factor(book):
    config, predicted = book
    curves = dict(predicted["curves"])
    model = curves[("bn", "plain")]
    curves[("bn", "plain")] = sf.exponential_alike(config, model)
    # the per-block growth factor, the statistic the row used to compare, cannot tell the two apart
    assert sf.growth(config, curves[("bn", "plain")]) == pytest.approx(sf.growth(config, model))
    assert verdicts(config, predicted, curves)["A.linear.bn"] is False


def within_stages(config, model, law):
    """A curve that starts every stage where ``model`` does and follows ``law(start, steps)`` within it."""
    out = np.empty_like(model)
    for first, last in theory.stages(len(model), sf.transition_blocks(config["depth"])):
        out[first : last + 1] = law(model[first], np.arange(last - first + 1))
    return out


@pytest.mark.parametrize("rate", [sf.SLOW_EXPONENTIAL_RATE, "just_past_the_tolerance"])
def test_linear_rows_flip_under_a_slow_exponential(book, rate):
    """The tolerance is on a - 1, not relative: the named alternative (1.24 per block) fails, and so does every
    exponential just past model + tolerance, whatever the offset it grows from."""
    config, predicted = book
    model = predicted["curves"][("bn", "plain")]
    if rate == "just_past_the_tolerance":
        rate = sf.acceleration(config, model) + sf.LINEAR_ACC_ABS_TOL + 0.01
    (row,) = [c for c in chapter.check(config, frame_of(config, predicted["curves"]), predicted)
              if c.id == "A.linear.bn"]  # fmt: skip
    assert row.passed and row.alternative_value == pytest.approx(sf.SLOW_EXPONENTIAL_RATE)
    assert row.alternative_passed is False
    for offset in (0.0, 1.0, 10.0):
        slow = within_stages(config, model, lambda start, steps, c=offset: c + start * rate**steps)
        assert sf.acceleration(config, slow) == pytest.approx(rate)
        assert verdicts(config, predicted, {**predicted["curves"], ("bn", "plain"): slow})["A.linear.bn"] is False


def test_exponential_rows_flip_under_linear_growth(book):
    config, predicted = book
    curves = {**predicted["curves"], ("sws", "plain"): predicted["linear_curves"]["plain"]}
    assert verdicts(config, predicted, curves)["A.exponential.sws"] is False


def nf_without_beta(config, model):
    """The NF stream without the beta rescaling: the branch adds alpha^2 m_l, 1 + alpha^2 per block, restarting
    where the model does."""
    out = np.empty_like(model)
    for first, last in theory.stages(len(model), sf.transition_blocks(config["depth"])):
        out[first : last + 1] = model[first] * (1 + config["alpha"] ** 2) ** np.arange(last - first + 1)
    return out


@pytest.mark.parametrize("norm", ["none", "wn", "sws"])
def test_nf_rows_flip_without_the_beta_rescaling(book, norm):
    config, predicted = book
    model = predicted["curves"][(norm, "nf")]
    passed = verdicts(config, predicted, {**predicted["curves"], (norm, "nf"): nf_without_beta(config, model)})
    assert passed[f"A.nf.{norm}"] is False


def test_nf_rows_cannot_tell_the_laws_apart_at_brock_et_als_alpha():
    """Why the book's alpha is 1: at 0.2 the stream without beta grows by 1.04 per block, inside the tolerance."""
    config = chapter.resolve("book", norms=["none"], variants=["nf"], alpha=0.2)
    predicted = chapter.predict(config)
    (row,) = [c for c in chapter.check(config, frame_of(config, predicted["curves"]), predicted) if c.id == "A.nf.none"]
    assert row.passed and row.alternative_passed  # it cannot fail under its alternative: no evidence


def test_nf_jump_flips_without_a_restart(book):
    config, predicted = book
    model = predicted["curves"][("none", "nf")]
    carried = model.copy()
    rate = sf.growth(config, model)
    for t in sf.transition_blocks(config["depth"]):
        carried[t:] = carried[t:] / model[t] * carried[t - 1] * rate  # the block grows the stream like any other
    passed = verdicts(config, predicted, {**predicted["curves"], ("none", "nf"): carried})
    assert passed["A.nf_jump.none"] is False


@pytest.mark.parametrize("norm", ["evo_b0", "evo_s0"])
@pytest.mark.parametrize("start, increment", [(None, None), (0.5, 1.0), (0.5, 0.02), (5.0, 0.1), (50.0, 0.01)])
def test_bounded_rows_flip_under_linear_growth_whatever_its_start_and_increment(book, norm, start, increment):
    """A growth factor depends on a linear stream's start and increment (a small increment or a large start looks
    as flat as a bounded stream); the late-to-early rise is 1 for every linear stream, so the row fails for each."""
    config, predicted = book
    if start is None:
        linear = predicted["linear_curves"]["plain"]  # the mean-field linear stream of this block
    else:
        model = predicted["curves"][(norm, "plain")]
        linear = within_stages(config, model, lambda _, steps: start + increment * steps)
        assert sf.late_rise(config, linear) == pytest.approx(1.0)
    curves = {**predicted["curves"], (norm, "plain"): linear}
    assert verdicts(config, predicted, curves)[f"A.bounded.{norm}"] is False


def test_late_rise_separates_settling_from_linear_and_exponential(book):
    config, _ = book
    n = 3 * ((config["depth"] - 2) // 6) + 1
    ramp = 3.0 + 0.2 * np.arange(n)
    assert sf.late_rise(config, ramp) == pytest.approx(1.0)  # continuing across stages: still 1
    settled = np.concatenate([[0.5], np.full(n - 1, 1.0)])  # rises once, then stays
    assert sf.late_rise(config, settled) == pytest.approx(0.0)
    assert sf.late_rise(config, theory.geometric_growth(n - 1, 1.1, 1.0)) > 1.4
    assert np.isnan(sf.late_rise(config, np.ones(n)))  # no early rise: no statistic


@pytest.mark.parametrize("norm", ["wn", "evo_b0"])
def test_rescaled_rows_flip_and_the_remedy_row_holds_on_a_flat_stream(book, norm):
    config, predicted = book
    model = predicted["curves"][(norm, "skipinit")]
    passed = verdicts(config, predicted, {**predicted["curves"], (norm, "skipinit"): sf.flat_alike(config, model)})
    assert passed[f"A.rescaled.{norm}"] is False
    if norm == "wn":
        assert passed["A.flat.wn"] is True  # the paper's remedy would be reproduced on a flat stream


def test_growth_separates_the_laws(small_measurement):
    config, both = small_measurement
    measured = both["streams"]
    bn = sf.growth(config, sf.mean_curve(measured, "bn", "plain"))
    sws = sf.growth(config, sf.mean_curve(measured, "sws", "plain"))
    flat = sf.growth(config, sf.mean_curve(measured, "bn", "skipinit"))
    assert sws > bn > 1.0  # short stages: linear growth from the stem still looks steep
    assert flat == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.isfinite(sf.mean_curve(measured, "none", "nf")))


def test_a_stream_near_float32s_range_is_measured_in_float64():
    config = chapter.resolve("book", norms=["wn"], variants=["plain"], depth=110, widths=[8, 8, 8], repeats=1,
                             batch_size=4, train_norms=["bn"], train_depth=8, train_widths=[4, 4, 4],
                             train_batch_size=4, train_steps=10, dataset="synthetic")  # fmt: skip
    measured = chapter.measure(config, executor="serial", cache=False)["streams"]
    curve = sf.mean_curve(measured, "wn", "plain")
    assert np.all(np.isfinite(curve)) and curve.max() > sf.FLOAT32_SAFE
    check = {c.id: c for c in chapter.check(config, measured, chapter.predict(config))}["A.exponential.wn"]
    assert np.isfinite(check.measured) and check.passed


def test_depth_is_bounded_where_float64_holds_every_stream():
    with pytest.raises(ParameterError, match=r"parameter 'depth'"):
        chapter.resolve("book", depth=608)


# ------------------------------------------------------------------ the training rows (performance of property A)


def train_frame(outcomes):
    """A training measurement with the given failed flags, ``{(norm, variant): failed}``."""
    rows = [{"norm": n, "variant": v, "failed": f, "final_loss": 1.0, "diverged": f} for (n, v), f in outcomes.items()]
    return pd.DataFrame(rows)


BOOK_OUTCOMES = {
    ("bn", "plain"): False, ("bn", "skipinit"): False, ("wn", "plain"): True, ("wn", "skipinit"): True,
    ("sws", "plain"): True, ("sws", "skipinit"): False,
}  # fmt: skip


def training_verdicts(config, outcomes):
    return {c.id: c for c in sf.training_rows(config, train_frame(outcomes))}


def test_training_rows_pass_on_the_claimed_outcomes_and_name_their_alternatives():
    config = chapter.resolve("book")
    rows = training_verdicts(config, BOOK_OUTCOMES)
    assert set(rows) == {"A.train.bn", "A.train.wn", "A.train.sws"}
    assert rows["A.train.bn"].passed and rows["A.train.sws"].passed and not rows["A.train.wn"].passed
    assert rows["A.train.wn"].expected is False and "scaled ReLU" in rows["A.train.wn"].reason
    # in the post-activation block the paper's WN remedy is not what is tested: the row is not judged
    assert rows["A.train.wn"].verdict == "not judged" and not rows["A.train.wn"].expected_judged
    assert "activation before the residual sum" in rows["A.train.wn"].precondition
    for row in rows.values():
        assert row.kind == "paper" and row.alternative and row.alternative_passed is False, row.id
    assert "SkipInit changes nothing" in rows["A.train.sws"].alternative
    assert rows["A.train.sws"].measured == 2.0 and rows["A.train.wn"].measured == 1.0


@pytest.mark.parametrize(
    "norm, plain, skipinit",
    [
        ("sws", True, True),  # SkipInit changes nothing: fails either way
        ("sws", False, False),  # SkipInit changes nothing: trains either way
        ("bn", True, False),  # BN needs SkipInit, like a parametric normalizer
        ("bn", True, True),
    ],
)
def test_training_rows_flip_under_their_alternatives(norm, plain, skipinit):
    config = chapter.resolve("book")
    outcomes = {**BOOK_OUTCOMES, (norm, "plain"): plain, (norm, "skipinit"): skipinit}
    assert training_verdicts(config, outcomes)[f"A.train.{norm}"].passed is False


def test_wn_passes_when_skipinit_rescues_it_in_a_pre_activation_block():
    config = chapter.resolve("book", block="pre")
    row = training_verdicts(config, {**BOOK_OUTCOMES, ("wn", "skipinit"): False})["A.train.wn"]
    assert row.passed and row.judged


def test_no_training_runs_and_no_training_rows_at_zero_steps():
    config = chapter.resolve("book", **{**SMALL, "norms": ["bn"], "variants": ["plain"], "train_steps": 0})
    measured = chapter.measure(config, executor="serial", cache=False)
    assert measured["train"] is None
    assert not [c for c in chapter.check(config, measured, chapter.predict(config)) if c.id.startswith("A.train.")]


def test_training_grid_fixes_the_schedule_before_looking():
    config = chapter.resolve("book")
    grid = sf.training_grid(config)
    assert [(p["norm"], p["variant"]) for p in grid] == [(n, v) for n in ("bn", "wn", "sws") for v in sf.TRAIN_VARIANTS]
    train = grid[0]["train"]
    assert train["lr"] == 0.1 and train["lr_scale_with_batch"] is False and train["batch_size"] == 32
    assert grid[0]["dataset"]["subset"] == 32 * 64 and grid[0]["depth"] == 20 and grid[0]["downsample"] == 2
    assert train["seed"] == sf.training_seed(config) != config["seed"]
