"""Device checks of 2026-11-26 (one GPU machine, one call).

A. every chapter at the book preset on CUDA, seeds 0, 1, 2: verdicts against the rows' expected verdicts (issue 11:
   verdicts must not depend on the device);
B. the similarity-speed link over the paper's normalizer set on the paper's 10-layer CNN (cfg_10), Fashion-MNIST,
   batch 256, the paper's recipe: cosine at the last layer at initialization and mean training accuracy (issue 12);
C. the speed-stability map on cfg_10 at batch 16: IN, GN(4), GN(16), LN over a fine peak-LR grid (4 points per
   factor of 2), two seeds, plus batch 256 at a few rates (issue 12).
Every result is written to $OUT/device_report.json as it arrives. STAGES (comma-separated: book, similarity_speed,
tradeoff; default all) picks what runs.
"""

import json
import math
import os
import sys
import time
import traceback

TINY = os.environ.get("TINY") == "1"


def book_seed(seed):
    import torch

    from normlib.experiments import EXPERIMENTS, get_experiment

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = {}
    for stem in os.environ.get("CHAPTERS", "").split(",") if os.environ.get("CHAPTERS") else EXPERIMENTS:
        t0 = time.time()
        try:
            exp = get_experiment(stem)
            names = {p.name for p in exp.spec.params}
            ov = {"device": dev} if "device" in names else {}
            if TINY:
                ov.update({k: v for k, v in {"subset": 256, "max_steps": 3, "repeats": 1}.items() if k in names})
            cfg = exp.resolve("book", seed=seed, **ov)
            checks = exp.evaluate(cfg, executor="serial")
            out[stem] = {
                "s": round(time.time() - t0, 1),
                "device": dev if ov.get("device") else "cpu",
                "rows": {
                    c.id: {
                        "passed": bool(c.passed),
                        "expected": bool(c.expected),
                        "predicted": c.predicted,
                        "measured": c.measured,
                        "alternative_passed": c.alternative_passed,
                    }
                    for c in checks
                },
            }
        except Exception as e:  # noqa: BLE001
            out[stem] = {"s": round(time.time() - t0, 1), "error": repr(e)[:400], "tb": traceback.format_exc()[-1500:]}
    return out


def _recipe(seed, batch_size, peak_lr, steps):
    from normlib import presets
    from normlib.experiments import stable_backward as sb

    config = sb.EXPERIMENT.resolve(
        "paper", dataset="fashion-mnist", subset=2048 if TINY else None, test_subset=500 if TINY else 2000, seed=seed
    )
    # The paper's rule multiplies the base LR by 256 / batch; pass the base so that the peak is peak_lr.
    return config, presets.train_config(config, batch_size=batch_size, lr=peak_lr * batch_size / 256, max_steps=steps, progress=False)


