"""Sweep speed-up: the same 4 small CPU training runs with 1 worker process, then with 2.

Each point is :func:`normlib.train.train_model` (a 4-layer CNN on synthetic 3x32x32 data, a few epochs), run by
:func:`normlib.sweep.sweep` with the cache off on a spawned ``ProcessPoolExecutor`` with one torch thread per worker
(as the sweep's own pool). Both timings include starting the workers. Target: speed-up >= 1.6 with 2 workers on
2 free cores (ideal 2; the rest goes to worker start-up and to the machine's other load).

Run: ``python benchmarks/bench_sweep.py``.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from _common import Row, machine_note
from normlib.sweep import sweep
from normlib.train import TrainConfig, train_model

GRID = {
    "arch": ["cnn"],
    "model_kwargs": [{"cfg": [32, [32, 2], 64, [64, 2]], "norm": norm} for norm in ("bn", "gn", "ln", "in")],
    "dataset": [{"name": "synthetic", "size": 1024, "test_size": 256}],
    "config": [TrainConfig(lr=0.05, batch_size=64, epochs=4).to_dict()],
}


def _run(workers: int) -> float:
    start = time.perf_counter()
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads,
        initargs=(1,),
    ) as pool:
        sweep(train_model, GRID, executor=pool, cache=False, progress=False)
    return time.perf_counter() - start


def main() -> list[Row]:
    one, two = _run(1), _run(2)
    print(f"bench_sweep: 4 train_model points (cnn, bn/gn/ln/in, synthetic data), cache off; {machine_note()}")
    print(f"  1 worker {one:6.1f} s   2 workers {two:6.1f} s   speed-up {one / two:.2f}")
    return [Row("sweep", "4 points: time 1 worker / 2 workers", one / two, 1.6, higher_is_better=True)]


if __name__ == "__main__":
    main()
