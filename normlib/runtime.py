"""Where code runs and what produced a result: device choice, seeding, provenance for footers and ``claims.json``."""

from __future__ import annotations

import contextlib
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from normlib.params import ParameterError

__all__ = ["DEVICES", "resolve_device", "derive_seed", "provenance", "provenance_table", "Stopwatch", "torch_threads"]

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when a GPU is present, else the CPU; ``"cuda"`` without a GPU is a
    :class:`~normlib.params.ParameterError` (a ``ValueError``) naming the parameter."""
    if name not in DEVICES:
        raise ParameterError(f"parameter 'device': invalid value {name!r}; allowed: one of: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("parameter 'device': 'cuda' was asked for but torch sees no GPU; use 'cpu' or 'auto'")
    return torch.device(name)


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for one independent piece of an experiment (a repeat, a grid point), stable across runs.

    The pieces of one experiment get independent streams through :class:`numpy.random.SeedSequence`: the entropy
    is ``[seed, *parts]``, so ``(seed, part)`` never collides with another seed's pieces (an arithmetic mix such as
    ``seed * K + part`` does: ``derive_seed(0, 1)`` could equal ``derive_seed(1, 0)``). The result is a 31-bit
    integer, valid for ``torch.manual_seed`` and ``numpy.random.default_rng`` alike."""
    for value in (seed, *parts):
        if int(value) < 0:
            raise ValueError(f"derive_seed: seeds and parts are non-negative integers, got {value!r}")
    state = np.random.SeedSequence([int(seed), *map(int, parts)]).generate_state(1, dtype=np.uint32)[0]
    return int(state) >> 1


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("+dirty" if dirty.stdout.strip() else "")


class Stopwatch:
    """Wall time since construction, for the provenance footer."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def provenance(config: dict[str, Any], stopwatch: Stopwatch | None = None) -> dict[str, Any]:
    """Commit, parameters, library and torch versions, device and wall time of a run."""
    from normlib import __version__

    device = resolve_device(config.get("device", "cpu")) if "device" in config else torch.device("cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    record = {
        "commit": _git_commit(),
        "normlib": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": gpu or f"cpu ({torch.get_num_threads()} threads)",
        "parameters": dict(config),
    }
    if stopwatch is not None:
        record["wall_time_s"] = round(stopwatch.seconds, 1)
    return record


def provenance_table(config: Any, stopwatch: Stopwatch | None = None) -> pd.DataFrame:
    """:func:`provenance` as a small table for the page: commit, versions, device, wall time, the preset, and the
    parameters set differently from it (all of them are in the run folder's ``parameters.json``)."""
    record = provenance(config, stopwatch)
    changed = config.changed() if hasattr(config, "changed") else {}
    rows = [
        ("commit", record["commit"]),
        ("normlib / torch / python", f"{record['normlib']} / {record['torch']} / {record['python']}"),
        ("device", record["device"]),
        ("preset", str(config.get("preset", ""))),
        ("parameters set", "; ".join(f"{k} = {v}" for k, v in changed.items()) or "none (the preset's values)"),
    ]
    if "wall_time_s" in record:
        rows.append(("wall time", f"{record['wall_time_s']:.0f} s"))
    return pd.DataFrame(rows, columns=["", "value"])


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op CPU threads (None: unchanged) and restore the setting afterwards. The
    book's networks are so small that splitting each op over threads costs more than it saves: one thread is
    faster on two cores, and far faster on a busy machine."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
