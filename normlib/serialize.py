"""A data-only codec for results: nothing in an encoded value can run code when it is read.

:func:`dumps` turns a value into the bytes of one ``.npz`` archive (an uncompressed zip of ``.npy`` files):

- ``manifest.npy``: a ``uint8`` array holding UTF-8 JSON ``{"format": "normlib-serialize", "version": 1,
  "root": node}``, where every node is a JSON object whose ``"t"`` names its type and whose other fields hold the
  value itself (a string, a finite float, a list of child nodes) or the name of an array;
- ``a0.npy``, ``a1.npy``, ...: one array per numeric leaf (a numpy array or scalar, a DataFrame column, an index).

:func:`loads` reads it back with ``np.load(..., allow_pickle=False)`` and ``json.loads`` only: no pickle, no
``eval``, no import of a name found in the data. An array of dtype ``object`` is never stored as such: its elements
are nodes of the manifest. A dataclass is rebuilt only when its class is registered (:func:`register_dataclass`;
normlib's :class:`~normlib.train.TrainResult` and :class:`~normlib.train.TrainConfig` are), by calling the class
with its fields.

What round-trips exactly (same types, dtypes, bits, order, index; NaN, infinities and ``-0.0`` included):

- ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``;
- ``list``, ``tuple``, ``dict`` (any keys the codec can store; insertion order kept), ``set``, ``frozenset``;
- numpy arrays of any dtype without Python objects (numbers, bool, strings, bytes, datetimes, structured), numpy
  arrays of dtype ``object`` whose elements are storable, numpy scalars;
- pandas ``DataFrame`` (duplicate column names and ``attrs`` too) and ``Series`` whose columns are numpy dtypes,
  ``object`` (of storable elements), ``str``/``string``, ``category``, or the nullable ``Int*``/``UInt*``/
  ``Float*``/``boolean``; indexes ``RangeIndex``, ``Index``, ``MultiIndex``, ``CategoricalIndex``,
  ``DatetimeIndex``, ``TimedeltaIndex`` (with their names and ``freq``);
- instances of registered dataclasses.

Subclasses of these (a ``namedtuple``, an ``OrderedDict``, ``np.matrix``), torch tensors and anything else raise a
:class:`TypeError` from :func:`dumps` that names the type, where it is in the value, and what is allowed.
:func:`loads` raises :class:`DecodeError` (a :class:`ValueError`) on any archive it did not write.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import math
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["dumps", "loads", "register_dataclass", "DecodeError", "SUPPORTED"]

FORMAT = "normlib-serialize"
VERSION = 1
_MANIFEST = "manifest"

#: What can be stored, as the error message of an unsupported type says it.
SUPPORTED = (
    "None, bool, int, float, complex, str, bytes; list, tuple, dict, set, frozenset of those; numpy arrays "
    "and scalars; pandas DataFrame, Series and Index (numpy, object-of-storable, str, category and nullable "
    "dtypes); dataclasses registered with normlib.serialize.register_dataclass"
)

#: Dataclasses that may be rebuilt, by ``module.qualname``. normlib's own are imported on first use, by these fixed
#: names only; a name read from an archive is looked up here and never imported.
_DATACLASSES: dict[str, type] = {}
_BUILTIN_DATACLASSES = {
    "normlib.train.TrainResult": ("normlib.train", "TrainResult"),
    "normlib.train.TrainConfig": ("normlib.train", "TrainConfig"),
}

#: The nullable dtypes a column may have.
_MASKED = frozenset(f"{kind}{bits}" for kind in ("Int", "UInt") for bits in (8, 16, 32, 64)) | {
    "Float32",
    "Float64",
    "boolean",
}

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that one value always gives the same bytes


class DecodeError(ValueError):
    """The bytes are not an archive written by :func:`dumps` (damaged, foreign, or naming an unregistered type)."""


def register_dataclass(cls: type) -> type:
    """Allow instances of the dataclass ``cls`` in stored values (usable as a decorator); returns ``cls``.

    Its fields must all be ``init`` fields; reading calls ``cls(**fields)``, so ``__post_init__`` validation runs.
    A process that reads the value must have registered the class too (else the value is unreadable).
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_dataclass takes a dataclass, got {cls!r}")
    if not all(f.init for f in dataclasses.fields(cls)):
        raise TypeError(f"{_name(cls)} has fields with init=False, which cls(**fields) cannot set")
    if "<locals>" in cls.__qualname__:
        raise TypeError(f"{_name(cls)} is defined inside a function; define it at module level")
    _DATACLASSES[_name(cls)] = cls
    return cls


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _dataclass(name: str) -> type | None:
    if name not in _DATACLASSES and name in _BUILTIN_DATACLASSES:
        module, qualname = _BUILTIN_DATACLASSES[name]
        register_dataclass(getattr(importlib.import_module(module), qualname))
    return _DATACLASSES.get(name)