def train_point(norm, group_size, peak_lr, batch_size, steps, seed, probe_cosine=False):
    import torch

    from normlib import data, models, presets, probes
    from normlib import train as training
    from normlib.runtime import resolve_device

    config, tc = _recipe(seed, batch_size, peak_lr, steps)
    dataset = presets.dataset_options(config)
    kwargs = {"cfg": "cfg_10", "norm": norm, **({"group_size": group_size} if group_size else {})}
    rec = {}
    if probe_cosine:
        train_set, _ = training.load_splits(dataset, tc.seed)
        x, _ = next(data.batches(train_set, tc.batch_size, seed=tc.seed, epoch=0))
        torch.manual_seed(tc.seed)
        model = models.build_model("cnn", **training.model_kwargs_for(kwargs, train_set)).to(resolve_device(tc.device))
        model.train()
        frame = probes.probe_model(model, x.to(next(model.parameters()).device), metrics=("cosine",))
        rec["init_cosine"] = float(frame[frame["index"] == frame["index"].max()]["value"].iloc[0])
        del model
    r = training.train_model("cnn", kwargs, dataset, tc)
    h = r.history
    loss = h["loss"].to_numpy(dtype=float)
    acc = h["accuracy"].to_numpy(dtype=float)
    k = max(1, len(loss) // 10)
    run_min = [min(loss[: i + 1]) for i in range(len(loss))]
    spikes = int(sum(1 for i in range(1, len(loss)) if not math.isfinite(loss[i]) or loss[i] > 2 * run_min[i - 1]))
    rec.update(
        diverged=bool(r.diverged),
        diverged_step=r.diverged_step,
        test_acc=float(r.test_accuracy),
        steps=int(len(loss)),
        peak_lr_used=float(h["lr"].max()),
        mean_train_acc=float(acc[acc == acc].mean()),
        first=float(loss[0]),
        last10=float(loss[-k:][loss[-k:] == loss[-k:]].mean()) if len(loss) else float("nan"),
        min=float(loss[loss == loss].min()),
        spikes=spikes,
        wall_s=round(float(r.wall_time_s), 1),
        curve=[round(float(loss[i : i + k].mean()), 3) for i in range(0, len(loss), k)],
        acc_curve=[round(float(acc[i : i + k].mean()), 3) for i in range(0, len(acc), k)],
    )
    return rec


def main():
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    out = os.environ.get("OUT", "out")
    os.makedirs(out, exist_ok=True)
    workers = int(os.environ.get("WORKERS", "15"))
    report = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(),
        "tiny": TINY,
        "book": {},
        "similarity_speed": [],
        "tradeoff": [],
    }
    t_start = time.time()

    def save():
        report["elapsed_s"] = round(time.time() - t_start, 1)
        with open(os.path.join(out, "device_report.json.tmp"), "w") as f:
            json.dump(report, f, indent=1, default=str)
        os.replace(os.path.join(out, "device_report.json.tmp"), os.path.join(out, "device_report.json"))

    print({k: report[k] for k in ("torch", "gpu", "cpus")}, flush=True)
    s256, s16 = (3, 3) if TINY else (400, 1000)
    paper_norms = ["bn", "ln", "gn", "frn", "vn", "sws", "wn", "evo_b0", "evo_s0", "in"]
    peaks16 = [round(0.05 * 2 ** (i / 4), 4) for i in range(9)]  # 0.05 ... 0.2, 4 points per factor of 2
    seeds = (0, 1)
    stages = os.environ.get("STAGES", "book,similarity_speed,tradeoff").split(",")
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = {}
        for seed in (0, 1, 2) if "book" in stages else ():
            futs[ex.submit(book_seed, seed)] = ("book", seed)
        for seed in seeds if "similarity_speed" in stages else ():
            for norm in paper_norms:
                p = dict(norm=norm, group_size=None, peak_lr=0.1, batch_size=256, steps=s256, seed=seed, probe_cosine=True)
                futs[ex.submit(train_point, **p)] = ("similarity_speed", p)
        for seed in seeds if "tradeoff" in stages else ():
            for peak in peaks16:
                for norm, g in (("gn", 1), ("gn", 4), ("gn", 16), ("ln", None)):
                    p = dict(norm=norm, group_size=g, peak_lr=peak, batch_size=16, steps=s16, seed=seed)
                    futs[ex.submit(train_point, **p)] = ("tradeoff", p)
        for peak in (0.1, 0.4, 1.6) if "tradeoff" in stages else ():
            for norm, g in (("gn", 1), ("gn", 16), ("ln", None)):
                p = dict(norm=norm, group_size=g, peak_lr=peak, batch_size=256, steps=s256, seed=0)
                futs[ex.submit(train_point, **p)] = ("tradeoff", p)
        for f in as_completed(futs):
            stage, p = futs[f]
            try:
                res = f.result()
            except Exception as e:  # noqa: BLE001
                res = {"error": repr(e)[:400], "tb": traceback.format_exc()[-1200:]}
            if stage == "book":
                report["book"][str(p)] = res
                summary = {
                    stem: (r.get("s"), r.get("error") or [i for i, v in r["rows"].items() if v["passed"] != v["expected"]])
                    for stem, r in res.items()
                }
                print("book seed", p, summary, flush=True)
            else:
                report[stage].append({**p, **res})
                print(stage, json.dumps({**p, **{k: v for k, v in res.items() if "curve" not in k}}, default=str)[:300], flush=True)
            save()
    save()
    print("done", round(time.time() - t_start, 1), flush=True)


if __name__ == "__main__":
    sys.exit(main())
