from pathlib import Path

from _dia import run

from dia.stages.figures import run_dissolving_figure

run(
    snakemake,
    lambda: run_dissolving_figure(
        snakemake.params.datasets, snakemake.params.preset, Path(snakemake.output[0])
    ),
)
