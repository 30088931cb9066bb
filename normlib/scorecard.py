"""The book's scorecard: every claim of every chapter, evaluated over seeds, with what each verdict is worth.

:func:`evaluate` runs chapters (through the result cache) at each seed and returns one tidy row per (claim, seed).
:func:`robustness` folds the seeds: a row counts as **reproduced** only when it passes at every seed evaluated,
and ``seeds_reproduced`` says at how many it did. :func:`headline` counts the ``paper`` and ``derived`` rows (the
claims about the papers); ``known`` and ``identity`` rows are sanity checks beneath it. :func:`gate` lists the rows
whose verdict differs from the one the book expects, and :func:`not_discriminating` those that cannot tell their
claim from its alternative. The command line (``python -m normlib claims``) and the scorecard page both use these.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import torch

from normlib import claims
from normlib.experiments import EXPERIMENTS, get_experiment

__all__ = [
    "BOOK_SEEDS",
    "device_only_rows",
    "evaluate",
    "robustness",
    "headline",
    "gate",
    "not_discriminating",
    "deviation",
    "device_differences",
    "plot",
]

#: The seeds every reproduced row must hold at.
BOOK_SEEDS = (0, 1, 2)

#: Columns of :func:`evaluate`, in order (``--json`` writes them all).
COLUMNS = [
    "notebook",
    "seed",
    "id",
    "kind",
    "paper",
    "statement",
    "alternative",
    "predicted",
    "measured",
    "tolerance",
    "passed",
    "expected",
    "reason",
    "alternative_value",
    "alternative_passed",
    "low",
    "high",
    "judged",
    "precondition",
    "expected_judged",
]


def evaluate_chapter(notebook: str, preset: str, seed: int, executor: Any = None) -> list[dict[str, Any]]:
    """Every claim of one chapter at one seed, as plain records (a sweep sends this to worker processes)."""
    chapter = get_experiment(notebook)
    checks = chapter.evaluate(chapter.resolve(preset, seed=seed), executor=executor)
    return [{"notebook": notebook, "seed": int(seed), **asdict(check)} for check in checks]


def evaluate(
    notebooks: Iterable[str] | None = None,
    seeds: Sequence[int] = BOOK_SEEDS,
    preset: str = "book",
    *,
    jobs: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Every claim of ``notebooks`` (default: all) at each of ``seeds``: one row per (claim, seed) with the
    :data:`COLUMNS`.

    Each (chapter, seed) is one job of a local process pool of ``jobs`` workers (default: one per CPU, or
    ``NORMLIB_WORKERS`` when set), inside which the chapter runs its own pieces one after another, so the cores stay
    busy across chapters; one worker runs everything in this process. Every measurement goes through the result
    cache either way, so the chapters' pages and a second call read what the first computed."""
    from normlib.sweep import local_workers, sweep

    grid = [
        {"notebook": stem, "preset": preset, "seed": int(seed)} for stem in notebooks or EXPERIMENTS for seed in seeds
    ]
    workers = jobs or local_workers()
    if workers == 1:
        records = [evaluate_chapter(**point) for point in grid]
    else:
        order = longest_first(grid)
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread
        ) as pool:
            scheduled = [{**grid[i], "executor": "serial"} for i in order]
            swept = sweep(
                evaluate_chapter,
                scheduled,
                executor=pool,
                cache=False,
                progress=progress,
                desc="claims (chapter x seed)",
            )
        records = [None] * len(grid)
        for i, result in zip(order, swept["result"], strict=True):
            records[i] = result
    return pd.DataFrame([row for rows in records for row in rows], columns=COLUMNS)


def longest_first(grid: Sequence[dict[str, Any]]) -> list[int]:
    """The order in which to start the (chapter, seed) points of ``grid``: longest chapter first (its
    ``book_seconds``), so that no long chapter starts last while the other workers idle; ties keep grid order."""
    return sorted(range(len(grid)), key=lambda i: -get_experiment(grid[i]["notebook"]).book_seconds)


def _one_thread() -> None:
    torch.set_num_threads(1)


