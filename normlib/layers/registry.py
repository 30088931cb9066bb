"""The normalizer registry: a short name ("bn", "gn", "wn", ...) for each normalizer, the factories that build its
conv, norm and activation, and the builtin registrations.

:func:`register_norm` adds a normalizer; :func:`make_norm`, :func:`make_conv`, :func:`make_activation` and
:func:`conv_norm_act` build the layers of a registered name. Every builder takes torch's factory keyword arguments
``device`` and ``dtype``.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from normlib.layers._util import _check_positive_int
from normlib.layers.batch import (
    BatchNorm2d,
    L1BatchNorm2d,
    LinfBatchNorm2d,
    MeanBatchNorm2d,
    TopkBatchNorm2d,
    VarianceNorm2d,
)
from normlib.layers.evonorm import EvoNormB0, EvoNormS0
from normlib.layers.group import TLU, FilterResponseNorm2d, GroupNorm2d, InstanceNorm2d, LayerNorm2d
from normlib.layers.reparam import BWNConv2d, ScaledReLU, ScaledStdConv2d, WNConv2d
from normlib.layers.rms import RMSNorm2d

_FACTORY_KWARGS = ("device", "dtype")


@dataclass(frozen=True)
class NormInfo:
    """What the registry knows about a normalizer.

    Attributes:
        name: registry key, e.g. ``"gn"``
        title: display name for plots, e.g. ``"GroupNorm"``
        family: ``"none"``, ``"activation"`` (normalizes activations) or ``"parametric"``
            (normalizes weights)
        placement: ``"after_conv"`` (conv -> norm -> act), ``"replaces_activation"``
            (conv -> norm, the norm being nonlinear) or ``"in_conv"`` (normalized conv -> act)
    """

    name: str
    title: str
    family: str
    placement: str

    FAMILIES = ("none", "activation", "parametric")
    PLACEMENTS = ("after_conv", "replaces_activation", "in_conv")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.family not in self.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(self.FAMILIES)}; got {self.family!r}")
        if self.placement not in self.PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(self.PLACEMENTS)}; got {self.placement!r}")


@dataclass(frozen=True)
class _Entry:
    info: NormInfo
    norm_factory: Callable[..., nn.Module]
    conv_factory: Callable[..., nn.Conv2d]
    act_factory: Callable[..., nn.Module]
    options: tuple[str, ...] | None  # keyword options of norm_factory; None: it takes **kwargs


def _identity(num_channels: int, device=None, dtype=None) -> nn.Module:
    return nn.Identity()


def _relu(num_channels: int, device=None, dtype=None) -> nn.Module:
    return nn.ReLU()


def _scaled_relu(num_channels: int, device=None, dtype=None) -> nn.Module:
    return ScaledReLU()


def _plain_conv(in_channels, out_channels, kernel_size, stride, padding, device=None, dtype=None) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False, device=device, dtype=dtype)


def _bwn_conv(in_channels, out_channels, kernel_size, stride, padding, device=None, dtype=None) -> BWNConv2d:
    return BWNConv2d(in_channels, out_channels, kernel_size, stride, padding, device=device, dtype=dtype)


def _keyword_options(factory: Callable) -> tuple[str, ...] | None:
    """Names of the options ``factory(channels, **opts)`` accepts, or None if it takes ``**kwargs``.
    ``device`` and ``dtype`` are factory keyword arguments, not options."""
    params = list(inspect.signature(factory).parameters.values())[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _FACTORY_KWARGS
    )


def _takes_factory_kwargs(factory: Callable) -> bool:
    params = inspect.signature(factory).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params) or set(_FACTORY_KWARGS) <= {p.name for p in params}


def _build(factory: Callable[..., nn.Module], *args, device=None, dtype=None, **opts) -> nn.Module:
    """``factory(*args, **opts)`` created on ``device`` in ``dtype``; a factory that does not take these factory
    keyword arguments gets its module moved there with ``.to()``."""
    factory_kwargs = {name: value for name, value in (("device", device), ("dtype", dtype)) if value is not None}
    if not factory_kwargs or _takes_factory_kwargs(factory):
        return factory(*args, **opts, **factory_kwargs)
    return factory(*args, **opts).to(**factory_kwargs)


_REGISTRY: dict[str, _Entry] = {}


def register_norm(
    info: NormInfo,
    norm_factory: Callable[..., nn.Module],
    conv_factory: Callable[..., nn.Conv2d] | None = None,
    act_factory: Callable[..., nn.Module] | None = None,
) -> None:
    """Add a normalizer to the registry (registering an existing name replaces it).

    Args:
        info: its name, title, family and placement
        norm_factory: ``norm_factory(channels, **opts)`` builds the module in the norm slot;
            its keyword parameters are the options :func:`make_norm` accepts. With placement
            ``"replaces_activation"`` it must take ``apply_act`` (False: no nonlinearity).
        conv_factory: ``conv_factory(in_channels, out_channels, kernel_size, stride, padding)``;
            required for placement ``"in_conv"``. Default: ``nn.Conv2d`` without bias.
        act_factory: ``act_factory(channels)`` builds the activation. Default: ``nn.ReLU``,
            or ``nn.Identity`` for placement ``"replaces_activation"``.

    A factory that takes torch's factory keyword arguments ``device`` and ``dtype`` gets them
    from the builders; one that does not has its module moved with ``.to(device, dtype)``.
    """
    if not isinstance(info, NormInfo):
        raise TypeError(f"info must be a NormInfo, got {type(info).__name__}")
    options = _keyword_options(norm_factory)
    if info.placement == "in_conv" and conv_factory is None:
        raise ValueError(f"conv_factory is required for placement 'in_conv' (normalizer {info.name!r})")
    if info.placement == "replaces_activation" and options is not None and "apply_act" not in options:
        raise ValueError(f"norm_factory of {info.name!r} must accept apply_act for placement 'replaces_activation'")
    if act_factory is None:
        act_factory = _identity if info.placement == "replaces_activation" else _relu
    _REGISTRY[info.name] = _Entry(info, norm_factory, conv_factory or _plain_conv, act_factory, options)


#: The source digest each loaded plugin was registered with (see :mod:`normlib.layers.plugins`).
_PLUGIN_DIGESTS: dict[str, str] = {}


def load_plugin(spec: str) -> NormInfo:
    """Register the normalizer of a plugin spec (``module:Class`` or ``path/to/file.py:Class``) under the spec
    itself, after checking it (:func:`normlib.layers.plugins.load`); again when its source changed since. Raises
    :class:`~normlib.layers.plugins.PluginError` (a ``ValueError``) saying what is wrong and what is expected."""
    from normlib.layers import plugins

    digest = plugins.source_digest(spec)
    if _PLUGIN_DIGESTS.get(spec) != digest or spec not in _REGISTRY:
        layer, digest = plugins.load(spec)
        family = getattr(layer, "family", "activation")
        register_norm(NormInfo(spec, layer.__name__, family, "after_conv"), layer)
        _PLUGIN_DIGESTS[spec] = digest
    return _REGISTRY[spec].info


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY or name in _PLUGIN_DIGESTS:
        from normlib.layers import plugins

        if plugins.is_plugin_spec(name):
            load_plugin(name)
        else:
            raise ValueError(
                f"unknown normalizer name={name!r} (your own layer: 'module:Class' or 'path/to/file.py:Class'); "
                f"valid names: {', '.join(n for n in _REGISTRY if n not in _PLUGIN_DIGESTS)}"
            )
    return _REGISTRY[name]


def _check_options(entry: _Entry, opts: dict) -> None:
    if entry.options is None:
        return
    unknown = sorted(set(opts) - set(entry.options))
    if unknown:
        allowed = ", ".join(entry.options) or "(none)"
        raise ValueError(
            f"unknown option {', '.join(unknown)} for normalizer {entry.info.name!r}; allowed options: {allowed}"
        )


def norm_info(name: str) -> NormInfo:
    """The :class:`NormInfo` of a registered normalizer."""
    return _entry(name).info


def make_norm(name: str, channels: int, *, device=None, dtype=None, **opts) -> nn.Module:
    """The module in the norm slot of normalizer ``name`` for ``channels`` channels.

    ``nn.Identity`` for ``none``, ``wn`` and ``sws`` (they normalize inside the conv). The
    name, ``channels`` and every option are checked before anything is built; an unknown
    option raises ``ValueError`` listing the allowed ones. ``device`` and ``dtype`` say where
    and in which dtype its parameters and buffers are created, as for torch's modules.
    """
    entry = _entry(name)
    _check_positive_int("channels", channels)
    _check_options(entry, opts)
    return _build(entry.norm_factory, channels, device=device, dtype=dtype, **opts)


def make_conv(
    name: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
    *,
    device=None,
    dtype=None,
) -> nn.Conv2d:
    """The conv of normalizer ``name``: :class:`WNConv2d` / :class:`ScaledStdConv2d` (with
    bias) for ``wn`` / ``sws``, a plain ``nn.Conv2d`` without bias otherwise.
    ``padding=None`` means ``kernel_size // 2``. ``device`` and ``dtype`` as for torch's modules."""
    entry = _entry(name)
    _check_positive_int("in_channels", in_channels)
    _check_positive_int("out_channels", out_channels)
    padding = kernel_size // 2 if padding is None else padding
    return _build(
        entry.conv_factory,
        in_channels,
        out_channels,
        kernel_size,
        device=device,
        dtype=dtype,
        stride=stride,
        padding=padding,
    )


