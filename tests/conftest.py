"""Shared test helpers: paths to the checkout and the real data beside it, the Snakemake CLI."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MEDMNIST = SHARED_DATA / "medmnist"
TINY_CONFIG = ROOT / "tests" / "data" / "tiny.yaml"


def snakemake(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the Snakemake CLI of this interpreter's environment on the workflow.

    Without ``cwd`` it runs in a scratch working directory holding only a copy of config/, so
    whatever a user ran in the checkout (the demo's results/, a paper run) never changes what a
    test sees.
    """
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe), "--snakefile", str(ROOT / "workflow" / "Snakefile"), *map(str, args)]
    if cwd is not None:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
        )
    with tempfile.TemporaryDirectory(prefix="dia-workflow-") as scratch:
        shutil.copytree(ROOT / "config", Path(scratch, "config"))
        cmd[3:3] = ["--directory", scratch]
        return subprocess.run(
            cmd, cwd=scratch, capture_output=True, text=True, timeout=timeout, env=env
        )


def tiny_config(tmp_path: Path, datasets: dict, baselines: tuple[str, ...] = ()) -> Path:
    """tiny.yaml at one seed on ``datasets`` instead of phantom, with ``baselines`` added to
    CSI and DIA (at tiny.yaml's sizes); written to ``tmp_path/config.yaml``."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["seeds"] = [0]
    config["datasets"] = datasets
    config.pop("variants")  # tiny.yaml's variants are defined on the phantom dataset
    config["methods"] |= {m: {"model": m} for m in baselines}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def table1_cells(work: Path) -> set[tuple[str, str]]:
    """(method, dataset) of every row of a finished run's Table 1."""
    with open(work / "results" / "tables" / "table1_main.csv") as f:
        return {(row["method"], row["dataset"]) for row in csv.DictReader(f)}


def run_workflow(work: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """Run the whole workflow for real in ``work`` with ``config``, on 2 cores.

    ``work`` gets its own copy of config/ because frozen split manifests are read from there.
    """
    shutil.copytree(ROOT / "config", work / "config", dirs_exist_ok=True)
    return snakemake(
        "--cores",
        "2",
        "--directory",
        work,
        "--configfile",
        config,
        "--replace-workflow-config",
        cwd=work,
    )


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """One intra-op thread: the tiny test models run far faster so on a small, shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
