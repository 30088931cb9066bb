r"""Principle A, stable forward propagation: the residual stream of a ResNet at initialization.

What is measured: the second moment :math:`\mathbb E[x_l^2]` (and the paper's per-channel activation variance) of
the residual stream after the stem and after every block of a CIFAR ResNet at initialization, in training mode
(batch statistics), on a batch of standard Gaussian CIFAR-shaped images, for every normalizer and three variants:

* ``plain``: the paper's block (post-activation by default);
* ``skipinit``: the residual branch scaled by a learnable scalar that starts at 0 (De & Smith 2020);
* ``nf``: NF-ResNet-style scaling (Brock et al. 2021), pre-activation blocks whose branch sees :math:`x_l/\beta_l`.
  It is the remedy for the parametric normalizers and for no normalizer, so it runs only for those.

The predictions come from :mod:`normlib.theory` (derived in this book, not the paper's formulas).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from normlib import claims, layers, models, probes
from normlib import theory as default_theory
from normlib.experiments import checks as shared_checks
from normlib.experiments.protocol import Experiment, Predictions
from normlib.params import Config, Param, ParameterError, ParamSpec
from normlib.runtime import derive_seed, resolve_device

NOTEBOOK = "01_stable_forward"
TITLE = "Stable forward propagation"
PAPER = "Lubana et al. 2021"
VARIANTS = ("plain", "skipinit", "nf")
GROUPED = ("gn", "evo_s0")


def _check_groups(config: Mapping[str, Any]) -> None:
    """Every grouped normalizer asked for must be buildable at every width (group size divides the width)."""
    for norm in (n for n in config["norms"] if n in GROUPED):
        for width in config["widths"]:
            try:
                layers.make_norm(norm, width, **norm_options(norm, config))
            except ValueError as error:
                name = "group_size" if config["group_size"] is not None else "widths"
                raise ParameterError(f"parameter {name!r}: {norm} cannot be built at width {width}: {error}") from None


SPEC = ParamSpec(
    params=(
        Param("norms", "str_list", f"normalizers to compare: {', '.join(layers.NORM_NAMES)} or one you registered"),
        Param("variants", "str_list", "block variants: plain, SkipInit, NF remedy", choices=VARIANTS),
        Param("depth", "int", "ResNet depth 6n+2 (27 blocks at 56)", minimum=8),
        Param("widths", "int_list", "widths of the three stages", minimum=1),
        Param("block", "str", "post-activation (the paper's ResNet) or pre-activation blocks", choices=("post", "pre")),
        Param(
            "group_size",
            "optional_int",
            "group size of GroupNorm and EvoNorm-S0 (None: 32 groups, as the paper)",
            minimum=1,
        ),
        Param("batch_size", "int", "images per batch", minimum=2),
        Param("image_size", "int", "height and width of the input images", minimum=8),
        Param("repeats", "int", "independent initializations", minimum=1),
        Param("alpha", "float", "NF-ResNet branch scale alpha", minimum=1e-6),
        Param("seed", "int", "base random seed", minimum=0),
        Param("device", "str", "cpu, cuda or auto (CUDA when present)", choices=("cpu", "cuda", "auto")),
    ),
    presets={
        "book": {
            "norms": list(layers.NORM_NAMES),
            "variants": list(VARIANTS),
            "depth": 56,
            "widths": [32, 64, 128],
            "block": "post",
            "group_size": None,
            "batch_size": 16,
            "image_size": 8,
            "repeats": 2,
            "alpha": 0.2,
            "seed": 0,
            "device": "cpu",
        },
        "paper": {
            "norms": list(layers.NORM_NAMES),
            "variants": list(VARIANTS),
            "depth": 56,
            "widths": [32, 64, 128],
            "block": "post",
            "group_size": None,
            "batch_size": 256,
            "image_size": 32,
            "repeats": 5,
            "alpha": 0.2,
            "seed": 0,
            "device": "auto",
        },
    },
    checks=(
        lambda config: shared_checks.registered_norms(config, "norms"),
        shared_checks.resnet_depth,
        shared_checks.resnet_widths,
        _check_groups,
        shared_checks.device_available,
    ),
)


def norm_options(norm: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Options passed to the normalizer: the group size for the grouped ones when one is set."""
    if norm in GROUPED and config["group_size"] is not None:
        return {"group_size": config["group_size"]}
    return {}


