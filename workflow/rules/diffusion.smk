rule train_diffusion:
    """Train the DDPM that dissolves a dataset (or a one-class family) at one resolution and
    data ratio."""
    input:
        diffusion_data,
    output:
        model="results/diffusion/{dataset}/res{res}_ratio{ratio}/model.pt",
        samples=report(
            "results/diffusion/{dataset}/res{res}_ratio{ratio}/samples.png",
            caption="../report/samples.rst",
            category="Diffusion samples",
            labels={"dataset": "{dataset}", "resolution": "{res}", "ratio": "{ratio}"},
        ),
        meta="results/diffusion/{dataset}/res{res}_ratio{ratio}/meta.json",
    log:
        "logs/train_diffusion/{dataset}_res{res}_ratio{ratio}.log",
    benchmark:
        "benchmarks/train_diffusion/{dataset}_res{res}_ratio{ratio}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=1440,
    params:
        preset=config["preset"],
        layers=diffusion_layers,
        all_classes=lambda wc: PLAN.diffusion_training_data(wc.dataset)[1],
        seed=config.get("diffusion_seed", 0),
        device=device(),
        state_dir="results/state/diffusion/{dataset}/res{res}_ratio{ratio}",
    script:
        "../scripts/train_diffusion.py"


rule dissolve_cache:
    """Precompute dissolved training normals for every t of the dissolving range."""
    input:
        data="results/data/{dataset}/manifest.csv",
        model=owned_model,
    output:
        cache="results/dissolved/{dataset}/res{res}_ratio{ratio}.npz",
        meta="results/dissolved/{dataset}/res{res}_ratio{ratio}.meta.json",
    log:
        "logs/dissolve_cache/{dataset}_res{res}_ratio{ratio}.log",
    benchmark:
        "benchmarks/dissolve_cache/{dataset}_res{res}_ratio{ratio}.tsv"
    conda:
        "../../envs/dia.yaml"
    threads: 4
    resources:
        gpu=GPUS,
        mem_mb=16000,
        runtime=240,
    params:
        preset=config["preset"],
        layers=dataset_layers,
        device=device(),
    script:
        "../scripts/dissolve_cache.py"
