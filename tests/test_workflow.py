"""The Snakemake workflow driven through its CLI: lint, dry runs, config errors, schema sync."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from dia.baselines import BASELINES
from dia.plan import Plan
from dia.sections import SECTIONS, complete_schema, config_sections, resolve, section_class
from tests.conftest import ROOT, TINY_CONFIG, snakemake

# Add-ons layered with a second --configfile, not configs of their own: over config.yaml, and
# demo_full.yaml over demo.yaml (tested below).
ADD_ONS = [ROOT / "config" / "uniad_cifar.yaml"]
DEMO_FULL = ROOT / "config" / "demo_full.yaml"
BF16 = ROOT / "config" / "bf16.yaml"
CONFIGS = [
    *sorted(set((ROOT / "config").glob("*.yaml")) - {*ADD_ONS, DEMO_FULL, BF16}),
    TINY_CONFIG,
]


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


HIGHRES = ("sarscov2", "kvasir", "oct2017", "aptos2019")
BLUR_VARIANTS = ("gaussian", "gaussian_perm", "median", "median_perm", "blurnone", "blurnone_perm")


def test_paper_dry_run_has_every_job_of_tables_1_to_4_and_figs_1_and_4() -> None:
    result = snakemake("-n")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # train: 7 methods x 6 datasets, 9 DIA variants x 4 high-res datasets, Fig. 4's ratio01 on
    # PneumoniaMNIST and Kvasir, DIA default and ratio01 on 30 CIFAR classes; 3 seeds each
    train = 3 * (7 * 6 + 9 * 4 + 2 + 2 * 30)
    # diffusion: res32 per dataset (6 + one per CIFAR dataset, shared by its classes), res64/128
    # x 4, ratio 0.1 x (2 + 2 CIFAR); caches only where runs read one: res32 on 5 datasets (OCT
    # and CIFAR dissolve online, and so do the 64/128 px variants) and ratio 0.1 on
    # PneumoniaMNIST and Kvasir
    diffusion = 8 + 8 + 4
    caches = 5 + 2
    assert counts == {
        "download_npz": 2,
        "download_files": 6,
        "prepare": 36,
        "prepare_views": len(HIGHRES),  # the baselines' input sizes from the original files
        "train_diffusion": diffusion,
        "dissolve_cache": caches,
        "train": train,
        "score": train,
        "table1": 1,
        "bootstrap": 1,
        "ablation": 4,
        "table4": 1,
        "fig_roc": 6,
        "fig_training": 6,
        "fig1": 1,
        "fig4": 1,
        "all": 1,
        "total": 8 + 36 + 4 + diffusion + caches + 2 * train + 1 + 1 + 4 + 1 + 6 + 6 + 1 + 1 + 1,
    }
    out = result.stdout
    for dataset in PAPER_DATASETS:
        for method in PAPER_METHODS:
            for seed in range(3):
                assert f"results/runs/{method}/{dataset}/default/seed{seed}/metrics.json" in out
        cached = f"results/dissolved/{dataset}/res32_ratio1.0.npz" in out
        assert cached == (dataset != "oct2017"), dataset
        assert f"results/diffusion/{dataset}/res32_ratio1.0/model.pt" in out
        assert f"results/figures/roc_{dataset}.png" in out
    for dataset in HIGHRES:
        assert f"resources/raw/{dataset}/source.json" in out
    assert "config/splits/sarscov2.csv" in out
    for dataset in HIGHRES:
        for variant in ("perm", "dslv64", "dslv128", *BLUR_VARIANTS):
            assert f"results/runs/dia/{dataset}/{variant}/seed2/metrics.json" in out
        for res in (64, 128):
            assert f"results/diffusion/{dataset}/res{res}_ratio1.0/model.pt" in out
            assert f"results/dissolved/{dataset}/res{res}" not in out
    assert "results/runs/dia/pneumoniamnist/perm/" not in out
    for family, n in (("cifar10", 10), ("cifar100", 20)):
        assert f"resources/raw/{family}/source.json" in out
        for k in range(n):
            for variant in ("default", "ratio01"):
                assert f"results/runs/dia/{family}_class{k}/{variant}/seed2/metrics.json" in out
            assert f"results/diffusion/{family}_class{k}/" not in out  # shared by the family
        for ratio in ("1.0", "0.1"):
            assert f"results/diffusion/{family}/res32_ratio{ratio}/model.pt" in out
        assert f"results/runs/csi/{family}_class0/" not in out
        assert f"roc_{family}" not in out
    for dataset in ("pneumoniamnist", "kvasir"):
        assert f"results/diffusion/{dataset}/res32_ratio0.1/model.pt" in out
    for name in ("table2_shift", "table3_resolution", "ablation_dissolve", "fig4_data_ratio"):
        assert f"results/tables/{name}.csv" in out
    assert "results/figures/fig4_data_ratio.png" in out


def test_blur_runs_need_no_diffusion_model() -> None:
    result = snakemake("-n", "--forcerun", "train", "--until", "train")
    assert result.returncode == 0, result.stderr
    blocks = [b for b in result.stdout.split("\n\n") if "rule train:" in b]
    for variant in BLUR_VARIANTS:
        mine = [b for b in blocks if f"/{variant}/seed" in b]
        assert len(mine) == 4 * 3, variant
        assert not any("dissolved" in b or "diffusion" in b for b in mine), variant


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
    blocks = [b for b in result.stdout.split("\n\n") if "rule train:" in b and "/default/" in b]
    for method in PAPER_METHODS:
        mine = [b for b in blocks if f"results/runs/{method}/" in b]
        assert len(mine) == 2, method  # two demo seeds
        assert all(("dissolved" in b) == (method == "dia") for b in mine), method


def test_demo_full_adds_the_dissolving_ablation_to_the_demo() -> None:
    def tables(*configs: str) -> set[str]:
        result = snakemake("-n", "--configfile", *configs, "--replace-workflow-config")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return set(re.findall(r"results/tables/(\w+)\.csv", result.stdout))

    demo = tables("config/demo.yaml")
    full = tables("config/demo.yaml", "config/demo_full.yaml")
    assert {"table1_main", "table2_shift", "table3_resolution", "fig4_data_ratio"} <= demo
    assert "ablation_dissolve" not in demo
    assert full - demo == {"ablation_dissolve"}


def test_bf16_add_on_runs_every_network_in_bf16() -> None:
    """Over the demo: the same jobs, each stage section (the baselines' too) in bf16."""
    result = snakemake(
        "-n", "--configfile", "config/demo.yaml", "config/bf16.yaml", "--replace-workflow-config"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    add_on = yaml.safe_load(BF16.read_text())
    assert set(add_on) == {*config_sections()} - {"score"}
    merged = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    for section, values in add_on.items():
        merged[section] = {**merged.get(section, {}), **values}
    plan = Plan(merged)
    for dataset, method in ((plan.datasets[0], m) for m in plan.methods):
        layers = plan.layers(dataset, method)
        for section in add_on:
            assert resolve(section, merged["preset"], layers).precision == "bf16", section


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
            "variants.x.dissolve.t_max: a variant may set only dissolve.blur_branches",
        ),
        (
            lambda c: c.update(
                variants={
                    "x": {"methods": ["dia"], "datasets": ["phantom"], "diffusion": {"dim": 16}}
                }
            ),
            "variants.x.diffusion.dim: a variant may set only diffusion.data_ratio",
        ),
        (
            lambda c: c.update(variants={"dslv64": {"methods": ["dia"], "datasets": ["phantom"]}}),
            "variants.dslv64: Table 3 reads dslv<N> variants as dissolving at N px",
        ),
        (lambda c: c["datasets"]["phantom"].pop("normal_labels"), "datasets.phantom: set normal"),
        (
            lambda c: c["datasets"]["phantom"].update(one_class=[0, 1]),
            "datasets.phantom: one_class sets the normal class",
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
    """The stage sections are written out in the schema; the baselines' are generated."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for section in SECTIONS:
        keys = set(schema["$defs"][section]["properties"])
        assert keys == {f.name for f in dataclasses.fields(section_class(section))}, section
    assert not set(schema["$defs"]) & set(BASELINES)  # one home: their dataclasses


def paper_schema() -> dict:
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return complete_schema(schema, yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


def test_generated_baseline_sections_type_every_field() -> None:
    defs = paper_schema()["$defs"]
    assert defs["method"]["properties"]["model"]["enum"] == list(BASELINES)
    for name in BASELINES:
        assert set(defs[name]["properties"]) == {
            f.name for f in dataclasses.fields(section_class(name))
        }
    kdad, meanshift = defs["kdad"]["properties"], defs["meanshift"]["properties"]
    assert kdad["impl"] == {"enum": ["native", "official"]}
    assert kdad["lr"] == {"type": "number"}
    assert kdad["loss_pools"] == {"type": "array", "items": {"type": "integer"}}
    # a subclass that changes a default keeps its base's constraint
    assert kdad["eval_every_epochs"] == {"type": ["integer", "null"], "minimum": 1}
    assert meanshift["frozen_stages"] == {"type": ["integer", "null"], "minimum": 1}


@pytest.mark.parametrize(
    ("edit", "culprit"),
    [
        ({"kdad": {"lr": "fast"}}, "kdad.lr"),
        ({"kdad": {"epochz": 3}}, "kdad"),
        ({"methods": {"x": {"model": "knn"}}}, "methods.x.model"),
        ({"rd4ad": {"eval_every_epochs": 0}}, "rd4ad.eval_every_epochs"),
        ({"seeds": [0, -1]}, "seeds.1"),
        ({"diffusion_seed": -1}, "diffusion_seed"),
    ],
)
def test_the_schema_names_each_bad_value(edit: dict, culprit: str) -> None:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key, value in edit.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    schema = complete_schema(
        yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()), config
    )
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    assert any(".".join(map(str, e.absolute_path)).startswith(culprit) for e in errors), errors


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_resolve_into_stage_configs(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    plan = Plan(config)
    for dataset in plan.datasets:
        for method in plan.methods:
            layers = plan.layers(dataset, method)
            for section in config_sections():
                resolve(section, config["preset"], layers)
            if plan.baseline(method) is None:  # named for its method (csi_official runs CSI)
                resolved = resolve("contrastive", config["preset"], layers).method
                assert method.split("_")[0] == resolved, (dataset, method)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_pass_the_schema(path: Path) -> None:
    result = snakemake("-n", "--configfile", path, "--replace-workflow-config", "--quiet", "all")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", ADD_ONS, ids=lambda p: p.name)
def test_add_on_configs_pass_the_schema_over_the_paper_config(path: Path) -> None:
    """An add-on's methods join the paper's (Snakemake merges the config files)."""
    result = snakemake("-n", "--configfile", ROOT / "config" / "config.yaml", path)
    assert result.returncode == 0, result.stderr
    for method in yaml.safe_load(path.read_text())["methods"]:
        assert f"results/runs/{method}/sarscov2/default/seed0/metrics.json" in result.stdout


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
    # dia, csi and dia-perm at two seeds, dia-ratio01 and dia-median at one
    assert job_counts(result.stdout)["train"] == 8


GPU_RULES = {"train_diffusion", "dissolve_cache", "train", "score"}
LOCAL_RULES = {
    "download_npz",
    "download_files",
    "table1",
    "bootstrap",
    "ablation",
    "table4",
    "fig_roc",
    "fig_training",
    "fig1",
    "fig4",
    "all",
}
# Not in the paper DAG: the official code is fetched on request (`snakemake official_repos`) or
# for impl: official runs, whose parity table the parity configs build.
OFFICIAL_RULES = {"fetch_official", "official_repos", "parity"}


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
    assert set(jobs) == GPU_RULES | LOCAL_RULES | {"prepare", "prepare_views"}
    for rule, entries in jobs.items():
        for resources in entries:
            assert resources.get("gpu") == ("1" if rule in GPU_RULES else None), rule
            if rule != "all":
                assert int(resources["mem_mb"]) > 0 and int(resources["runtime"]) > 0, rule
    # a global gpu limit would throttle the whole cluster to one GPU job at a time; a
    # default-resources block would replace the site profile's (account, partition)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    assert "resources" not in settings and "default-resources" not in settings
    assert settings["retries"] == 2
    # the README's "retried twice" holds for every rule but the downloads, which retry a dropped
    # connection themselves and would only repeat anything else
    declared_retries = {}
    for rule in (ROOT / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)*)", rule.read_text(), re.M):
            for value in re.findall(r"^    retries: (\d+)$", body, re.M):
                declared_retries[name] = value
    assert declared_retries == {"download_npz": "0", "download_files": "0"}
    snakefile = (ROOT / "workflow" / "Snakefile").read_text()
    declared = re.search(r"^localrules:\n((?:    \w+,\n)+)", snakefile, re.M)
    assert declared and set(re.findall(r"(\w+),", declared[1])) == LOCAL_RULES | OFFICIAL_RULES


def test_a_method_sets_the_runtime_of_its_train_jobs(tmp_path: Path) -> None:
    """``methods.<m>.runtime``: minutes per attempt of its train jobs (others keep 24 hours)."""
    config = _write_config(tmp_path, lambda c: c["methods"]["csi"].update(runtime=4000))
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    runtimes = {}
    for block in result.stdout.split("\n\n"):
        if re.search(r"^(?:local)?rule train:$", block, re.M):
            method = re.search(r"wildcards: method=(\w+)", block)[1]
            runtimes.setdefault(method, set()).add(
                int(_job_resources(block)["train"][0]["runtime"])
            )
    assert runtimes == {"csi": {4000}, "dia": {1440}}


def test_site_profile_keeps_its_account_and_partition_under_the_workflow_profile(
    tmp_path: Path,
) -> None:
    """The README's recipe: a site profile's account and partitions reach every cluster job, with
    the GPU, memory and runtime the workflow's rules request."""
    site = tmp_path / "mysite"
    site.mkdir()
    gpu_partition = {rule: {"slurm_partition": "gpu"} for rule in sorted(GPU_RULES)}
    (site / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "default-resources": {"slurm_account": "my_account", "slurm_partition": "cpu"},
                "set-resources": gpu_partition,
            }
        )
    )
    profile = ROOT / "workflow" / "profiles" / "slurm"
    result = snakemake("-n", "--workflow-profile", profile, "--profile", site)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    jobs = _job_resources(result.stdout)
    remote = set(jobs) - LOCAL_RULES
    assert remote == GPU_RULES | {"prepare", "prepare_views"}
    for rule in remote:
        for resources in jobs[rule]:
            assert resources["slurm_account"] == "my_account", rule
            gpu = rule in GPU_RULES
            assert resources["slurm_partition"] == ("gpu" if gpu else "cpu"), rule
            assert resources.get("gpu") == ("1" if gpu else None), rule
            assert int(resources["mem_mb"]) > 0 and int(resources["runtime"]) > 0, rule


