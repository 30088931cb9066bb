"""How long a chapter's measurement took, kept beside the result cache, and what that says about the next run.

Each time :meth:`~normlib.experiments.protocol.Experiment.measure` computes (a cache miss), it records one file,
``<cache root>/timings/<notebook>/<config digest>-<device>.json``: the wall seconds, the device, the torch threads,
the parameters that differ from the preset, and the date. The file is written to a temporary name and moved into
place, so a reader never sees half a record and two writers never lose each other's.

:func:`estimate` answers "how long will this run take?" before ``python -m normlib run`` computes anything, in this
order of evidence:

1. the whole result is in the cache: seconds;
2. this exact configuration was measured on this kind of device: that time;
3. the same preset was measured on this kind of device with other parameters: that time, named as such, with the
   parameters that differ (the reader knows which of them scale the work);
4. nothing measured on this device: ``None`` (the caller says so rather than guessing).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from normlib.cache import cache_root

__all__ = ["Estimate", "config_digest", "record", "records", "estimate"]


@dataclass(frozen=True)
class Estimate:
    """An estimated run time: ``seconds`` and the ``basis`` it rests on, in words."""

    seconds: float
    basis: str

    def __str__(self) -> str:
        return f"estimated time: {_duration(self.seconds)} ({self.basis})"


def config_digest(config: Any) -> str:
    """A short digest of a resolved configuration's values (JSON, sorted keys)."""
    values = dict(config)
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _folder(notebook: str, root: str | os.PathLike | None = None) -> Path:
    return (Path(root) if root else cache_root()) / "timings" / notebook


def record(notebook: str, config: Any, device: str, seconds: float, root: str | os.PathLike | None = None) -> Path:
    """Store one measured wall time of ``notebook`` at ``config`` on ``device`` (``cpu``, ``cuda``)."""
    folder = _folder(notebook, root)
    folder.mkdir(parents=True, exist_ok=True)
    changed = config.changed() if hasattr(config, "changed") else {}
    entry = {
        "notebook": notebook,
        "digest": config_digest(config),
        "preset": dict(config).get("preset"),
        "changed": dict(changed),
        "device": device,
        "threads": torch.get_num_threads(),
        "seconds": round(float(seconds), 3),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    path = folder / f"{entry['digest']}-{device}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(entry, handle, default=str)
    os.replace(tmp, path)
    return path


def records(notebook: str, root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every readable record of ``notebook`` (a damaged file is skipped), newest first."""
    folder = _folder(notebook, root)
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda r: r.get("date", ""), reverse=True)


def estimate(
    notebook: str, config: Any, device: str, *, cached: bool = False, root: str | os.PathLike | None = None
) -> Estimate | None:
    """What the records say about a run of ``notebook`` at ``config`` on ``device`` (see the module docstring)."""
    if cached:
        return Estimate(1.0, "the result is in the cache: the page only draws it")
    same_device = [r for r in records(notebook, root) if r.get("device") == device]
    digest = config_digest(config)
    for r in same_device:
        if r.get("digest") == digest:
            return Estimate(r["seconds"], f"this configuration took that on {device} on {r['date'][:10]}")
    preset = dict(config).get("preset")
    for r in same_device:
        if r.get("preset") == preset and not r.get("changed"):
            changed = config.changed() if hasattr(config, "changed") else {}
            differs = f"; yours differs in {', '.join(sorted(changed))}" if changed else ""
            return Estimate(
                r["seconds"], f"preset {preset} as it is took that on {device} on {r['date'][:10]}{differs}"
            )
    return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 5400:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
