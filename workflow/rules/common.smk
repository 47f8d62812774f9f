# Helpers only (no rules): config validation, wildcard values and path/param functions. What the
# config asks for (datasets, runs, ablations) is decided by the torch-free `dia.plan.Plan`.

import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError

sys.path.insert(0, str(Path(workflow.basedir).parent))
from dia.errors import DiaError
from dia.plan import Plan
from dia.sections import complete_schema


def validate_config(cfg):
    """Stop before any job with one line naming the first offending key and the problem."""
    with open(f"{workflow.basedir}/schemas/config.schema.yaml") as f:
        schema = complete_schema(yaml.safe_load(f), cfg)
    errors = jsonschema.Draft202012Validator(schema).iter_errors(cfg)
    error = min(errors, key=lambda e: list(map(str, e.absolute_path)), default=None)
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "top level"
        raise WorkflowError(f"invalid config at {where}: {error.message}")


validate_config(config)
try:
    PLAN = Plan(config)
except DiaError as exc:
    raise WorkflowError(str(exc)) from None

# Downloads are per configured dataset; a one-class family (CIFAR) shares its download among the
# datasets it expands to, one per normal class.
RAW_DATASETS = list(config["datasets"])
NPZ_DATASETS = PLAN.downloads("npz")
FILE_DATASETS = PLAN.downloads("files")
KAGGLE_DATASETS = PLAN.kaggle_downloads()
OFFICIAL_REPOS = list(config.get("official_repos") or {})
METHODS = PLAN.methods
MAIN_DATASETS = PLAN.main_datasets
ABLATIONS = PLAN.ablations
RUN_DIR = "results/runs/{method}/{dataset}/{variant}/seed{seed}"
PARITY_METHODS = {m for pair in PLAN.parity_pairs.items() for m in pair}
PARITY_RUNS = [r for r in PLAN.main_runs() if r["method"] in PARITY_METHODS]


wildcard_constraints:
    dataset="|".join(sorted(set(PLAN.datasets) | set(RAW_DATASETS))),
    method="|".join(METHODS),
    variant="[a-z0-9_]+",
    seed=r"\d+",
    res=r"\d+",
    ratio=r"[0-9.]+",


def run_file(record, name):
    return f"{RUN_DIR.format(**record)}/{name}"


def metrics_files(records):
    return [run_file(r, "metrics.json") for r in records]


def official_input(wildcards):
    """The official repository record of an ``impl: official`` run (none for native runs)."""
    repo = PLAN.official_repo(wildcards.dataset, wildcards.method, wildcards.variant)
    return {"official": f"resources/official/{repo}.json"} if repo else {}


def run_inputs(wildcards):
    """A run's data, plus the dissolve cache or diffusion model a DIA run dissolves with, the
    official repository of an ``impl: official`` run and a baseline's input views."""
    inputs = {"data": f"results/data/{wildcards.dataset}/manifest.csv"}
    key = (wildcards.dataset, wildcards.method, wildcards.variant)
    source = PLAN.dissolve_input(*key)
    if source == "cache":
        inputs["cache"] = f"results/dissolved/{wildcards.dataset}/{PLAN.diffusion_tag(*key)}.npz"
    elif source == "online":
        inputs["diffusion"] = diffusion_model(*key)
    return inputs | official_input(wildcards) | views_input(wildcards)


def views_input(wildcards):
    """The baseline input views of an image-file dataset, for a baseline run on it."""
    if PLAN.needs_views(wildcards.dataset, wildcards.method):
        return {"views": f"results/data/{wildcards.dataset}/views"}
    return {}


def diffusion_model(dataset, method=None, variant="default"):
    owner = PLAN.diffusion_owner(dataset)
    return f"results/diffusion/{owner}/{PLAN.diffusion_tag(dataset, method, variant)}/model.pt"


def owned_model(wildcards):
    """The diffusion model a dissolve cache of the wildcard's dataset is built with."""
    owner = PLAN.diffusion_owner(wildcards.dataset)
    return f"results/diffusion/{owner}/res{wildcards.res}_ratio{wildcards.ratio}/model.pt"


def diffusion_data(wildcards):
    """The prepared dataset a diffusion model of the wildcard's owner trains on."""
    dataset, _ = PLAN.diffusion_training_data(wildcards.dataset)
    return f"results/data/{dataset}/manifest.csv"


def diffusion_layers(wildcards):
    return PLAN.diffusion_layers(wildcards.dataset)


