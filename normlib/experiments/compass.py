r"""The compass: grade any normalizer on Lubana et al.'s three properties at initialization, predict how it trains,
and check the prediction with a short run.

What is measured, for the chosen layer (``norm``: a registered name or the reader's own ``module:Class`` /
``path/to/file.py:Class``) and every baseline (by default the paper's ten):

* **A, stable forward** (chapter 01's measurement): the second moment of the residual stream after every block of
  the book's post-activation ResNet at initialization; the law is read from chapter 01's statistics, the
  increments' acceleration (1 for linear growth, :math:`r` for growth by :math:`r` per block) and the late-to-early
  rise (near 0 for a stream that settles).
* **B, informative forward** (chapter 02's): the mean cosine similarity between samples and the stable rank after
  the last unit of the constant-width CNN, on real test images.
* **C, stable backward** (chapter 03's notion): the per-layer growth factor of the squared gradient norm at the
  convolutions of the same CNN, fitted by :func:`normlib.theory.fit_growth_factor`.
* **Training**: the chosen layer and three baselines train the book's small CNN for a short run; the mean training
  accuracy over the run (the paper's "Mean Train. Acc.") is the speed.

Each grade has a threshold halfway between two laws the book derived or measured (see :data:`A_LINEAR_MAX`,
:func:`b_threshold`, :data:`C_EXPLODES_MIN`); the predictions come from :mod:`normlib.theory` where it covers the
layer, and are "no prediction" where it does not (a layer of the reader's own). Everything here is this book's
model (``derived``), not the paper's formulas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from normlib import claims, data, layers, models, presets, probes
from normlib import theory as default_theory
from normlib import train as training
from normlib.cache import cached_call
from normlib.experiments import informative_forward as chapter02
from normlib.experiments import stable_forward as chapter01
from normlib.experiments.protocol import Experiment, Predictions
from normlib.params import Config, Param, ParameterError
from normlib.runtime import derive_seed, resolve_device, torch_threads
from normlib.sweep import sweep

NOTEBOOK = "04_compass"
TITLE = "A compass for your own normalizer"
PAPER = "Lubana et al. 2021"
#: The ten normalizers of the paper, by their registry names.
PAPER_TEN = tuple(n for n in layers.NORM_NAMES if n != "none")
#: Classes of Fashion-MNIST (the book's data set) and of the CNN's head.
CLASSES = 10

# ---------------------------------------------------------------------------------------------------------------
# grades: each threshold sits halfway between two laws

#: A: an acceleration above this is exponential growth: halfway between linear growth (1) and chapter 01's slow
#: exponential (1.24 per block, its linear rows' alternative).
A_LINEAR_MAX = (1.0 + chapter01.SLOW_EXPONENTIAL_RATE) / 2
#: A: a late-to-early rise at most this is a stream that settles (chapter 01's bound, halfway between 0 and 1).
A_BOUNDED_MAX = chapter01.BOUNDED_RISE_MAX
#: C: a per-layer growth factor of the squared gradient norm at least this explodes: halfway between no growth (1)
#: and BatchNorm's pi/(pi - 1) (Yang et al. 2019).
C_EXPLODES_MIN = (1.0 + default_theory.bn_growth_factor()) / 2
#: The B row of RMSNorm compares its last-layer cosine with the model's within chapter 02's finite-width scale.
B_ABS_TOL = chapter02.MEAN_FIELD_ABS_TOL


def _check_norm(config: Mapping[str, Any]) -> None:
    """``norm`` and every baseline is registered or a loadable plugin (checked by a one-batch smoke test now)."""
    for name, values in (("norm", [config["norm"]]), ("baseline_norms", config["baseline_norms"])):
        for value in values:
            try:
                layers.norm_info(value)
            except ValueError as error:
                raise ParameterError(f"parameter {name!r}: {error}") from None
    if config["norm"] in config["baseline_norms"]:
        raise ParameterError(
            f"parameter 'norm': {config['norm']!r} is also a baseline; allowed: a layer not in baseline_norms"
        )
    missing = [n for n in config["train_baselines"] if n not in config["baseline_norms"]]
    if missing:
        raise ParameterError(
            f"parameter 'train_baselines': {missing[0]!r} is not in baseline_norms; allowed: "
            f"{', '.join(config['baseline_norms'])}"
        )
    if len(set(config["train_baselines"])) != len(config["train_baselines"]):
        raise ParameterError("parameter 'train_baselines': duplicate entries; allowed: distinct baselines")


def _check_sizes(config: Mapping[str, Any]) -> None:
    if 28 // config["pool"] < 2:
        raise ParameterError(f"parameter 'pool': invalid value {config['pool']!r}; allowed: 1 to 14")
    for norm in [config["norm"], *config["baseline_norms"]]:
        try:
            layers.make_norm(norm, config["width"])
        except ValueError as error:
            raise ParameterError(
                f"parameter 'width': {norm} cannot be built at width {config['width']}: {error}"
            ) from None


OWN_PARAMS = (
    Param("norm", "str", "the layer graded: a registered name (rms, ...) or your own module:Class / file.py:Class"),
    Param("baseline_norms", "str_list", f"the layers it is placed among (the paper's ten: {', '.join(PAPER_TEN)})"),
    Param("depth", "int", "conv-normalizer-ReLU units of the constant-width CNN (B and C)", minimum=5),
    Param("width", "int", "channels of every unit of that CNN", minimum=2),
    Param("resnet_depth", "int", "depth 6n+2 of the ResNet of property A", minimum=8, maximum=602),
    Param("init_batch", "int", "images per batch at initialization", minimum=2),
    Param("pool", "int", "average pooling of the 28x28 test images seen by the CNN at initialization", minimum=1),
    Param("repeats", "int", "independent initializations of every network at initialization", minimum=1),
    Param("train_baselines", "str_list", "baselines trained beside the layer (three of baseline_norms)"),
)

BOOK = {
    "norm": "rms",
    "baseline_norms": list(PAPER_TEN),
    "depth": 10,
    "width": 64,
    "resnet_depth": 56,
    "init_batch": 32,
    "pool": 4,
    "repeats": 2,
    "train_baselines": ["bn", "evo_s0", "ln"],
    "subset": 2048,
    "test_subset": 500,
    "batch_size": 64,
    "epochs": 1,
}
PAPER_VALUES = {
    "norm": "rms",
    "baseline_norms": list(PAPER_TEN),
    "depth": 10,
    "width": 64,
    "resnet_depth": 56,
    "init_batch": 256,
    "pool": 1,
    "repeats": 5,
    "train_baselines": ["bn", "evo_s0", "ln"],
}


def _check_resnet(config: Mapping[str, Any]) -> None:
    if (config["resnet_depth"] - 2) % 6:
        raise ParameterError(
            f"parameter 'resnet_depth': invalid value {config['resnet_depth']!r}; allowed: 6n+2, e.g. 20, 32, 56"
        )


SPEC = presets.training_spec(
    extra_params=OWN_PARAMS,
    book=BOOK,
    paper=PAPER_VALUES,
    checks=(_check_norm, _check_resnet, _check_sizes),
)


def all_norms(config: Mapping[str, Any]) -> list[str]:
    """The graded layer first, then the baselines."""
    return [config["norm"], *config["baseline_norms"]]


def title(norm: str) -> str:
    """A short display name: the registry's title (a plugin's class name)."""
    return layers.norm_info(norm).title


# ---------------------------------------------------------------------------------------------------------------
# measurements at initialization


def resnet_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration chapter 01's ResNet measurement takes (the book's post-activation ResNet, widths 32/64/128,
    Gaussian CIFAR-shaped images of 8x8, the paper's 32 groups)."""
    return {
        "depth": config["resnet_depth"],
        "widths": [32, 64, 128],
        "block": "post",
        "group_size": None,
        "batch_size": 16,
        "image_size": 8,
        "alpha": 1.0,
        "seed": config["seed"],
    }


