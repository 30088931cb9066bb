"""Every claim the book checks, as a record that computes both sides and can fail.

A :class:`ClaimCheck` holds the claim's id, the paper it comes from, the statement in the book's words, the
predicted and the measured value, the tolerance and the verdict. The comparison helpers (:func:`check_close`,
:func:`check_at_most`, :func:`check_at_least`) build one from a prediction and a measurement; nothing here ever
types in a measured number.

The registry maps each notebook's experiment to the function that evaluates its claims; ``python -m normlib claims``
runs all of them at the book's defaults.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "ClaimCheck",
    "check_close",
    "check_at_most",
    "check_at_least",
    "check_true",
    "to_frame",
    "verdict_sentence",
    "write_json",
    "report",
    "RUN_DIR_ENV",
]

#: When set (``python -m normlib run`` sets it), :func:`report` also writes ``claims.json`` into that folder.
RUN_DIR_ENV = "NORMLIB_RUN_DIR"


@dataclass(frozen=True)
class ClaimCheck:
    """One checked claim. ``source`` says whose statement the prediction is: ``"paper"`` (the paper's own),
    ``"derived"`` (derived in this book) or ``"known"`` (a published result from outside the paper, cited where it
    is used, e.g. the Fuss–Catalan law of random matrix theory)."""

    id: str
    paper: str
    statement: str
    predicted: float
    measured: float
    tolerance: str
    passed: bool
    source: str = "derived"

    @property
    def verdict(self) -> str:
        return "reproduced" if self.passed else "not reproduced"


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def check_close(
    id: str,
    paper: str,
    statement: str,
    predicted: float,
    measured: float,
    *,
    rel_tol: float | None = None,
    abs_tol: float | None = None,
    source: str = "derived",
) -> ClaimCheck:
    """Passes when ``|measured - predicted| <= max(rel_tol * |predicted|, abs_tol)``; a non-finite side fails."""
    if rel_tol is None and abs_tol is None:
        raise ValueError("check_close needs rel_tol or abs_tol")
    bound = max((rel_tol or 0.0) * abs(predicted), abs_tol or 0.0) if _finite(predicted) else float("nan")
    passed = _finite(predicted, measured) and abs(measured - predicted) <= bound
    parts = ([f"±{rel_tol:.0%}"] if rel_tol is not None else []) + ([f"±{abs_tol:g}"] if abs_tol is not None else [])
    return ClaimCheck(id, paper, statement, float(predicted), float(measured), " or ".join(parts), bool(passed), source)


def check_at_most(
    id: str, paper: str, statement: str, bound: float, measured: float, *, source: str = "derived"
) -> ClaimCheck:
    """Passes when ``measured <= bound``; the bound is reported as the prediction."""
    passed = _finite(bound, measured) and measured <= bound
    return ClaimCheck(id, paper, statement, float(bound), float(measured), "at most", bool(passed), source)


def check_at_least(
    id: str, paper: str, statement: str, bound: float, measured: float, *, source: str = "derived"
) -> ClaimCheck:
    """Passes when ``measured >= bound``; the bound is reported as the prediction."""
    passed = _finite(bound, measured) and measured >= bound
    return ClaimCheck(id, paper, statement, float(bound), float(measured), "at least", bool(passed), source)


def check_true(
    id: str,
    paper: str,
    statement: str,
    predicted: float,
    measured: float,
    passed: bool,
    tolerance: str,
    *,
    source: str = "derived",
) -> ClaimCheck:
    """A check whose verdict was computed by the caller (e.g. an ordering); both sides are still recorded."""
    return ClaimCheck(id, paper, statement, float(predicted), float(measured), tolerance, bool(passed), source)


def verdict_sentence(checks: list[ClaimCheck]) -> str:
    """One sentence (Markdown) for a page: how many checks reproduce their prediction, and which do not."""
    failed = [c.id for c in checks if not c.passed]
    if not failed:
        return f"All {len(checks)} checks reproduce the prediction."
    return (
        f"{len(checks) - len(failed)} of {len(checks)} checks reproduce the prediction; the others are "
        f"**not reproduced**: {', '.join(failed)}."
    )


def to_frame(checks: list[ClaimCheck]) -> pd.DataFrame:
    """The checks as a table: id, paper, statement, predicted, measured, tolerance, verdict."""
    rows = [{**asdict(c), "verdict": c.verdict} for c in checks]
    columns = ["id", "paper", "source", "statement", "predicted", "measured", "tolerance", "verdict", "passed"]
    return pd.DataFrame(rows, columns=columns)


def _json_number(value: float) -> Any:
    return value if math.isfinite(value) else str(value)


def write_json(checks: list[ClaimCheck], path: str | os.PathLike) -> Path:
    """Write ``claims.json`` (one record per claim: id, predicted, measured, tolerance, passed, ...) atomically."""
    path = Path(path)
    records = [
        {**asdict(c), "predicted": _json_number(c.predicted), "measured": _json_number(c.measured)} for c in checks
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def report(checks: list[ClaimCheck]) -> pd.DataFrame:
    """The table a notebook shows in its *Claim check* section; also writes ``claims.json`` under ``normlib run``."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if run_dir:
        write_json(checks, Path(run_dir) / "claims.json")
    frame = to_frame(checks).drop(columns=["passed"])
    return frame.style.format({"predicted": "{:.4g}", "measured": "{:.4g}"}).hide(axis="index")
