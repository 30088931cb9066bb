"""Decide whether ``make book`` may reuse the last build, so that a warm rebuild is fast and never stale.

Jupyter Book re-executes a notebook when jupyter-cache sees its code change, and Sphinx rewrites a page when its
source changes; neither sees what the notebooks *import*. This script hashes everything else a page depends on:

* every ``.py`` file of ``normlib`` (the computing; the API page's docstrings),
* every file under ``reference/`` (the outside-reference data the chapters and the scorecard read),
* ``_config.yml``, ``_toc.yml`` and ``book/references.bib``,
* the installed distributions and their versions (torch, matplotlib, jupyter-book ...),
* the dataset folder's file names and sizes (``$NORMLIB_DATA`` or the Debian package's folder),
* this script itself.

``python tools/book_inputs.py check`` removes ``_build`` unless ``_build/.book-inputs`` holds the same hash (a cold
build starts from nothing, as before); ``python tools/book_inputs.py record`` writes the hash after a build that
succeeded. A build that fails never records, so the next one starts cold.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
STAMP = BUILD / ".book-inputs"
DATA_DIRS = ("/usr/share/datasets/fashion-mnist",)


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)


def fingerprint() -> str:
    """sha256 over the inputs listed in the module's docstring."""
    digest = hashlib.sha256()

    def add(label: str, payload: bytes) -> None:
        digest.update(label.encode() + b"\0" + payload + b"\0")

    sources = _files(ROOT / "normlib", "*.py") + _files(ROOT / "reference", "*")
    sources += [ROOT / name for name in ("_config.yml", "_toc.yml", "book/references.bib")]
    sources.append(Path(__file__).resolve())
    for path in sources:
        if path.exists():
            add(path.relative_to(ROOT).as_posix(), path.read_bytes())
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    add("packages", "\n".join(packages).encode())
    data_dirs = [os.environ["NORMLIB_DATA"]] if os.environ.get("NORMLIB_DATA") else list(DATA_DIRS)
    for folder in map(Path, data_dirs):
        if folder.is_dir():
            add(str(folder), "\n".join(f"{p.name}:{p.stat().st_size}" for p in _files(folder, "*")).encode())
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    if argv not in (["check"], ["record"]):
        print("usage: python tools/book_inputs.py check|record", file=sys.stderr)
        return 2
    current = fingerprint()
    if argv == ["record"]:
        STAMP.parent.mkdir(parents=True, exist_ok=True)
        STAMP.write_text(current + "\n")
        return 0
    recorded = STAMP.read_text().strip() if STAMP.exists() else None
    if recorded == current:
        print(
            "book inputs unchanged since the last build: reusing _build (jupyter-cache re-executes changed notebooks)"
        )
    else:
        why = "no recorded build" if recorded is None else "normlib, reference data, config or packages changed"
        print(f"book inputs: {why}; building from an empty _build")
        shutil.rmtree(BUILD, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
