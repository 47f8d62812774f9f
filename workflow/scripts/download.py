from pathlib import Path

from _dia import run

from dia.stages.data import run_download

run(
    snakemake,
    lambda: run_download(
        snakemake.wildcards.dataset, snakemake.params.spec, Path(snakemake.output[0])
    ),
)
