"""Run a function over a parameter grid on any ``concurrent.futures.Executor``, through the result cache.

``sweep(fn, grid)`` calls ``fn(**config)`` for every point of ``grid`` and returns a ``pandas.DataFrame`` with
one row per point, in grid order: one column per config key, plus ``result`` holding what ``fn`` returned (any
object: a number, a dict, a DataFrame).

Where it runs (``executor=``):

- ``None``: a local ``ProcessPoolExecutor`` (``spawn`` start method, one torch thread per worker, as many
  workers as points to compute, at most one per CPU, or at most ``NORMLIB_WORKERS`` when that environment variable
  is set; ``NORMLIB_WORKERS=1`` computes in this process, with no pool), created and shut down by the sweep;
- ``"serial"``: in this process, one point after another (for debugging and tiny grids);
- an executor you own: a ``concurrent.futures.Executor`` such as ``distributed.Client(...).get_executor()``
  (Dask), or any object whose ``submit(fn, *args)`` returns jobs with ``done()``, ``result()`` and ``cancel()``,
  such as a ``submitit`` executor (Slurm; its jobs are polled every second). Only ``submit`` and what it returns
  are used; the executor is not shut down. Its workers must import the same normlib and see the cache folder (a
  shared file system).

With ``cache=True`` (default) every point goes through :func:`normlib.cache.cached_call`: points already in the
cache are read, not submitted, and the others are computed and written (atomically) by the worker that computes
them. A sweep that was killed or had failing points, run again, computes only what is missing. The cache stores
data, not pickles (:mod:`normlib.serialize`: numbers, strings, containers, numpy arrays, pandas frames, registered
dataclasses): a result of another type is returned all the same, with a logged warning, but not stored.

For worker processes ``fn`` must be importable: defined at module level of an importable module (not a lambda,
not a local function, not a function typed into a notebook or REPL).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from normlib import cache as _cache

__all__ = ["sweep", "expand_grid", "SweepError"]


_DIED = (
    ". A worker process died: out of memory, killed, or a script that starts a sweep outside "
    "`if __name__ == '__main__':` (spawned workers re-import the main script)"
)


class SweepError(RuntimeError):
    """Some points of a sweep raised; the others finished (and are cached). ``failures``: (config, exception)."""

    def __init__(self, message: str, failures: list[tuple[dict[str, Any], BaseException]]):
        super().__init__(message)
        self.failures = failures


def expand_grid(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The points of ``grid``, in a deterministic order.

    A dict of lists is the Cartesian product of its values, in key order, the last key varying fastest:
    ``{"a": [1, 2], "b": [3, 4]}`` gives ``a=1,b=3``, ``a=1,b=4``, ``a=2,b=3``, ``a=2,b=4``. A list of dicts is
    taken as it is. Values of a dict grid must be lists, tuples or ranges (a single value is ``[value]``).
    """
    if isinstance(grid, Mapping):
        if not grid:
            raise ValueError(
                "parameter 'grid': empty; allowed: a dict of non-empty lists, or a non-empty list of dicts"
            )
        for key, values in grid.items():
            if not isinstance(key, str):
                raise ValueError(f"parameter 'grid': key {key!r} is not a string")
            if not isinstance(values, (list, tuple, range)):
                raise ValueError(
                    f"parameter 'grid': grid[{key!r}] must be a list of values, got "
                    f"{type(values).__name__} {values!r} (write [{values!r}] for a single value)"
                )
            if len(values) == 0:
                raise ValueError(f"parameter 'grid': grid[{key!r}] is an empty list")
        return [dict(zip(grid, point)) for point in itertools.product(*grid.values())]
    if not isinstance(grid, (list, tuple)) or not grid:
        raise ValueError(
            f"parameter 'grid': invalid value {grid!r}; allowed: a dict of non-empty lists, or a "
            f"non-empty list of dicts"
        )
    for i, point in enumerate(grid):
        if not isinstance(point, Mapping) or not all(isinstance(k, str) for k in point):
            raise ValueError(f"parameter 'grid': grid[{i}] must be a dict with string keys, got {point!r}")
    return [dict(point) for point in grid]


