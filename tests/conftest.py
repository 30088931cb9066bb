"""Shared test set-up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normlib.runtime import torch_threads


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The tensors in the tests are tiny: intra-op threads only add synchronization, which stalls badly on a busy
    machine. Every test module runs with one torch thread and restores the setting afterwards."""
    with torch_threads(1):
        yield


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_notebook(tmp_path):
    """``run_notebook(stem, params)`` executes ``notebooks/<stem>.md`` through ``python -m normlib run`` with
    ``-p NAME VALUE`` for every entry of ``params`` (lists as JSON) into ``tmp_path``, with a private result cache;
    it asserts the command succeeded and returns the run folder."""

    def run(stem: str, params: dict, timeout: int = 900) -> Path:
        args = [a for name, value in params.items()
                for a in ("-p", name, json.dumps(value) if isinstance(value, list) else str(value))]
        env = {**os.environ, "NORMLIB_CACHE": str(tmp_path / "cache")}
        result = subprocess.run([sys.executable, "-m", "normlib", "run", f"notebooks/{stem}.md", "--out",
                                 str(tmp_path), "--quiet", *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith(f"{stem}-")]
        return run_dir

    return run
