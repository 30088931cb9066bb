"""Bring your own normalizer: a layer named ``module:Class`` or ``path/to/file.py:Class`` instead of a registered name.

Anywhere normlib takes a normalizer's name (``make_norm``, ``make_cnn``, an experiment's ``norm`` parameter, a
sweep's worker process), such a *plugin spec* is loaded on first use, checked, and registered under the spec
itself, so that every process that sees the string builds the same layer:

* ``module:Class``: ``Class`` of an importable module (``mypackage.norms:MyNorm``);
* ``path/to/file.py:Class``: ``Class`` of a Python file (a relative path is taken from the current folder; the
  command line makes it absolute before a notebook runs elsewhere).

The class must be an ``nn.Module`` built as ``Class(num_channels)`` (``device`` and ``dtype`` keyword arguments
are used when it takes them); it sits where BatchNorm sits, ``conv -> norm -> ReLU``, and must return a tensor of
its input's shape. A class attribute ``family = "parametric"`` says it normalizes weights (default
``"activation"``). :func:`load` checks all of this on one small batch before anything else is computed, and
raises :class:`PluginError` saying what is wrong and what is expected.

:func:`source_digest` is the sha256 of the file that defines the class: :mod:`normlib.cache` puts it in the key of
every result computed with the plugin, so an edited layer is recomputed, never served stale. (Only that file is
hashed; a change in a module it imports is not seen.)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import torch
from torch import nn

__all__ = ["PluginError", "is_plugin_spec", "source_path", "source_digest", "load", "absolute_spec"]

#: ``module:Class`` or ``file.py:Class``: the class part is a Python identifier, the module part dotted identifiers.
_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_]\w*$")
_FILE_SPEC = re.compile(r"^[^,]+\.py:[A-Za-z_]\w*$")
#: The smoke test's batch: (N, C, H, W).
SMOKE_SHAPE = (4, 8, 6, 6)
EXPECTED = (
    "expected 'module:Class' or 'path/to/file.py:Class' naming an nn.Module subclass built as Class(num_channels) "
    "that returns a tensor of its input's shape"
)


class PluginError(ValueError):
    """A plugin spec that cannot be used: the message says what is wrong and what is expected."""


def is_plugin_spec(name: object) -> bool:
    """Whether ``name`` has the form of a plugin spec (``module:Class`` or ``file.py:Class``)."""
    return isinstance(name, str) and bool(_FILE_SPEC.match(name) or _MODULE_SPEC.match(name))


def _split(spec: str) -> tuple[str, str]:
    if not is_plugin_spec(spec):
        raise PluginError(f"{spec!r} is not a plugin spec; {EXPECTED}")
    where, _, cls = spec.rpartition(":")
    return where, cls


def _is_file(where: str) -> bool:
    return where.endswith(".py")


def absolute_spec(spec: str) -> str:
    """A file spec with its path made absolute (from the current folder); any other string unchanged."""
    if not is_plugin_spec(spec):
        return spec
    where, cls = _split(spec)
    if not _is_file(where):
        return spec
    return f"{Path(where).expanduser().absolute()}:{cls}"


def source_path(spec: str) -> Path:
    """The file that defines the plugin's module, without running it (a package's parents are imported)."""
    where, _ = _split(spec)
    if _is_file(where):
        path = Path(where).expanduser()
        if not path.is_file():
            raise PluginError(f"{spec!r}: no file {path.absolute()}; {EXPECTED}")
        return path.absolute()
    try:
        found = importlib.util.find_spec(where)
    except (ImportError, ValueError) as error:
        raise PluginError(f"{spec!r}: cannot import module {where!r} ({error}); {EXPECTED}") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise PluginError(f"{spec!r}: no importable module {where!r} with a source file; {EXPECTED}")
    return Path(found.origin)


def source_digest(spec: str) -> str:
    """sha256 of the bytes of the file defining the plugin (what the result cache keys on)."""
    return hashlib.sha256(source_path(spec).read_bytes()).hexdigest()


def _import_class(spec: str, digest: str) -> type:
    where, cls = _split(spec)
    path = source_path(spec)
    if _is_file(where):
        name = f"normlib_plugin_{digest[:16]}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module  # so that dataclasses, pickling and tracebacks find it
            try:
                loader_spec.loader.exec_module(module)
            except Exception as error:
                del sys.modules[name]
                raise PluginError(f"{spec!r}: running {path} raised {error!r}; {EXPECTED}") from error
    else:
        try:
            module = importlib.import_module(where)
            module = importlib.reload(module) if getattr(module, "__normlib_digest__", digest) != digest else module
            module.__normlib_digest__ = digest
        except Exception as error:
            raise PluginError(f"{spec!r}: importing {where!r} raised {error!r}; {EXPECTED}") from error
    if not hasattr(module, cls):
        public = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_"))
        raise PluginError(f"{spec!r}: {path} defines no {cls!r} (its classes: {', '.join(public) or 'none'})")
    return getattr(module, cls)


def _check_class(spec: str, layer: object) -> None:
    if not (isinstance(layer, type) and issubclass(layer, nn.Module)):
        kind = type(layer).__name__ if not isinstance(layer, type) else f"class {layer.__name__}"
        raise PluginError(f"{spec!r} is a {kind}, not an nn.Module subclass; {EXPECTED}")
    try:
        inspect.signature(layer).bind(8)
    except TypeError as error:
        raise PluginError(
            f"{spec!r}: {layer.__name__}{inspect.signature(layer)} cannot be called as {layer.__name__}(num_channels) "
            f"({error}); {EXPECTED}"
        ) from None
    family = getattr(layer, "family", "activation")
    if family not in ("activation", "parametric"):
        raise PluginError(f"{spec!r}: class attribute family={family!r}; allowed: 'activation' or 'parametric'")


def smoke_test(spec: str, layer: type) -> None:
    """Build ``layer(8)`` and run it, in training mode, forward and backward on one small Gaussian batch: it must
    return a finite tensor of the input's shape."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SMOKE_SHAPE, generator=generator, requires_grad=True)
    try:
        module = layer(SMOKE_SHAPE[1])
        module.train()
        y = module(x)
    except Exception as error:
        raise PluginError(
            f"{spec!r}: {layer.__name__}({SMOKE_SHAPE[1]}) on a batch {SMOKE_SHAPE} raised {error!r}"
        ) from error
    if not isinstance(y, torch.Tensor):
        raise PluginError(f"{spec!r}: forward returned a {type(y).__name__}, not a tensor; {EXPECTED}")
    if tuple(y.shape) != SMOKE_SHAPE:
        raise PluginError(
            f"{spec!r}: {layer.__name__} changes the tensor's shape from {SMOKE_SHAPE} to {tuple(y.shape)} in a "
            f"one-batch smoke test; a normalizer must return a tensor of its input's shape"
        )
    if not torch.isfinite(y).all():
        raise PluginError(f"{spec!r}: {layer.__name__} returned non-finite values on a standard Gaussian batch")


def load(spec: str) -> tuple[type, str]:
    """Import, check and smoke-test the plugin: ``(its class, the digest of its source)``."""
    digest = source_digest(spec)
    layer = _import_class(spec, digest)
    _check_class(spec, layer)
    smoke_test(spec, layer)
    return layer, digest
