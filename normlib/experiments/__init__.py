"""What each notebook measures, one module per notebook, and the registry that maps a notebook to its experiment.

Every experiment module defines one :class:`~normlib.experiments.protocol.Experiment` subclass and an instance of it,
``EXPERIMENT``: its parameters (``spec``), ``resolve``, ``measure`` (cached, on any executor), ``predict``,
``check``, ``summary`` and ``evaluate``. :func:`get_experiment` returns that instance; the notebooks, the
scorecard and the command line all go through it. The module keeps the chapter's helpers (curves, tables) that
its notebook draws.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from normlib.experiments.protocol import Experiment

__all__ = ["EXPERIMENTS", "get_experiment", "notebook_stem"]

#: Notebook stem -> module that computes it.
EXPERIMENTS: dict[str, str] = {
    "01_stable_forward": "normlib.experiments.stable_forward",
    "02_informative_forward": "normlib.experiments.informative_forward",
    "03_stable_backward": "normlib.experiments.stable_backward",
    "04_compass": "normlib.experiments.compass",
    "05_large_learning_rates": "normlib.experiments.large_learning_rates",
    "06_unnormalized_pathologies": "normlib.experiments.unnormalized_pathologies",
    "07_weight_decay_effective_lr": "normlib.experiments.weight_decay",
    "08_lp_batchnorm_low_precision": "normlib.experiments.lp_batchnorm",
}


def notebook_stem(notebook: str | Path) -> str:
    """``notebooks/01_stable_forward.md``, ``01_stable_forward.md`` and ``01_stable_forward`` all name one notebook."""
    return Path(str(notebook)).name.removesuffix(".md").removesuffix(".ipynb")


def get_experiment(notebook: str | Path) -> Experiment:
    """The experiment behind ``notebook``; an unknown one is an error that lists the known notebooks."""
    stem = notebook_stem(notebook)
    if stem not in EXPERIMENTS:
        raise ValueError(f"unknown notebook {stem!r}; allowed: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[stem]).EXPERIMENT