def make_activation(name: str, channels: int, *, device=None, dtype=None) -> nn.Module:
    """The activation paired with normalizer ``name``: ``nn.ReLU``, :class:`TLU` for
    ``frn``, :class:`ScaledReLU` for ``wn``, ``nn.Identity`` for the EvoNorms (they are
    their own activation). ``device`` and ``dtype`` as for torch's modules."""
    entry = _entry(name)
    _check_positive_int("channels", channels)
    return _build(entry.act_factory, channels, device=device, dtype=dtype)


def conv_norm_act(
    name: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    act: bool = True,
    *,
    device=None,
    dtype=None,
    **opts,
) -> nn.Sequential:
    """``conv -> norm -> act`` for normalizer ``name``, as ``nn.Sequential`` with children
    ``conv``, ``norm`` and (if ``act``) ``act``; slots a normalizer does not use hold
    ``nn.Identity``. ``opts`` go to :func:`make_norm`; ``device`` and ``dtype`` to every layer.

    ``act=False`` gives a block with no nonlinearity: ``conv -> norm`` (FRN without TLU,
    WN/SWS just the conv); a normalizer placed ``"replaces_activation"`` (the EvoNorms) is
    built with ``apply_act=False``.
    """
    entry = _entry(name)
    if "apply_act" in opts:
        raise ValueError("conv_norm_act sets apply_act from act; pass act=False instead of apply_act")
    if not act and entry.info.placement == "replaces_activation":
        opts = {**opts, "apply_act": False}
    factory_kwargs = {"device": device, "dtype": dtype}
    norm = make_norm(name, out_channels, **factory_kwargs, **opts)  # first: it validates opts before a conv is built
    layers = OrderedDict(
        conv=make_conv(name, in_channels, out_channels, kernel_size, stride, **factory_kwargs), norm=norm
    )
    if act:
        layers["act"] = make_activation(name, out_channels, **factory_kwargs)
    return nn.Sequential(layers)