def measure_stream(config: Mapping[str, Any], norm: str, device: torch.device) -> np.ndarray:
    """A: the residual stream's second moment after the stem and every block, averaged over repeats."""
    sub = resnet_config(config)
    frames = [chapter01._measure_safely(sub, norm, "plain", r, device) for r in range(config["repeats"])]
    frame = pd.concat(frames)
    rows = frame[frame.metric == "second_moment"]
    return rows.groupby("block")["value"].mean().sort_index().to_numpy()


def init_images(config: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``init_batch`` class-balanced test images (average-pooled by ``pool``) and their labels."""
    test = data.load_dataset(config["dataset"], "test", subset=config["init_batch"], seed=config["seed"])
    images = F.avg_pool2d(test.images, config["pool"]) if config["pool"] > 1 else test.images
    return images, test.labels


def measure_cnn(
    config: Mapping[str, Any], norm: str, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> dict[str, Any]:
    """B and C on one constant-width CNN per repeat: last-unit cosine and stable rank, and the gradient norm at every
    convolution (cross-entropy with the images' labels), in training mode; averaged over repeats (the gradient norms
    geometrically)."""
    cosines, ranks, grads = [], [], []
    for repeat in range(config["repeats"]):
        torch.manual_seed(derive_seed(config["seed"], repeat))
        model = models.make_cnn(
            "uniform", depth=config["depth"], width=config["width"], in_channels=1, num_classes=CLASSES, norm=norm
        ).to(device)
        model.train()
        x, y = images.to(device), labels.to(device)
        frame = probes.probe_model(model, x, metrics=("cosine", "stable_rank"))
        last = frame[frame["index"] == frame["index"].max()].set_index("metric")["value"]
        cosines.append(float(last["cosine"]))
        ranks.append(float(last["stable_rank"]))
        frame = probes.probe_model(model, x, metrics=("grad_norm",), points=model.conv_points(), target=y)
        grads.append(frame.sort_values("index")["value"].to_numpy(dtype=float))
    return {
        "cosine": float(np.mean(cosines)),
        "stable_rank": float(np.mean(ranks)),
        "grad_norms": np.exp(np.mean(np.log(np.vstack(grads)), axis=0)),
    }


#: The parameters one layer's measurement at initialization depends on (its cache key, with the layer).
INIT_KEYS = ("dataset", "resnet_depth", "depth", "width", "init_batch", "pool", "repeats", "seed", "device")


def measure_layer(norm: str, **config: Any) -> dict[str, Any]:
    """One layer's measurements at initialization (module level, so that it is cached per layer: a report card
    for a new layer measures only that layer): ``acceleration, late_rise, growth`` of the ResNet's stream,
    ``cosine, stable_rank`` of the CNN's last unit, ``grad_factor`` of its gradient norms, and the curves ``stream``
    and ``grad_norms``."""
    device = resolve_device(config["device"])
    images, labels = init_images(config)
    sub = resnet_config(config)
    with torch_threads(1 if device.type == "cpu" else None):  # small networks: threads only synchronize
        stream = measure_stream(config, norm, device)
        cnn = measure_cnn(config, norm, images, labels, device)
    return {
        "norm": norm,
        "acceleration": chapter01.acceleration(sub, stream),
        "late_rise": chapter01.late_rise(sub, stream),
        "growth": chapter01.growth(sub, stream),
        "cosine": cnn["cosine"],
        "stable_rank": cnn["stable_rank"],
        "grad_factor": default_theory.fit_growth_factor(cnn["grad_norms"], 1, 2),
        "stream": stream,
        "grad_norms": cnn["grad_norms"],
    }


def measure_init(config: Mapping[str, Any], cache: bool = True) -> pd.DataFrame:
    """:func:`measure_layer` for every layer (the graded one first), one row each; with ``cache`` every layer goes
    through the result cache on its own."""
    point = {k: config[k] for k in INIT_KEYS}
    rows = []
    for norm in all_norms(config):
        if cache:
            rows.append(cached_call(measure_layer, {"norm": norm, **point}))
        else:
            rows.append(measure_layer(norm, **point))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# training


def trained_norms(config: Mapping[str, Any]) -> list[str]:
    """The graded layer and the three trained baselines."""
    return [config["norm"], *config["train_baselines"]]


def train_grid(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One :func:`normlib.train.train_model` call per trained layer, as plain JSON (the book's small CNN)."""
    train_cfg = presets.train_config(config, progress=False).to_dict()
    cfg = [list(e) if isinstance(e, tuple) else e for e in presets.BOOK_CNN["cfg"]]
    return [
        {"arch": "cnn", "model_kwargs": {"cfg": cfg, "norm": norm}, "dataset": presets.dataset_options(config),
         "config": train_cfg}
        for norm in trained_norms(config)
    ]  # fmt: skip


