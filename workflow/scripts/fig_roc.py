from pathlib import Path

from _dia import run

from dia.stages.figures import run_roc_figure

run(
    snakemake,
    lambda: run_roc_figure(
        [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)],
        snakemake.wildcards.dataset,
        Path(snakemake.output[0]),
    ),
)
