"""The whole workflow on a tiny phantom configuration, run for real in a scratch directory."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_CONFIG, run_workflow, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the tiny workflow once; every test below inspects its outputs."""
    work = tmp_path_factory.mktemp("tiny_run")
    result = run_workflow(work, TINY_CONFIG)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work


def test_table1_has_dia_and_csi_rows_for_every_selection_rule(workdir: Path) -> None:
    with open(workdir / "results/tables/table1_main.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "method",
        "dataset",
        "selection",
        "n_seeds",
        "auroc_mean",
        "auroc_std",
        "paper_auroc",
        "diff_vs_paper",
    ]
    assert {(r["method"], r["selection"]) for r in rows} == {
        (m, s) for m in ("dia", "csi") for s in ("last", "val", "test_oracle")
    }
    for row in rows:
        assert row["dataset"] == "phantom" and row["n_seeds"] == "2"
        assert 0.0 <= float(row["auroc_mean"]) <= 1.0
        assert row["paper_auroc"] == ""


def test_run_folder_holds_scores_metrics_and_provenance(workdir: Path) -> None:
    run = workdir / "results/runs/dia/phantom/default/seed1"
    with open(run / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "split", "label", "score"]
    assert {r["split"] for r in rows} == {"val", "test"}
    assert len(rows) == 20 + 40
    assert all(np.isfinite(float(r["score"])) for r in rows)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"last", "val", "test_oracle"}
    assert metrics["last"]["epoch"] == 2
    meta = json.loads((run / "meta.json").read_text())
    assert meta["seed"] == 1
    assert meta["train"]["inputs"]["cache"].endswith("res16_ratio1.0.npz")
    for key in ("git_commit", "packages", "device", "wall_time_s", "peak_rss_mb"):
        assert key in meta
    assert not (workdir / "results/state/runs/dia/phantom/default/seed1/last.pt").exists()


def test_diffusion_samples_and_cache_exist(workdir: Path) -> None:
    assert (workdir / "results/diffusion/phantom/res16_ratio1.0/samples.png").stat().st_size > 0
    with np.load(workdir / "results/dissolved/phantom/res16_ratio1.0.npz") as z:
        assert z["dissolved"].shape == (100, len(range(30, 100, 20)), 3, 16, 16)