def train_all(config: Mapping[str, Any], executor: Any = None, cache: bool = True) -> pd.DataFrame:
    """Train every layer of :func:`trained_norms` (a divergence is a result, with its step): ``norm,
    mean_train_acc, test_acc, diverged, diverged_step`` and the accuracy curve ``accuracy``."""
    results = sweep(training.train_model, train_grid(config), executor=executor, cache=cache, progress=False)
    rows = []
    for norm, result in zip(trained_norms(config), results["result"]):
        accuracy = result.history["accuracy"].to_numpy(dtype=float)
        rows.append(
            {
                "norm": norm,
                "mean_train_acc": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
                "test_acc": float(result.test_accuracy),
                "diverged": bool(result.diverged),
                "diverged_step": result.diverged_step,
                "accuracy": accuracy,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# theory: where the book's models place each layer


def a_law(norm: str) -> str | None:
    """Chapter 01's law for the plain block: ``linear``, ``bounded`` or ``exponential``; RMSNorm is linear (it
    fixes the branch's second moment, the cross term still vanishes); None for a layer of the reader's own."""
    if norm not in default_theory.STREAM_UNITS and norm != "rms":
        return None
    return chapter01.law(norm, "plain", "post")


def b_setting(config: Mapping[str, Any], norm: str) -> tuple[str, int | None] | None:
    """How chapter 02's mean-field model describes ``norm``: (normalizer, group size); RMSNorm is the network without
    a normalizer (it rescales each sample by one positive number, which a cosine does not see, and a ReLU and a
    convolution commute with); GroupNorm has the paper's 32 groups. None where the model has nothing to say."""
    if norm == "rms":
        return "none", None
    if norm == "gn":
        return "gn", max(1, config["width"] // layers.DEFAULT_GROUPS)
    if norm in ("bn", "ln", "in"):
        return norm, None
    return None


def _b_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What chapter 02's model reads from a configuration."""
    return {
        "dataset": config["dataset"],
        "batch_size": config["init_batch"],
        "seed": config["seed"],
        "pool": config["pool"],
        "depth": config["depth"],
        "width": config["width"],
    }


def predict_cosines(config: Mapping[str, Any], norms: list[str], theory: Any = default_theory) -> dict[str, float]:
    """Chapter 02's mean-field cosine after the last unit for every layer it describes, and for ``bn`` and ``none``
    (the two ends of the B grade)."""
    sub = _b_config(config)
    start = chapter02.start_correlations(sub, theory)
    out = {}
    for norm in dict.fromkeys([*norms, "bn", "none"]):
        setting = b_setting(config, norm) if norm != "none" else ("none", None)
        if setting is not None:
            out[norm] = float(chapter02.predict(sub, setting[0], setting[1], start, theory)[-1])
    return out


def c_factor(config: Mapping[str, Any], norm: str, theory: Any = default_theory) -> float | None:
    r"""Chapter 03's per-layer growth of the squared gradient norm: :math:`\pi/(\pi-1)` for BatchNorm (Yang et al.),
    the group bound :math:`\pi G/(\pi G-1)` for GroupNorm (32 groups), LayerNorm (``G`` = width) and InstanceNorm
    (``G = 1``), and 1 for RMSNorm (derived on the page: without the mean removal the backward pass only divides by
    the root mean square, which is 1 at initialization). None where the book has no model."""
    if norm == "bn":
        return float(theory.bn_growth_factor())
    groups = {"in": 1, "ln": config["width"], "gn": max(1, config["width"] // layers.DEFAULT_GROUPS)}
    if norm in groups:
        return float(theory.group_growth_factor(groups[norm], theory.IN_KAPPA))
    if norm == "rms":
        return 1.0
    return None


# ---------------------------------------------------------------------------------------------------------------
# grades


def grade_a(acceleration: float, late_rise: float) -> str:
    """``bounded`` (late-to-early rise at most :data:`A_BOUNDED_MAX`), ``linear`` (acceleration at most
    :data:`A_LINEAR_MAX`) or ``exponential``."""
    if np.isfinite(late_rise) and late_rise <= A_BOUNDED_MAX:
        return "bounded"
    return "linear" if np.isfinite(acceleration) and acceleration <= A_LINEAR_MAX else "exponential"


def b_threshold(predicted: Mapping[str, float]) -> float:
    """B: the cosine halfway between the model's BatchNorm (samples kept apart) and no normalizer (samples alike)."""
    return (predicted["bn"] + predicted["none"]) / 2


def grade_b(cosine: float, threshold: float) -> str:
    """``informative`` below the threshold, ``similar`` (slow to train, by the paper's similarity-speed link)."""
    return "informative" if cosine < threshold else "similar"


def grade_c(factor: float) -> str:
    """``explodes`` (at risk at small batch and large rates) from :data:`C_EXPLODES_MIN` on, else ``tame``."""
    return "explodes" if factor >= C_EXPLODES_MIN else "tame"


def report_card(config: Mapping[str, Any], measured: pd.DataFrame, predicted: Predictions) -> pd.DataFrame:
    """The grades: one row per layer (the graded one first) with each property's grade, the threshold it was graded
    against, the measured value, and what the book's theory predicts ("no prediction" where it has none)."""
    threshold = predicted["b_threshold"]
    rows = []
    for _, row in measured.iterrows():
        norm = row["norm"]
        law = predicted["a_law"][norm]
        cos = predicted["cosines"].get(norm)
        factor = predicted["c_factor"][norm]
        rows.append(
            {
                "layer": title(norm),
                "norm": norm,
                "A": grade_a(row["acceleration"], row["late_rise"]),
                "A measured": f"acceleration {row['acceleration']:.3g} (linear <= {A_LINEAR_MAX:.3g}), late rise "
                f"{row['late_rise']:.2g} (bounded <= {A_BOUNDED_MAX:g})",
                "A theory": law or "no prediction",
                "B": grade_b(row["cosine"], threshold),
                "B measured": f"cosine {row['cosine']:.2f} (informative < {threshold:.2f}), stable rank "
                f"{row['stable_rank']:.1f}",
                "B theory": "no prediction" if cos is None else f"cosine {cos:.2f} ({grade_b(cos, threshold)})",
                "C": grade_c(row["grad_factor"]),
                "C measured": f"factor {row['grad_factor']:.3f} (explodes >= {C_EXPLODES_MIN:.3f})",
                "C theory": "no prediction" if factor is None else f"factor {factor:.3f} ({grade_c(factor)})",
            }
        )
    return pd.DataFrame(rows)


def report_card_now(config: Mapping[str, Any]) -> pd.DataFrame:
    """The report card without training: :func:`measure_init` through the cache (every layer on its own, so the
    baselines are measured once per machine) and the predictions (what ``python -m normlib report-card`` prints)."""
    init = measure_init(config, cache=True)
    return report_card(config, init, EXPERIMENT.predict(Config(config) if not isinstance(config, Config) else config))


def advice(card: pd.DataFrame, norm: str) -> list[str]:
    """What the grades predict for training ``norm``."""
    row = card[card.norm == norm].iloc[0]
    words = []
    if row["A"] == "exponential":
        words.append("its residual stream grows exponentially: a ResNet needs SkipInit (or NF-style scaling)")
    else:
        words.append(f"its residual stream grows {'no faster than linearly' if row['A'] == 'linear' else 'boundedly'}"
                     ": a ResNet trains without SkipInit")  # fmt: skip
    if row["B"] == "similar":
        words.append("samples start alike: predicted to train slowly, like LayerNorm")
    else:
        words.append("samples start apart: predicted to train fast, like BatchNorm")
    if row["C"] == "explodes":
        words.append("gradients grow towards the input: at risk at small batch and large learning rates")
    else:
        words.append("gradients stay tame: no added risk at small batch")
    return words


def predicted_order(measured: pd.DataFrame, norms: list[str]) -> list[str]:
    """The trained layers ordered by predicted speed: fastest first, by the last-unit cosine at initialization
    (property B: the more alike the samples start, the slower a network trains)."""
    cos = measured.set_index("norm")["cosine"]
    return sorted(norms, key=lambda n: cos[n])


def separated_pairs(measured: pd.DataFrame, norms: list[str]) -> list[tuple[str, str]]:
    """The pairs (predicted faster, predicted slower) of trained layers whose last-unit cosines differ by more than
    chapter 02's finite-width scale :data:`B_ABS_TOL`: the pairs property B orders. Closer pairs are ties."""
    cos = measured.set_index("norm")["cosine"]
    return [(a, b) for i, a in enumerate(norms) for b in norms[i + 1 :] if cos[b] - cos[a] > B_ABS_TOL] + [
        (b, a) for i, a in enumerate(norms) for b in norms[i + 1 :] if cos[a] - cos[b] > B_ABS_TOL
    ]


def concordant_share(pairs: list[tuple[str, str]], trained: pd.DataFrame) -> float:
    """The share of ``pairs`` (faster, slower) whose first layer reached the higher mean training accuracy (a
    diverged run counts as the slowest); NaN without pairs."""
    if not pairs:
        return float("nan")
    acc = trained.set_index("norm")["mean_train_acc"].fillna(-1.0)
    return float(np.mean([acc[a] > acc[b] for a, b in pairs]))


#: The training row passes when every pair property B orders trains in that order.
ORDER_MIN = 1.0
#: Statements of the rows.
_A_STATEMENT = "{title}'s residual stream grows at most linearly in the ResNet at initialization (acceleration {words})"


def _measured(measured: pd.DataFrame, norm: str, column: str) -> float:
    return float(measured.set_index("norm").loc[norm, column])


class Compass(Experiment):
    """Grade a normalizer on properties A, B and C against the paper's ten, predict its training, check it."""

    notebook = NOTEBOOK
    title = TITLE
    paper = PAPER
    spec = SPEC
    book_seconds = 20.0
    key_params = (
        "norm",
        "baseline_norms",
        "depth",
        "width",
        "resnet_depth",
        "init_batch",
        "repeats",
        "train_baselines",
        "subset",
        "epochs",
        "batch_size",
        "seed",
    )

    def compute(self, config: Config, *, executor: Any = None, cache: bool = True) -> dict[str, pd.DataFrame]:
        """``{"init": measure_init(...), "train": train_all(...)}``."""
        return {"init": measure_init(config, cache), "train": train_all(config, executor, cache)}

    def predict(self, config: Config, measured: Any = None, *, theory: Any = default_theory) -> Predictions:
        """``a_law``, ``cosines``, ``c_factor`` by layer (None where the book has no model), ``b_threshold``, and
        ``order`` (the trained layers by predicted speed, from the measured cosines) and ``pairs`` (those whose order
        property B predicts: :func:`separated_pairs`)."""
        norms = all_norms(config)
        cosines = predict_cosines(config, norms, theory)
        predicted = {
            "a_law": {n: a_law(n) for n in norms},
            "cosines": {n: cosines[n] for n in norms if n in cosines},
            "cosines_ends": {"bn": cosines["bn"], "none": cosines["none"]},
            "c_factor": {n: c_factor(config, n, theory) for n in norms},
            "b_threshold": b_threshold(cosines),
        }
        if measured is not None:
            predicted["order"] = predicted_order(measured["init"], trained_norms(config))
            predicted["pairs"] = separated_pairs(measured["init"], predicted["order"])
        return predicted

    def check(self, config: Config, measured: Any, predicted: Predictions) -> list[claims.ClaimCheck]:
        """The graded layer's A, B and C against the book's models (where they have one), the grades of BatchNorm
        and LayerNorm against what chapters 01-03 found, and the predicted training order."""
        init, trained = measured["init"], measured["train"]
        norm, checks = config["norm"], []
        name = title(norm)
        if predicted["a_law"][norm] == "linear":
            checks.append(
                claims.check_at_most(
                    f"C04.A.{norm}",
                    PAPER,
                    _A_STATEMENT.format(title=name, words=f"at most {A_LINEAR_MAX:.3g}, halfway to 1.24 per block"),
                    A_LINEAR_MAX,
                    _measured(init, norm, "acceleration"),
                    alternative=(
                        "exponential growth by 1.24 per block (acceleration = rate)",
                        chapter01.SLOW_EXPONENTIAL_RATE,
                    ),
                )  # fmt: skip
            )
        cos = predicted["cosines"].get(norm)
        if cos is not None:
            checks.append(
                claims.check_close(
                    f"C04.B.{norm}",
                    PAPER,
                    f"{name}'s last-unit cosine at initialization is the mean-field model's (chapter 02; within "
                    f"{B_ABS_TOL:g}, its finite-width scale)",
                    cos,
                    _measured(init, norm, "cosine"),
                    abs_tol=B_ABS_TOL,
                    # RMSNorm scales each sample by a positive number, so its cosines are the unnormalized net's
                    # exactly: for it this row repeats chapter 02's B.mean_field.none and is not counted again.
                    kind="identity" if norm == "rms" else "derived",
                    alternative=("BatchNorm's cosine (samples kept apart)", predicted["cosines_ends"]["bn"]),
                )
            )
        factor = predicted["c_factor"][norm]
        if factor is not None:
            tame = factor < C_EXPLODES_MIN
            check = claims.check_at_most if tame else claims.check_at_least
            other = default_theory.bn_growth_factor() if tame else 1.0
            checks.append(
                check(
                    f"C04.C.{norm}",
                    PAPER,
                    f"{name}'s squared gradient norm grows per layer {'below' if tame else 'at least'} "
                    f"{C_EXPLODES_MIN:.3f} (halfway between 1 and BatchNorm's pi/(pi-1)); model: {factor:.3f}",
                    C_EXPLODES_MIN,
                    _measured(init, norm, "grad_factor"),
                    alternative=("BatchNorm's pi/(pi-1)" if tame else "no growth", other),
                )  # fmt: skip
            )
        card = report_card(config, init, predicted)
        checks += self._known_grades(card)
        checks.append(self._order_row(config, predicted, trained))
        return checks

    @staticmethod
    def _known_grades(card: pd.DataFrame) -> list[claims.ClaimCheck]:
        """BatchNorm and LayerNorm get the grades chapters 01-03 found: linear, informative, explodes and linear,
        similar, tame. The alternative swaps them."""
        known = {"bn": ("linear", "informative", "explodes"), "ln": ("linear", "similar", "tame")}
        rows = []
        graded = card.set_index("norm")
        for norm, other in (("bn", "ln"), ("ln", "bn")):
            if norm not in graded.index:
                continue
            grades = tuple(graded.loc[norm, ["A", "B", "C"]])
            rows.append(
                claims.check_true(
                    f"C04.grades.{norm}",
                    PAPER,
                    f"the report card grades {title(norm)} {', '.join(known[norm])} (A, B, C), as chapters 01-03 "
                    f"found; measured: {', '.join(grades)}",
                    float("nan"),
                    float(sum(g == k for g, k in zip(grades, known[norm]))),
                    grades == known[norm],
                    "all three grades",
                    kind="identity",
                    alternative=(f"the grades of {title(other)}: {', '.join(known[other])}", grades == known[other]),
                )
            )
        return rows

    @staticmethod
    def _order_row(config: Config, predicted: Predictions, trained: pd.DataFrame) -> claims.ClaimCheck:
        """Every pair of trained layers whose cosines at initialization differ by more than :data:`B_ABS_TOL` trains
        in the order they predict (share of concordant pairs = 1); the alternative is the reversed order."""
        pairs = predicted["pairs"]
        share = concordant_share(pairs, trained)
        reversed_share = concordant_share([(b, a) for a, b in pairs], trained)
        words = ", ".join(f"{title(a)} > {title(b)}" for a, b in pairs)
        return claims.check_at_least(
            "C04.train.order",
            PAPER,
            f"trained layers whose last-unit cosines at initialization differ by more than {B_ABS_TOL:g} train in "
            f"the order the cosines predict, the more alike the slower ({words}; mean training accuracy over a "
            f"short run): share of pairs in that order",
            ORDER_MIN,
            share,
            alternative=("the reversed order: the more alike the samples start, the faster", reversed_share),
        )


EXPERIMENT = Compass()
