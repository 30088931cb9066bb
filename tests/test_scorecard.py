"""The scorecard's folding of (claim, seed) rows, on synthetic rows: no chapter runs."""

import json

import pandas as pd

from normlib import scorecard


def _rows(passed: dict[tuple[str, int], bool]) -> pd.DataFrame:
    records = []
    for (cid, seed), ok in passed.items():
        records.append(
            {
                "notebook": "01_stable_forward",
                "seed": seed,
                "id": cid,
                "kind": "paper",
                "passed": ok,
                "measured": 1.0,
                "expected": True,
                "alternative": "the other law",
                "alternative_passed": False,
            }
        )
    return pd.DataFrame(records)


def test_a_row_is_reproduced_only_at_every_seed():
    rows = _rows({("A.x", 0): True, ("A.x", 1): False, ("A.y", 0): True, ("A.y", 1): True})
    folded = scorecard.robustness(rows).set_index("id")
    assert folded.loc["A.x", "seeds_reproduced"] == 1 and not folded.loc["A.x", "reproduced"]
    assert folded.loc["A.y", "verdict"] == "reproduced"
    assert list(scorecard.gate(rows)["id"]) == ["A.x"]


def test_the_seed_table_lists_each_seeds_measurement_in_seed_order():
    rows = _rows({("A.x", 1): False, ("A.x", 0): True, ("A.x", 2): True})
    rows["measured"] = [-0.91, -5.6123, 0.3]  # seeds 1, 0, 2
    folded = scorecard.robustness(rows).set_index("id")
    assert folded.loc["A.x", "measured_by_seed"] == "-5.612 / -0.91 / 0.3"
    assert folded.loc["A.x", "measured"] == -5.6123  # the first seed's, as before


def test_device_differences_lists_only_changed_verdicts(tmp_path):
    rows = _rows({("A.x", 0): True, ("A.y", 0): True, ("A.x", 1): False})
    report = {
        "book": {
            "0": {
                "01_stable_forward": {
                    "rows": {
                        "A.x": {"passed": True, "predicted": 1, "measured": 1},
                        "A.y": {"passed": False, "predicted": 1, "measured": 2},
                    }
                }
            },
            "1": {"01_stable_forward": {"rows": {"A.x": {"passed": False, "predicted": 1, "measured": 3}}}},
            "2": {"01_stable_forward": {"error": "not run here"}},
        }
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    differ = scorecard.device_differences(path, rows)
    assert differ[["id", "seed", "here", "there"]].to_dict("records") == [
        {"id": "A.y", "seed": 0, "here": True, "there": False}
    ]


def test_rows_only_another_device_has_are_listed_apart(tmp_path):
    rows = _rows({("A.x", 0): True})
    report = {
        "book": {
            "0": {"01_stable_forward": {"rows": {"A.x": {"passed": True, "predicted": 1, "measured": 1}}}},
            "1": {"01_stable_forward": {"rows": {"A.half": {"passed": False, "predicted": 0.7, "measured": 0.1}}}},
            "2": {"05_large_learning_rates": {"error": "raised"}},
        }
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    only = scorecard.device_only_rows(path, rows)
    assert only[["id", "seed", "there"]].to_dict("records") == [{"id": "A.half", "seed": 1, "there": False}]


def test_a_row_not_judged_at_every_seed_is_counted_apart_from_the_headline():
    rows = _rows({("A.x", 0): False, ("A.x", 1): False, ("A.y", 0): True, ("A.y", 1): True})
    rows["judged"] = rows["id"] != "A.x"
    folded = scorecard.robustness(rows).set_index("id")
    assert folded.loc["A.x", "verdict"] == "not judged" and folded.loc["A.x", "seeds_judged"] == 0
    assert folded.loc["A.y", "verdict"] == "reproduced"
    top = scorecard.headline(folded.reset_index())
    assert (top["claims"], top["reproduced"], top["not_judged"]) == (1, 1, 1)


def test_a_row_judged_at_some_seed_only_is_not_reproduced():
    rows = _rows({("A.x", 0): True, ("A.x", 1): False})
    rows["judged"] = [True, False]
    folded = scorecard.robustness(rows).set_index("id")
    assert folded.loc["A.x", "verdict"] == "not reproduced" and folded.loc["A.x", "seeds_judged"] == 1


def test_a_row_expected_to_vary_differs_only_when_it_stops_varying():
    rows = _rows({("A.x", 0): True, ("A.x", 1): False, ("A.y", 0): True, ("A.y", 1): True})
    rows["expected"] = pd.Series([None, None, None, None], dtype=object)
    assert list(scorecard.gate(rows)["id"].unique()) == ["A.y"]
    folded = scorecard.robustness(rows).set_index("id")
    assert folded.loc["A.x", "verdict"] == "not reproduced" and folded.loc["A.x", "seeds_reproduced"] == 1


def test_a_row_expected_not_judged_that_gets_judged_is_a_difference_whatever_its_verdict():
    rows = _rows({("A.x", 0): False, ("A.x", 1): False})
    rows["expected"] = False
    rows["expected_judged"] = False
    rows["judged"] = [False, True]
    assert list(scorecard.gate(rows)["seed"]) == [1]


def test_the_longest_chapters_start_first_and_ties_keep_their_order():
    grid = [{"notebook": stem, "seed": seed} for stem in ("01_stable_forward", "08_lp_batchnorm_low_precision")
            for seed in (0, 1)]  # fmt: skip
    assert scorecard.longest_first(grid) == [2, 3, 0, 1]
