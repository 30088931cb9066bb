"""Parameters, presets and the one resolve-and-validate step every notebook and the command line go through.

A notebook's ``parameters`` cell holds ``preset = "book"`` and one variable per parameter, each ``None`` by
default, meaning "the preset's value". :meth:`ParamSpec.resolve` fills those in from the preset, coerces and
validates every value *before any compute*, and raises :class:`ParameterError` with a message that names the
parameter and lists what is allowed. A preset value may be a :class:`Follows`: computed from the other resolved
values (group sizes from the width), so changing one parameter keeps the preset's meaning for the other.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ParameterError", "Param", "ParamSpec", "Config", "Follows", "PRESETS", "parse_cli_value"]

#: The two scales every notebook offers: ``book`` runs on 2 CPU cores in seconds to minutes, ``paper`` is the
#: paper's own scale, meant for a GPU or a cluster.
PRESETS = ("book", "paper")

_KINDS = ("int", "float", "str", "bool", "int_list", "float_list", "str_list", "optional_int", "optional_float")


class ParameterError(ValueError):
    """A parameter is unknown or has a value that is not allowed; the message names it and lists what is."""


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its type, what values it allows, and what it means.

    ``kind`` is one of ``int, float, str, bool, int_list, float_list, str_list, optional_int, optional_float``;
    ``choices`` restricts a ``str`` (or each item of a ``str_list``); ``minimum``/``maximum`` bound numbers (or
    each item of a numeric list).
    """

    name: str
    kind: str
    doc: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Param {self.name!r}: kind must be one of {list(_KINDS)}, got {self.kind!r}")

    def allowed(self) -> str:
        """A short human description of the allowed values."""
        if self.choices is not None:
            what = ", ".join(map(str, self.choices))
            return f"a list of: {what}" if self.kind.endswith("list") else f"one of: {what}"
        base = {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "True or False",
            "int_list": "a list of integers",
            "float_list": "a list of numbers",
            "str_list": "a list of strings",
            "optional_int": "an integer or None",
            "optional_float": "a number or None",
        }[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum}")
        return base + (f" ({', '.join(bounds)})" if bounds else "")

    def _fail(self, value: Any, why: str = "") -> ParameterError:
        reason = f" ({why})" if why else ""
        return ParameterError(f"parameter {self.name!r}: invalid value {value!r}{reason}; allowed: {self.allowed()}")

    def _number(self, value: Any, integer: bool) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(value)
        if integer and (isinstance(value, float) and not value.is_integer()):
            raise self._fail(value)
        number = int(value) if integer else float(value)
        if self.minimum is not None and number < self.minimum:
            raise self._fail(value)
        if self.maximum is not None and number > self.maximum:
            raise self._fail(value)
        return number

    def _string(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self._fail(value)
        if self.choices is not None and value not in self.choices:
            raise self._fail(value, "unknown value")
        return value

    def coerce(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise :class:`ParameterError`."""
        kind = self.kind
        if kind.startswith("optional_"):
            return None if value is None else self._number(value, integer=kind == "optional_int")
        if kind in ("int", "float"):
            return self._number(value, integer=kind == "int")
        if kind == "str":
            return self._string(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise self._fail(value)
            return value
        # Lists: a comma-separated string ("bn,gn") is accepted for the command line's sake.
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or len(items) == 0:
            raise self._fail(value, "expected a non-empty list")
        if kind != "str_list":
            return [self._number(_literal(item), integer=kind == "int_list") for item in items]
        coerced = [self._string(item) for item in items]
        if len(set(coerced)) != len(coerced):
            raise self._fail(value, "duplicate entries")
        return coerced


def _literal(text: Any) -> Any:
    return parse_cli_value(text) if isinstance(text, str) else text


def parse_cli_value(text: str) -> Any:
    """Parse a value typed on the command line: a Python literal if it is one (``20``, ``0.1``, ``[1, 2]``,
    ``True``, ``None``), otherwise the string itself (``bn``, ``bn,gn``)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value  # "1,16" parses as a tuple: a list is meant


@dataclass(frozen=True)
class Follows:
    """A preset value that follows other parameters: ``rule(values)`` gives it from the resolved values of the
    parameters it does not depend on, unless the user sets it. ``value`` is what it is at the preset's own values,
    ``doc`` says how it follows (shown by ``normlib list``)."""

    value: Any
    rule: Callable[[Mapping[str, Any]], Any]
    doc: str

    def __repr__(self) -> str:
        return f"{self.value!r} ({self.doc})"


@dataclass(frozen=True)
class ParamSpec:
    """All parameters of one notebook, its presets, and the checks that involve several parameters at once.

    ``presets`` maps each name of :data:`PRESETS` to a complete set of values. Each entry of ``checks`` takes the
    coerced configuration and raises :class:`ParameterError` when a combination is not allowed.
    """

    params: tuple[Param, ...]
    presets: Mapping[str, Mapping[str, Any]]
    checks: tuple[Callable[[dict[str, Any]], None], ...] = field(default=())

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        for preset in PRESETS:
            if preset not in self.presets:
                raise ValueError(f"ParamSpec lacks the {preset!r} preset")
            missing = sorted(set(names) - set(self.presets[preset]))
            extra = sorted(set(self.presets[preset]) - set(names))
            if missing or extra:
                raise ValueError(f"preset {preset!r}: missing {missing}, unknown {extra}")
            values = self.presets[preset]
            for name, default in values.items():
                if isinstance(default, Follows) and default.rule(values) != default.value:
                    raise ValueError(
                        f"preset {preset!r}: {name} follows other parameters but its rule gives "
                        f"{default.rule(values)!r} at the preset's own values, not {default.value!r}"
                    )

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParameterError(f"unknown parameter {name!r}; allowed: {', '.join(['preset', *self.names])}")

    def resolve(self, preset: str = "book", **overrides: Any) -> Config:
        """The preset's values with every non-``None`` override applied, coerced and validated, as a read-only
        :class:`Config` that keeps this schema.

        Raises :class:`ParameterError` for an unknown preset, an unknown parameter name, or a value that is not
        allowed, before anything is computed.
        """
        if preset not in PRESETS:
            raise ParameterError(f"parameter 'preset': invalid value {preset!r}; allowed: one of: {', '.join(PRESETS)}")
        for name in overrides:
            self.param(name)
        config: dict[str, Any] = {"preset": preset}
        following = []
        for p in self.params:
            value = overrides.get(p.name)
            default = self.presets[preset][p.name]
            if value is None and isinstance(default, Follows):
                following.append((p, default))
                continue
            config[p.name] = p.coerce(default if value is None else value)
        for p, default in following:
            config[p.name] = p.coerce(default.rule(config))
        config = {"preset": preset, **{p.name: config[p.name] for p in self.params}}
        for check in self.checks:
            check(config)
        return Config(config, self)

    def describe(self) -> list[dict[str, Any]]:
        """One row per parameter (name, allowed values, book and paper defaults, meaning), for ``normlib list``."""
        return [
            {
                "name": p.name,
                "allowed": p.allowed(),
                "book": self.presets["book"][p.name],
                "paper": self.presets["paper"][p.name],
                "doc": p.doc,
            }
            for p in self.params
        ]


class Config(Mapping[str, Any]):
    """A resolved configuration: read-only, validated, and tied to the :class:`ParamSpec` that declared it.

    It is a mapping (``config["depth"]``, ``dict(config)``, ``{**config}``) with attribute access as well
    (``config.depth``); ``"preset"`` is always a key. Nothing can be assigned: :meth:`replace` returns a new
    configuration, resolved and validated again from the same preset with the given values changed, so a derived
    configuration passes the same checks as one typed by a user. A ``Config`` pickles (to sweep workers) as its
    values; the unpickled copy has no schema and :meth:`replace` then refuses.
    """

    __slots__ = ("_values", "_spec")

    def __init__(self, values: Mapping[str, Any], spec: ParamSpec | None = None) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_spec", spec)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(
                f"configuration has no parameter {name!r}; it has: {', '.join(self._values)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Config is read-only; use config.replace(name=value)")

    def __repr__(self) -> str:
        return f"Config({self._values!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._values) == dict(other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Config, (self._values,))

    @property
    def spec(self) -> ParamSpec | None:
        """The schema this configuration was resolved against (``None`` after a round trip through pickle)."""
        return self._spec

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy (lists copied too), e.g. for JSON."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._values.items()}

    def changed(self) -> dict[str, Any]:
        """The values that differ from what the preset resolves to on its own (empty without a schema)."""
        if self._spec is None:
            return {}
        preset = self._spec.resolve(self._values["preset"])
        return {k: v for k, v in self._values.items() if k != "preset" and preset[k] != v}

    def replace(self, **changes: Any) -> Config:
        """This configuration with ``changes`` applied, validated again through its :class:`ParamSpec`."""
        if self._spec is None:
            raise TypeError("this Config has no schema (it was unpickled or built by hand); resolve it again")
        values = {k: v for k, v in self._values.items() if k != "preset"}
        return self._spec.resolve(self._values["preset"], **{**values, **changes})
