r"""The training loop: plain SGD with momentum and weight decay on cross-entropy, the paper's LR schedule with
linear warm-up, divergence detection, probes every ``k`` steps, a tqdm bar and a tidy history.

**Optimizer** (Lubana et al. 2021). ``torch.optim.SGD(momentum=0.9, weight_decay=1e-4)`` on *all* parameters
(normalizer gains and biases included, as the paper's code), minimizing the mean cross-entropy of a mini-batch.
:func:`train`'s ``optimizer_factory`` can replace it, and its ``on_step`` hook sees every step.

**Learning rate.** With ``lr_scale_with_batch`` the peak rate is scaled linearly with the batch size ``B``
(the paper's ``base_sched = [0.1·256/B, 0.01·256/B]``; its ``--init_lr`` multiplier is ``lr / 0.1``):

.. math:: \eta_{\text{peak}} = \eta \cdot 256 / B .

With ``S`` optimizer steps per epoch (``ceil(N / B)``, the last batch may be smaller), ``W = round(w S)`` warm-up
steps for ``w`` warm-up epochs and ``T = E_s S`` steps in the schedule (``E_s`` = ``schedule_epochs``, by default
the trained ``epochs``), step ``t = 0, 1, ...`` uses (:func:`lr_at`)

.. math::

    \eta_t = \begin{cases}
        \eta_{\text{peak}}\, t / W & t < W \quad\text{(linear warm-up from 0)}\\
        \eta_{\text{peak}} & W \le t,\ t - W < \lfloor \tfrac34 (T - W) \rfloor \\
        \eta_{\text{peak}} / 10 & \text{otherwise (schedule "paper")}
    \end{cases}

``schedule="constant"`` keeps :math:`\eta_{\text{peak}}` after the warm-up. ``schedule="multistep"`` (torch's
``MultiStepLR`` on epochs, e.g. the ×0.1 drops at epochs 20/40/60 of Hoffer et al.'s VGG runs) multiplies the rate by
``lr_decay`` =: :math:`\gamma` at each epoch milestone :math:`m_1 < m_2 < \dots` of ``lr_milestones``: after the
warm-up, step ``t`` uses :math:`\eta_{\text{peak}}\,\gamma^{\#\{i:\ t \ge m_i S\}}` (a milestone past the
schedule never applies). The "paper" rule is the per-iteration
``LR_Scheduler`` of the paper's ``config.py``: its epoch lists ``[40, 20]`` read like 40 + 20 epochs, but the
scheduler applies the base rate for the first 75 % of the post-warm-up iterations (45 of 60 epochs at B = 256)
and a tenth of it after. Two one-step shifts of that code are not reproduced: its warm-up is
``np.linspace(0, base, W)`` (the peak is reached at ``W - 1``), and it advances the scheduler after each
optimizer step (so its first step uses the optimizer's initial rate).

**Divergence.** With :math:`\ell_0` the loss of the first step, step ``t`` diverges when

.. math:: \ell_t \notin \mathbb R \quad\text{(NaN or inf)}\qquad\text{or}\qquad \ell_t > f\,\ell_0 ,

with ``f = divergence_factor`` (default :data:`DIVERGENCE_FACTOR` ``= 1e3``: the cross-entropy of a network at
initialization is about :math:`\ln C`, 2.3 to 4.6 for 10 to 100 classes; a thousand times that means logits of
thousands, far beyond any training that recovers; ``inf`` keeps only the non-finite test). The paper's code stops
at a NaN training loss; a finite ``f`` also catches runs that blow up without overflowing. Divergence ends the run
and is *recorded* (``TrainResult.diverged``, ``diverged_step``, the last history row), never raised.

**Accuracies.** The history holds each mini-batch's training accuracy (fraction of argmax hits, in train mode,
measured on the forward pass of the step, before the update); ``train_accuracy`` is the fraction of hits over all
batches of the last epoch trained; ``test_accuracy`` is measured after training in eval mode, without gradients.
Both are NaN when the run diverged. All accuracies are fractions in [0, 1] (the paper prints percentages).

**Determinism.** ``train`` seeds torch with ``seed``; the batch order and the flips come from
``data.batches(seed=seed, epoch=epoch)``. The same model, data and config on the CPU give the same history, bit for
bit. :func:`train_model` also seeds before building the model, so it is deterministic from its arguments alone.

**Cost.** One host-device synchronization per step: the loss and the number of hits travel together in one
``tolist()``. Probe values are converted in batches by :class:`normlib.probes.Probe`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from normlib import data, models
from normlib.params import Param, ParameterError
from normlib.probes import METRICS, Probe
from normlib.runtime import DEVICES, Stopwatch, resolve_device

__all__ = [
    "SCHEDULES",
    "REFERENCE_BATCH",
    "DIVERGENCE_FACTOR",
    "PARAMS",
    "TrainConfig",
    "TrainResult",
    "scaled_lr",
    "lr_at",
    "OptimizerFactory",
    "StepHook",
    "sgd",
    "train",
    "train_model",
    "load_splits",
    "model_kwargs_for",
    "evaluate",
]

SCHEDULES = ("paper", "constant", "multistep")

#: The batch size at which ``lr`` is the step size when ``lr_scale_with_batch`` (the paper's 256).
REFERENCE_BATCH = 256

#: Default ``f`` of the divergence test ``loss > f * first loss``.
DIVERGENCE_FACTOR = 1e3

#: The fraction of post-warm-up steps run at the peak rate by the "paper" schedule, as ``(numerator, denominator)``.
_PEAK_FRACTION = (3, 4)

_EVAL_BATCH = 1024


class _PossiblyEmptyList(Param):
    """A list parameter that may also be empty (``()``, ``[]`` or ``""``: nothing); non-empty lists are checked by
    :meth:`Param.coerce`, and must be strictly increasing (milestones)."""

    def allowed(self) -> str:
        return super().allowed() + ", strictly increasing, possibly empty"

    def coerce(self, value: Any) -> Any:
        if isinstance(value, (list, tuple, str)) and len(value) == 0:
            return []
        items = super().coerce(value)
        if any(b <= a for a, b in zip(items, items[1:])):
            raise self._fail(value, "not strictly increasing")
        return items


#: Every scalar field of :class:`TrainConfig`, validated by :meth:`normlib.params.Param.coerce`; the presets of
#: :mod:`normlib.presets` reuse these definitions.
PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("lr", "float", "base learning rate (the step size at batch 256 when lr_scale_with_batch)", minimum=0),
        Param("momentum", "float", "SGD momentum", minimum=0, maximum=1),
        Param("weight_decay", "float", "L2 weight decay on all parameters", minimum=0),
        Param("batch_size", "int", "images per optimizer step", minimum=2),
        Param("epochs", "int", "epochs trained", minimum=1),
        Param("schedule_epochs", "optional_int", "epochs the LR schedule is built for (None: epochs)", minimum=1),
        Param("warmup_epochs", "float", "linear LR warm-up from 0, in epochs (the paper: 5 for FRN)", minimum=0),
        Param("lr_scale_with_batch", "bool", "step size lr*256/batch_size, as the paper"),
        Param(
            "schedule",
            "str",
            "paper: peak LR for 75% of the post-warm-up steps, then a tenth; constant: peak LR; "
            "multistep: times lr_decay at each epoch of lr_milestones",
            choices=SCHEDULES,
        ),
        _PossiblyEmptyList(
            "lr_milestones",
            "int_list",
            "epochs at which schedule 'multistep' multiplies the LR by lr_decay (strictly increasing; empty: none)",
            minimum=1,
        ),
        Param(
            "lr_decay",
            "float",
            "factor applied to the LR at each of lr_milestones (schedule 'multistep')",
            minimum=0,
            maximum=1,
        ),
        Param(
            "divergence_factor",
            "float",
            "diverged when the loss is non-finite or exceeds this times the first loss",
            minimum=1,
        ),
        Param("device", "str", "cpu, cuda or auto (CUDA when present)", choices=DEVICES),
        Param("seed", "int", "seeds the model, the batch order and the flips", minimum=0),
        Param("probe_every", "int", "probe every k-th step (steps 0, k, 2k, ...)", minimum=1),
        Param("max_steps", "optional_int", "stop after this many steps (None: all epochs)", minimum=1),
        Param("progress", "bool", "show a tqdm progress bar"),
        Param("augment", "bool", "random horizontal flips of the training images (the paper's only augmentation)"),
    )
}

_METRIC_PARAMS = {
    name: Param(name, "str_list", doc, choices=METRICS)
    for name, doc in (
        ("probe_metrics", "probe metrics at model.probe_points() (activations)"),
        ("conv_metrics", "probe metrics at model.conv_points() (the paper's Conv_prober: std, grad_norm)"),
    )
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`train` needs besides the model and the data; validated on construction.

    Defaults are the paper's optimizer and schedule (Lubana et al. 2021) on the CPU. Each field is checked by the
    :class:`~normlib.params.Param` of the same name in :data:`PARAMS` (``probe_metrics``/``conv_metrics``: any of
    :data:`normlib.probes.METRICS`, possibly none); a bad value raises :class:`~normlib.params.ParameterError` that
    names the field and lists what is allowed. :meth:`to_dict` gives the JSON-able form that :func:`train_model`,
    the cache and sweeps take (``TrainConfig(**d)`` reads it back).

    Args:
        lr, lr_scale_with_batch: the peak step size is ``lr * 256 / batch_size`` when scaling, else ``lr``.
        momentum, weight_decay: SGD's.
        batch_size, epochs: mini-batch size and epochs trained.
        schedule_epochs: length of the LR schedule in epochs (None: ``epochs``); longer than ``epochs`` reproduces
            the paper's small-batch quirk (see :mod:`normlib.presets`).
        warmup_epochs: linear warm-up from 0 (fractions allowed; rounded to whole steps).
        schedule: ``"paper"``, ``"constant"`` or ``"multistep"`` (see :func:`lr_at`).
        lr_milestones, lr_decay: the epochs at which ``"multistep"`` multiplies the rate by ``lr_decay``
            (strictly increasing; only allowed with that schedule).
        divergence_factor: ``f`` of the divergence test (``inf``: only non-finite losses).
        device, seed: where to run (``"auto"``: CUDA when present) and the seed of everything random.
        probe_metrics, conv_metrics, probe_every: what :class:`normlib.probes.Probe` records and on which steps.
        max_steps: stop early after this many steps (tiny tests and quick looks).
        progress: a tqdm bar with the loss and batch accuracy.
        augment: random horizontal flips of the training batches.
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 60
    schedule_epochs: int | None = None
    warmup_epochs: float = 0.0
    lr_scale_with_batch: bool = True
    schedule: str = "paper"
    lr_milestones: tuple[int, ...] = ()
    lr_decay: float = 0.1
    divergence_factor: float = DIVERGENCE_FACTOR
    device: str = "cpu"
    seed: int = 0
    probe_metrics: tuple[str, ...] = ()
    conv_metrics: tuple[str, ...] = ()
    probe_every: int = 1
    max_steps: int | None = None
    progress: bool = False
    augment: bool = True

    def __post_init__(self) -> None:
        for name, param in PARAMS.items():
            object.__setattr__(self, name, param.coerce(getattr(self, name)))
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        if self.lr_milestones and self.schedule != "multistep":
            raise ParameterError(
                f"parameter 'lr_milestones': invalid value {list(self.lr_milestones)!r} with "
                f"schedule {self.schedule!r}; allowed: milestones only with schedule 'multistep' "
                "(else an empty list)"
            )
        for name, param in _METRIC_PARAMS.items():
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(param.coerce(value)) if len(value) else ())
        if self.warmup_epochs > self.total_epochs:
            raise ParameterError(
                f"parameter 'warmup_epochs': invalid value {self.warmup_epochs!r}; allowed: at "
                f"most the {self.total_epochs} epochs of the LR schedule"
            )

    @property
    def total_epochs(self) -> int:
        """Length of the LR schedule in epochs: ``schedule_epochs``, else ``epochs``."""
        return self.epochs if self.schedule_epochs is None else self.schedule_epochs

    @property
    def peak_lr(self) -> float:
        """The step size after warm-up and before the decay: :func:`scaled_lr` of ``lr``."""
        return scaled_lr(self.lr, self.batch_size, self.lr_scale_with_batch)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON types (metric tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class TrainResult:
    """What one training run produced. The result cache stores it as data through :mod:`normlib.serialize`
    (registered there), and sweeps send it back from worker processes, so every field must stay a storable type
    (frames, numbers, ``None``, a :class:`TrainConfig`) and an ``__init__`` field.

    Attributes:
        history: one row per step: ``step``, ``epoch``, ``loss``, ``accuracy`` (of the batch), ``lr`` (used by
            that step), ``diverged`` (True only on the step that diverged).
        probes: the probe records, columns ``point, index, metric, value, step``; empty when none were asked.
        test_accuracy: eval-mode accuracy on the test set (NaN without one, or when diverged).
        train_accuracy: fraction of hits over the batches of the last epoch trained (NaN when diverged).
        diverged, diverged_step: whether and at which step the run diverged (``None`` if it did not).
        wall_time_s: seconds from the start of :func:`train` to its end, evaluation included.
        config: the :class:`TrainConfig` of the run.
    """

    history: pd.DataFrame
    probes: pd.DataFrame
    test_accuracy: float
    train_accuracy: float
    diverged: bool
    diverged_step: int | None
    wall_time_s: float
    config: TrainConfig


def scaled_lr(lr: float, batch_size: int, scale_with_batch: bool = True) -> float:
    """The linear scaling rule of the paper: ``lr * 256 / batch_size`` (``lr`` itself when not scaling)."""
    return lr * REFERENCE_BATCH / batch_size if scale_with_batch else lr


def lr_at(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    schedule: str,
    milestone_steps: Sequence[int] = (),
    decay: float = 0.1,
) -> float:
    """The learning rate of step ``step`` (0-based) of a ``total_steps``-step schedule.

    Linear warm-up from 0, ``base_lr * step / warmup_steps`` for ``step < warmup_steps``; then ``base_lr``; with
    ``schedule="paper"`` a tenth of it once ``step - warmup_steps >= floor(3/4 * (total_steps - warmup_steps))``
    (the paper's ``int(decay_iter * 0.75)``); with ``schedule="multistep"`` ``base_lr * decay**k``, ``k`` the
    number of ``milestone_steps`` ``<= step``. Steps past ``total_steps`` keep the last rate.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"parameter 'schedule': invalid value {schedule!r}; allowed: one of: {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    numerator, denominator = _PEAK_FRACTION
    if schedule == "paper" and step - warmup_steps >= numerator * (total_steps - warmup_steps) // denominator:
        return base_lr / 10
    if schedule == "multistep":
        return base_lr * decay ** sum(step >= m for m in milestone_steps)
    return base_lr


def _lr_schedule(config: TrainConfig, steps_per_epoch: int, n_steps: int) -> list[float]:
    """``lr_at`` for the ``n_steps`` steps that will run."""
    total = config.total_epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    milestones = [m * steps_per_epoch for m in config.lr_milestones]
    return [
        lr_at(t, total, warmup, config.peak_lr, config.schedule, milestones, config.lr_decay) for t in range(n_steps)
    ]


def _is_divergent(loss: float, first_loss: float, factor: float) -> bool:
    """Non-finite, or more than ``factor`` times the first step's loss."""
    return not math.isfinite(loss) or loss > factor * first_loss


def _open_probes(
    stack: ExitStack, model: nn.Module, config: TrainConfig, points: Sequence[tuple[str, nn.Module]] | None
) -> list[Probe]:
    """Enter one Probe per kind of point asked for: activations (``points`` or ``model.probe_points()``), convs."""
    opened = []
    if config.probe_metrics:
        where = model.probe_points() if points is None else points
        opened.append(stack.enter_context(Probe(where, config.probe_metrics, config.probe_every)))
    if config.conv_metrics:
        opened.append(stack.enter_context(Probe(model.conv_points(), config.conv_metrics, config.probe_every)))
    return opened


def _probe_frame(opened: list[Probe]) -> pd.DataFrame:
    frames = [p.frame() for p in opened]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(
            {
                c: pd.Series(dtype=t)
                for c, t in (
                    ("point", str),
                    ("index", "int64"),
                    ("metric", str),
                    ("value", "float64"),
                    ("step", "int64"),
                )
            }
        )
    frame = pd.concat(frames, ignore_index=True)
    return frame.astype({"step": "int64"}).sort_values("step", kind="stable", ignore_index=True)


#: ``optimizer_factory(model, config)``: the optimizer :func:`train` steps (default :func:`sgd`).
OptimizerFactory = Callable[[nn.Module, TrainConfig], torch.optim.Optimizer]
#: ``on_step(step, model, optimizer)``: called by :func:`train` after each optimizer step (gradients still held).
StepHook = Callable[[int, nn.Module, torch.optim.Optimizer], None]


def sgd(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The default optimizer: ``torch.optim.SGD`` on all parameters with ``config``'s momentum and weight decay."""
    return torch.optim.SGD(
        model.parameters(), lr=config.peak_lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def train(
    model: nn.Module,
    train_set: data.Dataset,
    test_set: data.Dataset | None = None,
    config: TrainConfig = TrainConfig(),
    probes: Sequence[tuple[str, nn.Module]] | None = None,
    *,
    optimizer_factory: OptimizerFactory | None = None,
    on_step: StepHook | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_set`` with SGD (see the module's doc for every formula).

    Args:
        model: any classifier ``(N, C, H, W) -> (N, classes)``; moved to ``config.device``. Probes need its
            ``probe_points()`` / ``conv_points()`` (the models of :mod:`normlib.models` have both).
        train_set, test_set: the data (moved to the device whole); the test set is evaluated once, at the end.
        config: a :class:`TrainConfig`.
        probes: ``(name, module)`` points for ``config.probe_metrics`` instead of ``model.probe_points()``.
        optimizer_factory: builds the optimizer from the model (already on the device) and the config; default
            :func:`sgd`. The schedule sets every param group's ``lr`` to the step's rate times the group's
            ``lr_scale`` (1 when absent) before each step; whatever else the optimizer does is its own.
        on_step: ``on_step(step, model, optimizer)`` after each optimizer step (``.grad`` still holds the step's
            gradient), to record weights and updates; it runs before the divergence test of that step.

    Returns:
        A :class:`TrainResult`. A divergent run ends at the divergent step with ``diverged=True``; nothing is
        raised for it. The model is left in eval mode.
    """
    clock = Stopwatch()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model.to(device).train()
    train_set = train_set.to(device)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    n_steps = config.epochs * steps_per_epoch
    n_steps = n_steps if config.max_steps is None else min(n_steps, config.max_steps)
    lrs = _lr_schedule(config, steps_per_epoch, n_steps)
    optimizer = (optimizer_factory or sgd)(model, config)
    log = _Log()
    with ExitStack() as stack:
        opened = _open_probes(stack, model, config, probes)
        bar = stack.enter_context(tqdm(total=n_steps, desc="train", disable=not config.progress))
        for step, epoch, x, y in _steps(train_set, config, steps_per_epoch, n_steps):
            for group in optimizer.param_groups:
                group["lr"] = lrs[step] * group.get("lr_scale", 1.0)
            for probe in opened:
                probe.step = step
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, model, optimizer)
            hits = (logits.detach().argmax(dim=1) == y).sum().to(loss.dtype)
            loss_value, correct = torch.stack((loss.detach(), hits)).tolist()  # the step's one synchronization
            diverged = log.add(step, epoch, loss_value, correct, len(y), lrs[step], config.divergence_factor)
            if config.progress:
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{correct / len(y):.3f}", refresh=False)
                bar.update()
            if diverged:
                break
        probe_frame = _probe_frame(opened)
    model.eval()
    nan = float("nan")
    test_accuracy = evaluate(model, test_set) if test_set is not None and not log.diverged else nan
    return TrainResult(
        history=log.frame(),
        probes=probe_frame,
        test_accuracy=test_accuracy,
        train_accuracy=nan if log.diverged else log.last_epoch_accuracy(),
        diverged=log.diverged,
        diverged_step=log.diverged_step,
        wall_time_s=clock.seconds,
        config=config,
    )


def _steps(train_set: data.Dataset, config: TrainConfig, steps_per_epoch: int, n_steps: int):
    """``(step, epoch, x, y)`` for the ``n_steps`` steps: epoch ``e`` is ``data.batches(seed, epoch=e)``."""
    for epoch in range(math.ceil(n_steps / steps_per_epoch)):
        batches = data.batches(train_set, config.batch_size, seed=config.seed, epoch=epoch, augment=config.augment)
        for i, (x, y) in enumerate(batches):
            step = epoch * steps_per_epoch + i
            if step == n_steps:
                return
            yield step, epoch, x, y


class _Log:
    """The per-step records, the first loss and the divergence state of one run."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, float, float, int, float]] = []
        self.first_loss = math.nan
        self.diverged_step: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None

    def add(self, step: int, epoch: int, loss: float, correct: float, n: int, lr: float, factor: float) -> bool:
        """Record one step; return whether it diverged."""
        if not self.rows:
            self.first_loss = loss
        self.rows.append((step, epoch, loss, correct, n, lr))
        if _is_divergent(loss, self.first_loss, factor):
            self.diverged_step = step
        return self.diverged

    def frame(self) -> pd.DataFrame:
        step, epoch, loss, correct, n, lr = (list(c) for c in zip(*self.rows))
        return pd.DataFrame(
            {
                "step": pd.Series(step, dtype="int64"),
                "epoch": pd.Series(epoch, dtype="int64"),
                "loss": pd.Series(loss, dtype="float64"),
                "accuracy": pd.Series([c / k for c, k in zip(correct, n)], dtype="float64"),
                "lr": pd.Series(lr, dtype="float64"),
                "diverged": pd.Series([s == self.diverged_step for s in step], dtype=bool),
            }
        )

    def last_epoch_accuracy(self) -> float:
        last = self.rows[-1][1]
        rows = [r for r in self.rows if r[1] == last]
        return sum(r[3] for r in rows) / sum(r[4] for r in rows)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: data.Dataset, batch_size: int = _EVAL_BATCH) -> float:
    """Accuracy of ``model`` on ``dataset`` in eval mode, without gradients, in batches (one sync at the end)."""
    model.eval()
    device = next(model.parameters()).device
    dataset = dataset.to(device)
    hits = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in data.batches(dataset, batch_size, shuffle=False):
        hits += (model(x).argmax(dim=1) == y).sum()
    return hits.item() / len(dataset)


def load_splits(dataset: str | Mapping[str, Any], seed: int) -> tuple[data.Dataset, data.Dataset]:
    """The ``(train, test)`` splits described by :func:`train_model`'s ``dataset`` argument.

    Args:
        dataset: a name of :data:`normlib.data.DATASETS`, or a dict ``{"name": ..., **options}`` of
            :func:`normlib.data.load_dataset` options (JSON: a ``shape`` list is read as a tuple). Every option applies
            to both splits, except ``subset`` (the training split only; the test split is whole unless
            ``test_subset`` is given) and a ``test_``-prefixed option (``test_subset``, ``test_size``), which applies
            to the test split only, without its prefix. :func:`normlib.presets.dataset_options` gives this form for
            a resolved configuration.
        seed: the ``seed`` option (which draws the subsets, and synthetic data) when ``dataset`` has none.

    Raises:
        ParameterError: when ``dataset`` names no dataset.
    """
    spec = {"name": dataset} if isinstance(dataset, str) else dict(dataset)
    if "name" not in spec:
        raise ParameterError(
            f"parameter 'dataset': invalid value {dataset!r}; allowed: a dataset name "
            f"({', '.join(data.DATASETS)}) or a dict with a 'name' and load_dataset options"
        )
    spec.setdefault("seed", seed)
    common = {k: v for k, v in spec.items() if not k.startswith("test_")}
    test = {**common, "subset": None, **{k.removeprefix("test_"): v for k, v in spec.items() if k.startswith("test_")}}
    return (
        data.load_dataset(split="train", **_tuple_shape(common)),
        data.load_dataset(split="test", **_tuple_shape(test)),
    )


def _tuple_shape(options: dict[str, Any]) -> dict[str, Any]:
    """A JSON ``shape`` list as the tuple :func:`normlib.data.load_dataset` wants."""
    shape = options.get("shape")
    return {**options, "shape": tuple(shape)} if isinstance(shape, list) else options


def model_kwargs_for(model_kwargs: Mapping[str, Any], dataset: data.Dataset) -> dict[str, Any]:
    """The keyword arguments of :func:`normlib.models.build_model` for a model of ``dataset``'s images.

    ``model_kwargs`` (plain JSON, as a sweep or the cache holds them) with ``in_channels`` and ``num_classes``
    defaulting to the dataset's, and JSON lists made the tuples that the model builders read: ``cfg`` entries
    ``[w, 2]`` (width, stride) become ``(w, 2)`` (:func:`normlib.models.make_cnn`), and ``widths`` a tuple
    (:func:`normlib.models.make_resnet`). ``model_kwargs`` itself is not changed.
    """
    kwargs = {"in_channels": dataset.channels, "num_classes": dataset.num_classes, **model_kwargs}
    if isinstance(kwargs.get("cfg"), (list, tuple)):
        kwargs["cfg"] = [tuple(e) if isinstance(e, list) else e for e in kwargs["cfg"]]
    if isinstance(kwargs.get("widths"), list):
        kwargs["widths"] = tuple(kwargs["widths"])
    return kwargs


def train_model(
    arch: str,
    model_kwargs: Mapping[str, Any],
    dataset: str | Mapping[str, Any],
    config: TrainConfig | Mapping[str, Any],
) -> TrainResult:
    """Load the data (:func:`load_splits`), seed, build ``models.build_model(arch, **model_kwargs)`` (with
    :func:`model_kwargs_for`) and :func:`train`.

    Every argument can be plain JSON, so this is the function sweeps and the cache call.

    Args:
        arch: ``"cnn"`` or ``"resnet"``.
        model_kwargs: options of :func:`normlib.models.make_cnn` / ``make_resnet``; ``in_channels`` and
            ``num_classes`` default to the dataset's.
        dataset: a name of :data:`normlib.data.DATASETS`, or a dict ``{"name": ..., **options}`` (see
            :func:`load_splits`); its ``seed`` (which draws the subsets, and synthetic data) defaults to
            ``config``'s.
        config: a :class:`TrainConfig` or its :meth:`~TrainConfig.to_dict` form.
    """
    config = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    train_set, test_set = load_splits(dataset, config.seed)
    torch.manual_seed(config.seed)
    model = models.build_model(arch, **model_kwargs_for(model_kwargs, train_set))
    return train(model, train_set, test_set, config)