# ---------------------------------------------------------------------------------------------------- writing


def dumps(value: Any) -> bytes:
    """``value`` as the bytes of an ``.npz`` archive (see the module's doc); the same value gives the same bytes.

    Raises:
        TypeError: ``value`` holds something the codec cannot store; the message names its type, where it is
            (``value['train'].loss[3]``) and what is allowed.
    """
    encoder = _Encoder()
    root = encoder.node(value, "value")
    manifest = json.dumps(
        {"format": FORMAT, "version": VERSION, "root": root}, ensure_ascii=True, allow_nan=False, separators=(",", ":")
    )
    members = {_MANIFEST: np.frombuffer(manifest.encode("ascii"), dtype=np.uint8)}
    members.update((f"a{i}", a) for i, a in enumerate(encoder.arrays))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in members.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, array, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE), npy.getvalue())
    return buffer.getvalue()


def _unsupported(value: Any, where: str, why: str = "") -> TypeError:
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    return TypeError(f"cannot store {where}: type {kind}{why} is not supported; allowed: {SUPPORTED}")


def _float_node(x: float) -> dict[str, Any]:
    if math.isfinite(x):
        return {"t": "float", "v": x}  # JSON keeps Python's shortest exact repr, -0.0 included
    return {"t": "float", "bits": struct.pack(">d", x).hex()}  # NaN (with its payload) and infinities


