rule table1:
    input:
        metrics_files(),
    output:
        table=report(
            "results/tables/table1_main.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        long="results/tables/metrics_long.csv",
        markdown="results/tables/table1_main.md",
        latex="results/tables/table1_main.tex",
    log:
        "logs/table1.log",
    benchmark:
        "benchmarks/table1.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=run_records(),
        methods=METHODS,
        datasets=DATASETS,
    script:
        "../scripts/table1.py"


rule bootstrap:
    input:
        scores_files(),
    output:
        report(
            "results/tables/bootstrap_ci.csv",
            caption="../report/bootstrap.rst",
            category="Tables",
        ),
    log:
        "logs/bootstrap.log",
    benchmark:
        "benchmarks/bootstrap.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        runs=run_records(),
    script:
        "../scripts/bootstrap.py"


rule table4:
    output:
        report(
            "results/tables/table4_cost.csv",
            caption="../report/table4.rst",
            category="Tables",
        ),
    log:
        "logs/table4.log",
    benchmark:
        "benchmarks/table4.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        preset=config["preset"],
        layers=[{s: config.get(s, {}) for s in SECTIONS}],
    script:
        "../scripts/table4.py"


rule table2:
    input:
        lambda wc: metrics_files(ABLATIONS["table2"]),
    output:
        table=report(
            "results/tables/table2_shift.csv",
            caption="../report/table2.rst",
            category="Tables",
        ),
        markdown="results/tables/table2_shift.md",
        latex="results/tables/table2_shift.tex",
    log:
        "logs/table2.log",
    benchmark:
        "benchmarks/table2.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=lambda wc: ablation_records(ABLATIONS["table2"]),
        settings=ABLATIONS["table2"],
        datasets=lambda wc: ablation_datasets(ABLATIONS["table2"]),
        paper="TABLE2_AUROC",
    script:
        "../scripts/ablation.py"


rule table3:
    input:
        lambda wc: metrics_files(ABLATIONS["table3"]),
    output:
        table=report(
            "results/tables/table3_resolution.csv",
            caption="../report/table3.rst",
            category="Tables",
        ),
        markdown="results/tables/table3_resolution.md",
        latex="results/tables/table3_resolution.tex",
    log:
        "logs/table3.log",
    benchmark:
        "benchmarks/table3.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=lambda wc: ablation_records(ABLATIONS["table3"]),
        settings=ABLATIONS["table3"],
        datasets=lambda wc: ablation_datasets(ABLATIONS["table3"]),
        paper="TABLE3_AUROC",
    script:
        "../scripts/ablation.py"
