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
VARIANT_SPECS = config.get("variants") or {}
VARIANTS = ["default", *VARIANT_SPECS]
RUN_DIR = "results/runs/{method}/{dataset}/{variant}/seed{seed}"


wildcard_constraints:
    dataset="|".join(DATASETS),
    method="|".join(METHODS),
    variant="[a-z0-9_]+",
    seed=r"\d+",
    res=r"\d+",
    ratio=r"[0-9.]+",


def layers(dataset, method=None, variant="default"):
    """Config layers in precedence order: global, dataset, method, variant (its sections)."""
    out = [{s: config.get(s, {}) for s in SECTIONS}, config["datasets"][dataset]]
    if method is not None:
        out.append(config["methods"][method])
    if variant != "default":
        out.append({s: VARIANT_SPECS[variant][s] for s in SECTIONS if s in VARIANT_SPECS[variant]})
    return out


def dissolve_resolution(dataset, method=None, variant="default"):
    for layer in reversed(layers(dataset, method, variant)):
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


def dissolve_source(dataset, method, variant="default"):
    source = "cache"
    for layer in layers(dataset, method, variant):
        source = (layer.get("contrastive") or {}).get("dissolve_source", source)
    return source


def run_inputs(wildcards):
    inputs = {"data": f"results/data/{wildcards.dataset}/manifest.csv"}
    key = (wildcards.dataset, wildcards.method, wildcards.variant)
    if method_uses_dissolving(wildcards.method):
        tag = f"res{dissolve_resolution(*key)}_ratio{diffusion_ratio()}"
        if dissolve_source(*key) == "cache":
            inputs["cache"] = f"results/dissolved/{wildcards.dataset}/{tag}.npz"
        else:
            inputs["diffusion"] = f"results/diffusion/{wildcards.dataset}/{tag}/model.pt"
    return inputs


def run_records():
    """Every run: each method x dataset by default, each variant on its methods and datasets."""
    records = [
        {"method": m, "dataset": d, "variant": "default", "seed": s}
        for m in METHODS
        for d in DATASETS
        for s in SEEDS
    ]
    for v, spec in VARIANT_SPECS.items():
        records += [
            {"method": m, "dataset": d, "variant": v, "seed": s}
            for m in spec["methods"]
            for d in spec["datasets"]
            for s in SEEDS
        ]
    return records


def check_variants():
    """Variants name configured methods and datasets, and change nothing a dissolve cache or
    diffusion model is keyed on except the resolution (their paths only carry res and ratio)."""
    for v, spec in VARIANT_SPECS.items():
        unknown = sorted(set(spec["methods"]) - set(METHODS)) + sorted(
            set(spec["datasets"]) - set(DATASETS)
        )
        if unknown:
            raise WorkflowError(f"invalid config at variants.{v}: unknown {', '.join(unknown)}")
        if "diffusion" in spec or set(spec.get("dissolve", {})) - {"resolution"}:
            raise WorkflowError(
                f"invalid config at variants.{v}: a variant may set dissolve.resolution but no "
                f"other diffusion or dissolve key (the cache is shared by all runs)"
            )


check_variants()


# Ablation tables: the table's settings -> variant names (DIA runs). A table is built when all of
# its non-default variants are configured.
ABLATIONS = {
    "table2": {"rotation": "default", "perm": "perm"},
    "table3": {"32": "default", "64": "dslv64", "128": "dslv128"},
}


def ablation_datasets(settings):
    """An ablation table's datasets: those of its first non-default variant."""
    variants = [v for v in settings.values() if v != "default"]
    return VARIANT_SPECS[variants[0]]["datasets"]


def ablation_records(settings):
    """DIA runs of an ablation table: its variants, on its datasets."""
    datasets = ablation_datasets(settings)
    return [
        r
        for r in run_records()
        if r["method"] == "dia" and r["variant"] in settings.values() and r["dataset"] in datasets
    ]


def metrics_files(settings=None):
    records = run_records() if settings is None else ablation_records(settings)
    return [f"{RUN_DIR.format(**r)}/metrics.json" for r in records]


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
    for table, settings in ABLATIONS.items():
        if "dia" in METHODS and all(v in VARIANTS for v in settings.values()):
            name = {"table2": "table2_shift", "table3": "table3_resolution"}[table]
            outputs.append(f"results/tables/{name}.csv")
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
    return layers(wildcards.dataset, wildcards.method, wildcards.variant)


def device():
    return config.get("device", "auto")
