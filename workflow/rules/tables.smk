rule table1:
    """Paper Table 1: AUROC mean and std over seeds per method, dataset and selection rule."""
    input:
        metrics_files(PLAN.runs()),
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
        runs=PLAN.runs(),
        methods=METHODS,
        datasets=MAIN_DATASETS,
    script:
        "../scripts/table1.py"


rule bootstrap:
    """Paired bootstrap 95% intervals of DIA's test AUROC minus each other method's."""
    input:
        [run_file(r, "scores.csv") for r in PLAN.main_runs()],
    output:
        table=report(
            "results/tables/bootstrap_ci.csv",
            caption="../report/bootstrap.rst",
            category="Tables",
        ),
        markdown="results/tables/bootstrap_ci.md",
        latex="results/tables/bootstrap_ci.tex",
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
        runs=PLAN.main_runs(),
        methods=[m for m in METHODS if m != "dia"],
        datasets=MAIN_DATASETS,
    script:
        "../scripts/bootstrap.py"


rule table4:
    """Paper Table 4: parameters, MACs and measured throughput with and without dissolving."""
    input:
        train=[run_file(r, "train_meta.json") for r in PLAN.table4_runs()],
        score=[run_file(r, "meta.json") for r in PLAN.table4_runs()],
        caches=list(table4_caches()),
    output:
        table=report(
            "results/tables/table4_cost.csv",
            caption="../report/table4.rst",
            category="Tables",
        ),
        markdown="results/tables/table4_cost.md",
        latex="results/tables/table4_cost.tex",
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
        layers=[PLAN.global_layer()],
        resolutions=[int(res) for res in ABLATIONS["table3_resolution"]],
        rows=[r["row"] for r in PLAN.table4_runs()],
        cache_rows=list(table4_caches().values()),
    script:
        "../scripts/table4.py"


rule ablation:
    """Tables 2 and 3, Fig. 4's numbers and the dissolving ablation against the default runs."""
    input:
        lambda wc: metrics_files(PLAN.ablation_runs(wc.name)),
    output:
        table=report(
            "results/tables/{name}.csv",
            caption="../report/ablation.rst",
            category="Tables",
            labels={"table": "{name}"},
        ),
        markdown="results/tables/{name}.md",
        latex="results/tables/{name}.tex",
    log:
        "logs/ablation/{name}.log",
    benchmark:
        "benchmarks/ablation/{name}.tsv"
    wildcard_constraints:
        name=one_of(list(ABLATIONS)),
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        runs=lambda wc: PLAN.ablation_runs(wc.name),
        settings=lambda wc: ABLATIONS[wc.name],
        datasets=lambda wc: PLAN.ablation_datasets(wc.name),
        families=PLAN.families,
    script:
        "../scripts/ablation.py"


rule parity:
    """Native against official code (CSI, DIA, baselines): AUROC per seed and rule, paired."""
    input:
        metrics=metrics_files(PARITY_RUNS),
        train_meta=[run_file(r, "train_meta.json") for r in PARITY_RUNS],
    output:
        table=report(
            "results/tables/parity.csv",
            caption="../report/parity.rst",
            category="Tables",
        ),
        markdown="results/tables/parity.md",
    log:
        "logs/parity.log",
    benchmark:
        "benchmarks/parity.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        runs=PARITY_RUNS,
        pairs=PLAN.parity_pairs,
    script:
        "../scripts/parity.py"
