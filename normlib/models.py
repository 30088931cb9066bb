"""The two architecture families of Lubana et al. (2021): non-residual CNNs and CIFAR ResNets.

Every model is built from the normalizer registry in :mod:`normlib.layers`, so one ``norm``
name ("bn", "gn", "wn", "evo_s0", ...) picks the convolution, the normalizer and the
activation together (Lubana et al. 2021): WN/SWS bring their own convolutions and an Identity
norm slot, the EvoNorms fill the norm slot and replace the activation.

Initialization (Lubana et al. 2021): every plain ``nn.Conv2d`` gets He init,
``kaiming_normal_(mode="fan_in", nonlinearity="relu")``, i.e. weights ~ N(0, 2/fan_in), and a
zero bias. WN/SWS convolutions keep the initialization of :mod:`normlib.layers` (their
forward is invariant to the weight scale). ``nn.Linear`` keeps torch's default init.
:func:`make_resnet` takes ``init`` to use another one for the plain convolutions (:data:`INIT_GAINS`):
``"lecun"``, N(0, 1/fan_in), or ``"torch"``, PyTorch's own default.

Both model classes expose where the probes of :mod:`normlib.probes` look, in forward order:
``probe_points()`` (activations) and ``conv_points()`` (convolution outputs).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from normlib import layers

__all__ = [
    "CNN_CONFIGS",
    "RESNET_DEPTH_EXAMPLES",
    "NonResidualCNN",
    "ResNet",
    "PostActBlock",
    "PreActBlock",
    "uniform_cfg",
    "cnn_entry",
    "make_cnn",
    "make_resnet",
    "VGG_CONFIGS",
    "VGG",
    "make_vgg",
    "build_model",
    "he_init_",
    "INIT_GAINS",
    "init_convs_",
    "nf_betas",
]

# An entry ``w`` is a stride-1 3x3 conv with ``w`` output channels, ``(w, 2)`` a stride-2 one.
CNN_CONFIGS: dict[str, list] = {
    "cfg_10": [64, (64, 2), 128, (128, 2), 256, (256, 2), 512, (512, 2), 512, 512],
    "cfg_20": [
        64,
        64,
        64,
        (64, 2),
        128,
        128,
        128,
        (128, 2),
        256,
        256,
        256,
        (256, 2),
        256,
        256,
        256,
        (256, 2),
        512,
        512,
        512,
        512,
    ],
    # From the official code's config.py (the paper only says "40 conv layers, widths
    # 64->128->256->512, four stride-2 layers"): 7x64, (64,2), 7x128, (128,2), 7x256,
    # (256,2), 7x512, (512,2), 8x512.
    "cfg_40": [*[64] * 7, (64, 2), *[128] * 7, (128, 2), *[256] * 7, (256, 2), *[512] * 7, (512, 2), *[512] * 8],
}

RESNET_DEPTH_EXAMPLES = (20, 32, 44, 56, 110)


def uniform_cfg(depth: int, width: int = 64) -> list[int]:
    """``depth`` stride-1 convs of constant ``width`` (the paper's ``cfg_uniform``, used for
    the GroupNorm-vs-rank experiments): no downsampling anywhere."""
    if depth < 1 or width < 1:
        raise ValueError(f"uniform_cfg needs depth >= 1 and width >= 1, got {depth}, {width}")
    return [width] * depth


def he_init_(model: nn.Module) -> nn.Module:
    """He-initialize every plain conv in ``model`` in place: W ~ N(0, 2/fan_in), bias 0."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


#: The initializations :func:`init_convs_` knows, each with ``fan_in * Var(w)``: the factor by which a convolution
#: with these weights multiplies the second moment of its input, on average over the weights. ``he``:
#: ``kaiming_normal_(nonlinearity="relu")``, N(0, 2/fan_in); ``lecun``: ``kaiming_normal_(nonlinearity="linear")``,
#: N(0, 1/fan_in) (Xavier/Glorot's variance when fan_in = fan_out); ``torch``: PyTorch's default
#: ``reset_parameters()``, ``kaiming_uniform_(a=sqrt(5))``, uniform on +-gain*sqrt(3/fan_in) with
#: gain = sqrt(2/(1+a^2)) = sqrt(1/3), so +-1/sqrt(fan_in) and a variance of 1/(3 fan_in).
INIT_GAINS: dict[str, float] = {"he": 2.0, "lecun": 1.0, "torch": 1.0 / 3.0}