def robustness(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: its fields at the first seed, ``seeds`` (how many were evaluated),
    ``seeds_reproduced`` (at how many it passed), ``seeds_judged`` (at how many its precondition held),
    ``reproduced`` (at all of them), ``verdict``: "reproduced", "not judged" (at no seed), else "not
    reproduced", and ``measured_by_seed``: the measured value at each seed, in seed order, as text
    (``-5.6 / -0.9 / 0.3``), the seed table a reader checks a "varies" or a 2-of-3 verdict against."""
    rows = rows.assign(judged=rows["judged"] if "judged" in rows else True)
    first = rows.sort_values("seed").groupby(["notebook", "id"], sort=False).first().reset_index()
    first = first.drop(columns="judged")
    grouped = rows.groupby(["notebook", "id"], sort=False)
    counts = (
        grouped["passed"].agg(seeds="count", seeds_reproduced="sum").join(grouped["judged"].agg(seeds_judged="sum"))
    )
    out = first.merge(counts.reset_index(), on=["notebook", "id"])
    in_seed_order = rows.sort_values("seed", kind="stable").groupby(["notebook", "id"], sort=False)
    by_seed = in_seed_order["measured"].agg(lambda v: " / ".join(_short(x) for x in v)).rename("measured_by_seed")
    out = out.merge(by_seed.reset_index(), on=["notebook", "id"])
    out["reproduced"] = out["seeds_reproduced"] == out["seeds"]
    out["judged"] = out["seeds_judged"] > 0
    out["verdict"] = np.select(
        [out["reproduced"], ~out["judged"]], ["reproduced", "not judged"], default="not reproduced"
    )
    order = {stem: i for i, stem in enumerate(EXPERIMENTS)}
    return out.sort_values("notebook", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def _short(value: Any) -> str:
    """A measured value as the seed table shows it: four significant digits."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def headline(folded: pd.DataFrame) -> dict[str, int]:
    """``reproduced`` of ``claims`` (``paper`` and ``derived`` rows judged at some seed, reproduced at every
    seed), ``not_judged`` (those rows whose precondition held at no seed, counted apart), and the count of rows per
    kind."""
    main = folded[folded["kind"].isin(claims.HEADLINE_KINDS)]
    judged = main["judged"] if "judged" in main else pd.Series(True, index=main.index)
    counts = {f"n_{kind}": int((folded["kind"] == kind).sum()) for kind in claims.KINDS}
    return {
        "claims": int(judged.sum()),
        "reproduced": int(main["reproduced"].sum()),
        "not_judged": int((~judged).sum()),
        **counts,
    }


def gate(rows: pd.DataFrame) -> pd.DataFrame:
    """The (claim, seed) rows whose verdict differs from the verdict the book expects, unexpected passes included.
    A row the book expects to vary with the seed (``expected`` None) differs when it gives the same verdict at
    every seed evaluated (two or more): then it no longer varies, and its expectation must be revisited. A row
    judged where the book expects it not judged (or the other way round) differs whatever its verdict."""
    varies = rows["expected"].isna()
    expected = rows["expected"].where(~varies, False).astype(bool)
    judged = rows["judged"].astype(bool) if "judged" in rows else pd.Series(True, index=rows.index)
    expected_judged = (
        rows["expected_judged"].astype(bool) if "expected_judged" in rows else pd.Series(True, index=rows.index)
    )
    differs = (judged != expected_judged) | (judged & ~varies & (rows["passed"].astype(bool) != expected))
    passed = rows["passed"].astype(bool)
    same = passed.groupby([rows["notebook"], rows["id"]]).transform(lambda s: len(s) >= 2 and s.nunique() == 1)
    return rows[differs | (varies & same.astype(bool))]


def not_discriminating(rows: pd.DataFrame) -> pd.DataFrame:
    """The (claim, seed) rows that cannot tell their claim from its alternative: a non-identity row without an
    alternative, or one that passes and would pass under its alternative too."""
    no_alternative = (rows["alternative"] == "") | rows["alternative_passed"].isna()
    passes_both = rows["passed"] & (rows["alternative_passed"] == True)  # noqa: E712 (None stays False)
    return rows[(rows["kind"] != "identity") & (no_alternative | passes_both)]


def device_differences(report: str | os.PathLike[str], rows: pd.DataFrame) -> pd.DataFrame:
    """The (claim, seed) verdicts that another device's run of the book preset gives differently from ``rows``
    (this build's): ``report`` is a JSON file with ``{"book": {seed: {notebook: {"rows": {id: {"passed",
    "predicted", "measured"}}}}}}`` (as ``reference/gpu-*/device_report.json``). One row per difference:
    ``notebook, seed, id, here, there, predicted, measured`` (the other device's values)."""
    with open(report, encoding="utf-8") as f:
        book = json.load(f)["book"]
    here = rows.set_index(["notebook", "seed", "id"])["passed"]
    out = []
    for seed, chapters in book.items():
        for notebook, result in chapters.items():
            for cid, row in result.get("rows", {}).items():
                key = (notebook, int(seed), cid)
                if key in here.index and bool(here[key]) != bool(row["passed"]):
                    out.append(
                        {
                            "notebook": notebook,
                            "seed": int(seed),
                            "id": cid,
                            "here": bool(here[key]),
                            "there": bool(row["passed"]),
                            "predicted": row["predicted"],
                            "measured": row["measured"],
                        }
                    )
    columns = ["notebook", "seed", "id", "here", "there", "predicted", "measured"]
    return pd.DataFrame(out, columns=columns).sort_values(["notebook", "id", "seed"]).reset_index(drop=True)


def device_only_rows(report: str | os.PathLike[str], rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that another device's run has and this build has not (a CUDA-only arm), one per (claim, seed):
    ``notebook, seed, id, there, predicted, measured``, from a report as :func:`device_differences` reads."""
    with open(report, encoding="utf-8") as f:
        book = json.load(f)["book"]
    here = set(zip(rows["notebook"], rows["id"]))
    out = [
        {
            "notebook": notebook,
            "seed": int(seed),
            "id": cid,
            "there": bool(row["passed"]),
            "predicted": row["predicted"],
            "measured": row["measured"],
        }
        for seed, chapters in book.items()
        for notebook, result in chapters.items()
        for cid, row in result.get("rows", {}).items()
        if (notebook, cid) not in here
    ]
    columns = ["notebook", "seed", "id", "there", "predicted", "measured"]
    return pd.DataFrame(out, columns=columns).sort_values(["notebook", "id", "seed"]).reset_index(drop=True)


def deviation(row: pd.Series | dict[str, Any]) -> float:
    """Where the measurement lies against its pass interval ``[low, high]``, in units of the tolerance: for a
    two-sided interval, (measured - centre) / half-width (it passes within ±1); for a bound, the relative
    distance from it, positive on the failing side (it passes at or below 0). NaN without an interval."""
    low, high, measured = float(row["low"]), float(row["high"]), float(row["measured"])
    if math.isnan(low) or math.isnan(high) or math.isnan(measured):
        return math.nan
    if math.isinf(high) and not math.isinf(low):
        return (low - measured) / max(abs(low), 1e-300)
    if math.isinf(low) and not math.isinf(high):
        return (measured - high) / max(abs(high), 1e-300)
    half = (high - low) / 2
    return (measured - (low + high) / 2) / half if half > 0 else math.copysign(math.inf, measured - low)


def plot(folded: pd.DataFrame, ax: Any = None) -> Any:
    """One row per check: where its measurement lies against its tolerance (:func:`deviation`, symmetric-log axis;
    the band is where it passes), coloured by verdict, marked by kind, grouped by chapter. Rows whose verdict is
    computed by the caller (an ordering, a count) sit at 0 or at the failing edge."""
    import matplotlib.pyplot as plt

    from normlib import plotting

    folded = folded.reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.18 * len(folded) + 1.5))
    markers = {"paper": "o", "derived": "s", "known": "D", "identity": "x"}
    limit = 1e3
    y = np.arange(len(folded))[::-1]
    for i, row in folded.iterrows():
        value = deviation(row)
        two_sided = not (math.isinf(float(row["low"])) or math.isinf(float(row["high"])))
        if math.isnan(value):
            value = 0.0 if row["passed"] else limit
        value = float(np.clip(value, -limit, limit))
        band = (-1, 1) if two_sided else (-limit, 0)
        ax.plot(band, [y[i], y[i]], color="0.85", lw=4, solid_capstyle="butt", zorder=1)
        color = plotting.VERDICT_COLORS[row["verdict"]]
        ax.scatter([value], [y[i]], marker=markers[row["kind"]], color=color, s=28, zorder=3)
    ax.axvline(0, color="0.5", lw=0.6)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(-limit * 1.5, limit * 1.5)
    ax.set_yticks(y, folded["id"], fontsize=7)
    starts = folded.groupby("notebook", sort=False).head(1).index
    for start in starts[1:]:
        ax.axhline(y[start] + 0.5, color="0.7", lw=0.6)
    ax.set_xlabel("deviation in units of the tolerance (grey: where a row passes; + is the failing side of a bound)")
    handles = [plt.Line2D([], [], marker=m, ls="", color="0.3", label=k) for k, m in markers.items()]
    handles += [plt.Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in plotting.VERDICT_COLORS.items()]
    ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=True)
    return ax
