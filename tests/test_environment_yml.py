"""environment.yml (conda and Binder) must install what pyproject.toml declares, from conda-forge, plus labkit."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name, where they differ; the course runs on CPU, so torch is the CPU build.
CONDA_NAMES = {"torch": {"pytorch-cpu", "pytorch"}}


def load_environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def load_project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def conda_specs(env: dict) -> dict[str, str]:
    """Conda package name -> its version constraint ("" if none), for the plain (non-pip) dependencies."""
    specs = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            name, constraint = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep.strip()).groups()
            specs[name.lower()] = constraint.replace(" ", "")
    return specs


def pip_section(env: dict) -> list[str]:
    sections = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    return [line for section in sections for line in section]


def conda_name(requirement: Requirement, specs: dict[str, str]) -> str:
    """The name under which ``specs`` (from environment.yml) installs a PyPI requirement."""
    aliases = CONDA_NAMES.get(requirement.name.lower(), {requirement.name.lower()})
    found = sorted(aliases & specs.keys())
    assert found, f"environment.yml lacks {requirement.name} (as any of {sorted(aliases)})"
    return found[0]


RUNTIME = [Requirement(r) for r in load_project()["dependencies"]]


def test_conda_forge_is_the_only_channel():
    assert load_environment()["channels"] == ["conda-forge"]


def test_python_version_meets_requires_python():
    python = conda_specs(load_environment())["python"]
    version = python.lstrip("=")
    assert python.startswith("=") and version in SpecifierSet(load_project()["requires-python"])


@pytest.mark.parametrize("requirement", RUNTIME, ids=[r.name for r in RUNTIME])
def test_every_runtime_dependency_is_installed_by_conda_with_the_same_bounds(requirement):
    # Same bounds, or `pip install -e .` would replace conda's package with a PyPI wheel.
    specs = conda_specs(load_environment())
    constraint = specs[conda_name(requirement, specs)]
    assert SpecifierSet(constraint) == requirement.specifier


def test_lab_and_test_extras_are_installed():
    extras = load_project()["optional-dependencies"]
    wanted = {Requirement(r).name.lower() for r in extras["lab"] + extras["test"]}
    assert wanted <= conda_specs(load_environment()).keys()


def test_postbuild_installs_labkit_and_prefetches_cifar10():
    # Binder builds environment.yml before the repository is copied in, so `-e .` there would fail the build.
    assert "-e ." not in pip_section(load_environment())
    postbuild = ROOT / "postBuild"
    script = postbuild.read_text()
    assert postbuild.stat().st_mode & 0o111, "postBuild must be executable"
    assert script.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in script
    assert "pip install --no-deps -e ." in script and "load_cifar10()" in script