def test_second_run_has_nothing_to_do(workdir: Path) -> None:
    result = snakemake(
        "-n",
        "--directory",
        workdir,
        "--configfile",
        TINY_CONFIG,
        "--replace-workflow-config",
        cwd=workdir,
    )
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_missing_local_file_fails_with_one_line_and_keeps_finished_outputs(
    workdir: Path, tmp_path: Path
) -> None:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["datasets"]["pneumoniamnist"] = {
        "source": "medmnist",
        "normal_labels": [0],
        "local_path": str(tmp_path / "nope.npz"),
        "contrastive": {"image_size": 28},
        "dissolve": {"fit": "pad_crop"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    table = workdir / "results/tables/table1_main.csv"
    before = table.stat().st_mtime
    result = snakemake(
        "--cores",
        "1",
        "--directory",
        workdir,
        "--configfile",
        path,
        "--replace-workflow-config",
        "--until",
        "prepare",
        cwd=workdir,
    )
    assert result.returncode != 0
    # The console line and the failed log Snakemake shows carry the same single-line message.
    messages = {
        ln.split("error: ", 1)[1]
        for ln in result.stderr.splitlines()
        if "error: " in ln and "nope.npz" in ln
    }
    assert len(messages) == 1, result.stderr[-2000:]
    assert "local_path" in messages.pop()
    assert table.stat().st_mtime == before
    assert (workdir / "results/runs/csi/phantom/default/seed0/metrics.json").exists()


def test_bootstrap_interval_of_dia_against_csi(workdir: Path) -> None:
    with open(workdir / "results/tables/bootstrap_ci.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = rows[0]
    assert (row["dataset"], row["reference"], row["method"]) == ("phantom", "dia", "csi")
    assert row["n_seeds_reference"] == row["n_seeds_method"] == "2"
    assert float(row["ci95_low"]) <= float(row["auroc_diff"]) <= float(row["ci95_high"])
    markdown = (workdir / "results/tables/bootstrap_ci.md").read_text()
    shown = re.search(r"\| csi \| ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] \|", markdown)
    assert shown, markdown
    # the .md rounds the exact values to 3 decimals, the .csv to 4
    for text, key in zip(shown.groups(), ("auroc_diff", "ci95_low", "ci95_high"), strict=True):
        assert abs(float(text) - float(row[key])) <= 5.5e-4, (text, row[key])


def test_table4_counts_the_dissolving_cost_and_the_measured_throughput(workdir: Path) -> None:
    with open(workdir / "results/tables/table4_cost.csv") as f:
        rows = {r["dissolve_resolution"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["none", "16", "32", "64", "128"]
    macs = [float(rows[k]["macs_g"]) for k in rows]
    assert macs == sorted(macs) and macs[0] < macs[1]
    assert rows["none"]["paper_macs_g"] == "1.8200" and rows["16"]["paper_macs_g"] == ""
    # measured on this run: CSI (no dissolving) and DIA at the config's 16 px, two seeds each
    for key in ("none", "16"):
        assert rows[key]["n_runs"] == "2" and float(rows[key]["train_images_per_s"]) > 0
        assert float(rows[key]["score_images_per_s"]) > 0
    assert (
        float(rows["16"]["dissolve_images_per_s"]) > 0
        and rows["none"]["dissolve_images_per_s"] == ""
    )
    assert rows["64"]["train_images_per_s"] == "" and rows["64"]["n_runs"] == "0"
    markdown = (workdir / "results/tables/table4_cost.md").read_text()
    assert "| 64 | " in markdown and "missing" in markdown and "(paper 1.82)" in markdown


def test_table1_markdown_and_latex(workdir: Path) -> None:
    markdown = (workdir / "results/tables/table1_main.md").read_text()
    assert markdown.count("## Selection rule:") == 3
    assert "| dia | " in markdown and "(n=2)" in markdown
    latex = (workdir / "results/tables/table1_main.tex").read_text()
    assert latex.count(r"\begin{table}") == 3


def test_figures_are_written(workdir: Path) -> None:
    figures = workdir / "results/figures"
    names = {
        "roc_phantom.png",
        "training_phantom.png",
        "fig1_dissolving.png",
        "fig4_data_ratio.png",
    }
    assert names <= {p.name for p in figures.iterdir()}
    for name in names:
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table2_compares_perm_with_rotation(workdir: Path) -> None:
    with open(workdir / "results/tables/table2_shift.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["selection"] == "last"]
    assert {(r["setting"], r["variant"]) for r in rows} == {
        ("rotation", "default"),
        ("perm", "perm"),
    }
    assert all(r["n_seeds"] == "2" and r["dataset"] == "phantom" for r in rows)
    assert (workdir / "results/runs/dia/phantom/perm/seed1/metrics.json").exists()
    markdown = (workdir / "results/tables/table2_shift.md").read_text()
    assert "| setting | phantom |" in markdown and "| perm | " in markdown
    assert (workdir / "results/tables/table2_shift.tex").read_text().count(r"\begin{table}") == 3


def test_fig4_compares_data_ratios_with_their_own_diffusion_models(workdir: Path) -> None:
    with open(workdir / "results/tables/fig4_data_ratio.csv") as f:
        rows = {r["setting"]: r for r in csv.DictReader(f) if r["selection"] == "last"}
    assert rows["1.0"]["n_seeds"] == "2" and rows["0.1"]["n_seeds"] == "1"
    assert rows["0.1"]["auroc_std"] == ""
    meta = json.loads((workdir / "results/diffusion/phantom/res16_ratio0.1/meta.json").read_text())
    assert meta["n_images"] == 10 and meta["config"]["data_ratio"] == 0.1
    run = json.loads(
        (workdir / "results/runs/dia/phantom/ratio01/seed0/train_meta.json").read_text()
    )
    assert run["inputs"]["cache"].endswith("res16_ratio0.1.npz")


def test_blur_variant_trains_without_a_cache(workdir: Path) -> None:
    meta = json.loads(
        (workdir / "results/runs/dia/phantom/median/seed0/train_meta.json").read_text()
    )
    assert meta["inputs"]["cache"] == "" and meta["config"]["dissolve"]["kind"] == "median"
    assert not (workdir / "results/runs/dia/phantom/median/seed1").exists()
