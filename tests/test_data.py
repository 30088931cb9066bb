"""normlib.data on tiny IDX / CIFAR files written here; the real Fashion-MNIST only when Debian's package is there."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from normlib import data

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Every place data.py looks points into tmp_path: $NORMLIB_DATA, the user cache, the Debian folder."""
    paths = {"data": tmp_path / "data", "cache": tmp_path / "xdg" / "normlib", "debian": tmp_path / "debian"}
    monkeypatch.setenv("NORMLIB_DATA", str(paths["data"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "debian_fashion_mnist_dir", lambda: paths["debian"])
    return paths


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def register(monkeypatch, filename: str, content: bytes, published: bytes | None = None) -> None:
    """Make ``content`` the expected content (and ``published`` the expected download) of ``filename``."""
    md5 = hashlib.md5(content).hexdigest()
    source = dataclasses.replace(
        data.SOURCES[filename],
        content_md5=md5,
        md5=hashlib.md5(published).hexdigest() if published is not None else md5,
    )
    monkeypatch.setitem(data.SOURCES, filename, source)


def fashion_arrays(split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + (split == "test"))
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def write_fashion(folder: Path, monkeypatch, gz: bool = True, n: int = 30, seed: int = 0) -> dict:
    """Tiny Fashion-MNIST (n train, n // 2 test images) in ``folder``, registered as the genuine files."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, count in (("train", n), ("test", n // 2)):
        arrays[split] = fashion_arrays(split, count, seed)
        for filename, array in zip(FASHION_FILES[split], arrays[split]):
            raw = idx_bytes(array)
            register(monkeypatch, filename, raw)
            path = folder / (filename if gz else filename.removesuffix(".gz"))
            path.write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def cifar_tar(name: str, sizes: dict[str, int], seed: int = 0) -> tuple[bytes, dict]:
    """A tarball laid out like the official one: python pickles with bytes keys, data rows of 3 * 32 * 32."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        members = {
            **{f"cifar-10-batches-py/data_batch_{i}": "train" for i in range(1, 6)},
            "cifar-10-batches-py/test_batch": "test",
        }
        label_key, classes = b"labels", 10
    else:
        members = {"cifar-100-python/train": "train", "cifar-100-python/test": "test"}
        label_key, classes = b"fine_labels", 100
    arrays = {"train": ([], []), "test": ([], [])}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, split in members.items():
            rows = rng.integers(0, 256, (sizes[split], 3072), dtype=np.uint8)
            labels = rng.integers(0, classes, sizes[split]).tolist()
            arrays[split][0].append(rows)
            arrays[split][1].append(labels)
            blob = pickle.dumps({b"data": rows, label_key: labels, b"batch_label": b"x"})
            info = tarfile.TarInfo(member)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue(), {s: (np.concatenate(x), np.concatenate(y)) for s, (x, y) in arrays.items()}


def write_cifar(folder: Path, name: str, monkeypatch, sizes=None) -> dict:
    filename = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[name]
    blob, arrays = cifar_tar(name, sizes or {"train": 4, "test": 6})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_bytes(blob)
    register(monkeypatch, filename, blob)
    return arrays


def normalized(raw: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(raw).float() / 255 - 0.5) / 0.5


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("via", ["NORMLIB_DATA", "root"])
def test_fashion_mnist_tiny(env, monkeypatch, tmp_path, gz, via):
    base = env["data"] if via == "NORMLIB_DATA" else tmp_path / "elsewhere"
    arrays = write_fashion(base / "fashion-mnist", monkeypatch, gz=gz)
    for split in ("train", "test"):
        ds = data.load_dataset("fashion-mnist", split, root=base if via == "root" else None)
        images, labels = arrays[split]
        assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert ds.images.shape == (len(images), 1, 28, 28) and len(ds) == len(images)
        assert torch.equal(ds.images[:, 0], normalized(images))
        assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
        assert (ds.num_classes, ds.channels, ds.shape, ds.mean, ds.std) == (10, 1, (1, 28, 28), (0.5,), (0.5,))
        assert ds.source == base / "fashion-mnist" and ds.split == split and ds.indices is None
        assert ds.shape == data.IMAGE_SHAPES["fashion-mnist"]
    assert ds.images.min() >= -1 and ds.images.max() <= 1


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_tiny(env, monkeypatch, name, classes):
    arrays = write_cifar(env["data"] / name, name, monkeypatch)
    for split, n in (("train", 20 if name == "cifar10" else 4), ("test", 6)):
        ds = data.load_dataset(name, split)
        rows, labels = arrays[split]
        assert ds.images.shape == (n, 3, 32, 32) and ds.num_classes == classes and ds.channels == 3
        assert torch.equal(ds.images, normalized(rows.reshape(n, 3, 32, 32)))
        assert ds.shape == data.IMAGE_SHAPES[name]
        assert torch.equal(ds.labels, torch.from_numpy(labels))
        assert ds.mean == (0.5, 0.5, 0.5) and ds.std == (0.5, 0.5, 0.5)


def test_lookup_order(env, monkeypatch):
    write_fashion(env["debian"], monkeypatch, n=10, seed=3)
    assert data.load_dataset("fashion-mnist").source == env["debian"]
    write_fashion(env["cache"] / "fashion-mnist", monkeypatch, n=20, seed=2)
    assert data.load_dataset("fashion-mnist").source == env["cache"] / "fashion-mnist"
    write_fashion(env["data"] / "fashion-mnist", monkeypatch, n=30, seed=1)
    ds = data.load_dataset("fashion-mnist")
    assert ds.source == env["data"] / "fashion-mnist" and len(ds) == 30


def test_unknown_name_split_and_options(env):
    with pytest.raises(ValueError, match=r"parameter 'name'.*mnist.*fashion-mnist, cifar10, cifar100, synthetic"):
        data.load_dataset("mnist")
    with pytest.raises(ValueError, match=r"parameter 'split'.*'val'.*train, test"):
        data.load_dataset("synthetic", "val")
    with pytest.raises(ValueError, match="synthetic dataset only"):
        data.load_dataset("cifar10", shape=(3, 8, 8))
    with pytest.raises(ValueError, match="parameter 'seed'"):
        data.load_dataset("synthetic", seed=-1)


# ------------------------------------------------------------------------------------------------ missing, corrupt


def test_missing_fashion_mnist_says_how_to_get_it(env):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_dataset("fashion-mnist")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "python -m normlib fetch fashion-mnist" in message
    for folder in (env["data"] / "fashion-mnist", env["cache"] / "fashion-mnist", env["debian"]):
        assert str(folder) in message


def test_missing_cifar_says_how_to_get_it(env, tmp_path):
    with pytest.raises(data.DataNotFoundError, match="python -m normlib fetch cifar100") as info:
        data.load_dataset("cifar100", "test")
    assert "apt-get" not in str(info.value)
    with pytest.raises(data.DataNotFoundError, match=str(tmp_path / "r" / "cifar10")):
        data.load_dataset("cifar10", root=tmp_path / "r")


def test_incomplete_folder_is_skipped(env, monkeypatch):
    write_fashion(env["data"] / "fashion-mnist", monkeypatch)
    (env["data"] / "fashion-mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataNotFoundError):
        data.load_dataset("fashion-mnist", "train")
    assert len(data.load_dataset("fashion-mnist", "test")) == 15


def _corrupt(path: Path, how: str) -> None:
    blob = path.read_bytes()
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    if how == "magic":
        raw = b"\x00\x00\x09\x03" + raw[4:]
    elif how == "checksum":
        raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
    if how == "truncated":
        blob = blob[: len(blob) // 2]
    else:
        blob = gzip.compress(raw) if blob[:2] == b"\x1f\x8b" else raw
    path.write_bytes(blob)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("how,match", [("magic", "magic number"), ("truncated", "truncated"), ("checksum", "md5")])
def test_corrupt_idx_is_refused(env, monkeypatch, gz, how, match):
    write_fashion(env["data"] / "fashion-mnist", monkeypatch, gz=gz)
    path = env["data"] / "fashion-mnist" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    _corrupt(path, how)
    with pytest.raises(data.CorruptDataError, match=match) as info:
        data.load_dataset("fashion-mnist")
    assert str(path) in str(info.value) and "python -m normlib fetch fashion-mnist" in str(info.value)


def test_corrupt_debian_file_says_reinstall(env, monkeypatch):
    write_fashion(env["debian"], monkeypatch)
    _corrupt(env["debian"] / "train-labels-idx1-ubyte.gz", "checksum")
    with pytest.raises(data.CorruptDataError, match="apt-get install --reinstall dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist")


def test_corrupt_cifar_is_refused_before_unpickling(env, monkeypatch):
    write_cifar(env["data"] / "cifar10", "cifar10", monkeypatch)
    path = env["data"] / "cifar10" / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:-10])
    monkeypatch.setattr(data.pickle, "load", lambda *a, **k: pytest.fail("unpickled an unverified file"))
    with pytest.raises(data.CorruptDataError, match=f"{path}.*md5.*python -m normlib fetch cifar10"):
        data.load_dataset("cifar10")


def test_read_idx_validates_header():
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    assert data.read_idx(good).shape == (2, 3)
    for bad in (b"", good[:3], b"\x00\x00\x0d\x02" + good[4:], b"\x00\x00\x08\x00", good[:9], good + b"\x00"):
        with pytest.raises(data.CorruptDataError):
            data.read_idx(bad)


def test_debian_folder_without_dpkg(monkeypatch):
    real = data.debian_fashion_mnist_dir
    real.cache_clear()
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    try:
        assert real() == data.DEBIAN_FASHION_MNIST_DIR
    finally:
        real.cache_clear()


# ------------------------------------------------------------------------------------------------ downloads


@pytest.fixture
def upstream(env, tmp_path, monkeypatch):
    """Tiny published Fashion-MNIST .gz files behind file:// URLs; $NORMLIB_DATA unset, so fetch uses the cache."""
    monkeypatch.delenv("NORMLIB_DATA")
    folder = tmp_path / "upstream"
    write_fashion(folder, monkeypatch, gz=True)
    for files in FASHION_FILES.values():
        for filename in files:
            blob = (folder / filename).read_bytes()
            source = dataclasses.replace(
                data.SOURCES[filename], url=(folder / filename).as_uri(), md5=hashlib.md5(blob).hexdigest()
            )
            monkeypatch.setitem(data.SOURCES, filename, source)
    return folder


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_and_download(env, upstream, monkeypatch):
    target = env["cache"] / "fashion-mnist"
    with pytest.raises(data.DataNotFoundError):
        data.load_dataset("fashion-mnist")
    ds = data.load_dataset("fashion-mnist", download=True)
    assert ds.source == target and len(ds) == 30
    assert _files(target) == sorted(f for files in FASHION_FILES.values() for f in files)
    monkeypatch.setattr(data, "urlopen", lambda *a, **k: pytest.fail("downloaded a file that is already there"))
    assert data.fetch("fashion-mnist") == target


class _Interrupted(io.BytesIO):
    """A response that serves a few bytes, then loses the connection."""

    headers = {"Content-Length": "1000000"}

    def read(self, size=-1):
        if self.tell():
            raise ConnectionResetError("connection lost mid-stream")
        return super().read(100)


def test_interrupted_download_leaves_nothing(env, upstream, monkeypatch):
    monkeypatch.setattr(data, "urlopen", lambda url, timeout: _Interrupted(b"\x1f\x8b" + bytes(500)))
    with pytest.raises(ConnectionResetError):
        data.fetch("fashion-mnist")
    assert _files(env["cache"] / "fashion-mnist") == []
    with pytest.raises(data.DataNotFoundError):
        data.load_dataset("fashion-mnist")


def test_download_with_wrong_checksum_leaves_nothing(env, upstream, monkeypatch):
    blob = (upstream / "train-images-idx3-ubyte.gz").read_bytes()
    (upstream / "train-images-idx3-ubyte.gz").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(data.CorruptDataError, match="md5.*nothing was saved"):
        data.load_dataset("fashion-mnist", download=True)
    assert "train-images-idx3-ubyte.gz" not in _files(env["cache"] / "fashion-mnist")
    assert not [n for n in _files(env["cache"] / "fashion-mnist") if n.startswith(".")]


def test_corrupt_cached_file_is_refetched_only_when_asked(env, upstream):
    data.fetch("fashion-mnist")
    path = env["cache"] / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    _corrupt(path, "truncated")
    with pytest.raises(data.CorruptDataError, match=f"{path}.*python -m normlib fetch fashion-mnist"):
        data.load_dataset("fashion-mnist")
    assert len(data.load_dataset("fashion-mnist", download=True)) == 30
    assert path.read_bytes() == (upstream / path.name).read_bytes()


def test_fetch_rejects_synthetic():
    with pytest.raises(ValueError, match="parameter 'name'"):
        data.fetch("synthetic")


# ------------------------------------------------------------------------------------------------ subsets, batches


def test_subset_is_seeded_balanced_and_checked(env, monkeypatch):
    write_fashion(env["data"] / "fashion-mnist", monkeypatch, n=60)
    a = data.load_dataset("fashion-mnist", subset=20, seed=1)
    b = data.load_dataset("fashion-mnist", subset=20, seed=1)
    c = data.load_dataset("fashion-mnist", subset=20, seed=2)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)
    assert not torch.equal(a.indices, c.indices)
    assert torch.equal(torch.bincount(a.labels, minlength=10), torch.full((10,), 2))
    assert torch.all(a.indices[1:] > a.indices[:-1])
    full = data.load_dataset("fashion-mnist")
    assert torch.equal(full.images[a.indices], a.images) and torch.equal(full.labels[a.indices], a.labels)
    with pytest.raises(ValueError, match=r"parameter 'subset'.*61.*only 60"):
        data.load_dataset("fashion-mnist", subset=61)
    with pytest.raises(ValueError, match="parameter 'subset'"):
        data.load_dataset("fashion-mnist", subset=0)