def test_official_repos_target_fetches_each_pinned_repository() -> None:
    result = snakemake("-n", "official_repos")
    assert result.returncode == 0, result.stderr[-2000:]
    assert job_counts(result.stdout) == {"fetch_official": 7, "official_repos": 1, "total": 8}


def test_parity_config_runs_native_and_official_twins() -> None:
    config = ROOT / "config" / "parity_demo.yaml"
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout)
    assert (counts["fetch_official"], counts["train"], counts["parity"]) == (5, 36, 1)
    blocks = [b for b in result.stdout.split("\n\n") if re.search(r"^rule (train|score):", b, re.M)]
    for block in blocks:
        official = "_official/" in block
        assert ("resources/official/" in block) == official, block
        if re.search(r"runs/(dia|csi)_official/", block):
            assert "resources/official/shijianjian__DIA.json" in block, block
        if "runs/rd4ad_official/" in block:
            assert "resources/official/hq-deng__RD4AD.json" in block, block


def test_cpu_runs_take_no_gpu_resource() -> None:
    """With ``device: cpu`` the GPU-stage jobs share the cores instead of queueing for one GPU."""
    result = snakemake("-n", "--configfile", "config/demo.yaml", "--replace-workflow-config")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    jobs = _job_resources(result.stdout)
    assert set(jobs) >= GPU_RULES
    for rule in GPU_RULES:
        assert all(resources.get("gpu") == "0" for resources in jobs[rule]), rule