def table4_caches():
    """Dissolve-cache meta file -> Table 4 row, for Table 4's DIA runs that read a cache."""
    caches = {}
    for r in PLAN.table4_runs():
        key = (r["dataset"], r["method"], r["variant"])
        if PLAN.dissolve_input(*key) == "cache":
            tag = PLAN.diffusion_tag(*key)
            caches[f"results/dissolved/{r['dataset']}/{tag}.meta.json"] = r["row"]
    return caches


def dataset_runs(wildcards):
    """Default runs on the wildcard's dataset (ROC and training-curve figures)."""
    return [r for r in PLAN.main_runs() if r["dataset"] == wildcards.dataset]


def run_files(name):
    """Input function: the file ``name`` of every run of the wildcard's dataset."""

    def files(wildcards):
        return [run_file(r, name) for r in dataset_runs(wildcards)]

    return files


def fig1_datasets():
    return [
        {
            "name": d,
            "data_dir": f"results/data/{d}",
            "model": diffusion_model(d),
            "layers": PLAN.layers(d),
        }
        for d in MAIN_DATASETS
    ]


def final_outputs():
    outputs = [f"results/tables/table1_main.{ext}" for ext in ("csv", "md", "tex")]
    outputs += [f"results/tables/table4_cost.{ext}" for ext in ("csv", "md", "tex")]
    outputs += [
        f"results/figures/{kind}_{d}.png" for kind in ("roc", "training") for d in MAIN_DATASETS
    ]
    outputs += [f"results/tables/{name}.csv" for name in PLAN.built_ablations()]
    if "fig4_data_ratio" in PLAN.built_ablations():
        outputs.append("results/figures/fig4_data_ratio.png")
    if "dia" in METHODS:
        outputs.append("results/figures/fig1_dissolving.png")
        if len(METHODS) > 1:
            outputs += [f"results/tables/bootstrap_ci.{ext}" for ext in ("csv", "md", "tex")]
    if PARITY_RUNS:
        outputs += ["results/tables/parity.csv", "results/tables/parity.md"]
    return outputs


def dataset_spec(wildcards):
    """A prepared dataset's spec (one-class members included), or a download's config entry."""
    d = wildcards.dataset
    return PLAN.specs[d] if d in PLAN.specs else config["datasets"][d]


def one_of(names):
    """Wildcard constraint matching exactly ``names`` (nothing when it is empty)."""
    return "|".join(names) if names else "(?!)"


def raw_data(wildcards):
    """Output of the download step: the raw npz, or source.json for image-file datasets."""
    raw = PLAN.specs[wildcards.dataset].get("family", wildcards.dataset)
    if raw in NPZ_DATASETS:
        return f"resources/raw/{raw}.npz"
    return f"resources/raw/{raw}/source.json"


def prepare_inputs(wildcards):
    inputs = {"raw": raw_data(wildcards)}
    frozen = (PLAN.specs[wildcards.dataset].get("split") or {}).get("frozen")
    if frozen:
        inputs["frozen"] = str(Path(workflow.basedir).parent / frozen)
    return inputs


def check_credentials(jobs):
    """Stop before any job runs when a pending Kaggle download has no credentials.

    Imports only the torch-free `dia.data.kaggle`; the check never touches the network.
    """
    pending = sorted(
        {
            job.wildcards.dataset
            for job in jobs
            if job.rule.name == "download_files" and job.wildcards.dataset in KAGGLE_DATASETS
        }
    )
    if not pending:
        return
    from dia.data.kaggle import check_kaggle_credentials

    try:
        check_kaggle_credentials(pending)
    except DiaError as exc:
        raise WorkflowError(str(exc)) from None


def sweep_leftovers():
    """Remove the temporary files of writes that a kill interrupted (`dia.io.sweep_temps`),
    before any job starts; extracted archives are not walked."""
    from dia.data.archive import MARKER
    from dia.io import sweep_temps

    for root in ("results", "resources"):
        stale = sweep_temps(root, skip_marked=MARKER)
        if stale:
            print(f"removed {len(stale)} temporary files of interrupted writes under {root}/")


def dataset_layers(wildcards):
    return PLAN.layers(wildcards.dataset)


def run_layers(wildcards):
    return PLAN.layers(wildcards.dataset, wildcards.method, wildcards.variant)


def device():
    return config.get("device", "auto")


# The `gpu` resource each GPU-stage job takes: none when the config runs on the CPU, so that
# a CPU run's jobs share the cores instead of queueing for the profile's one GPU.
GPUS = 0 if device() == "cpu" else 1
