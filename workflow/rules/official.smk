rule fetch_official:
    """Fetch one official repository at its pinned commit and verify its content digest."""
    output:
        "resources/official/{repo}.json",
    log:
        "logs/official/{repo}.log",
    wildcard_constraints:
        repo=one_of(OFFICIAL_REPOS),
    conda:
        "../../envs/dia.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        spec=lambda wildcards: config["official_repos"][wildcards.repo],
    script:
        "../scripts/fetch_official.py"


rule official_repos:
    """Every pinned official repository: the DIA_OFFICIAL_REPOS folder of the parity tests."""
    input:
        expand("resources/official/{repo}.json", repo=OFFICIAL_REPOS),
