"""Shared by the benchmark scripts: interleaved timing and one row format for ``run_all.py``'s summary."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    """One measured ratio (or value) and its target; ``higher_is_better`` flips the comparison."""

    benchmark: str
    measure: str
    value: float
    target: float
    higher_is_better: bool = False

    @property
    def ok(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def line(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        verdict = "ok" if self.ok else "MISSED"
        return f"{self.benchmark:<8} {self.measure:<44} {self.value:>9.3f}  target {sign} {self.target:<7g} {verdict}"


def seconds(fn: Callable[[], object], number: int) -> float:
    """Mean wall time of one call of ``fn`` over ``number`` consecutive calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleaved(
    candidates: dict[str, Callable[[], object]], number: int, rounds: int, warmup: int = 2
) -> dict[str, float]:
    """Median over ``rounds`` of the mean time of ``number`` calls, the candidates measured in turn in every round.

    Alternating the candidates round by round (in reversed order every other round) exposes them to the same
    background load, so their ratio is far steadier than that of two separate timing runs on a shared machine.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    for _ in range(rounds):
        for name in order:
            samples[name].append(seconds(candidates[name], number))
        order.reverse()  # A B, B A, ...: neither candidate always runs first (caches, turbo, load drift)
    return {name: statistics.median(times) for name, times in samples.items()}


def machine_note() -> str:
    """Threads and, where Linux reports it, how much CPU time others are competing for (pressure stall info)."""
    import torch

    note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()[1]  # "avg10=..." : share of time some task waited for a CPU
        note += f", CPU pressure {some} (above ~10: a shared, noisy machine)"
    except OSError:
        pass
    return note
