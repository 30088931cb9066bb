"""Outside measurements the repository keeps in ``reference/<run>/`` (GPU runs at a scale the CPU build cannot reach),
read into frames for the pages. Each folder holds its script, its raw JSON and a README with the device, data and
recipe. They are references, not book results: no claim row is computed from them.

A run's ``device_report.json`` (``reference/gpu-h200-2026-11-26/run_device.py``) has, among others:

* ``similarity_speed``: one record per (normalizer, seed) on the paper's 10-layer CNN, with the cosine between
  samples at the last layer at initialization (``init_cosine``) and the mean training accuracy over the run;
* ``tradeoff``: one record per (normalizer, group size, peak learning rate, batch size, seed), with ``diverged``,
  the mean loss over the last tenth of the run (``last10``), ``spikes`` and ``test_acc``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["find", "load", "tradeoff", "similarity_speed", "FAILED_LOSS_FRACTION"]

#: A run "failed to learn" when its late loss is at least this fraction of ln(classes), the loss of a uniform guess.
FAILED_LOSS_FRACTION = 0.95


def find(run: str, start: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``reference/<run>`` in ``start`` (default: the working directory) or the nearest folder above it.

    Raises:
        FileNotFoundError: no such folder above ``start``; the message names the run and where it looked.
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "reference" / run
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"reference run {run!r} not found in {here} or any folder above it (looked for reference/{run}/); "
        "run from inside a checkout of the repository"
    )


def load(run: str, name: str = "device_report.json", start: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON file ``name`` of the reference run ``run`` (see :func:`find`)."""
    with open(find(run, start) / name, encoding="utf-8") as f:
        return json.load(f)


def tradeoff(report: dict[str, Any], classes: int = 10) -> pd.DataFrame:
    """The speed-stability runs of ``report``, one row each: ``norm, group_size, batch_size, steps`` (of the run;
    fewer when it diverged), ``peak_lr, seed, last10, diverged, diverged_step, failed, spikes, test_acc``.
    ``failed``: diverged, or a last-tenth loss of at least :data:`FAILED_LOSS_FRACTION` x ln(``classes``) (it never
    learned, or forgot)."""
    floor = FAILED_LOSS_FRACTION * math.log(classes)
    rows = []
    for r in report.get("tradeoff", []):
        if "error" in r:
            continue
        last10 = float(r["last10"])
        rows.append(
            {
                "norm": r["norm"],
                "group_size": r.get("group_size") or 0,
                "batch_size": int(r["batch_size"]),
                "steps": int(r["steps"]),
                "peak_lr": float(r["peak_lr"]),
                "seed": int(r["seed"]),
                "last10": last10,
                "diverged": bool(r["diverged"]),
                "diverged_step": r.get("diverged_step"),
                "failed": bool(r["diverged"]) or not math.isfinite(last10) or last10 >= floor,
                "spikes": int(r["spikes"]),
                "test_acc": float(r["test_acc"]),
            }
        )
    return pd.DataFrame(rows)


def similarity_speed(report: dict[str, Any]) -> pd.DataFrame:
    """The similarity-speed runs of ``report``, one row each: ``norm, seed, steps (run; fewer when it diverged),
    init_cosine, mean_train_acc, test_acc, diverged``."""
    rows = [
        {
            "norm": r["norm"],
            "seed": int(r["seed"]),
            "steps": int(r["steps"]),
            "init_cosine": float(r["init_cosine"]),
            "mean_train_acc": float(r["mean_train_acc"]),
            "test_acc": float(r["test_acc"]),
            "diverged": bool(r["diverged"]),
        }
        for r in report.get("similarity_speed", [])
        if "error" not in r
    ]
    return pd.DataFrame(rows)
