"""normlib.cache: keys, hits and misses, damaged entries, atomic writes, where entries go."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from normlib import cache

CALLS: list[dict] = []


def add(a, b=0):
    CALLS.append({"a": a, "b": b})
    return {"sum": a + b}


def other(a, b=0):
    return a + b


@pytest.fixture
def root(tmp_path):
    CALLS.clear()
    return tmp_path / "cache"


def entry(root: Path, config: dict, fn=add) -> Path:
    return cache.entry_path(cache.cache_key(fn, config), root)


def test_hit_does_not_call_again(root):
    assert cache.cached_call(add, {"a": 1, "b": 2}, root=root) == {"sum": 3}
    assert cache.cached_call(add, {"b": 2, "a": 1}, root=root) == {"sum": 3}
    assert len(CALLS) == 1
    assert cache.lookup(add, {"a": 1, "b": 2}, root=root) == (True, {"sum": 3})


def test_miss_on_new_config(root):
    cache.cached_call(add, {"a": 1, "b": 2}, root=root)
    assert cache.cached_call(add, {"a": 1, "b": 3}, root=root) == {"sum": 4}
    assert len(CALLS) == 2
    assert cache.lookup(add, {"a": 9}, root=root) == (False, None)


def test_entry_layout(root):
    cache.cached_call(add, {"a": 1}, root=root)
    key = cache.cache_key(add, {"a": 1})
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    path = root / key[:2] / f"{key}.pkl"
    assert path.is_file() and path == entry(root, {"a": 1})
    blob = path.read_bytes()
    assert blob.startswith(cache.MAGIC + key.encode())
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [key[:2], f"{key[:2]}/{key}.pkl"]


def test_key_is_canonical():
    key = cache.cache_key(add, {"a": (1, 2.5), "b": {"y": None, "x": True}})
    assert key == cache.cache_key(add, {"b": {"x": True, "y": None}, "a": [1, 2.5]})
    assert key == cache.cache_key(add, {"a": (np.int64(1), np.float64(2.5)), "b": {"y": None, "x": True}})
    assert cache.cache_key(add, {"a": 1}) != cache.cache_key(add, {"a": 1.0})
    assert cache.cache_key(add, {"a": 0.1}) != cache.cache_key(add, {"a": float(np.nextafter(0.1, 1))})
    assert cache.cache_key(add, {"a": 1}) != cache.cache_key(other, {"a": 1})


@pytest.mark.parametrize("damage", ["flip", "truncate", "header", "magic", "empty", "unpicklable"])
def test_damaged_entry_is_recomputed(root, caplog, damage):
    cache.cached_call(add, {"a": 1}, root=root)
    path = entry(root, {"a": 1})
    blob = path.read_bytes()
    key = cache.cache_key(add, {"a": 1})
    damaged = {
        "flip": blob[:-3] + bytes([blob[-3] ^ 0x01]) + blob[-2:],
        "truncate": blob[: len(blob) - 5],
        "header": blob[:20],
        "magic": b"XXXXXXXX" + blob[8:],
        "empty": b"",
        # a checksum that matches, over bytes that are not a pickle
        "unpicklable": cache.MAGIC + key.encode() + hashlib.sha256(b"junk").digest() + b"junk",
    }[damage]
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="normlib.cache"):
        assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1}
    assert len(CALLS) == 2
    assert any(str(path) in r.getMessage() and "recomputing" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == blob  # rewritten, valid again
    assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1} and len(CALLS) == 2


def test_entry_under_another_key_is_not_trusted(root, caplog):
    cache.cached_call(add, {"a": 1}, root=root)
    cache.cached_call(add, {"a": 2}, root=root)
    entry(root, {"a": 1}).write_bytes(entry(root, {"a": 2}).read_bytes())
    with caplog.at_level(logging.WARNING, logger="normlib.cache"):
        assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1}
    assert "another key" in caplog.text


def test_code_change_invalidates(root, monkeypatch):
    cache.cached_call(add, {"a": 1}, root=root)
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "0" * 64)
    cache.cached_call(add, {"a": 1}, root=root)
    assert len(CALLS) == 2


def test_torch_version_is_in_the_key(monkeypatch):
    key = cache.cache_key(add, {"a": 1})
    monkeypatch.setattr(cache.torch, "__version__", "0.0.0")
    assert cache.cache_key(add, {"a": 1}) != key


def test_code_fingerprint():
    fingerprint = cache.code_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint) and cache.code_fingerprint() == fingerprint
    assert cache.code_fingerprint.cache_info().hits >= 1


def test_refresh_recomputes_and_overwrites(root, monkeypatch):
    cache.cached_call(add, {"a": 1}, root=root)
    monkeypatch.setattr(cache.pickle, "HIGHEST_PROTOCOL", 2)  # the rewritten entry differs from the first
    first = entry(root, {"a": 1}).read_bytes()
    assert cache.cached_call(add, {"a": 1}, root=root, refresh=True) == {"sum": 1}
    assert len(CALLS) == 2 and entry(root, {"a": 1}).read_bytes() != first
    assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1} and len(CALLS) == 2


def test_writes_leave_no_temporary_files(root, monkeypatch):
    for a in range(5):
        cache.cached_call(add, {"a": a}, root=root)
    cache.cached_call(add, {"a": 0}, root=root, refresh=True)
    assert all(p.suffix == ".pkl" and not p.name.startswith(".") for p in root.rglob("*") if p.is_file())

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(cache.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        cache.cached_call(add, {"a": 99}, root=root)
    assert not entry(root, {"a": 99}).exists()
    assert len([p for p in root.rglob("*") if p.is_file()]) == 5


def test_unpicklable_result_is_an_error_and_leaves_nothing(root):
    with pytest.raises(Exception, match="pickle"):
        cache.cached_call(_returns_a_lambda, {}, root=root)
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def _returns_a_lambda():
    return lambda: None


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_root() == tmp_path / "elsewhere"
    CALLS.clear()
    cache.cached_call(add, {"a": 5})
    assert entry(tmp_path / "elsewhere", {"a": 5}).is_file()
    monkeypatch.delenv("NORMLIB_CACHE")
    monkeypatch.chdir(tmp_path)
    assert cache.cache_root() == Path(os.getcwd()) / "runs" / "cache"
    assert cache.entry_path("ab" + "0" * 62) == tmp_path / "runs" / "cache" / "ab" / ("ab" + "0" * 62 + ".pkl")


@pytest.mark.parametrize("config,where", [
    ({"x": object()}, r"config\['x'\]"),
    ({"opts": {"path": Path("a")}}, r"config\['opts'\]\['path'\].*PosixPath|WindowsPath"),
    ({"xs": [1, {2, 3}]}, r"config\['xs'\]\[1\].*set"),
    ({"opts": {1: 2}}, r"config\['opts'\]\[1\].*not a string"),
])
def test_non_json_config_is_refused(config, where):
    with pytest.raises(TypeError, match=where):
        cache.cache_key(add, config)


def test_lambdas_and_local_functions_are_refused():
    def local(a):
        return a

    for fn in (lambda a: a, local):
        with pytest.raises(TypeError, match="module level"):
            cache.cache_key(fn, {"a": 1})
