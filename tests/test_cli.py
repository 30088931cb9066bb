"""The command line: list, run (validation first, then papermill), claims; and its errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from normlib import __main__ as cli
from normlib import claims
from normlib.experiments import stable_forward as sf

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "-p",
    "train_steps",
    "0",
    "-p",
    "norms",
    "bn,sws",
    "-p",
    "depth",
    "8",
    "-p",
    "widths",
    "[8, 8, 8]",
    "-p",
    "batch_size",
    "4",
    "-p",
    "image_size",
    "8",
    "-p",
    "repeats",
    "1",
    "-p",
    "variants",
    "plain,skipinit",
]


def run_cli(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", "normlib", *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


def test_list_shows_notebooks_and_parameters():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "01_stable_forward" in result.stdout
    for name in sf.EXPERIMENT.spec.names:
        assert name in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "dept", "20"], "unknown parameter 'dept'; allowed: norms, variants, depth"),
        (["-p", "norms", "bn,batchnorm"], "parameter 'norms': unknown normalizer name='batchnorm'"),
        (["-p", "depth", "21"], "parameter 'depth': invalid value 21; allowed: 6n+2"),
        (["-p", "depth", "-4"], "parameter 'depth'"),
        (["-p", "group_size", "5"], "parameter 'group_size': gn cannot be built at width 32"),
        (["--preset", "huge"], "parameter 'preset'"),
        (["-p", "preset", "paper"], "set the preset with --preset"),
    ],
)
def test_run_rejects_bad_parameters_before_any_compute(args, message, tmp_path, capsys, monkeypatch):
    import papermill

    def no_execution(*args, **kwargs):
        raise AssertionError("a rejected run executed its notebook")

    monkeypatch.setattr(papermill, "execute_notebook", no_execution)
    assert cli.main(["run", "01_stable_forward", "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is written for a rejected run"


def test_the_installed_entry_point_rejects_a_bad_parameter(tmp_path):
    result = run_cli("run", "01_stable_forward", "--out", str(tmp_path), "-p", "dept", "20")
    assert result.returncode == 2
    assert "unknown parameter 'dept'; allowed: norms, variants, depth" in result.stderr
    assert not list(tmp_path.iterdir())


def test_run_unknown_notebook():
    result = run_cli("run", "99_nothing")
    assert result.returncode == 2 and "01_stable_forward" in result.stderr


def test_run_executes_the_notebook_with_papermill(tmp_path):
    result = run_cli(
        "run",
        "notebooks/01_stable_forward.md",
        "--out",
        str(tmp_path),
        *TINY,
        env={**__import__("os").environ, "NORMLIB_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ResNets at initialization" in result.stderr  # the experiment's own progress bar reached the terminal
    assert "estimated time: unknown, no run of 01_stable_forward on cpu" in result.stdout  # a fresh cache
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("01_stable_forward-")]
    assert (run_dir / "01_stable_forward.ipynb").exists()
    assert list((run_dir / "figures").glob("*.png"))
    records = json.loads((run_dir / "claims.json").read_text())
    assert {"A.linear.bn", "A.exponential.sws", "A.flat.bn"} <= {r["id"] for r in records}
    for record in records:
        assert set(record) >= {"id", "predicted", "measured", "tolerance", "passed"}
    parameters = json.loads((run_dir / "parameters.json").read_text())
    assert parameters["depth"] == 8 and parameters["norms"] == ["bn", "sws"]
    assert "claims:" in result.stdout


class TinyStableForward(sf.StableForward):
    """Chapter A at a size that runs in a second; ``doubling`` swaps in a theory where every stream doubles."""

    def __init__(self, doubling=False, alternative=None):
        self.doubling = doubling
        self.alternative = alternative  # (words, value); value None: the row's own measurement

    def resolve(self, preset="book", **overrides):
        return super().resolve(
            preset,
            norms=["bn"],
            depth=20,
            widths=[8, 8, 8],
            batch_size=4,
            image_size=8,
            repeats=1,
            variants=["plain"],
            train_steps=0,
        )

    def predict(self, config, measured=None, *, theory=sf.default_theory):
        predicted = super().predict(config, measured, theory=theory)
        if not self.doubling:
            return predicted
        curves = {k: sf.default_theory.geometric_growth(len(v) - 1, 2.0, 1.0) for k, v in predicted["curves"].items()}
        return {**predicted, "curves": curves}

    def check(self, config, measured, predicted):
        checks = super().check(config, measured, predicted)
        if self.alternative is None:
            return checks
        text, value = self.alternative
        return [
            claims.check_close(
                c.id,
                c.paper,
                c.statement,
                c.predicted,
                c.measured,
                rel_tol=sf.GROWTH_REL_TOL,
                alternative=(text, c.measured if value is None else value),
            )
            for c in checks
        ]


def test_claims_gate_on_the_expected_verdicts(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(sf, "EXPERIMENT", TinyStableForward())
    assert cli.main(["claims", "--jobs", "1", "--only", "01_stable_forward", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 claims (paper and derived) reproduced" in out and "2/2" in out
    assert "every verdict equals the book's expectation" in out
    monkeypatch.setattr(sf, "EXPERIMENT", TinyStableForward(doubling=True))
    assert cli.main(["claims", "--jobs", "1", "--only", "01_stable_forward", "--seeds", "0"]) == 1
    out = capsys.readouterr().out
    assert "0 of 1 claims" in out and "1 verdict(s) differ from the book's expectation" in out


def test_claims_json_writes_every_row_and_seed(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sf, "EXPERIMENT", TinyStableForward())
    target = tmp_path / "claims.json"
    assert (
        cli.main(["claims", "--jobs", "1", "--only", "01_stable_forward", "--seeds", "0,1", "--json", str(target)]) == 0
    )
    records = json.loads(target.read_text())
    assert [(r["id"], r["seed"]) for r in records] == [("A.linear.bn", 0), ("A.linear.bn", 1)]
    assert set(records[0]) >= {
        "id",
        "notebook",
        "kind",
        "paper",
        "statement",
        "alternative",
        "predicted",
        "measured",
        "tolerance",
        "passed",
        "expected",
    }


def test_claims_falsify_flags_a_row_that_passes_under_its_alternative(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path))

    def run(alternative):
        monkeypatch.setattr(sf, "EXPERIMENT", TinyStableForward(alternative=alternative))
        return cli.main(["claims", "--jobs", "1", "--only", "01_stable_forward", "--seeds", "0", "--falsify"])

    assert run(("the measurement itself", None)) == 1
    assert "cannot tell their claim from its alternative" in capsys.readouterr().out
    assert run(("doubling per block", 2.0)) == 0
    assert "every row fails under its alternative" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command, args, message",
    [
        ("claims", ["--only", "nothing"], "--only: unknown notebook 'nothing'"),
        ("claims", ["--only", "01_stable_forward", "nothing"], "--only: unknown notebook 'nothing'"),
        ("claims", ["--json", "/no/such/folder/claims.json"], "--json: the folder"),
        ("claims", ["--seeds", "0,x"], "--seeds: invalid value"),
        ("claims", ["--preset", "huge"], "--preset: invalid value 'huge'"),
        ("compute", ["--only", "nothing"], "--only: unknown notebook 'nothing'"),
        ("compute", ["--seeds", "1,1"], "--seeds: invalid value"),
        ("compute", ["--jobs", "0"], "--jobs: invalid value 0"),
        ("compute", ["--preset", "huge"], "--preset: invalid value 'huge'"),
    ],
)
def test_claims_and_compute_options_are_checked_before_any_compute(command, args, message, capsys):
    assert cli.main([command, *args]) == 2
    assert message in capsys.readouterr().err


def test_compute_fills_the_cache_that_claims_then_reads(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path))
    chapter = TinyStableForward()
    monkeypatch.setattr(sf, "EXPERIMENT", chapter)
    assert cli.main(["compute", "--jobs", "1", "--only", "01_stable_forward", "--seeds", "0,1"]) == 0
    assert "1 chapter(s) x 2 seed(s) in the result cache" in capsys.readouterr().out
    assert all(chapter.is_cached(chapter.resolve("book", seed=seed)) for seed in (0, 1))
    # the verdicts were not judged: compute exits 0 even where the gate would fail
    monkeypatch.setattr(sf, "EXPERIMENT", TinyStableForward(doubling=True))
    assert cli.main(["compute", "--jobs", "1", "--only", "01_stable_forward", "--seeds", "0"]) == 0


def test_dry_run_validates_prints_and_computes_nothing(tmp_path, capsys):
    assert cli.main(["run", "02_informative_forward", "-p", "depth", "30", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "nothing was computed" in out and "depth" in out and "(set)" in out
    assert not any(tmp_path.iterdir())  # no run folder
    assert cli.main(["run", "02_informative_forward", "-p", "depht", "30", "--dry-run"]) == 2
    assert "unknown parameter 'depht'" in capsys.readouterr().err


def _try_it_commands(path: Path) -> list[list[str]]:
    """Every command of a notebook's "Try it" section: each backticked ``python -m normlib run ...``, ``-p ...`` or
    ``--preset ...`` fragment, as the arguments of ``run NOTEBOOK`` (a bare fragment applies to the page's notebook)."""
    import re
    import shlex

    text = path.read_text()
    section = text.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for fragment in re.findall(r"`([^`]+)`", section):
        fragment = fragment.strip()
        if fragment.startswith("python -m normlib run "):
            words = shlex.split(fragment)[4:]
            commands.append([words[0], *words[1:]])
        elif fragment.startswith(("-p ", "--preset ")):
            commands.append([path.stem, *shlex.split(fragment)])
    return commands


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("0*.md")), ids=lambda p: p.stem)
def test_every_try_it_command_is_valid(path, capsys):
    commands = _try_it_commands(path)
    assert commands, f"{path.name} has no Try it commands"
    for command in commands:
        assert cli.main(["run", *command, "--dry-run"]) == 0, (command, capsys.readouterr().err)


def test_a_run_whose_data_is_missing_stops_before_computing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NORMLIB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("normlib.data.debian_fashion_mnist_dir", lambda: tmp_path / "nowhere")
    out = tmp_path / "runs"
    assert cli.main(["run", "05_large_learning_rates", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "fashion-mnist (train split) not found" in err and "python -m normlib fetch fashion-mnist" in err
    assert not out.exists()  # nothing was started
    assert cli.main(["run", "05_large_learning_rates", "--dry-run"]) == 0
    assert "data missing: fashion-mnist" in capsys.readouterr().out


def test_the_paper_preset_without_a_gpu_needs_yes_in_a_script(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    monkeypatch.setattr(cli, "_missing_data", lambda config: [])
    out = tmp_path / "runs"
    assert cli.main(["run", "06_unnormalized_pathologies", "--preset", "paper", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "sized for a GPU" in captured.err and "add --yes" in captured.err
    assert not out.exists()


def test_the_paper_preset_asks_a_person_at_the_terminal(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    with pytest.raises(cli.UsageError, match="not confirmed"):
        cli._confirm_cpu_paper_run(yes=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    cli._confirm_cpu_paper_run(yes=False)
    cli._confirm_cpu_paper_run(yes=True)
