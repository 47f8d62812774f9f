# Helpers only (no rules): config validation, wildcard values and path/param functions.

import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError


def validate_config(cfg):
    """Stop before any job with one line naming the first offending key and the problem."""
    with open(f"{workflow.basedir}/schemas/config.schema.yaml") as f:
        schema = yaml.safe_load(f)
    errors = jsonschema.Draft202012Validator(schema).iter_errors(cfg)
    error = min(errors, key=lambda e: list(map(str, e.absolute_path)), default=None)
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "top level"
        raise WorkflowError(f"invalid config at {where}: {error.message}")


validate_config(config)

BASELINES = ("kdad", "transformaly", "rd4ad", "uniad", "meanshift")
SECTIONS = ("diffusion", "dissolve", "contrastive", "score", *BASELINES)
NPZ_SOURCES = ("medmnist", "phantom")
DATASETS = list(config["datasets"])
NPZ_DATASETS = [d for d in DATASETS if config["datasets"][d]["source"] in NPZ_SOURCES]
FILE_DATASETS = [d for d in DATASETS if d not in NPZ_DATASETS]
KAGGLE_SOURCES = ("sarscov2", "kermany", "aptos2019")
KAGGLE_DATASETS = [
    d
    for d in FILE_DATASETS
    if config["datasets"][d]["source"] in KAGGLE_SOURCES
    and not config["datasets"][d].get("local_path")
]
METHODS = list(config["methods"])
SEEDS = [int(s) for s in config["seeds"]]
VARIANTS = ["default"]
RUN_DIR = "results/runs/{method}/{dataset}/{variant}/seed{seed}"


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    variant="[a-z0-9_]+",
    seed=r"\d+",
    res=r"\d+",
    ratio=r"[0-9.]+",


def layers(dataset, method=None):
    """Config layers for the `dia` stages, in precedence order: global, dataset, method."""
    out = [{s: config.get(s, {}) for s in SECTIONS}, config["datasets"][dataset]]
    if method is not None:
        out.append(config["methods"][method])
    return out


def dissolve_resolution(dataset):
    for layer in reversed(layers(dataset)):
        res = (layer.get("dissolve") or {}).get("resolution")
        if res is not None:
            return int(res)
    return 32


def diffusion_ratio():
    return float(config.get("diffusion_ratio", 1.0))


def method_uses_dissolving(method):
    """DIA runs need dissolved images; CSI and the baselines (a `model` key) do not."""
    spec = config["methods"][method]
    if spec.get("model"):
        return False
    return spec.get("contrastive", {}).get("method", method) == "dia"


def dissolve_source(dataset, method):
    source = "cache"
    for layer in layers(dataset, method):
        source = (layer.get("contrastive") or {}).get("dissolve_source", source)
    return source


def run_inputs(wildcards):
    inputs = {"data": f"results/data/{wildcards.dataset}/manifest.csv"}
    if method_uses_dissolving(wildcards.method):
        tag = f"res{dissolve_resolution(wildcards.dataset)}_ratio{diffusion_ratio()}"
        if dissolve_source(wildcards.dataset, wildcards.method) == "cache":
            inputs["cache"] = f"results/dissolved/{wildcards.dataset}/{tag}.npz"
        else:
            inputs["diffusion"] = f"results/diffusion/{wildcards.dataset}/{tag}/model.pt"
    return inputs


def run_records():
    return [
        {"method": m, "dataset": d, "variant": v, "seed": s}
        for m in METHODS
        for d in DATASETS
        for v in VARIANTS
        for s in SEEDS
    ]


def metrics_files():
    return [f"{RUN_DIR.format(**r)}/metrics.json" for r in run_records()]


def scores_files():
    return [f"{RUN_DIR.format(**r)}/scores.csv" for r in run_records()]


def dataset_runs(wildcards):
    """Run records of one dataset's default variant (ROC and training-curve figures)."""
    return [
        r for r in run_records() if r["dataset"] == wildcards.dataset and r["variant"] == "default"
    ]


def run_files(name):
    """Input function: the file ``name`` of every run of the wildcard's dataset."""

    def files(wildcards):
        return [f"{RUN_DIR.format(**r)}/{name}" for r in dataset_runs(wildcards)]

    return files


def diffusion_model(dataset):
    tag = f"res{dissolve_resolution(dataset)}_ratio{diffusion_ratio()}"
    return f"results/diffusion/{dataset}/{tag}/model.pt"


def fig1_datasets():
    return [
        {
            "name": d,
            "data_dir": f"results/data/{d}",
            "model": diffusion_model(d),
            "layers": layers(d),
        }
        for d in DATASETS
    ]


def final_outputs():
    outputs = ["results/tables/table1_main.csv", "results/tables/table4_cost.csv"]
    outputs += [f"results/figures/{kind}_{d}.png" for kind in ("roc", "training") for d in DATASETS]
    if "dia" in METHODS:
        outputs.append("results/figures/fig1_dissolving.png")
        if len(METHODS) > 1:
            outputs.append("results/tables/bootstrap_ci.csv")
    return outputs


def dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


def one_of(names):
    """Wildcard constraint matching exactly ``names`` (nothing when it is empty)."""
    return "|".join(names) if names else "(?!)"


def raw_data(wildcards):
    """Output of the download step: the raw npz, or source.json for image-file datasets."""
    if wildcards.dataset in NPZ_DATASETS:
        return f"resources/raw/{wildcards.dataset}.npz"
    return f"resources/raw/{wildcards.dataset}/source.json"


def prepare_inputs(wildcards):
    inputs = {"raw": raw_data(wildcards)}
    frozen = (dataset_spec(wildcards).get("split") or {}).get("frozen")
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
    sys.path.insert(0, str(Path(workflow.basedir).parent))
    from dia.data.kaggle import check_kaggle_credentials
    from dia.errors import DiaError

    try:
        check_kaggle_credentials(pending)
    except DiaError as exc:
        raise WorkflowError(str(exc)) from None


def dataset_layers(wildcards):
    return layers(wildcards.dataset)


def run_layers(wildcards):
    return layers(wildcards.dataset, wildcards.method)


def device():
    return config.get("device", "auto")