def runs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (normalizer, variant) pairs measured; the NF remedy only for the parametric ones and ``none``."""
    return [
        (norm, variant)
        for norm in config["norms"]
        for variant in config["variants"]
        if variant != "nf" or layers.norm_info(norm).family != "activation"
    ]


def transition_blocks(depth: int) -> tuple[int, int]:
    """The downsampling blocks (1-based), whose convolutional shortcut restarts the stream."""
    per_stage = (depth - 2) // 6
    return (per_stage + 1, 2 * per_stage + 1)


def _measure_one(config: Mapping[str, Any], norm: str, variant: str, repeat: int, device: torch.device) -> pd.DataFrame:
    seed = derive_seed(config["seed"], repeat)
    torch.manual_seed(seed)
    model = models.make_resnet(
        depth=config["depth"],
        widths=tuple(config["widths"]),
        norm=norm,
        block="pre" if variant == "nf" else config["block"],
        skipinit=variant == "skipinit",
        remedy="nf" if variant == "nf" else None,
        alpha=config["alpha"],
        in_channels=3,
        num_classes=100,
        **norm_options(norm, config),
    ).to(device)
    model.train()
    generator = torch.Generator().manual_seed(seed + 1)
    size = config["image_size"]
    images = torch.randn(config["batch_size"], 3, size, size, generator=generator).to(device)
    with torch.no_grad():
        frame = probes.probe_model(model, images, metrics=("second_moment", "variance"))
    frame = frame.rename(columns={"index": "block"})
    return frame.assign(norm=norm, variant=variant, repeat=repeat)


def measure_streams(config: Mapping[str, Any]) -> pd.DataFrame:
    """Residual-stream statistics for every (normalizer, variant, repeat): a tidy frame with columns
    ``norm, variant, repeat, block, point, metric, value`` (block 0 is the stem output)."""
    device = resolve_device(config["device"])
    jobs = [(norm, variant, repeat) for repeat in range(config["repeats"]) for norm, variant in runs(config)]
    frames = [
        _measure_one(config, norm, variant, repeat, device)
        for norm, variant, repeat in tqdm(jobs, desc="ResNets at initialization")
    ]
    columns = ["norm", "variant", "repeat", "block", "point", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[columns]


def mean_curve(measured: pd.DataFrame, norm: str, variant: str, metric: str = "second_moment") -> np.ndarray:
    """The measured statistic averaged over repeats, indexed by block."""
    rows = measured[(measured.norm == norm) & (measured.variant == variant) & (measured.metric == metric)]
    return rows.groupby("block")["value"].mean().sort_index().to_numpy()


def law(norm: str, variant: str) -> str:
    """Which law the derivation predicts (see normlib.theory): ``flat`` (SkipInit), ``linear`` (an
    activation-based normalizer ending the branch, or the NF remedy), ``bounded`` (a normalizer acting on the
    residual sum itself, the EvoNorms in the authors' placement) or ``exponential`` (parametric or none)."""
    if variant == "skipinit":
        return "flat"
    if variant == "nf":
        return "linear"
    if layers.norm_info(norm).family != "activation":
        return "exponential"
    return "bounded" if stream_unit(norm).stream_activation.startswith("evo") else "linear"


def map_sizes(config: Mapping[str, Any]) -> list[int]:
    """Spatial size of the feature maps at the stem and in every block (strides 1, 2, 2)."""
    per_stage = (config["depth"] - 2) // 6
    size = config["image_size"]
    stage_sizes = [size, -(-size // 2), -(-size // 4)]
    return [size] + [s for s in stage_sizes for _ in range(per_stage)]


#: Walkers of the mean-field model: its growth factors carry a sampling error of about 0.5 %.
MEAN_FIELD_WALKERS = 50_000


def stream_unit(norm: str, theory: Any = default_theory) -> Any:
    """The mean-field description of ``norm`` (a ``theory.StreamUnit``); a normalizer registered by a user is
    described by its family (an activation-based one as a centring normalizer, any other as a He-initialized plain
    convolution)."""
    if norm in theory.STREAM_UNITS:
        return theory.STREAM_UNITS[norm]
    family = layers.norm_info(norm).family
    return theory.StreamUnit() if family == "activation" else theory.STREAM_UNITS["none"]


def predict_stream(config: Mapping[str, Any], norm: str, variant: str, theory: Any = default_theory) -> np.ndarray:
    """The predicted second moment of the stream after the stem and each block, from the mean-field model
    :func:`normlib.theory.mean_field_stream` of this very architecture (no constant is fitted to the measurement).
    """
    blocks = 3 * ((config["depth"] - 2) // 6)
    return theory.mean_field_stream(
        stream_unit(norm, theory),
        blocks,
        block="pre" if variant == "nf" else config["block"],
        skip_gain=0.0 if variant == "skipinit" else 1.0,
        reset_blocks=transition_blocks(config["depth"]),
        sizes=map_sizes(config),
        nf_alpha=config["alpha"] if variant == "nf" else None,
        walkers=MEAN_FIELD_WALKERS,
        seed=config["seed"],
    )


def growth(config: Mapping[str, Any], curve: np.ndarray) -> float:
    """Per-block growth factor within stages (downsampling blocks left out), see
    :func:`normlib.theory.growth_factor`."""
    return default_theory.growth_factor(curve, exclude_blocks=transition_blocks(config["depth"]))


#: The mean-field model neglects the correlations between entries of one channel or one sample and the
#: fluctuations of finite width, so its growth factor is compared with the measured one within 15 %. That is far
#: tighter than the gap the paper's dichotomy is about: linear growth gives about 1.3 per block here, doubling 2.
GROWTH_REL_TOL = 0.15

_STATEMENTS = {
    "linear": "{title} keeps the residual stream growing linearly in depth, not exponentially",
    "bounded": "{title} normalizes the residual sum itself, so the stream stays bounded, not exponential",
    "exponential": "with {title} the residual stream grows exponentially in depth",
    "flat": "with SkipInit and {title} the stream follows the predicted law (flat unless an activation rescales it)",
    "nf": "with {title}, NF-ResNet scaling brings back linear growth",
}


def claim_id(norm: str, variant: str) -> str:
    """``A.<law>.<norm>``, the law being the one the derivation predicts (``nf`` for the NF remedy)."""
    return f"A.{'nf' if variant == 'nf' else law(norm, variant)}.{norm}"


class StableForward(Experiment):
    """Principle A: the residual stream of a ResNet at initialization, against the mean-field model."""

    notebook = NOTEBOOK
    title = TITLE
    paper = PAPER
    spec = SPEC

    def compute(self, config: Config, *, executor: Any = None, cache: bool = True) -> pd.DataFrame:
        """:func:`measure_streams` (one process: each network is a single forward pass)."""
        return measure_streams(config)

    def predict(self, config: Config, measured: Any = None, *, theory: Any = default_theory) -> Predictions:
        """``curves``: the predicted second moment after the stem and every block, by (normalizer, variant); and
        the predicted per-block growth factor under each claim's id."""
        curves = {(norm, variant): predict_stream(config, norm, variant, theory) for norm, variant in runs(config)}
        return {"curves": curves, **{claim_id(n, v): growth(config, curve) for (n, v), curve in curves.items()}}

    def check(self, config: Config, measured: pd.DataFrame, predicted: Predictions) -> list[claims.ClaimCheck]:
        """For every (normalizer, variant) run, the measured per-block growth factor of the stream against the
        mean-field model's (both within stages, see :func:`growth`)."""
        checks = []
        for norm, variant in runs(config):
            kind = "nf" if variant == "nf" else law(norm, variant)
            statement = _STATEMENTS[kind].format(title=layers.norm_info(norm).title)
            observed = growth(config, mean_curve(measured, norm, variant))
            checks.append(
                claims.check_close(
                    claim_id(norm, variant),
                    PAPER,
                    statement,
                    predicted[claim_id(norm, variant)],
                    observed,
                    rel_tol=GROWTH_REL_TOL,
                )
            )
        return checks


EXPERIMENT = StableForward()
