"""Module-level functions for tests/test_sweep.py: worker processes import this module by name.

test_sweep.py puts this folder on ``sys.path``; spawned workers (the local pool's and a Dask ``LocalCluster``'s)
start with their parent's ``sys.path``, so they find it too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def seeded_norm(seed: int, n: int) -> float:
    """A torch computation whose result depends only on its arguments."""
    return float(torch.randn(n, generator=torch.Generator().manual_seed(seed)).norm())


def measure(seed: int, n: int, delay: float = 0.0) -> dict:
    """:func:`seeded_norm` after ``delay`` seconds, and the number of torch threads of the process that ran it."""
    time.sleep(delay)
    return {"norm": seeded_norm(seed, n), "threads": torch.get_num_threads()}


def slow_square(x: int, delay: float = 0.0) -> int:
    """``x * x`` after ``delay`` seconds (to make points finish out of grid order)."""
    time.sleep(delay)
    return x * x


def logged(x: int, log_dir: str) -> int:
    """``10 * x``; every call leaves a file in ``log_dir/calls``; ``x == 2`` raises while ``log_dir/broken`` exists."""
    calls = Path(log_dir, "calls")
    calls.mkdir(exist_ok=True)
    (calls / f"{x}-{os.getpid()}-{time.time_ns()}").touch()
    if x == 2 and Path(log_dir, "broken").exists():
        raise RuntimeError("point 2 is broken")
    return 10 * x


def process_id(x: int) -> int:
    """The id of the process that computed point ``x``."""
    return os.getpid()
