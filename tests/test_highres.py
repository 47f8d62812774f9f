"""The high-resolution path through the whole workflow, on a generated Kvasir v2 archive.

ImageNet-style ResNet-18, images decoded once from a local zip (and once more per baseline input
view), dissolving by resizing down to the diffusion model's resolution and back, Kvasir's own t
range. Also: Kaggle credentials are checked before any job runs, and never with a network call.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import run_workflow, snakemake, table1_cells, tiny_config
from tests.fakes import make_kvasir, zip_tree


@pytest.mark.slow
def test_kvasir_archive_runs_dia_csi_and_baselines_at_high_resolution(tmp_path: Path) -> None:
    archive = zip_tree(make_kvasir(tmp_path / "src", per_class=10), tmp_path / "kvasir v2.zip")
    kvasir = {
        "source": "kvasir",
        "local_path": str(archive),
        "normal_labels": ["normal-cecum", "normal-pylorus", "normal-z-line"],
        "anomaly_labels": ["polyps"],
        "image_size": 32,
        "split": {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.3},
        "contrastive": {"arch": "resnet18_imagenet", "image_size": 32},
        "dissolve": {"fit": "resize", "t_min": 100, "t_max": 200},
    }
    # Two baselines whose official loaders resize the original files (48 x 40) to sizes other
    # than the prepared 32 x 32: RD4AD squashes to 64 x 64, Mean-Shift keeps the aspect ratio.
    config = tiny_config(tmp_path, {"kvasir": kvasir}, baselines=("rd4ad", "meanshift"))
    values = yaml.safe_load(config.read_text())
    values["rd4ad"]["image_size"] = 64
    values["meanshift"]["batch_size"] = 8
    config.write_text(yaml.safe_dump(values))
    work = tmp_path / "work"
    result = run_workflow(work, config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    methods = {"dia", "csi", "rd4ad", "meanshift"}
    assert table1_cells(work) == {(m, "kvasir") for m in methods}
    views = work / "results/data/kvasir/views"
    with np.load(views / "square64-bilinear.npz") as rd4ad:
        assert rd4ad["images"].shape == (40, 64, 64, 3)
    with np.load(views / "short32-bicubic.npz") as meanshift:
        assert meanshift["images"].shape == (40, 32, 32, 3)
    with np.load(work / "results/dissolved/kvasir/res16_ratio1.0.npz") as cache:
        assert cache["dissolved"].shape[-2:] == (16, 16)
        assert cache["t_grid"].min() == 100 and cache["t_grid"].max() <= 200
    with np.load(work / "results/data/kvasir/images.npz") as data:
        assert data["images"].shape == (40, 32, 32, 3)
    with open(work / "results/runs/dia/kvasir/default/seed0/scores.csv") as f:
        scores = list(csv.DictReader(f))
    assert any(" " not in r["id"] and r["id"].startswith("polyps/") for r in scores)


def _no_kaggle_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env["HOME"] = str(home)
    return env


def test_missing_kaggle_credentials_stop_the_run_before_any_job(tmp_path: Path) -> None:
    sars = {"source": "sarscov2", "normal_labels": ["non-COVID"], "image_size": 32}
    config = tiny_config(tmp_path, {"sarscov2": sars})
    work = tmp_path / "work"
    work.mkdir()
    env = _no_kaggle_env(tmp_path / "home")
    args = (
        "--cores",
        "1",
        "--directory",
        work,
        "--configfile",
        config,
        "--replace-workflow-config",
    )
    dry = snakemake("-n", *args, cwd=work, env=env)
    assert dry.returncode == 0, dry.stderr  # planning needs no credentials
    result = snakemake(*args, cwd=work, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Kaggle credentials not found" in output and "sarscov2" in output
    assert "kaggle.json" in output
    assert not (work / "logs").exists() and not (work / "resources").exists()