def init_convs_(model: nn.Module, init: str = "he") -> nn.Module:
    """Initialize every plain conv in ``model`` in place with ``init`` (a name of :data:`INIT_GAINS`); ``"he"`` is
    :func:`he_init_`. ``"lecun"`` draws the same standard normals as ``"he"`` would from the same random state, so
    the two differ by the factor sqrt(2) only. Biases are zeroed, except by ``"torch"``, which keeps PyTorch's."""
    if init not in INIT_GAINS:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INIT_GAINS)}")
    if init == "he":
        return he_init_(model)
    for module in model.modules():
        if type(module) is nn.Conv2d:
            if init == "torch":
                module.reset_parameters()
                continue
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _norm_and_act(norm: str, channels: int, **norm_opts) -> tuple[nn.Module, nn.Module]:
    """The (norm slot, activation slot) pair of a residual block, as the authors' ``get_norm_and_activ_layer``
    builds it: an EvoNorm, which normalizes and acts at once, takes the *activation* slot and leaves an
    Identity in the norm slot; every other normalizer fills the norm slot and its activation the other."""
    if layers.norm_info(norm).placement == "replaces_activation":
        return nn.Identity(), layers.make_norm(norm, channels, **norm_opts)
    return layers.make_norm(norm, channels, **norm_opts), layers.make_activation(norm, channels)


def _bare_norm(norm: str, channels: int, **norm_opts) -> nn.Module:
    """The norm slot alone, with no nonlinearity (FRN without its TLU; an Identity for the EvoNorms, WN, SWS)."""
    return _norm_and_act(norm, channels, **norm_opts)[0]


def cnn_entry(entry) -> tuple[int, int]:
    """A config entry as (width, stride); ``[w, s]`` (as read from JSON) works like ``(w, s)``."""
    if isinstance(entry, int):
        return entry, 1
    if isinstance(entry, (tuple, list)) and len(entry) == 2 and all(isinstance(v, int) for v in entry):
        return tuple(entry)
    raise ValueError(f"config entries are ints or (width, stride) tuples, got {entry!r}")


class NonResidualCNN(nn.Module):
    """The paper's "VGG-like" CNN: per config entry a unit 3x3 conv -> norm -> activation
    (stride 2 for ``(w, 2)``), then global average pooling and a Linear classifier.

    ``units[i]`` is the i-th conv-norm-act unit; its output is probe point ``layer{i+1}``.
    """

    def __init__(self, cfg: Sequence, norm: str = "bn", in_channels: int = 3, num_classes: int = 100, **norm_opts):
        super().__init__()
        if not cfg:
            raise ValueError("cfg must have at least one entry")
        self.norm = norm
        units, ch = [], in_channels
        for width, stride in map(cnn_entry, cfg):
            units.append(layers.conv_norm_act(norm, ch, width, 3, stride, **norm_opts))
            ch = width
        self.units = nn.ModuleList(units)
        self.classifier = nn.Linear(ch, num_classes)
        he_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return self.classifier(x.mean(dim=(2, 3)))

    def probe_points(self) -> list[tuple[str, nn.Module]]:
        """Each unit's output (after its activation): ``layer1`` ... ``layerL``."""
        return [(f"layer{i}", unit) for i, unit in enumerate(self.units, 1)]

    def conv_points(self) -> list[tuple[str, nn.Module]]:
        """Each unit's convolution: ``conv1`` ... ``convL``."""
        return [(f"conv{i}", unit.conv) for i, unit in enumerate(self.units, 1)]


