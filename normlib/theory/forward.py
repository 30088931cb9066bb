r"""Principle A: stable forward propagation in residual networks (all derived in this book).

Notation: :math:`x_l` is the residual stream after block :math:`l` (block 0 is the stem), :math:`m_l = \mathbb E[x_l^2]`
its second moment (mean of :math:`x^2` over every entry), and each block adds a branch :math:`b_l` scaled by
:math:`\alpha` (1 for a plain block, 0 for SkipInit at initialization).

*The cross term vanishes* (derived). At initialization the last convolution of a branch has zero-mean weights drawn
independently of :math:`x_l`, so :math:`\mathbb E[x_l\,b_l]=0` and

.. math:: \mathbb E[(x_l+\alpha b_l)^2] = m_l + \alpha^2\,\mathbb E[b_l^2].

*Activation-based normalizers* (derived) fix the scale of what they output, whatever the scale of their input, so
:math:`\mathbb E[b_l^2]=p` does not depend on :math:`l`: the stream grows by a constant :math:`\alpha^2 p` per block,
i.e. **linearly**. :math:`p=1` for the normalizers that centre and scale (BN, LN, IN, GN) and for FRN, whose output
has unit second moment by construction.

* Pre-activation block (no activation after the sum): :math:`m_{l+1} = m_l + \alpha^2 p` exactly
  (:func:`linear_growth`).
* Post-activation block (the paper's ResNet, a ReLU after the sum): :math:`x_{l+1}=\max(0, x_l+\alpha b_l)`. Treating
  each entry's successive branch outputs as independent :math:`\mathcal N(0,\alpha^2 p)` steps, the stream is a
  Gaussian random walk reflected at zero (the Lindley recursion of queueing theory), whose second moment still
  grows linearly, :math:`m_l\to\alpha^2 p\,l`, and whose per-channel variance grows like
  :math:`(1-2/\pi)\,\alpha^2 p\,l\approx0.36\,l` (the variance of a half-normal). :func:`lindley_growth` computes the
  recursion exactly on a grid.

*Parametric normalizers and no normalizer* (derived). Weight normalization (WN), scaled weight standardization
(SWS) and He-initialized plain convolutions are built to *preserve* the scale of their input, so the branch of a
pre-activation block returns :math:`\mathbb E[b_l^2]\approx m_l` and

.. math:: m_{l+1} \approx 2\,m_l \quad\Rightarrow\quad m_L \approx 2^L m_0,

**exponential** growth, about :math:`10^8` after the 27 blocks of ResNet-56 (:func:`geometric_growth`). For
He-initialized convolutions this is exact (:math:`2\,\mathbb E[\mathrm{ReLU}(y)^2]=\mathbb E[y^2]` for symmetric
:math:`y`); for WN and SWS, and after a ReLU that follows the sum, the factor is "about 2", not exactly 2.

*Remedies* (derived). SkipInit sets :math:`\alpha=0` at initialization, so a block is the identity on the stream
(:func:`flat`); NF-ResNets feed the branch :math:`x_l/\beta_l` with :math:`\beta_l^2` the *expected* variance, so the
branch again adds a constant :math:`\alpha^2` and growth is linear (:func:`nf_expected_variance`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

__all__ = [
    "RELU_SECOND_MOMENT",
    "RELU_VARIANCE",
    "HALF_NORMAL_VARIANCE_FRACTION",
    "linear_growth",
    "lindley_growth",
    "geometric_growth",
    "flat",
    "nf_expected_variance",
    "growth_factor",
    "stages",
    "increment_acceleration",
    "downsampling_jump",
    "StreamUnit",
    "STREAM_UNITS",
    "padding_fraction",
    "padding_leak",
    "mean_field_stream",
]

#: :math:`\mathbb E[\mathrm{ReLU}(z)^2]` for :math:`z\sim\mathcal N(0,1)` (derived: half the mass, second moment 1).
RELU_SECOND_MOMENT = 0.5
#: :math:`\mathrm{Var}[\mathrm{ReLU}(z)] = \tfrac12 - \tfrac1{2\pi} = \tfrac{\pi-1}{2\pi}` (derived).
RELU_VARIANCE = (np.pi - 1.0) / (2.0 * np.pi)
#: :math:`\mathrm{Var}|Z|/\mathbb E[Z^2] = 1-2/\pi` for a centred Gaussian :math:`Z` (derived).
HALF_NORMAL_VARIANCE_FRACTION = 1.0 - 2.0 / np.pi


def _check_blocks(num_blocks: int) -> None:
    if not isinstance(num_blocks, (int, np.integer)) or num_blocks < 0:
        raise ValueError(f"num_blocks must be a non-negative integer, got {num_blocks!r}")


def _resets(reset_blocks: Iterable[int], num_blocks: int) -> set[int]:
    resets = {int(b) for b in reset_blocks}
    bad = sorted(b for b in resets if not 1 <= b <= num_blocks)
    if bad:
        raise ValueError(f"reset_blocks must lie in 1..{num_blocks}, got {bad}")
    return resets


def linear_growth(
    num_blocks: int,
    increment: float,
    start: float,
    reset_blocks: Iterable[int] = (),
    reset_value: float | None = None,
) -> np.ndarray:
    r"""Second moment of a pre-activation residual stream whose branch adds a fixed power (derived).

    :math:`m_0=\text{start}`, :math:`m_{l+1}=m_l+\text{increment}`. A block in ``reset_blocks`` (a downsampling
    block, whose shortcut is a convolution followed by a normalizer) starts afresh at ``reset_value`` (by default
    ``start + increment``: the normalized shortcut plus one branch).

    Returns an array of length ``num_blocks + 1``; entry ``l`` is the prediction after block ``l``.
    """
    _check_blocks(num_blocks)
    resets = _resets(reset_blocks, num_blocks)
    reset_value = start + increment if reset_value is None else reset_value
    values = np.empty(num_blocks + 1)
    values[0] = start
    for block in range(1, num_blocks + 1):
        values[block] = reset_value if block in resets else values[block - 1] + increment
    return values


def _relu_gaussian_masses(grid: np.ndarray, variance: float) -> np.ndarray:
    """Probability masses of ReLU(N(0, variance)) on ``grid`` (cell midpoints; cell 0 holds the atom at 0)."""
    std = np.sqrt(variance)
    half = (grid[1] - grid[0]) / 2.0
    upper = ndtr((grid + half) / std)
    lower = np.concatenate([[0.0], upper[:-1]])
    masses = upper - lower
    masses[-1] += 1.0 - upper[-1]
    return masses


def lindley_growth(
    num_blocks: int,
    step_variance: float,
    start_variance: float,
    reset_blocks: Iterable[int] = (),
    reset_variance: float | None = None,
    statistic: str = "second_moment",
    grid_points: int = 4001,
) -> np.ndarray:
    r"""Post-activation residual stream as a Gaussian random walk reflected at zero (derived).

    The stem gives :math:`x_0=\max(0,z_0)` with :math:`z_0\sim\mathcal N(0,\text{start\_variance})`; each block
    gives :math:`x_{l+1}=\max(0, x_l+n_l)` with independent :math:`n_l\sim\mathcal N(0,\text{step\_variance})`
    (Lindley's recursion). A block in ``reset_blocks`` gives :math:`\max(0, z)` with :math:`z\sim\mathcal N(0,
    \text{reset\_variance})` (default: ``start_variance + step_variance``, a normalized shortcut plus one branch).

    The law is propagated exactly on a grid of ``grid_points`` cells wide enough to hold 10 standard deviations of
    the walk (no sampling, so the prediction is deterministic). ``statistic`` is ``"second_moment"``
    (:math:`\mathbb E[x^2]`) or ``"variance"``. For large :math:`l` the second moment approaches
    ``step_variance * l`` and the variance :math:`(1-2/\pi)` of it.
    """
    _check_blocks(num_blocks)
    if statistic not in ("second_moment", "variance"):
        raise ValueError(f"statistic must be one of ['second_moment', 'variance'], got {statistic!r}")
    if step_variance < 0 or start_variance <= 0:
        raise ValueError("step_variance must be >= 0 and start_variance > 0")
    resets = _resets(reset_blocks, num_blocks)
    reset_variance = start_variance + step_variance if reset_variance is None else reset_variance

    top = 10.0 * np.sqrt(max(start_variance, reset_variance) + step_variance * (num_blocks + 1))
    grid = np.linspace(0.0, top, grid_points)
    masses = _relu_gaussian_masses(grid, start_variance)
    if step_variance > 0:
        # transition[i, j]: probability that max(0, grid[i] + n) falls in cell j.
        half = (grid[1] - grid[0]) / 2.0
        edges = (grid[None, :] + half - grid[:, None]) / np.sqrt(step_variance)
        cdf = ndtr(edges)
        transition = np.diff(np.concatenate([np.zeros((grid_points, 1)), cdf], axis=1), axis=1)
        transition[:, -1] += 1.0 - cdf[:, -1]

    values = np.empty(num_blocks + 1)

    def summarize(p: np.ndarray) -> float:
        second = float(p @ grid**2)
        return second if statistic == "second_moment" else second - float(p @ grid) ** 2

    values[0] = summarize(masses)
    for block in range(1, num_blocks + 1):
        if block in resets:
            masses = _relu_gaussian_masses(grid, reset_variance)
        elif step_variance > 0:
            masses = masses @ transition
        values[block] = summarize(masses)
    return values


def geometric_growth(num_blocks: int, factor: float, start: float) -> np.ndarray:
    r"""Exponential growth :math:`m_l = m_0\,r^l` of a stream whose branch preserves its input's scale (derived).

    ``factor`` :math:`r = 1+\alpha^2 c` where :math:`c=\mathbb E[b_l^2]/m_l` is the branch's gain; for a
    scale-preserving branch (:math:`c=1`) and :math:`\alpha=1`, :math:`r=2`.
    """
    _check_blocks(num_blocks)
    if factor <= 0 or start <= 0:
        raise ValueError("factor and start must be positive")
    return start * factor ** np.arange(num_blocks + 1, dtype=float)


def flat(num_blocks: int, start: float) -> np.ndarray:
    r"""SkipInit at initialization (:math:`\alpha=0`): every block is the identity on the stream (derived).

    In a post-activation block :math:`\max(0, x_l + 0) = x_l` because :math:`x_l\ge0` already, so the prediction is
    exact within a stage; a downsampling block's shortcut convolution restarts the stream.
    """
    _check_blocks(num_blocks)
    return np.full(num_blocks + 1, float(start))


def nf_expected_variance(num_blocks: int, alpha: float, reset_blocks: Iterable[int] = ()) -> np.ndarray:
    r"""The analytic variance :math:`\beta_l^2` that an NF-ResNet tracks (Brock et al. 2021; derived here).

    :math:`\beta_0^2=1` after the stem, :math:`\beta_{l+1}^2=\beta_l^2+\alpha^2`, and a downsampling block, whose
    shortcut also sees :math:`x/\beta`, restarts at :math:`1+\alpha^2`. The branch of block :math:`l` receives
    :math:`x_l/\beta_l`, which has unit variance, so a scale-preserving branch adds exactly :math:`\alpha^2`:
    the measured stream should follow this curve.
    """
    return linear_growth(num_blocks, alpha**2, 1.0, reset_blocks, reset_value=1.0 + alpha**2)


def growth_factor(values: np.ndarray, exclude_blocks: Iterable[int] = (), skip: int = 0) -> float:
    r"""Per-block growth factor: geometric mean of :math:`m_{l}/m_{l-1}` over blocks :math:`l>\text{skip}`.

    Blocks in ``exclude_blocks`` (downsampling blocks, where the shortcut restarts the stream) are left out. The
    same statistic is applied to predictions and measurements, so the two are compared like for like: about 2 for
    exponential growth, close to 1 (:math:`1+1/l`) for linear growth, exactly 1 for a flat stream.
    """
    values = np.asarray(values, dtype=float)
    excluded = {int(b) for b in exclude_blocks}
    blocks = [l for l in range(max(1, skip + 1), len(values)) if l not in excluded]
    if not blocks:
        raise ValueError("no blocks left to measure a growth factor")
    current, previous = values[blocks], values[[l - 1 for l in blocks]]
    if not (np.all(np.isfinite(values)) and np.all(current > 0) and np.all(previous > 0)):
        return float("nan")  # a stream that overflowed or vanished has no growth factor
    return float(np.exp(np.mean(np.log(current) - np.log(previous))))


def stages(num_values: int, exclude_blocks: Iterable[int] = ()) -> list[tuple[int, int]]:
    """The stretches ``(first, last)`` of a curve of ``num_values`` entries (after the stem and each block) that no
    block of ``exclude_blocks`` (a downsampling block, which restarts the stream) interrupts: the first starts at
    the stem (0), every other at its downsampling block."""
    starts = [0] + sorted(int(b) for b in exclude_blocks if 0 < int(b) < num_values)
    ends = [s - 1 for s in starts[1:]] + [num_values - 1]
    return list(zip(starts, ends))


def increment_acceleration(values: np.ndarray, exclude_blocks: Iterable[int] = ()) -> float:
    r"""How fast the per-block *increments* :math:`d_l=m_l-m_{l-1}` of a curve grow, per block (derived).

    Within each stage (:func:`stages`) of :math:`k` increments, the increments of the last
    :math:`h=\lfloor k/2\rfloor` blocks are summed and divided by those of the first :math:`h`; the ratio is the
    per-block rate raised to the number of blocks :math:`k-h` between the two halves, so the statistic is

    .. math:: a = \exp\Big(\sum_{\text{stages}}\log\frac{m_{\text{end}}-m_{\text{end}-h}}{m_{\text{start}+h}
        -m_{\text{start}}}\Big/\sum_{\text{stages}}(k-h)\Big)

    (the sums of increments telescope, so only four entries of each stage are read). It tells the laws apart where a
    growth factor cannot: **linear** growth adds the same amount every block, :math:`a=1`; **exponential** growth
    by :math:`r` per block has increments :math:`\propto r^l`, :math:`a=r` exactly; a stream that settles (bounded)
    has :math:`a<1`. A stage with fewer than 2 increments is skipped; NaN when a sum of increments is not positive
    (a flat or noisy-bounded stretch) or no stage is left.
    """
    values = np.asarray(values, dtype=float)
    logs, gaps = 0.0, 0
    for first, last in stages(len(values), exclude_blocks):
        k = last - first
        h = k // 2
        if h < 1:
            continue
        early = values[first + h] - values[first]
        late = values[last] - values[last - h]
        if not (np.isfinite(early) and np.isfinite(late) and early > 0 and late > 0):
            return float("nan")
        logs += float(np.log(late) - np.log(early))
        gaps += k - h
    return float(np.exp(logs / gaps)) if gaps else float("nan")


def downsampling_jump(values: np.ndarray, exclude_blocks: Iterable[int]) -> float:
    r"""The geometric mean over the downsampling blocks :math:`t` of :math:`m_t/m_{t-1}`: how much the stream's
    second moment changes where the strided shortcut restarts it (derived). NaN if a value is not positive."""
    values = np.asarray(values, dtype=float)
    blocks = [int(b) for b in exclude_blocks if 0 < int(b) < len(values)]
    if not blocks:
        raise ValueError("no downsampling block inside the curve")
    current, previous = values[blocks], values[[b - 1 for b in blocks]]
    if not (np.all(np.isfinite(current)) and np.all(np.isfinite(previous)) and np.all(current > 0)):
        return float("nan")
    if not np.all(previous > 0):
        return float("nan")
    return float(np.exp(np.mean(np.log(current) - np.log(previous))))


# --------------------------------------------------------------------------------------------------------------
# A one-dimensional mean-field model of the whole residual stream
# --------------------------------------------------------------------------------------------------------------

_SCALED_RELU_GAIN = np.sqrt(2.0 * np.pi / (np.pi - 1.0))


def _sigmoid(y: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * y))


_ACTIVATIONS = {
    "identity": lambda y: y,
    "relu": lambda y: np.maximum(y, 0.0),
    "scaled_relu": lambda y: _SCALED_RELU_GAIN * (np.maximum(y, 0.0) - 1.0 / np.sqrt(2.0 * np.pi)),
    # EvoNorms normalize and act at once (v = 1 at initialization); the batch, instance and group standard
    # deviations they divide by are all the population's standard deviation in this model.
    "evo_b0": lambda y: y / np.maximum(np.std(y), y + np.std(y)),
    "evo_s0": lambda y: y * _sigmoid(y) / np.std(y),
}


@dataclass(frozen=True)
class StreamUnit:
    r"""How a convolution, its normalizer and its activation act on the scale of a typical entry (derived).

    * ``conv_gain``: a convolution with random zero-mean weights returns, over the draw of the weights, a centred
      Gaussian with :math:`\mathbb E[y^2]=\text{gain}\cdot S(u)` where :math:`S(u)=\mathbb E[u^2]`, or
      :math:`\mathrm{Var}(u)` when the weights are standardized to zero mean (``centred_conv``, SWS).
      He initialization: gain 2; WN's unit-norm filters: gain 1; SWS: :math:`2\pi/(\pi-1)`.
    * ``norm_power``: an activation-based normalizer returns unit scale whatever its input, so its output has second
      moment ``norm_power``; ``None`` for none and the parametric layers (an identity).
    * ``activation``: after the normalizer inside the branch; ``stream_activation``: after the residual sum of a
      post-activation block. The EvoNorms normalize and act at once and sit in both activation slots, as in the
      authors' code, so for them the branch ends in a plain convolution and the EvoNorm normalizes the sum.
    """

    conv_gain: float = 2.0
    centred_conv: bool = False
    norm_power: float | None = 1.0
    activation: str = "relu"
    stream_activation: str = "relu"


#: The mean-field description of every normalizer of the main paper (derived; see each field of StreamUnit).
STREAM_UNITS: dict[str, StreamUnit] = {
    "none": StreamUnit(norm_power=None),
    "bn": StreamUnit(),
    "ln": StreamUnit(),
    "in": StreamUnit(),
    "gn": StreamUnit(),
    "frn": StreamUnit(),
    "vn": StreamUnit(norm_power=np.pi / (np.pi - 1.0)),
    "evo_b0": StreamUnit(norm_power=None, activation="evo_b0", stream_activation="evo_b0"),
    "evo_s0": StreamUnit(norm_power=None, activation="evo_s0", stream_activation="evo_s0"),
    "wn": StreamUnit(conv_gain=1.0, norm_power=None, activation="scaled_relu", stream_activation="scaled_relu"),
    "sws": StreamUnit(conv_gain=2.0 * np.pi / (np.pi - 1.0), centred_conv=True, norm_power=None),
}


def _tap_fractions(size: int, kernel_size: int = 3, stride: int = 1) -> np.ndarray:
    """Fraction of a zero-padded ``kernel_size`` x ``kernel_size`` kernel inside a ``size`` x ``size`` input map,
    at every output position of a convolution with "same" padding and ``stride``."""
    if size < 1 or stride < 1:
        raise ValueError(f"size and stride must be >= 1, got {size}, {stride}")
    half = kernel_size // 2
    centres = np.arange(0, size, stride)
    per_row = (np.minimum(size - 1, centres + half) - np.maximum(0, centres - half) + 1) / kernel_size
    return np.outer(per_row, per_row)


def padding_fraction(size: int, kernel_size: int = 3, stride: int = 1) -> float:
    r"""Average fraction :math:`\mathbb E[f]` of a zero-padded convolution's taps that land inside a
    ``size`` x ``size`` map; :math:`((3s-2)/(3s))^2` for a 3x3 kernel. Border outputs sum fewer inputs, which lowers
    the output's second moment by this factor (0.92 at 16x16, 0.69 at 4x4)."""
    return float(_tap_fractions(size, kernel_size, stride).mean())


def padding_leak(size: int, kernel_size: int = 3, stride: int = 1) -> float:
    r""":math:`\mathbb E[f(1-f)]` over output positions (derived). A convolution whose weights are standardized to
    zero mean (SWS) removes the mean :math:`\bar u` of its input only where the whole kernel is inside the map: over
    random standardized weights of total power :math:`G`, a border position whose valid taps are a fraction
    :math:`f` of all taps keeps :math:`G\,f(1-f)\,\bar u^2` of the mean (exchangeable weights that sum to zero),
    so the output's second moment is :math:`G(\mathbb E[f]\,\mathrm{Var}(u)+\mathbb E[f(1-f)]\,\bar u^2)`."""
    fractions = _tap_fractions(size, kernel_size, stride)
    return float((fractions * (1.0 - fractions)).mean())


def mean_field_stream(
    unit: StreamUnit,
    num_blocks: int,
    *,
    block: str = "post",
    skip_gain: float = 1.0,
    reset_blocks: Iterable[int] = (),
    sizes: Sequence[int] | None = None,
    nf_alpha: float | None = None,
    walkers: int = 200_000,
    seed: int = 0,
) -> np.ndarray:
    r"""Second moment of the residual stream after the stem and each block, from a mean-field model (derived).

    Each entry of the stream is a *walker*. A convolution replaces its input by a fresh centred Gaussian whose
    variance is ``conv_gain`` times the input population's second moment (or variance), times the padding
    fraction of the map (:func:`padding_fraction`; for standardized weights plus the mean that leaks at the
    borders, :func:`padding_leak`); a normalizer rescales to ``norm_power``; activations act
    entry-wise. The blocks are those of :mod:`normlib.models`:

    * post: :math:`x' = \mathrm{act}(\text{short}(x) + g\,\mathrm{norm}(\mathrm{conv}(
      \mathrm{act}(\mathrm{norm}(\mathrm{conv}(x))))))`
    * pre: :math:`x' = \text{short}(h) + \alpha g\,\mathrm{conv}(
      \mathrm{act}(\mathrm{norm}(\mathrm{conv}(\mathrm{act}(\mathrm{norm}(h))))))`,
      :math:`h=x/\beta` (NF-ResNet; :math:`\alpha=\beta=1` without it)

    where the shortcut is the identity except in ``reset_blocks`` (a strided convolution and the normalizer),
    :math:`g` is ``skip_gain`` (0 for SkipInit) and ``sizes[l]`` the map size in block ``l`` (index 0: the stem;
    a block whose map is smaller than the previous one strides its first convolution and its shortcut).
    The stem is :math:`\mathrm{act}(\mathrm{norm}(\mathrm{conv}(\text{input})))` on a unit Gaussian input.
    Special cases reduce to the closed forms above: activation-based, pre-activation gives
    :func:`linear_growth`; post-activation with a ReLU gives :func:`lindley_growth`. The walkers use a fixed seed,
    so the prediction is deterministic; with 200 000 walkers its sampling error is a few tenths of a percent.
    """
    _check_blocks(num_blocks)
    if block not in ("post", "pre"):
        raise ValueError(f"block must be one of ['post', 'pre'], got {block!r}")
    if nf_alpha is not None and block != "pre":
        raise ValueError("the NF remedy (nf_alpha) needs block='pre'")
    resets = _resets(reset_blocks, num_blocks)
    if sizes is not None and len(sizes) != num_blocks + 1:
        raise ValueError(f"sizes must have num_blocks + 1 = {num_blocks + 1} entries, got {len(sizes)}")
    rng = np.random.default_rng(seed)
    act = _ACTIVATIONS[unit.activation]
    stream_act = _ACTIVATIONS[unit.stream_activation]

    def conv(u: np.ndarray, size: int | None, stride: int = 1) -> np.ndarray:
        fraction = 1.0 if size is None else padding_fraction(size, stride=stride)
        if unit.centred_conv:
            leak = 0.0 if size is None else padding_leak(size, stride=stride)
            power = fraction * np.var(u) + leak * np.mean(u) ** 2
        else:
            power = fraction * np.mean(u**2)
        return np.sqrt(unit.conv_gain * power) * rng.standard_normal(u.shape)

    def geometry(block_index: int) -> tuple[int | None, int | None, int]:
        """(input size, output size, stride) of the block's first convolution and shortcut."""
        if sizes is None:
            return None, None, 1
        size_in, size_out = sizes[max(block_index - 1, 0)], sizes[block_index]
        return size_in, size_out, max(1, round(size_in / size_out))

    def norm(y: np.ndarray) -> np.ndarray:
        return y if unit.norm_power is None else y * np.sqrt(unit.norm_power / np.mean(y**2))

    alpha = 1.0 if nf_alpha is None else nf_alpha
    betas = iter(np.sqrt(nf_expected_variance(num_blocks, nf_alpha, resets))) if nf_alpha is not None else None
    x = act(norm(conv(rng.standard_normal(walkers), geometry(0)[1])))
    values = [float(np.mean(x**2))]
    for l in range(1, num_blocks + 1):
        size_in, size_out, stride = geometry(l)
        if block == "post":
            branch = norm(conv(act(norm(conv(x, size_in, stride))), size_out))
            short = norm(conv(x, size_in, stride)) if l in resets else x
            x = stream_act(short + skip_gain * branch)
        else:
            h = x / next(betas) if betas is not None else x
            branch = conv(act(norm(conv(act(norm(h)), size_in, stride))), size_out)
            short = norm(conv(h, size_in, stride)) if l in resets else x
            x = short + alpha * skip_gain * branch
        values.append(float(np.mean(x**2)))
    return np.array(values)
