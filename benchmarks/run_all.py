"""Run every benchmark of this folder and print one summary table (``make bench``).

Each script is also runnable on its own; see its docstring for what it measures and why. Timings on a machine
shared with other work are noisy: the scripts print the CPU pressure Linux reports next to their numbers.
Exit status 0 even when a target is missed: these are measurements, not tests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_book  # noqa: E402
import bench_layers  # noqa: E402
import bench_probes  # noqa: E402
import bench_sweep  # noqa: E402
import bench_train  # noqa: E402

BENCHMARKS = (bench_layers, bench_probes, bench_sweep, bench_train, bench_book)


def main() -> None:
    start = time.perf_counter()
    rows = []
    for bench in BENCHMARKS:
        rows += bench.main()
        print()
    print(f"summary ({time.perf_counter() - start:.0f} s)")
    for row in rows:
        print("  " + row.line())
    missed = [row for row in rows if not row.ok]
    print(f"{len(rows) - len(missed)} of {len(rows)} targets met")


if __name__ == "__main__":
    main()
