"""Notebook 07's experiment (Hoffer et al. 2018, weight decay and the effective learning rate): the paper preset,
validation, VGG-11, a tiny measurement, claims that can fail, and the notebook run. The generic pieces it uses are
tested at home: the multistep schedule and the training hooks in test_train.py, the correction optimizer in
test_optim.py, the channel recorder in test_probes.py."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from normlib import claims, data, models, presets, theory
from normlib.experiments import weight_decay as wd
from normlib.params import ParameterError
from normlib.train import lr_at

chapter = wd.EXPERIMENT

TINY = dict(
    dataset="synthetic",
    subset=96,
    test_subset=32,
    batch_size=32,
    epochs=2,
    lr_milestones=[1],
    repeats=2,
    sgd_steps=4,
    invariance_batch=8,
    invariance_scales=[0.1, 4.0],
    width=4,
    record_every=1,
)


# -- the paper preset ---------------------------------------------------------------------------------------------


def test_paper_preset_is_the_papers_setup():
    config = chapter.resolve("paper")
    assert config["arch"] == "vgg" and config["width"] == 64 and config["dataset"] == "cifar10"
    assert config["subset"] is None and config["batch_size"] == 128 and config["epochs"] == 80
    assert config["lr"] == 0.1 and config["lr_scale_with_batch"] is False and config["momentum"] == 0.9
    assert config["schedule"] == "multistep" and config["lr_milestones"] == [20, 40, 60]
    assert config["lr_decay"] == 0.1 and config["weight_decay"] == 5e-4 and config["seed"] == 2019
    assert config["device"] == "auto" and config["init"] == "torch" and config["correction_interval"] == "epoch"
    assert config["wd_off_decays"] == "last_layer" and config["max_step_scale"] is None  # the paper's code
    assert config["evals_per_epoch"] == 1
    tc = presets.train_config(config)
    assert tc.peak_lr == pytest.approx(0.1) and tc.epochs == 80 and tc.lr_milestones == (20, 40, 60)
    steps = 391  # ceil(50000 / 128)
    lrs = [
        lr_at(t, 80 * steps, 0, tc.peak_lr, tc.schedule, [m * steps for m in tc.lr_milestones], tc.lr_decay)
        for t in (0, 20 * steps - 1, 20 * steps, 40 * steps, 60 * steps, 80 * steps - 1)
    ]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001, 1e-4, 1e-4])


def test_paper_groups_put_weight_decay_on_the_last_layer_only():
    model = wd.build_network(chapter.resolve("paper"), 3, 10, seed=0)
    assert len(wd.invariant_units(model)) == 8  # VGG-11: eight conv-BN units
    groups = wd._param_groups(model, "wd_off", 5e-4)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    assert {id(p) for p in decayed} == {id(model.classifier.weight), id(model.classifier.bias)}
    corrected = wd._param_groups(model, "corrected", 5e-4)
    assert [len(g["params"]) for g in corrected if g.get("correct")] == [8]
    assert sum(len(g["params"]) for g in corrected) == len(list(model.parameters()))
    projected = wd._param_groups(model, "projected", 5e-4)
    assert [len(g["params"]) for g in projected if g.get("invariant")] == [8]
    assert not any(g.get("correct") for g in projected)


def test_book_keeps_weight_decay_on_everything_but_the_invariant_weights():
    model = wd.build_network(chapter.resolve("book"), 1, 10, seed=0)
    invariant = {id(conv.weight) for _, conv, _ in wd.invariant_units(model)}
    for run in ("wd_off", "corrected", "projected"):
        groups = wd._param_groups(model, run, 5e-3, "non_invariant")
        decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
        assert decayed == {id(p) for p in model.parameters()} - invariant
        assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_paper_runs_a_few_steps_on_cifar_shaped_data():
    config = chapter.resolve("paper", device="cpu", dataset="synthetic", max_steps=2, width=8, record_every=1)
    train_set = data.load_dataset("synthetic", size=16, seed=0)
    test_set = data.load_dataset("synthetic", split="test", size=8, seed=0)
    on = wd.train_run(config, "wd_on", 0, train_set, test_set)
    corrected = wd.train_run(config, "corrected", 0, train_set, test_set, on["reference"])
    projected = wd.train_run(config, "projected", 0, train_set, test_set, on["reference"])
    assert on["steps"] == corrected["steps"] == projected["steps"] == 2 and not corrected["diverged"]


# -- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"weight_decay": 0.0}, r"parameter 'weight_decay'.*positive"),
        ({"invariance_scales": [1.0, 0.0]}, r"parameter 'invariance_scales'.*positive"),
        ({"arch": "resnet"}, r"parameter 'arch'.*cnn, vgg"),
        ({"arch": "vgg"}, r"parameter 'arch'.*32x32"),
        ({"correction_interval": "batch"}, r"parameter 'correction_interval'.*step, epoch"),
        ({"lr_milestones": [3, 2]}, r"parameter 'lr_milestones'.*strictly increasing"),
        ({"schedule": "paper"}, r"parameter 'lr_milestones'.*multistep"),
        ({"lr_decay": 1.5}, r"parameter 'lr_decay'"),
        ({"repeats": 0}, r"parameter 'repeats'"),
        ({"evals_per_epoch": 0}, r"parameter 'evals_per_epoch'"),
        ({"max_step_scale": 0.5}, r"parameter 'max_step_scale'"),
        ({"wd_off_decays": "all"}, r"parameter 'wd_off_decays'.*last_layer, non_invariant"),
    ],
)
def test_invalid_parameters(overrides, match):
    with pytest.raises(ParameterError, match=match):
        chapter.resolve("book", **overrides)


# -- the paper's network -----------------------------------------------------------------------------------------


def test_vgg11_is_the_papers_network():
    model = models.build_model("vgg", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 5
    assert model.classifier.in_features == 512 and model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(model.conv_points()) == len(model.probe_points()) == 8
    narrow = models.make_vgg(width=16, norm="gn", group_size=4)
    assert [c.out_channels for c in narrow.modules() if isinstance(c, torch.nn.Conv2d)][:2] == [16, 32]
    with pytest.raises(ValueError, match="unknown VGG cfg"):
        models.make_vgg("E")


# -- the measurement ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    config = chapter.resolve("book", **TINY)
    return config, chapter.measure(config, cache=False)


def test_measurement_is_tidy_and_deterministic(tiny):
    config, measured = tiny
    assert set(measured["runs"].run) == set(wd.RUNS) and len(measured["runs"]) == 4 * config["repeats"]
    assert measured["runs"].seed.tolist() == [wd.training_seed(config["seed"], r) for r in range(2) for _ in wd.RUNS]
    traj = measured["trajectory"]
    assert len(traj) == 4 * config["repeats"] * config["epochs"] * config["evals_per_epoch"]
    assert {"point", "step", "train_loss", "test_accuracy", "run", "repeat"} <= set(traj)
    channels = measured["channels"]
    assert set(channels.layer) == {"conv1", "conv2", "conv3"}
    assert {"norm_sq_before", "norm_sq_after", "grad_sq", "w_dot_g", "chord", "lr", "step_scale"} <= set(channels)
    assert len(measured["sgd"]) == config["sgd_steps"] * (4 + 8 + 16)
    assert measured["invariance"].groupby(["dtype", "eps"]).size().tolist() == [6, 6, 6]
    again = chapter.measure(config, cache=False)
    pd.testing.assert_frame_equal(measured["runs"], again["runs"])
    pd.testing.assert_frame_equal(measured["channels"], again["channels"])
    pd.testing.assert_frame_equal(measured["sgd"], again["sgd"])
    pd.testing.assert_frame_equal(measured["trajectory"], again["trajectory"])


def test_norm_schedule_gives_the_wd_runs_norms_times_the_schedule(tiny):
    """The projected run's channels end each step on r_c sqrt(eta_0 / eta_next), at the constant rate eta_0."""
    config, measured = tiny
    ch = measured["channels"]
    on = ch[ch.run == "wd_on"].set_index(["repeat", "layer", "channel", "step"])
    proj = ch[ch.run == "projected"].set_index(["repeat", "layer", "channel", "step"])
    peak = config["lr"]
    assert np.allclose(proj["lr"], peak)
    on_lr = on["lr"].groupby(level="step").first()
    steps = sorted(on_lr.index)[:-1]
    for step in steps:
        expected = on.xs(step, level="step")["norm_sq_after"] * peak / on_lr[step + 1]
        assert np.allclose(
            proj.xs(step, level="step")["norm_sq_after"], expected.loc[proj.xs(step, level="step").index], rtol=1e-5
        )


