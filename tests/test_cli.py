"""The command line: list, run (validation first, then papermill), claims; and its errors."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normlib import __main__ as cli
from normlib.experiments import stable_forward as sf

ROOT = Path(__file__).resolve().parents[1]
TINY = [
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
def test_run_rejects_bad_parameters_quickly(args, message, tmp_path):
    start = time.perf_counter()
    result = run_cli("run", "01_stable_forward", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert time.perf_counter() - start < 60  # validation happens before any compute (loose: CI machines vary)
    assert not list(tmp_path.iterdir()), "nothing is written for a rejected run"


def test_run_unknown_notebook():
    result = run_cli("run", "99_nothing")
    assert result.returncode == 2 and "01_stable_forward" in result.stderr


def test_run_executes_the_notebook_with_papermill(tmp_path):
    result = run_cli(
        "run",
        "notebooks/01_stable_forward.md",
        "--out",
        str(tmp_path),
        "--quiet",
        *TINY,
        env={**__import__("os").environ, "NORMLIB_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
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

    def __init__(self, doubling=False):
        self.doubling = doubling

    def resolve(self, preset="book", **overrides):
        return super().resolve(
            preset, norms=["bn"], depth=8, widths=[8, 8, 8], batch_size=4, image_size=8, repeats=1, variants=["plain"]
        )

    def predict(self, config, measured=None, *, theory=sf.default_theory):
        if self.doubling:
            predicted = super().predict(config, measured, theory=theory)
            return {**predicted, "A.linear.bn": 2.0}
        return super().predict(config, measured, theory=theory)


def test_claims_exits_nonzero_when_a_claim_fails(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(sf, "EXPERIMENT", TinyStableForward())
    assert cli.main(["claims", "--only", "01_stable_forward"]) == 0
    assert "1 of 1 claims reproduced" in capsys.readouterr().out
    monkeypatch.setattr(sf, "EXPERIMENT", TinyStableForward(doubling=True))
    assert cli.main(["claims", "--only", "01_stable_forward"]) == 1
    out = capsys.readouterr().out
    assert "not reproduced" in out and "0 of 1 claims reproduced" in out


def test_claims_only_rejects_unknown_notebooks(capsys):
    assert cli.main(["claims", "--only", "nothing"]) == 2
    assert "--only" in capsys.readouterr().err
