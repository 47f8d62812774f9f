"""The runtime estimator: units of work per stage from the plan, measured on the CPU."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

import dia.evaluation.runtime as runtime
from dia.baselines import build_baseline
from dia.evaluation.runtime import Probe, dataset_sizes, estimate
from dia.plan import Plan
from dia.sections import resolve
from tests.conftest import ROOT, TINY_CONFIG

TINY = yaml.safe_load(TINY_CONFIG.read_text())


def test_units_per_stage_follow_the_plan() -> None:
    table = estimate(Plan(TINY), "dia_code", {"phantom": (100, 160)}, Probe("cpu", 2, reps=1))
    rows = table.set_index("stage")
    # two diffusion models (ratios 1.0 and 0.1), each 6 steps x batch 8 x accumulation 2
    assert rows.loc["train_diffusion", "jobs"] == 2
    assert rows.loc["train_diffusion", "units"] == 2 * 6 * 8 * 2
    # both read a cache of 100 images x t in {30, 50, 70, 90}
    assert rows.loc["dissolve_cache", "units"] == 2 * 100 * 4
    # 8 runs (dia, csi, dia-perm x 2 seeds; dia-ratio01, dia-median x 1) x 2 epochs x 2 batches
    assert rows.loc["train: CSI and DIA", "jobs"] == 8
    assert rows.loc["train: CSI and DIA", "units"] == 8 * 2 * 2
    # eval_every_epochs 1 over 2 epochs: one periodic evaluation per run
    assert rows.loc["train: periodic evaluations", "units"] == 8 * 160
    assert rows.loc["score", "units"] == 8 * 160
    assert (table["hours"] > 0).all()
    assert "train: baselines" not in rows.index


def test_a_baseline_is_timed_per_training_and_scored_image(monkeypatch) -> None:
    """Timed once per configuration: every run of the same baseline reuses the figures."""
    built = []
    monkeypatch.setattr(runtime, "build_baseline", lambda *a: built.append(a) or build_baseline(*a))
    cfg = resolve("rd4ad", "dia_code", [TINY])
    probe = Probe("cpu", 2, reps=1)
    train_s, score_s = probe.baseline_images("rd4ad", cfg, 16)
    assert train_s > 0 and score_s > 0
    assert probe.baseline_images("rd4ad", cfg, 16) == (train_s, score_s) and len(built) == 1


def test_sizes_come_from_prepared_manifests_else_the_known_table(tmp_path) -> None:
    paper = Plan(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    (tmp_path / "kvasir").mkdir()
    pd.DataFrame(
        {"label": [0, 0, 1, 0, 1], "split": ["train", "train", "train", "val", "test"]}
    ).to_csv(tmp_path / "kvasir" / "manifest.csv", index=False)
    sizes = dataset_sizes(paper, tmp_path)
    assert sizes["kvasir"] == (2, 4)
    assert sizes["oct2017"] == (25789, 25789 + 1670 + 968)
    assert sizes["cifar100_class3"] == (2250, 17250)
    assert set(sizes) == set(paper.datasets)


@pytest.mark.parametrize("mode", [None, "cache", "online", "blur"])
def test_contrastive_step_is_timed_for_every_dissolve_mode(mode) -> None:
    layers = [
        TINY,
        TINY["datasets"]["phantom"],
        {"dissolve": {"kind": "median"}} if mode == "blur" else {},
    ]
    cfg = resolve("contrastive", "dia_code", layers).replace(
        method="csi" if mode is None else "dia"
    )
    dissolve_cfg = resolve("dissolve", "dia_code", layers)
    diffusion_cfg = resolve("diffusion", "dia_code", layers).replace(
        resolution=dissolve_cfg.resolution
    )
    assert Probe("cpu", 2, reps=1).contrastive_step(cfg, mode, dissolve_cfg, diffusion_cfg) > 0


class UnitProbe:
    """One second per unit of every stage: the estimate then counts units."""

    def diffusion_image(self, *_args: object) -> float:
        return 1.0

    def dissolve_image(self, *_args: object) -> float:
        return 1.0

    def contrastive_step(self, *_args: object) -> float:
        return 1.0

    def score_image(self, *_args: object) -> float:
        return 1.0

    def baseline_images(self, *_args: object) -> tuple[float, float]:
        return 1.0, 1.0


def test_the_paper_trains_one_diffusion_model_per_cifar_dataset_and_ratio(tmp_path) -> None:
    """20 models (16 of the six datasets and Table 3, 2 per CIFAR dataset), not 76."""
    paper = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    plan = Plan(paper)
    rows = estimate(plan, "dia_code", dataset_sizes(plan, tmp_path), UnitProbe()).set_index("stage")
    assert rows.loc["train_diffusion", "jobs"] == 20
    assert rows.loc["train_diffusion", "units"] == 20 * 25_000 * 256 * 2
