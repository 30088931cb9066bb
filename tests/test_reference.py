"""Loaders of the outside measurements in reference/: synthetic reports, and the real files the pages read."""

import math

import pytest

from normlib import reference


def _run(**fields):
    base = {
        "norm": "gn",
        "group_size": 4,
        "batch_size": 16,
        "steps": 100,
        "peak_lr": 0.1,
        "seed": 0,
        "diverged": False,
        "diverged_step": None,
        "last10": 0.5,
        "spikes": 0,
        "test_acc": 0.8,
    }
    return {**base, **fields}


def test_tradeoff_marks_divergence_and_failure_to_learn():
    report = {
        "tradeoff": [
            _run(),
            _run(last10=0.95 * math.log(10)),
            _run(diverged=True, diverged_step=7, steps=8, last10=float("nan")),
            {"norm": "ln", "error": "worker died"},
        ]
    }
    frame = reference.tradeoff(report)
    assert list(frame["failed"]) == [False, True, True]  # the errored run is left out
    assert frame["steps"].tolist() == [100, 100, 8]


def test_similarity_speed_rows():
    report = {
        "similarity_speed": [
            {
                "norm": "bn",
                "seed": 1,
                "steps": 400,
                "init_cosine": 0.47,
                "mean_train_acc": 0.86,
                "test_acc": 0.88,
                "diverged": False,
            }
        ]
    }
    frame = reference.similarity_speed(report)
    assert frame.to_dict("records")[0]["init_cosine"] == 0.47


def test_find_looks_upwards_and_names_the_run(tmp_path):
    (tmp_path / "reference" / "run-a").mkdir(parents=True)
    deep = tmp_path / "notebooks" / "sub"
    deep.mkdir(parents=True)
    assert reference.find("run-a", deep) == tmp_path / "reference" / "run-a"
    with pytest.raises(FileNotFoundError, match="'run-b'"):
        reference.find("run-b", deep)


def test_the_kept_runs_load():
    report = reference.load("gpu-h200-2026-11-26", start=__file__)
    assert len(reference.tradeoff(report)) > 0 and len(reference.similarity_speed(report)) > 0
