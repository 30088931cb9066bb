"""Device check of 2026-11-26 (second call of the day; one GPU machine, one call).

Every chapter at the book preset on CUDA (``device="cuda"`` where the chapter has a device parameter), seeds 0, 1
and 2, one (chapter, seed) per worker of a spawn process pool sharing the GPU: each row's verdict against the
verdict the book expects on the CPU (issue 11: verdicts must not depend on the device), with its measured value.
Chapter 08 on CUDA also runs its ``model.half()`` arm (float16 weights, activations and running buffers), which
the CPU skips (issue 14). Results go to $OUT/device_report.json as they arrive.

Run: PYTHONPATH=<folder with normlib> NORMLIB_DATA=<folder with fashion-mnist/> OUT=<folder> python run_device.py
"""

import json
import os
import sys
import time
import traceback


def chapter_seed(stem, seed):
    import torch

    from normlib.experiments import get_experiment

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    try:
        exp = get_experiment(stem)
        names = {p.name for p in exp.spec.params}
        overrides = {"device": dev} if "device" in names else {}
        cfg = exp.resolve("book", seed=seed, **overrides)
        checks = exp.evaluate(cfg, executor="serial")
        return {
            "s": round(time.time() - t0, 1),
            "device": overrides.get("device", "cpu"),
            "rows": {
                c.id: {
                    "passed": bool(c.passed),
                    "expected": bool(c.expected),
                    "kind": c.kind,
                    "predicted": c.predicted,
                    "measured": c.measured,
                    "alternative_passed": c.alternative_passed,
                }
                for c in checks
            },
        }
    except Exception as e:  # noqa: BLE001
        return {"s": round(time.time() - t0, 1), "error": repr(e)[:400], "tb": traceback.format_exc()[-2000:]}


def main():
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    from normlib.experiments import EXPERIMENTS

    out = os.environ.get("OUT", "out")
    os.makedirs(out, exist_ok=True)
    chapters = os.environ["CHAPTERS"].split(",") if os.environ.get("CHAPTERS") else list(EXPERIMENTS)
    report = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(),
        "commit": os.environ.get("COMMIT"),
        "book": {},
    }
    t_start = time.time()

    def save():
        report["elapsed_s"] = round(time.time() - t_start, 1)
        tmp = os.path.join(out, "device_report.json.tmp")
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1, default=str)
        os.replace(tmp, os.path.join(out, "device_report.json"))

    print({k: report[k] for k in ("torch", "gpu", "cpus", "commit")}, flush=True)
    with ProcessPoolExecutor(max_workers=int(os.environ.get("WORKERS", "12")), mp_context=mp.get_context("spawn")) as ex:
        futures = {ex.submit(chapter_seed, stem, seed): (stem, seed) for seed in (0, 1, 2) for stem in chapters}
        for future in as_completed(futures):
            stem, seed = futures[future]
            result = future.result()
            report["book"].setdefault(str(seed), {})[stem] = result
            differ = result.get("error") or [i for i, v in result["rows"].items() if v["passed"] != v["expected"]]
            print("seed", seed, stem, result.get("s"), "differs:" if differ else "same", differ or "", flush=True)
            save()
    save()
    print("done", round(time.time() - t_start, 1), flush=True)


if __name__ == "__main__":
    sys.exit(main())
