from pathlib import Path

from _dia import run

from dia.io import write_text
from dia.tables import (
    collect_metrics,
    table1,
    to_latex,
    to_markdown,
    wide_tables,
    write_csv,
)

TITLE = "Table 1: test AUROC, mean ± sample std over seeds (n seeds), paper value and difference"


def main() -> None:
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    long = collect_metrics(runs)
    datasets = list(snakemake.params.datasets)  # Table 1's; the long file has every run
    table = table1(long, datasets)
    write_csv(long, Path(snakemake.output.long))
    write_csv(table, Path(snakemake.output.table))
    wide = wide_tables(table, snakemake.params.methods, datasets)
    write_text(Path(snakemake.output.markdown), to_markdown(wide, TITLE))
    write_text(Path(snakemake.output.latex), to_latex(wide, TITLE + "."))


run(snakemake, main)
