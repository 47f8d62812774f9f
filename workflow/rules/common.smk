# Helpers only (no rules): config validation, wildcard values and path/param functions.

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

SECTIONS = ("diffusion", "dissolve", "contrastive", "score")
DATASETS = list(config["datasets"])
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
    layered = config["methods"][method].get("contrastive", {})
    return layered.get("method", method) == "dia"


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


def final_outputs():
    return ["results/tables/table1_main.csv"]


def dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


def dataset_layers(wildcards):
    return layers(wildcards.dataset)


def run_layers(wildcards):
    return layers(wildcards.dataset, wildcards.method)


def device():
    return config.get("device", "auto")