def test_default_profile_runs_gpu_jobs_one_at_a_time() -> None:
    profile = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    assert profile["resources"] == {"gpu": 1}


def test_variants_train_their_own_runs_on_the_right_cache(tmp_path: Path) -> None:
    def edit(config):
        config["variants"] = {
            "perm": {"methods": ["dia"], "datasets": ["phantom"], "contrastive": {"shift": "perm"}},
            "dslv32": {"methods": ["dia"], "datasets": ["phantom"], "dissolve": {"resolution": 32}},
            "dslv8": {"methods": ["dia"], "datasets": ["phantom"], "dissolve": {"resolution": 8}},
        }

    config = _write_config(tmp_path, edit)
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    counts = job_counts(result.stdout)
    assert counts["train"] == 2 * 2 + 3 * 2  # dia and csi by default, dia per variant; 2 seeds
    assert counts["train_diffusion"] == 3 and counts["ablation"] == 2  # Tables 2 and 3
    blocks = {
        re.search(r"results/runs/\w+/phantom/(\w+)/seed0/model\.pt", b)[1]: b
        for b in result.stdout.split("\n\n")
        if "rule train:" in b and "runs/dia/" in b and "seed0/model.pt" in b
    }
    assert "res16_ratio1.0.npz" in blocks["default"] and "res16_ratio1.0.npz" in blocks["perm"]
    assert "res32_ratio1.0.npz" in blocks["dslv32"] and "res8_ratio1.0.npz" in blocks["dslv8"]


