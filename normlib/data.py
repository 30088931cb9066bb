"""Datasets behind one loader: Fashion-MNIST (IDX), CIFAR-10/100 (python pickle tarballs), synthetic Gaussian.

:func:`load_dataset` returns a :class:`Dataset`: float32 images ``(N, C, H, W)`` normalized per channel as in the
papers' code (``Normalize(mean=0.5, std=0.5)``, i.e. ``(x / 255 - 0.5) / 0.5``, values in ``[-1, 1]``), int64
labels, and the metadata a notebook needs. :func:`batches` iterates over it without a ``DataLoader``: it indexes
the tensors directly, is deterministic given ``(seed, epoch)``, and flips horizontally (the papers' only training
augmentation) with one vectorized, seeded draw per epoch.

Where files are found, in order (``root=`` replaces the whole list):

1. ``$NORMLIB_DATA/<name>/``
2. the user cache, ``$XDG_CACHE_HOME/normlib/<name>/`` (default ``~/.cache/normlib/<name>/``)
3. Fashion-MNIST only: the files of Debian's ``dataset-fashion-mnist`` package (``dpkg -L`` lists them;
   ``/usr/share/datasets/fashion-mnist/`` when dpkg is absent)
4. with ``download=True``: the upstream release, fetched into ``root``, else ``$NORMLIB_DATA``, else the user cache.

A folder holds the files under their published names: ``train-images-idx3-ubyte.gz`` and the other three IDX
files (gzipped or not), ``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``.

Checksums (:data:`SOURCES`). A download is checked against the md5 its publisher lists: Zalando's fashion-mnist
README for the four ``.gz`` files, the CIFAR page (https://www.cs.toronto.edu/~kriz/cifar.html) for the
tarballs. A local copy is checked before use: a CIFAR tarball by the same md5 (before anything is unpickled); an
IDX file by the md5 of its *decompressed* bytes, because Debian's package ships the same IDX bytes re-gzipped
(its ``.gz`` files do not match the published md5). Those content md5s were computed from Debian's files and
agree with the uncompressed-file md5s other projects publish next to Zalando's ``.gz`` md5s. A download goes to a
temporary file in the target folder, is verified, then moved into place with ``os.replace``: an interrupted or
corrupt download leaves nothing behind. A corrupt local file is never used: it raises :class:`CorruptDataError`
naming the file and how to fetch it again (with ``download=True`` a corrupt file in the download folder is
fetched again instead).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import torch
from tqdm import tqdm

__all__ = [
    "require",
    "DATASETS",
    "IMAGE_SHAPES",
    "SPLITS",
    "SOURCES",
    "Dataset",
    "DataNotFoundError",
    "CorruptDataError",
    "Source",
    "load_dataset",
    "fetch",
    "batches",
    "read_idx",
    "search_path",
    "user_cache_dir",
    "debian_fashion_mnist_dir",
]

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "synthetic")
SPLITS = ("train", "test")

#: Debian's install folder for ``dataset-fashion-mnist``, used when ``dpkg`` cannot be asked.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The papers' ``Normalize(mean=0.5, std=0.5)``, applied to every channel of the real datasets.
MEAN, STD = 0.5, 0.5

_NUM_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100}
#: Classes of each real dataset.
NUM_CLASSES = _NUM_CLASSES
#: The shape ``(C, H, W)`` of one example of each dataset (synthetic: its default).
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "synthetic": (3, 32, 32),
}
_SYNTHETIC_SIZE = {"train": 1024, "test": 256}
_SUBSET, _SYNTHETIC, _BATCHES = range(3)  # independent random streams of one seed


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are in none of the places looked; the message lists them and the command that fetches."""


class CorruptDataError(ValueError):
    """A dataset file (or a download) is damaged; the message names it and says how to fetch it again."""