def test_subset_of_unbalanced_labels_fills_from_other_classes():
    labels = torch.tensor([0] * 2 + [1] * 20)
    assert torch.equal(torch.bincount(labels[data._balanced_indices(labels, 10, seed=0)]), torch.tensor([2, 8]))


def test_synthetic():
    ds = data.load_dataset("synthetic", "train", shape=(2, 5, 7), num_classes=4, size=50, seed=3)
    assert ds.images.shape == (50, 2, 5, 7) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64 and ds.labels.min() >= 0 and ds.labels.max() < 4
    assert (ds.num_classes, ds.channels, ds.shape, ds.mean, ds.std) == (4, 2, (2, 5, 7), (0.0, 0.0), (1.0, 1.0))
    again = data.load_dataset("synthetic", "train", shape=(2, 5, 7), num_classes=4, size=50, seed=3)
    assert torch.equal(ds.images, again.images) and torch.equal(ds.labels, again.labels)
    other = data.load_dataset("synthetic", "test", shape=(2, 5, 7), num_classes=4, size=50, seed=3)
    assert not torch.equal(ds.images, other.images)
    default = data.load_dataset("synthetic", subset=10)
    assert default.images.shape == (10, 3, 32, 32) and default.source is None
    assert len(data.load_dataset("synthetic", "test", shape=(16,))) == 256
    with pytest.raises(ValueError, match="parameter 'shape'"):
        data.load_dataset("synthetic", shape=(3, 0))
    with pytest.raises(ValueError, match="parameter 'num_classes'"):
        data.load_dataset("synthetic", num_classes=0)
    with pytest.raises(ValueError, match=r"parameter 'subset'.*300.*synthetic test split holds only 256"):
        data.load_dataset("synthetic", "test", subset=300)


