"""The Snakemake workflow driven through its CLI: lint, dry runs, config errors, schema sync."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml

from dia.baselines import BASELINES
from dia.config import SECTIONS, resolve, section_class
from tests.conftest import ROOT, TINY_CONFIG, snakemake

CONFIGS = [*sorted((ROOT / "config").glob("*.yaml")), TINY_CONFIG]


def job_counts(stdout: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    table = stdout.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_lint_is_clean() -> None:
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


PAPER_DATASETS = ("pneumoniamnist", "breastmnist", "sarscov2", "kvasir", "oct2017", "aptos2019")


PAPER_METHODS = ("dia", "csi", "kdad", "transformaly", "rd4ad", "uniad", "meanshift")


def test_paper_dry_run_has_every_stage_for_six_datasets_seven_methods_three_seeds() -> None:
    result = snakemake("-n")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts == {
        "download_npz": 2,
        "download_files": 4,
        "prepare": 6,
        "train_diffusion": 14,
        "dissolve_cache": 14,
        "train": 162,
        "score": 162,
        "table1": 1,
        "bootstrap": 1,
        "table2": 1,
        "table3": 1,
        "table4": 1,
        "fig_roc": 6,
        "fig_training": 6,
        "fig1": 1,
        "all": 1,
        "total": 383,
    }
    for dataset in PAPER_DATASETS:
        for method in PAPER_METHODS:
            for seed in range(3):
                assert (
                    f"results/runs/{method}/{dataset}/default/seed{seed}/metrics.json"
                    in result.stdout
                )
        assert f"results/dissolved/{dataset}/res32_ratio1.0.npz" in result.stdout
    for dataset in ("sarscov2", "kvasir", "oct2017", "aptos2019"):
        assert f"resources/raw/{dataset}/source.json" in result.stdout
    assert "config/splits/sarscov2.csv" in result.stdout
    for dataset in ("sarscov2", "kvasir", "oct2017", "aptos2019"):
        for variant in ("perm", "dslv64", "dslv128"):
            assert f"results/runs/dia/{dataset}/{variant}/seed2/metrics.json" in result.stdout
        for res in (64, 128):
            assert f"results/dissolved/{dataset}/res{res}_ratio1.0.npz" in result.stdout
    assert "results/runs/dia/pneumoniamnist/perm/" not in result.stdout


def test_only_dia_runs_depend_on_the_diffusion_model() -> None:
    result = snakemake(
        "-n",
        "--forcerun",
        "train_diffusion",
        "--until",
        "train",
        "--configfile",
        ROOT / "config" / "demo.yaml",
        "--replace-workflow-config",
    )
    assert result.returncode == 0, result.stderr
    blocks = [b for b in result.stdout.split("\n\n") if "rule train:" in b]
    for method in PAPER_METHODS:
        mine = [b for b in blocks if f"results/runs/{method}/" in b]
        assert len(mine) == 2, method  # two demo seeds
        assert all(("dissolved" in b) == (method == "dia") for b in mine), method


def _write_config(tmp_path: Path, edit) -> Path:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("edit", "culprit"),
    [
        (lambda c: c["contrastive"].update(learning_rate=0.1), "learning_rate"),
        (lambda c: c["datasets"]["phantom"].update(normal_label=[0]), "normal_label"),
        (lambda c: c["dissolve"].update(fit="stretch"), "stretch"),
        (lambda c: c.update(seed=[1]), "seed"),
        (
            lambda c: c.update(variants={"default": {"methods": ["dia"], "datasets": ["phantom"]}}),
            "variants",
        ),
        (
            lambda c: c.update(variants={"x": {"methods": ["rd4ad"], "datasets": ["phantom"]}}),
            "variants.x: unknown rd4ad",
        ),
        (
            lambda c: c.update(
                variants={
                    "x": {"methods": ["dia"], "datasets": ["phantom"], "dissolve": {"t_max": 9}}
                }
            ),
            "variants.x: a variant may set dissolve.resolution",
        ),
    ],
)
def test_bad_config_stops_before_any_job_naming_the_key(tmp_path: Path, edit, culprit: str) -> None:
    config = _write_config(tmp_path, edit)
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(rf"^invalid config at .*{culprit}", output, re.M), output
    assert "rule " not in output


def test_schema_matches_the_config_dataclasses() -> None:
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for section in [*SECTIONS, *BASELINES]:
        keys = set(schema["$defs"][section]["properties"])
        assert keys == {f.name for f in dataclasses.fields(section_class(section))}, section
    assert schema["$defs"]["method"]["properties"]["model"]["enum"] == list(BASELINES)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_resolve_into_stage_configs(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    sections = [*SECTIONS, *BASELINES]
    for dataset, spec in config["datasets"].items():
        for method, mspec in config["methods"].items():
            layers = [{s: config.get(s, {}) for s in sections}, spec, mspec]
            for section in sections:
                resolve(section, config["preset"], layers)
            if "model" not in mspec:
                assert resolve("contrastive", config["preset"], layers).method == method, dataset


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_pass_the_schema(path: Path) -> None:
    result = snakemake("-n", "--configfile", path, "--replace-workflow-config", "--quiet", "all")
    assert result.returncode == 0, result.stderr


def test_workflow_runs_from_another_directory(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    result = snakemake(
        "-n",
        "--directory",
        tmp_path,
        "--configfile",
        TINY_CONFIG,
        "--replace-workflow-config",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["train"] == 6  # dia, csi and dia-perm, two seeds


GPU_RULES = {"train_diffusion", "dissolve_cache", "train", "score"}
LOCAL_RULES = {
    "download_npz",
    "download_files",
    "table1",
    "bootstrap",
    "table2",
    "table3",
    "table4",
    "fig_roc",
    "fig_training",
    "fig1",
    "all",
}


def _job_resources(stdout: str) -> dict[str, list[dict[str, str]]]:
    """rule -> [{resource: value}] for every job of a dry run."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in stdout.split("\n\n"):
        head = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        if not head:
            continue
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        pairs = dict(p.split("=", 1) for p in found[1].split(", ")) if found else {}
        jobs.setdefault(head[1], []).append(pairs)
    return jobs


