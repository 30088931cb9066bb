"""A result cache keyed by content: (function, resolved config, normlib's code, torch version).

``cached_call(fn, config)`` returns ``fn(**config)``, computed once: the result is stored in
``<root>/<key[:2]>/<key>.entry``, where ``key`` is :func:`cache_key`. Any change to the config, to any ``.py`` file
of normlib, or to the torch version gives a new key, so a stale result is never returned. A normalizer of the
reader's own given in the config as ``module:Class`` or ``file.py:Class`` (:mod:`normlib.layers.plugins`) puts the
sha256 of its source file in the key too: an edited layer is recomputed. Code *outside* normlib
(a test helper, a notebook's own function) is identified by its qualified name only: pass ``refresh=True`` after
changing it. A caller that computes with arguments outside the key (an executor) uses :func:`lookup`, then
:func:`store`.

An entry is one file: an 8-byte magic (``NLCACHE2``), the 64-character key, the sha256 of the payload, then the
payload: an ``.npz`` archive of :mod:`normlib.serialize` (a JSON manifest and one ``.npy`` array per numeric leaf),
read with ``np.load(allow_pickle=False)`` and ``json`` only. Reading an entry runs no code whatever the file holds, so
a cache folder shared with others (a Dask or Slurm sweep) cannot be used to run code in whoever reads it; someone who
can write to it can still plant wrong *values* (the checksum detects damage, it is not a signature). Entries of the
old pickle format (``<key>.pkl``) are never opened.

What can be stored is what :mod:`normlib.serialize` round-trips exactly: None, bool, int, float, str, containers of
them, numpy arrays and scalars, pandas DataFrames/Series/indexes, registered dataclasses (such as
:class:`~normlib.train.TrainResult`). A result of another type is still returned by :func:`cached_call`, with a
logged warning that names the type; it is not stored. :func:`store` does the same, or raises the TypeError with
``strict=True``.

An entry is written to a temporary file in the same folder, fsynced and moved into place with ``os.replace``, so a
reader (or a killed writer) never sees half an entry. An entry that fails any check (magic, key, checksum, decoding)
is logged as a warning and recomputed, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import numbers
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from normlib import serialize

__all__ = [
    "cache_root",
    "code_fingerprint",
    "plugin_sources",
    "cache_key",
    "cached_call",
    "lookup",
    "store",
    "entry_path",
]

log = logging.getLogger(__name__)

MAGIC = b"NLCACHE2"  # NLCACHE1 was the pickle format, never read
SUFFIX = ".entry"
_DIGEST = 32  # bytes of a sha256
_HEADER = len(MAGIC) + 64 + _DIGEST


def cache_root() -> Path:
    """``$NORMLIB_CACHE`` if set, else ``runs/cache`` under the current working directory (absolute)."""
    root = os.environ.get("NORMLIB_CACHE")
    return Path(root).expanduser().absolute() if root else Path.cwd() / "runs" / "cache"


@functools.cache
def code_fingerprint() -> str:
    """sha256 over every ``.py`` file of the installed normlib package (relative path and bytes, sorted by path).

    Computed once per process: a process sees the code it imported.
    """
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py"), key=lambda p: p.relative_to(package).as_posix()):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname``; a lambda or a local function is refused, as its name does not identify its code."""
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None or not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"cannot cache {fn.__module__}.{qualname}: a lambda or a function defined inside another "
            f"one is not identified by its name; define it at module level"
        )
    return f"{fn.__module__}.{qualname}"


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (tuples as lists, numpy scalars as numbers), or a TypeError naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):  # a dict, or a read-only mapping such as normlib.params.Config
        for k in value:
            if not isinstance(k, str):
                raise TypeError(f"config key {where}[{k!r}] is not a string; config keys must be strings")
        return {k: _canonical(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"config value {where} has type {type(value).__name__}, which is not JSON-serializable; "
        f"use str, int, float, bool, None, or lists/dicts of them"
    )


def _strings(value: Any) -> list[str]:
    """Every string in a canonical config (values only), depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def plugin_sources(config: Any) -> dict[str, str]:
    """``{spec: sha256 of its source file}`` for every string of ``config`` that names a normalizer of the reader's
    own (``module:Class``, ``file.py:Class``) and can be found; a string of that form that names no file is left
    out (nothing can be computed with it, so nothing stale can be served)."""
    from normlib.layers import plugins  # lazily: the cache does not need torch's layers otherwise

    sources = {}
    for text in _strings(config):
        if plugins.is_plugin_spec(text) and text not in sources:
            try:
                sources[text] = plugins.source_digest(text)
            except plugins.PluginError:
                continue
    return sources


def cache_key(fn: Callable[..., Any], config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``{fn: module.qualname, config, code: code_fingerprint(), torch: version}``,
    plus ``plugins`` (:func:`plugin_sources`) when the config names a normalizer of the reader's own.

    Canonical: sorted keys, no whitespace, tuples as lists, floats in Python's shortest exact ``repr``. A value
    that is not JSON-serializable raises a TypeError naming its key.
    """
    canonical = _canonical(config, "config")
    record = {
        "fn": _function_name(fn),
        "config": canonical,
        "code": code_fingerprint(),
        "torch": torch.__version__,
    }
    sources = plugin_sources(canonical)
    if sources:  # only then: the keys of configs without a plugin are what they were
        record["plugins"] = sources
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def entry_path(key: str, root: str | os.PathLike | None = None) -> Path:
    """The file of entry ``key``: ``<root>/<key[:2]>/<key>.entry`` (``root`` defaults to :func:`cache_root`)."""
    return Path(root if root is not None else cache_root()) / key[:2] / f"{key}{SUFFIX}"


def lookup(
    fn: Callable[..., Any], config: Mapping[str, Any], root: str | os.PathLike | None = None
) -> tuple[bool, Any]:
    """``(True, result)`` if a valid entry for ``fn(**config)`` exists, else ``(False, None)``; computes nothing.

    An entry that is damaged, truncated, of another key or not in this format is logged and reported as a miss.
    """
    key = cache_key(fn, config)
    return _read(entry_path(key, root), key)


def store(
    fn: Callable[..., Any],
    config: Mapping[str, Any],
    result: Any,
    root: str | os.PathLike | None = None,
    *,
    strict: bool = False,
) -> bool:
    """Store ``result`` as the entry of ``fn(**config)`` (atomically, replacing any entry); ``True`` if stored.

    For a caller that computed ``result`` itself, e.g. with an executor that is not part of the key: ``lookup``,
    compute on a miss, ``store``. A result :mod:`normlib.serialize` cannot store is not stored: a warning that
    names its type and what is allowed is logged and ``False`` returned, or, with ``strict=True``, the
    :class:`TypeError` is raised. Nothing is written then. Errors of the file system (``OSError``) are raised.
    """
    return _store(fn, cache_key(fn, config), result, root, strict)


def _store(fn: Callable[..., Any], key: str, result: Any, root: str | os.PathLike | None, strict: bool) -> bool:
    try:
        payload = serialize.dumps(result)
    except TypeError as err:
        if strict:
            raise
        log.warning("result of %s is not cached: %s", _function_name(fn), err)
        return False
    _write(entry_path(key, root), key, payload)
    return True


def cached_call(
    fn: Callable[..., Any], config: Mapping[str, Any], *, root: str | os.PathLike | None = None, refresh: bool = False
) -> Any:
    """``fn(**config)``, from the cache when a valid entry exists, else computed and stored.

    ``root`` defaults to :func:`cache_root`; ``refresh=True`` recomputes and overwrites the entry. A result that
    cannot be stored (see :func:`store`) is returned all the same, with a logged warning.
    """
    key = cache_key(fn, config)
    if not refresh:
        hit, result = _read(entry_path(key, root), key)
        if hit:
            return result
    result = fn(**config)
    _store(fn, key, result, root, strict=False)  # the key of the config as it was before the call
    return result


def _read(path: Path, key: str) -> tuple[bool, Any]:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return False, None
    payload = blob[_HEADER:]
    if len(blob) < _HEADER:
        problem = f"truncated: {len(blob)} bytes"
    elif blob[: len(MAGIC)] != MAGIC:
        problem = "bad magic"
    elif blob[len(MAGIC) : len(MAGIC) + 64] != key.encode():
        problem = "it holds another key"
    elif blob[len(MAGIC) + 64 : _HEADER] != hashlib.sha256(payload).digest():
        problem = "checksum mismatch (damaged or truncated)"
    else:
        try:
            return True, serialize.loads(payload)  # data only: np.load(allow_pickle=False) and JSON
        except Exception as err:  # passed its checksum, yet not an archive of this format (planted, or a bug)
            problem = f"cannot decode: {err}"
    log.warning("cache entry %s is unusable (%s); recomputing it", path, problem)
    return False, None


def _write(path: Path, key: str, payload: bytes) -> None:
    blob = MAGIC + key.encode() + hashlib.sha256(payload).digest() + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
