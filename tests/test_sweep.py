"""normlib.sweep: grid expansion, serial vs process pool vs Dask, resuming through the cache, errors."""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for `import sweep_fns`, here and (inherited) in spawned workers

import normlib.sweep as sweep_module  # noqa: E402
import sweep_fns  # noqa: E402
from normlib import cache  # noqa: E402
from normlib.sweep import SweepError, expand_grid, sweep  # noqa: E402


def test_expand_grid_order():
    assert expand_grid({"a": [1, 2], "b": ("x", "y")}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert expand_grid({"n": range(3)}) == [{"n": 0}, {"n": 1}, {"n": 2}]
    points = [{"a": 2}, {"a": 1, "b": 3}]
    assert expand_grid(points) == points and expand_grid(points)[0] is not points[0]


@pytest.mark.parametrize(
    "grid,match",
    [
        ({}, "empty"),
        ([], "non-empty list of dicts"),
        ({"lr": 0.1}, r"grid\['lr'\] must be a list.*\[0.1\]"),
        ({"lr": "abc"}, r"grid\['lr'\] must be a list"),
        ({"lr": []}, r"grid\['lr'\] is an empty list"),
        ([{"a": 1}, 3], r"grid\[1\] must be a dict"),
        ("abc", "parameter 'grid'"),
        ({"result": [1]}, "'result' cannot be a config key"),
    ],
)
def test_invalid_grid(grid, match):
    with pytest.raises(ValueError, match=match):
        sweep(sweep_fns.slow_square, grid, executor="serial", cache=False, progress=False)


def test_serial_frame_and_progress(tmp_path, capsys):
    frame = sweep(sweep_fns.slow_square, {"x": [3, 1, 2]}, executor="serial", cache_root=tmp_path, desc="squares")
    assert list(frame.columns) == ["x", "result"]
    assert frame["x"].tolist() == [3, 1, 2] and frame["result"].tolist() == [9, 1, 4]
    assert "squares" in capsys.readouterr().err
    mixed = sweep(
        sweep_fns.slow_square, [{"x": 2}, {"x": 3, "delay": 0.0}], executor="serial", cache=False, progress=False
    )
    assert list(mixed.columns) == ["x", "delay", "result"] and pd.isna(mixed["delay"][0])


def test_results_keep_any_type():
    nested = sweep(_returns, {"value": [[1, 2], [3]]}, executor="serial", cache=False, progress=False)
    assert nested["result"].tolist() == [[1, 2], [3]]
    frames = sweep(_frame_of, {"value": [1, 2]}, executor="serial", cache=False, progress=False)
    assert all(isinstance(r, pd.DataFrame) and len(r) == v for r, v in zip(frames["result"], frames["value"]))


def _returns(value):
    return value


def _frame_of(value):
    return pd.DataFrame({"v": range(value)})


def test_serial_and_process_pool_agree(tmp_path):
    grid = [{"seed": seed, "n": 1000, "delay": 0.5 * (seed == 0)} for seed in range(3)]  # the first ends last
    serial = sweep(sweep_fns.measure, grid, executor="serial", cache=False, progress=False)
    pooled = sweep(sweep_fns.measure, grid, cache_root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(serial.drop(columns="result"), pooled.drop(columns="result"))
    assert [r["norm"] for r in pooled["result"]] == [r["norm"] for r in serial["result"]]  # bit for bit
    assert [r["threads"] for r in pooled["result"]] == [1, 1, 1]  # one torch thread per worker
    assert len(list(tmp_path.rglob("*.entry"))) == 3  # written by the workers


def test_normlib_workers_bounds_the_local_pool(monkeypatch):
    grid = {"x": [0, 1, 2]}
    monkeypatch.setenv("NORMLIB_WORKERS", "1")
    assert sweep(sweep_fns.process_id, grid, cache=False, progress=False)["result"].tolist() == [os.getpid()] * 3
    monkeypatch.setenv("NORMLIB_WORKERS", "2")
    pids = set(sweep(sweep_fns.process_id, grid, cache=False, progress=False)["result"])
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("NORMLIB_WORKERS", bad)
        with pytest.raises(ValueError, match=f"NORMLIB_WORKERS: invalid value '{bad}'; allowed: a positive integer"):
            sweep(sweep_fns.process_id, grid, cache=False, progress=False)


def test_an_interrupted_sweep_resumes(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (log / "broken").touch()
    grid = {"x": [0, 1, 2, 3], "log_dir": [str(log)]}
    with ThreadPoolExecutor(2) as pool, pytest.raises(SweepError, match=r"1 of 4 points failed.*'x': 2") as info:
        sweep(sweep_fns.logged, grid, executor=pool, cache_root=tmp_path / "cache", progress=False)
    assert [c["x"] for c, _ in info.value.failures] == [2]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert sorted(p.name.split("-")[0] for p in (log / "calls").iterdir()) == ["0", "1", "2", "3"]

    (log / "broken").unlink()  # the "fix"
    frame = sweep(sweep_fns.logged, grid, executor="serial", cache_root=tmp_path / "cache", progress=False)
    assert frame["result"].tolist() == [0, 10, 20, 30]
    assert sorted(p.name.split("-")[0] for p in (log / "calls").iterdir()) == ["0", "1", "2", "2", "3"]

    again = sweep(sweep_fns.logged, grid, cache_root=tmp_path / "cache", progress=False)  # all cached: no pool
    pd.testing.assert_frame_equal(frame, again)
    assert len(list((log / "calls").iterdir())) == 5


def test_cached_points_are_not_submitted(tmp_path):
    grid = {"x": [1, 2, 3], "log_dir": [str(tmp_path)]}
    cache.cached_call(sweep_fns.logged, {"x": 2, "log_dir": str(tmp_path)}, root=tmp_path / "cache")
    with ThreadPoolExecutor(2) as pool:
        submitted = []
        original = pool.submit
        pool.submit = lambda *args, **kw: submitted.append(args[2]) or original(*args, **kw)
        frame = sweep(sweep_fns.logged, grid, executor=pool, cache_root=tmp_path / "cache", progress=False)
    assert frame["result"].tolist() == [10, 20, 30]
    assert [c["x"] for c in submitted] == [1, 3]


class _Job:
    """A submitit-like job (not a concurrent.futures.Future): done from its second poll on, run when asked."""

    def __init__(self, fn, args):
        self.fn, self.args, self.polls = fn, args, 0

    def done(self):
        self.polls += 1
        return self.polls > 1

    def result(self):
        return self.fn(*self.args)

    def cancel(self):
        return True


class _JobExecutor:
    def submit(self, fn, *args):
        return _Job(fn, args)


def test_executor_returning_jobs_is_polled(tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(sweep_module.time, "sleep", sleeps.append)
    frame = sweep(_returns, {"value": [1, 2, 3]}, executor=_JobExecutor(), cache_root=tmp_path, progress=False)
    assert frame["result"].tolist() == [1, 2, 3] and sleeps == [1.0]


def test_default_cache_root_is_resolved_in_the_caller(tmp_path, monkeypatch):
    monkeypatch.delenv("NORMLIB_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    sweep(sweep_fns.slow_square, {"x": [4]}, executor="serial", progress=False)
    assert len(list((tmp_path / "runs" / "cache").rglob("*.entry"))) == 1


def test_functions_workers_cannot_import_are_refused():
    def local(x):
        return x

    for fn in (lambda x: x, local):
        with pytest.raises(TypeError, match="lambda or a local function.*executor='serial'"):
            sweep(fn, {"x": [1]}, cache=False, progress=False)
    assert sweep(lambda x: x + 1, {"x": [1]}, executor="serial", cache=False, progress=False)["result"][0] == 2
    with pytest.raises(TypeError, match="module level"):  # the cache refuses it: its name does not identify it
        sweep(lambda x: x, {"x": [1]}, executor="serial", progress=False)
    with pytest.raises(TypeError, match="parameter 'executor'"):
        sweep(sweep_fns.slow_square, {"x": [1]}, executor="threads", progress=False)


def test_notebook_functions_are_refused(monkeypatch):
    fake_main = type(sys)("__main__")  # an interactive __main__ has no __file__
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    fn = _returns
    monkeypatch.setattr(fn, "__module__", "__main__")
    with pytest.raises(TypeError, match="notebook or REPL"):
        sweep(fn, {"value": [1]}, cache=False, progress=False)


@pytest.mark.slow
def test_dask_local_cluster_agrees_with_the_local_pool(tmp_path):
    """Compared with a serial run, which test_serial_and_process_pool_agree shows equal to the local pool."""
    distributed = pytest.importorskip("distributed")
    grid = {"seed": [0, 1, 2, 3], "n": [1000]}
    serial = sweep(sweep_fns.seeded_norm, grid, executor="serial", cache=False, progress=False)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        frame = sweep(sweep_fns.seeded_norm, grid, executor=client.get_executor(), cache_root=tmp_path, progress=False)
    pd.testing.assert_frame_equal(serial, frame)
    assert len(list(tmp_path.rglob("*.entry"))) == 4  # written by the Dask workers