class _Encoder:
    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []

    def array(self, array: np.ndarray) -> str:
        self.arrays.append(array)
        return f"a{len(self.arrays) - 1}"

    def node(self, value: Any, where: str) -> dict[str, Any]:
        kind = type(value)
        if value is None:
            return {"t": "None"}
        if kind is bool:
            return {"t": "bool", "v": value}
        if kind is int:
            return {"t": "int", "v": value}
        if kind is float:
            return _float_node(value)
        if kind is complex:
            return {"t": "complex", "v": [_float_node(value.real), _float_node(value.imag)]}
        if kind is str:
            return {"t": "str", "v": value}
        if kind is bytes:
            return {"t": "bytes", "a": self.array(np.frombuffer(value, dtype=np.uint8))}
        if kind in (list, tuple, set, frozenset):
            items = sorted(value, key=repr) if kind in (set, frozenset) else value
            return {"t": kind.__name__, "v": self.sequence(items, where)}
        if kind is dict:
            if all(type(k) is str for k in value):
                return {"t": "dict", "s": {k: self.node(v, f"{where}[{k!r}]") for k, v in value.items()}}
            return {
                "t": "dict",
                "k": [self.node(k, f"{where} key {k!r}") for k in value],
                "v": [self.node(v, f"{where}[{k!r}]") for k, v in value.items()],
            }
        if kind is np.ndarray:
            return self.ndarray(value, where)
        if isinstance(value, np.generic) and kind.__module__ == "numpy":
            if value.dtype.hasobject:
                raise _unsupported(value, where, " (a numpy scalar holding Python objects)")
            return {"t": "npscalar", "a": self.array(np.asarray(value))}
        if kind is pd.DataFrame:
            return self.frame(value, where)
        if kind is pd.Series:
            return {
                "t": "Series",
                "v": self.values(value, where),
                "index": self.index(value.index, f"{where}.index"),
                "name": self.node(value.name, f"{where}.name"),
                **self.attrs(value, where),
            }
        if isinstance(value, pd.Index):
            return self.index(value, where)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            name = _name(kind)
            if _dataclass(name) is not kind:
                raise _unsupported(
                    value, where, " (a dataclass not registered with normlib.serialize.register_dataclass)"
                )
            return {
                "t": "dataclass",
                "cls": name,
                "s": {
                    f.name: self.node(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)
                },
            }
        raise _unsupported(value, where)

    def sequence(self, items: Any, where: str) -> Any:
        """Child nodes; a long run of plain floats is one float64 array (exact, and far smaller)."""
        if len(items) > 8 and all(type(v) is float for v in items):
            return {"floats": self.array(np.array(items, dtype=np.float64))}
        return [self.node(v, f"{where}[{i}]") for i, v in enumerate(items)]

    def ndarray(self, array: np.ndarray, where: str) -> dict[str, Any]:
        if not array.dtype.hasobject:
            return {"t": "ndarray", "a": self.array(array)}
        if array.dtype != np.dtype(object):
            raise _unsupported(array, where, f" (a structured dtype {array.dtype} with Python objects)")
        flat = array.ravel(order="C")
        if flat.size and all(type(v) is str for v in flat):
            items: Any = {"strs": flat.tolist()}
        else:
            items = self.sequence(list(flat), f"{where}.flat")
        return {"t": "objarray", "shape": list(array.shape), "v": items}

    def values(self, series: pd.Series | pd.Index, where: str) -> dict[str, Any]:
        """The values of a column or an index, with their exact dtype."""
        dtype = series.dtype
        if isinstance(dtype, np.dtype):
            return self.ndarray(series.to_numpy(), where)
        array = series.array
        if isinstance(dtype, pd.CategoricalDtype):
            return {
                "t": "categorical",
                "codes": self.ndarray(np.asarray(array.codes), where),
                "categories": self.index(dtype.categories, f"{where}.categories"),
                "ordered": bool(dtype.ordered),
            }
        if isinstance(dtype, pd.StringDtype):
            missing = pd.isna(array)
            items = [None if m else str(v) for v, m in zip(array, missing)]
            na = "nan" if dtype.na_value is np.nan else "NA"
            return {"t": "string", "storage": dtype.storage, "na": na, "v": items}
        if isinstance(array, pd.arrays.IntegerArray | pd.arrays.FloatingArray | pd.arrays.BooleanArray):
            return {
                "t": "masked",
                "dtype": dtype.name,
                "data": self.ndarray(array._data, where),
                "mask": self.ndarray(array._mask, where),
            }
        if isinstance(array, pd.arrays.DatetimeArray | pd.arrays.TimedeltaArray) and getattr(dtype, "tz", None) is None:
            return self.ndarray(np.asarray(array), where)
        raise _unsupported(series, where, f" with dtype {dtype}")

    def index(self, index: pd.Index, where: str) -> dict[str, Any]:
        kind = type(index)
        if kind is pd.RangeIndex:
            return {
                "t": "RangeIndex",
                "start": index.start,
                "stop": index.stop,
                "step": index.step,
                "name": self.node(index.name, f"{where}.name"),
            }
        if kind is pd.MultiIndex:
            return {
                "t": "MultiIndex",
                "levels": [self.index(lv, f"{where}.levels[{i}]") for i, lv in enumerate(index.levels)],
                "codes": [self.ndarray(np.asarray(c), where) for c in index.codes],
                "names": [self.node(n, f"{where}.names[{i}]") for i, n in enumerate(index.names)],
            }
        if kind in (pd.Index, pd.CategoricalIndex, pd.DatetimeIndex, pd.TimedeltaIndex):
            node = {
                "t": "Index",
                "cls": kind.__name__,
                "v": self.values(index, where),
                "name": self.node(index.name, f"{where}.name"),
            }
            freq = getattr(index, "freqstr", None)
            if freq is not None:
                node["freq"] = freq
            return node
        raise _unsupported(index, where)

    def frame(self, frame: pd.DataFrame, where: str) -> dict[str, Any]:
        columns = [
            self.values(frame.iloc[:, i], f"{where}.iloc[:, {i}] ({frame.columns[i]!r})") for i in range(frame.shape[1])
        ]
        return {
            "t": "DataFrame",
            "columns": self.index(frame.columns, f"{where}.columns"),
            "index": self.index(frame.index, f"{where}.index"),
            "v": columns,
            **self.attrs(frame, where),
        }

    def attrs(self, value: pd.DataFrame | pd.Series, where: str) -> dict[str, Any]:
        return {"attrs": self.node(dict(value.attrs), f"{where}.attrs")} if value.attrs else {}


# ---------------------------------------------------------------------------------------------------- reading


def loads(blob: bytes) -> Any:
    """The value that :func:`dumps` encoded into ``blob``, read with ``np.load(allow_pickle=False)`` and JSON only.

    Raises:
        DecodeError: ``blob`` is not such an archive, or names a type that is not allowed here (for instance an
            unregistered dataclass). Nothing in ``blob`` is executed or imported whatever it holds.
    """
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DecodeError("not an .npz archive")
            arrays = {name: archive[name] for name in archive.files}
    except DecodeError:
        raise
    except Exception as err:  # BadZipFile, a bad .npy header, an object array refused by allow_pickle=False, ...
        raise DecodeError(f"unreadable archive: {err!r}") from err
    for name, array in arrays.items():
        if type(array) is not np.ndarray:  # np.load hands back the raw bytes of a member that is not a .npy file
            raise DecodeError(f"member {name!r} is not a .npy array")
    manifest = arrays.pop(_MANIFEST, None)
    if manifest is None or manifest.dtype != np.uint8 or manifest.ndim != 1:
        raise DecodeError("no manifest")
    try:
        document = json.loads(manifest.tobytes().decode("ascii"))
    except (UnicodeDecodeError, ValueError) as err:
        raise DecodeError(f"manifest is not JSON: {err}") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise DecodeError("manifest of another format or version")
    try:
        return _Decoder(arrays).node(document.get("root"))
    except DecodeError:
        raise
    except Exception as err:  # a malformed node (a wrong field type, a bad shape): never trusted
        raise DecodeError(f"malformed manifest: {err!r}") from err


