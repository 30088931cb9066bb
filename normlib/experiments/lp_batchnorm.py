r"""Hoffer et al. (2018), part 2: Lp batch norms, bounded weight normalization and low precision.

What is measured:

* **Constants.** For Gaussian data, the scaled deviation :math:`s` of each batch norm (L2: BatchNorm's biased
  standard deviation; L1, :math:`L^\infty` and Top-k through the layers' own
  :meth:`~normlib.layers.L1BatchNorm2d.scaled_deviation`) divided by the true :math:`\sigma`, by Monte Carlo at
  every ``n`` of ``const_ns`` (values per channel), against the exact expectations of :mod:`normlib.theory.lp`
  (derived), and 1, the paper's target for L1 (for L∞ and Top-k the code's constant is the midpoint of two bounds,
  and the paper does not say that it makes the deviation estimate sigma).
* **Float16 overflow.** A channel's scaled deviation computed in float16 with an *emulated float16 accumulator*
  (:func:`normlib.numerics.fp16_tree_sum`: pairwise summation in which every partial sum is rounded to float16), for
  L2 (sum of squares) and L1 (sum of absolute values), on Gaussian data of standard deviation ``sigmas``: the size
  ``n`` at which each sum first overflows (bisection), and the relative error of :math:`s` over a grid of ``n``.
  Torch's own CPU reductions on float16 tensors accumulate in float32 and round only the result (checked by
  :func:`normlib.numerics.torch_half_sum_accumulates_in_float32`), so they cannot show this; they are measured too,
  as the "fp32 accumulator" that the paper's failing L2 runs used.
* **Training.** The same model and data with each normalizer of ``norms`` in float32, and with each of
  ``lowp_norms`` in reduced precision (``lowp_dtype`` under :func:`torch.autocast`, through
  :class:`normlib.numerics.ReducedPrecision`, which wraps the model and leaves :mod:`normlib.train` unchanged).
  BatchNorm and L1 batch norm in float32, the arms of the L1-vs-L2 comparison, are trained with ``repeats`` seeds
  (repeat 0 uses ``seed``; the others are derived from it); every other run uses ``seed``. Each run is one point of
  :func:`normlib.sweep.sweep` (cached, on any executor), computed with TF32 off
  (:func:`normlib.numerics.exact_float32`), so a GPU trains in the float32 a CPU does; a diverged run is a result,
  recorded with its step, and a comparison counts only when every run it compares trained. When the float16 runs
  share the chapter's weight decay, their float32 twins are the L2 and L1 runs of the Lp table (one run, two uses).
* **The C_L1 ablation** (the paper's fig. (c)): L1 batch norm with its constant times each of ``c_factors`` in a
  CIFAR ResNet-8 of width ``ablation_width``, at ``repeats`` seeds shared by the factors.

The predictions come from :mod:`normlib.theory.lp`; :math:`C_{L^1}` and :math:`C_{L^\infty}(n)` are the paper's
(code's) constants, every expectation and overflow size is derived in this book.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from normlib import claims, data, layers, models, presets
from normlib import theory as default_theory
from normlib import train as training
from normlib.experiments.protocol import Experiment, Predictions
from normlib.layers.half_stats import HalfStatsBatchNorm2d
from normlib.numerics import ACCUMULATORS, ReducedPrecision, exact_float32, fp16_mean
from normlib.params import Config, Param, ParameterError
from normlib.runtime import derive_seed, resolve_device
from normlib.sweep import sweep
from normlib.theory import lp

NOTEBOOK = "08_lp_batchnorm_low_precision"
TITLE = "Lp batch norms, bounded weight norm and low precision"
PAPER = "Hoffer et al. 2018"

#: The normalizers this notebook trains: L2 (BatchNorm), L1, L-infinity, Top-k, weight norm, bounded weight norm.
TRAIN_NORMS = ("bn", "l1bn", "linfbn", "topkbn", "wn", "bwn")
#: The scaled deviations compared with the standard deviation.
DEVIATIONS = ("l2", "l1", "linf", "topk")
#: The batch norms of the Lp table (Hoffer et al.'s fig. (d)), trained with ``repeats`` seeds.
LP_NORMS = ("bn", "l1bn", "linfbn", "topkbn")
#: The kind of float16-statistics layer that stands for each normalizer.
FP16_KINDS = {"bn": "l2", "l1bn": "l1"}
#: The normalizers trained at ``pair_repeats`` seeds: the pairs of L.l1_vs_l2.
PAIRED_NORMS = ("bn", "l1bn")
#: Float16 rounds a result of magnitude at least 65520 (halfway from 65504 to 2^16) to infinity.
FP16_ROUND_UP = 65520.0
#: Relative band around 65504 inside which the float16 rounding of a sum (pairwise: about log2(n) * 2^-11 at worst,
#: under 1 % for n < 2^20) may decide either way: an onset step is predicted to lie between the first steps where
#: the float64 sum reaches 65504 x (1 - band) and 65504 x (1 + band).
ONSET_BAND = 0.01
ARCHS = ("cnn", "resnet")
#: Smallest and largest activation standard deviation of the overflow experiment: below 0.3 the L2 sum needs more
#: than 7e5 values to overflow; above 32 single squares start to overflow (|x| >= 256 at 8 sigma) and blur the test.
SIGMA_RANGE = (0.3, 32.0)
#: Grid of the relative-error curves of the overflow experiment.
OVERFLOW_GRID_POINTS = 16
#: (deviation, accumulator) pairs of the overflow curves: both sums with a float16 accumulator, and L2 with torch's
#: own float16 ``sum`` (float32 inside), the paper's "FP16 precision + FP32 accumulator".
ACCUMULATIONS = (("l2", "fp16"), ("l1", "fp16"), ("l2", "fp32"))

# ---------------------------------------------------------------------------------------------- tolerances
#: Monte-Carlo tolerance of the constant checks: this many standard errors of the Monte-Carlo mean.
MC_SIGMAS = 4.0
#: The derived order-statistic ratios neglect the -1/(n-1) correlation of centred values: allowed error 1/n.
#: (Chosen from the size of the neglected term, before comparing.)
ORDER_STAT_APPROX = 1.0
#: Overflow-size check: MC_SIGMAS standard errors of the mean over repeats (relative spread sqrt(2/n) each) plus
#: 1 % for float16 rounding of the terms and partial sums (pairwise summation: about log2(n) * 2^-11 at worst).
OVERFLOW_ROUNDING = 0.01
#: L1 "survives": its float16-accumulated deviation is finite and within 2 % of the float64 value (the worst-case
#: pairwise-summation error log2(n) * 2^-11 is under 1 % for n < 2^20, plus the rounding of mean and terms).
L1_SURVIVAL_REL_ERR = 0.02
#: The window where L2 is predicted to overflow and L1 not: n from 1.25 x the L2 size to 0.8 x the L1 size.
WINDOW = (1.25, 0.8)
WINDOW_POINTS = 4
#: Accuracy margin of the training comparisons (fraction of the test set): the paper's own largest gap in its Lp
#: table, L-infinity against L2 (35.8 against 33.8 % error), so "within the margin" means "no further behind than the
#: paper's worst normalizer", a lenient test of the paper's "about equal" (the notebook says so).
ACC_MARGIN = 0.02
#: The C_L1 ablation (Hoffer et al.'s fig. (c)) trains L1 batch norm in this small CIFAR ResNet (6n+2 with n = 1:
#: a stem and one post-activation block per stage), where the normalizers' output scale reaches the residual sums
#: and the classifier; its stage widths are ``ablation_width`` x (1, 2, 4).
ABLATION_DEPTH = 8
#: Fig. (c): final ImageNet errors (percent) of L1 batch norm with C_L1 multiplied by 1/4, 1 and 4 (poster reading).
PAPER_ABLATION_ERRORS = {0.25: 36.0, 1.0: 33.8, 4.0: 35.3}
#: The paper's final gap of bounded WN to BatchNorm (ResNet-50 on ImageNet: 28.3 % against 26 % error), after 90
#: epochs; the book measures the first epoch, where the paper's BWN led BN (L.bwn_vs_bn uses ACC_MARGIN instead).
BWN_BN_GAP = 0.023
#: Hoffer et al.'s fig. (d), ResNet-18 on ImageNet: final validation errors read from the poster (percent).
PAPER_LP_ERRORS = {"bn": 33.8, "l1bn": 33.5, "topkbn": 34.0, "linfbn": 35.8}
#: Outside reference, not a book result: test accuracy in eval mode of pure float16 (``model.half()``, no autocast, no
#: loss scaling) and float32 runs on one NVIDIA H200 (torch 2.11, 2026-11-25): the book's CNN (width 32) with ``bn``
#: or ``l1bn``, 20 000 Fashion-MNIST images, batch 128, SGD lr 0.05 momentum 0.9, 600 steps, the input multiplied
#: by 1, 300 or 3000; 2000 test images. ``{(norm, dtype): {scale: accuracy}}``.
H200_EVAL = {
    ("bn", "float16"): {1.0: 0.8175, 300.0: 0.1835, 3000.0: 0.1000},
    ("l1bn", "float16"): {1.0: 0.8325, 300.0: 0.8065, 3000.0: 0.5080},
    ("bn", "float32"): {1.0: 0.8470, 300.0: 0.8405, 3000.0: 0.8370},
    ("l1bn", "float32"): {1.0: 0.8380, 300.0: 0.8220, 3000.0: 0.8450},
}
#: What the page says when the model.half() arm did not run.
HALF_SKIPPED = (
    "the model.half() arm runs only on a CUDA device (parameter 'device' resolving to cuda): float16 convolutions "
    "on a CPU are far too slow, and a CPU has no float16 batch-norm kernel to test"
)

#: The rows whose verdict varies with the seed at the book's defaults (comparisons of a few points that three runs per
#: arm cannot resolve, or a rare overflow a seed's runs may or may not meet; their reasons say which), with their
#: verdicts at chapter seeds 0, 1 and 2 on the CPU, where runs are bit-identical: the gate checks each. At any other
#: seed the book expects no particular verdict.
VARIES: dict[str, tuple[bool, ...]] = {
    "L.l1_vs_l2": (False, True, True),
    "L.linf_vs_l2": (True, True, False),
    "L.fp16_l1_trains": (True, False, True),
}

#: Why each row expected "not reproduced" (or expected to vary with the seed) at the book's defaults is so.
REASONS = {
    "L.l1_vs_l2": (
        "not decided at this scale: seed for seed, L1 minus L2 spreads by several points after one epoch, and the "
        "mean less two standard errors (the scorecard shows it at each seed) clears -2 points at chapter seeds 1 and "
        "2 only (CPU), so the book does not count it. More pairs do not settle it: with pair_repeats 10 the bound "
        "cleared -2 at chapter seeds 0, 1, 2 and 3 but not 4 and 5 (-2.6 and -7.8 points), because a single run of "
        "either normalizer sometimes collapses in its first epoch (an L1 run reached 46 % at seed 5, an L2 run 61 % "
        "at seed 4), and a mean less two standard errors follows such outliers"
    ),
    "L.l2_fp32_acc": (
        "a float32 accumulator sums the squares without overflow, and their mean, sigma^2 <= "
        f"{SIGMA_RANGE[1] ** 2:g}, is far below float16's largest value at every sigma of the experiment: this "
        "arithmetic cannot fail. With today's kernels (float32 accumulation) L2 fails only where the variance itself "
        "is stored in float16 and exceeds 65504 (sigma > 256): see L.fp16_eval"
    ),
    "L.topk_vs_l2": (
        "after one epoch Top-10 trails L2 by a few points on average, and the mean less two standard errors (the "
        "scorecard shows it at each seed) lies below -2 points at chapter seeds 0, 1 and 2: the paper's ImageNet "
        "gap of 0.2 points is not seen at this scale. Its constant, shared with L∞, makes it divide by 1.28 sigma "
        "(L.c_topk), a smaller output scale"
    ),
    "L.linf_vs_l2": (
        "L∞ trails L2 on average at chapter seeds 0, 1 and 2, by less at seed 2; with the uncertainty of three "
        "paired runs (mean plus two standard errors below -2 points, the criterion since a review found the plain "
        "mean looser than its sibling rows; the scorecard shows each seed's value) it holds at seeds 0 and 1, not 2"
    ),
    "L.bwn_vs_bn": (
        "in the first epoch bounded WN trails BN by one to two points on average, the paper's early lead of BWN is not "
        "seen, and the mean less two standard errors (the scorecard shows it at each seed) lies below -2 points at "
        "chapter seeds 0, 1 and 2 (at seed 1 within 0.1 point of the margin): equivalence within 2 points is not "
        "shown"
    ),
    "L.fp16_l1_trains": (
        "at chapter seed 1 one of L1's three float16 runs diverged at step 35: its layer-2 sum of absolute deviations "
        "overflowed once that layer's sigma passed L1's own limit sigma*_L1 = 65504 / (n sqrt(2/pi)), about 6.5 at "
        "n = 12544 (sigma 7.3 at step 21). L1 lasts far longer than L2 (limit 2.3) but, without a brake on the "
        "activations' growth, not for ever. At seeds 0 and 2 L1 trains within the margin of its twins"
    ),
    "L.bwn_vs_wn": (
        "at wn_lr, where plain weight normalization trains, bounded WN trails it by more than the margin (seeds 0, "
        "1 and 2); at the book's learning rate WN diverges and there is no comparison"
    ),
    "L.c_l1_best": (
        "in the first steps of the small ResNet the paper's constant beats four times it by 21 to 33 points on "
        "average but not a quarter of it (C_L1 minus C_L1/4: +1.4, -0.4 and -13.8 points on average at chapter seeds "
        "0, 1 and 2): early on, a smaller constant (a larger output) trains as fast or faster, and sqrt(pi/2) is not "
        "singled out. The paper's gaps (2.2 and 1.5 points) are final ImageNet errors after 80 epochs"
    ),
}


# ---------------------------------------------------------------------------------------------- parameters


def _expected(cid: str, seed: int) -> bool | None:
    """A row's expected verdict at chapter ``seed``: for :data:`VARIES`, its recorded verdict at seeds 0-2 and
    ``None`` (varies) at any other; else reproduced unless it has a reason in :data:`REASONS`."""
    if cid in VARIES:
        pattern = VARIES[cid]
        return pattern[seed] if 0 <= seed < len(pattern) else None
    return cid not in REASONS


def _check_pair_repeats(config: Mapping[str, Any]) -> None:
    if config["pair_repeats"] < config["repeats"]:
        raise ParameterError(
            f"parameter 'pair_repeats': invalid value {config['pair_repeats']!r}; allowed: at least repeats "
            f"({config['repeats']}): the other comparisons pair their runs with the first repeats of L2's"
        )


def _check_const_ns(config: Mapping[str, Any]) -> None:
    bad = [n for n in config["const_ns"] if n < max(2, config["topk"])]
    if bad:
        raise ParameterError(
            f"parameter 'const_ns': invalid value {bad[0]!r}; allowed: integers >= 2 and >= "
            f"topk={config['topk']} (Top-k needs k values per channel)"
        )


def _check_c_factors(config: Mapping[str, Any]) -> None:
    factors = config["c_factors"]
    if 1.0 not in factors:
        raise ParameterError(
            f"parameter 'c_factors': invalid value {factors!r}; allowed: a list that holds 1 (the paper's constant, "
            "which every other factor is compared with)"
        )


def _check_resnet_depth(config: Mapping[str, Any]) -> None:
    depth = config["resnet_depth"]
    if (depth - 2) % 6:
        raise ParameterError(
            f"parameter 'resnet_depth': invalid value {depth!r}; allowed: 6n+2 "
            f"(e.g. {', '.join(map(str, models.RESNET_DEPTH_EXAMPLES))})"
        )


OWN_PARAMS = (
    Param(
        "const_ns",
        "int_list",
        "values per channel n (batch x height x width) of the Monte-Carlo constants check",
        minimum=2,
    ),
    Param("const_repeats", "int", "Monte-Carlo channels per n", minimum=2),
    Param("topk", "int", "k of Top-k batch norm (the paper's Top10: 10)", minimum=1),
    Param(
        "sigmas",
        "float_list",
        "activation standard deviations of the float16 overflow experiment",
        minimum=SIGMA_RANGE[0],
        maximum=SIGMA_RANGE[1],
    ),
    Param("overflow_repeats", "int", "independent channels per sigma in the overflow experiment", minimum=1),
    Param("norms", "str_list", "normalizers trained in float32", choices=TRAIN_NORMS),
    Param(
        "fp16_weight_decay",
        "float",
        "weight decay of the float16-statistics runs and their float32 twins; equal to weight_decay, the twins are "
        "the Lp table's L2 and L1 runs (the book's 1e-4 shrinks the weights by 0.2 % over its 100 steps)",
        minimum=0,
    ),
    Param(
        "eval_scales",
        "float_list",
        "input scales of the eval-mode emulation with float16 running statistics (the H200 run's 1, 300, 3000)",
        minimum=1e-3,
        maximum=1e6,
    ),
    Param(
        "wn_lr",
        "float",
        "base learning rate at which weight norm and bounded weight norm are trained again (WN diverges at lr)",
        minimum=0,
    ),
    Param(
        "arch", "str", "cnn: the book's small CNN (presets.BOOK_CNN); resnet: CIFAR ResNet (make_resnet)", choices=ARCHS
    ),
    Param(
        "width",
        "int",
        "cnn: channels of the first layer (BOOK_CNN's 32 rescaled); resnet: of the first stage",
        minimum=1,
    ),
    Param("resnet_depth", "int", "depth 6n+2 of the CIFAR ResNet (arch resnet only)", minimum=8),
    Param(
        "repeats",
        "int",
        "training seeds of each Lp batch norm (bn, l1bn, linfbn, topkbn): the Lp table averages over them",
        minimum=1,
    ),
    Param(
        "pair_repeats",
        "int",
        "training seeds of L2 (bn) and L1 (l1bn) at the book's rate, the pairs of L.l1_vs_l2 (at least repeats; the "
        "other comparisons use the first repeats of them)",
        minimum=1,
    ),
    Param(
        "c_factors",
        "float_list",
        "factors multiplying C_L1 in the ablation (L1 batch norm in a small ResNet); must hold 1 ([1]: no ablation)",
        minimum=1e-3,
        maximum=1e3,
    ),
    Param("ablation_width", "int", "channels of the first stage of the ablation's ResNet-8", minimum=1),
    Param(
        "ablation_steps",
        "optional_int",
        "optimizer steps of each ablation run (the paper: the right constant converges fastest early on; None: all)",
        minimum=1,
    ),
)

BOOK = {
    "const_ns": [16, 64, 256, 1024, 3136, 12544],
    "const_repeats": 256,
    "topk": 10,
    "sigmas": [1.0, 4.0, 16.0],
    "overflow_repeats": 4,
    "norms": list(TRAIN_NORMS),
    "fp16_weight_decay": 1e-4,
    "eval_scales": [1.0, 300.0, 3000.0],
    "wn_lr": 0.0125,
    "arch": "cnn",
    "width": 16,
    "resnet_depth": 56,
    "repeats": 3,
    # 3, as the other comparisons: ten pairs did not settle L.l1_vs_l2 either (its reason), at 1.5 x the chapter's cost
    "pair_repeats": 3,
    "c_factors": [0.25, 1.0, 4.0],
    "ablation_width": 4,
    "ablation_steps": None,
    "subset": 6400,
    "test_subset": 2000,
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.05,
}
#: The official code's CIFAR regime (Hoffer et al. 2018 "Other regimes"; norm_matters ``models/resnet.py``): ResNet-56
#: with widths 16/32/64 on CIFAR-10, SGD lr 0.1, momentum 0.9, weight decay 1e-4, x0.1 at epochs 81, 122 and 164,
#: batch 256 and seed 123 (``main.py``'s defaults). The code does not say how many epochs; 200 reaches the last drop.
#: The ImageNet ResNet-18/50 runs of the paper are not reproduced (no ImageNet loader).
PAPER_VALUES = {
    "const_ns": [12544, 50176, 200704, 802816],
    "const_repeats": 256,
    "topk": 10,
    "sigmas": [1.0, 4.0, 16.0],
    "overflow_repeats": 16,
    "norms": list(TRAIN_NORMS),
    "fp16_weight_decay": 0.0,
    "eval_scales": [1.0, 300.0, 3000.0],
    "wn_lr": 0.1,
    "arch": "resnet",
    "width": 16,
    "resnet_depth": 56,
    "repeats": 1,
    "pair_repeats": 1,
    "c_factors": [0.25, 1.0, 4.0],
    "ablation_width": 16,
    "ablation_steps": None,
    "dataset": "cifar10",
    "batch_size": 256,
    "epochs": 200,
    "lr": 0.1,
    "lr_scale_with_batch": True,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "multistep",
    "lr_milestones": [81, 122, 164],
    "lr_decay": 0.1,
    "seed": 123,
    "paper_small_batch": False,
}

SPEC = presets.training_spec(
    extra_params=OWN_PARAMS,
    book=BOOK,
    paper=PAPER_VALUES,
    checks=(_check_const_ns, _check_resnet_depth, _check_c_factors, _check_pair_repeats),
)


# ---------------------------------------------------------------------------------------------- constants


def _deviation_modules(k: int) -> dict[str, nn.Module]:
    return {"l1": layers.L1BatchNorm2d(1), "linf": layers.LinfBatchNorm2d(1), "topk": layers.TopkBatchNorm2d(1, k=k)}


def scaled_deviations(x: Tensor, k: int) -> dict[str, Tensor]:
    """Every scaled deviation of the ``R`` channels of ``x`` (shape ``(n, R)``, values of one channel in a column):
    L2 is BatchNorm's biased standard deviation, the others come from the layers' ``scaled_deviation``."""
    centred = (x - x.mean(dim=0, keepdim=True))[:, :, None, None]
    out = {"l2": centred.square().mean(dim=(0, 2, 3)).sqrt()}
    for name, module in _deviation_modules(k).items():
        out[name] = module.scaled_deviation(centred)
    return out


def predicted_ratio(deviation: str, n: int, k: int, theory: Any = default_theory) -> float:
    """The derived expectation of ``s / sigma`` (:mod:`normlib.theory.lp`)."""
    if deviation == "l2":
        return theory.l2_deviation_ratio(n)
    if deviation == "l1":
        return theory.l1_deviation_ratio(n)
    if deviation == "linf":
        return theory.linf_deviation_ratio(n)
    return theory.topk_deviation_ratio(n, k)


def _constants_frame(config: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (deviation, n): Monte-Carlo mean and standard error of ``s / sigma`` over ``const_repeats``
    channels of standard Gaussian data, in float64."""
    rows = []
    repeats, k = config["const_repeats"], config["topk"]
    for i, n in enumerate(config["const_ns"]):
        generator = torch.Generator().manual_seed(derive_seed(config["seed"], 1, i))
        chunk = max(1, min(repeats, 2**22 // n))
        ratios: dict[str, list[Tensor]] = {d: [] for d in DEVIATIONS}
        for start in range(0, repeats, chunk):
            x = torch.randn(n, min(chunk, repeats - start), generator=generator, dtype=torch.float64)
            for name, dev in scaled_deviations(x, k).items():
                ratios[name].append(dev)
        for name in DEVIATIONS:
            values = torch.cat(ratios[name]).numpy()
            rows.append(
                {
                    "deviation": name,
                    "n": n,
                    "mean": float(values.mean()),
                    "se": float(values.std(ddof=1) / math.sqrt(len(values))),
                    "repeats": len(values),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- float16


def fp16_deviation(x: Tensor, kind: str, accumulator: str) -> Tensor:
    r"""The scaled deviation of each row of ``x`` (shape ``(R, n)``) computed in float16.

    The values are rounded to float16 and every elementwise step is a float16 operation. Every average
    :math:`\mathrm{avg}(v) = \frac1n\sum v` is :func:`normlib.numerics.fp16_mean` with ``accumulator``: with
    ``"fp16"`` the float16 :func:`~normlib.numerics.fp16_tree_sum` times :math:`1/n`, so it overflows with its sum;
    with ``"fp32"`` torch's float16 ``mean`` (sum and division in float32, only the result rounded to float16).
    Mean :math:`m = \mathrm{avg}(x)`; L2: :math:`s = \sqrt{\mathrm{avg}((x - m)^2)}`; L1:
    :math:`s = C_{L^1}\,\mathrm{avg}(|x - m|)`. An overflow gives ``s = inf``. Returned as float64 (``inf`` kept).
    """
    if kind not in ("l2", "l1") or accumulator not in ACCUMULATORS:
        raise ValueError(f"kind must be l2 or l1 and accumulator fp16 or fp32, got {kind!r}, {accumulator!r}")
    h = x.to(torch.float16)
    centred = h - fp16_mean(h, accumulator)[..., None]
    if kind == "l2":
        dev = torch.sqrt(fp16_mean(centred * centred, accumulator))
    else:
        dev = fp16_mean(centred.abs(), accumulator) * lp.C_L1
    return dev.to(torch.float64)


def reference_deviation(x: Tensor, kind: str) -> Tensor:
    """The same scaled deviation in float64 (no rounding, no overflow)."""
    centred = x - x.mean(dim=-1, keepdim=True)
    if kind == "l2":
        return centred.square().mean(dim=-1).sqrt()
    return centred.abs().mean(dim=-1) * lp.C_L1


def overflow_size(x: Tensor, kind: str) -> float:
    """The smallest ``n`` at which the fp16-accumulated deviation of ``x[:n]`` (one channel, shape ``(N,)``) is not
    finite: doubling ``n`` from 2 until it fails, then bisection (the sums grow with ``n``, so the first failure is
    found up to the sums' fluctuation between neighbouring ``n``); ``inf`` when even ``N`` does not overflow."""

    def fails(n: int) -> bool:
        return not bool(torch.isfinite(fp16_deviation(x[None, :n], kind, "fp16"))[0])

    lo, hi = 1, 2
    while not fails(hi):
        if hi == x.shape[-1]:
            return float("inf")
        lo, hi = hi, min(2 * hi, x.shape[-1])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
    return float(hi)


def sample_length(sigma: float) -> int:
    """Values per overflow channel at ``sigma``: the power of two above twice L1's predicted overflow size, so that
    both sums overflow inside the sample when the predictions are right (and the measurement reports ``inf``, a
    failed check, when they are far off)."""
    return int(2 ** math.ceil(math.log2(2 * lp.l1_overflow_n(sigma))))


def window_sizes(sigma: float) -> list[int]:
    """``n`` where L2 is predicted to overflow and L1 not, with margins (:data:`WINDOW`); empty when the two
    predicted sizes are too close (sigma below about 1.25)."""
    lo, hi = WINDOW[0] * lp.l2_overflow_n(sigma), WINDOW[1] * lp.l1_overflow_n(sigma)
    if hi <= lo:
        return []
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, WINDOW_POINTS)})


def _overflow_frames(config: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    sigmas, repeats = config["sigmas"], config["overflow_repeats"]
    thresholds, curves, windows = [], [], []
    for i, sigma in enumerate(sigmas):
        length = sample_length(sigma)
        generator = torch.Generator().manual_seed(derive_seed(config["seed"], 2, i))
        x = sigma * torch.randn(repeats, length, generator=generator, dtype=torch.float64)
        half = x.to(torch.float16)  # the float16 values, rounded once (fp16_deviation would round them anyway)
        for r in range(repeats):
            for kind in ("l2", "l1"):
                thresholds.append({"sigma": sigma, "repeat": r, "kind": kind, "n": overflow_size(half[r], kind)})
        grid = sorted({int(round(v)) for v in np.geomspace(16, length, OVERFLOW_GRID_POINTS)})
        for n in grid + window_sizes(sigma):
            ref = reference_deviation(x[:, :n], "l2"), reference_deviation(x[:, :n], "l1")
            for kind, accumulator in ACCUMULATIONS:
                dev = fp16_deviation(half[:, :n], kind, accumulator)
                rel = (dev / ref[0 if kind == "l2" else 1] - 1).numpy()
                rows = [
                    {
                        "sigma": sigma,
                        "n": n,
                        "repeat": r,
                        "kind": kind,
                        "accumulator": accumulator,
                        "finite": bool(np.isfinite(rel[r])),
                        "rel_error": float(rel[r]),
                    }
                    for r in range(repeats)
                ]
                (windows if n not in grid else curves).extend(rows)
    return {
        "thresholds": pd.DataFrame(thresholds),
        "curves": pd.DataFrame(curves),
        "window": pd.DataFrame(windows, columns=["sigma", "n", "repeat", "kind", "accumulator", "finite", "rel_error"]),
    }


# ---------------------------------------------------------------------------------------------- training


def model_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` and the JSON options of :func:`normlib.models.build_model` (without ``norm``)."""
    if config["arch"] == "cnn":
        return {
            "arch": "cnn",
            "cfg": [list(e) if isinstance(e, tuple) else e for e in presets.BOOK_CNN["cfg"]],
            "width": config["width"],
        }
    width = config["width"]
    return {"arch": "resnet", "depth": config["resnet_depth"], "widths": [width, 2 * width, 4 * width]}


def train_point(
    norm: str, precision: str, model: dict[str, Any], dataset: dict[str, Any], train: dict[str, Any]
) -> dict[str, Any]:
    """One float32 training run (module level, so that :func:`normlib.sweep.sweep` can send it to workers): ``norm``
    seeded by ``train["seed"]``; the data are :func:`normlib.train.load_splits` of ``dataset``; TF32 is off
    (:func:`normlib.numerics.exact_float32`). ``precision`` other than ``float32`` runs the forward under
    :class:`~normlib.numerics.ReducedPrecision` (no longer used by the chapter). Returns the outcome and the
    per-step loss; the wall time is the only non-deterministic entry."""
    with exact_float32():
        return _train_point(norm, precision, model, dataset, train)


def _outcome(result: training.TrainResult) -> dict[str, Any]:
    losses = result.history["loss"].to_numpy(dtype=float)
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "diverged": bool(result.diverged),
        "diverged_step": result.diverged_step,
        "final_loss": float("nan") if result.diverged else float(np.mean(tail)),
        "test_accuracy": float(result.test_accuracy),
        "train_accuracy": float(result.train_accuracy),
        "steps": int(len(losses)),
        "loss": [float(v) for v in losses],
        "wall_time_s": float(result.wall_time_s),
    }


def _build(norm: str, model: dict[str, Any], train_set: Any) -> nn.Module:
    options = {k: v for k, v in model.items() if k != "arch"}
    return models.build_model(model["arch"], **training.model_kwargs_for({**options, "norm": norm}, train_set))


def _train_point(
    norm: str, precision: str, model: dict[str, Any], dataset: dict[str, Any], train: dict[str, Any]
) -> dict[str, Any]:
    config = training.TrainConfig(**train)
    train_set, test_set = training.load_splits(dataset, config.seed)
    torch.manual_seed(config.seed)
    net = _build(norm, model, train_set)
    if precision != "float32":
        net = ReducedPrecision(net, getattr(torch, precision))
    return _outcome(training.train(net, train_set, test_set, config))


def shares_twins(config: Mapping[str, Any]) -> bool:
    """Whether the float32 twins of the float16-statistics runs are the Lp table's L2 and L1 runs: the book's CNN
    (:func:`half_stats_model`) with ``fp16_weight_decay`` equal to ``weight_decay``. A twin's
    :class:`~normlib.layers.half_stats.HalfStatsBatchNorm2d` with float32 statistics is BatchNorm (biased running
    variance) or :class:`~normlib.layers.L1BatchNorm2d` in another implementation; sharing saves one run per repeat."""
    return config["arch"] == "cnn" and config["fp16_weight_decay"] == config["weight_decay"]


def training_runs(config: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """``(norm, arm, repeat)`` of every float32 run of :func:`train_point`. Arm ``book_lr``: each Lp batch norm of
    ``norms`` (:data:`LP_NORMS`) and bounded weight norm with ``repeats`` seeds (repeat 0 first, for all of them),
    then weight norm at the page's seed; arm ``wn_lr``: weight norm and bounded weight norm again at ``wn_lr`` (when
    it differs from ``lr``), where plain weight norm trains. L2 and L1 are left out when :func:`shares_twins`: their
    runs are the float16 experiment's float32 twins (:func:`fp16_runs`)."""
    shared = FP16_KINDS if shares_twins(config) else {}
    repeated = [n for n in config["norms"] if n in (*LP_NORMS, "bwn") and n not in shared]
    most = max((lp_repeats(config, n) for n in repeated), default=0)
    runs = [(n, "book_lr", r) for r in range(most) for n in repeated if r < lp_repeats(config, n)]
    wn_norms = [n for n in ("wn", "bwn") if n in config["norms"]]
    runs += [("wn", "book_lr", 0)] if "wn" in wn_norms else []
    if config["wn_lr"] != config["lr"]:
        runs += [(n, "wn_lr", 0) for n in wn_norms]
    return runs


def lp_repeats(config: Mapping[str, Any], norm: str) -> int:
    """How many seeds ``norm`` trains at the book's rate: ``pair_repeats`` for L2 and L1 (the pairs of
    ``L.l1_vs_l2``), ``repeats`` for the others."""
    return int(config["pair_repeats"] if norm in PAIRED_NORMS else config["repeats"])


def repeat_seed(config: Mapping[str, Any], repeat: int) -> int:
    """The training seed of ``repeat``: ``seed`` itself for repeat 0, else one spawned from it
    (:func:`normlib.runtime.derive_seed`: a :class:`numpy.random.SeedSequence` of ``[seed, 3, repeat]``)."""
    return int(config["seed"]) if repeat == 0 else derive_seed(config["seed"], 3, repeat)


def arm_lr(config: Mapping[str, Any], arm: str) -> float:
    """The base learning rate of an arm: ``lr`` (book_lr) or ``wn_lr``."""
    return float(config["wn_lr"] if arm == "wn_lr" else config["lr"])


def training_grid(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sweep's points, with the JSON arguments of :func:`train_point`, in the order of :func:`training_runs`."""
    return [
        {
            "norm": norm,
            "precision": "float32",
            "model": model_options(config),
            "dataset": presets.dataset_options(config),
            "train": presets.train_config(
                config, seed=repeat_seed(config, repeat), lr=arm_lr(config, arm), progress=False
            ).to_dict(),
        }
        for norm, arm, repeat in training_runs(config)
    ]


def _train_frame(config: Mapping[str, Any], executor: Any = None, cache: bool = True) -> pd.DataFrame:
    grid = training_grid(config)
    results = (
        list(sweep(train_point, grid, executor=executor, cache=cache, progress=False, desc="training runs")["result"])
        if grid
        else []
    )
    runs = pd.DataFrame(training_runs(config), columns=["norm", "arm", "repeat"])
    runs["seed"] = [repeat_seed(config, r) for r in runs["repeat"]]
    runs["lr"] = [arm_lr(config, a) for a in runs["arm"]]
    outcome = pd.DataFrame(results, columns=RUN_COLUMNS)
    return pd.concat([runs, outcome], axis=1)


def _with_twins(config: Mapping[str, Any], train: pd.DataFrame, fp16: pd.DataFrame) -> pd.DataFrame:
    """The float32 runs, with the float32 twins as the L2 and L1 runs at the book's rate when :func:`shares_twins`
    (column ``twin``: whether a row is one)."""
    train = train.assign(twin=False)
    if not shares_twins(config) or not len(fp16):
        return train
    twins = fp16[fp16.stats == "fp32"].drop(columns="stats").assign(arm="book_lr", twin=True)
    twins["seed"] = [repeat_seed(config, r) for r in twins["repeat"]]
    twins["lr"] = arm_lr(config, "book_lr")
    return pd.concat([twins[train.columns], train], ignore_index=True)


def weight_decay_shrink(config: Mapping[str, Any], steps: int) -> float:
    """The fraction by which ``fp16_weight_decay`` alone shrinks the weights over ``steps`` SGD steps at the peak rate
    (an upper bound: a schedule only lowers the rate), ``1 - (1 - eta_peak * wd) ** steps``."""
    peak = presets.train_config(config).peak_lr
    return 1 - (1 - peak * config["fp16_weight_decay"]) ** max(int(steps), 0)


# ---------------------------------------------------------------------------------------------- C_L1 ablation


def ablation_seed(config: Mapping[str, Any], repeat: int) -> int:
    """The seed of the ablation's ``repeat``, the same for every factor (:func:`normlib.runtime.derive_seed` of
    ``[seed, 5, repeat]``: independent of the chapter's other runs)."""
    return derive_seed(config["seed"], 5, repeat)


def ablation_runs(config: Mapping[str, Any]) -> list[tuple[float, int]]:
    """``(factor, repeat)`` of the C_L1 ablation: each factor of ``c_factors`` at ``repeats`` seeds; none when
    ``c_factors`` holds only 1 (nothing to compare)."""
    if len(config["c_factors"]) < 2:
        return []
    return [(float(f), r) for r in range(config["repeats"]) for f in config["c_factors"]]


def ablation_grid(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The points of :func:`train_point` of the ablation: L1 batch norm with C_L1 times the factor in the CIFAR
    ResNet of depth :data:`ABLATION_DEPTH` and widths ``ablation_width`` x (1, 2, 4), the chapter's data and
    optimizer, for ``ablation_steps`` steps at most (the book: None, its whole epoch, the early phase of training)."""
    width = config["ablation_width"]
    widths = [width, 2 * width, 4 * width]
    return [
        {
            "norm": "l1bn",
            "precision": "float32",
            "model": {"arch": "resnet", "depth": ABLATION_DEPTH, "widths": widths, "c_factor": f},
            "dataset": presets.dataset_options(config),
            "train": presets.train_config(
                config, seed=ablation_seed(config, r), max_steps=config["ablation_steps"], progress=False
            ).to_dict(),
        }
        for f, r in ablation_runs(config)
    ]


def _ablation_frame(config: Mapping[str, Any], executor: Any = None, cache: bool = True) -> pd.DataFrame:
    runs = pd.DataFrame(ablation_runs(config), columns=["factor", "repeat"])
    if not len(runs):
        return pd.DataFrame(columns=["factor", "repeat", "seed", *RUN_COLUMNS])
    swept = sweep(train_point, ablation_grid(config), executor=executor, cache=cache, progress=False, desc="C_L1")
    runs["seed"] = [ablation_seed(config, r) for r in runs["repeat"]]
    return pd.concat([runs, pd.DataFrame(list(swept["result"]), columns=RUN_COLUMNS)], axis=1)


def ablation_table(measured: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per factor of the ablation: mean test accuracy over the repeats (NaN when one diverged), its spread (standard
    deviation), the mean train loss over each whole run ("converges fastest early on") and the paper's final
    accuracy (100 - error, fig. (c))."""
    ab = measured.get("ablation", pd.DataFrame())
    rows = []
    for factor, runs in ab.groupby("factor", sort=True):
        trained = not runs["diverged"].astype(bool).any()
        rows.append(
            {
                "factor": float(factor),
                "accuracy": float(runs["test_accuracy"].mean()) if trained else float("nan"),
                "spread": float(runs["test_accuracy"].std(ddof=1)) if len(runs) > 1 else float("nan"),
                "mean_loss": float(np.mean([np.mean(v) for v in runs["loss"]])) if trained else float("nan"),
                "paper_accuracy": 100 - PAPER_ABLATION_ERRORS.get(float(factor), float("nan")),
            }
        )
    return pd.DataFrame(rows, columns=["factor", "accuracy", "spread", "mean_loss", "paper_accuracy"])


#: The columns of a run's outcome (:func:`_outcome`).
RUN_COLUMNS = [
    "diverged",
    "diverged_step",
    "final_loss",
    "test_accuracy",
    "train_accuracy",
    "steps",
    "loss",
    "wall_time_s",
]


# ---------------------------------------------------------------------------------------------- float16 training


class InputScale(nn.Module):
    """``model(scale * x)``: the input multiplied by a constant (the H200 run's "input scale")."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x * self.scale)


def half_stats_model(norm: str, stats: str, model: dict[str, Any], train_set: Any) -> nn.Module:
    """The model of ``model`` built with ``norm`` (``bn`` or ``l1bn``) whose every normalizer is replaced by a
    :class:`~normlib.layers.half_stats.HalfStatsBatchNorm2d` of the same kind: statistics in float16 with a float16
    accumulator and float16 running buffers (``stats="fp16"``), or all in float32 (``"fp32"``, the twin); the
    convolutions stay float32. Only the book's CNN (``arch`` cnn) has its normalizers in ``units[i].norm``."""
    if model["arch"] != "cnn":
        raise ValueError("the float16-statistics runs use the book's CNN (arch 'cnn')")
    net = _build(norm, model, train_set)
    running = torch.float16 if stats == "fp16" else torch.float32
    for unit in net.units:
        unit.norm = HalfStatsBatchNorm2d(unit.conv.out_channels, FP16_KINDS[norm], stats, running_dtype=running)
        unit.norm.record = True
    return net


def fp16_point(
    norm: str,
    stats: str,
    model: dict[str, Any],
    dataset: dict[str, Any],
    train: dict[str, Any],
    eval_scales: list[float],
) -> dict[str, Any]:
    """One run of ``norm`` with float16 (``stats="fp16"``) or float32 statistics (:func:`half_stats_model`), TF32
    off. Besides the outcome of :func:`train_point` it returns ``layers``: per normalizer, ``n`` and per step
    ``finite`` (every statistic finite), ``input_finite``, and the float64 channel maxima ``sumsq``, ``sumabs``,
    ``sum`` and ``sigma``; and, for the float32 twin, ``eval``: :func:`running_stats_eval` at ``eval_scales``."""
    with exact_float32():
        config = training.TrainConfig(**train)
        train_set, test_set = training.load_splits(dataset, config.seed)
        torch.manual_seed(config.seed)
        net = half_stats_model(norm, stats, model, train_set)
        out = _outcome(training.train(net, train_set, test_set, config))
        out["layers"] = [
            {
                "n": unit.norm.log[0]["n"] if unit.norm.log else 0,
                **{key: [r[key] for r in unit.norm.log] for key in ("finite", "input_finite", *STAT_KEYS)},
            }
            for unit in net.units
        ]
        out["eval"] = [] if stats == "fp16" or out["diverged"] else running_stats_eval(net, test_set, eval_scales)
        return out


#: The float64 channel maxima a float16-statistics layer records at each step.
STAT_KEYS = ("sumsq", "sumabs", "sum", "sigma")


@torch.no_grad()
def running_stats_eval(net: nn.Module, test_set: Any, scales: list[float]) -> list[dict[str, Any]]:
    r"""Eval mode of a float32-trained network as if it had been trained with its input times ``s``, with its
    running statistics stored in float32 or in float16 (``model.half()``'s buffers; float32 statistics inside, as
    today's kernels compute them).

    The first normalizer is scale invariant, so training at input scale :math:`s` gives the same network with that
    layer's running mean and deviation times :math:`s` (the variance times :math:`s^2`); that is what is evaluated,
    with the input times :math:`s` (up to :math:`\epsilon`). For each ``s`` and buffer dtype: the test accuracy and
    ``overflow``, the number of first-layer channels whose stored statistic is not finite, against ``predicted``,
    the number whose float64 value reaches 65520 (float16's rounding threshold)."""
    first = net.units[0].norm
    saved = {i: (u.norm.running_mean.clone(), u.norm.running_dev.clone()) for i, u in enumerate(net.units)}
    power = 2 if first.kind == "l2" else 1
    rows = []
    for scale in scales:
        for buffers in ("float32", "float16"):
            for i, unit in enumerate(net.units):
                mean, dev = saved[i]
                if i == 0:
                    mean, dev = mean.double() * scale, dev.double() * scale**power
                dtype = getattr(torch, buffers)
                unit.norm.running_mean = mean.to(dtype).float()
                unit.norm.running_dev = dev.to(dtype).float()
            stored = net.units[0].norm.running_dev
            rows.append(
                {
                    "scale": float(scale),
                    "buffers": buffers,
                    "accuracy": float(training.evaluate(InputScale(net, scale), test_set)),
                    "overflow": int((~torch.isfinite(stored)).sum()),
                    "predicted": int((saved[0][1].double() * scale**power >= FP16_ROUND_UP).sum()),
                }
            )
    for i, unit in enumerate(net.units):
        unit.norm.running_mean, unit.norm.running_dev = saved[i]
    return rows


def fp16_runs(config: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """``(norm, stats, repeat)`` of the float16-statistics runs, where in ``norms``: L2 (``bn``) with float16
    statistics at the page's seed (its failure is not a matter of noise), L1 (``l1bn``) with float16 statistics at
    ``repeats`` seeds (its claim compares accuracies, noisy at this scale), and the float32 twins of both at
    ``repeats`` seeds (when :func:`shares_twins`, they are the Lp table's L2 and L1 runs, at ``pair_repeats`` seeds;
    otherwise L2's twin runs at the page's seed only)."""
    runs = []
    for norm in ("bn", "l1bn"):
        if norm not in config["norms"]:
            continue
        low = 1 if norm == "bn" else config["repeats"]
        twins = lp_repeats(config, norm) if shares_twins(config) else config["repeats"] if norm == "l1bn" else 1
        runs += [(norm, "fp16", r) for r in range(low)] + [(norm, "fp32", r) for r in range(twins)]
    return runs


def fp16_grid(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The points of :func:`fp16_point`: seeds as :func:`repeat_seed`, weight decay ``fp16_weight_decay``; the eval
    emulation at repeat 0 only."""
    return [
        {
            "norm": norm,
            "stats": stats,
            "model": model_options(config),
            "dataset": presets.dataset_options(config),
            "train": presets.train_config(
                config, seed=repeat_seed(config, r), weight_decay=config["fp16_weight_decay"], progress=False
            ).to_dict(),
            "eval_scales": list(config["eval_scales"]) if r == 0 else [],
        }
        for norm, stats, r in fp16_runs(config)
    ]


def _fp16_frames(config: Mapping[str, Any], executor: Any = None, cache: bool = True) -> dict[str, pd.DataFrame]:
    """``fp16`` (one row per run: norm, stats and the outcome), ``fp16_layers`` (one row per run, layer and step)
    and ``fp16_eval`` (norm, scale, buffers, accuracy, overflow, predicted)."""
    if config["arch"] != "cnn" or not fp16_runs(config):
        empty = pd.DataFrame(columns=["norm", "stats", "repeat", *RUN_COLUMNS])
        return {"fp16": empty, "fp16_layers": pd.DataFrame(), "fp16_eval": pd.DataFrame()}
    swept = sweep(fp16_point, fp16_grid(config), executor=executor, cache=cache, progress=False, desc="float16")
    runs, layer_rows, eval_rows = [], [], []
    for (norm, stats, repeat), result in zip(fp16_runs(config), swept["result"]):
        runs.append({"norm": norm, "stats": stats, "repeat": repeat, **{k: result[k] for k in RUN_COLUMNS}})
        for layer, log in enumerate(result["layers"], 1):
            for step in range(len(log["finite"])):
                layer_rows.append(
                    {
                        "norm": norm,
                        "stats": stats,
                        "repeat": repeat,
                        "layer": layer,
                        "n": log["n"],
                        "step": step,
                        **{k: log[k][step] for k in ("finite", "input_finite", *STAT_KEYS)},
                    }
                )
        eval_rows += [{"norm": norm, **row} for row in result["eval"]]
    return {"fp16": pd.DataFrame(runs), "fp16_layers": pd.DataFrame(layer_rows), "fp16_eval": pd.DataFrame(eval_rows)}


# ---------------------------------------------------------------------------------------------- model.half() on CUDA


def half_precision_arm(
    config: Mapping[str, Any], device: str, dtypes: tuple[str, ...] = ("float16", "float32"), steps: int | None = None
) -> pd.DataFrame:
    """The paper's half-precision test with today's kernels: the chapter's model with L2 (``bn``) and L1 (``l1bn``)
    batch norm cast whole to each of ``dtypes`` (``model.half()``: weights, activations and running buffers; no
    autocast, no loss scaling), trained with the chapter's optimizer and data at each input scale of
    ``eval_scales`` on ``device``, then evaluated in train mode (batch statistics) and eval mode (running
    statistics). Meant for a CUDA device (float16 convolutions on a CPU are very slow); ``dtypes=("float32",)``
    runs anywhere. ``steps`` caps the optimizer steps (None: the configuration's). One row per (norm, dtype, scale):
    ``diverged``, ``diverged_step``, ``train_mode_accuracy``, ``eval_accuracy``."""
    tc = presets.train_config(config, device=device, progress=False, max_steps=steps or config.get("max_steps"))
    train_set, test_set = training.load_splits(presets.dataset_options(config), tc.seed)
    rows = []
    for norm in ("bn", "l1bn"):
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for scale in config["eval_scales"]:
                torch.manual_seed(tc.seed)
                net = _build(norm, model_options(config), train_set).to(device=device, dtype=dtype)
                wrapped = _CastInput(net, scale, dtype)
                with exact_float32():
                    result = training.train(wrapped, train_set, test_set, tc)
                    wrapped.train()
                    batch_stats = float("nan") if result.diverged else _accuracy(wrapped, test_set)
                rows.append(
                    {
                        "norm": norm,
                        "dtype": dtype_name,
                        "scale": float(scale),
                        "diverged": bool(result.diverged),
                        "diverged_step": result.diverged_step,
                        "train_mode_accuracy": batch_stats,
                        "eval_accuracy": float(result.test_accuracy),
                    }
                )
    return pd.DataFrame(rows)


class _CastInput(nn.Module):
    """``model((scale * x).to(dtype)).float()``."""

    def __init__(self, model: nn.Module, scale: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.scale, self.dtype = model, float(scale), dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x * self.scale).to(self.dtype)).float()


@torch.no_grad()
def _accuracy(model: nn.Module, dataset: Any) -> float:
    """Test accuracy in the model's current mode (train mode: batch statistics of each test batch)."""
    device = next(model.parameters()).device
    data_ = dataset.to(device)
    hits = 0
    for x, y in data.batches(data_, 1024, shuffle=False):
        hits += int((model(x).argmax(dim=1) == y).sum())
    return hits / len(data_)


def _half_frame(config: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`half_precision_arm` when the configuration's device resolves to CUDA; else an empty frame whose
    ``skipped`` attribute says why."""
    device = resolve_device(config["device"])
    if device.type != "cuda":
        frame = pd.DataFrame(columns=["norm", "dtype", "scale", "diverged", "diverged_step"])
        frame.attrs["skipped"] = HALF_SKIPPED
        return frame
    return half_precision_arm(config, str(device))


# ---------------------------------------------------------------------------------------------- measure


def measure_all(config: Mapping[str, Any], executor: Any = None, cache: bool = True) -> dict[str, pd.DataFrame]:
    """``constants`` (deviation, n, mean, se, repeats), ``thresholds`` (sigma, repeat, kind, n), ``curves`` and
    ``window`` (sigma, n, repeat, kind, accumulator, finite, rel_error), ``train`` (one row per float32 run: norm,
    arm, repeat, seed, lr, diverged, diverged_step, final_loss, test_accuracy, train_accuracy, steps, loss,
    wall_time_s, twin: the L2 and L1 rows are the float32 twins when :func:`shares_twins`), the float16-statistics
    frames of :func:`_fp16_frames` (``fp16``, ``fp16_layers``, ``fp16_eval``), ``ablation`` (the C_L1 ablation: factor,
    repeat, seed and the outcome) and ``half`` (:func:`half_precision_arm` on CUDA; empty, with ``attrs["skipped"]``,
    elsewhere)."""
    fp16 = _fp16_frames(config, executor, cache)
    return {
        "constants": _constants_frame(config),
        **_overflow_frames(config),
        "train": _with_twins(config, _train_frame(config, executor, cache), fp16["fp16"]),
        **fp16,
        "ablation": _ablation_frame(config, executor, cache),
        "half": _half_frame(config),
    }


# ---------------------------------------------------------------------------------------------- comparison


def constants_table(
    config: Mapping[str, Any], measured: dict[str, pd.DataFrame], theory: Any = default_theory
) -> pd.DataFrame:
    """The Monte-Carlo ratios with the derived prediction next to them (``predicted``), and 1 (``paper``: the
    paper's target for L1; for L∞ and Top-k only the alternative of ``L.c_linf`` and ``L.c_topk``)."""
    frame = measured["constants"].copy()
    frame["predicted"] = [predicted_ratio(d, int(n), config["topk"], theory) for d, n in zip(frame.deviation, frame.n)]
    frame["paper"] = 1.0
    return frame


def overflow_table(
    config: Mapping[str, Any], measured: dict[str, pd.DataFrame], theory: Any = default_theory
) -> pd.DataFrame:
    """Per sigma: the mean measured overflow size of L2 and L1 over the repeats, the predictions, and the L2
    check's relative tolerance."""
    th = measured["thresholds"]
    rows = []
    for sigma in config["sigmas"]:
        sub = th[th.sigma == sigma]
        l2 = float(sub[sub.kind == "l2"]["n"].mean())
        l1 = float(sub[sub.kind == "l1"]["n"].mean())
        predicted = theory.l2_overflow_n(sigma)
        rows.append(
            {
                "sigma": sigma,
                "l2_measured": l2,
                "l2_predicted": predicted,
                "l1_measured": l1,
                "l1_predicted": theory.l1_overflow_n(sigma),
                "l2_rel_tol": overflow_tolerance(predicted, config),
            }
        )
    return pd.DataFrame(rows)


def overflow_tolerance(predicted_n: float, config: Mapping[str, Any]) -> float:
    """Relative tolerance of the L2 overflow check: :data:`MC_SIGMAS` standard errors of the mean over the repeats
    plus :data:`OVERFLOW_ROUNDING`."""
    spread = lp.l2_overflow_spread(max(predicted_n, 3.0))
    return MC_SIGMAS * spread / math.sqrt(config["overflow_repeats"]) + OVERFLOW_ROUNDING


def accuracy(measured: dict[str, pd.DataFrame], norm: str, arm: str = "book_lr", repeat: int = 0) -> float:
    """Test accuracy of one float32 run for the comparisons; NaN when it diverged or was not run, so that a
    comparison with it fails: a comparison counts only when every run it compares trained."""
    train = measured["train"]
    row = train[(train.norm == norm) & (train.arm == arm) & (train.repeat == repeat)]
    if not len(row) or bool(row["diverged"].iloc[0]):
        return float("nan")
    return float(row["test_accuracy"].iloc[0])


def mean_accuracy(measured: dict[str, pd.DataFrame], norm: str) -> float:
    """The mean test accuracy of ``norm`` at the book's learning rate over its seeds; NaN when one of them diverged
    or none ran."""
    train = measured["train"]
    repeats = sorted(train[(train.norm == norm) & (train.arm == "book_lr")]["repeat"])
    values = [accuracy(measured, norm, "book_lr", r) for r in repeats]
    return float(np.mean(values)) if values else float("nan")


#: Standard errors subtracted from a paired mean difference before it is compared with -ACC_MARGIN: "within the
#: margin" must hold for the mean minus its uncertainty, an equivalence test (set after looking, see REASONS).
EQUIV_SE = 2.0


def pairs(config: Mapping[str, Any], norm: str, reference: str = "bn") -> int:
    """How many seeds pair ``norm`` with ``reference``: the fewer of their :func:`lp_repeats`."""
    return min(lp_repeats(config, norm), lp_repeats(config, reference))


def paired_differences(measured: dict[str, pd.DataFrame], norm: str, reference: str, n_pairs: int) -> np.ndarray:
    """Per seed (repeat) ``0 .. n_pairs - 1`` (:func:`pairs`) at the book's learning rate, ``norm``'s test accuracy
    minus ``reference``'s (same seed: same data, same order); NaN where either diverged or did not run, so that a
    comparison counts only when every run it pairs trained."""
    return np.array(
        [accuracy(measured, norm, "book_lr", r) - accuracy(measured, reference, "book_lr", r) for r in range(n_pairs)]
    )


def equivalence_bound(differences: np.ndarray, shift: float = 0.0) -> float:
    """The paired mean difference minus :data:`EQUIV_SE` standard errors (``std(ddof=1) / sqrt(n)``), the differences
    moved by ``shift`` first (an alternative's mean); NaN with fewer than two seeds or a NaN difference."""
    d = np.asarray(differences, dtype=float) + shift
    if len(d) < 2 or not np.isfinite(d).all():
        return float("nan")
    return float(d.mean() - EQUIV_SE * d.std(ddof=1) / math.sqrt(len(d)))


def chance_accuracy(config: Mapping[str, Any]) -> float:
    """The test accuracy of guessing: one over the number of classes of the configuration's dataset (synthetic
    data: its default, 10)."""
    return 1 / data.NUM_CLASSES.get(config["dataset"], 10)


def fp16_accuracy_at_chance(measured: dict[str, pd.DataFrame], norm: str, chance: float) -> float:
    """Mean test accuracy of ``norm``'s float16-statistics runs over the seeds, a diverged run counted at
    ``chance`` (one over the number of classes); NaN when none ran."""
    runs = measured["fp16"]
    rows = runs[(runs.norm == norm) & (runs.stats == "fp16")]
    if not len(rows):
        return float("nan")
    accuracy = rows["test_accuracy"].astype(float).where(~rows["diverged"].astype(bool), chance)
    return float(accuracy.fillna(chance).mean())


def fp16_accuracy(measured: dict[str, pd.DataFrame], norm: str, stats: str, repeats: int | None = None) -> float:
    """Mean test accuracy over the seeds of the float16-statistics runs (``stats="fp16"``) or of their float32 twins,
    the first ``repeats`` seeds only when given (the twins' seeds that have a float16 run); NaN when one diverged or
    none ran."""
    runs = measured["fp16"]
    rows = runs[(runs.norm == norm) & (runs.stats == stats)]
    if repeats is not None:
        rows = rows[rows["repeat"] < repeats]
    if not len(rows) or rows["diverged"].astype(bool).any():
        return float("nan")
    return float(rows["test_accuracy"].mean())


def _first_step(steps: pd.Series, mask: pd.Series) -> float:
    """The first step where ``mask`` holds; ``inf`` when none."""
    hits = steps[mask]
    return float(hits.min()) if len(hits) else math.inf


def overflow_onsets(measured: dict[str, pd.DataFrame], law: str = "accumulator") -> pd.DataFrame:
    r"""Per float16-statistics run and layer (steps whose input is finite): the measured onset (first step whose
    float16 statistics are not finite) and the predicted window ``[low, high]`` of steps.

    ``law="accumulator"`` (this chapter's prediction): a float16 accumulator overflows once a channel's sum reaches
    65504, the sum of the values :math:`|\sum x| = n|\mu|` for both kinds, and the sum of squares
    :math:`\sum (x-\bar x)^2 = n\sigma^2` (L2) or of absolute deviations :math:`\sum|x-\bar x|` (L1);
    ``low``/``high`` are the first steps where the float64 sum reaches 65504 times ``1 -+`` :data:`ONSET_BAND`.
    ``law="result"`` (a float32 accumulator, today's kernels): only a statistic itself above 65504 overflows, the
    variance :math:`\sigma^2` (L2) or the deviation :math:`\sigma` (L1). ``sigma_at_onset`` is the largest channel
    sigma of the layer at the measured onset, ``sigma_star`` the chapter's :math:`\sqrt{65504/n}`."""
    layers_ = measured["fp16_layers"]
    rows = []
    if not len(layers_):
        return pd.DataFrame(rows)
    if "repeat" not in layers_:
        layers_ = layers_.assign(repeat=0)
    for (norm, stats, repeat, layer), log in layers_.groupby(["norm", "stats", "repeat", "layer"], sort=False):
        if stats != "fp16":
            continue
        log = log[log.input_finite]
        kind = FP16_KINDS[norm]
        if law == "accumulator":
            stat = np.maximum(log["sumsq" if kind == "l2" else "sumabs"], log["sum"])
        else:
            stat = log["sigma"] ** (2 if kind == "l2" else 1)
        measured_step = _first_step(log.step, ~log.finite)
        at = log[log.step == measured_step]
        n = int(log["n"].iloc[0]) if len(log) else 0
        rows.append(
            {
                "norm": norm,
                "repeat": int(repeat),
                "layer": int(layer),
                "n": n,
                "measured": measured_step,
                "low": _first_step(log.step, stat >= lp.FP16_MAX * (1 - ONSET_BAND)),
                "high": _first_step(log.step, stat >= lp.FP16_MAX * (1 + ONSET_BAND)),
                "sigma_at_onset": float(at["sigma"].iloc[0]) if len(at) else math.nan,
                "sigma_star": math.sqrt(lp.FP16_MAX / n) if n else math.nan,
            }
        )
    frame = pd.DataFrame(rows)
    frame["agrees"] = (frame.low <= frame.measured) & (frame.measured <= frame.high)
    return frame


def running_eval_table(measured: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per normalizer and input scale of the eval emulation: accuracy with float32 and float16 running buffers, the
    number of first-layer channels whose float16 statistic overflowed and how many were predicted to, whether the
    float16 buffers cost more than :data:`ACC_MARGIN` (``dropped``) and whether any overflow is predicted."""
    ev = measured["fp16_eval"]
    if not len(ev):
        return pd.DataFrame()
    wide = ev.pivot_table(index=["norm", "scale"], columns="buffers", values="accuracy").reset_index()
    half = ev[ev.buffers == "float16"].set_index(["norm", "scale"])
    wide["overflow"] = [int(half.loc[(n, s), "overflow"]) for n, s in zip(wide.norm, wide.scale)]
    wide["predicted"] = [int(half.loc[(n, s), "predicted"]) for n, s in zip(wide.norm, wide.scale)]
    wide["dropped"] = wide["float16"] < wide["float32"] - ACC_MARGIN
    return wide


def _sigma_id(sigma: float) -> str:
    return f"{sigma:g}".replace(".", "p")


def _fails_l2_fp32(measured: dict[str, pd.DataFrame]) -> tuple[int, int]:
    """Points (sigma, n, repeat) of the overflow grid and window where L2's float16 deviation with torch's float32
    accumulator fails (not finite, or off float64 by more than :data:`L1_SURVIVAL_REL_ERR`), and all points."""
    rows = pd.concat([measured["curves"], measured["window"]])
    rows = rows[(rows.kind == "l2") & (rows.accumulator == "fp32")]
    failed = ~rows["finite"] | (rows["rel_error"].abs() > L1_SURVIVAL_REL_ERR)
    return int(failed.sum()), len(rows)


def check_claims(
    config: Mapping[str, Any], measured: dict[str, pd.DataFrame], predicted: Predictions
) -> list[claims.ClaimCheck]:
    """Every row of the chapter (kinds as in :mod:`normlib.claims`):

    * known: ``L.c_l1`` (C_L1 = sqrt(pi/2) makes the L1 deviation estimate sigma: E|x - mu| = sigma sqrt(2/pi) for a
      Gaussian, checked by Monte-Carlo);
    * identities: ``L.overflow_l2.s*`` and ``L.l1_survives`` (the book's float16 emulation against the expected sums);
    * derived: ``L.c_linf``, ``L.c_topk`` (the code's C_Linf(n), the midpoint of two bounds, makes those deviations
      overestimate sigma by the derived factor, against "it estimates sigma") and ``L.c_derived`` (every Monte-Carlo
      point on its derived expectation, against "every ratio is 1");
    * paper: ``L.l2_fp32_acc`` (L2 fails with float16 values and a float32 accumulator: expected not reproduced);
      the Lp table (:func:`_lp_table_checks`), bounded WN (:func:`_wn_checks`), the float16-statistics training runs
      (:func:`_fp16_checks`, with the derived ``L.fp16_onset`` and ``L.fp16_eval``) and, on CUDA only, the
      ``model.half()`` arm (:func:`_half_checks`).

    Every training comparison needs every run it compares to have trained (a diverged run makes it fail)."""
    k, n_max = config["topk"], max(config["const_ns"])
    table = predicted["constants"]
    checks = []

    def at_nmax(deviation: str) -> pd.Series:
        return table[(table.deviation == deviation) & (table.n == n_max)].iloc[0]

    l1 = at_nmax("l1")
    checks.append(
        claims.check_close(
            "L.c_l1",
            PAPER,
            f"C_L1 = sqrt(pi/2) makes the L1 deviation estimate sigma (Monte-Carlo ratio 1, at n = {n_max})",
            1.0,
            l1["mean"],
            abs_tol=MC_SIGMAS * l1["se"],
            kind="known",
            alternative=("no constant needed: mean |x - mean| itself estimates sigma", lp.C_L1),
        )
    )
    for deviation, title in (("linf", "L∞"), ("topk", f"Top-{k}")):
        row = at_nmax(deviation)
        checks.append(
            claims.check_close(
                f"L.c_{deviation}",
                PAPER,
                f"a property of the authors' code, not a claim of the paper (which claims no unbiasedness; gamma "
                f"absorbs a constant): the code's C_L∞(n), "
                f"the midpoint of two bounds, makes the {title} deviation overestimate sigma by its derived factor: "
                f"Monte-Carlo s / sigma = the derived expectation (n = {n_max})",
                row["predicted"],
                row["mean"],
                abs_tol=MC_SIGMAS * row["se"] + ORDER_STAT_APPROX / n_max,
                kind="known",
                alternative=("the constant makes the deviation estimate sigma: ratio 1", 1.0),
            )
        )
    allowed = MC_SIGMAS * table["se"] + ORDER_STAT_APPROX / table["n"] * table.deviation.isin(["linf", "topk"])
    checks.append(
        claims.check_at_most(
            "L.c_derived",
            PAPER,
            "every Monte-Carlo ratio matches its derived expectation (worst |MC - derived| in "
            "units of the tolerance: 4 standard errors, + 1/n for the order-statistic approximation)",
            1.0,
            float((np.abs(table["mean"] - table["predicted"]) / allowed).max()),
            kind="derived",
            alternative=(
                "every scaled deviation estimates sigma: ratio 1 at every n",
                float((np.abs(table["mean"] - 1.0) / allowed).max()),
            ),
        )
    )

    for _, row in predicted["overflow"].iterrows():
        checks.append(
            claims.check_close(
                f"L.overflow_l2.s{_sigma_id(row.sigma)}",
                PAPER,
                f"a float16 accumulator of the L2 sum of squares overflows at n = 1 + 65504/sigma^2 (sigma = "
                f"{row.sigma:g})",
                row.l2_predicted,
                row.l2_measured,
                rel_tol=row.l2_rel_tol,
                kind="identity",
                alternative=("a float32 accumulator: the sum never overflows", math.inf),
            )
        )

    window = measured["window"]
    fp16 = window[window.accumulator == "fp16"]
    if len(fp16):
        l2 = fp16[fp16.kind == "l2"].set_index(["sigma", "n", "repeat"])
        l1w = fp16[fp16.kind == "l1"].set_index(["sigma", "n", "repeat"])

        def survives(other: pd.DataFrame) -> pd.Series:
            return (~l2["finite"]) & other["finite"] & (other["rel_error"].abs() <= L1_SURVIVAL_REL_ERR)

        ok = survives(l1w)
        checks.append(
            claims.check_true(
                "L.l1_survives",
                PAPER,
                "where L2's float16 sum overflows, L1's survives (finite, within "
                f"{L1_SURVIVAL_REL_ERR:.0%} of float64): points of the window",
                float(len(ok)),
                float(ok.sum()),
                bool(ok.all()),
                "all points",
                kind="identity",
                alternative=(
                    "L1's sum overflows where L2's does (the L2 points in its place)",
                    bool(survives(l2).all()),
                ),
            )
        )

    failed, points = _fails_l2_fp32(measured)
    if points:
        checks.append(
            claims.check_at_least(
                "L.l2_fp32_acc",
                PAPER,
                "L2 with float16 values and a float32 accumulator (the paper's failing 'FP16 + FP32 accumulator') "
                f"fails: points of the overflow grid where its deviation is not finite or off by more than "
                f"{L1_SURVIVAL_REL_ERR:.0%} (of {points})",
                1.0,
                float(failed),
                kind="paper",
                alternative=("a float32 accumulator keeps L2 finite and accurate: no failed point", 0.0),
                expected=False,
                reason=REASONS["L.l2_fp32_acc"],
            )
        )

    checks += _lp_table_checks(config, measured)
    checks += _wn_checks(config, measured)
    checks += _fp16_checks(config, measured)
    checks += _ablation_checks(config, measured)
    checks += _half_checks(measured)
    return checks


def ablation_differences(measured: dict[str, pd.DataFrame], factor: float) -> np.ndarray:
    """Per repeat (same seed for every factor), the test accuracy with the paper's C_L1 minus with C_L1 x
    ``factor``; NaN where either run diverged."""
    ab = measured["ablation"]

    def accuracy_of(f: float) -> pd.Series:
        runs = ab[np.isclose(ab.factor.astype(float), f)].set_index("repeat")
        return runs["test_accuracy"].astype(float).where(~runs["diverged"].astype(bool))

    base = accuracy_of(1.0)
    return (base - accuracy_of(factor).reindex(base.index)).to_numpy()


def _ablation_checks(config: Mapping[str, Any], measured: dict[str, pd.DataFrame]) -> list[claims.ClaimCheck]:
    """The C_L1 ablation (fig. (c)), one row, ``L.c_l1_best``: the paper's constant trains better than every other
    factor of ``c_factors``: for each, the paired mean difference of test accuracies (same seed) less
    :data:`EQUIV_SE` standard errors is above 0 (the paper: 33.8 % error against 36 % for 1/4 and 35.3 % for 4).
    Judging the factors together matters: "the smaller the constant (the larger the output), the faster early
    training" also makes C_L1 beat 4 C_L1, but not C_L1/4; that monotone law is the alternative. A diverged run makes
    its difference NaN, and the row fails."""
    table = ablation_table(measured)
    if not len(table) or 1.0 not in set(table.factor):
        return []
    factors = [float(f) for f in table.factor if f != 1.0]
    arch = f"ResNet-{ABLATION_DEPTH}, widths {config['ablation_width']} x (1, 2, 4)"
    bounds = {f: equivalence_bound(ablation_differences(measured, f)) for f in factors}
    # Under the monotone law, C_L1 loses to every smaller constant and beats every larger one by the same amounts.
    monotone = {f: equivalence_bound(np.sign(f - 1.0) * np.abs(ablation_differences(measured, f))) for f in factors}
    worst = min(bounds.values()) if all(np.isfinite(b) for b in bounds.values()) else float("nan")
    paper = ", ".join(f"x{f:g}: {100 - PAPER_ABLATION_ERRORS.get(f, float('nan')):.1f} %" for f in factors)
    return [
        claims.check_true(
            "L.c_l1_best",
            PAPER,
            f"the paper's C_L1 = sqrt(pi/2) trains better than C_L1 times each of "
            f"{', '.join(f'{f:g}' for f in factors)}: L1 batch norm in a small ResNet ({arch}), for each factor "
            f"the mean over {config['repeats']} seed(s) of the test accuracy with C_L1 minus with the factor "
            f"(same seed), less {EQUIV_SE:g} standard errors, above 0 (measured: the smallest of these bounds; "
            f"ImageNet, fig. (c): C_L1 {100 - PAPER_ABLATION_ERRORS[1.0]:.1f} %, {paper})",
            0.0,
            worst,
            bool(np.isfinite(worst) and worst > 0),
            "> 0 for every factor",
            kind="paper",
            alternative=(
                "a smaller constant (a larger output) trains faster early on, whatever the paper's value: C_L1 beats "
                "the larger constants and loses to the smaller ones by the measured amounts",
                bool(all(np.isfinite(b) and b > 0 for b in monotone.values())),
            ),
            expected=_expected("L.c_l1_best", config["seed"]),
            reason=REASONS.get("L.c_l1_best", ""),
        )
    ]


def _lp_table_checks(config: Mapping[str, Any], measured: dict[str, pd.DataFrame]) -> list[claims.ClaimCheck]:
    """The Lp table (Hoffer et al.'s fig. (d)): mean test accuracy of each Lp batch norm over its seeds
    (``pair_repeats`` for L2 and L1, ``repeats`` for the others), compared seed for seed with L2's.
    ``L.l1_vs_l2`` and ``L.topk_vs_l2``: within :data:`ACC_MARGIN` of L2 (alternative: 2 x the margin below);
    ``L.linf_vs_l2``: L∞ below L2 (alternative: L∞ normalizes as well as L2, its mean replaced by L2's).
    A mean with a diverged run is NaN, and its row fails."""
    norms, k, seeds = set(config["norms"]), config["topk"], config["repeats"]
    lost = 2 * ACC_MARGIN
    paper = {n: f"{100 - e:.1f} %" for n, e in PAPER_LP_ERRORS.items()}
    checks = []
    if "bn" not in norms:
        return checks
    for norm, cid, who in (("l1bn", "L.l1_vs_l2", "L1"), ("topkbn", "L.topk_vs_l2", f"Top-{k}")):
        if norm not in norms:
            continue
        n_pairs = pairs(config, norm)
        diffs = paired_differences(measured, norm, "bn", n_pairs)
        checks.append(
            claims.check_at_least(
                cid,
                PAPER,
                f"{who} batch norm trains as well as L2, no more than {ACC_MARGIN:.0%} below it: the mean over "
                f"{n_pairs} seed(s) of {who}'s test accuracy minus L2's (same seed), less {EQUIV_SE:g} standard "
                f"errors, at least -{ACC_MARGIN:g} (every run trained; ResNet-18 ImageNet: {who} {paper[norm]}, L2 "
                f"{paper['bn']})",
                -ACC_MARGIN,
                equivalence_bound(diffs),
                kind="paper",
                alternative=(
                    f"{who} is a worse normalizer: {lost:.0%} below L2 on average",
                    equivalence_bound(diffs, -lost - float(np.mean(diffs))),
                ),
                expected=_expected(cid, config["seed"]),
                reason=REASONS.get(cid, ""),
            )
        )
    if "linfbn" in norms:
        diffs = paired_differences(measured, "linfbn", "bn", pairs(config, "linfbn"))
        # the upper end of the paired mean's interval: mean + EQUIV_SE standard errors
        upper = -equivalence_bound(-diffs)
        checks.append(
            claims.check_at_most(
                "L.linf_vs_l2",
                PAPER,
                f"L∞ batch norm is worse than L2: the mean over {seeds} seed(s) of L∞'s test accuracy minus L2's "
                f"(same seed), plus {EQUIV_SE:g} standard errors, below -{ACC_MARGIN:g} (ResNet-18 ImageNet: L∞ "
                f"{paper['linfbn']}, L2 {paper['bn']}, the paper's worst)",
                -ACC_MARGIN,
                upper,
                kind="paper",
                alternative=(
                    "L∞ normalizes as well as L2: the same differences about a mean of 0",
                    -equivalence_bound(-(diffs - float(np.mean(diffs)))),
                ),
                expected=_expected("L.linf_vs_l2", config["seed"]),
                reason=REASONS.get("L.linf_vs_l2", ""),
            )
        )
    return checks


def _wn_checks(config: Mapping[str, Any], measured: dict[str, pd.DataFrame]) -> list[claims.ClaimCheck]:
    """Bounded WN against BatchNorm at the book's learning rate (``L.bwn_vs_bn``: the paper's comparison in the
    regime the book measures, the first epoch, where the paper's BWN led BN: BWN may trail by no more than the noise
    margin :data:`ACC_MARGIN`) and against WN at ``wn_lr``, where WN trains (``L.bwn_vs_wn``). Every arm must have
    trained."""
    norms = set(config["norms"])
    lost = 2 * ACC_MARGIN
    checks = []
    if {"bn", "bwn"} <= norms:
        diffs = paired_differences(measured, "bwn", "bn", pairs(config, "bwn"))
        checks.append(
            claims.check_at_least(
                "L.bwn_vs_bn",
                PAPER,
                f"early in training, bounded weight normalization trains as well as BatchNorm, within "
                f"{ACC_MARGIN:.0%}: the mean over {config['repeats']} seed(s) of BWN's test accuracy minus BN's "
                f"(same seed) after the book's {config['epochs']} epoch(s), less {EQUIV_SE:g} standard errors, "
                f"at least -{ACC_MARGIN:g} "
                f"(ResNet-50 ImageNet, first 30 epochs: BWN about 42 % error against BN's 47-50 %; the final gap, "
                f"28.3 % against 26 %, is not this regime), at lr {config['lr']:g}, every run trained",
                -ACC_MARGIN,
                equivalence_bound(diffs),
                kind="paper",
                alternative=(
                    f"bounding the norm costs accuracy: {2 * ACC_MARGIN:.0%} below BN on average",
                    equivalence_bound(diffs, -2 * ACC_MARGIN - float(np.mean(diffs))),
                ),
                expected=_expected("L.bwn_vs_bn", config["seed"]),
                reason=REASONS.get("L.bwn_vs_bn", ""),
            )
        )
    if {"wn", "bwn"} <= norms and config["wn_lr"] != config["lr"]:
        wn = accuracy(measured, "wn", "wn_lr")
        checks.append(
            claims.check_at_least(
                "L.bwn_vs_wn",
                PAPER,
                f"bounded weight normalization is no worse than weight normalization: test accuracy at least WN's "
                f"minus {ACC_MARGIN:.0%} at lr {config['wn_lr']:g}, where WN trains (it diverges at "
                f"{config['lr']:g}); same seed, both trained",
                wn - ACC_MARGIN,
                accuracy(measured, "bwn", "wn_lr"),
                kind="paper",
                alternative=(f"bounding the norm costs accuracy: {lost:.0%} below WN", wn - lost),
                expected=_expected("L.bwn_vs_wn", config["seed"]),
                reason=REASONS.get("L.bwn_vs_wn", ""),
            )
        )
    return checks


def _fails(full: float, low: float) -> bool:
    """A float16 run failed against its float32 twin (which trained): it diverged (NaN), or lost more than
    :data:`ACC_MARGIN`."""
    return bool(math.isfinite(full) and (not math.isfinite(low) or low < full - ACC_MARGIN))


def _fp16_checks(config: Mapping[str, Any], measured: dict[str, pd.DataFrame]) -> list[claims.ClaimCheck]:
    """The float16-statistics runs (``L.fp16_l2_fails``, ``L.fp16_l1_beats_l2``: the paper's claim), the overflow onset
    of every layer against the chapter's law (``L.fp16_onset``), and the eval-mode emulation of the H200 run
    (``L.fp16_eval``)."""
    runs, checks = measured["fp16"], []
    if not len(runs):
        return checks
    wd = config["fp16_weight_decay"]
    setting = f"the book's CNN, weight decay {wd:g}, same seeds; convolutions in float32"
    if "bn" in set(runs.norm):
        full = fp16_accuracy(measured, "bn", "fp32", config["repeats"])
        low = fp16_accuracy(measured, "bn", "fp16")
        checks.append(
            claims.check_true(
                "L.fp16_l2_fails",
                PAPER,
                f"L2 batch norm fails with float16 statistics (a float16 accumulator for the sum and the sum of "
                f"squares; not the paper's failing arm, which had a float32 accumulator, see L.l2_fp32_acc): "
                f"diverged, or test accuracy below its float32 twin's minus {ACC_MARGIN:.0%} ({setting})",
                full - ACC_MARGIN,
                low,
                _fails(full, low),
                f"< {full - ACC_MARGIN:.3g} or diverged",
                kind="derived",
                alternative=("L2 trains with float16 statistics as in float32", _fails(full, full)),
            )
        )
    if {"l1bn", "bn"} <= set(runs.norm):
        chance = chance_accuracy(config)
        full = fp16_accuracy(measured, "l1bn", "fp32", config["repeats"])
        checks.append(
            claims.check_at_least(
                "L.fp16_l1_trains",
                PAPER,
                "L1 batch norm trains with float16 statistics (a float16 accumulator for the sum and the sum of "
                f"absolute deviations): its mean test accuracy over {config['repeats']} seed(s) at least its float32 "
                f"twins' minus {ACC_MARGIN:.0%}, every run trained ({setting}); with L.fp16_l2_fails, the issue's row",
                full - ACC_MARGIN,
                fp16_accuracy(measured, "l1bn", "fp16"),
                kind="derived",
                alternative=(
                    "L1 fails with float16 statistics as L2 does: L2's float16 accuracy (diverged: chance)",
                    fp16_accuracy_at_chance(measured, "bn", chance),
                ),
                expected=_expected("L.fp16_l1_trains", config["seed"]),
                reason=REASONS.get("L.fp16_l1_trains", ""),
            )
        )
    onsets = overflow_onsets(measured)
    if len(onsets):
        under = overflow_onsets(measured, "result")
        checks.append(
            claims.check_true(
                "L.fp16_onset",
                PAPER,
                "every layer's float16 statistics first overflow at the step the chapter predicts: where a channel's "
                "float64 sum (of squares for L2, of absolute deviations for L1, or of the values) passes 65504, "
                f"i.e. n sigma^2 > 65504 for L2 (±{ONSET_BAND:.0%} for rounding): layers that agree",
                float(len(onsets)),
                float(onsets.agrees.sum()),
                bool(onsets.agrees.all()),
                "all layers",
                kind="identity",
                alternative=(
                    "a float32 accumulator: only a variance (L2) or deviation (L1) above 65504 overflows",
                    bool(under.agrees.all()),
                ),
            )
        )
    table = running_eval_table(measured)
    if len(table):
        agree = table.dropped == (table.predicted > 0)
        checks.append(
            claims.check_true(
                "L.fp16_eval",
                PAPER,
                "in this chapter's emulation (not compared with the H200's numbers), float16 running statistics "
                "collapse eval mode: with float32 batch statistics "
                "(today's kernels) and float16 buffers, eval accuracy drops by more than "
                f"{ACC_MARGIN:.0%} exactly at the input scales where a first-layer running variance (L2: sigma > 256) "
                "or deviation (L1: sigma > 65504) is predicted to overflow: (normalizer, scale) cases that agree",
                float(len(table)),
                float(agree.sum()),
                bool(agree.all()),
                "all cases",
                kind="identity",
                alternative=(
                    "the overflow is in the batch statistics' accumulator (training), running statistics are safe",
                    bool((~table.dropped).all()),
                ),
            )
        )
    return checks


def _half_checks(measured: dict[str, pd.DataFrame]) -> list[claims.ClaimCheck]:
    """The ``model.half()`` arm, only when it ran (CUDA): ``L.half_l1`` (L1's float16 eval accuracy within
    :data:`ACC_MARGIN` of its float32 run at every input scale) and ``L.half_l2`` (L2's float16 eval accuracy more
    than the margin below float32 at the largest scale)."""
    half = measured.get("half", pd.DataFrame())
    if not len(half) or set(half.dtype) < {"float16", "float32"}:
        return []
    acc = half.set_index(["norm", "dtype", "scale"])["eval_accuracy"]
    scales = sorted(set(half.scale))
    lost = 2 * ACC_MARGIN
    l1_gap = min(acc[("l1bn", "float16", s)] - acc[("l1bn", "float32", s)] for s in scales)
    top = scales[-1]
    l2_16, l2_32 = acc[("bn", "float16", top)], acc[("bn", "float32", top)]
    return [
        claims.check_at_least(
            "L.half_l1",
            PAPER,
            "L1 batch norm in model.half() (float16 weights, activations and buffers; today's kernels): eval "
            f"accuracy within {ACC_MARGIN:.0%} of float32 at every input scale (worst difference)",
            -ACC_MARGIN,
            l1_gap,
            kind="paper",
            alternative=(f"float16 costs L1 {lost:.0%}", -lost),
        ),
        claims.check_true(
            "L.half_l2",
            PAPER,
            f"L2 batch norm in model.half() fails in eval mode at input scale {top:g}: accuracy below float32's "
            f"minus {ACC_MARGIN:.0%}",
            l2_32 - ACC_MARGIN,
            l2_16,
            _fails(l2_32, l2_16),
            f"< {l2_32 - ACC_MARGIN:.3g}",
            kind="paper",
            alternative=("L2 works in float16 as in float32", _fails(l2_32, l2_32)),
        ),
    ]


class LpBatchNorm(Experiment):
    """Hoffer et al.: L1, L-infinity and Top-k batch norm, bounded weight normalization, and low precision."""

    notebook = NOTEBOOK
    title = TITLE
    paper = PAPER
    spec = SPEC
    book_seconds = 198.0
    key_params = (
        "norms",
        "fp16_weight_decay",
        "wn_lr",
        "arch",
        "repeats",
        "pair_repeats",
        "dataset",
        "subset",
        "batch_size",
        "epochs",
        "lr",
        "seed",
    )

    def compute(self, config: Config, *, executor: Any = None, cache: bool = True) -> dict[str, pd.DataFrame]:
        """:func:`measure_all`: the training runs go to ``executor``, cached one by one."""
        return measure_all(config, executor, cache)

    def predict(
        self, config: Config, measured: dict[str, pd.DataFrame], *, theory: Any = default_theory
    ) -> Predictions:
        """``constants`` (:func:`constants_table`: the derived ratio at every measured n) and ``overflow``
        (:func:`overflow_table`: the predicted float16 overflow sizes at every sigma)."""
        return {
            "constants": constants_table(config, measured, theory),
            "overflow": overflow_table(config, measured, theory),
        }

    def check(
        self, config: Config, measured: dict[str, pd.DataFrame], predicted: Predictions
    ) -> list[claims.ClaimCheck]:
        """:func:`check_claims`."""
        return check_claims(config, measured, predicted)


EXPERIMENT = LpBatchNorm()
