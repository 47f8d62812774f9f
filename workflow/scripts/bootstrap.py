from pathlib import Path

from _dia import run

from dia.io import write_text
from dia.tables import bootstrap_table, bootstrap_text_table, to_latex, to_markdown, write_csv

TITLE = (
    "Paired bootstrap 95% interval of DIA's test AUROC minus each method's (last selection "
    "rule, 2,000 replicates): difference [low, high]"
)


def main() -> None:
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    table = bootstrap_table(runs)
    write_csv(table, Path(snakemake.output.table))
    text = {"": bootstrap_text_table(table, snakemake.params.methods, snakemake.params.datasets)}
    write_text(Path(snakemake.output.markdown), to_markdown(text, TITLE))
    write_text(Path(snakemake.output.latex), to_latex(text, TITLE + "."))


run(snakemake, main)
