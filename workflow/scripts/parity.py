from pathlib import Path

from _dia import run

from dia.io import write_text
from dia.tables import (
    check_same_diffusion,
    collect_metrics,
    parity_table,
    parity_text_table,
    to_markdown,
    write_csv,
)

TITLE = "Native against official code: test AUROC mean ± std over seeds and the paired difference"


def main() -> None:
    files = zip(snakemake.input.metrics, snakemake.input.train_meta, strict=True)
    runs = [
        {**r, "path": m, "train_meta": t}
        for r, (m, t) in zip(snakemake.params.runs, files, strict=True)
    ]
    check_same_diffusion(runs, snakemake.params.pairs)
    table = parity_table(collect_metrics(runs), snakemake.params.pairs)
    write_csv(table, Path(snakemake.output.table))
    write_text(Path(snakemake.output.markdown), to_markdown(parity_text_table(table), TITLE))


run(snakemake, main)
