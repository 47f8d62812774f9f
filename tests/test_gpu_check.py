"""scripts/gpu_check.sh on a machine without a GPU, and its slice's config and report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ROOT

SLICE = ROOT / "scripts" / "gpu_slice_config.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run")
def test_without_a_gpu_the_check_says_so_in_one_line_and_succeeds(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", ROOT / "scripts" / "gpu_check.sh", tmp_path / "out"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().count("\n") == 0 and "no CUDA GPU" in result.stdout
    assert not (tmp_path / "out").exists()


def test_the_slice_is_medmnist_cpu_on_the_gpu_at_one_seed(tmp_path: Path) -> None:
    npz = tmp_path / "pneumoniamnist.npz"
    env = {"PNEUMONIAMNIST_NPZ": str(npz), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, SLICE, tmp_path], capture_output=True, text=True, env=env, check=True
    )
    config = yaml.safe_load((tmp_path / "slice.yaml").read_text())
    base = yaml.safe_load((ROOT / "config" / "medmnist_cpu.yaml").read_text())
    assert (config["device"], config["seeds"]) == ("cuda", [0])
    assert config["datasets"]["pneumoniamnist"]["local_path"] == str(npz)
    assert config["contrastive"] == base["contrastive"]
    assert str(npz) in result.stdout


def test_the_report_reads_each_precisions_runs(tmp_path: Path) -> None:
    run = tmp_path / "slice_bf16/results/runs/dia/pneumoniamnist/default/seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"last": {"auroc": 0.8125}}))
    (run / "train_meta.json").write_text(json.dumps({"train_seconds": 5.0, "steps": 500}))
    result = subprocess.run(
        [sys.executable, SLICE, "--report", tmp_path], capture_output=True, text=True, check=True
    )
    assert "slice bf16 dia: test AUROC 0.812, 10.0 ms/step" in result.stdout
    assert "slice fp32 csi: not finished" in result.stdout