def test_correction_gives_the_wd_runs_effective_step(tiny):
    _, measured = tiny
    curves = wd.layer_curves(measured["channels"])
    on = curves[curves.run == "wd_on"].set_index(["repeat", "layer", "step"]).effective_lr
    corrected = curves[curves.run == "corrected"].set_index(["repeat", "layer", "step"]).effective_lr
    assert np.allclose(on, corrected.loc[on.index], rtol=1e-5)
    off = curves[curves.run == "wd_off"].set_index(["repeat", "layer", "step"]).effective_lr
    assert off.groupby("step").median().iloc[-1] < on.groupby("step").median().iloc[-1]


def test_claims_hold_with_the_right_theory(tiny):
    config, measured = tiny
    verdicts = {c.id: c for c in chapter.check(config, measured, chapter.predict(config, measured))}
    assert set(verdicts) == set(ROWS)
    for claim in ("W.invariance", "W.gradient", "W.eps", "W.angular", "W.recursion"):
        assert verdicts[claim].passed, verdicts[claim]
    assert "float32 rounding" in verdicts["W.recursion"].statement and measured["device"] == "cpu"


ROWS = {
    "W.invariance": "identity",
    "W.gradient": "identity",
    "W.eps": "identity",
    "W.angular": "identity",
    "W.recursion": "identity",
    "W.equilibrium": "derived",
    "W.gap": "paper",
    "W.correction_tracks": "paper",
    "W.norm_schedule": "paper",
}


