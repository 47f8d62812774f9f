from pathlib import Path

from _dia import run

from dia.meta import pick_device
from dia.stages.diffusion import run_dissolve_cache

run(
    snakemake,
    lambda: run_dissolve_cache(
        data_dir=Path(snakemake.input.data).parent,
        model_path=Path(snakemake.input.model),
        dest=Path(snakemake.output.cache),
        preset=snakemake.params.preset,
        layers=snakemake.params.layers,
        resolution=int(snakemake.wildcards.res),
        device=pick_device(snakemake.params.device),
    ),
)
