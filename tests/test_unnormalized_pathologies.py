"""Bjorck et al.'s unnormalized pathologies: presets, validation, a tiny measurement, claims that can fail, and the
notebook run."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from normlib import claims, models, theory
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
    assert config["device"] == "auto" and (config["init"], config["other_init"]) == ("lecun", "he")


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
        ({"init": "he", "other_init": "he"}, r"parameter 'other_init'"),
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


def test_inits_are_validated_and_reach_the_networks():
    with pytest.raises(ParameterError, match=r"parameter 'other_init'.*same as 'init'.*lecun, torch"):
        chapter.resolve("book", init="he", other_init="he")
    with pytest.raises(ParameterError, match=r"parameter 'init'.*he, lecun, torch"):
        chapter.resolve("book", init="xavier")
    config = chapter.resolve("book", **TINY)
    assert up.inits(config) == ("lecun", "he")
    # the same random state under both: the weights differ by sqrt(2) exactly, so the streams are comparable
    weights = {}
    for init in ("he", "lecun"):
        torch.manual_seed(0)
        weights[init] = models.make_resnet(8, (4, 4, 4), norm="none", in_channels=1, init=init).stem.conv.weight
    torch.testing.assert_close(weights["lecun"] * np.sqrt(2), weights["he"])


def test_default_init_is_bit_identical_to_he_init():
    torch.manual_seed(3)
    plain = models.make_resnet(8, (4, 4, 4), norm="none", in_channels=1)
    torch.manual_seed(3)
    named = models.make_resnet(8, (4, 4, 4), norm="none", in_channels=1, init="he")
    for (name, a), b in zip(plain.state_dict().items(), named.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="unknown init"):
        models.make_resnet(8, (4, 4, 4), init="xavier")


def test_pytorch_default_conv_init_has_a_third_of_the_lecun_variance():
    torch.manual_seed(0)
    model = models.make_resnet(8, (32, 32, 32), norm="none", in_channels=1, init="torch")
    conv = model.blocks[1].conv1  # 32 -> 32 channels, 3x3: fan_in 288
    assert float(conv.weight.detach().var()) * 288 == pytest.approx(models.INIT_GAINS["torch"], rel=0.05)
    assert models.INIT_GAINS == {"he": 2.0, "lecun": 1.0, "torch": pytest.approx(1 / 3)}


@pytest.fixture(scope="module")
def tiny():
    config = chapter.resolve("book", **TINY)
    return config, chapter.measure(config, cache=False)


def test_measurement_is_tidy_and_deterministic(tiny):
    config, measured = tiny
    assert set(measured) == {
        "stream",
        "gradients",
        "logit_gradients",
        "batch_labels",
        "singular_values",
        "condition",
    }
    assert set(measured["stream"].norm) == {"bn", "none"} and set(measured["stream"].init) == {"lecun", "he"}
    assert len(measured["stream"]) == 2 * 2 * (1 + 3)  # stem + 3 blocks, two networks, two inits
    assert len(measured["singular_values"]) == 2 * 40 and len(measured["condition"]) == 3 * 10
    again = chapter.compute(config)
    for key in measured:
        assert measured[key].equals(again[key]), key


def test_summaries_on_known_cases(tiny):
    config, measured = tiny
    logit = measured["logit_gradients"].copy()
    logit["predicted"] = 3  # every image predicted as class 3
    assert up.one_class_fraction({**measured, "logit_gradients": logit}, "none", "lecun") == 1.0
    values = measured["singular_values"].copy()
    values.loc[values.factors == 1, "singular_value"] = np.sqrt(np.linspace(1e-6, 4, (values.factors == 1).sum()))
    assert up.ks_distance({**measured, "singular_values": values}, 1) > 0.05  # uniform in s^2, not Marchenko-Pastur
    assert up.fig5_span(chapter.resolve("book")) == (6.0, 102.0)
    assert up.paper_decades(chapter.resolve("book")) == pytest.approx(4.3)
    assert up.fig5_span(config) == (1.0, 7.0)  # depth 8: the whole network
    assert up.curve_decades(config, 10.0 ** (0.5 * up.layer_of_block(np.arange(4)))) == pytest.approx(3.0)
    assert up.label_share(measured) == pytest.approx(0.125)  # 8 balanced images of ten classes: one label twice


def test_every_row_has_a_kind_and_an_alternative(tiny):
    config, measured = tiny
    checks = chapter.check(config, measured, chapter.predict(config, measured))
    assert {c.id for c in checks} == {
        "U.none_growth.lecun",
        "U.none_growth.he",
        "U.norm_growth",
        "U.std_decades",
        "U.norm_band",
        "U.gradient_scale",
        "U.gradient_tails",
        "U.one_class",
        "U.one_class_norm",
        "U.input_dependence",
        "U.input_dependence_norm",
        "R.smax_1",
        "R.smax_2",
        "R.law_1",
        "R.law_2",
        "R.condition",
    }
    for c in checks:
        assert c.kind in claims.KINDS, c.id
        if c.kind != "identity":
            assert c.alternative and c.alternative_passed is not None, c.id
        if not c.expected:
            assert c.reason, c.id


# -- verdicts that flip under the alternative ----------------------------------------------------------------------


def _verdicts(config, measured, theory_=theory):
    return {c.id: c for c in chapter.check(config, measured, chapter.predict(config, measured, theory=theory_))}


def _stream(config, rise: dict) -> pd.DataFrame:
    """A synthetic stream frame: for each (norm, init), a channel std that rises by ``rise[(norm, init)]`` decades
    per layer (second moment and mean to match), one repeat."""
    blocks = np.arange(1 + 3 * ((config["depth"] - 2) // 6))
    frames = []
    for (norm, init), rate in rise.items():
        std = 10.0 ** (rate * up.layer_of_block(blocks))
        frames.append(
            pd.DataFrame({"block": blocks, "abs_mean": std, "std": std, "second_moment": 2 * std**2}).assign(
                norm=norm, init=init, repeat=0
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_fig5_rows_flip_with_the_initialization(tiny):
    config, measured = tiny
    low, high = up.fig5_span(config)
    paper_rate = up.paper_decades(config) / (high - low)
    he_like = (up.paper_decades(config) + 4) / (high - low)  # four decades more, as He init gives a ResNet-110
    as_paper = {("none", "lecun"): paper_rate, ("none", "he"): he_like, ("bn", "lecun"): 0.0, ("bn", "he"): 0.0}
    rows = _verdicts(config, {**measured, "stream": _stream(config, as_paper)})
    assert rows["U.std_decades"].passed and rows["U.std_decades"].alternative_passed is False
    assert rows["U.norm_band"].passed
    # the paper's network measured as if it had been He-initialized: the row fails
    as_he = {**as_paper, ("none", "lecun"): he_like}
    assert not _verdicts(config, {**measured, "stream": _stream(config, as_he)})["U.std_decades"].passed
    # a normalized stream that grows like the unnormalized one leaves the paper's band
    unbounded = {**as_paper, ("bn", "lecun"): he_like}
    assert not _verdicts(config, {**measured, "stream": _stream(config, unbounded)})["U.norm_band"].passed


def _gradients(ratios: dict, heavy: set) -> pd.DataFrame:
    """Synthetic weight gradients: per (init, norm) a sample whose largest |g| is ``ratios[init] * 0.01`` without a
    normalizer and 0.01 with one; for the pairs in ``heavy`` a Gaussian scale mixture (standard deviation 5 with
    probability 0.1, else 1: excess kurtosis 3 * 63.4 / 3.4**2 - 3 = 13.5, as heavy as the measured unnormalized
    network's 10 to 66), otherwise Student-t with 16 degrees of freedom (excess kurtosis 0.5, as the measured
    normalized network's)."""
    rng = np.random.default_rng(0)
    frames = []
    for init, ratio in ratios.items():
        for norm in ("bn", "none"):
            if (init, norm) in heavy:
                values = rng.standard_normal(20000) * np.where(rng.random(20000) < 0.1, 5.0, 1.0)
            else:
                values = rng.standard_t(16, size=20000)
            values *= 0.01 * (ratio if norm == "none" else 1.0) / np.max(np.abs(values))
            frames.append(pd.DataFrame({"norm": norm, "init": init, "repeat": 0, "gradient": values}))
    return pd.concat(frames, ignore_index=True)


def test_gradient_rows_flip_under_their_alternatives(tiny):
    config, measured = tiny
    as_paper = _gradients({"lecun": 100.0, "he": 10**9.7}, {("lecun", "none"), ("he", "none")})
    rows = _verdicts(config, {**measured, "gradients": as_paper})
    assert rows["U.gradient_scale"].passed and rows["U.gradient_scale"].alternative_passed is False
    assert rows["U.gradient_tails"].passed and rows["U.gradient_tails"].alternative_passed is False
    # measured under the alternative: a He-like ratio, Gaussian tails without the normalizer
    as_he = _gradients({"lecun": 10**9.7, "he": 100.0}, {("lecun", "bn")})
    rows = _verdicts(config, {**measured, "gradients": as_he})
    assert not rows["U.gradient_scale"].passed and not rows["U.gradient_tails"].passed
    # the same shape with and without the normalizer, only larger without: kurtosis does not see scale
    same_shape = _gradients({"lecun": 100.0, "he": 10**9.7}, set())
    assert not _verdicts(config, {**measured, "gradients": same_shape})["U.gradient_tails"].passed


def test_fig6_rows_flip_under_their_alternatives(tiny):
    config, measured = tiny
    logit = measured["logit_gradients"].copy()
    labels = {r: rows["label"].to_numpy() for r, rows in measured["batch_labels"].groupby("repeat")}
    diverse = np.array([labels[r][i] for r, i in zip(logit.repeat, logit.image)])  # predicted = the true label
    one = (logit.norm == "none") & (logit.init == "lecun")
    as_paper = logit.assign(predicted=np.where(one, 7, diverse))
    rows = _verdicts(config, {**measured, "logit_gradients": as_paper})
    assert rows["U.one_class"].passed and rows["U.one_class_norm"].passed
    assert rows["U.one_class"].alternative_passed is False and rows["U.one_class_norm"].alternative_passed is False
    # the alternatives: diverse predictions without a normalizer, one class with it
    as_alternative = logit.assign(predicted=np.where(one, diverse, 7))
    rows = _verdicts(config, {**measured, "logit_gradients": as_alternative})
    assert not rows["U.one_class"].passed and not rows["U.one_class_norm"].passed


def _with_outputs(measured, outputs_of) -> dict:
    """``measured`` with every network's output gradients rebuilt from softmax outputs ``outputs_of(norm, init,
    repeat, labels)`` (a ``(batch, classes)`` array): dL/dz = (p - e_y) / B."""
    logit = measured["logit_gradients"].copy()
    labels = {r: rows["label"].to_numpy() for r, rows in measured["batch_labels"].groupby("repeat")}
    classes = int(logit["cls"].max()) + 1
    for (norm, init, repeat), rows in logit.groupby(["norm", "init", "repeat"]):
        y = labels[repeat]
        p = outputs_of(norm, init, repeat, y)
        grads = (p - np.eye(classes)[y]) / len(y)
        logit.loc[rows.index, "gradient"] = grads[rows["image"].to_numpy(), rows["cls"].to_numpy()]
    return {**measured, "logit_gradients": logit}


def test_input_dependence_rows_flip_under_their_alternatives(tiny):
    config, measured = tiny
    rng = np.random.default_rng(0)

    def one_class(y):  # every image pushed towards class 7, whatever it shows
        return np.tile(np.eye(10)[7] * 0.9 + 0.01, (len(y), 1))

    def diverse(y):  # outputs that follow each image (its label, softly, plus noise)
        z = 3 * np.eye(10)[y] + rng.normal(0, 1, (len(y), 10))
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    as_paper = _with_outputs(measured, lambda n, i, r, y: one_class(y) if n == "none" else diverse(y))
    assert up.input_alikeness(as_paper, "none", "lecun") == pytest.approx(1.0)
    assert up.input_share(as_paper, "none", "lecun") == pytest.approx(0.0, abs=1e-12)
    rows = _verdicts(config, as_paper)
    assert rows["U.input_dependence"].passed and rows["U.input_dependence_norm"].passed
    assert rows["U.input_dependence"].alternative_passed is False
    assert rows["U.input_dependence_norm"].alternative_passed is False
    # the alternatives: outputs as diverse as the labels without a normalizer, one common output with it
    as_alternative = _with_outputs(measured, lambda n, i, r, y: diverse(y) if n == "none" else one_class(y))
    rows = _verdicts(config, as_alternative)
    assert not rows["U.input_dependence"].passed and not rows["U.input_dependence_norm"].passed
    # the labels' own alikeness is about 0; and identical soft outputs are as alike as one-hot ones
    assert abs(up.label_alikeness(measured)) < 0.2
    soft = _with_outputs(measured, lambda n, i, r, y: np.tile(np.linspace(0.05, 0.15, 10), (len(y), 1)))
    assert up.input_alikeness(soft, "bn", "lecun") == pytest.approx(1.0)
    # a common offset with small image-specific parts: the cosine reads nearly 1, the share sees the images' part
    offset = np.eye(10)[7] * 0.5

    def offset_plus_image(n, i, r, y):
        p = 0.05 + offset + 0.2 * np.eye(10)[y]
        return p / p.sum(axis=1, keepdims=True)

    mixed = _with_outputs(measured, offset_plus_image)
    assert up.input_alikeness(mixed, "bn", "lecun") > 0.5 and up.input_share(mixed, "bn", "lecun") > 0.1
    # the whole gradients' cosine of identical outputs equals the input-independent one: it only sees the labels
    measured_cos, flat = up.gradient_cosines(soft, "bn", "lecun")
    assert measured_cos == pytest.approx(flat)


class WrongTheory:
    """normlib.theory, except that the stream grows x10 per block, every product's edge is at 10 and every spectrum
    follows the law of one factor more."""

    def __getattr__(self, name):
        return getattr(theory, name)

    def mean_field_stream(self, unit, blocks, **options):
        return 10.0 ** np.arange(1 + blocks)

    def product_singular_value_max(self, m):
        return 10.0

    def fuss_catalan_cdf(self, x, num_factors):
        return theory.fuss_catalan_cdf(x, num_factors + 3)

    def condition_number_rate(self, width):
        return 0.0


def test_claims_fail_when_the_theory_is_wrong(tiny):
    config, measured = tiny
    right = _verdicts(config, measured)
    wrong = _verdicts(config, measured, WrongTheory())
    for key in ("U.none_growth.lecun", "U.none_growth.he", "U.norm_growth", "R.smax_1", "R.smax_2", "R.condition"):
        assert not wrong[key].passed, key
    for m in (1, 2):
        assert wrong[f"R.law_{m}"].measured > right[f"R.law_{m}"].measured + 0.1
    # the growth rows tell the laws apart: each one's alternative is another law's prediction, which it excludes
    config_book = chapter.resolve("book")
    rates = {
        (n, i): up.growth_rate(config_book, up.predict_stream(config_book, n, i))
        for n in ("bn", "none")
        for i in ("lecun", "he")
    }
    assert abs(rates[("none", "lecun")] - rates[("bn", "lecun")]) > up.GROWTH_REL_TOL * rates[("bn", "lecun")]
    assert abs(rates[("bn", "lecun")] - rates[("none", "lecun")]) > up.GROWTH_REL_TOL * rates[("none", "lecun")]


def test_neighbouring_panels_are_the_alternatives_of_fig7():
    config = chapter.resolve("book")
    assert [up.neighbour_factors(config, m) for m in (1, 3, 5)] == [3, 1, 3]
    assert up.neighbour_factors(chapter.resolve("book", rmt_factors=[4]), 4) == 5
    for m in (1, 3, 5):
        other = up.neighbour_factors(config, m)
        smax, alt = theory.product_singular_value_max(m), theory.product_singular_value_max(other)
        assert abs(alt - smax) > up.SMAX_REL_TOL * alt  # the neighbour's edge is outside the tolerance
        assert theory.fuss_catalan_distance(m, other) > 5 * up.KS_MAX


def test_run_executes_the_notebook_with_papermill(run_notebook):
    run_dir = run_notebook("06_unnormalized_pathologies", TINY)
    assert (run_dir / "06_unnormalized_pathologies.ipynb").exists()
    assert len(list((run_dir / "figures").glob("*.png"))) >= 5
    records = json.loads((run_dir / "claims.json").read_text())
    assert "R.condition" in {r["id"] for r in records}
    assert json.loads((run_dir / "parameters.json").read_text())["rmt_width"] == 40
