r"""Principle B: informative forward propagation, how similar two samples' activations become with depth.

All derived in this book (a mean-field model), except where a function says otherwise. The main paper states that
GroupNorm keeps the activations of different samples dissimilar and that larger groups make them more alike (v4
abstract), with a rank bound :math:`\Omega(\sqrt{\text{width}/\text{group size}})` in its first version; the formal
statement was not available, so what is plotted is derived here.

The model (derived)
-------------------
Follow a constant-width CNN (3x3 convolution, normalizer, ReLU) at initialization, with infinitely many channels.
Three *uncentred* correlations describe the activations of a layer, each a normalized inner product of channel
vectors, :math:`\langle u_i(p), u_j(q)\rangle / \mathbb E\lVert u\rVert^2`:

* :math:`c_s`: one sample, two different positions;
* :math:`c_0`: two different samples, the same position;
* :math:`c_1`: two different samples, two different positions.

A convolution with random zero-mean weights passes these on to its (Gaussian, zero-mean) outputs. A normalizer
subtracts a mean over a set of entries; averaged over :math:`G` channels of independent weights and :math:`P`
positions, that mean carries a fraction of the variance and of the covariances:

.. math::
    \tilde c_s = \tfrac1P + (1-\tfrac1P)\,c_s,\qquad \tilde c_d = \tfrac{c_0}{P} + (1-\tfrac1P)\,c_1,

so GroupNorm with :math:`G` channels per group (statistics over :math:`G` channels and :math:`P` positions of one
sample) leaves the correlations

.. math::
    \rho_s = \frac{c_s - \tilde c_s/G}{1-\tilde c_s/G},\qquad
    \rho_0 = \frac{c_0 - \tilde c_d/G}{1-\tilde c_s/G},\qquad
    \rho_1 = \frac{c_1 - \tilde c_d/G}{1-\tilde c_s/G}.

InstanceNorm is :math:`G=1`: it removes each sample's own mean, which is where most of the similarity between
samples lives. LayerNorm is :math:`G=C\to\infty` here, which removes nothing: like no normalizer at all.
BatchNorm subtracts a mean over samples *and* positions, :math:`\bar c = \tilde c_s/N + (1-1/N)\tilde c_d`, from
every correlation. After the ReLU, zero-mean Gaussians with correlation :math:`\rho` have the uncentred correlation
of the arc-cosine kernel of degree one (Cho & Saul 2009),

.. math:: k(\rho) = \frac{\sqrt{1-\rho^2} + (\pi - \arccos\rho)\,\rho}{\pi},\qquad k(0)=\tfrac1\pi,\ k(1)=1,

and the next layer starts from :math:`(c_s, c_0, c_1) = (k(\rho_s), k(\rho_0), k(\rho_1))`. The paper's probe, the
mean cosine between two samples' flattened activations, compares them position by position, so the prediction is
:math:`k(\rho_0)`. Without a normalizer :math:`k` is iterated on its own and drives every correlation to 1 (rank
collapse); each normalizer pulls the iteration back by how much shared mean it removes, which orders the fixed
points by group size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Correlations",
    "relu_correlation",
    "input_correlations",
    "normalize_correlations",
    "cosine_mean_field",
    "stable_rank_bound",
]


@dataclass(frozen=True)
class Correlations:
    """Uncentred correlations of a layer: same sample at two positions (``same_sample``), two samples at the same
    position (``same_position``), two samples at two positions (``different``)."""

    same_sample: float
    same_position: float
    different: float


def relu_correlation(rho: np.ndarray | float) -> np.ndarray | float:
    r"""Uncentred correlation :math:`\mathbb E[\mathrm{ReLU}(a)\mathrm{ReLU}(b)]/\mathbb E[\mathrm{ReLU}(a)^2]` of two
    zero-mean, equal-variance Gaussians with correlation :math:`\rho` (the degree-one arc-cosine kernel of Cho &
    Saul 2009, normalized; not derived here)."""
    rho = np.clip(rho, -1.0, 1.0)
    return (np.sqrt(1.0 - rho**2) + (np.pi - np.arccos(rho)) * rho) / np.pi


def input_correlations(images: torch.Tensor, kernel_size: int = 3) -> Correlations:
    """The three uncentred correlations of the first convolution's input *patches* (``kernel_size`` x
    ``kernel_size`` x channels, zero-padded), measured on a batch of images ``(N, C, H, W)``: the model's initial
    condition, a property of the data and not of the network."""
    n = images.shape[0]
    if n < 2:
        raise ValueError("input_correlations needs at least 2 images")
    patches = F.unfold(images.double(), kernel_size, padding=kernel_size // 2)  # (N, D, P)
    positions = patches.shape[2]
    power = patches.square().sum(dim=1).mean()  # E||u||^2 over samples and positions
    by_sample = patches.sum(dim=2)  # (N, D): sum over positions
    gram_positions = torch.einsum("idp,jdp->ij", patches, patches)  # same-position inner products, summed over p
    gram_all = by_sample @ by_sample.T  # all position pairs
    diagonal = torch.diagonal(gram_positions)
    off = ~torch.eye(n, dtype=torch.bool)
    same_sample = ((torch.diagonal(gram_all) - diagonal) / (positions * (positions - 1))).mean() / power
    same_position = (gram_positions[off] / positions).mean() / power
    different = ((gram_all - gram_positions)[off] / (positions * (positions - 1))).mean() / power
    return Correlations(float(same_sample), float(same_position), float(different))


def normalize_correlations(
    c: Correlations, norm: str, *, group_size: int = 1, positions: int = 1, batch: int = 2
) -> Correlations:
    """The pre-activation correlations after a normalizer's mean subtraction and scaling (see the module
    docstring): ``norm`` is ``"gn"`` (with ``group_size`` channels per group; 1 is InstanceNorm, ``inf`` is
    LayerNorm at infinite width), ``"bn"`` (over ``batch`` samples) or ``"none"``."""
    shared_self = 1.0 / positions + (1.0 - 1.0 / positions) * c.same_sample
    shared_other = c.same_position / positions + (1.0 - 1.0 / positions) * c.different
    if norm == "none":
        return c
    if norm == "gn":
        removed_self, removed_other = shared_self / group_size, shared_other / group_size
    elif norm == "bn":
        removed_self = removed_other = shared_self / batch + (1.0 - 1.0 / batch) * shared_other
    else:
        raise ValueError(f"norm must be one of ['gn', 'bn', 'none'], got {norm!r}")
    scale = 1.0 - removed_self
    return Correlations(
        (c.same_sample - removed_self) / scale,
        (c.same_position - removed_other) / scale,
        (c.different - removed_other) / scale,
    )


def cosine_mean_field(
    depth: int, start: Correlations, norm: str, *, group_size: float = 1, positions: int = 1, batch: int = 2
) -> np.ndarray:
    """Predicted mean cosine similarity between two samples' activations after each of ``depth`` conv, normalizer,
    ReLU layers (derived; entry ``l`` is after layer ``l + 1``), from the input patches' correlations ``start``."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    c, cosines = start, []
    for _ in range(depth):
        rho = normalize_correlations(c, norm, group_size=group_size, positions=positions, batch=batch)
        c = Correlations(*(float(relu_correlation(r)) for r in (rho.same_sample, rho.same_position, rho.different)))
        cosines.append(c.same_position)
    return np.array(cosines)


def stable_rank_bound(cosine: np.ndarray | float, batch: int) -> np.ndarray | float:
    r"""Upper bound on the stable rank of the :math:`N\times N` cosine matrix :math:`M` whose mean off-diagonal entry
    is ``cosine`` (derived, exact): :math:`\lambda_{\max}(M)\ge\mathbf 1^\top M\mathbf 1/N = 1+(N-1)\bar c`, so
    :math:`\operatorname{tr}M/\lambda_{\max}\le N/(1+(N-1)\bar c)`, with equality when every pair is equally
    similar."""
    return batch / (1.0 + (batch - 1.0) * np.asarray(cosine))
