rule download:
    output:
        "resources/raw/{dataset}.npz",
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    params:
        spec=dataset_spec,
    script:
        "../scripts/download.py"


rule prepare:
    input:
        "resources/raw/{dataset}.npz",
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
    threads: 1
    params:
        spec=dataset_spec,
    script:
        "../scripts/prepare.py"