def make_cnn(
    cfg: str | Sequence = "cfg_10",
    norm: str = "bn",
    in_channels: int = 3,
    num_classes: int = 100,
    width: int | None = None,
    depth: int | None = None,
    **norm_opts,
) -> NonResidualCNN:
    """Build a :class:`NonResidualCNN`.

    ``cfg`` is a name in :data:`CNN_CONFIGS`, ``"uniform"`` (then ``depth`` is required:
    :func:`uniform_cfg` ``(depth, width or 64)``), or an explicit list of entries.
    ``width`` rescales a named or explicit config so that its first layer has ``width``
    channels and every later one keeps its ratio to the first: ``cfg_10`` with ``width=8``
    has widths 8/16/32/64. ``norm_opts`` go to the normalizer (e.g. ``group_size=4``).
    """
    if isinstance(cfg, str):
        if cfg == "uniform":
            if depth is None:
                raise ValueError('cfg="uniform" needs depth=<number of conv layers>')
            return NonResidualCNN(uniform_cfg(depth, width or 64), norm, in_channels, num_classes, **norm_opts)
        if cfg not in CNN_CONFIGS:
            raise ValueError(
                f"unknown cfg {cfg!r}; valid: {', '.join([*CNN_CONFIGS, 'uniform'])}"
                " or a list of widths / (width, stride) tuples"
            )
        cfg = CNN_CONFIGS[cfg]
    if depth is not None:
        raise ValueError('depth= only applies to cfg="uniform"')
    entries = [cnn_entry(e) for e in cfg]
    if width is not None:
        scale = width / entries[0][0]
        entries = [(max(1, round(w * scale)), s) for w, s in entries]
    return NonResidualCNN(entries, norm, in_channels, num_classes, **norm_opts)


class _ResidualBlock(nn.Module):
    """What both BasicBlocks share: the shortcut, the skip gain and the conv listing."""

    def _init_shortcut_and_gain(
        self, norm: str, in_ch: int, out_ch: int, stride: int, skipinit: bool, **norm_opts
    ) -> None:
        """Shortcut: identity, or conv3x3(stride) -> norm slot (no activation) when the block
        downsamples or changes width (WN/SWS: their conv and an Identity; EvoNorms: an Identity,
        as in the authors' code). Skip gain: a learnable scalar initialised to 0 (SkipInit) or
        the constant 1 (a buffer, not a parameter)."""
        self.transition = stride != 1 or in_ch != out_ch
        self.shortcut = (
            nn.Sequential(
                OrderedDict(
                    conv=layers.make_conv(norm, in_ch, out_ch, 3, stride), norm=_bare_norm(norm, out_ch, **norm_opts)
                )
            )
            if self.transition
            else nn.Identity()
        )
        if skipinit:
            self.skip_gain = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("skip_gain", torch.ones(()))

    def convs(self) -> list[tuple[str, nn.Module]]:
        """``conv1``, ``conv2`` and, on a transition block, the ``shortcut`` conv."""
        convs = [("conv1", self.conv1), ("conv2", self.conv2)]
        return convs + [("shortcut", self.shortcut.conv)] if self.transition else convs


