from pathlib import Path

from _dia import run

from dia.stages.data import run_prepare

run(
    snakemake,
    lambda: run_prepare(
        snakemake.wildcards.dataset,
        snakemake.params.spec,
        Path(snakemake.input.raw),
        Path(snakemake.output.manifest).parent,
        frozen=Path(frozen) if (frozen := snakemake.input.get("frozen")) else None,
        workers=snakemake.threads,
    ),
)