@pytest.fixture
def small():
    return data.load_dataset("synthetic", shape=(1, 3, 4), size=30, seed=0)


def _cat(iterator):
    xs, ys = zip(*iterator)
    return torch.cat(xs), torch.cat(ys)


def test_batches_are_deterministic_per_seed_and_epoch(small):
    x1, y1 = _cat(data.batches(small, 8, seed=1, epoch=0, augment=True))
    x2, y2 = _cat(data.batches(small, 8, seed=1, epoch=0, augment=True))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = _cat(data.batches(small, 30, seed=1, epoch=0, augment=True))
    assert torch.equal(x1, x3)  # the epoch's order and flips do not depend on the batch size
    x4, _ = _cat(data.batches(small, 8, seed=1, epoch=1, augment=True))
    x5, _ = _cat(data.batches(small, 8, seed=2, epoch=0, augment=True))
    assert not torch.equal(x1, x4) and not torch.equal(x1, x5)


def test_batches_flip_only_when_augmenting(small):
    x, y = _cat(data.batches(small, 7, shuffle=False))
    assert torch.equal(x, small.images) and torch.equal(y, small.labels)
    x, _ = _cat(data.batches(small, 7, shuffle=False, augment=True))
    same = (x == small.images).flatten(1).all(1)
    flipped = (x == small.images.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ flipped) and same.any() and flipped.any()
    assert torch.equal(small.images, data.load_dataset("synthetic", shape=(1, 3, 4), size=30, seed=0).images)


