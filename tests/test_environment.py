"""envs/dia.yaml (the rules' conda environment) pins what pyproject.toml pins, so the conda and
the venv routes run the same code."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import ROOT

# pyproject name -> conda-forge name, where they differ
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
# the workflow engine and its plugin run the rules; they are not needed inside the environment
ENGINE = {"snakemake", "snakemake-executor-plugin-slurm"}


def _spec(requirement: str) -> tuple[str, str]:
    """('name', 'constraint') of a PEP 508 or conda requirement, e.g. ('numpy', '==2.4.6')."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    assert match, requirement
    name, constraint = match[1].lower().replace("_", "-"), match[2].replace(" ", "")
    if constraint.startswith("=") and not constraint.startswith("=="):
        constraint = "=" + constraint  # conda's "=x" pins like pip's "==x"
    return name, constraint


def test_conda_environment_pins_equal_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        CONDA_NAMES.get(name, name): constraint
        for name, constraint in map(_spec, project["dependencies"])
        if name not in ENGINE
    }
    env = yaml.safe_load((ROOT / "envs" / "dia.yaml").read_text())
    found = {}
    for dep in env["dependencies"]:
        for requirement in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, constraint = _spec(requirement)
            if name not in ("python", "pip"):
                found[name] = constraint
    assert found == wanted
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert project["requires-python"] == ">=" + python.split("=")[-1]
