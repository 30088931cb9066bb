"""The ``book`` and ``paper`` training setups, as parameters a notebook's :class:`~normlib.params.ParamSpec` reuses.

:data:`TRAIN_PARAMS` are the training parameters (their definitions are :data:`normlib.train.PARAMS` where the
name is a :class:`~normlib.train.TrainConfig` field), :data:`TRAIN_PRESETS` their values at both scales, and
:func:`training_spec` merges them with a notebook's own parameters and overrides into one ``ParamSpec``, so that
every value goes through the one resolve-and-validate step of :mod:`normlib.params`. :func:`train_config` and
:func:`dataset_options` turn a resolved configuration into the arguments of :func:`normlib.train.train_model`.

**paper** (Lubana et al. 2021, the official code's ``main.py`` and ``config.py``): CIFAR-100, batch 256, 60 epochs on
the per-iteration schedule (the base rate for 75 % of the iterations, i.e. 45 epochs, then a tenth: the code's
``[40, 20]`` epochs realised by its ``LR_Scheduler``), base rate ``0.1 * 256 / batch_size``, SGD momentum 0.9,
weight decay 1e-4 on all parameters, no warm-up (a notebook sets ``warmup_epochs=5`` for FRN), horizontal flips as
the only augmentation, seed 0, ``device="auto"``.

**The paper's small-batch quirk** (``paper_small_batch=True``, on in the paper preset). For a batch size below 32
the code trains ``[8, 2]`` = 10 epochs ("10 epochs at batch-size of 16 have 2x number of iterations as 60 epochs of
batch-size 256"), but computes the scheduler's length *before* that override, from the 60 epochs. The LR would
drop after 45 of 60 epochs, so in the 10 epochs trained it **never decays**: at batch 16 it stays at
``0.1 * 256 / 16 = 1.6`` throughout. Its warm-up, when on, is 1 epoch at batch 16 (``1 if bsize == 16 else 5``).
:func:`train_config` reproduces this with ``epochs=10`` and ``schedule_epochs=<epochs>``; with
``paper_small_batch=False`` a small batch trains ``epochs`` epochs on a schedule of the same length.

**book**: Fashion-MNIST, a class-balanced subset of :data:`BOOK_SUBSET` training images (the whole test split),
batch 128, :data:`BOOK_EPOCHS` epochs, the paper's optimizer and schedule (peak LR ``0.1 * 256 / 128 = 0.2``),
flips, on the CPU. :data:`BOOK_CNN` is the small CNN sized for it, four 3x3 conv-norm-ReLU units whose first
layer already downsamples (28x28 maps are where a CPU spends its time): ``benchmarks/bench_train.py`` measures
test accuracy and wall time against the target, >= 85 % in <= 60 s on 2 CPU cores. With 10 000 images no CNN
tried that was as fast reached 85 % in 3 epochs, hence 20 000.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from normlib import data, train
from normlib.params import Param, ParameterError, ParamSpec
from normlib.runtime import resolve_device

__all__ = [
    "TRAIN_PARAMS",
    "TRAIN_PRESETS",
    "BOOK_CNN",
    "BOOK_SUBSET",
    "BOOK_EPOCHS",
    "SMALL_BATCH",
    "SMALL_BATCH_EPOCHS",
    "training_spec",
    "train_config",
    "dataset_options",
]

#: The paper's code switches to its short schedule below this batch size.
SMALL_BATCH = 32
#: Epochs the paper's code trains below :data:`SMALL_BATCH` (its ``[8, 2]``).
SMALL_BATCH_EPOCHS = 10
#: Batch size at which the paper's code warms up for one epoch instead of five.
_ONE_EPOCH_WARMUP_BATCH = 16

BOOK_SUBSET = 20_000
BOOK_EPOCHS = 3

#: ``models.make_cnn`` options of the book's small CNN for Fashion-MNIST (1x28x28, 10 classes); pass ``norm``.
BOOK_CNN: dict[str, Any] = {"cfg": [(32, 2), 64, (64, 2), 128], "in_channels": 1, "num_classes": 10}

_TRAIN_FIELDS = (
    "batch_size",
    "epochs",
    "lr",
    "lr_scale_with_batch",
    "momentum",
    "weight_decay",
    "warmup_epochs",
    "schedule",
    "lr_milestones",
    "lr_decay",
    "augment",
    "divergence_factor",
    "device",
    "seed",
    "max_steps",
)

#: The training parameters every training notebook shares.
TRAIN_PARAMS: tuple[Param, ...] = (
    Param("dataset", "str", "training data (synthetic: Gaussian images, for tests)", choices=data.DATASETS),
    Param("subset", "optional_int", "class-balanced subset of the training split (None: all of it)", minimum=1),
    Param("test_subset", "optional_int", "class-balanced subset of the test split (None: all of it)", minimum=1),
    *(train.PARAMS[name] for name in _TRAIN_FIELDS),
    Param(
        "paper_small_batch",
        "bool",
        f"the paper code's rule below batch {SMALL_BATCH}: train "
        f"{SMALL_BATCH_EPOCHS} epochs on a schedule built for `epochs` (so the LR never decays)",
    ),
)

_SHARED = {
    "lr": 0.1,
    "lr_scale_with_batch": True,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup_epochs": 0.0,
    "schedule": "paper",
    "lr_milestones": (),
    "lr_decay": 0.1,
    "augment": True,
    "divergence_factor": train.DIVERGENCE_FACTOR,
    "seed": 0,
    "max_steps": None,
}

#: The values of :data:`TRAIN_PARAMS` at each scale.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "book": {
        **_SHARED,
        "dataset": "fashion-mnist",
        "subset": BOOK_SUBSET,
        "test_subset": None,
        "batch_size": 128,
        "epochs": BOOK_EPOCHS,
        "device": "cpu",
        "paper_small_batch": False,
    },
    "paper": {
        **_SHARED,
        "dataset": "cifar100",
        "subset": None,
        "test_subset": None,
        "batch_size": 256,
        "epochs": 60,
        "device": "auto",
        "paper_small_batch": True,
    },
}


def train_config(config: Mapping[str, Any], **fields: Any) -> train.TrainConfig:
    """The :class:`~normlib.train.TrainConfig` of a resolved configuration, with the paper's small-batch quirk.

    ``config`` holds (at least) the :data:`TRAIN_PARAMS`; other keys (a notebook's own) are ignored. ``fields``
    override or add ``TrainConfig`` fields (``batch_size=16`` from a sweep, ``probe_metrics``, ``progress``...);
    the quirk is applied after them. A value that is not allowed raises :class:`~normlib.params.ParameterError`.
    """
    known = set(train.TrainConfig.__dataclass_fields__) | {p.name for p in TRAIN_PARAMS}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ParameterError(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    merged = {**config, **fields}
    values = {k: v for k, v in merged.items() if k in train.TrainConfig.__dataclass_fields__}
    if merged.get("paper_small_batch") and merged["batch_size"] < SMALL_BATCH:
        values.update(epochs=SMALL_BATCH_EPOCHS, schedule_epochs=merged["epochs"])
        if merged["batch_size"] == _ONE_EPOCH_WARMUP_BATCH and merged.get("warmup_epochs"):
            values["warmup_epochs"] = 1.0
    return train.TrainConfig(**values)


def dataset_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``dataset`` argument of :func:`normlib.train.train_model` for a resolved configuration."""
    return {"name": config["dataset"], "subset": config["subset"], "test_subset": config["test_subset"]}


def _check_training(config: dict[str, Any]) -> None:
    """The combination is trainable: the device exists and :func:`train_config` accepts it (warm-up within the
    schedule, ...)."""
    resolve_device(config["device"])
    train_config(config)


def training_spec(
    extra_params: Sequence[Param] = (),
    book: Mapping[str, Any] | None = None,
    paper: Mapping[str, Any] | None = None,
    checks: Sequence[Callable[[dict[str, Any]], None]] = (),
) -> ParamSpec:
    """A notebook's ``ParamSpec``: its own ``extra_params`` first, then :data:`TRAIN_PARAMS`.

    ``book`` and ``paper`` give the values of the notebook's own parameters and override training values at that
    scale (``{"epochs": 2}``). An extra parameter named like a training one replaces its definition (to narrow
    what a notebook allows). ``checks`` run after the training check (device available, schedule valid).
    """
    own = {p.name for p in extra_params}
    params = (*extra_params, *(p for p in TRAIN_PARAMS if p.name not in own))
    presets = {"book": {**TRAIN_PRESETS["book"], **(book or {})}, "paper": {**TRAIN_PRESETS["paper"], **(paper or {})}}
    return ParamSpec(params=params, presets=presets, checks=(_check_training, *checks))
