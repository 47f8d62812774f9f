rule download_npz:
    """Fetch an official MedMNIST npz (md5-verified, resumable) or generate the phantom."""
    output:
        "resources/raw/{dataset}.npz",
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(NPZ_DATASETS),
    # a download retries a dropped connection itself; what fails here a retry repeats
    retries: 0
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        spec=dataset_spec,
    script:
        "../scripts/download.py"


rule download_files:
    """Fetch an image-file dataset's archive (or take local_path) and record its folder."""
    output:
        "resources/raw/{dataset}/source.json",
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    wildcard_constraints:
        dataset=one_of(FILE_DATASETS),
    # a download retries a dropped connection itself; what fails here a retry repeats
    retries: 0
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=720,
    params:
        spec=dataset_spec,
    script:
        "../scripts/download.py"


rule prepare:
    """Decode a dataset once: manifest.csv (ids, labels, splits, hashes) and images.npz."""
    input:
        unpack(prepare_inputs),
    output:
        manifest="results/data/{dataset}/manifest.csv",
        images="results/data/{dataset}/images.npz",
        meta="results/data/{dataset}/meta.json",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=240,
    params:
        spec=dataset_spec,
    script:
        "../scripts/prepare.py"


rule prepare_views:
    """Each baseline's input view of an image-file dataset, resized from the original files."""
    input:
        raw=raw_data,
        manifest="results/data/{dataset}/manifest.csv",
    output:
        directory("results/data/{dataset}/views"),
    log:
        "logs/prepare_views/{dataset}.log",
    benchmark:
        "benchmarks/prepare_views/{dataset}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=240,
    params:
        spec=dataset_spec,
        preset=config["preset"],
        baselines=lambda wildcards: PLAN.baseline_layers(wildcards.dataset),
    script:
        "../scripts/prepare_views.py"