def rows_of(config, measured, theory=theory):
    return {c.id: c for c in chapter.check(config, measured, chapter.predict(config, measured, theory=theory))}


def test_every_row_has_a_kind_and_an_alternative_that_fails(tiny):
    config, measured = tiny
    rows = rows_of(config, measured)
    assert {cid: c.kind for cid, c in rows.items()} == ROWS
    for c in rows.values():
        assert c.kind in claims.KINDS and c.alternative and c.alternative_passed is not None, c
        assert c.alternative_passed is False and c.discriminates, c  # no row passes under its alternative here
        assert c.expected or c.reason, c
    assert not rows["W.gap"].expected  # the book's known miss
    assert claims.falsify(list(rows.values())) == []


class Theory:
    """normlib.theory with some functions replaced."""

    def __init__(self, **replaced):
        self.replaced = replaced

    def __getattr__(self, name):
        return self.replaced.get(name) or getattr(theory, name)


def test_invariance_and_gradient_fail_for_a_batchnorm_that_is_not_scale_invariant(tiny):
    """The alternative measured: the epsilon > 0 rows (BatchNorm with its own epsilon) in place of epsilon = 0."""
    config, measured = tiny
    inv = measured["invariance"]
    exact64 = (inv.dtype == "float64") & (inv.eps < 1e-20)
    with_eps = inv[(inv.dtype == "float64") & (inv.eps > 1e-20)]
    broken = pd.concat([inv[~exact64], with_eps.assign(eps=wd.NO_EPS)], ignore_index=True)
    right, wrong = rows_of(config, measured), rows_of(config, {**measured, "invariance": broken})
    for cid in ("W.invariance", "W.gradient"):
        assert right[cid].passed and not wrong[cid].passed
        assert wrong[cid].measured == pytest.approx(right[cid].alternative_value)


def test_eps_angular_and_recursion_fail_under_their_alternatives(tiny):
    config, measured = tiny
    alternatives = {
        # epsilon changes nothing
        "W.eps": Theory(bn_eps_ratio=lambda variance, eps, scale: np.ones_like(np.asarray(variance, dtype=float))),
        # the direction moves with eta itself: x = eta ||g~|| = eta ||g|| ||w||
        "W.angular": Theory(sgd_step_tangent=lambda lr, g, w: np.asarray(lr) * np.asarray(g) * np.asarray(w)),
        # no radial gradient: BatchNorm's epsilon left out of the recursion
        "W.recursion": Theory(bn_eps_orthogonality=lambda variance, eps, gain_grad: 0 * np.asarray(gain_grad)),
    }
    right = rows_of(config, measured)
    for cid, alternative in alternatives.items():
        wrong = rows_of(config, measured, alternative)[cid]
        assert right[cid].passed and not wrong.passed, cid
    assert rows_of(config, measured, alternatives["W.recursion"])["W.recursion"].measured == pytest.approx(
        right["W.recursion"].alternative_value
    )


def test_recursion_bound_follows_the_dtype_of_the_run(tiny):
    config, measured = tiny
    sgd32 = measured["sgd"]
    assert (sgd32["unit_roundoff"] == 2.0**-24).all()
    train_set, _ = wd.load_data(config)
    sgd64 = wd.plain_sgd_run(config, train_set, torch.float64)
    assert (sgd64["unit_roundoff"] == 2.0**-53).all()
    for sgd, u in ((sgd32, 2.0**-24), (sgd64, 2.0**-53)):
        rec = wd.recursion_frame(sgd, wd.exact_eps(measured))
        expected = sgd.groupby(["layer", "channel"])["norm_sq_after"].sum() * 2 * u
        assert np.allclose(
            rec.set_index(["layer", "channel"])["bound"], expected.loc[rec.set_index(["layer", "channel"]).index]
        )
    row64 = rows_of(config, {**measured, "sgd": sgd64})["W.recursion"]
    assert row64.passed and "float64 rounding" in row64.statement  # the float64 run holds to float64's bound
    # a float32 run held to float64's bound fails: the bound is the dtype's, not a fixed number
    as_if_64 = rows_of(config, {**measured, "sgd": sgd32.assign(unit_roundoff=2.0**-53)})["W.recursion"]
    assert not as_if_64.passed and "float64" in as_if_64.statement


