"""normlib.cache and normlib.serialize: keys, hits and misses, damaged and planted entries, atomic writes, where
entries go, and exact round trips of every type the experiments cache."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import re
import struct
import sys
import zipfile
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest

from normlib import cache, serialize
from normlib.train import TrainConfig, TrainResult

CALLS: list[dict] = []


def add(a, b=0):
    CALLS.append({"a": a, "b": b})
    return {"sum": a + b}


def other(a, b=0):
    return a + b


def counted(a):
    CALLS.append({"a": a})
    return len(CALLS)


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


def test_lookup_then_store(root):
    """What a caller does that computes with arguments outside the key (an executor)."""
    assert cache.lookup(add, {"a": 4}, root) == (False, None)
    assert cache.store(add, {"a": 4}, {"sum": 4, "by": "me"}, root) is True
    assert cache.lookup(add, {"a": 4}, root) == (True, {"sum": 4, "by": "me"})
    assert cache.cached_call(add, {"a": 4}, root=root) == {"sum": 4, "by": "me"} and not CALLS


def test_a_read_only_mapping_is_keyed_like_its_dict(root):
    assert cache.cache_key(add, {"a": MappingProxyType({"x": 1})}) == cache.cache_key(add, {"a": {"x": 1}})
    cache.store(add, MappingProxyType({"a": 2}), {"sum": 2}, root)
    assert cache.lookup(add, {"a": 2}, root) == (True, {"sum": 2})


def test_entry_layout(root):
    cache.cached_call(add, {"a": 1}, root=root)
    key = cache.cache_key(add, {"a": 1})
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    path = root / key[:2] / f"{key}.entry"
    assert path.is_file() and path == entry(root, {"a": 1})
    blob = path.read_bytes()
    header = len(cache.MAGIC) + 64 + 32
    assert blob.startswith(b"NLCACHE2" + key.encode()) and blob[72:header] == hashlib.sha256(blob[header:]).digest()
    with zipfile.ZipFile(io.BytesIO(blob[header:])) as archive:  # the payload is a plain .npz
        assert archive.namelist() == ["manifest.npy"]
    with np.load(io.BytesIO(blob[header:]), allow_pickle=False) as archive:
        manifest = json.loads(archive["manifest"].tobytes())
    assert manifest == {
        "format": "normlib-serialize",
        "version": 1,
        "root": {"t": "dict", "s": {"sum": {"t": "int", "v": 1}}},
    }
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [key[:2], f"{key[:2]}/{key}.entry"]


def test_key_is_canonical():
    key = cache.cache_key(add, {"a": (1, 2.5), "b": {"y": None, "x": True}})
    assert key == cache.cache_key(add, {"b": {"x": True, "y": None}, "a": [1, 2.5]})
    assert key == cache.cache_key(add, {"a": (np.int64(1), np.float64(2.5)), "b": {"y": None, "x": True}})
    assert cache.cache_key(add, {"a": 1}) != cache.cache_key(add, {"a": 1.0})
    assert cache.cache_key(add, {"a": 0.1}) != cache.cache_key(add, {"a": float(np.nextafter(0.1, 1))})
    assert cache.cache_key(add, {"a": 1}) != cache.cache_key(other, {"a": 1})


def _old_entry(key: str, payload: bytes) -> bytes:
    """An entry of the old pickle format: magic NLCACHE1, key, sha256, pickle."""
    return b"NLCACHE1" + key.encode() + hashlib.sha256(payload).digest() + payload


def _entry(key: str, payload: bytes) -> bytes:
    """An entry of this format around any payload, with a checksum that matches."""
    return cache.MAGIC + key.encode() + hashlib.sha256(payload).digest() + payload


@pytest.mark.parametrize(
    "damage", ["flip", "truncate", "header", "magic", "empty", "undecodable", "old_format", "foreign_npz"]
)
def test_damaged_entry_is_recomputed(root, caplog, damage):
    cache.cached_call(add, {"a": 1}, root=root)
    path = entry(root, {"a": 1})
    blob = path.read_bytes()
    key = cache.cache_key(add, {"a": 1})
    buffer = io.BytesIO()
    np.savez(buffer, manifest=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    damaged = {
        "flip": blob[:-3] + bytes([blob[-3] ^ 0x01]) + blob[-2:],
        "truncate": blob[: len(blob) - 5],
        "header": blob[:20],
        "magic": b"XXXXXXXX" + blob[8:],
        "empty": b"",
        "undecodable": _entry(key, b"junk"),  # a checksum that matches, over bytes that are not an archive
        "old_format": _old_entry(key, pickle.dumps({"sum": 1})),  # even a benign pickle is not read
        "foreign_npz": _entry(key, buffer.getvalue()),
    }[damage]
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="normlib.cache"):
        assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1}
    assert len(CALLS) == 2
    assert any(str(path) in r.getMessage() and "recomputing" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == blob  # rewritten, valid again (the same value gives the same bytes)
    assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1} and len(CALLS) == 2


def test_entry_under_another_key_is_not_trusted(root, caplog):
    cache.cached_call(add, {"a": 1}, root=root)
    cache.cached_call(add, {"a": 2}, root=root)
    entry(root, {"a": 1}).write_bytes(entry(root, {"a": 2}).read_bytes())
    with caplog.at_level(logging.WARNING, logger="normlib.cache"):
        assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1}
    assert "another key" in caplog.text


# -- planted entries: reading a shared cache folder must not run anyone's code ------------------------------------


def _touch(path: str) -> None:
    Path(path).write_text("code ran")


class _Plant:
    """Runs ``_touch(marker)`` when unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _npz_with_object_array(marker: Path, manifest_too: bool) -> bytes:
    """An .npz whose ``a0`` (and maybe its manifest) is an object array holding a pickle that runs code."""
    evil = np.empty(1, dtype=object)
    evil[0] = _Plant(marker)
    manifest = json.dumps({"format": "normlib-serialize", "version": 1, "root": {"t": "ndarray", "a": "a0"}})
    buffer = io.BytesIO()
    np.savez(buffer, manifest=evil if manifest_too else np.frombuffer(manifest.encode(), dtype=np.uint8), a0=evil)
    return buffer.getvalue()