class PostActBlock(_ResidualBlock):
    """The paper's default BasicBlock (post-activation)::

        out = act1(norm1(conv1(x)))
        out = act2(skip_gain * norm2(conv2(out)) + shortcut(x))

    ``norm2`` carries no nonlinearity (FRN without its TLU). The EvoNorms sit in the activation
    slots, as in the authors' code: the branch ends in a plain convolution and the EvoNorm
    normalizes the sum.
    Shortcut and skip gain: see :meth:`_ResidualBlock._init_shortcut_and_gain`.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, skipinit: bool, **norm_opts):
        super().__init__()
        self.conv1 = layers.make_conv(norm, in_ch, out_ch, 3, stride)
        self.norm1, self.act1 = _norm_and_act(norm, out_ch, **norm_opts)
        self.conv2 = layers.make_conv(norm, out_ch, out_ch, 3, 1)
        self.norm2 = _bare_norm(norm, out_ch, **norm_opts)
        self.act2 = _norm_and_act(norm, out_ch, **norm_opts)[1]
        self._init_shortcut_and_gain(norm, in_ch, out_ch, stride, skipinit, **norm_opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.skip_gain * self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class PreActBlock(_ResidualBlock):
    """Pre-activation BasicBlock with optional NF-ResNet scaling (Brock et al. 2021)::

        h   = x / beta
        out = conv2(act2(norm2(conv1(act1(norm1(h))))))
        y   = shortcut(h) + alpha * skip_gain * out    (transition block)
        y   = x           + alpha * skip_gain * out    (identity shortcut)

    with no activation after the sum. Without the remedy ``alpha = beta = 1``; with it,
    ``beta = sqrt(expected Var(x))`` is a constant fixed at construction (see
    :func:`nf_betas`). The shortcut is the same conv -> norm as in :class:`PostActBlock`
    (the authors' pre-activation code uses norm -> conv there).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        norm: str,
        skipinit: bool,
        alpha: float = 1.0,
        beta: float = 1.0,
        **norm_opts,
    ):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.norm1, self.act1 = _norm_and_act(norm, in_ch, **norm_opts)
        self.conv1 = layers.make_conv(norm, in_ch, out_ch, 3, stride)
        self.norm2, self.act2 = _norm_and_act(norm, out_ch, **norm_opts)
        self.conv2 = layers.make_conv(norm, out_ch, out_ch, 3, 1)
        self._init_shortcut_and_gain(norm, in_ch, out_ch, stride, skipinit, **norm_opts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x / self.beta
        out = self.conv2(self.act2(self.norm2(self.conv1(self.act1(self.norm1(h))))))
        skip = self.shortcut(h) if self.transition else x
        return skip + (self.alpha * self.skip_gain) * out

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:.4g}"


def nf_betas(transitions: Sequence[bool], alpha: float) -> list[float]:
    """Analytic NF-ResNet input scales, one per block: ``beta_l = sqrt(E Var(x_l))``.

    The expected variance is 1 after the stem and grows by ``alpha**2`` per block,
    ``E Var(x_{l+1}) = E Var(x_l) + alpha**2``; after a transition block (``transitions[l]``,
    whose shortcut sees the unit-variance ``x_l / beta_l``) it resets to ``1 + alpha**2``.
    """
    betas, var = [], 1.0
    for is_transition in transitions:
        betas.append(math.sqrt(var))
        var = 1.0 + alpha**2 if is_transition else var + alpha**2
    return betas


class ResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2: a stem (conv3x3 -> norm -> act to ``widths[0]``), three
    stages of ``n`` blocks with widths ``widths`` and strides 1/2/2, global average pooling
    and a Linear classifier. The paper's ResNet-56 is depth 56, widths (32, 64, 128).

    ``block="post"`` uses :class:`PostActBlock`, ``"pre"`` :class:`PreActBlock`.
    ``remedy="nf"`` (pre-activation only) adds NF-ResNet scaling,
    ``x_{l+1} = x_l + alpha * f(x_l / beta_l)``, with ``beta_l`` from :func:`nf_betas`, so
    that the expected variance of the residual stream grows by ``alpha**2`` per block
    instead of doubling (Lubana et al. 2021); it is meant for parametric normalizers or none.
    The analytic ``beta_l`` assume unit-variance branches and shortcuts, which holds only
    roughly: at init (ResNet-56, SWS, 64 Gaussian 32x32 inputs) the block-output variance
    rises by ~0.1 per block and ~x2 at each of the two transitions (the shortcut conv's ReLU
    gain on an un-rectified input), 0.96 -> 13 over 27 blocks, against 0.96 -> 9e8 without
    the remedy.

    Blocks are stored flat in ``blocks``; probe points are ``stem`` and ``block1`` ...
    ``block{3n}`` (the residual stream). ``init`` initializes the plain convolutions (:func:`init_convs_`; the
    default He init is the book's).
    """

    def __init__(
        self,
        depth: int = 56,
        widths: Sequence[int] = (32, 64, 128),
        norm: str = "bn",
        block: str = "post",
        skipinit: bool = False,
        remedy: str | None = None,
        alpha: float = 0.2,
        in_channels: int = 3,
        num_classes: int = 100,
        init: str = "he",
        **norm_opts,
    ):
        super().__init__()
        if init not in INIT_GAINS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INIT_GAINS)}")
        n = _blocks_per_stage(depth)
        if len(widths) != 3:
            raise ValueError(f"widths must give the 3 stage widths, got {tuple(widths)}")
        if block not in ("post", "pre"):
            raise ValueError(f'block must be "post" or "pre", got {block!r}')
        if remedy not in (None, "nf"):
            raise ValueError(f'remedy must be None or "nf", got {remedy!r}')
        if remedy == "nf" and block != "pre":
            raise ValueError(
                'remedy="nf" (x + alpha*f(x/beta)) needs block="pre": a post-'
                "activation block has a nonlinearity on the residual stream"
            )
        self.norm, self.block_type, self.remedy = norm, block, remedy
        self.stem = layers.conv_norm_act(norm, in_channels, widths[0], 3, 1, **norm_opts)
        shapes, ch = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                shapes.append((ch, width, stride))
                ch = width
        self.blocks = nn.Sequential(*self._make_blocks(shapes, norm, block, skipinit, remedy, alpha, **norm_opts))
        self.classifier = nn.Linear(ch, num_classes)
        init_convs_(self, init)

    @staticmethod
    def _make_blocks(shapes, norm, block, skipinit, remedy, alpha, **norm_opts):
        """Blocks for (in_ch, out_ch, stride) ``shapes``; NF scales only with the remedy."""
        if block == "post":
            return [PostActBlock(i, o, s, norm, skipinit, **norm_opts) for i, o, s in shapes]
        if remedy == "nf":
            betas = nf_betas([s != 1 or i != o for i, o, s in shapes], alpha)
        else:
            alpha, betas = 1.0, [1.0] * len(shapes)
        return [
            PreActBlock(i, o, s, norm, skipinit, alpha, beta, **norm_opts) for (i, o, s), beta in zip(shapes, betas)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(x.mean(dim=(2, 3)))

    def probe_points(self) -> list[tuple[str, nn.Module]]:
        """The residual stream: ``stem`` output, then each block's output."""
        return [("stem", self.stem)] + [(f"block{i}", b) for i, b in enumerate(self.blocks, 1)]

    def conv_points(self) -> list[tuple[str, nn.Module]]:
        """All convolutions in forward order: ``stem``, then per block ``block{i}.conv1``,
        ``block{i}.conv2`` and, on transition blocks, ``block{i}.shortcut``."""
        points = [("stem", self.stem.conv)]
        for i, block in enumerate(self.blocks, 1):
            points += [(f"block{i}.{name}", conv) for name, conv in block.convs()]
        return points


def _blocks_per_stage(depth: int) -> int:
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth must be 6n+2 with n >= 1 (e.g. {', '.join(map(str, RESNET_DEPTH_EXAMPLES))}), got {depth!r}"
        )
    return (depth - 2) // 6


def make_resnet(
    depth: int = 56,
    widths: Sequence[int] = (32, 64, 128),
    norm: str = "bn",
    block: str = "post",
    skipinit: bool = False,
    remedy: str | None = None,
    alpha: float = 0.2,
    in_channels: int = 3,
    num_classes: int = 100,
    init: str = "he",
    **norm_opts,
) -> ResNet:
    """Build a CIFAR :class:`ResNet` (see its docstring); ``init`` initializes its plain convolutions
    (:func:`init_convs_`: ``"he"``, the default, ``"lecun"`` or ``"torch"``); ``norm_opts`` go to the normalizer."""
    return ResNet(depth, widths, norm, block, skipinit, remedy, alpha, in_channels, num_classes, init, **norm_opts)


