"""normlib as a library people install: the core dependencies are what the code imports, the notebook extra is what
`python -m normlib run` needs (and says so when it is missing), and `pip install normlib` leaves a torch that is
already installed alone.

The last one is a real pip run, fully offline: a fresh virtualenv (no system site-packages) holds a stand-in
distribution named ``torch`` at another version than the pin; the project's wheel, built here from the working tree,
and metadata-only stand-ins for every other requirement (each at the lowest version its range admits) plus a newer
torch, ``TORCH_PIN``, lie in a local folder; ``pip install --dry-run --no-index --find-links`` of the project then
reports what pip would install. Without constraints.txt, as a user installs, it must not touch torch; the same
dry run with pyproject.toml's old exact pin ``torch==2.13.0`` must replace the stand-in.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: The pin CI tests (constraints.txt) and the stand-in a user already has: inside the declared range, not the pin.
TORCH_PIN = "2.13.0"
STAND_IN_TORCH = "2.3.1"


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


# ---------------------------------------------------------------------------------------------------------------
# What the code imports


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names of the absolute imports in ``path``: those run on import, and those inside functions."""
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, True)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other, in_function)
            elif isinstance(child, ast.Import):
                (lazy if in_function else eager).update(alias.name.split(".")[0] for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                (lazy if in_function else eager).add(child.module.split(".")[0])
            else:
                visit(child, in_function)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return eager, lazy


def _third_party_distributions(modules: set[str]) -> dict[str, str]:
    """Distribution (canonical name) of each imported module that is neither the standard library nor normlib."""
    found = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {"normlib", "__future__"}):
        try:  # most distributions are named after their module; scanning every distribution's files is slow
            found[module] = canonicalize_name(importlib.metadata.distribution(module).name)
        except importlib.metadata.PackageNotFoundError:
            providers = importlib.metadata.packages_distributions()
            assert module in providers, f"normlib imports {module!r}, which no installed distribution provides"
            found[module] = canonicalize_name(providers[module][0])
    return found


def test_core_dependencies_are_what_normlib_imports():
    eager: set[str] = set()
    lazy: set[str] = set()
    for path in sorted((ROOT / "normlib").rglob("*.py")):
        now, later = _imports(path)
        eager |= now
        lazy |= later
    core = _names(PROJECT["dependencies"])
    extras = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    at_import = _third_party_distributions(eager)
    in_functions = _third_party_distributions(lazy)
    undeclared = {m: d for m, d in at_import.items() if d not in core}
    assert not undeclared, f"imported when normlib is imported, but not in [project].dependencies: {undeclared}"
    optional = core | extras["notebook"] | extras["cluster"]
    undeclared = {m: d for m, d in in_functions.items() if d not in optional}
    assert not undeclared, f"imported by a function, but in neither the core nor an extra: {undeclared}"
    unused = core - set(at_import.values()) - set(in_functions.values())
    assert not unused, f"in [project].dependencies, but normlib never imports it: {unused}"


def test_run_without_the_notebook_extra_says_what_to_install(monkeypatch, capsys):
    from normlib.__main__ import main

    for module in ("papermill", "jupytext", "nbformat"):  # as if the extra were not installed
        monkeypatch.setitem(sys.modules, module, None)  # `import papermill` now raises ImportError
    assert main(["run", "01_stable_forward"]) == 2
    error = capsys.readouterr().err
    assert "is not installed" in error and 'pip install "normlib[notebook]"' in error


def test_the_notebook_extra_is_part_of_the_book_and_test_extras():
    extras = PROJECT["optional-dependencies"]
    assert {"papermill", "jupytext", "nbformat", "ipykernel"} <= _names(extras["notebook"])
    for extra in ("book", "test"):
        assert f"{PROJECT['name']}[notebook]" in extras[extra]


# ---------------------------------------------------------------------------------------------------------------
# pip and an installed torch


def _wheel(folder: Path, name: str, version: str, extras: set[str] = frozenset()) -> Path:
    """A metadata-only wheel (no code, no requirements): enough for pip to install it or resolve against it."""
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Provides-Extra: {extra}\n" for extra in sorted(extras)),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: normlib-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(text.encode())}\n"
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def _lowest_admitted(requirement: Requirement) -> str:
    """The lowest version named in the requirement's range that the range admits (its lower bound)."""
    candidates = sorted({Version(spec.version) for spec in requirement.specifier} | {Version("1.0")})
    admitted = [v for v in candidates if requirement.specifier.contains(v, prereleases=True)]
    assert admitted, f"no stand-in version for {requirement}"
    return str(admitted[0])