@pytest.mark.parametrize("plant", ["old_pickle_entry", "npz_object_array", "npz_object_manifest", "bare_pickle"])
def test_planted_entry_runs_no_code_and_is_recomputed(root, tmp_path, caplog, plant):
    marker = tmp_path / "marker"
    key = cache.cache_key(add, {"a": 3})
    payload = (
        pickle.dumps(_Plant(marker))
        if plant in ("old_pickle_entry", "bare_pickle")
        else _npz_with_object_array(marker, manifest_too=plant == "npz_object_manifest")
    )
    # the plant is real: read the old way (pickle.loads, np.load with pickles allowed) it runs its code
    if plant in ("old_pickle_entry", "bare_pickle"):
        pickle.loads(payload)
    else:
        with np.load(io.BytesIO(payload), allow_pickle=True) as archive:
            archive["manifest" if plant == "npz_object_manifest" else "a0"]
    assert marker.read_text() == "code ran"
    marker.unlink()

    blob = {"old_pickle_entry": _old_entry(key, payload), "bare_pickle": payload}.get(plant, _entry(key, payload))
    path = cache.entry_path(key, root)
    path.parent.mkdir(parents=True)
    path.write_bytes(blob)  # where the cache reads, with a checksum that matches for the format's own header
    path.with_suffix(".pkl").write_bytes(_old_entry(key, pickle.dumps(_Plant(marker))))  # and at the old path
    with caplog.at_level(logging.WARNING, logger="normlib.cache"):
        assert cache.lookup(add, {"a": 3}, root) == (False, None)
        assert cache.cached_call(add, {"a": 3}, root=root) == {"sum": 3}
    assert not marker.exists()
    assert len(CALLS) == 1 and "recomputing" in caplog.text
    assert cache.lookup(add, {"a": 3}, root) == (True, {"sum": 3}) and not marker.exists()


def test_reading_never_unpickles(root, monkeypatch):
    cache.cached_call(add, {"a": 1}, root=root)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used on the read path")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    assert cache.lookup(add, {"a": 1}, root) == (True, {"sum": 1})


