"""The command line: ``python -m normlib list | run | compute | claims | report-card | fetch``.

``run NOTEBOOK -p NAME VALUE ... [--preset paper] [--dry-run]`` validates the parameters against the notebook's
``parameters`` cell and its experiment's allowed values (before any compute; ``--dry-run`` stops there and prints
the resolved configuration), executes the notebook with papermill (read through
jupytext in memory) into ``runs/NAME-<hash>/`` and writes the executed notebook, its figures and ``claims.json``
there. ``claims`` evaluates every registered claim at the book's defaults at seeds 0, 1 and 2 (``--seeds``), prints
a table, and exits 1 when any verdict differs from the one the book expects (an unexpected pass included);
``--falsify`` also exits 1 when a row would pass under its alternative, and ``--json FILE`` writes every row.
``compute`` measures the same chapters and seeds into the result cache, in one process pool, the longest chapters
first, without judging them (``make book`` runs it before the pages, so both cores stay busy). ``list`` shows the
notebooks and their parameters; ``fetch DATASET`` downloads a dataset. ``report-card NORM`` grades a normalizer
(a registered name, or your own ``module:Class`` / ``path/to/file.py:Class``) on the three properties of chapter 04
against the paper's ten and prints the grades, from the same code as the chapter (no training).
A layer given as a file path on the command line is made absolute, so that a notebook running in its own folder
finds it.
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from normlib.params import ParameterError, parse_cli_value

NOTEBOOK_DIR = Path("notebooks")


class UsageError(Exception):
    """A mistake on the command line: printed as one message, exit status 2."""


def _notebook_path(notebook: str) -> Path:
    from normlib.experiments import EXPERIMENTS, notebook_stem

    path = Path(notebook)
    if path.suffix == ".md" and path.exists():
        return path
    candidate = NOTEBOOK_DIR / f"{notebook_stem(notebook)}.md"
    if candidate.exists():
        return candidate
    raise UsageError(
        f"notebook {notebook!r} not found (looked for {path} and {candidate}); "
        f"allowed: {', '.join(EXPERIMENTS)} (run from the book's root folder)"
    )


def read_notebook(path: Path):
    """The notebook as an nbformat node, read from its jupytext MyST markdown."""
    import jupytext

    return jupytext.read(path, fmt="md:myst")


def parameter_names(notebook) -> list[str]:
    """Names assigned in the cell tagged ``parameters``, in order."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise UsageError(f"the notebook must have exactly one code cell tagged 'parameters', found {len(cells)}")
    names = []
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def _parse_parameters(pairs: list[list[str]], allowed: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, text in pairs:
        if name == "preset":
            raise UsageError("set the preset with --preset, not -p preset")
        if name not in allowed:
            raise UsageError(f"unknown parameter {name!r}; allowed: {', '.join(n for n in allowed if n != 'preset')}")
        if name in params:
            raise UsageError(f"parameter {name!r} given twice")
        params[name] = _absolute_plugins(parse_cli_value(text))
    return params


def _absolute_plugins(value: Any) -> Any:
    """A ``path/to/file.py:Class`` value (or list entry) with its path made absolute from the current folder."""
    from normlib.layers.plugins import absolute_spec

    if isinstance(value, str):  # "bn,my.py:Norm" is a list a parameter splits later
        return ",".join(absolute_spec(v) for v in value.split(","))
    if isinstance(value, list):
        return [absolute_spec(v) if isinstance(v, str) else v for v in value]
    return value


def _run_dir(root: Path, stem: str, preset: str, params: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({"preset": preset, **params}, sort_keys=True, default=str).encode()).hexdigest()
    return root / f"{stem}-{digest[:10]}"


def _save_figures(executed, folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    saved = []
    for index, cell in enumerate(executed.cells):
        for number, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            if "image/png" in data:
                path = folder / f"cell{index:02d}_{number}.png"
                path.write_bytes(base64.b64decode(data["image/png"]))
                saved.append(path)
    return saved


def _print_config(path: Path, preset: str, config: Any, params: dict[str, Any]) -> None:
    """The resolved configuration of a dry run, one parameter per line; ``(set)`` marks the ones given with ``-p``."""
    print(f"dry run of {path} with preset={preset}: the parameters are valid; nothing was computed")
    values = {k: v for k, v in config.to_dict().items() if k != "preset"}
    width = max(map(len, values), default=0)
    for name, value in values.items():
        print(f"  {name:<{width}}  {value!r}" + ("  (set)" if name in params else ""))


def _missing_data(config: Any) -> list[str]:
    """One message per dataset the run needs (its ``dataset`` parameter) that is not on this machine."""
    from normlib import data

    if "dataset" not in config:
        return []
    try:
        data.require(config["dataset"])
    except data.DataNotFoundError as error:
        return [str(error)]
    return []


def _device_of(config: Any) -> str:
    """The device the run will use (``cpu`` for chapters without a device parameter)."""
    from normlib.runtime import resolve_device

    return str(resolve_device(config["device"]).type) if "device" in config else "cpu"


def _confirm_cpu_paper_run(yes: bool) -> None:
    """The paper preset is sized for a GPU: on a CPU it can take hours or days. Warn; ask when a person is at the
    terminal; without one, go on only with ``--yes``."""
    warning = "warning: --preset paper is sized for a GPU and this machine has none: it may take hours or days on CPU"
    print(warning, file=sys.stderr, flush=True)
    if yes:
        return
    if sys.stdin.isatty():
        if input("run it anyway? [y/N] ").strip().lower() in ("y", "yes"):
            return
        raise UsageError("stopped: --preset paper without a GPU was not confirmed")
    raise UsageError("--preset paper without a GPU: add --yes to run it anyway (or use --preset book)")


def _time_estimate(experiment: Any, config: Any, device: str) -> str:
    """A line for the terminal: the run's estimated time from what this machine measured before
    (:func:`normlib.timings.estimate`), or that nothing was measured yet."""
    from normlib import timings

    found = timings.estimate(experiment.notebook, config, device, cached=experiment.is_cached(config))
    if found is not None:
        return str(found)
    changed = config.changed() if hasattr(config, "changed") else {}
    if (
        dict(config).get("preset") == "book"
        and device == "cpu"
        and not set(changed) - {"seed"}
        and experiment.book_seconds
    ):
        return (
            f"estimated time: about {experiment.book_seconds:.0f} s of one CPU core (the book's own cold build); "
            f"no run of {experiment.notebook} is recorded on this machine yet"
        )
    return f"estimated time: unknown, no run of {experiment.notebook} on {device} is recorded on this machine yet"


def command_run(args: argparse.Namespace) -> int:
    try:  # the notebook extra; `import normlib` and the other commands work without it
        import jupytext  # noqa: F401  (read_notebook)
        import papermill
    except ImportError as error:
        raise UsageError(
            f"`run` executes notebooks, which needs the notebook extra ({error.name} is not installed): "
            'pip install "normlib[notebook]"'
        ) from error

    from normlib.claims import RUN_DIR_ENV
    from normlib.experiments import get_experiment, notebook_stem

    path = _notebook_path(args.notebook)
    stem = notebook_stem(path)
    experiment = get_experiment(stem)
    notebook = read_notebook(path)
    names = parameter_names(notebook)
    params = _parse_parameters(args.param or [], names)
    config = experiment.resolve(args.preset, **params)  # raises ParameterError before any compute
    missing = _missing_data(config)
    if args.dry_run:
        _print_config(path, args.preset, config, params)
        if missing:
            print(
                f"data missing: {config['dataset']} is not on this machine (get it: python -m normlib fetch "
                f"{config['dataset']})"
            )
        return 0
    if missing:
        raise UsageError(missing[0])
    device = _device_of(config)
    if args.preset == "paper" and device == "cpu":
        _confirm_cpu_paper_run(args.yes)

    run_dir = _run_dir(Path(args.out), stem, args.preset, params)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "parameters.json").write_text(json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    print(f"running {path} with preset={args.preset} {params or ''} on {device} -> {run_dir}", flush=True)
    print(_time_estimate(experiment, config, device), flush=True)
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    try:
        executed = papermill.execute_notebook(
            notebook,
            str(run_dir / f"{stem}.ipynb"),
            parameters={"preset": args.preset, **params},
            cwd=str(path.parent),
            kernel_name=args.kernel,
            # The experiment's own progress bars (tqdm on the kernel's stderr) reach this terminal; papermill's
            # bar over cells would fight them for the line, so it stays off.
            progress_bar=False,
            log_output=False,
            stderr_file=None if args.quiet else sys.stderr,
        )
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
    figures = _save_figures(executed, run_dir / "figures")
    print(f"wrote {run_dir / (stem + '.ipynb')}, {len(figures)} figures", flush=True)
    claims_file = run_dir / "claims.json"
    if claims_file.exists():
        records = json.loads(claims_file.read_text())
        failed = [r["id"] for r in records if not r["passed"]]
        print(
            f"claims: {len(records) - len(failed)} of {len(records)} reproduced"
            + (f"; not reproduced: {', '.join(failed)}" if failed else "")
        )
    return 0


def command_list(args: argparse.Namespace) -> int:
    from normlib.experiments import EXPERIMENTS, get_experiment

    for stem in EXPERIMENTS:
        experiment = get_experiment(stem)
        print(f"{stem}: {experiment.title} ({experiment.paper})")
        print(f"  {'preset':<12} one of: book, paper (default book)")
        for row in experiment.spec.describe():
            print(f"  {row['name']:<12} {row['doc']}; {row['allowed']}; book={row['book']!r} paper={row['paper']!r}")
    return 0


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(v < 0 for v in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds: invalid value {text!r}; allowed: distinct non-negative integers, e.g. 0,1,2")
    return seeds


def _print_rows(rows, columns: list[str]) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 48):
        print(rows[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def _evaluate_with(stems: list[str], seeds: list[int], preset: str, pairs: list[list[str]]) -> Any:
    """Every claim of ``stems`` at ``seeds`` with parameters set by ``-p`` (a layer of your own, say), in this
    process: the rows :func:`normlib.scorecard.evaluate` gives, with every parameter checked before any compute."""
    from dataclasses import asdict

    import pandas as pd

    from normlib import scorecard
    from normlib.experiments import get_experiment

    configs = []
    for stem in stems:
        chapter = get_experiment(stem)
        params = _parse_parameters(pairs, list(chapter.spec.names))
        if "seed" in params:
            raise UsageError("set the seeds with --seeds, not -p seed")
        configs += [(stem, chapter, chapter.resolve(preset, **params, seed=seed)) for seed in seeds]
    records = [
        {"notebook": stem, "seed": int(config["seed"]), **asdict(check)}
        for stem, chapter, config in configs
        for check in chapter.evaluate(config)
    ]
    return pd.DataFrame(records, columns=scorecard.COLUMNS)


def _chapters_and_seeds(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The notebooks (``--only``) and seeds (``--seeds``) of ``claims`` and ``compute``, with ``--preset`` and
    ``--jobs`` validated."""
    from normlib.experiments import EXPERIMENTS, notebook_stem
    from normlib.params import PRESETS

    if args.preset not in PRESETS:
        raise UsageError(f"--preset: invalid value {args.preset!r}; allowed: {', '.join(PRESETS)}")
    unknown = [name for name in args.only or [] if notebook_stem(name) not in EXPERIMENTS]
    if unknown:
        raise UsageError(f"--only: unknown notebook {unknown[0]!r}; allowed: {', '.join(EXPERIMENTS)}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs: invalid value {args.jobs!r}; allowed: a positive number of processes")
    stems = [s for s in EXPERIMENTS if not args.only or s in {notebook_stem(n) for n in args.only}]
    return stems, _parse_seeds(args.seeds)


def command_compute(args: argparse.Namespace) -> int:
    import time

    from normlib import scorecard

    stems, seeds = _chapters_and_seeds(args)
    started = time.perf_counter()
    print(f"computing {', '.join(stems)} at preset={args.preset}, seeds {args.seeds}", file=sys.stderr, flush=True)
    rows = scorecard.evaluate(stems, seeds, args.preset, jobs=args.jobs)
    print(
        f"{len(stems)} chapter(s) x {len(seeds)} seed(s) in the result cache ({len(rows)} claim rows) after "
        f"{time.perf_counter() - started:.0f} s; `python -m normlib claims` judges them"
    )
    return 0


def command_claims(args: argparse.Namespace) -> int:
    import json

    from normlib import scorecard

    stems, seeds = _chapters_and_seeds(args)
    if args.json is not None and not Path(args.json).expanduser().absolute().parent.is_dir():
        raise UsageError(f"--json: the folder of {args.json!r} does not exist; create it or choose another file")

    print(f"evaluating {', '.join(stems)} at preset={args.preset}, seeds {args.seeds}", file=sys.stderr, flush=True)
    if args.param:
        rows = _evaluate_with(stems, seeds, args.preset, args.param)
    else:
        rows = scorecard.evaluate(stems, seeds, args.preset, jobs=args.jobs)
    folded = scorecard.robustness(rows)
    folded["seeds reproduced"] = folded["seeds_reproduced"].astype(str) + "/" + folded["seeds"].astype(str)
    folded["measured at seeds"] = folded["measured_by_seed"]
    _print_rows(folded, ["id", "kind", "predicted", "measured at seeds", "tolerance", "seeds reproduced", "verdict"])
    top = scorecard.headline(folded)
    print(
        f"{top['reproduced']} of {top['claims']} claims (paper and derived) reproduced at seeds "
        f"{','.join(map(str, seeds))}"
        + (f"; {top['not_judged']} not judged (precondition not met)" if top["not_judged"] else "")
        + f"; sanity checks: {top['n_known']} known, {top['n_identity']} identity"
    )
    if args.json is not None:
        records = json.loads(rows.to_json(orient="records"))
        path = Path(args.json)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(records, indent=2) + "\n")
        tmp.replace(path)
        print(f"wrote {len(records)} rows to {path}")

    status = 0
    if args.falsify:
        weak = scorecard.not_discriminating(rows)
        if len(weak):
            print(f"\n{len(weak)} row(s) cannot tell their claim from its alternative:")
            _print_rows(
                weak, ["id", "seed", "kind", "alternative", "alternative_value", "passed", "alternative_passed"]
            )
            status = 1
        else:
            print("every row fails under its alternative (or is an identity)")
    differences = scorecard.gate(rows)
    if len(differences):
        print(f"\n{len(differences)} verdict(s) differ from the book's expectation:")
        _print_rows(differences, ["id", "seed", "measured", "tolerance", "passed", "expected", "reason"])
        status = 1
    else:
        print("every verdict equals the book's expectation")
    return status


def command_report_card(args: argparse.Namespace) -> int:
    import pandas as pd

    from normlib.experiments import compass

    chapter = compass.EXPERIMENT
    norm = _absolute_plugins(args.norm)
    baselines = chapter.resolve(args.preset)["baseline_norms"]
    if args.baselines:
        baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    baselines = [b for b in baselines if b != norm]  # grading a baseline: the others are its company
    trained = [b for b in ("bn", "evo_s0", "ln", "gn") if b in baselines][:3] or baselines[:3]
    overrides = {"seed": args.seed, "baseline_norms": baselines, "train_baselines": trained}
    config = chapter.resolve(args.preset, norm=norm, **overrides)  # checks the layer (a smoke test) first
    print(f"grading {compass.title(norm)} against {', '.join(config['baseline_norms'])} at seed {config['seed']}",
          file=sys.stderr, flush=True)  # fmt: skip
    card = compass.report_card_now(config)
    with pd.option_context("display.max_rows", None, "display.width", 250, "display.max_colwidth", 90):
        print(card.drop(columns=["norm"]).to_string(index=False))
    print()
    for line in compass.advice(card, norm):
        print(f"- {line}")
    return 0


def command_fetch(args: argparse.Namespace) -> int:
    from normlib import data

    if args.dataset not in data.DATASETS or args.dataset == "synthetic":
        raise UsageError(
            f"unknown dataset {args.dataset!r}; allowed: {', '.join(d for d in data.DATASETS if d != 'synthetic')}"
        )
    folder = data.fetch(args.dataset, root=args.root)
    print(f"{args.dataset}: ready in {folder}")
    return 0


def _add_param_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``-p/--param NAME VALUE``, repeatable, as ``run`` and ``claims`` take it."""
    parser.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m normlib", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute one notebook with other parameters")
    run.add_argument("notebook", help="notebook name or path, e.g. 01_stable_forward or notebooks/01_stable_forward.md")
    _add_param_option(run, "set a parameter (repeatable); VALUE is a Python literal or a plain string, lists as a,b,c")
    run.add_argument("--preset", default="book", help="book (CPU, minutes) or paper (the paper's scale)")
    run.add_argument("--out", default="runs", help="folder that receives NAME-<hash>/ (default: runs)")
    run.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    run.add_argument(
        "--quiet", action="store_true", help="no progress bars (the experiment's, forwarded from the kernel)"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="validate the parameters and print the resolved values; compute nothing"
    )
    run.add_argument("--yes", action="store_true", help="run --preset paper on a machine without a GPU, unasked")
    run.set_defaults(handler=command_run)

    listing = commands.add_parser("list", help="show the notebooks and their parameters")
    listing.set_defaults(handler=command_list)

    check = commands.add_parser(
        "claims", help="evaluate every claim over seeds; exit 1 if any verdict differs from the book's expectation"
    )
    check.add_argument("--preset", default="book", help="book (default) or paper")
    check.add_argument("--only", nargs="+", help="notebook names to evaluate (default: all)")
    check.add_argument("--seeds", default="0,1,2", help="seeds to evaluate every claim at (default: 0,1,2)")
    check.add_argument("--json", default=None, metavar="FILE", help="write every (claim, seed) row to FILE")
    check.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="processes evaluating chapters and seeds (default: one per CPU; 1: in this process)",
    )
    check.add_argument(
        "--falsify", action="store_true", help="also exit 1 if any row passes under its alternative, or has none"
    )
    _add_param_option(
        check,
        "set a parameter of the chapters evaluated (repeatable; e.g. -p norm my.py:MyNorm with --only 04_compass); "
        "evaluated in this process",
    )
    check.set_defaults(handler=command_claims)

    compute = commands.add_parser(
        "compute",
        help="measure chapters at seeds into the result cache, all in one process pool, longest first (no verdicts)",
        description=(
            "Measure every (chapter, seed) into the result cache in one process pool of --jobs workers, the "
            "longest chapters first, so that the cores stay busy; the book's pages, its scorecard and `claims` then "
            "read the results. `make book` runs it before the pages. A result already cached is not recomputed."
        ),
    )
    compute.add_argument("--preset", default="book", help="book (default) or paper")
    compute.add_argument("--only", nargs="+", help="notebook names to compute (default: all)")
    compute.add_argument("--seeds", default="0,1,2", help="seeds to compute every chapter at (default: 0,1,2)")
    compute.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: one per CPU; 1: in this process)"
    )
    compute.set_defaults(handler=command_compute)

    card = commands.add_parser(
        "report-card", help="grade a normalizer on properties A, B and C against the paper's ten (chapter 04)"
    )
    card.add_argument("norm", help="a registered name (rms, bn, ...) or your own module:Class or path/to/file.py:Class")
    card.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    card.add_argument("--preset", default="book", help="book (default) or paper")
    card.add_argument("--baselines", default=None, help="comma-separated baselines (default: the paper's ten)")
    card.set_defaults(handler=command_report_card)

    fetch = commands.add_parser("fetch", help="download a dataset (checksum-verified) into the data folder")
    fetch.add_argument("dataset", help="fashion-mnist, cifar10 or cifar100")
    fetch.add_argument(
        "--root", default=None, help="folder to download into (default: $NORMLIB_DATA or the user cache)"
    )
    fetch.set_defaults(handler=command_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ParameterError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