def test_batches_shuffle_sizes_and_validation(small):
    sizes = [len(y) for _, y in data.batches(small, 8)]
    assert sizes == [8, 8, 8, 6]
    assert [len(y) for _, y in data.batches(small, 8, drop_last=True)] == [8, 8, 8]
    x, y = _cat(data.batches(small, 8, seed=5))
    order = [int(torch.nonzero((small.images == row).flatten(1).all(1))[0]) for row in x]
    assert sorted(order) == list(range(30)) and order != list(range(30))
    with pytest.raises(ValueError, match="parameter 'batch_size'"):
        next(data.batches(small, 0))


# ------------------------------------------------------------------------------------------------ the real files


def test_real_fashion_mnist_from_debian(tmp_path, monkeypatch):
    folder = data.debian_fashion_mnist_dir()
    if not all((folder / f).is_file() for files in FASHION_FILES.values() for f in files):
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.delenv("NORMLIB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    train = data.load_dataset("fashion-mnist")
    assert train.images.shape == (60000, 1, 28, 28) and train.source == folder
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    test = data.load_dataset("fashion-mnist", "test", subset=100)
    assert test.images.shape == (100, 1, 28, 28) and test.images.min() == -1 and test.images.max() == 1


def test_center_images_removes_each_images_own_channel_means():
    plain = data.load_dataset("synthetic", shape=(3, 8, 8), size=16)
    centered = data.load_dataset("synthetic", shape=(3, 8, 8), size=16, center_images=True)
    by_hand = plain.images - plain.images.mean(dim=(2, 3), keepdim=True)
    assert torch.equal(centered.images, by_hand)
    assert torch.equal(centered.labels, plain.labels)
    with pytest.raises(ValueError, match="parameter 'center_images'.*True or False"):
        data.load_dataset("synthetic", center_images="yes")