def _float(node: dict[str, Any]) -> float:
    if "bits" in node:
        bits = node["bits"]
        if not (isinstance(bits, str) and len(bits) == 16):
            raise DecodeError("bad float bits")
        return struct.unpack(">d", bytes.fromhex(bits))[0]
    v = node["v"]
    if type(v) not in (int, float):
        raise DecodeError("bad float")
    return float(v)


def _check(value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(f"expected {kind}, got {type(value).__name__}")
    return value


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def array(self, name: Any) -> np.ndarray:
        if not isinstance(name, str) or name not in self.arrays:
            raise DecodeError(f"missing array {name!r}")
        return self.arrays[name]

    def node(self, node: Any) -> Any:
        _check(node, dict)
        t = node.get("t")
        handler: Callable[[dict[str, Any]], Any] | None = self._HANDLERS.get(t) if isinstance(t, str) else None
        if handler is None:
            raise DecodeError(f"unknown node type {t!r}")
        return handler(self, node)

    def sequence(self, items: Any) -> list[Any]:
        if isinstance(items, dict):
            floats = self.array(items.get("floats"))
            if floats.dtype != np.float64 or floats.ndim != 1:
                raise DecodeError("bad float run")
            return floats.tolist()
        return [self.node(v) for v in _check(items, list)]

    def _scalar(self, node: dict[str, Any]) -> Any:
        t = node["t"]
        if t == "None":
            return None
        if t == "bool":
            return _check(node["v"], bool)
        if t == "int":
            return _check(node["v"], int)
        if t == "float":
            return _float(node)
        if t == "complex":
            re, im = _check(node["v"], list)
            return complex(_float(_check(re, dict)), _float(_check(im, dict)))
        if t == "str":
            return _check(node["v"], str)
        if t == "bytes":
            data = self.array(node["a"])
            if data.dtype != np.uint8 or data.ndim != 1:
                raise DecodeError("bad bytes")
            return data.tobytes()
        raise DecodeError(f"unknown node type {t!r}")

    def _collection(self, node: dict[str, Any]) -> Any:
        kind = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[node["t"]]
        items = self.sequence(node["v"])
        return items if kind is list else kind(items)

    def _dict(self, node: dict[str, Any]) -> dict[Any, Any]:
        if "s" in node:
            return {k: self.node(v) for k, v in _check(node["s"], dict).items()}
        keys, values = _check(node["k"], list), _check(node["v"], list)
        if len(keys) != len(values):
            raise DecodeError("dict keys and values differ in length")
        return {self.node(k): self.node(v) for k, v in zip(keys, values)}

    def _ndarray(self, node: dict[str, Any]) -> np.ndarray:
        return self.array(node["a"])

    def _npscalar(self, node: dict[str, Any]) -> Any:
        array = self.array(node["a"])
        if array.ndim != 0:
            raise DecodeError("a numpy scalar is a 0-d array")
        return array[()]

    def _objarray(self, node: dict[str, Any]) -> np.ndarray:
        shape = tuple(_check(n, int) for n in _check(node["shape"], list))
        items = node["v"]
        values = _check(items["strs"], list) if isinstance(items, dict) and "strs" in items else self.sequence(items)
        if isinstance(items, dict) and "strs" in items and not all(type(v) is str for v in values):
            raise DecodeError("bad string run")
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):  # one by one: a list element must not be unpacked into the array
            out[i] = v
        return out.reshape(shape)

    def values(self, node: Any, index: pd.Index | None = None) -> Any:
        """A column's values: a numpy array or a pandas extension array."""
        _check(node, dict)
        t = node.get("t")
        if t in ("ndarray", "objarray"):
            return self.node(node)
        if t == "categorical":
            categories = self.index(node["categories"])
            return pd.Categorical.from_codes(
                self.node(_check(node["codes"], dict)), categories=categories, ordered=_check(node["ordered"], bool)
            )
        if t == "string":
            if node["storage"] not in ("python", "pyarrow"):
                raise DecodeError(f"unknown string storage {node['storage']!r}")
            dtype = pd.StringDtype(node["storage"], na_value={"nan": np.nan, "NA": pd.NA}[node["na"]])
            items = _check(node["v"], list)
            if not all(v is None or type(v) is str for v in items):
                raise DecodeError("bad string column")
            return pd.array(np.array(items, dtype=object), dtype=dtype)
        if t == "masked":
            name = _check(node["dtype"], str)
            if name not in _MASKED:
                raise DecodeError(f"not a nullable dtype: {name!r}")
            dtype = pd.api.types.pandas_dtype(name)
            data, mask = self.node(_check(node["data"], dict)), self.node(_check(node["mask"], dict))
            array = dtype.construct_array_type()(data, mask)
            if array.dtype != dtype:
                raise DecodeError(f"nullable column of {array.dtype}, not {dtype}")
            return array
        raise DecodeError(f"unknown column type {t!r}")

    def index(self, node: Any) -> pd.Index:
        _check(node, dict)
        t = node.get("t")
        if t == "RangeIndex":
            return pd.RangeIndex(
                _check(node["start"], int),
                _check(node["stop"], int),
                _check(node["step"], int),
                name=self.node(node["name"]),
            )
        if t == "MultiIndex":
            return pd.MultiIndex(
                levels=[self.index(lv) for lv in _check(node["levels"], list)],
                codes=[self.node(_check(c, dict)) for c in _check(node["codes"], list)],
                names=[self.node(n) for n in _check(node["names"], list)],
            )
        if t == "Index":
            cls = {
                "Index": pd.Index,
                "CategoricalIndex": pd.CategoricalIndex,
                "DatetimeIndex": pd.DatetimeIndex,
                "TimedeltaIndex": pd.TimedeltaIndex,
            }[node["cls"]]
            values = self.values(node["v"])
            freq = node.get("freq")
            options = {"freq": _check(freq, str)} if freq is not None else {}
            index = cls(values, dtype=values.dtype, name=self.node(node["name"]), copy=False, **options)
            if type(index) is not cls:
                raise DecodeError(f"an {cls.__name__} came back as {type(index).__name__}")
            return index
        raise DecodeError(f"unknown index type {t!r}")

    def _index(self, node: dict[str, Any]) -> pd.Index:
        return self.index(node)

    def _attrs(self, node: dict[str, Any]) -> dict[Any, Any]:
        return _check(self.node(node["attrs"]), dict) if "attrs" in node else {}

    def _series(self, node: dict[str, Any]) -> pd.Series:
        index = self.index(node["index"])
        values = self.values(node["v"])
        if len(values) != len(index):
            raise DecodeError("series values and index differ in length")
        series = pd.Series(values, index=index, dtype=values.dtype, name=self.node(node["name"]), copy=False)
        series.attrs = self._attrs(node)
        return series

    def _frame(self, node: dict[str, Any]) -> pd.DataFrame:
        columns, index = self.index(node["columns"]), self.index(node["index"])
        data = [self.values(c) for c in _check(node["v"], list)]
        if len(data) != len(columns) or any(len(c) != len(index) for c in data):
            raise DecodeError("frame columns do not match its shape")
        positions = pd.RangeIndex(len(index))  # built by position, then labelled: nothing is aligned on labels
        frame = pd.DataFrame(
            {i: pd.Series(c, index=positions, dtype=c.dtype, copy=False) for i, c in enumerate(data)}, index=positions
        )
        frame.index, frame.columns = index, columns
        frame.attrs = self._attrs(node)
        return frame

    def _dataclass(self, node: dict[str, Any]) -> Any:
        name = _check(node["cls"], str)
        cls = _dataclass(name)
        if cls is None:
            raise DecodeError(f"dataclass {name!r} is not registered (normlib.serialize.register_dataclass)")
        fields = {k: self.node(v) for k, v in _check(node["s"], dict).items()}
        if set(fields) != {f.name for f in dataclasses.fields(cls)}:
            raise DecodeError(f"the fields of {name} changed")
        return cls(**fields)

    _HANDLERS: dict[str, Callable[[_Decoder, dict[str, Any]], Any]] = {
        **dict.fromkeys(("None", "bool", "int", "float", "complex", "str", "bytes"), _scalar),
        **dict.fromkeys(("list", "tuple", "set", "frozenset"), _collection),
        "dict": _dict,
        "ndarray": _ndarray,
        "npscalar": _npscalar,
        "objarray": _objarray,
        "RangeIndex": _index,
        "MultiIndex": _index,
        "Index": _index,
        "Series": _series,
        "DataFrame": _frame,
        "dataclass": _dataclass,
    }
