from pathlib import Path

from _dia import run

from dia.tables import bootstrap_table, write_csv


def main() -> None:
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    write_csv(bootstrap_table(runs), Path(snakemake.output[0]))


run(snakemake, main)
