from pathlib import Path

from _dia import run

from dia.stages.data import run_prepare_views

run(
    snakemake,
    lambda: run_prepare_views(
        snakemake.params.spec,
        Path(snakemake.input.raw),
        Path(snakemake.input.manifest).parent,
        Path(snakemake.output[0]),
        preset=snakemake.params.preset,
        baselines=snakemake.params.baselines,
        workers=snakemake.threads,
    ),
)