def _build_project(tmp: Path, out: Path, pyproject: str) -> Path:
    """The project's wheel, built offline with this environment's setuptools from a copy of the working tree."""
    source = tmp / f"src-{out.name}"
    shutil.copytree(ROOT / "normlib", source / "normlib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", source / "README.md")
    (source / "pyproject.toml").write_text(pyproject)
    out.mkdir(parents=True)
    build = "import sys; from setuptools import build_meta; build_meta.build_wheel(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", build, str(out)], cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = out.glob("normlib-*.whl")
    return wheel


@pytest.fixture(scope="module")
def offline_index(tmp_path_factory) -> dict[str, Path]:
    """Folders for ``--find-links``: the project as it is, the project with the old pin, and every requirement."""
    tmp = tmp_path_factory.mktemp("index")
    text = (ROOT / "pyproject.toml").read_text()
    (torch,) = [r for r in PROJECT["dependencies"] if Requirement(r).name == "torch"]
    pinned = text.replace(f'"{torch}"', f'"torch=={TORCH_PIN}"')
    assert pinned != text
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    stubs = tmp / "requirements"
    for requirement in requirements:
        if canonicalize_name(requirement.name) != PROJECT["name"] and requirement.name != "torch":
            _wheel(stubs, requirement.name, _lowest_admitted(requirement), requirement.extras)
    _wheel(stubs, "torch", TORCH_PIN)  # a newer torch is on offer: pip must still keep the installed one
    _build_project(tmp, tmp / "project", text)
    _build_project(tmp, tmp / "pinned", pinned)
    _wheel(tmp / "stand-in", "torch", STAND_IN_TORCH)
    return {"requirements": stubs, "project": tmp / "project", "pinned": tmp / "pinned", "stand-in": tmp / "stand-in"}


def _pip_environment() -> dict[str, str]:
    """No pip configuration, no constraints: pip as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    return {
        **env,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PYTHONNOUSERSITE": "1",
    }


@pytest.fixture(scope="module")
def venv_with_torch(tmp_path_factory, offline_index) -> Path:
    """A fresh virtualenv (its own pip from ensurepip, no system site-packages) with the stand-in torch installed."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    (wheel,) = offline_index["stand-in"].glob("*.whl")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
        check=True,
        env=_pip_environment(),
        capture_output=True,
        timeout=300,
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"],
        check=True,
        env=_pip_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    installed = {canonicalize_name(d["name"]): d["version"] for d in json.loads(listed)}
    assert installed.get("torch") == STAND_IN_TORCH and "numpy" not in installed, installed
    return python


def _dry_run(python: Path, tmp_path: Path, find_links: list[Path], target: str) -> dict[str, str]:
    """What ``pip install target`` would install, offline: {canonical name: version}."""
    report = tmp_path / "report.json"
    command = [python, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--report", str(report)]
    command += [arg for folder in find_links for arg in ("--find-links", str(folder))] + [target]
    result = subprocess.run(command, env=_pip_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }


def test_the_stand_in_is_a_torch_the_project_accepts():
    (torch,) = [Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == "torch"]
    assert torch.specifier.contains(STAND_IN_TORCH) and STAND_IN_TORCH != TORCH_PIN


@pytest.mark.slow
@pytest.mark.parametrize("extras", ["", "[notebook,book,test,cluster]"], ids=["core", "all-extras"])
def test_pip_leaves_an_installed_torch_alone(venv_with_torch, offline_index, tmp_path, extras):
    plan = _dry_run(
        venv_with_torch, tmp_path, [offline_index["requirements"], offline_index["project"]], f"normlib{extras}"
    )
    assert plan.get("normlib") == PROJECT["version"] and {"numpy", "scipy", "pandas"} <= set(plan), plan
    assert "torch" not in plan, f"pip would replace the installed torch {STAND_IN_TORCH}: {plan}"


@pytest.mark.slow
def test_the_old_exact_pin_would_have_replaced_it(venv_with_torch, offline_index, tmp_path):
    """The control: the same dry run, with pyproject.toml's former `torch==2.13.0`, swaps the user's torch."""
    plan = _dry_run(venv_with_torch, tmp_path, [offline_index["requirements"], offline_index["pinned"]], "normlib")
    assert plan.get("torch") == TORCH_PIN, plan
