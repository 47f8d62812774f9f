rule train:
    """Train one method on one dataset for one seed (CSI, DIA or a baseline)."""
    input:
        unpack(run_inputs),
    output:
        model=f"{RUN_DIR}/model.pt",
        log_csv=f"{RUN_DIR}/train_log.csv",
        evals=f"{RUN_DIR}/evals.npz",
        meta=f"{RUN_DIR}/train_meta.json",
    log:
        "logs/train/{method}/{dataset}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{method}/{dataset}/{variant}/seed{seed}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=lambda wc: PLAN.train_runtime(wc.method),
    params:
        preset=config["preset"],
        layers=run_layers,
        baseline=lambda wc: PLAN.baseline(wc.method) or "",
        device=device(),
        state_dir="results/state/runs/{method}/{dataset}/{variant}/seed{seed}",
    script:
        "../scripts/train.py"


rule score:
    """Score a trained run's val and test images: scores.csv, metrics.json per selection rule."""
    input:
        unpack(official_input),
        unpack(views_input),
        data="results/data/{dataset}/manifest.csv",
        model=f"{RUN_DIR}/model.pt",
        evals=f"{RUN_DIR}/evals.npz",
        meta=f"{RUN_DIR}/train_meta.json",
    output:
        scores=f"{RUN_DIR}/scores.csv",
        metrics=f"{RUN_DIR}/metrics.json",
        meta=f"{RUN_DIR}/meta.json",
    log:
        "logs/score/{method}/{dataset}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/score/{method}/{dataset}/{variant}/seed{seed}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=8000,
        runtime=120,
    params:
        preset=config["preset"],
        layers=run_layers,
        device=device(),
    script:
        "../scripts/score.py"
