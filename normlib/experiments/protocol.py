"""The one protocol every chapter's experiment implements, and through which the notebooks, the scorecard and the
command line run it.

A chapter is an :class:`Experiment`: its parameters (:attr:`Experiment.spec`, a
:class:`~normlib.params.ParamSpec`), and five steps, each a method with one job::

    config    = chapter.resolve("book", depth=20)          # validated before any compute: a read-only Config
    measured  = chapter.measure(config, executor=pool)     # the networks, through the result cache
    predicted = chapter.predict(config, measured)          # what the theory says, by name
    checks    = chapter.check(config, measured, predicted) # ClaimCheck rows that can fail
    numbers   = chapter.summary(config, checks)            # what the page says about its verdicts

:meth:`Experiment.evaluate` chains them. Two things that used to be easy to get wrong are handled here once:

* **cache and executor together.** :meth:`Experiment.measure` looks the whole result up in the cache (keyed by the
  configuration, normlib's code and torch's version); on a miss it computes with the ``executor`` the caller gave
  (a process pool, a Dask or Slurm executor) and stores the result. Neither option silently overrides the other.
* **another theory is a parameter.** :meth:`Experiment.predict` takes ``theory``, an object with the functions of
  :mod:`normlib.theory` (the package itself by default); :meth:`Experiment.check` takes the predictions. A test that
  wants to see a verdict flip passes a wrong theory or a wrong prediction; nothing is monkeypatched.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import pandas as pd

from normlib import claims, timings
from normlib import theory as default_theory
from normlib.cache import lookup, store
from normlib.params import Config, ParamSpec

__all__ = ["Experiment", "Predictions"]

#: What :meth:`Experiment.predict` returns: every prediction the checks and the page use, by name.
Predictions = dict[str, Any]


class Experiment(abc.ABC):
    """One chapter's experiment. Subclasses set the class attributes and implement :meth:`compute`,
    :meth:`predict` and :meth:`check`; :meth:`summary` is optional.

    Attributes:
        notebook: the notebook's file stem (``01_stable_forward``).
        title: the chapter's title.
        paper: the paper whose claims it checks (``Lubana et al. 2021``).
        spec: its parameters and the ``book`` and ``paper`` presets.
        key_params: the parameters the page shows in its table of what ran (at most about twelve; every parameter
            when empty).
        book_seconds: about how long one seed of the ``book`` preset computes on one CPU core, as measured when
            the book was last built cold on 2 cores; the scorecard starts the longest chapters first, and
            ``normlib run`` quotes it before this machine has timed a run of its own.
    """

    notebook: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    spec: ClassVar[ParamSpec]
    key_params: ClassVar[tuple[str, ...]] = ()
    book_seconds: ClassVar[float] = 0.0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.notebook!r}: {self.title}>"

    # -- parameters ----------------------------------------------------------------------------------------------

    def resolve(self, preset: str = "book", **overrides: Any) -> Config:
        """The validated configuration (:meth:`normlib.params.ParamSpec.resolve`): a ``None`` override keeps the
        preset's value; a name or value that is not allowed raises :class:`~normlib.params.ParameterError`."""
        return self.spec.resolve(preset, **overrides)

    def parameter_table(self, config: Config) -> pd.DataFrame:
        """What the page ran, for a reader: one row per parameter of :attr:`key_params`, and per other parameter
        set differently from the preset, with its value and meaning; ``changed`` marks values that differ from the
        preset's."""
        changed = config.changed()
        names = list(self.key_params or self.spec.names)
        names += [n for n in self.spec.names if n in changed and n not in names]
        rows = [
            {
                "parameter": n,
                "value": _shown(config[n]),
                "changed": "yes" if n in changed else "",
                "meaning": self.spec.param(n).doc,
            }
            for n in names
        ]
        return pd.DataFrame(rows, columns=["parameter", "value", "changed", "meaning"])

    def _config(self, config: Mapping[str, Any]) -> Config:
        """``config`` as a :class:`Config` (a plain mapping, e.g. from a test, is taken as it is)."""
        return config if isinstance(config, Config) else Config(config)

    # -- measurement ---------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def compute(self, config: Config, *, executor: Any = None, cache: bool = True) -> Any:
        """Run the networks of this chapter, bypassing the whole-result cache. ``executor`` (any
        ``concurrent.futures.Executor``; ``None``: a local process pool or in-process) runs independent pieces,
        and ``cache`` applies to those pieces (a sweep's points are cached one by one)."""

    def measure(self, config: Mapping[str, Any], *, executor: Any = None, cache: bool = True) -> Any:
        """:meth:`compute` through the result cache: a stored result for this configuration, normlib's code and
        torch's version is returned as it is; otherwise it is computed, with ``executor``, and stored. With
        ``cache=False`` nothing is read or written."""
        config = self._config(config)
        if not cache:
            return self.compute(config, executor=executor, cache=False)
        key = {"config": config}
        hit, result = lookup(self.compute, key)
        if hit:
            return result
        started = time.perf_counter()
        result = self.compute(config, executor=executor, cache=True)
        store(self.compute, key, result)
        timings.record(self.notebook, config, _device_type(config), time.perf_counter() - started)
        return result

    def is_cached(self, config: Mapping[str, Any]) -> bool:
        """Whether :meth:`measure` would return a stored result for ``config`` without computing."""
        return lookup(self.compute, {"config": self._config(config)})[0]

    # -- theory and verdicts -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def predict(self, config: Config, measured: Any, *, theory: Any = default_theory) -> Predictions:
        """Every prediction the checks compare with, by name. ``measured`` is there for predictions that take
        a measured input (a weight norm, a variance); ``theory`` is any object with the functions of
        :mod:`normlib.theory` the chapter uses."""

    @abc.abstractmethod
    def check(self, config: Config, measured: Any, predicted: Predictions) -> list[claims.ClaimCheck]:
        """The chapter's claims, each prediction against its measurement."""

    def summary(self, config: Config, checks: list[claims.ClaimCheck]) -> dict[str, Any]:
        """What the page states about its verdicts: ``checks`` and ``reproduced`` (counts), ``not_reproduced``
        and ``not_judged`` (their ids), ``verdict`` (one sentence, Markdown) and ``measured`` (every row's measured
        value by id)."""
        failed = [c.id for c in checks if c.judged and not c.passed]
        return {
            "checks": len(checks),
            "reproduced": sum(c.passed for c in checks),
            "not_reproduced": failed,
            "not_judged": [c.id for c in checks if not c.judged],
            "verdict": claims.verdict_sentence(checks),
            "measured": {c.id: c.measured for c in checks},
        }

    def evaluate(
        self, config: Mapping[str, Any], *, executor: Any = None, cache: bool = True, theory: Any = default_theory
    ) -> list[claims.ClaimCheck]:
        """Measure, predict and check: every claim of this chapter at ``config``."""
        config = self._config(config)
        measured = self.measure(config, executor=executor, cache=cache)
        return self.check(config, measured, self.predict(config, measured, theory=theory))


def _shown(value: Any) -> str:
    """A parameter's value as a reader reads it: lists without brackets, other values as they are."""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _device_type(config: Mapping[str, Any]) -> str:
    """``cuda`` or ``cpu``: the kind of device a configuration computes on (``cpu`` without a device parameter)."""
    if "device" not in config:
        return "cpu"
    from normlib.runtime import resolve_device

    return resolve_device(config["device"]).type
