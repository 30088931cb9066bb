"""Claim checks compute both sides and can fail."""

import dataclasses
import json
import math

import pytest

from normlib import claims


def test_check_close_passes_and_fails():
    good = claims.check_close("x", "P", "s", predicted=2.0, measured=2.1, rel_tol=0.1)
    bad = claims.check_close("x", "P", "s", predicted=2.0, measured=2.5, rel_tol=0.1)
    assert good.passed and good.verdict == "reproduced"
    assert not bad.passed and bad.verdict == "not reproduced"
    assert claims.check_close("x", "P", "s", 0.0, 0.05, abs_tol=0.1).passed


def test_non_finite_measurements_fail():
    assert not claims.check_close("x", "P", "s", 1.0, math.nan, rel_tol=0.5).passed
    assert not claims.check_close("x", "P", "s", 1.0, math.inf, rel_tol=0.5).passed
    assert not claims.check_at_most("x", "P", "s", 1.0, math.nan).passed


def test_bounds():
    assert claims.check_at_most("x", "P", "s", 1.0, 0.5).passed
    assert not claims.check_at_most("x", "P", "s", 1.0, 1.5).passed
    assert claims.check_at_least("x", "P", "s", 1.0, 1.5).passed
    assert not claims.check_at_least("x", "P", "s", 1.0, 0.5).passed


def test_check_close_needs_a_tolerance():
    with pytest.raises(ValueError):
        claims.check_close("x", "P", "s", 1.0, 1.0)


def test_report_writes_claims_json_under_a_run(tmp_path, monkeypatch):
    checks = [
        claims.check_close("a", "P", "s", 1.0, 1.0, rel_tol=0.1),
        claims.check_close("b", "P", "s", 1.0, math.nan, rel_tol=0.1),
    ]
    monkeypatch.setenv(claims.RUN_DIR_ENV, str(tmp_path))
    claims.report(checks)
    records = json.loads((tmp_path / "claims.json").read_text())
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["passed"] is True and records[1]["passed"] is False
    assert records[1]["measured"] == "nan"
    assert set(records[0]) >= {"id", "predicted", "measured", "tolerance", "passed"}


def test_to_frame_columns():
    frame = claims.to_frame([claims.check_at_most("a", "P", "s", 1.0, 0.5)])
    assert list(frame.columns[:4]) == ["id", "paper", "kind", "statement"]
    assert frame.loc[0, "verdict"] == "reproduced"


def test_a_row_whose_precondition_failed_is_not_judged_and_cannot_pass():
    row = claims.check_at_least("X.y", "paper", "s", 1.0, 2.0, kind="paper", alternative=("alt", 0.0))
    unjudged = claims.not_judged(row, "the networks did not converge")
    assert row.passed and not unjudged.passed and unjudged.verdict == "not judged"
    assert unjudged.precondition == "the networks did not converge"
    assert "could not be judged" in claims.verdict_sentence([row, unjudged])
    with pytest.raises(ValueError, match="precondition"):
        claims.not_judged(row, "")
    with pytest.raises(ValueError, match="cannot pass"):
        dataclasses.replace(row, judged=False, precondition="p")


def test_a_row_expected_to_vary_needs_its_reason_and_is_never_a_difference_at_one_seed():
    with pytest.raises(ValueError, match="reason"):
        claims.check_at_least("X.y", "paper", "s", 1.0, 2.0, expected=None)
    row = claims.check_at_least("X.y", "paper", "s", 1.0, 2.0, expected=None, reason="three runs cannot resolve it")
    assert row.passed and claims.differences([row]) == []


def test_a_row_expected_not_judged_differs_once_judged():
    row = claims.check_at_least("X.y", "paper", "s", 1.0, 0.0, expected=False, reason="not converged")
    row = dataclasses.replace(row, expected_judged=False)
    assert claims.differences([claims.not_judged(row, "not converged")]) == []
    assert claims.differences([row]) == [row]
