r"""The normalization layers of Lubana, Dick & Tanaka (NeurIPS 2021), as ``nn.Module``\ s.

Every layer follows the definition the authors implemented (``layer_defs.py`` of their
official code): affine pairs
:math:`(\gamma, \beta)` are per channel and start at :math:`(1, 0)`, :math:`\epsilon = 10^{-5}`,
inputs are :math:`(N, C, H, W)`. Torch's native kernels do the work wherever the maths is
the same, so BN/LN/IN/GN run as fast as torch's own modules.

The registry maps a short name to a layer and says where it sits in a block:

======  ======================================  ==========  ===================
name    layer(s)                                family      placement
======  ======================================  ==========  ===================
none    Identity, ReLU                          none        after_conv
bn      :class:`BatchNorm2d`, ReLU              activation  after_conv
ln      :class:`LayerNorm2d`, ReLU              activation  after_conv
in      :class:`InstanceNorm2d`, ReLU           activation  after_conv
gn      :class:`GroupNorm2d`, ReLU              activation  after_conv
frn     :class:`FilterResponseNorm2d`, TLU      activation  after_conv
vn      :class:`VarianceNorm2d`, ReLU           activation  after_conv
wn      :class:`WNConv2d`, :class:`ScaledReLU`  parametric  in_conv
sws     :class:`ScaledStdConv2d`, ReLU          parametric  in_conv
evo_b0  :class:`EvoNormB0` (no separate act.)   activation  replaces_activation
evo_s0  :class:`EvoNormS0` (no separate act.)   activation  replaces_activation
======  ======================================  ==========  ===================

The normalizers of Hoffer et al. (2018, "Norm matters") are registered too, after the paper's set
(:data:`NORM_NAMES` stays Lubana et al.'s; :data:`NORM_MATTERS_NAMES` lists these):

======  ====================================================  ==========  ==========
name    layer(s)                                              family      placement
======  ====================================================  ==========  ==========
l1bn    :class:`L1BatchNorm2d`, ReLU                          activation  after_conv
linfbn  :class:`LinfBatchNorm2d`, ReLU                        activation  after_conv
topkbn  :class:`TopkBatchNorm2d`, ReLU                        activation  after_conv
bwn     :class:`BWNConv2d`, :class:`MeanBatchNorm2d`, ReLU    parametric  in_conv
======  ====================================================  ==========  ==========

Build layers with :func:`make_norm`, :func:`make_conv`, :func:`make_activation` or the
whole block with :func:`conv_norm_act`; add your own normalizer with :func:`register_norm`.
Every layer with parameters or buffers, and every builder, takes torch's factory keyword arguments ``device`` and
``dtype``.

The package has one module per mechanism; every public name is importable from ``normlib.layers``:

- ``normlib.layers.batch``: batch statistics, with running statistics for eval mode (BatchNorm, VarianceNorm,
  the Lp batch norms, mean-only BatchNorm), all but torch's BatchNorm on one running-statistics base class;
- ``normlib.layers.group``: per-sample statistics (GroupNorm, LayerNorm, InstanceNorm, FRN and its TLU);
- ``normlib.layers.evonorm``: EvoNorm-B0 and -S0, normalizer and activation in one layer;
- ``normlib.layers.reparam``: weight reparameterizations (WN, scaled WS, bounded WN) and the scaled ReLU;
- ``normlib.layers.registry``: the registry and the factories that build a registered name's layers.
"""

from normlib.layers._util import EPS as EPS
from normlib.layers.batch import (
    L1_CONSTANT,
    BatchNorm2d,
    L1BatchNorm2d,
    LinfBatchNorm2d,
    MeanBatchNorm2d,
    TopkBatchNorm2d,
    VarianceNorm2d,
    linf_constant,
)
from normlib.layers.evonorm import EvoNormB0, EvoNormS0
from normlib.layers.group import DEFAULT_GROUPS as DEFAULT_GROUPS
from normlib.layers.group import TLU, FilterResponseNorm2d, GroupNorm2d, InstanceNorm2d, LayerNorm2d, resolve_groups
from normlib.layers.registry import _REGISTRY as _REGISTRY
from normlib.layers.registry import (
    NORM_MATTERS_NAMES,
    NORM_NAMES,
    NormInfo,
    conv_norm_act,
    make_activation,
    make_conv,
    make_norm,
    norm_info,
    register_norm,
)
from normlib.layers.registry import _identity as _identity
from normlib.layers.registry import load_plugin as load_plugin
from normlib.layers.reparam import RELU_GAIN as RELU_GAIN
from normlib.layers.reparam import RELU_MEAN as RELU_MEAN
from normlib.layers.reparam import BWNConv2d, ScaledReLU, ScaledStdConv2d, WNConv2d
from normlib.layers.rms import RMSNorm2d as RMSNorm2d

# RMSNorm2d (registered as ``rms``) and load_plugin (bring your own layer, :mod:`normlib.layers.plugins`) are
# importable from here too, but __all__ stays the former module's list.
# EPS, DEFAULT_GROUPS, RELU_GAIN, RELU_MEAN, _REGISTRY and _identity are re-exported ("X as X") for code written
# against the former single module, but are not part of __all__.
__all__ = [
    # registry and factories
    "NORM_NAMES",
    "NORM_MATTERS_NAMES",
    "NormInfo",
    "norm_info",
    "register_norm",
    "make_norm",
    "make_conv",
    "make_activation",
    "conv_norm_act",
    # batch statistics
    "BatchNorm2d",
    "VarianceNorm2d",
    "L1BatchNorm2d",
    "LinfBatchNorm2d",
    "TopkBatchNorm2d",
    "MeanBatchNorm2d",
    "L1_CONSTANT",
    "linf_constant",
    # group statistics
    "GroupNorm2d",
    "LayerNorm2d",
    "InstanceNorm2d",
    "FilterResponseNorm2d",
    "TLU",
    "resolve_groups",
    # EvoNorms
    "EvoNormB0",
    "EvoNormS0",
    # weight reparameterizations
    "WNConv2d",
    "ScaledStdConv2d",
    "BWNConv2d",
    "ScaledReLU",
]
