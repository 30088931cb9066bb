"""The book's compute budget, from the times its last cold build recorded (no run of its own).

Every cache miss of a chapter's measurement records its wall time (:mod:`normlib.timings`); ``make book`` computes
every chapter at seeds 0, 1 and 2 in one pool of single-threaded workers (``python -m normlib compute``), so each
record is one chapter-seed on one core. From them this script prints, per chapter, the seconds per seed, and two
targets of ``DESIGN.md``:

* a chapter's page, cold, on 2 cores: at least ``seconds / 2`` (its pieces spread perfectly over both), target
  <= 120 s for a training chapter. This is a floor, not the page's time: the page also starts a pool per sweep, runs
  its serial stretches on one core, and starts a kernel and draws (measured on 2026-11-26 with
  ``python -m normlib run`` on a cold cache: ch07 103 s against a floor of 28, ch08 181 s against 99);
* the whole book, cold, on 2 cores, with seeds 0-2: at least ``sum / 2`` for the measurements alone (the pages,
  Sphinx and the environment come on top), target <= 360 s.

Run ``make book`` first (cold, or the records are those of an earlier build). Run: ``python benchmarks/bench_book.py``.
"""

from __future__ import annotations

from _common import Row
from normlib import timings
from normlib.experiments import EXPERIMENTS, get_experiment
from normlib.scorecard import BOOK_SEEDS

CORES = 2
PAGE_TARGET = 120.0
BOOK_TARGET = 360.0


def seconds_per_seed(stem: str) -> list[float]:
    """The newest CPU record of ``stem``'s book preset at each of :data:`BOOK_SEEDS` that has one."""
    chapter = get_experiment(stem)
    by_digest = {}
    for record in reversed(timings.records(stem)):  # oldest first: the newest record of a digest wins
        if record.get("device") == "cpu":
            by_digest[record["digest"]] = record["seconds"]
    digests = [timings.config_digest(chapter.resolve("book", seed=seed)) for seed in BOOK_SEEDS]
    return [by_digest[d] for d in digests if d in by_digest]


def main() -> list[Row]:
    print(__doc__.split("\n\n")[0])
    rows, total, complete = [], 0.0, True
    for stem in EXPERIMENTS:
        found = seconds_per_seed(stem)
        if len(found) < len(BOOK_SEEDS):
            complete = False
        if not found:
            print(f"  {stem:<34} no record: run `make book` (or `python -m normlib compute`) first")
            continue
        mean = sum(found) / len(found)
        total += mean * len(BOOK_SEEDS)
        seeds = " ".join(f"{s:6.1f}" for s in found)
        print(f"  {stem:<34} seconds per seed (one core): {seeds}   page on {CORES} cores >= {mean / CORES:5.0f} s")
        rows.append(Row("book", f"{stem[:2]} page floor, cold, {CORES} cores (s)", mean / CORES, PAGE_TARGET))
    if complete:
        floor = total / CORES
        print(f"  all chapters x {len(BOOK_SEEDS)} seeds: {total:.0f} s of one core; on {CORES} cores >= {floor:.0f} s")
        rows.append(Row("book", f"measurements of the cold book, {CORES} cores (s)", floor, BOOK_TARGET))
    return rows


if __name__ == "__main__":
    for row in main():
        print(row.line())