#: VGG configurations: an int is a 3x3 conv -> norm -> ReLU unit with that many channels, ``"M"`` a 2x2 max-pool.
#: ``"A"`` is VGG-11 (Simonyan & Zisserman's configuration A), as in Hoffer et al.'s ``normmatters_wd/models/vgg.py``.
VGG_CONFIGS: dict[str, list] = {"A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]}


class VGG(nn.Module):
    """VGG for 32x32 images, as Hoffer et al.'s ``vgg.py`` (from kuangliu/pytorch-cifar): per int entry of the
    config a unit 3x3 conv (padding 1) -> norm -> activation, a 2x2 max-pool per ``"M"``, then one Linear
    classifier on the pooled features. No hidden fully connected layers, no dropout.

    What differs from that file: the classifier reads the spatial *mean* of the last maps (on 32x32 inputs the five
    pools leave 1x1 maps, where the mean is the flattening the paper's code does; other sizes still work); the convs
    have no bias (a BatchNorm after them removes it exactly, so it never changes the function); He init like the
    other models here (the paper's code keeps PyTorch's default init; ``reset_parameters()`` on each conv and
    Linear restores it). ``units[i]`` is the i-th conv unit, probe point ``layer{i+1}``.
    """

    def __init__(self, cfg: Sequence, norm: str = "bn", in_channels: int = 3, num_classes: int = 10, **norm_opts):
        super().__init__()
        if not any(e != "M" for e in cfg):
            raise ValueError("a VGG cfg needs at least one conv entry")
        self.norm = norm
        units, features, ch = [], [], in_channels
        for entry in cfg:
            if entry == "M":
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
            elif isinstance(entry, int) and entry > 0:
                unit = layers.conv_norm_act(norm, ch, entry, 3, 1, **norm_opts)
                units.append(unit)
                features.append(unit)
                ch = entry
            else:
                raise ValueError(f'VGG cfg entries are positive ints or "M", got {entry!r}')
        self.features = nn.Sequential(*features)
        self.units = list(units)  # the same modules as in features (registered there)
        self.classifier = nn.Linear(ch, num_classes)
        he_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))

    def probe_points(self) -> list[tuple[str, nn.Module]]:
        """Each unit's output (after its activation): ``layer1`` ... ``layerL``."""
        return [(f"layer{i}", unit) for i, unit in enumerate(self.units, 1)]

    def conv_points(self) -> list[tuple[str, nn.Module]]:
        """Each unit's convolution: ``conv1`` ... ``convL``."""
        return [(f"conv{i}", unit.conv) for i, unit in enumerate(self.units, 1)]


def make_vgg(
    cfg: str | Sequence = "A",
    norm: str = "bn",
    in_channels: int = 3,
    num_classes: int = 10,
    width: int | None = None,
    **norm_opts,
) -> VGG:
    """Build a :class:`VGG`: ``cfg`` is a name of :data:`VGG_CONFIGS` (``"A"``: VGG-11, the default) or a list of
    widths and ``"M"``. ``width`` rescales it so that the first conv has ``width`` channels and every later one
    keeps its ratio (``width=16`` gives VGG-11 at a quarter width). ``norm_opts`` go to the normalizer."""
    if isinstance(cfg, str):
        if cfg not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG cfg {cfg!r}; valid: {', '.join(VGG_CONFIGS)} or a list of widths and 'M'")
        cfg = VGG_CONFIGS[cfg]
    cfg = list(cfg)
    if width is not None:
        first = next((e for e in cfg if e != "M"), None)
        if not isinstance(first, int) or width < 1:
            raise ValueError(f"width must be a positive int and cfg must start with a conv width, got {width!r}")
        cfg = [e if e == "M" else max(1, round(e * width / first)) for e in cfg]
    return VGG(cfg, norm, in_channels, num_classes, **norm_opts)


_BUILDERS = {"cnn": make_cnn, "resnet": make_resnet, "vgg": make_vgg}


def build_model(arch: str, **kwargs) -> nn.Module:
    """One entry point: ``build_model("cnn", ...)`` is :func:`make_cnn`,
    ``build_model("resnet", ...)`` is :func:`make_resnet`, ``build_model("vgg", ...)`` is :func:`make_vgg`."""
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(_BUILDERS)}")
    return _BUILDERS[arch](**kwargs)
