"""One look for the whole book: a seaborn theme, one colour per normalizer, theory-vs-measurement helpers.

Measurements are drawn as markers with a band (the spread over repeats); predictions as a line in the same colour,
dashed. A normalizer has the same colour on every page.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

__all__ = [
    "NORM_COLORS",
    "VERDICT_COLORS",
    "set_theme",
    "norm_color",
    "norm_label",
    "group_size_color",
    "plot_measured",
    "plot_predicted",
]

#: Colour of each normalizer, fixed across the book (seaborn's colorblind palette first, then muted extras).
NORM_COLORS: dict[str, str] = {
    "bn": "#0173b2",
    "ln": "#de8f05",
    "in": "#029e73",
    "gn": "#d55e00",
    "frn": "#cc78bc",
    "vn": "#ca9161",
    "wn": "#fbafe4",
    "sws": "#949494",
    "evo_b0": "#ece133",
    "evo_s0": "#56b4e9",
    "none": "#000000",
    "rms": "#8c564b",
    "l1bn": "#17becf",
    "linfbn": "#9467bd",
    "topkbn": "#7f7f7f",
    "bwn": "#bcbd22",
}

#: Colour of each verdict, on the scorecard and wherever a page colours its verdicts.
VERDICT_COLORS: dict[str, str] = {"reproduced": "#029e73", "not reproduced": "#b00020", "not judged": "#7f7f7f"}

_LABELS = {
    "bn": "BatchNorm",
    "ln": "LayerNorm",
    "in": "InstanceNorm",
    "gn": "GroupNorm",
    "frn": "FRN + TLU",
    "vn": "VarianceNorm",
    "wn": "WeightNorm",
    "sws": "Scaled WS",
    "evo_b0": "EvoNorm-B0",
    "evo_s0": "EvoNorm-S0",
    "none": "no normalizer",
    "rms": "RMSNorm",
    "l1bn": "L1 BatchNorm",
    "linfbn": "L∞ BatchNorm",
    "topkbn": "Top-k BatchNorm",
    "bwn": "Bounded WN",
}


def set_theme() -> None:
    """The book's one theme: seaborn ``whitegrid``, ``notebook`` context, readable figure size."""
    sns.set_theme(
        style="whitegrid",
        context="notebook",
        rc={"figure.figsize": (7.5, 4.5), "figure.dpi": 110, "axes.spines.right": False, "axes.spines.top": False},
    )


def norm_color(name: str) -> str:
    """The colour of normalizer ``name``; a user's own normalizer gets a stable colour derived from its name."""
    if name in NORM_COLORS:
        return NORM_COLORS[name]
    palette = sns.color_palette("husl", 16).as_hex()
    return palette[sum(map(ord, name)) % len(palette)]


def norm_label(name: str) -> str:
    """Human name of normalizer ``name`` for legends."""
    return _LABELS.get(name, name)


def plot_measured(
    ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, norm: str, *, label: str | None = None, marker: str = "o"
) -> None:
    """Markers at the mean of ``y`` over repeats at each ``x``, with a band from the minimum to the maximum."""
    stats = frame.groupby(x)[y].agg(["mean", "min", "max"]).reset_index()
    color = norm_color(norm)
    ax.plot(
        stats[x],
        stats["mean"],
        marker=marker,
        ms=3.5,
        lw=1.0,
        color=color,
        label=label if label is not None else norm_label(norm),
    )
    if frame.groupby(x)[y].size().max() > 1:
        ax.fill_between(stats[x], stats["min"], stats["max"], color=color, alpha=0.2, lw=0)


def plot_predicted(ax: plt.Axes, x: np.ndarray, y: np.ndarray, norm: str, *, label: str | None = None) -> None:
    """The prediction as a dashed line in the normalizer's colour."""
    ax.plot(x, y, ls="--", lw=1.6, color=norm_color(norm), label=label)


def group_size_color(group_size: int) -> str:
    """The colour of GroupNorm with ``group_size`` channels per group, fixed across the book: a sequential palette
    over the powers of two 1 ... 512 (viridis, from InstanceNorm's end in purple to LayerNorm's in yellow)."""
    palette = sns.color_palette("viridis", 10).as_hex()
    index = int(round(np.log2(max(1, group_size))))
    return palette[min(max(index, 0), len(palette) - 1)]