def test_slurm_profile_dry_run_requests_one_gpu_for_gpu_rules_only() -> None:
    profile = ROOT / "workflow" / "profiles" / "slurm"
    result = snakemake("-n", "--workflow-profile", profile)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    jobs = _job_resources(result.stdout)
    assert set(jobs) == GPU_RULES | LOCAL_RULES | {"prepare"}
    for rule, entries in jobs.items():
        for resources in entries:
            assert resources.get("gpu") == ("1" if rule in GPU_RULES else None), rule
            if rule != "all":
                assert int(resources["mem_mb"]) > 0 and int(resources["runtime"]) > 0, rule
    # a global gpu limit would throttle the whole cluster to one GPU job at a time
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    assert "resources" not in settings and "gpu" not in settings["default-resources"]
    snakefile = (ROOT / "workflow" / "Snakefile").read_text()
    declared = re.search(r"^localrules:\n((?:    \w+,\n)+)", snakefile, re.M)
    assert declared and set(re.findall(r"(\w+),", declared[1])) == LOCAL_RULES


def test_default_profile_runs_gpu_jobs_one_at_a_time() -> None:
    profile = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    assert profile["resources"] == {"gpu": 1}


def test_variants_train_their_own_runs_on_the_right_cache(tmp_path: Path) -> None:
    def edit(config):
        config["variants"] = {
            "perm": {"methods": ["dia"], "datasets": ["phantom"], "contrastive": {"shift": "perm"}},
            "dslv64": {"methods": ["dia"], "datasets": ["phantom"], "dissolve": {"resolution": 32}},
            "dslv128": {"methods": ["dia"], "datasets": ["phantom"], "dissolve": {"resolution": 8}},
        }

    config = _write_config(tmp_path, edit)
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == 2 * 2 + 3 * 2  # dia and csi by default, dia per variant; 2 seeds
    assert counts["train_diffusion"] == 3 and counts["table2"] == counts["table3"] == 1
    blocks = {
        re.search(r"results/runs/\w+/phantom/(\w+)/seed0/model\.pt", b)[1]: b
        for b in result.stdout.split("\n\n")
        if "rule train:" in b and "runs/dia/" in b and "seed0/model.pt" in b
    }
    assert "res16_ratio1.0.npz" in blocks["default"] and "res16_ratio1.0.npz" in blocks["perm"]
    assert "res32_ratio1.0.npz" in blocks["dslv64"] and "res8_ratio1.0.npz" in blocks["dslv128"]
