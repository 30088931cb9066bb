"""Probes: hooks that record the paper's per-layer statistics during forward and backward, and the per-channel
state of scale-invariant weights during training (:class:`ChannelRecorder`).

For an observed activation ``X`` of shape ``(N, C, *spatial)`` (N samples, C channels)::

    - ``variance``      mean_c Var_{n,h,w}(X)    (unbiased; the paper's ``Activs_prober``)
    - ``std``           mean_c Std_{n,h,w}(X)    (unbiased; ``Conv_prober``'s ``std_list``)
    - ``second_moment`` mean(X**2) over all entries (the residual stream's power, Lubana et al. 2021)
    - ``cosine``        with x̂_i = vec(X_i)/||vec(X_i)|| and M = X̂X̂ᵀ (N x N),
                        (1/N) Σ_i (Σ_j M_ij - 1)/(N - 1): the mean off-diagonal uncentered cosine
    - ``stable_rank``   tr(M)/λ_max(M) = N/λ_max(M)
    - ``grad_norm``     ||∂L/∂X||_F over the whole batch (``Conv_prober``'s ``grads_norms``)

Each statistic is a few vectorized one-pass reductions of the detached tensor (shared between
metrics, see ``_Observed``), computed in the hook and kept as a 0-d tensor; values become
Python floats in batches (so a GPU run does not synchronize at every hook) and the
activations themselves are never stored.

Usage::

    with Probe(model.probe_points(), metrics=("variance", "grad_norm"), every=10) as probe:
        for step, (x, y) in enumerate(loader):
            probe.step = step              # optional: adds a ``step`` column
            loss = F.cross_entropy(model(x), y)
            loss.backward()                # grad_norm rows are recorded here
            ...
    df = probe.frame()                     # columns point, index, metric, value[, step]

:class:`ChannelRecorder` is an ``on_step`` hook of :func:`normlib.train.train` instead: it reads each output channel's
weights, gradient and optimizer state after every k-th step (norms, angular step, step scale; see its doc).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property, partial

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from normlib.optim import SGDWDMimic, channel_norms

__all__ = [
    "METRICS",
    "Probe",
    "probe_model",
    "activation_variance",
    "activation_std",
    "second_moment",
    "mean_cosine_similarity",
    "stable_rank",
    "ChannelRecorder",
]

METRICS = ("variance", "std", "second_moment", "cosine", "stable_rank", "grad_norm")

COLUMNS = ["point", "index", "metric", "value", "step"]

# Pending 0-d value tensors are converted to floats (one device sync each) in batches of this.
_FLUSH_EVERY = 4096


class _Observed:
    """One observed tensor (N, C, *spatial) and the reductions its metrics share, each
    computed at most once, with native contiguous reductions finished in float64:

    - per (sample n, channel c), over its k = H*W positions, the sum s1 and the sum of
      squares s2 of x - K_nc, shifted by the group's first entry K_nc so that a large mean
      does not cancel digits. Then m_nc = K_nc + s1/k, the within-group sum of squared
      deviations is s2 - s1²/k, and the unbiased per-channel variance over (N, H, W) is
      Var_c = Σ_n [ (s2 - s1²/k) + k (m_nc - m_c)² ] / (N k - 1),  m_c = mean_n m_nc;
    - per sample the flattened row x_i and w_i = 1/||x_i|| (0 for an all-zero sample), so that
      x̂_i = w_i x_i without materializing X̂, and M_ij = w_i w_j <x_i, x_j>.
    """

    def __init__(self, x: torch.Tensor):
        self.x = x.detach()

    @cached_property
    def _channel_variance(self) -> torch.Tensor:
        r = self.x.reshape(self.x.shape[0], self.x.shape[1], -1)
        n, k = r.shape[0], r.shape[2]
        shift = r[:, :, :1]
        shifted = r - shift
        s1 = shifted.sum(dim=2).double()
        s2 = torch.linalg.vector_norm(shifted, dim=2).double().square()
        means = shift[:, :, 0].double() + s1 / k
        within = (s2 - s1.square() / k).clamp_min(0)
        between = k * (means - means.mean(dim=0)).square()
        return (within + between).sum(dim=0) / (n * k - 1)

    @cached_property
    def _rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        flat = self.x.reshape(self.x.shape[0], -1)
        norms = torch.linalg.vector_norm(flat, dim=1)
        return flat, torch.where(norms > 0, norms.reciprocal(), 0.0)

    def variance(self) -> torch.Tensor:
        """mean_c Var_{n,h,w}(X), unbiased."""
        return self._channel_variance.mean()

    def std(self) -> torch.Tensor:
        """mean_c Std_{n,h,w}(X), unbiased."""
        return self._channel_variance.sqrt().mean()

    def second_moment(self) -> torch.Tensor:
        """mean(X**2) = ||X||_F² / numel."""
        return torch.linalg.vector_norm(self.x).double().square() / self.x.numel()

    def cosine(self) -> torch.Tensor:
        """The paper's (1/N) Σ_i (Σ_j M_ij - 1)/(N-1) in O(N D), without forming M:
        Σ_ij M_ij = ||Σ_i x̂_i||² = ||wᵀX||², and Σ_i M_ii = tr M = N (all-zero samples
        count 0 there), so the value is (||wᵀX||² - tr M) / (N (N-1))."""
        flat, w = self._rows
        n = flat.shape[0]
        total = torch.linalg.vector_norm((w @ flat).double()).square()
        return (total - (w > 0).sum()) / (n * (n - 1))

    def stable_rank(self) -> torch.Tensor:
        """tr(M)/λ_max(M). λ_max comes from power iteration on M = diag(w) X Xᵀ diag(w) applied as
        u -> w ⊙ (X (Xᵀ (w ⊙ u))), 4 N D flops a step instead of the 2 N² D of forming M; it starts
        from w ⊙ 1 (M has non-negative entries after a ReLU, so its top eigenvector is close to
        uniform) and stops when the Rayleigh quotient changes by less than 1e-7 of itself. For small
        N or D, or when N/8 steps have not converged (no gap below λ_max), M is formed and
        eigen-decomposed exactly in float64."""
        flat, w = self._rows
        n, d = flat.shape
        trace = (w > 0).sum().double()
        budget = n // 8  # a quarter of the Gram matrix's cost: little is lost when it does not converge
        if n > 16 and d > n and budget > 4:
            top = _power_iteration(flat, w.to(flat.dtype), budget, POWER_RTOL)
            if top is not None:
                return trace / top
        w = w.double()
        gram = (flat @ flat.T).double() * torch.outer(w, w)
        return trace / torch.linalg.eigvalsh(gram)[-1]


#: Relative change of the Rayleigh quotient at which the power iteration for stable rank stops.
POWER_RTOL = 1e-7


def _power_iteration(flat: torch.Tensor, w: torch.Tensor, max_steps: int, rtol: float) -> torch.Tensor | None:
    """Largest eigenvalue of diag(w) X Xᵀ diag(w) (float64 scalar), or ``None`` if it has not converged."""
    u = w / torch.linalg.vector_norm(w).clamp_min(1e-30)
    previous = None
    for _ in range(max_steps):
        v = w * (flat @ (flat.T @ (w * u)))
        rayleigh = torch.dot(u.double(), v.double())
        if previous is not None and abs(rayleigh - previous) <= rtol * abs(rayleigh):
            return rayleigh
        previous = rayleigh
        norm = torch.linalg.vector_norm(v)
        if norm == 0:
            return None
        u = v / norm
    return None


def activation_variance(x: torch.Tensor) -> float:
    """mean over channels (dim 1) of the unbiased variance over all other dims."""
    return float(_Observed(x).variance())


def activation_std(x: torch.Tensor) -> float:
    """mean over channels (dim 1) of the unbiased standard deviation over all other dims."""
    return float(_Observed(x).std())


def second_moment(x: torch.Tensor) -> float:
    """mean(x**2) over all entries."""
    return float(_Observed(x).second_moment())


def mean_cosine_similarity(x: torch.Tensor) -> float:
    """Mean uncentered cosine between distinct samples (rows of x flattened): 1 for identical
    samples, 0 for mutually orthogonal ones. Needs N >= 2."""
    return float(_Observed(x).cosine())


def stable_rank(x: torch.Tensor) -> float:
    """N/λ_max(X̂X̂ᵀ) for the unit-normalized flattened samples: 1 when all samples are
    parallel, N when they are mutually orthogonal."""
    return float(_Observed(x).stable_rank())


def _check_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; valid: {', '.join(METRICS)}")
    return metrics


class Probe:
    """Context manager that hooks ``points`` (``(name, module)`` pairs in forward order) and
    records ``metrics`` of each module's output on every ``every``-th forward (the 1st,
    (every+1)-th, ...). ``grad_norm`` is recorded when the loss is backpropagated through
    a sampled forward, also after the ``with`` block has closed.

    Set ``probe.step`` to tag the following records with a training step.
    """

    def __init__(
        self, points: Sequence[tuple[str, nn.Module]], metrics: str | Iterable[str] = ("variance",), every: int = 1
    ):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.points = list(points)
        self.metrics = _check_metrics(metrics)
        self.every = every
        self.step = None
        self._forward_metrics = [m for m in self.metrics if m != "grad_norm"]
        self._grad_norm = "grad_norm" in self.metrics
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.reset()

    def __enter__(self) -> Probe:
        if self._handles:
            raise RuntimeError("this Probe is already active")
        self._handles = [
            module.register_forward_hook(partial(self._on_forward, index))
            for index, (_, module) in enumerate(self.points)
        ]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def reset(self) -> None:
        """Drop all records and restart the ``every`` count."""
        self._calls = [0] * len(self.points)
        self._pending: list[tuple] = []
        self._records: list[tuple] = []

    def frame(self) -> pd.DataFrame:
        """All records so far: columns point, index, metric, value, and step when set."""
        self._flush()
        df = pd.DataFrame(self._records, columns=COLUMNS)
        df = df.astype({"point": str, "index": "int64", "metric": str, "value": "float64"})
        return df.drop(columns="step") if df["step"].isna().all() else df

    def _on_forward(self, index: int, module: nn.Module, inputs, output) -> None:
        calls = self._calls[index]
        self._calls[index] += 1
        if calls % self.every:
            return
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"probe point {self.points[index][0]!r} returned {type(output).__name__}, expected a Tensor"
            )
        observed = _Observed(output)
        for metric in self._forward_metrics:
            self._record(index, metric, getattr(observed, metric)(), self.step)
        if self._grad_norm and output.requires_grad:
            output.register_hook(partial(self._on_grad, index, self.step))

    def _on_grad(self, index: int, step, grad: torch.Tensor) -> None:
        self._record(index, "grad_norm", torch.linalg.vector_norm(grad.detach()), step)

    def _record(self, index: int, metric: str, value: torch.Tensor, step) -> None:
        self._pending.append((self.points[index][0], index, metric, value, step))
        if len(self._pending) >= _FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        self._records += [(p, i, m, float(v), s) for p, i, m, v, s in self._pending]
        self._pending.clear()


def probe_model(
    model: nn.Module,
    x: torch.Tensor,
    metrics: str | Iterable[str] = ("variance",),
    points: Sequence[tuple[str, nn.Module]] | None = None,
    loss_fn: Callable | None = None,
    target=None,
    step=None,
) -> pd.DataFrame:
    """Probe one forward pass of ``model`` on ``x`` (in the model's current train/eval mode)
    at ``points`` (default ``model.probe_points()``) and return :meth:`Probe.frame`.

    If ``grad_norm`` is asked, ``loss = loss_fn(model(x), target)`` (default cross-entropy,
    which then needs ``target``) is differentiated with ``torch.autograd.grad`` with respect
    to the parameters (and ``x`` if it requires grad), so no ``.grad`` is touched.
    """
    points = model.probe_points() if points is None else points
    with Probe(points, metrics) as probe:
        probe.step = step
        if "grad_norm" not in probe.metrics:
            with torch.no_grad():
                model(x)
            return probe.frame()
        if loss_fn is None and target is None:
            raise ValueError("grad_norm with the default cross-entropy loss needs a target")
        loss = (loss_fn or F.cross_entropy)(model(x), target)
        inputs = [p for p in model.parameters() if p.requires_grad]
        inputs += [x] if x.requires_grad else []
        if not inputs:
            raise ValueError("grad_norm needs parameters (or an input) that require grad")
        torch.autograd.grad(loss, inputs, allow_unused=True)
    return probe.frame()


class ChannelRecorder:
    r"""Per-output-channel state of scale-invariant weights during training: an ``on_step`` hook of
    :func:`normlib.train.train`, called as ``recorder(step, model, optimizer)`` after each optimizer step.

    ``units`` are ``(name, conv, norm)`` triples: a conv whose output the BatchNorm ``norm`` normalizes, so that each
    output channel :math:`c` of its weight (row :math:`c` of ``conv.weight.view(C, -1)``) is scale-invariant. With
    :math:`w_t` a channel's weights before step :math:`t`, :math:`w_{t+1}` after it, :math:`g_t=\partial L/\partial w`
    the step's gradient and :math:`\hat w=w/\lVert w\rVert`, every ``record_every``-th step (``t = 0, k, 2k, ...``)
    records, per channel and in float64 from the float32 tensors:

    * ``norm_sq_before`` :math:`\lVert w_t\rVert^2`, ``norm_sq_after`` :math:`\lVert w_{t+1}\rVert^2`,
      ``grad_sq`` :math:`\lVert g_t\rVert^2` and ``w_dot_g`` :math:`\langle w_t,g_t\rangle`;
    * ``chord`` :math:`\lVert\hat w_{t+1}-\hat w_t\rVert=2\sin(\Delta\theta_t/2)`, with :math:`\Delta\theta_t`
      the angle by which the step turns the channel;
    * ``lr`` :math:`\eta_t`, the rate of the weight's param group in this step;
    * ``step_scale`` :math:`s_c=\lVert w_t\rVert^2/r_c^2`, the per-channel factor of the step of a corrected weight
      of :class:`normlib.optim.SGDWDMimic` (:math:`r_c` its :meth:`~normlib.optim.SGDWDMimic.reference_norms` of
      this step), and 1 for any other weight or optimizer;
    * ``buffer_sq`` :math:`\lVert b_t\rVert^2`, the momentum buffer after the step (the one the step used; NaN
      without momentum);
    * with ``bn_terms``, the two ingredients of BatchNorm's :math:`\epsilon` term: ``bn_variance``
      :math:`\sigma_c^2`, the biased batch variance of the conv output's channel in the step's forward, and
      ``gain_grad`` :math:`\gamma_c\,\partial L/\partial\gamma_c` (:math:`\gamma_c` the gain before the step;
      the gains and weights are then copied after every step, not only before the recorded ones).

    ``reference`` also keeps the channel norms :math:`\lVert w\rVert` that a correction run needs, one list of
    ``(C,)`` tensors (one per unit) in :attr:`reference_norms`: with ``"step"`` before every step
    (``reference_norms[t]`` before step :math:`t`, and one more after the last step), with ``"epoch"`` at the end of
    every epoch of ``steps_per_epoch`` steps (``reference_norms[e]`` after epoch :math:`e`, from 0).

    Call :meth:`start` once the model is on its device and before the first step (e.g. from the optimizer factory),
    :meth:`close` after training (it removes the forward hooks of ``bn_terms``), and :meth:`frame` for the records.
    """

    def __init__(
        self,
        units: Sequence[tuple[str, nn.Module, nn.Module]],
        record_every: int = 1,
        reference: str | None = None,
        steps_per_epoch: int = 1,
        bn_terms: bool = False,
    ):
        if reference not in (None, "step", "epoch"):
            raise ValueError(f"reference must be None, 'step' or 'epoch', got {reference!r}")
        self.units = list(units)
        self.names = [name for name, _, _ in self.units]
        self.weights = [conv.weight for _, conv, _ in self.units]
        self.record_every, self.reference, self.steps_per_epoch = record_every, reference, steps_per_epoch
        self.bn_terms = bn_terms
        self.rows: dict[str, list[np.ndarray]] = {}
        self.steps: list[int] = []
        self.reference_norms: list[list[torch.Tensor]] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._variance: dict[int, torch.Tensor] = {}

    def start(self) -> None:
        """Keep the weights before the first step (and their norms with ``reference="step"``); with ``bn_terms``,
        hook every conv to keep its output's batch variance."""
        self.prev = [w.detach().clone() for w in self.weights]
        self.prev_gain = [norm.weight.detach().clone() for _, _, norm in self.units]
        if self.reference == "step":
            self.reference_norms.append([channel_norms(w) for w in self.weights])
        if self.bn_terms:
            for i, (_, conv, _) in enumerate(self.units):
                self._hooks.append(conv.register_forward_hook(self._variance_hook(i)))

    def _variance_hook(self, index: int) -> Callable:
        def hook(module, inputs, output):
            if module.training:
                self._variance[index] = output.detach().double().var(dim=(0, 2, 3), unbiased=False)

        return hook

    def close(self) -> None:
        """Remove the forward hooks."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    @staticmethod
    def _lr_of(optimizer: torch.optim.Optimizer, weight: torch.Tensor) -> float:
        for group in optimizer.param_groups:
            if any(p is weight for p in group["params"]):
                return float(group["lr"])
        raise KeyError("weight not in the optimizer")

    def __call__(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if step % self.record_every == 0:
            self.steps.append(step)
            for i, (w, (_, _, norm)) in enumerate(zip(self.weights, self.units)):
                self._record(i, w, norm, optimizer)
        if self.reference == "step":
            self.reference_norms.append([channel_norms(w) for w in self.weights])
        if self.reference == "epoch" and (step + 1) % self.steps_per_epoch == 0:
            self.reference_norms.append([channel_norms(w) for w in self.weights])
        if (step + 1) % self.record_every == 0 or self.bn_terms:
            self.prev = [w.detach().clone() for w in self.weights]
            self.prev_gain = [norm.weight.detach().clone() for _, _, norm in self.units]

    def _record(self, i: int, w: torch.Tensor, norm: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        channels = w.shape[0]
        before = self.prev[i].reshape(channels, -1).double()
        after = w.detach().reshape(channels, -1).double()
        grad = w.grad.detach().reshape(channels, -1).double()
        n_before, n_after = before.pow(2).sum(1), after.pow(2).sum(1)
        chord = (after / n_after.sqrt()[:, None] - before / n_before.sqrt()[:, None]).norm(dim=1)
        values = {
            "norm_sq_before": n_before,
            "norm_sq_after": n_after,
            "grad_sq": grad.pow(2).sum(1),
            "w_dot_g": (before * grad).sum(1),
            "chord": chord,
        }
        lr = self._lr_of(optimizer, w)
        scale = torch.ones(channels, dtype=torch.float64, device=w.device)
        if isinstance(optimizer, SGDWDMimic) and any(p is w for p in optimizer.corrected_params()):
            scale = n_before / optimizer.reference_norms(w).double() ** 2
        values["lr"] = torch.full((channels,), lr, dtype=torch.float64, device=w.device)
        values["step_scale"] = scale
        buffer = optimizer.state.get(w, {}).get("momentum_buffer") if hasattr(optimizer, "state") else None
        values["buffer_sq"] = (
            buffer.detach().reshape(channels, -1).double().pow(2).sum(1)
            if buffer is not None
            else torch.full((channels,), math.nan, dtype=torch.float64, device=w.device)
        )
        if self.bn_terms:
            gain = self.prev_gain[i].double()
            values["bn_variance"] = self._variance[i]
            values["gain_grad"] = gain * norm.weight.grad.detach().double()
        stacked = torch.stack(list(values.values())).cpu().numpy()
        self.rows.setdefault(self.names[i], []).append(stacked)
        self._columns = list(values)

    def frame(self) -> pd.DataFrame:
        """The records, one row per (step, layer, channel): columns ``step, layer, channel`` and the quantities
        above (empty without records)."""
        frames = []
        for name in self.names:
            blocks = self.rows.get(name, [])
            if not blocks:
                continue
            stacked = np.stack(blocks)  # (records, quantities, channels)
            records, _, channels = stacked.shape
            frame = pd.DataFrame({col: stacked[:, j, :].ravel() for j, col in enumerate(self._columns)})
            frame.insert(0, "channel", np.tile(np.arange(channels), records))
            frame.insert(0, "layer", name)
            frame.insert(0, "step", np.repeat(np.asarray(self.steps[:records]), channels))
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
