"""Shared test set-up, and the test tiers.

Four markers (declared in pyproject.toml) split the suite: ``notebook`` (executes a notebook through papermill),
``training`` (trains a network), ``book`` (checks the built book) and ``slow`` (anything else that takes seconds:
a fresh virtualenv, a Dask cluster, a process pool, a ``python -m normlib`` subprocess, the longer Monte-Carlo
checks). ``make test-fast`` deselects all four; ``make test`` runs everything. The rules below add the markers by
fixture, test name or module, so the tiers hold while the chapter tests are rewritten; a test file may also use the
markers directly.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from normlib.runtime import torch_threads

#: Tests that execute a notebook without the ``run_notebook`` fixture (which marks its users itself).
NOTEBOOK_TESTS = {"test_run_executes_the_notebook_with_papermill", "test_notebook_runs_with_tiny_parameters"}
#: The paper presets' few training steps on CIFAR-shaped data (up to ~40 s each on two busy cores).
TRAINING_TESTS = re.compile(r"_(trains|training_runs|runs)_a_few_steps_")
#: Other slow tests, by file and name, with the reason (durations from ``pytest --durations`` on two busy cores).
SLOW_TESTS = {
    # each starts `python -m normlib`, which imports every experiment: 5-10 s per test
    ("test_cli.py", "test_list_shows_notebooks_and_parameters"): "subprocess",
    ("test_cli.py", "test_run_rejects_bad_parameters_quickly"): "subprocess",
    ("test_cli.py", "test_run_unknown_notebook"): "subprocess",
    # a process pool whose workers each import torch: ~10 s
    ("test_sweep.py", "test_serial_and_process_pool_agree"): "process pool",
    # Monte-Carlo and quadrature checks of the theory, 2-6 s each
    ("test_large_learning_rates.py", "test_per_example_gradients_average_to_the_batch_gradient"): "vmap over a pool",
    ("test_theory_sgd_noise.py", "test_without_replacement_matches_the_finite_pool_law"): "Monte Carlo",
    ("test_theory.py", "test_lindley_asymptotics"): "Monte Carlo",
    ("test_theory.py", "test_lindley_grid_matches_monte_carlo"): "Monte Carlo",
    ("test_theory.py", "test_mean_field_reduces_to_closed_forms"): "quadrature",
    ("test_theory_lp.py", "test_order_statistics_of_abs_gaussian"): "Monte Carlo",
    ("test_theory_random_matrix.py", "test_density_integrates_to_the_fuss_catalan_moments"): "quadrature",
}
BOOK_MODULES = {"test_book.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name, module = getattr(item, "originalname", item.name), item.path.name
        if "run_notebook" in getattr(item, "fixturenames", ()) or name in NOTEBOOK_TESTS:
            item.add_marker(pytest.mark.notebook)
        if TRAINING_TESTS.search(name):
            item.add_marker(pytest.mark.training)
        if (module, name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if module in BOOK_MODULES:
            item.add_marker(pytest.mark.book)


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
    it asserts the command succeeded and returns the run folder. Its sweeps compute in the kernel, on one thread
    (``NORMLIB_WORKERS=1``, ``OMP_NUM_THREADS=1``)."""

    def run(stem: str, params: dict, timeout: int = 900) -> Path:
        args = [
            a
            for name, value in params.items()
            for a in ("-p", name, json.dumps(value) if isinstance(value, list) else str(value))
        ]
        # one single-threaded process per notebook: pytest-xdist already keeps every core busy, a pool per sweep
        # would only add worker start-ups, and intra-op threads on a busy machine only wait for each other (the
        # local pool itself is tested in test_sweep.py)
        env = {**os.environ, "NORMLIB_CACHE": str(tmp_path / "cache"), "NORMLIB_WORKERS": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            [sys.executable, "-m", "normlib", "run", f"notebooks/{stem}.md", "--out", str(tmp_path), "--quiet", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith(f"{stem}-")]
        return run_dir

    return run
