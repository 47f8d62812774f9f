rule fig_roc:
    """ROC curves of every method's default runs on one dataset."""
    input:
        run_files("scores.csv"),
    output:
        report(
            "results/figures/roc_{dataset}.png",
            caption="../report/roc.rst",
            category="Figures",
            labels={"figure": "ROC curves", "dataset": "{dataset}"},
        ),
    log:
        "logs/fig_roc/{dataset}.log",
    benchmark:
        "benchmarks/fig_roc/{dataset}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=dataset_runs,
    script:
        "../scripts/fig_roc.py"


rule fig_training:
    """Training loss per epoch of every method on one dataset (mean and range over seeds)."""
    input:
        run_files("train_log.csv"),
    output:
        report(
            "results/figures/training_{dataset}.png",
            caption="../report/training.rst",
            category="Figures",
            labels={"figure": "training curves", "dataset": "{dataset}"},
        ),
    log:
        "logs/fig_training/{dataset}.log",
    benchmark:
        "benchmarks/fig_training/{dataset}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=dataset_runs,
    script:
        "../scripts/fig_training.py"


rule fig1:
    """Paper Fig. 1: a normal training image per dataset dissolved at increasing t."""
    input:
        data=[f"results/data/{d}/manifest.csv" for d in MAIN_DATASETS],
        models=[diffusion_model(d) for d in MAIN_DATASETS],
    output:
        report(
            "results/figures/fig1_dissolving.png",
            caption="../report/fig1.rst",
            category="Figures",
            labels={"figure": "Fig. 1 dissolving"},
        ),
    log:
        "logs/fig1.log",
    benchmark:
        "benchmarks/fig1.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        preset=config["preset"],
        datasets=fig1_datasets(),
    script:
        "../scripts/fig1.py"


rule fig4:
    """Paper Fig. 4: DIA with the diffusion model trained on 10% against all of the data."""
    input:
        "results/tables/fig4_data_ratio.csv",
    output:
        report(
            "results/figures/fig4_data_ratio.png",
            caption="../report/fig4.rst",
            category="Figures",
            labels={"figure": "Fig. 4 data ratio"},
        ),
    log:
        "logs/fig4.log",
    benchmark:
        "benchmarks/fig4.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        datasets=lambda wc: PLAN.ablation_datasets("fig4_data_ratio"),
    script:
        "../scripts/fig4.py"