def sweep(
    fn: Callable[..., Any],
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    executor: Any = None,
    cache: bool = True,
    cache_root: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> pd.DataFrame:
    """``fn(**config)`` for every point of ``grid`` (see :func:`expand_grid`), as a DataFrame in grid order.

    Args:
        fn: the function; module-level and importable, except with ``executor="serial", cache=False`` (the
            cache identifies ``fn`` by its qualified name, so it refuses lambdas and local functions too).
        grid: a dict of lists (Cartesian product) or a list of dicts.
        executor: ``None`` (local process pool), ``"serial"``, or an executor you own (see the module's doc).
        cache: read and write results through the cache (:mod:`normlib.cache`).
        cache_root: the cache folder (default :func:`normlib.cache.cache_root`, resolved here, in the caller).
        progress: show a tqdm bar over completed points (cached points count as done from the start).
        desc: the bar's label (default: ``fn``'s name).

    Returns:
        One row per point: the config's columns (missing keys of a list-of-dicts grid are NaN) and ``result``.

    Raises:
        ValueError: an invalid grid, or a config key named ``result``.
        TypeError: ``fn`` cannot be sent to worker processes (or cached), or ``executor`` has no ``submit``.
        SweepError: some points raised. Every other point ran to the end first and, with ``cache``, is stored, so
            running the sweep again computes only the failed points. The first failure is the ``__cause__``.
    """
    configs = expand_grid(grid)
    if any("result" in c for c in configs):
        raise ValueError("parameter 'grid': 'result' cannot be a config key (it names the column of results)")
    if not (executor is None or executor == "serial" or callable(getattr(executor, "submit", None))):
        raise TypeError(
            f"parameter 'executor': invalid value {executor!r}; allowed: None (a local process "
            f"pool), 'serial', or an executor with a submit method (concurrent.futures, Dask, submitit)"
        )
    if executor is None:
        local_workers()  # a bad NORMLIB_WORKERS stops the sweep before any compute
    if executor != "serial":
        _check_importable(fn)
    root = Path(cache_root if cache_root is not None else _cache.cache_root()).absolute() if cache else None

    results: dict[int, Any] = {}
    if root is not None:
        for i, config in enumerate(configs):
            hit, value = _cache.lookup(fn, config, root=root)
            if hit:
                results[i] = value
    todo = [i for i in range(len(configs)) if i not in results]

    with tqdm(
        total=len(configs), initial=len(results), desc=desc or getattr(fn, "__name__", "sweep"), disable=not progress
    ) as bar:
        failures = _run(fn, configs, todo, root, executor, results, bar)
    if failures:
        (first_config, first_error), n = failures[0], len(failures)
        died = any(isinstance(err, BrokenProcessPool) for _, err in failures)
        raise SweepError(
            f"{n} of {len(configs)} points failed (every other point ran to the end"
            f"{' and is cached' if cache else ''}); first: {first_config} raised {first_error!r}"
            + (_DIED if died else ""),
            failures,
        ) from first_error
    return _frame(configs, [results[i] for i in range(len(configs))])


def _run(
    fn: Callable[..., Any],
    configs: list[dict[str, Any]],
    todo: list[int],
    root: Path | None,
    executor: Any,
    results: dict[int, Any],
    bar: tqdm,
) -> list[tuple[dict[str, Any], BaseException]]:
    """Compute the points ``todo`` into ``results``; return the failures, in grid order."""
    errors: dict[int, BaseException] = {}
    if executor == "serial":
        for i in todo:
            try:
                results[i] = _compute(fn, configs[i], root)
            except Exception as err:
                errors[i] = err
            bar.update()
    elif executor is None and local_workers() == 1:
        return _run(fn, configs, todo, root, "serial", results, bar)
    elif todo:
        owned = executor is None
        pool = _local_pool(len(todo)) if owned else executor
        futures: dict[Any, int] = {}
        try:
            # The point's cache key travels with it: an executor that reuses results of identical calls (Dask's
            # pure tasks) would otherwise serve a stale result when only a plugin's source file changed.
            futures = {pool.submit(_compute, fn, configs[i], root, _token(fn, configs[i], root)): i for i in todo}
            for future in _completed(list(futures)):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as err:
                    errors[i] = err
                bar.update()
        except BaseException:  # e.g. KeyboardInterrupt: stop what has not started, do not wait for the rest
            for future in futures:
                future.cancel()
            if owned:
                pool.shutdown(wait=False, cancel_futures=True)
            raise
        if owned:
            pool.shutdown()
    return [(configs[i], errors[i]) for i in sorted(errors)]


def _completed(futures: list[Any], poll_s: float = 1.0) -> Iterator[Any]:
    """``futures`` as they complete: ``concurrent.futures.as_completed``, or polling ``done()`` (submitit jobs)."""
    if all(isinstance(f, Future) for f in futures):
        yield from as_completed(futures)
        return
    pending = futures
    while pending:
        done = [f for f in pending if f.done()]
        pending = [f for f in pending if f not in done]
        yield from done
        if pending and not done:
            time.sleep(poll_s)


def _compute(fn: Callable[..., Any], config: dict[str, Any], root: Path | None, token: str | None = None) -> Any:
    """One point, in whatever process runs it: through the cache (written there, atomically) or directly.
    ``token`` (the point's cache key) only makes two calls with different inputs distinct to the executor."""
    return _cache.cached_call(fn, config, root=root) if root is not None else fn(**config)


def _token(fn: Callable[..., Any], config: dict[str, Any], root: Path | None) -> str | None:
    """The point's cache key (``None`` without a cache): it covers the plugins' source files."""
    return _cache.cache_key(fn, config) if root is not None else None


def local_workers() -> int:
    """The most worker processes of the default local pool: ``NORMLIB_WORKERS`` when set (a positive integer),
    else the CPUs this process may run on."""
    text = os.environ.get("NORMLIB_WORKERS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(
                f"environment variable NORMLIB_WORKERS: invalid value {text!r}; allowed: a positive integer "
                "(1: compute in this process)"
            )
        return int(text)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _local_pool(n_points: int) -> ProcessPoolExecutor:
    """Spawned workers with one torch thread each, so that N workers use N cores, not N x N."""
    return ProcessPoolExecutor(
        max_workers=min(n_points, local_workers()),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
    )


def _init_worker() -> None:
    torch.set_num_threads(1)


def _check_importable(fn: Callable[..., Any]) -> None:
    """Worker processes receive ``fn`` by name (module + qualified name): make sure they can find it."""
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None or not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    where = f"{fn.__module__}.{qualname}"
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise TypeError(
            f"{where} is a lambda or a local function, which worker processes cannot import; define it "
            f"at module level of an importable module, or use executor='serial'"
        )
    main = sys.modules.get("__main__")
    if fn.__module__ == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(
            f"{where} was defined in a notebook or REPL, which worker processes cannot import; move it "
            f"into a module (a .py file on the path, or normlib), or use executor='serial'"
        )


def _frame(configs: list[dict[str, Any]], results: list[Any]) -> pd.DataFrame:
    frame = pd.DataFrame(configs, index=pd.RangeIndex(len(configs)))
    column = np.empty(len(results), dtype=object)  # filled one by one so that no result is broadcast or unpacked
    for i, result in enumerate(results):
        column[i] = result
    frame["result"] = column
    return frame
