"""Every claim the book checks, as a record that computes both sides and can fail.

A :class:`ClaimCheck` holds the claim's id, the paper it comes from, its ``kind`` of evidence, the statement in the
book's words, the ``alternative`` it must exclude, the predicted and the measured value, the tolerance, the verdict,
and the verdict the book ``expected`` at its defaults (with the ``reason`` for an expected "not reproduced"). The
comparison helpers (:func:`check_close`, :func:`check_at_most`, :func:`check_at_least`, :func:`check_true`) build
one from a prediction and a measurement; nothing here ever types in a measured number.

**Kinds of evidence** (:data:`KINDS`):

- ``paper``: a number or statement of the paper, in a comparable setting;
- ``derived``: this book's model of a paper's mechanism;
- ``known``: published mathematics, checked numerically;
- ``identity``: true by construction, a sanity check that fails only on a bug.

The headline "X of Y reproduced" counts ``paper`` and ``derived`` rows only (:data:`HEADLINE_KINDS`).

**Not judged.** A row whose precondition fails (the paper compares networks trained to convergence, and the book's
budget did not get there) is neither reproduced nor refuted: :func:`not_judged` marks it, its verdict reads "not
judged", it never passes, and the headline counts it apart from the rows that were judged.

**Alternatives.** Every row that is not an identity names the law or value it must exclude, and records the verdict
its own criterion would give *under that alternative* (``alternative_passed``): for :func:`check_close` the
alternative's prediction replaces the prediction; for :func:`check_at_least` and :func:`check_at_most` the value
the measurement would take under the alternative replaces the measurement; :func:`check_true` takes the verdict
under the alternative from its caller. A row that passes and would pass under its alternative as well cannot tell
the two apart (:func:`falsify` lists it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "KINDS",
    "HEADLINE_KINDS",
    "ClaimCheck",
    "check_close",
    "check_at_most",
    "check_at_least",
    "check_true",
    "not_judged",
    "differences",
    "falsify",
    "to_frame",
    "verdict_sentence",
    "write_json",
    "report",
    "RUN_DIR_ENV",
]

#: When set (``python -m normlib run`` sets it), :func:`report` also writes ``claims.json`` into that folder.
RUN_DIR_ENV = "NORMLIB_RUN_DIR"

#: The kinds of evidence, strongest claim to the paper first.
KINDS = ("paper", "derived", "known", "identity")
#: The kinds the headline "X of Y reproduced" counts.
HEADLINE_KINDS = ("paper", "derived")


@dataclass(frozen=True)
class ClaimCheck:
    """One checked claim.

    Attributes:
        id: ``<chapter letter>.<name>``, unique in the book.
        paper: whose claim it is (``Lubana et al. 2021``; ``Yang et al. 2019`` for a ``known`` result).
        statement: the claim in the book's words, with the statistic that is compared.
        predicted, measured: both sides (for a bound, the bound is the prediction).
        tolerance: how close counts, in words (``±15%``, ``at least``).
        passed: the verdict.
        kind: one of :data:`KINDS`.
        alternative: the law or value the row must exclude, in words (empty only for an ``identity``).
        alternative_value: the number standing for the alternative (NaN where the caller gave a verdict only).
        alternative_passed: the verdict the row's criterion gives under its alternative (``None``: none given).
        expected: the verdict the book expects at its defaults; ``None``: the book expects it to vary with the
            seed (a comparison its runs cannot resolve), so no single verdict is a difference, but the same verdict
            at every seed is (:func:`normlib.scorecard.gate`).
        reason: why, when ``expected`` is not ``True``.
        low, high: the interval the measurement must fall in to pass (one side infinite for a bound; NaN for a
            verdict computed by the caller).
        judged: ``False`` when the row's precondition failed (:func:`not_judged`): it cannot pass.
        precondition: the precondition that failed, in words (empty when judged).
        expected_judged: whether the book expects the precondition to hold at its defaults; a row expected not
            judged that is judged (the networks converged) is a difference, whatever its verdict.
    """

    id: str
    paper: str
    statement: str
    predicted: float
    measured: float
    tolerance: str
    passed: bool
    kind: str = "derived"
    alternative: str = ""
    alternative_value: float = math.nan
    alternative_passed: bool | None = None
    expected: bool | None = True
    reason: str = ""
    low: float = math.nan
    high: float = math.nan
    judged: bool = True
    precondition: str = ""
    expected_judged: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.judged and (self.passed or not self.precondition):
            raise ValueError(f"claim {self.id!r}: a row that is not judged cannot pass and needs its precondition")
        if self.expected is not True and not self.reason:
            raise ValueError(f"claim {self.id!r}: an expected 'not reproduced' (or 'varies') needs its reason")

    @property
    def verdict(self) -> str:
        if not self.judged:
            return "not judged"
        return "reproduced" if self.passed else "not reproduced"

    @property
    def discriminates(self) -> bool:
        """Whether the row tells its claim from its alternative: it names one, and its criterion would fail under
        it (identities are exempt)."""
        return self.kind == "identity" or (bool(self.alternative) and self.alternative_passed is False)


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _close(predicted: float, measured: float, rel_tol: float | None, abs_tol: float | None) -> bool:
    bound = max((rel_tol or 0.0) * abs(predicted), abs_tol or 0.0) if _finite(predicted) else math.nan
    return bool(_finite(predicted, measured) and abs(measured - predicted) <= bound)


def _alternative(alternative: tuple[str, float] | str | None) -> tuple[str, float]:
    if alternative is None:
        return "", math.nan
    if isinstance(alternative, str):
        return alternative, math.nan
    text, value = alternative
    return text, float(value)


def check_close(
    id: str,
    paper: str,
    statement: str,
    predicted: float,
    measured: float,
    *,
    rel_tol: float | None = None,
    abs_tol: float | None = None,
    kind: str = "derived",
    alternative: tuple[str, float] | None = None,
    expected: bool | None = True,
    reason: str = "",
) -> ClaimCheck:
    """Passes when ``|measured - predicted| <= max(rel_tol * |predicted|, abs_tol)``; a non-finite side fails.
    ``alternative`` is ``(words, the alternative's prediction)``: the row is evaluated again with that prediction
    in place of ``predicted``."""
    if rel_tol is None and abs_tol is None:
        raise ValueError("check_close needs rel_tol or abs_tol")
    parts = ([f"±{rel_tol:.0%}"] if rel_tol is not None else []) + ([f"±{abs_tol:g}"] if abs_tol is not None else [])
    text, value = _alternative(alternative)
    under = _close(value, measured, rel_tol, abs_tol) if alternative is not None else None
    bound = max((rel_tol or 0.0) * abs(predicted), abs_tol or 0.0) if _finite(predicted) else math.nan
    return ClaimCheck(
        id,
        paper,
        statement,
        float(predicted),
        float(measured),
        " or ".join(parts),
        _close(predicted, measured, rel_tol, abs_tol),
        kind,
        text,
        value,
        under,
        expected,
        reason,
        float(predicted) - bound,
        float(predicted) + bound,
    )


def _bound_check(id, paper, statement, bound, measured, holds, tolerance, kind, alternative, expected, reason):
    text, value = _alternative(alternative)
    low, high = (float(bound), math.inf) if tolerance == "at least" else (-math.inf, float(bound))
    under = bool(_finite(bound, value) and holds(value, bound)) if alternative is not None else None
    passed = bool(_finite(bound, measured) and holds(measured, bound))
    return ClaimCheck(
        id,
        paper,
        statement,
        float(bound),
        float(measured),
        tolerance,
        passed,
        kind,
        text,
        value,
        under,
        expected,
        reason,
        low,
        high,
    )


def check_at_most(
    id: str,
    paper: str,
    statement: str,
    bound: float,
    measured: float,
    *,
    kind: str = "derived",
    alternative: tuple[str, float] | None = None,
    expected: bool | None = True,
    reason: str = "",
) -> ClaimCheck:
    """Passes when ``measured <= bound``; the bound is reported as the prediction. ``alternative`` is ``(words,
    the value the measurement would take under the alternative)``."""
    return _bound_check(
        id, paper, statement, bound, measured, lambda m, b: m <= b, "at most", kind, alternative, expected, reason
    )


def check_at_least(
    id: str,
    paper: str,
    statement: str,
    bound: float,
    measured: float,
    *,
    kind: str = "derived",
    alternative: tuple[str, float] | None = None,
    expected: bool | None = True,
    reason: str = "",
) -> ClaimCheck:
    """Passes when ``measured >= bound``; the bound is reported as the prediction. ``alternative`` is ``(words,
    the value the measurement would take under the alternative)``."""
    return _bound_check(
        id, paper, statement, bound, measured, lambda m, b: m >= b, "at least", kind, alternative, expected, reason
    )


def check_true(
    id: str,
    paper: str,
    statement: str,
    predicted: float,
    measured: float,
    passed: bool,
    tolerance: str,
    *,
    kind: str = "derived",
    alternative: tuple[str, bool] | None = None,
    expected: bool | None = True,
    reason: str = "",
) -> ClaimCheck:
    """A check whose verdict was computed by the caller (e.g. an ordering); both sides are still recorded.
    ``alternative`` is ``(words, the verdict the caller's criterion gives under the alternative)``."""
    text, under = ("", None) if alternative is None else (alternative[0], bool(alternative[1]))
    return ClaimCheck(
        id,
        paper,
        statement,
        float(predicted),
        float(measured),
        tolerance,
        bool(passed),
        kind,
        text,
        math.nan,
        under,
        expected,
        reason,
    )


def not_judged(check: ClaimCheck, precondition: str) -> ClaimCheck:
    """``check`` marked as not judged because ``precondition`` (in words: what the comparison needs and did not
    get) failed: it does not pass, whatever its criterion gave, and its verdict reads "not judged". Its expected
    verdict stays the author's, so an unexpected failure of a precondition still shows in the gate."""
    if not precondition:
        raise ValueError(f"claim {check.id!r}: not_judged needs the precondition that failed")
    return replace(check, passed=False, judged=False, precondition=precondition)


def differences(checks: list[ClaimCheck]) -> list[ClaimCheck]:
    """The rows whose verdict differs from the one the book expects (an unexpected pass included): judged when
    expected not judged or the other way round, or judged with another verdict; a row expected to vary with the
    seed (``expected=None``) never differs at one seed."""
    return [
        c
        for c in checks
        if c.judged != c.expected_judged or (c.judged and c.expected is not None and c.passed != c.expected)
    ]


def falsify(checks: list[ClaimCheck]) -> list[ClaimCheck]:
    """The rows that cannot tell their claim from its alternative: a non-identity row with no alternative, or
    one that passes and would pass under its alternative too."""
    return [
        c
        for c in checks
        if c.kind != "identity"
        and (not c.alternative or c.alternative_passed is None or (c.passed and c.alternative_passed))
    ]


def verdict_sentence(checks: list[ClaimCheck]) -> str:
    """One sentence (Markdown) for a page: how many checks reproduce their prediction, and which do not."""
    unjudged = [c.id for c in checks if not c.judged]
    judged = [c for c in checks if c.judged]
    failed = [c.id for c in judged if not c.passed]
    apart = f" {len(unjudged)} could not be judged (precondition not met): {', '.join(unjudged)}." if unjudged else ""
    if not failed:
        return f"All {len(judged)} checks{' judged' if unjudged else ''} reproduce the prediction.{apart}"
    return (
        f"{len(judged) - len(failed)} of {len(judged)} checks reproduce the prediction; the others are "
        f"**not reproduced**: {', '.join(failed)}.{apart}"
    )


def to_frame(checks: list[ClaimCheck]) -> pd.DataFrame:
    """The checks as a table: id, paper, statement, predicted, measured, tolerance, verdict."""
    rows = [{**asdict(c), "verdict": c.verdict} for c in checks]
    columns = [
        "id",
        "paper",
        "kind",
        "statement",
        "alternative",
        "predicted",
        "measured",
        "tolerance",
        "verdict",
        "passed",
        "expected",
        "reason",
        "alternative_passed",
        "judged",
        "precondition",
    ]
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
    frame = to_frame(checks)[
        ["id", "kind", "statement", "alternative", "predicted", "measured", "tolerance", "verdict"]
    ]
    return frame.style.format({"predicted": "{:.4g}", "measured": "{:.4g}"}).hide(axis="index")
