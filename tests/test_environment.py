"""Dependencies: pyproject.toml gives lower bounds, constraints.txt pins every package exactly (and is the only place
that does), environment.yml carries the same pins for conda and Binder, and every install the Makefile makes goes
through constraints.txt."""

import re
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
TORCH_PIN = "2.13.0"


def _requirements() -> list[Requirement]:
    """Every requirement of the core and the extras, without the extras' references to normlib itself."""
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra]
    return [r for r in requirements if canonicalize_name(r.name) != PROJECT["name"]]


def _pyproject_names() -> set[str]:
    names = {canonicalize_name(r.name) for r in _requirements()}
    # dask[distributed] brings distributed, which environment.yml names explicitly
    if "dask" in names:
        names.add("distributed")
    return names


def _constraint_lines() -> list[str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in _constraint_lines():
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    return pins


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _environment_pins() -> dict[str, str]:
    pip_section = next(d["pip"] for d in _environment()["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for item in pip_section:
        if item.startswith("-e"):
            continue
        name, version = item.split("==")
        pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_every_package_exactly_once():
    pattern = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*$")
    bad = [line for line in _constraint_lines() if not pattern.match(line)]
    assert not bad, f"not an exact pin: {bad}"
    names = [canonicalize_name(line.split("==")[0]) for line in _constraint_lines()]
    assert len(names) == len(set(names)), "a package is pinned twice"


def test_environment_names_the_same_packages_as_pyproject():
    assert set(_environment_pins()) == _pyproject_names()


def test_environment_pins_match_constraints():
    constraints = _constraints()
    for name, version in _environment_pins().items():
        pin = constraints.get(name)
        assert pin == version, f"{name}: environment.yml {version}, constraints.txt {pin}"


def test_every_direct_dependency_is_pinned():
    constraints = _constraints()
    missing = sorted(n for n in _pyproject_names() if n not in constraints)
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_pyproject_gives_lower_bounds_not_pins():
    """`pip install normlib` must not replace a recent enough torch (or numpy, ...) that is already installed."""
    for requirement in _requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert not operators & {"==", "===", "~="}, f"{requirement}: pins live only in constraints.txt"
    for requirement in map(Requirement, PROJECT["dependencies"]):
        assert any(spec.operator == ">=" for spec in requirement.specifier), f"{requirement}: give a lower bound"


def test_the_pins_satisfy_the_declared_ranges():
    """What CI tests (the pins) is inside what the package claims (pyproject's ranges)."""
    constraints = _constraints()
    for requirement in _requirements():
        pin = constraints[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pin, prereleases=True), f"{requirement} excludes the pin {pin}"


def test_torch_is_pinned_in_constraints_and_environment_only():
    assert _constraints()["torch"] == TORCH_PIN
    assert _environment_pins()["torch"] == TORCH_PIN
    (torch,) = [Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == "torch"]
    assert str(torch.specifier).startswith(">="), torch


def test_python_versions_agree():
    requires = SpecifierSet(PROJECT["requires-python"])
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in requires
    conda_python = next(d for d in _environment()["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert conda_python.split("=")[1] in requires
    # the tests read this file with tomllib, new in 3.11
    assert Version("3.10") not in requires


def test_every_install_in_the_makefile_goes_through_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "export PIP_CONSTRAINT := $(CURDIR)/constraints.txt" in makefile
    overrides = [
        line
        for line in makefile.splitlines()
        if "PIP_CONSTRAINT" in line and not line.startswith(("export PIP_CONSTRAINT :=", "#"))
    ]
    assert not overrides, f"a recipe overrides the constraints: {overrides}"
    for line in makefile.splitlines():
        if re.search(r"pip install", line):
            assert not re.search(r"\s(-c|--constraint)\s", line) and "--isolated" not in line, line
