"""Measured run times, and the estimate `normlib run` prints from them (normlib/timings.py)."""

import json

import pytest

from normlib import timings
from normlib.experiments import get_experiment
from normlib.experiments.protocol import Experiment
from normlib.params import ParamSpec


@pytest.fixture
def chapter():
    return get_experiment("01_stable_forward")


def test_nothing_measured_gives_no_estimate(tmp_path, chapter):
    assert timings.estimate(chapter.notebook, chapter.resolve("book"), "cpu", root=tmp_path) is None


def test_a_cached_result_takes_seconds(tmp_path, chapter):
    found = timings.estimate(chapter.notebook, chapter.resolve("book"), "cpu", cached=True, root=tmp_path)
    assert found.seconds <= 1 and "cache" in str(found)


def test_the_same_configuration_on_the_same_device_is_the_estimate(tmp_path, chapter):
    config = chapter.resolve("book", depth=8)
    timings.record(chapter.notebook, config, "cpu", 42.0, root=tmp_path)
    assert timings.estimate(chapter.notebook, config, "cpu", root=tmp_path).seconds == 42.0
    assert timings.estimate(chapter.notebook, config, "cuda", root=tmp_path) is None


def test_other_parameters_fall_back_to_the_plain_preset_and_say_so(tmp_path, chapter):
    timings.record(chapter.notebook, chapter.resolve("book"), "cpu", 17.0, root=tmp_path)
    found = timings.estimate(chapter.notebook, chapter.resolve("book", depth=8), "cpu", root=tmp_path)
    assert found.seconds == 17.0
    assert "differs in depth" in found.basis
    assert "about 17 s" in str(found)


def test_a_damaged_record_is_skipped(tmp_path, chapter):
    path = timings.record(chapter.notebook, chapter.resolve("book"), "cpu", 5.0, root=tmp_path)
    path.write_text("{not json")
    assert timings.records(chapter.notebook, root=tmp_path) == []


def test_a_record_is_one_whole_json_file(tmp_path, chapter):
    path = timings.record(chapter.notebook, chapter.resolve("book", depth=8), "cpu", 3.25, root=tmp_path)
    entry = json.loads(path.read_text())
    assert entry["seconds"] == 3.25 and entry["changed"] == {"depth": 8} and entry["device"] == "cpu"
    assert not list(path.parent.glob("*.tmp"))


class Quick(Experiment):
    """A chapter that computes one number at once (module level: the cache names functions by qualified name)."""

    notebook = "quick"
    title = "quick"
    paper = "none"
    spec = ParamSpec(params=(), presets={"book": {}, "paper": {}})

    def compute(self, config, *, executor=None, cache=True):
        return {"x": 1.0}

    def predict(self, config, measured, *, theory=None):
        return {}

    def check(self, config, measured, predicted):
        return []


def test_measure_records_its_time_on_a_miss_only(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path))
    quick = Quick()
    config = quick.resolve("book")
    assert not quick.is_cached(config)
    quick.measure(config)
    assert quick.is_cached(config)
    assert len(timings.records("quick", root=tmp_path)) == 1
    quick.measure(config)
    assert len(timings.records("quick", root=tmp_path)) == 1


def test_run_quotes_the_books_own_time_before_this_machine_timed_a_run(tmp_path, monkeypatch):
    from normlib.__main__ import _time_estimate
    from normlib.experiments import get_experiment

    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path / "cache"))
    experiment = get_experiment("01_stable_forward")
    line = _time_estimate(experiment, experiment.resolve("book", seed=3), "cpu")
    assert f"about {experiment.book_seconds:.0f} s of one CPU core" in line
    changed = _time_estimate(experiment, experiment.resolve("book", depth=14), "cpu")
    assert "unknown" in changed
