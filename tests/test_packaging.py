"""pyproject.toml and environment.yml list the same requirements; the repo has what it needs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PYPI = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    reqs = [Requirement(line) for line in lines]
    return {r.name.lower(): str(r.specifier) for r in reqs}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    lines = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            lines += [line for line in dep["pip"] if not line.startswith("-e")]
        elif not dep.startswith(("python", "pip")) or dep.startswith("python-"):
            lines.append(dep)
    reqs = [Requirement(line) for line in lines]
    return {CONDA_TO_PYPI.get(r.name.lower(), r.name.lower()): str(r.specifier) for r in reqs}


def test_environment_yml_agrees_with_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_environment_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert "-e ." in pip


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_licence_and_citation_exist():
    assert (ROOT / "LICENSE").is_file()
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] and citation["references"]
