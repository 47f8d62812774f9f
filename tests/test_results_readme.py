"""results/README.md documents every output the shipped configs' DAGs produce, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dia.plan import Plan
from tests.conftest import ROOT, snakemake

README = (ROOT / "results" / "README.md").read_text()
CONFIGS = {
    "demo": ["config/demo.yaml", "config/demo_full.yaml"],
    "paper": ["config/config.yaml", "config/uniad_cifar.yaml"],
    "parity": ["config/parity_demo.yaml"],
}


def _outputs(configs: list[str]) -> set[str]:
    """Every file the DAG of ``configs`` writes, from Snakemake's own summary."""
    result = snakemake("--summary", "--configfile", *configs, "--replace-workflow-config")
    assert result.returncode == 0, result.stderr[-2000:]
    paths = {line.split("\t")[0] for line in result.stdout.splitlines()[1:] if line.strip()}
    assert paths, result.stdout[-2000:]
    return paths


def _generic(path: str, datasets: list[str]) -> str:
    """A path's file name with its wildcard values replaced by the README's placeholders."""
    name = Path(path).name
    for dataset in sorted(datasets, key=len, reverse=True):
        name = re.sub(rf"(?<![a-z0-9]){re.escape(dataset)}(?![a-z0-9])", "{dataset}", name)
    name = re.sub(r"res\d+_ratio\d+(?:\.\d+)?", "res{R}_ratio{r}", name)
    return re.sub(r"^[\w-]+__[\w.-]+?(?=\.json$|$)", "{owner}__{name}", name)


def _documented(name: str) -> bool:
    """``name`` is in the README, literally or as ``stem`` followed on its line (or the next) by
    its extension, as in ``table1_main.csv, .md, .tex``."""
    if name in README:
        return True
    stem, _, ext = name.partition(".")
    lines = README.splitlines()
    return any(
        stem in line and f".{ext}" in " ".join(lines[i : i + 2]) for i, line in enumerate(lines)
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_every_output_of_the_dag_is_documented(name: str) -> None:
    configs = CONFIGS[name]
    merged: dict = {}
    for path in configs:
        for key, value in yaml.safe_load((ROOT / path).read_text()).items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    datasets = Plan(merged).datasets
    undocumented = {
        _generic(path, datasets)
        for path in _outputs(configs)
        if not _documented(_generic(path, datasets))
    }
    assert not undocumented, f"results/README.md does not document {sorted(undocumented)}"


def test_every_documented_table_and_figure_is_an_output() -> None:
    outputs = {Path(p).name for name in CONFIGS for p in _outputs(CONFIGS[name])}
    listed = set(
        re.findall(r"\b(?:table\d\w*|fig\d\w*|ablation_\w+|bootstrap_ci|parity)\.csv", README)
    )
    listed |= set(re.findall(r"\bfig\d\w*\.png", README))
    assert listed and listed <= outputs, sorted(listed - outputs)
