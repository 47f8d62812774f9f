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
    log:
        "logs/table1.log",
    benchmark:
        "benchmarks/table1.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 1
    params:
        runs=run_records(),
    script:
        "../scripts/table1.py"