@dataclass(frozen=True)
class Source:
    """One published file of a dataset.

    ``md5`` is the publisher's checksum of the file as downloaded. ``content_md5`` is the checksum of the bytes
    the loader parses: the decompressed IDX for Fashion-MNIST (so a gunzipped or re-gzipped copy is accepted),
    the tarball itself for CIFAR.
    """

    filename: str
    url: str
    md5: str
    content_md5: str

    @property
    def is_idx(self) -> bool:
        return "-ubyte" in self.filename

    @property
    def local_names(self) -> tuple[str, ...]:
        """Names a local copy may have: IDX files may be stored gzipped (as published) or not."""
        return (self.filename, self.filename.removesuffix(".gz")) if self.is_idx else (self.filename,)


_FASHION_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

#: Every published file, by file name.
SOURCES: dict[str, Source] = {
    s.filename: s
    for s in (
        Source(
            "train-images-idx3-ubyte.gz",
            _FASHION_URL + "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        ),
        Source(
            "train-labels-idx1-ubyte.gz",
            _FASHION_URL + "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
            "9018921c3c673c538a1fc5bad174d6f9",
        ),
        Source(
            "t10k-images-idx3-ubyte.gz",
            _FASHION_URL + "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
            "8181f5470baa50b63fa0f6fddb340f0a",
        ),
        Source(
            "t10k-labels-idx1-ubyte.gz",
            _FASHION_URL + "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
        Source(
            "cifar-10-python.tar.gz",
            _CIFAR_URL + "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            "c58f30108f718f92721af3b95e74349a",
        ),
        Source(
            "cifar-100-python.tar.gz",
            _CIFAR_URL + "cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
    )
}

# dataset -> split -> the published files that split needs
_FILES = {
    "fashion-mnist": {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    },
    "cifar10": {"train": ("cifar-10-python.tar.gz",), "test": ("cifar-10-python.tar.gz",)},
    "cifar100": {"train": ("cifar-100-python.tar.gz",), "test": ("cifar-100-python.tar.gz",)},
}

# tarball members per split, and the key of their labels
_CIFAR_MEMBERS = {
    "cifar10": {
        "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
        "test": ["cifar-10-batches-py/test_batch"],
    },
    "cifar100": {"train": ["cifar-100-python/train"], "test": ["cifar-100-python/test"]},
}
_CIFAR_LABEL_KEY = {"cifar10": b"labels", "cifar100": b"fine_labels"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A split held in memory, with the metadata needed to build a model for it and to report how it was made.

    ``images`` are float32 ``(N, C, H, W)``, already normalized with ``mean``/``std`` (per channel); ``labels``
    are int64 in ``[0, num_classes)``. ``source`` is the folder the files came from (``None`` for synthetic data);
    ``indices`` are the positions in the full split when a subset was taken, else ``None``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: Path | None = None
    indices: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example, ``(C, H, W)``."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Dataset:
        """The same dataset with images and labels on ``device`` (e.g. a GPU, so :func:`batches` indexes there)."""
        return dataclasses.replace(self, images=self.images.to(device), labels=self.labels.to(device))


# ---------------------------------------------------------------------------------------------------------------
# loading


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    subset: int | None = None,
    seed: int = 0,
    download: bool = False,
    *,
    shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    size: int | None = None,
    center_images: bool = False,
) -> Dataset:
    """Load one split of a dataset as tensors, normalized as in the papers.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        root: a folder to use instead of the search path (``root/<name>/``); also where ``download`` writes.
        subset: keep ``subset`` examples, drawn with ``seed`` and balanced over classes (round-robin over the
            classes in a seeded random order), kept in their original order; more than the split holds is an error.
        seed: seeds the subset and, for ``synthetic``, the data itself.
        download: fetch missing (or corrupt, in the download folder) files from upstream, checksum-verified.
        shape, num_classes, size: ``synthetic`` only: the shape of one example (default ``(3, 32, 32)``), the
            number of classes (default 10) and of examples (default 1024 for train, 256 for test). Images are
            i.i.d. standard normal (``mean``/``std`` are recorded as 0 and 1: no normalization is applied), labels
            uniform; both depend only on ``(seed, split)``.
        center_images: after normalizing, subtract from each image its own per-channel mean over the positions,
            :math:`x_{c,h,w} - \\frac{1}{HW}\\sum_{h',w'} x_{c,h',w'}`: what an InstanceNorm right after the input
            would remove (the test of chapter 02's question whether that mean is what InstanceNorm loses).

    Raises:
        ValueError: an unknown ``name`` or ``split``, a bad ``subset``, or synthetic options for a real dataset.
        DataNotFoundError: the files are nowhere and ``download`` is False; the message says how to get them.
        CorruptDataError: a file failed its checksum or format check; the message says how to fetch it again.
    """
    _check_choice("name", name, DATASETS)
    _check_choice("split", split, SPLITS)
    _check_seed(seed)
    if not isinstance(center_images, bool):
        raise ValueError(f"parameter 'center_images': invalid value {center_images!r}; allowed: True or False")
    if name == "synthetic":
        return _centered(_synthetic(split, subset, seed, shape, num_classes, size), center_images)
    if (shape, num_classes, size) != (None, None, None):
        raise ValueError(
            f"parameters 'shape', 'num_classes', 'size' apply to the synthetic dataset only, not to {name!r}"
        )
    folder = _find(name, split, root)
    if folder is None:
        if not download:
            raise DataNotFoundError(_not_found_message(name, split, root))
        folder = fetch(name, root)
    try:
        images, labels = _read(name, split, folder)
    except CorruptDataError:
        if not (download and folder == _download_dir(root) / name):
            raise
        images, labels = _read(name, split, fetch(name, root))
    images, labels, indices = _take_subset(
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        subset,
        seed,
        f"the {split} split of {name}",
    )
    channels = images.shape[1]
    loaded = Dataset(
        images=_normalize(images),
        labels=labels,
        name=name,
        split=split,
        num_classes=_NUM_CLASSES[name],
        mean=(MEAN,) * channels,
        std=(STD,) * channels,
        source=folder,
        indices=indices,
    )
    return _centered(loaded, center_images)


def _centered(dataset: Dataset, center: bool) -> Dataset:
    """``dataset`` with each image's per-channel spatial mean removed when ``center`` is set."""
    if not center:
        return dataset
    images = dataset.images - dataset.images.mean(dim=(2, 3), keepdim=True)
    return dataclasses.replace(dataset, images=images)


def _check_choice(param: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"parameter {param!r}: invalid value {value!r}; allowed: one of: {', '.join(allowed)}")


def _check_count(param: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"parameter {param!r}: invalid value {value!r}; allowed: an integer >= {minimum}")


def _check_seed(seed: object) -> None:
    _check_count("seed", seed, 0)


def _read(name: str, split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(N, C, H, W)`` and labels ``(N,)`` of one split, from verified files in ``folder``."""
    if name == "fashion-mnist":
        (images, image_file), (labels, label_file) = (
            _read_verified_idx(folder, SOURCES[f], name) for f in _FILES[name][split]
        )
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise CorruptDataError(
                f"{image_file} and {label_file} do not fit together: images {images.shape}, "
                f"labels {labels.shape}. {_refetch_hint(name, image_file)}"
            )
        images = images[:, None]
    else:
        (tar_name,) = _FILES[name][split]
        images, labels = _read_cifar(folder / tar_name, name, split)
    if labels.size and labels.max() >= _NUM_CLASSES[name]:
        raise CorruptDataError(
            f"labels in {folder} reach {labels.max()}, but {name} has {_NUM_CLASSES[name]} "
            f"classes. {_refetch_hint(name, folder)}"
        )
    return images, labels


def _normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` to float32 ``(x / 255 - 0.5) / 0.5``: torchvision's ``ToTensor`` then ``Normalize``."""
    return images.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD)


def _take_subset(
    images: torch.Tensor, labels: torch.Tensor, subset: int | None, seed: int, what: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(images, labels, indices)`` of a seeded, class-balanced subset; everything (and no indices) if None."""
    if subset is None:
        return images, labels, None
    _check_count("subset", subset, 1)
    if subset > len(labels):
        raise ValueError(f"parameter 'subset': {subset} examples asked for, but {what} holds only {len(labels)}")
    indices = _balanced_indices(labels, subset, seed)
    return images[indices], labels[indices], indices


def _balanced_indices(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """``k`` sorted positions, drawn round-robin over classes in a seeded random order.

    Every class gets ``k // num_classes`` or one more, until a class runs out; then the others fill in.
    """
    order = torch.randperm(len(labels), generator=_generator(seed, _SUBSET))
    shuffled = labels[order]
    # each example's rank among the examples of its class, in the shuffled order
    by_class = torch.argsort(shuffled, stable=True)
    counts = torch.bincount(shuffled)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[by_class] = torch.arange(len(labels)) - torch.repeat_interleave(starts, counts)
    chosen = order[torch.argsort(rank, stable=True)[:k]]
    return torch.sort(chosen).values


def _synthetic(
    split: str, subset: int | None, seed: int, shape: tuple[int, ...] | None, num_classes: int | None, size: int | None
) -> Dataset:
    shape = IMAGE_SHAPES["synthetic"] if shape is None else shape
    num_classes = 10 if num_classes is None else num_classes
    size = _SYNTHETIC_SIZE[split] if size is None else size
    if not (isinstance(shape, tuple) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
        raise ValueError(
            f"parameter 'shape': invalid value {shape!r}; allowed: a tuple of positive integers, e.g. (3, 32, 32)"
        )
    _check_count("num_classes", num_classes, 1)
    _check_count("size", size, 1)
    g = _generator(seed, _SYNTHETIC, SPLITS.index(split))
    images = torch.randn((size, *shape), generator=g)
    labels = torch.randint(num_classes, (size,), generator=g)
    images, labels, indices = _take_subset(images, labels, subset, seed, f"the synthetic {split} split")
    return Dataset(
        images=images,
        labels=labels,
        name="synthetic",
        split=split,
        num_classes=num_classes,
        mean=(0.0,) * shape[0],
        std=(1.0,) * shape[0],
        indices=indices,
    )


def _generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one independent random stream of ``seed`` (well mixed by numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ---------------------------------------------------------------------------------------------------------------
# finding files


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/normlib`` (default ``~/.cache/normlib``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "normlib"


@cache
def debian_fashion_mnist_dir() -> Path:
    """Where Debian's ``dataset-fashion-mnist`` keeps its files: asked of ``dpkg -L``, else the known folder."""
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.endswith("/train-images-idx3-ubyte.gz"):
                return Path(line).parent
    return DEBIAN_FASHION_MNIST_DIR


def search_path(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders looked in for ``name``, in order."""
    if root is not None:
        return [Path(root) / name]
    folders = [Path(os.environ["NORMLIB_DATA"]) / name] if os.environ.get("NORMLIB_DATA") else []
    folders.append(user_cache_dir() / name)
    if name == "fashion-mnist":
        folders.append(debian_fashion_mnist_dir())
    return folders


def _download_dir(root: str | os.PathLike | None) -> Path:
    """Where :func:`fetch` writes: ``root``, else ``$NORMLIB_DATA``, else the user cache."""
    if root is not None:
        return Path(root)
    return Path(os.environ["NORMLIB_DATA"]) if os.environ.get("NORMLIB_DATA") else user_cache_dir()


def _local_copy(folder: Path, source: Source) -> Path | None:
    return next((folder / n for n in source.local_names if (folder / n).is_file()), None)


def _find(name: str, split: str, root: str | os.PathLike | None) -> Path | None:
    """The first folder on the search path holding every file the split needs."""
    sources = [SOURCES[f] for f in _FILES[name][split]]
    return next((d for d in search_path(name, root) if all(_local_copy(d, s) for s in sources)), None)


def require(name: str, root: str | os.PathLike | None = None) -> None:
    """Check, without reading them, that both splits of dataset ``name`` are on the search path (nothing to check
    for ``synthetic``), so a run can stop at once instead of failing after minutes of compute.

    Raises:
        DataNotFoundError: a split is missing; the message lists where it looked and the command that fetches it.
    """
    _check_choice("dataset", name, DATASETS)
    if name == "synthetic":
        return
    for split in ("train", "test"):
        if _find(name, split, root) is None:
            raise DataNotFoundError(_not_found_message(name, split, root))


def _fetch_command(name: str) -> str:
    return f"python -m normlib fetch {name}"


def _not_found_message(name: str, split: str, root: str | os.PathLike | None) -> str:
    names = " and ".join(SOURCES[f].filename for f in _FILES[name][split])
    looked = "\n".join(f"  - {d}" for d in search_path(name, root))
    ways = [
        f"  {_fetch_command(name)}    (download from upstream into {_download_dir(root) / name}, checksum-verified)",
        "  or pass download=True to load_dataset",
    ]
    if name == "fashion-mnist":
        ways.insert(0, "  apt-get install dataset-fashion-mnist    (Debian/Ubuntu; run as root or with sudo)")
    return (
        f"{name} ({split} split) not found: no folder holds {names}. Looked in:\n{looked}\n"
        f"Set NORMLIB_DATA to a folder that holds {name}/ or get the files with:\n" + "\n".join(ways)
    )


def _refetch_hint(name: str, path: Path) -> str:
    if name == "fashion-mnist" and Path(path).is_relative_to(debian_fashion_mnist_dir()):
        return "Reinstall it with: apt-get install --reinstall dataset-fashion-mnist"
    return (
        f"Delete it and fetch it again with: {_fetch_command(name)} "
        f"(or load_dataset(..., download=True) when it lies in the download folder)"
    )


# ---------------------------------------------------------------------------------------------------------------
# reading and verifying files


def read_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes (the MNIST format) of unsigned bytes into a new array, validating magic number and dims.

    The header is two zero bytes, the type code ``0x08`` (uint8), the number of dimensions, then each dimension
    as a big-endian uint32; the data must fill exactly the product of the dimensions.
    """
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise CorruptDataError(f"bad IDX magic number {data[:4].hex() or '(empty)'} (want 000008 then 1-4 dimensions)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDataError(f"truncated IDX header ({len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise CorruptDataError(
            f"IDX dims {dims} need {expected} bytes, the data has {len(data)} "
            f"({'truncated' if len(data) < expected else 'trailing bytes'})"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


#: Verified IDX arrays already read by this process, by file and its ``stat`` (size, modification time, inode):
#: a chapter loads the same split dozens of times, and decompressing and checksumming it is most of a load. A file
#: replaced or edited since is read (and verified) again. The arrays are never handed out: callers get copies.
_IDX_READ: dict[tuple[str, int, int, int], np.ndarray] = {}


def _read_verified_idx(folder: Path, source: Source, name: str) -> tuple[np.ndarray, Path]:
    """Find, decompress (if gzipped), parse and checksum one IDX file; return the array (a fresh copy; the verified
    content is remembered for this process, keyed by the file's ``stat``) and the file read."""
    path = _local_copy(folder, source)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _IDX_READ:
        return _IDX_READ[key].copy(), path
    array = _parse_verified_idx(path, source, name)
    # a file modified in the last seconds could change again within the clock's resolution, keeping its stat:
    # it is not remembered (git's "racy" rule)
    if time.time_ns() - stat.st_mtime_ns > 2_000_000_000:
        if len(_IDX_READ) >= 8:
            _IDX_READ.clear()
        _IDX_READ[key] = array.copy()
    return array, path


def _parse_verified_idx(path: Path, source: Source, name: str) -> np.ndarray:
    data = path.read_bytes()
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptDataError(
            f"{path} is corrupt: truncated or damaged gzip stream ({err}). {_refetch_hint(name, path)}"
        ) from err
    try:
        array = read_idx(data)
    except CorruptDataError as err:
        raise CorruptDataError(f"{path} is corrupt: {err}. {_refetch_hint(name, path)}") from err
    digest = hashlib.md5(data).hexdigest()
    if digest != source.content_md5:
        raise CorruptDataError(
            f"{path} is corrupt: md5 of its IDX content is {digest}, expected "
            f"{source.content_md5}. {_refetch_hint(name, path)}"
        )
    return array


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cifar(path: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` and labels of one split, from the official tarball (checksummed before unpickling)."""
    source = SOURCES[path.name]
    digest = _md5_file(path)
    if digest != source.content_md5:
        raise CorruptDataError(
            f"{path} is corrupt: md5 {digest}, expected {source.content_md5}. {_refetch_hint(name, path)}"
        )
    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in _CIFAR_MEMBERS[name][split]:
                batch = pickle.load(tar.extractfile(member), encoding="bytes")
                images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[_CIFAR_LABEL_KEY[name]], np.int64))
    except (OSError, EOFError, KeyError, ValueError, TypeError, tarfile.TarError, pickle.UnpicklingError) as err:
        raise CorruptDataError(f"{path} is corrupt: {err!r}. {_refetch_hint(name, path)}") from err
    images, labels = np.concatenate(images), np.concatenate(labels)
    if len(images) != len(labels):
        raise CorruptDataError(
            f"{path} is corrupt: {len(images)} images but {len(labels)} labels. {_refetch_hint(name, path)}"
        )
    return images, labels


# ---------------------------------------------------------------------------------------------------------------
# downloading


def fetch(name: str, root: str | os.PathLike | None = None) -> Path:
    """Download every file of ``name`` that is missing or corrupt into its download folder and return that folder.

    The folder is ``root/<name>``, else ``$NORMLIB_DATA/<name>``, else the user cache's ``<name>``. Each file is
    streamed into a temporary file beside its destination, checked against the publisher's md5, and only then
    moved into place (``os.replace``); any failure removes the temporary file.
    """
    _check_choice("name", name, tuple(_FILES))
    folder = _download_dir(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for filename in dict.fromkeys(f for files in _FILES[name].values() for f in files):
        source = SOURCES[filename]
        if not _is_valid(folder, source, name):
            _download(source, folder / source.filename)
    return folder


def _is_valid(folder: Path, source: Source, name: str) -> bool:
    """Whether ``folder`` holds a copy of ``source`` that passes its checks."""
    path = _local_copy(folder, source)
    if path is None:
        return False
    if not source.is_idx:
        return _md5_file(path) == source.content_md5
    try:
        _read_verified_idx(folder, source, name)
    except CorruptDataError:
        return False
    return True


def _download(source: Source, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urlopen(source.url, timeout=60) as response:
            total = response.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total else None, unit="B", unit_scale=True, desc=f"fetch {source.filename}"
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != source.md5:
            raise CorruptDataError(
                f"download of {source.url} has md5 {digest.hexdigest()}, expected {source.md5}; "
                f"nothing was saved (a damaged transfer, or the upstream file changed)"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------------
# batching


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    augment: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches ``(x, y)`` of ``dataset`` by direct tensor indexing (no ``DataLoader``, no worker processes).

    The order (a permutation when ``shuffle``) and the flips depend only on ``(seed, epoch)``: the same arguments
    give the same batches, bit for bit, and a new epoch gives a new order. ``augment`` flips each image
    horizontally with probability 1/2 (the papers' training augmentation; pass ``augment=True`` for training
    only); the coin flips for the whole epoch are drawn at once, so they do not depend on ``batch_size``.
    ``drop_last`` drops a final batch smaller than ``batch_size``.
    """
    _check_count("batch_size", batch_size, 1)
    _check_seed(seed)
    _check_count("epoch", epoch, 0)
    n = len(dataset)
    g = _generator(seed, _BATCHES, epoch)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    flips = torch.rand(n, generator=g) < 0.5 if augment else None
    device = dataset.images.device
    order = order.to(device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        x, y = dataset.images[idx], dataset.labels[idx]
        if flips is not None:
            flip = flips[start : start + batch_size].to(device)
            x[flip] = x[flip].flip(-1)
        yield x, y