def test_a_manifest_cannot_name_a_class_to_build_or_import(root):
    key = cache.cache_key(add, {"a": 5})
    for name in ("os.system", "tests_planted_module.Evil", "normlib.train.train"):
        manifest = {"format": "normlib-serialize", "version": 1, "root": {"t": "dataclass", "cls": name, "s": {}}}
        buffer = io.BytesIO()
        np.savez(buffer, manifest=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8))
        with pytest.raises(serialize.DecodeError, match="not registered"):
            serialize.loads(buffer.getvalue())
        cache.entry_path(key, root).parent.mkdir(parents=True, exist_ok=True)
        cache.entry_path(key, root).write_bytes(_entry(key, buffer.getvalue()))
        assert cache.lookup(add, {"a": 5}, root) == (False, None)
    assert "tests_planted_module" not in sys.modules


def test_old_pickle_entries_are_ignored(root):
    key = cache.cache_key(add, {"a": 1})
    old = root / key[:2] / f"{key}.pkl"
    old.parent.mkdir(parents=True)
    old.write_bytes(_old_entry(key, pickle.dumps({"sum": 999})))
    assert cache.cached_call(add, {"a": 1}, root=root) == {"sum": 1} and len(CALLS) == 1
    assert old.read_bytes() == _old_entry(key, pickle.dumps({"sum": 999}))  # left alone


# -- invalidation, refresh, atomic writes -------------------------------------------------------------------------


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


def test_refresh_recomputes_and_overwrites(root):
    assert cache.cached_call(counted, {"a": 1}, root=root) == 1
    assert cache.cached_call(counted, {"a": 1}, root=root, refresh=True) == 2
    assert cache.cached_call(counted, {"a": 1}, root=root) == 2 and len(CALLS) == 2


def test_writes_leave_no_temporary_files(root, monkeypatch):
    for a in range(5):
        cache.cached_call(add, {"a": a}, root=root)
    cache.cached_call(add, {"a": 0}, root=root, refresh=True)
    assert all(p.suffix == ".entry" and not p.name.startswith(".") for p in root.rglob("*") if p.is_file())

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(cache.os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        cache.cached_call(add, {"a": 99}, root=root)
    assert not entry(root, {"a": 99}).exists()
    assert len([p for p in root.rglob("*") if p.is_file()]) == 5


# -- results the codec cannot store ---------------------------------------------------------------------------------


def _returns_a_lambda():
    CALLS.append({})
    return {"ok": 1, "fn": lambda: None}


def test_unstorable_result_is_returned_with_a_warning_and_leaves_nothing(root, caplog):
    with caplog.at_level(logging.WARNING, logger="normlib.cache"):
        result = cache.cached_call(_returns_a_lambda, {}, root=root)
    assert result["ok"] == 1 and callable(result["fn"])
    assert re.search(
        r"_returns_a_lambda is not cached: cannot store value\['fn'\]: type function is not "
        r"supported; allowed: None, bool, int",
        caplog.text,
    )
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]
    cache.cached_call(_returns_a_lambda, {}, root=root)
    assert len(CALLS) == 2  # computed again each time


def test_store_strict_raises_and_writes_nothing(root):
    assert cache.store(add, {"a": 1}, {"x": object()}, root) is False
    with pytest.raises(TypeError, match=r"cannot store value\['x'\]: type object is not supported; allowed:"):
        cache.store(add, {"a": 1}, {"x": object()}, root, strict=True)
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


@dataclasses.dataclass
class _Unregistered:
    x: int


class _Point(tuple):
    pass


@pytest.mark.parametrize(
    "value, match",
    [
        (lambda: None, r"value: type function"),
        ({"a": [1, {2, 3}, {1: object()}]}, r"value\['a'\]\[2\]\[1\]: type object"),
        (_Unregistered(1), r"_Unregistered \(a dataclass not registered"),
        (_Point((1, 2)), r"_Point is not supported"),
        (np.ma.array([1.0]), r"type numpy\.ma\.MaskedArray"),
        (pd.DataFrame({"p": pd.period_range("2020", periods=2, freq="D")}), r"value\.iloc\[:, 0\] \('p'\).*period"),
        (pd.Series([1], index=pd.period_range("2020", periods=1, freq="D")), r"value\.index.*PeriodIndex"),
        (np.array([1, object()], dtype=object), r"value\.flat\[1\]: type object"),
    ],
)
def test_unsupported_types_are_a_type_error_naming_them(value, match):
    with pytest.raises(TypeError, match=match) as info:
        serialize.dumps(value)
    assert "allowed: None, bool, int, float" in str(info.value) and "register_dataclass" in str(info.value)