@pytest.mark.parametrize("family_model", ["shared", "per_class"])
def test_one_class_family_and_data_ratio_variant(tmp_path: Path, family_model: str) -> None:
    """A CIFAR family expands to one dataset per class, sharing one download and (``shared``)
    one diffusion model per data ratio; a ratio variant gets its own diffusion models; the family
    stays out of Table 1 and the per-dataset figures."""

    def edit(config):
        config["datasets"]["cifar10"] = {
            "source": "cifar10",
            "main": False,
            "one_class": [0, 1, 2],
            "contrastive": {"arch": "resnet18_cifar", "image_size": 32},
            "diffusion": {"family_model": family_model},
        }
        config["variants"] = {
            "ratio01": {
                "methods": ["dia"],
                "datasets": ["phantom", "cifar10"],
                "seeds": [0],
                "diffusion": {"data_ratio": 0.1},
            }
        }

    config = _write_config(tmp_path, edit)
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    counts = job_counts(result.stdout)
    assert counts["download_files"] == 1 and counts["prepare"] == 4
    # phantom: dia and csi x 2 seeds, ratio01 x 1 seed; each CIFAR class: dia default + ratio01
    assert counts["train"] == 4 + 1 + 3 * 2
    # phantom at two ratios; CIFAR's family model at two ratios, or each class's
    owners = 1 if family_model == "shared" else 3
    assert counts["train_diffusion"] == 2 * (1 + owners) and counts["fig_roc"] == 1
    assert counts["ablation"] == 1 and counts["fig4"] == 1
    out = result.stdout
    shared = "results/diffusion/cifar10/res16_ratio0.1/model.pt"
    assert (shared in out) == (family_model == "shared")
    for k in range(3):
        assert f"results/dissolved/cifar10_class{k}/res16_ratio0.1.npz" in out
        assert f"results/runs/dia/cifar10_class{k}/default/seed0/model.pt" in out
        assert f"results/runs/dia/cifar10_class{k}/default/seed1/" not in out
    assert "results/runs/csi/cifar10" not in out


def test_a_malformed_config_still_gets_the_schemas_one_line_message(tmp_path: Path) -> None:
    """The baselines' schema parts are read off the config before it is validated."""
    config = _write_config(tmp_path, lambda c: c.update(methods=["dia", "csi"]))
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    assert result.returncode != 0
    assert re.search(r"^invalid config at methods: ", result.stdout + result.stderr, re.M)
