from pathlib import Path

from _dia import run

from dia.io import write_text
from dia.tables import collect_metrics, parity_table, parity_text_table, to_markdown, write_csv

TITLE = "Native against official code: test AUROC mean ± std over seeds and the paired difference"


def main() -> None:
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    table = parity_table(collect_metrics(runs), snakemake.params.pairs)
    write_csv(table, Path(snakemake.output.table))
    write_text(Path(snakemake.output.markdown), to_markdown(parity_text_table(table), TITLE))


run(snakemake, main)