# -- exact round trips ---------------------------------------------------------------------------------------------


def assert_same(a, b, where="value"):
    """``a`` and ``b`` are the same: types, dtypes, shapes, order, index, and every bit (NaN included)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, pd.DataFrame):
        assert a.shape == b.shape and list(a.dtypes) == list(b.dtypes) and a.attrs == b.attrs, where
        plain = [i for i in range(a.shape[1]) if a.dtypes.iloc[i] != np.dtype(object)]  # pandas cannot compare [nan]
        pd.testing.assert_frame_equal(
            a.iloc[:, plain],
            b.iloc[:, plain],
            check_exact=True,
            check_index_type=True,
            check_column_type=True,
            check_freq=True,
            check_flags=True,
        )
        assert_same(a.columns, b.columns, f"{where}.columns")
        assert_same(a.index, b.index, f"{where}.index")
        for i in range(a.shape[1]):
            assert_same(a.iloc[:, i], b.iloc[:, i], f"{where}.iloc[:, {i}]")
    elif isinstance(a, pd.Series):
        assert a.dtype == b.dtype and a.attrs == b.attrs, where
        assert_same(a.name, b.name, f"{where}.name")
        assert_same(a.index, b.index, f"{where}.index")
        _same_values(a.array, b.array, where)
    elif isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True, check_exact=True, check_categorical=True)
        assert a.dtype == b.dtype and a.names == b.names and getattr(a, "freq", None) == getattr(b, "freq", None)
        if isinstance(a, pd.MultiIndex):
            for i, (x, y) in enumerate(zip(a.levels, b.levels)):
                assert_same(x, y, f"{where}.levels[{i}]")
            for x, y in zip(a.codes, b.codes):
                assert_same(np.asarray(x), np.asarray(y), f"{where}.codes")
        elif not isinstance(a, pd.RangeIndex):
            _same_values(a.array, b.array, where)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        if a.dtype.hasobject:
            for i, (x, y) in enumerate(zip(a.ravel(), b.ravel())):
                assert_same(x, y, f"{where}.flat[{i}]")
        else:
            assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert struct.pack(">d", a) == struct.pack(">d", b), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, complex):
        assert_same(a.real, b.real, where)
        assert_same(a.imag, b.imag, where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for (k, x), (k2, y) in zip(a.items(), b.items()):
            assert_same(k, k2, f"{where} key")
            assert_same(x, y, f"{where}[{k!r}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _same_values(x, y, where):
    if isinstance(x.dtype, np.dtype) and not x.dtype.hasobject:
        assert x.dtype == y.dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes(), where
        return
    for i, (p, q) in enumerate(zip(np.asarray(x, dtype=object), np.asarray(y, dtype=object))):
        if p is pd.NA or q is pd.NA:
            assert p is q, f"{where}[{i}]"
        else:
            assert_same(p, q, f"{where}[{i}]")


NAN = float("nan")
NEG_NAN = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]  # another NaN payload, kept bit for bit


def _history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": np.arange(3),
            "epoch": [0, 0, 1],
            "loss": [2.3, NAN, np.inf],
            "accuracy": [0.1, 0.2, 0.3],
            "lr": [0.1, 0.1, 0.01],
            "diverged": [False, False, True],
        }
    )


#: One value per kind the experiments return (see the notebooks' ``compute`` and their sweeps' point functions).
VALUES = {
    "scalars": [
        None,
        True,
        False,
        0,
        -7,
        2**80,
        0.1,
        -0.0,
        NAN,
        NEG_NAN,
        np.inf,
        -np.inf,
        5e-324,
        1 + 2j,
        "",
        "é\u2028\ud800",
        b"\x00\xff",
    ],
    "containers": {
        "tuple": (1, (2.5, "x"), ()),
        "set": {1, 2, "a"},
        "frozenset": frozenset({3.5}),
        "keys": {1: "int", (1, 2): "tuple", None: "none", 2.5: "float", "": {}},
        "loss": [float(i) / 3 for i in range(20)] + [NAN, -0.0],
    },
    "numpy_scalars": [
        np.float32(1.5),
        np.float64(NAN),
        np.int64(-3),
        np.int8(-1),
        np.uint64(2**64 - 1),
        np.bool_(True),
        np.str_("ab"),
        np.datetime64("2024-01-01", "s"),
        np.complex64(1j),
    ],
    "arrays": [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([NAN, -np.inf, 1.0, -0.0], dtype=np.float32),
        np.array([NAN, -np.inf, 1e308]),
        np.zeros((0, 3)),
        np.array(["a", "bc"]),
        np.array([True, False]),
        np.arange(6).reshape(2, 3).T,
        np.array([1, 2], dtype=">i4"),
        np.array(7.0),
        np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
        np.array([[1, "a"], [None, [1.0, NAN]]], dtype=object),
        np.array([], dtype=object),
    ],
    # the experiments' frames: str, int64, float64 with NaN/inf, bool, object columns of lists or of None/ints
    "frame": pd.DataFrame(
        {
            "norm": ["bn", "gn", None],
            "repeat": np.array([0, 1, 2], dtype=np.int64),
            "value": [1.5, NAN, -np.inf],
            "f32": np.array([1, NAN, 3], dtype=np.float32),
            "diverged": [True, False, True],
            "loss": [[2.3, 2.2], [], [NAN, 1e300]],
            "diverged_step": pd.Series([None, 3, None], dtype=object),
            "label": pd.Series(["x", "y", "z"], dtype=object),
            "mixed": [None, 3, "s"],
            "category": pd.Categorical(["u", "v", "u"], ordered=True),
            "nullable": pd.array([1, None, 3], dtype="Int64"),
            "maybe": pd.array([True, None, False], dtype="boolean"),
            "when": pd.to_datetime(["2020-01-01", None, "2021-06-01"]),
        }
    ),
    "frame_empty": pd.DataFrame(),
    "frame_no_rows": pd.DataFrame(columns=["run", "repeat", "epoch", "test_accuracy"]),
    "frame_typed_no_rows": pd.DataFrame({"a": pd.Series([], dtype=np.float32), "s": pd.Series([], dtype=str)}),
    "frame_duplicate_columns": pd.DataFrame([[1, 2.0, "s"]], columns=["a", "a", 3], index=["r"]),
    "frame_multiindex": pd.DataFrame(
        {"v": [1.0, 2.0, NAN, 4.0]}, index=pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["x", None])
    ),
    "frame_multiindex_columns": pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])),
    "frame_float_index": pd.DataFrame({"gn": [0.5, 0.7]}, index=pd.Index([0.01, 0.1], name="lr")),
    "frame_attrs": pd.DataFrame({"a": [1]}),
    "pivot": pd.DataFrame({"lr": [0.1, 0.1, 1.0], "norm": ["bn", "none", "bn"], "acc": [0.5, 0.4, NAN]}).pivot(
        index="lr", columns="norm", values="acc"
    ),
    "series": {
        "groupby": pd.DataFrame({"setting": ["a", "b", "a"], "value": [1.0, 2.0, 4.0]})
        .groupby("setting")["value"]
        .mean(),
        "range": pd.Series([1, 2, 3], index=pd.RangeIndex(10, 16, 2, name="r"), name=("a", 1)),
        "object_index": pd.Series([1, 2], index=pd.Index(["a", "b"], dtype=object)),
        "dates": pd.Series([1.0, 2.0, 3.0], index=pd.date_range("2020", periods=3, freq="D")),
        "categories": pd.Series([1, 2], index=pd.CategoricalIndex(["a", "b"])),
        "strings": pd.Series(["a", None], name="s"),
        "uint8": pd.Series([1, None], dtype="UInt8"),
    },
    "train_result": TrainResult(
        history=_history(),
        probes=pd.DataFrame(
            {
                "point": pd.Series([], dtype=str),
                "index": pd.Series([], dtype=np.int64),
                "metric": pd.Series([], dtype=str),
                "value": pd.Series([], dtype=float),
                "step": pd.Series([], dtype=np.int64),
            }
        ),
        test_accuracy=NAN,
        train_accuracy=0.25,
        diverged=True,
        diverged_step=2,
        wall_time_s=0.5,
        config=TrainConfig(max_steps=3, probe_metrics=["cosine"], schedule="multistep", lr_milestones=[1, 2]),
    ),
}
VALUES["frame_attrs"].attrs = {"unit": "s", "scales": [0.1, 4.0]}


@pytest.mark.parametrize("name", list(VALUES))
def test_exact_round_trip(name):
    value = VALUES[name]
    blob = serialize.dumps(value)
    back = serialize.loads(blob)
    assert_same(value, back)
    assert serialize.dumps(back) == blob  # the same value always gives the same bytes


def _value(name):
    return VALUES[name]


def test_round_trip_through_the_cache(root):
    for name in VALUES:
        assert_same(VALUES[name], cache.cached_call(_value, {"name": name}, root=root))
        hit, back = cache.lookup(_value, {"name": name}, root)
        assert hit
        assert_same(VALUES[name], back)


def test_arrays_stay_arrays_and_frames_stay_frames():
    back = serialize.loads(serialize.dumps({"f32": np.ones(3, dtype=np.float32), "frame": VALUES["frame"]}))
    assert back["f32"].dtype == np.float32 and back["f32"].flags.writeable
    assert [str(t) for t in back["frame"].dtypes] == [
        "str",
        "int64",
        "float64",
        "float32",
        "bool",
        "object",
        "object",
        "object",
        "object",
        "category",
        "Int64",
        "boolean",
        "datetime64[us]",
    ]
    assert back["frame"]["loss"][2][1] == 1e300 and type(back["frame"]["diverged_step"][1]) is int


@dataclasses.dataclass(frozen=True)
class _Registered:
    name: str
    values: np.ndarray


def test_registered_dataclasses_round_trip():
    serialize.register_dataclass(_Registered)
    value = _Registered("x", np.arange(3.0))
    assert_same(value, serialize.loads(serialize.dumps(value)))
    with pytest.raises(TypeError, match="takes a dataclass"):
        serialize.register_dataclass(dict)


def test_garbage_is_a_decode_error():
    for blob in (b"", b"junk", serialize.dumps(1)[:-10]):
        with pytest.raises(serialize.DecodeError):
            serialize.loads(blob)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # a member that is not a .npy file comes back from np.load as bytes
        archive.writestr("manifest.npy", b"not an array")
    with pytest.raises(serialize.DecodeError):
        serialize.loads(buffer.getvalue())


# -- where entries go, what keys accept -------------------------------------------------------------------------------


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_root() == tmp_path / "elsewhere"
    CALLS.clear()
    cache.cached_call(add, {"a": 5})
    assert entry(tmp_path / "elsewhere", {"a": 5}).is_file()
    monkeypatch.delenv("NORMLIB_CACHE")
    monkeypatch.chdir(tmp_path)
    assert cache.cache_root() == Path(os.getcwd()) / "runs" / "cache"
    assert cache.entry_path("ab" + "0" * 62) == tmp_path / "runs" / "cache" / "ab" / ("ab" + "0" * 62 + ".entry")


@pytest.mark.parametrize(
    "config,where",
    [
        ({"x": object()}, r"config\['x'\]"),
        ({"opts": {"path": Path("a")}}, r"config\['opts'\]\['path'\].*PosixPath|WindowsPath"),
        ({"xs": [1, {2, 3}]}, r"config\['xs'\]\[1\].*set"),
        ({"opts": {1: 2}}, r"config\['opts'\]\[1\].*not a string"),
    ],
)
def test_non_json_config_is_refused(config, where):
    with pytest.raises(TypeError, match=where):
        cache.cache_key(add, config)


def test_lambdas_and_local_functions_are_refused():
    def local(a):
        return a

    for fn in (lambda a: a, local):
        with pytest.raises(TypeError, match="module level"):
            cache.cache_key(fn, {"a": 1})


def test_a_plugin_layers_source_enters_the_key(tmp_path):
    """A normalizer given as ``file.py:Class`` anywhere in the config: editing its file changes the key; a config
    without one keeps the key it had (no ``plugins`` entry)."""
    layer = tmp_path / "layer.py"
    layer.write_text("from torch import nn\nclass Norm(nn.Identity):\n    pass\n")
    config = {"grid": [{"norm": f"{layer}:Norm"}], "lr": 0.1}
    first = cache.cache_key(add, config)
    assert cache.plugin_sources(config) == {f"{layer}:Norm": hashlib.sha256(layer.read_bytes()).hexdigest()}
    layer.write_text("from torch import nn\nclass Norm(nn.Identity):\n    scale = 2\n")
    assert cache.cache_key(add, config) != first
    assert cache.plugin_sources({"norm": "bn", "device": "cuda:0"}) == {}
