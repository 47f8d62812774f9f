from pathlib import Path

from _dia import run

from dia.tables import collect_metrics, table1, write_csv


def main() -> None:
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    long = collect_metrics(runs)
    write_csv(long, Path(snakemake.output.long))
    write_csv(table1(long), Path(snakemake.output.table))


run(snakemake, main)