def test_equilibrium_fails_when_the_run_settles_at_the_law_without_momentum(tiny):
    """Synthetic angular steps: settled at the derived law (reproduced), then at the plain-SGD law (not)."""
    config, measured = tiny
    eq = wd.equilibrium(config, measured)
    for value, expect in ((eq["predicted"], True), (eq["without_momentum"], False)):
        channels = measured["channels"].copy()
        channels.loc[channels.run == "wd_on", "chord"] = value
        assert rows_of(config, {**measured, "channels": channels})["W.equilibrium"].passed is expect


def test_gap_needs_to_exceed_the_noise(tiny):
    config, measured = tiny
    runs = measured["runs"].copy()
    runs["diverged"] = False
    for on, off, expect in ((0.9, 0.8, True), (0.8, 0.8, False), (0.8, 0.9, False)):
        runs["test_accuracy"] = runs["run"].map({"wd_on": on, "wd_off": off, "corrected": on, "projected": on})
        runs.loc[runs.repeat == 1, "test_accuracy"] += 0.001
        row = rows_of(config, {**measured, "runs": runs})["W.gap"]
        assert row.passed is expect and row.alternative_passed is False
        assert row.measured == pytest.approx(on - off)


def fake_trajectories(measured, curves):
    """The measured trajectory frame with each run's train loss and test accuracy replaced by ``curves[run](k)``."""
    traj = measured["trajectory"].copy()
    for run, curve in curves.items():
        rows = traj.run == run
        traj.loc[rows, "train_loss"] = curve(traj.loc[rows, "point"]) + 0.001 * traj.loc[rows, "repeat"]
        traj.loc[rows, "test_accuracy"] = 0.5 + 0.1 * curve(traj.loc[rows, "point"])
    return {**measured, "trajectory": traj}


@pytest.mark.parametrize("cid, run", [("W.correction_tracks", "corrected"), ("W.norm_schedule", "projected")])
def test_tracking_rows_flip_when_the_run_does_nothing(tiny, cid, run):
    """A run on WD on's trajectory passes; one on WD off's (the alternative: the correction does nothing) fails,
    and so does one halfway between (ratio 0.5 is not < 0.5)."""
    config, measured = tiny
    measured = {**measured, "runs": measured["runs"].assign(diverged=False, diverged_step=None)}
    on = lambda k: 2.0 / (1.0 + k)  # noqa: E731
    off = lambda k: 1.0 / (1.0 + k)  # noqa: E731
    others = {r: on for r in ("corrected", "projected")}
    for curve, expect in (
        (lambda k: on(k) * 0.95 + off(k) * 0.05, True),
        (off, False),
        (lambda k: (on(k) + off(k)) / 2, False),
    ):
        fake = fake_trajectories(measured, {"wd_on": on, "wd_off": off, **others, run: curve})
        row = rows_of(config, fake)[cid]
        assert row.passed is expect, (row, expect)
        assert row.alternative_passed is False
    fake = fake_trajectories(measured, {"wd_on": on, "wd_off": off, **others, run: off})
    assert rows_of(config, fake)[cid].measured == pytest.approx(1.0)


def test_a_diverged_run_fails_its_row_and_is_named(tiny):
    config, measured = tiny
    runs = measured["runs"].copy()
    runs["diverged"] = False
    hit = (runs.run == "corrected") & (runs.repeat == 1)
    runs.loc[hit, "diverged"] = True
    runs.loc[hit, "diverged_step"] = 3
    on = lambda k: 2.0 / (1.0 + k)  # noqa: E731
    fake = fake_trajectories(
        {**measured, "runs": runs}, {"wd_on": on, "wd_off": lambda k: 1 / (1 + k), "corrected": on, "projected": on}
    )
    rows = rows_of(config, fake)
    assert not rows["W.correction_tracks"].passed and rows["W.correction_tracks"].measured == math.inf
    assert "corrected seed 1 at step 3" in rows["W.correction_tracks"].statement
    assert rows["W.norm_schedule"].passed  # the projected runs did not diverge


def test_run_executes_the_notebook_with_papermill(run_notebook):
    run_dir = run_notebook("07_weight_decay_effective_lr", TINY)
    assert list((run_dir / "figures").glob("*.png"))
    records = json.loads((run_dir / "claims.json").read_text())
    assert {r["id"] for r in records} == set(ROWS)
    assert json.loads((run_dir / "parameters.json").read_text())["width"] == 4
