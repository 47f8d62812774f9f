from pathlib import Path

from _dia import run

from dia.meta import pick_device
from dia.stages.diffusion import run_train_diffusion

run(
    snakemake,
    lambda: run_train_diffusion(
        data_dir=Path(snakemake.input[0]).parent,
        out_dir=Path(snakemake.output.model).parent,
        state_dir=Path(snakemake.params.state_dir),
        preset=snakemake.params.preset,
        layers=snakemake.params.layers,
        resolution=int(snakemake.wildcards.res),
        ratio=float(snakemake.wildcards.ratio),
        seed=int(snakemake.params.seed),
        device=pick_device(snakemake.params.device),
        all_classes=snakemake.params.all_classes,
    ),
)
