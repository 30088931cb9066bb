"""Validation steps several notebooks share, written once: each takes the coerced configuration and raises
:class:`~normlib.params.ParameterError` naming the parameter and listing what is allowed."""

from __future__ import annotations

from typing import Any

from normlib import layers
from normlib.params import Follows, ParameterError
from normlib.runtime import resolve_device


def registered_norms(config: dict[str, Any], name: str) -> None:
    """Every entry of ``config[name]`` is in the layer registry (which holds normalizers a user registered too)."""
    for norm in config[name]:
        try:
            layers.norm_info(norm)
        except ValueError as error:
            raise ParameterError(f"parameter {name!r}: {error}") from None


def divisors_of_width(config: dict[str, Any], name: str = "group_sizes", width_name: str = "width") -> None:
    """Every entry of ``config[name]`` divides ``config[width_name]``, with no entry twice."""
    width, values = config[width_name], config[name]
    allowed = ", ".join(str(d) for d in range(1, width + 1) if width % d == 0)
    bad = [g for g in values if width % g]
    if bad:
        raise ParameterError(
            f"parameter {name!r}: {bad[0]} does not divide the {width_name} {width}; allowed: "
            f"divisors of the {width_name}: {allowed}"
        )
    if len(set(values)) != len(values):
        raise ParameterError(
            f"parameter {name!r}: duplicate entries in {values!r}; allowed: distinct divisors of "
            f"the {width_name}: {allowed}"
        )


def group_sizes_following_width(sizes: list[int], width: int, width_name: str = "width") -> Follows:
    """The preset's group sizes ``sizes`` (given at ``width`` channels) as a :class:`~normlib.params.Follows` of the
    width: at another width, the entries that divide it, plus the new width itself (LayerNorm's one group) when
    ``sizes`` holds the old one. At ``width`` itself they are ``sizes``."""

    def rule(values: Any) -> list[int]:
        new = values[width_name]
        kept = {g for g in sizes if new % g == 0}
        return sorted(kept | ({new} if width in sizes else set()))

    return Follows(list(sizes), rule, f"follows the {width_name}: the divisors among these, and the {width_name}")


def device_available(config: dict[str, Any]) -> None:
    """The ``device`` parameter names a device this machine has (``resolve_device`` says which are allowed)."""
    resolve_device(config["device"])


def normalizer_against_none(config: dict[str, Any], name: str = "norm") -> None:
    """``config[name]`` is a registered normalizer other than ``none`` (the network it is compared with)."""
    if config[name] == "none":
        allowed = ", ".join(n for n in layers.NORM_NAMES if n != "none")
        raise ParameterError(
            f"parameter {name!r}: invalid value 'none'; allowed: a normalizer to compare with the "
            f"network without one: {allowed} or one you registered"
        )
    registered_norms({name: [config[name]]}, name)


def resnet_depth(config: dict[str, Any]) -> None:
    """``config["depth"]`` is a CIFAR ResNet depth, 6n+2."""
    depth = config["depth"]
    if (depth - 2) % 6 != 0:
        raise ParameterError(
            f"parameter 'depth': invalid value {depth!r}; allowed: 6n+2 with n >= 1, e.g. 8, 20, 32, 44, 56, 110"
        )


def resnet_widths(config: dict[str, Any]) -> None:
    """``config["widths"]`` gives the three stage widths of a CIFAR ResNet."""
    if len(config["widths"]) != 3:
        raise ParameterError(
            f"parameter 'widths': invalid value {config['widths']!r}; allowed: three stage widths, "
            "e.g. [32, 64, 128] (the paper's ResNet-56)"
        )
