from pathlib import Path

from _dia import run

import dia.paper
from dia.tables import collect_metrics, variant_table, write_csv


def main() -> None:
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    paper = getattr(dia.paper, snakemake.params.paper)
    table = variant_table(collect_metrics(runs), "dia", dict(snakemake.params.settings), paper)
    write_csv(table, Path(snakemake.output[0]))


run(snakemake, main)
