from pathlib import Path

from _dia import run

import dia.paper
from dia.io import write_text
from dia.tables import (
    collect_metrics,
    to_latex,
    to_markdown,
    variant_table,
    wide_tables,
    write_csv,
)

TITLES = {
    "TABLE2_AUROC": "Table 2: DIA with rotation or perm shifts, test AUROC",
    "TABLE3_AUROC": "Table 3: DIA with dissolving at 32, 64 and 128 px, test AUROC",
}


def main() -> None:
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    settings = dict(snakemake.params.settings)
    paper = getattr(dia.paper, snakemake.params.paper)
    table = variant_table(collect_metrics(runs), "dia", settings, paper)
    write_csv(table, Path(snakemake.output.table))
    wide = wide_tables(table, list(settings), list(snakemake.params.datasets), key="setting")
    title = TITLES[snakemake.params.paper] + ", mean ± sample std over seeds (n), paper, difference"
    write_text(Path(snakemake.output.markdown), to_markdown(wide, title))
    write_text(Path(snakemake.output.latex), to_latex(wide, title + "."))


run(snakemake, main)
