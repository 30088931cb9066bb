"""Dependencies are pinned in one place and the conda/Binder environment agrees with it."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    names = {_name(r) for r in requirements}
    # dask[distributed] brings distributed, which environment.yml names explicitly
    if "dask" in names:
        names.add("distributed")
    return names


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def _environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = {}
    for item in pip_section:
        if item.startswith("-e"):
            continue
        name, version = item.split("==")
        pins[name.lower()] = version
    return pins


def test_environment_names_the_same_packages_as_pyproject():
    assert set(_environment_pins()) == _pyproject_names()


def test_environment_pins_match_constraints():
    constraints = _constraints()
    for name, version in _environment_pins().items():
        assert constraints.get(name) == version, f"{name}: environment.yml {version}, constraints {constraints.get(name)}"


def test_torch_is_pinned_everywhere():
    assert _constraints()["torch"] == "2.13.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert "PIP_CONSTRAINT" in (ROOT / "Makefile").read_text()


def test_every_direct_dependency_is_pinned():
    constraints = _constraints()
    missing = sorted(n for n in _pyproject_names() if n not in constraints)
    assert not missing, f"not pinned in constraints.txt: {missing}"
