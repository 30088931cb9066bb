"""The book preset end to end: the small CNN (``presets.BOOK_CNN``, BN) trained on real Fashion-MNIST.

Trains exactly what a notebook at ``preset = "book"`` trains (``training_spec().resolve("book")``, through
``train_config`` and ``train_model``): a class-balanced subset of the training split, batch 128, the paper's SGD
and LR schedule, flips, on the CPU; then evaluates on the whole test split (10 000 images). Target: test accuracy
>= 85 % in <= 60 s of wall time (data loading included) on 2 CPU cores.

The data come from ``normlib.data``'s search path (Debian's ``dataset-fashion-mnist`` package, or
``python -m normlib fetch fashion-mnist``).

Run: ``python benchmarks/bench_train.py``.
"""

from __future__ import annotations

import time

from _common import Row, machine_note
from normlib.presets import BOOK_CNN, dataset_options, train_config, training_spec
from normlib.train import train_model


def main() -> list[Row]:
    config = training_spec().resolve("book")
    cfg = train_config(config)
    start = time.perf_counter()
    result = train_model("cnn", {**BOOK_CNN, "norm": "bn"}, dataset_options(config), cfg.to_dict())
    wall = time.perf_counter() - start
    print(
        f"bench_train: book preset, cnn {BOOK_CNN['cfg']} + BN, {config['subset']} Fashion-MNIST images x "
        f"{cfg.epochs} epochs, batch {cfg.batch_size}, peak LR {cfg.peak_lr:g}; {machine_note()}"
    )
    print(
        f"  test accuracy {result.test_accuracy:.4f}   train accuracy (last epoch) {result.train_accuracy:.4f}   "
        f"wall {wall:.1f} s (training + evaluation {result.wall_time_s:.1f} s)   diverged {result.diverged}"
    )
    return [
        Row("train", "book CNN: test accuracy", result.test_accuracy, 0.85, higher_is_better=True),
        Row("train", "book CNN: wall time (s)", wall, 60.0),
    ]


if __name__ == "__main__":
    main()