_BUILTINS = (
    (NormInfo("none", "No norm", "none", "after_conv"), _identity, None, None),
    (NormInfo("bn", "BatchNorm", "activation", "after_conv"), BatchNorm2d, None, None),
    (NormInfo("ln", "LayerNorm", "activation", "after_conv"), LayerNorm2d, None, None),
    (NormInfo("in", "InstanceNorm", "activation", "after_conv"), InstanceNorm2d, None, None),
    (NormInfo("gn", "GroupNorm", "activation", "after_conv"), GroupNorm2d, None, None),
    (NormInfo("frn", "FilterResponseNorm", "activation", "after_conv"), FilterResponseNorm2d, None, TLU),
    (NormInfo("vn", "VarianceNorm", "activation", "after_conv"), VarianceNorm2d, None, None),
    (NormInfo("wn", "WeightNorm", "parametric", "in_conv"), _identity, WNConv2d, _scaled_relu),
    (NormInfo("sws", "ScaledWS", "parametric", "in_conv"), _identity, ScaledStdConv2d, None),
    (NormInfo("evo_b0", "EvoNorm-B0", "activation", "replaces_activation"), EvoNormB0, None, None),
    (NormInfo("evo_s0", "EvoNorm-S0", "activation", "replaces_activation"), EvoNormS0, None, None),
)
for _builtin in _BUILTINS:
    register_norm(*_builtin)
del _builtin

#: The normalizers of Lubana et al. (2021), in the paper's order.
NORM_NAMES: tuple[str, ...] = tuple(info.name for info, *_ in _BUILTINS)

_NORM_MATTERS = (
    (NormInfo("l1bn", "L1 BatchNorm", "activation", "after_conv"), L1BatchNorm2d, None, None),
    (NormInfo("linfbn", "L∞ BatchNorm", "activation", "after_conv"), LinfBatchNorm2d, None, None),
    (NormInfo("topkbn", "Top-k BatchNorm", "activation", "after_conv"), TopkBatchNorm2d, None, None),
    (NormInfo("bwn", "Bounded WN", "parametric", "in_conv"), MeanBatchNorm2d, _bwn_conv, None),
)
for _extra in _NORM_MATTERS:
    register_norm(*_extra)
del _extra

#: The normalizers of Hoffer et al. (2018), registered after the paper's :data:`NORM_NAMES`.
NORM_MATTERS_NAMES: tuple[str, ...] = tuple(info.name for info, *_ in _NORM_MATTERS)

#: RMSNorm (chapter 04 grades it against the paper's ten): LayerNorm's re-scaling without its re-centring.
register_norm(NormInfo("rms", "RMSNorm", "activation", "after_conv"), RMSNorm2d)
