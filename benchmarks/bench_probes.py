"""The cost of probes during training: a step with probes on, every step, against the same step without.

The step is :func:`normlib.train.train`'s (forward, cross-entropy, backward, SGD update, one synchronization) for
the book's small CNN (``presets.BOOK_CNN`` with BN) on a batch of 128 Fashion-MNIST-shaped images, with
``probe_metrics = (variance, cosine, stable_rank, grad_norm)`` at every probe point, sampled at every step and at
every 10th step (converting the records into the probe frame included). Target: <= 1.10x the step without probes.

Run: ``python benchmarks/bench_probes.py``.
"""

from __future__ import annotations

import torch

from _common import Row, interleaved, machine_note
from normlib import data, models
from normlib.presets import BOOK_CNN
from normlib.train import TrainConfig, train

METRICS = ("variance", "cosine", "stable_rank", "grad_norm")
BATCH = 128
STEPS = 20


def main(rounds: int = 7) -> list[Row]:
    images = data.load_dataset("synthetic", shape=(1, 28, 28), num_classes=10, size=BATCH * STEPS)
    torch.manual_seed(0)
    model = models.make_cnn(norm="bn", **BOOK_CNN)
    plain = TrainConfig(lr=0.01, batch_size=BATCH, epochs=1, device="cpu")
    every_step = TrainConfig(**{**plain.to_dict(), "probe_metrics": METRICS, "probe_every": 1})
    every_tenth = TrainConfig(**{**plain.to_dict(), "probe_metrics": METRICS, "probe_every": 10})
    times = interleaved(
        {
            "plain": lambda: train(model, images, config=plain),
            "every step": lambda: train(model, images, config=every_step),
            "every 10th": lambda: train(model, images, config=every_tenth),
        },
        number=1,
        rounds=rounds,
        warmup=1,
    )
    print(
        f"bench_probes: {STEPS} training steps, batch {BATCH}, book CNN, probes {', '.join(METRICS)}; {machine_note()}"
    )
    rows = []
    for name in ("every step", "every 10th"):
        ratio = times[name] / times["plain"]
        print(
            f"  without probes {1e3 * times['plain'] / STEPS:7.2f} ms/step   probes {name:>10} "
            f"{1e3 * times[name] / STEPS:7.2f} ms/step   ratio {ratio:.3f}"
        )
        rows.append(Row("probes", f"training step, probes {name} / without", ratio, 1.10))
    return rows


if __name__ == "__main__":
    main()
