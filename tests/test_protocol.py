"""The experiment protocol every chapter implements, and the read-only configuration it resolves."""

import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest

from normlib import claims
from normlib.experiments import EXPERIMENTS, get_experiment
from normlib.experiments.protocol import Experiment
from normlib.params import Config, Param, ParameterError, ParamSpec

SPEC = ParamSpec(
    params=(Param("n", "int", "how many", minimum=1), Param("names", "str_list", "which", choices=("a", "b"))),
    presets={"book": {"n": 2, "names": ["a"]}, "paper": {"n": 20, "names": ["a", "b"]}},
)


class Counting(Experiment):
    """A chapter that records how it was asked to compute."""

    notebook = "99_counting"
    title = "Counting"
    paper = "nobody"
    spec = SPEC

    def __init__(self):
        self.calls = []

    def compute(self, config, *, executor=None, cache=True):
        self.calls.append((executor, cache))
        return {"total": config.n * len(config.names)}

    def predict(self, config, measured, *, theory=None):
        return {"total": 2.0 if theory is None else theory}

    def check(self, config, measured, predicted):
        return [claims.check_close("X.total", self.paper, "total", predicted["total"], measured["total"], abs_tol=0.5)]


def test_config_is_a_read_only_mapping_with_attributes():
    config = SPEC.resolve("book", n=3)
    assert isinstance(config, Config) and config["n"] == 3 and config.n == 3 and config.preset == "book"
    assert dict(config) == {"preset": "book", "n": 3, "names": ["a"]} and config == dict(config)
    with pytest.raises(TypeError):
        config["n"] = 4
    with pytest.raises(AttributeError, match="read-only"):
        config.n = 4
    with pytest.raises(AttributeError, match="no parameter 'm'"):
        config.m  # noqa: B018


def test_replace_validates_again():
    config = SPEC.resolve("book")
    assert config.replace(n=5).n == 5 and config.n == 2
    with pytest.raises(ParameterError, match="parameter 'names'"):
        config.replace(names=["c"])


def test_config_pickles_as_its_values():
    config = SPEC.resolve("paper")
    again = pickle.loads(pickle.dumps(config))
    assert again == config and again.spec is None
    with pytest.raises(TypeError, match="no schema"):
        again.replace(n=1)


def test_measure_honours_the_executor_and_the_cache_together(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path))
    chapter = Counting()
    config = chapter.resolve("book")
    with ThreadPoolExecutor(1) as pool:
        assert chapter.measure(config, executor=pool) == {"total": 2}
        assert chapter.calls == [(pool, True)]  # a miss computes on the executor it was given
        assert chapter.measure(config, executor=pool) == {"total": 2}
        assert len(chapter.calls) == 1  # a hit computes nothing
        chapter.measure(config, executor=pool, cache=False)
        assert chapter.calls[-1] == (pool, False)


def test_another_theory_is_a_parameter(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path))
    chapter = Counting()
    config = chapter.resolve("book")
    assert chapter.evaluate(config, theory=None)[0].passed
    assert not chapter.evaluate(config, theory=5.0)[0].passed
    summary = chapter.summary(config, chapter.evaluate(config, theory=5.0))
    assert summary["reproduced"] == 0 and summary["not_reproduced"] == ["X.total"]
    assert "not reproduced" in summary["verdict"]


@pytest.mark.parametrize("stem", list(EXPERIMENTS))
def test_every_chapter_implements_the_protocol(stem):
    chapter = get_experiment(stem)
    assert isinstance(chapter, Experiment) and chapter.notebook == stem
    assert chapter.title and chapter.paper
    config = chapter.resolve("book")
    assert isinstance(config, Config) and config.spec is chapter.spec
    with pytest.raises(ParameterError, match="unknown parameter 'no_such_parameter'"):
        chapter.resolve("book", no_such_parameter=1)


def test_the_parameter_table_shows_the_key_values_and_marks_what_changed():
    from normlib.experiments import EXPERIMENTS, get_experiment
    from normlib.runtime import provenance_table

    for stem in EXPERIMENTS:
        chapter = get_experiment(stem)
        table = chapter.parameter_table(chapter.resolve("book"))
        assert 1 <= len(table) <= 12 and not table["changed"].any(), stem
    chapter = get_experiment("02_informative_forward")
    config = chapter.resolve("book", width=32, bootstrap=500)
    table = chapter.parameter_table(config).set_index("parameter")
    assert table.loc["width", "changed"] == "yes" and table.loc["group_sizes", "value"] == "1, 2, 4, 8, 16, 32"
    assert table.loc["bootstrap", "changed"] == "yes"  # not a key parameter, shown because it was set
    footer = provenance_table(config).set_index("")
    assert "width = 32" in footer.loc["parameters set", "value"]
    assert "none" in provenance_table(chapter.resolve("book")).set_index("").loc["parameters set", "value"]
