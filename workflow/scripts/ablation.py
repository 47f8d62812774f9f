from pathlib import Path

from _dia import run

from dia.io import write_text
from dia.paper import ABLATION_AUROC
from dia.tables import (
    collapse_families,
    collect_metrics,
    to_latex,
    to_markdown,
    variant_table,
    wide_tables,
    write_csv,
)

TITLES = {
    "table2_shift": "Table 2: DIA with rotation or perm shifts",
    "table3_resolution": "Table 3: DIA with dissolving at different resolutions (px)",
    "ablation_dissolve": (
        "Dissolving ablation (official README): diffusion model, Gaussian or median blur, or "
        "none, with rotation or perm shifts; reference values from the README"
    ),
    "fig4_data_ratio": (
        "Fig. 4: DIA with the diffusion model trained on 10% or 100% of the normal training "
        "images; CIFAR is the mean over its one-class problems"
    ),
}


def main() -> None:
    name = snakemake.wildcards.name
    runs = [{**r, "path": p} for r, p in zip(snakemake.params.runs, snakemake.input, strict=True)]
    settings = dict(snakemake.params.settings)
    long = collapse_families(collect_metrics(runs), dict(snakemake.params.families))
    table = variant_table(long, "dia", settings, ABLATION_AUROC[name])
    write_csv(table, Path(snakemake.output.table))
    wide = wide_tables(table, list(settings), list(snakemake.params.datasets), key="setting")
    title = f"{TITLES[name]}. Test AUROC, mean ± sample std over seeds (n), reference, difference"
    write_text(Path(snakemake.output.markdown), to_markdown(wide, title))
    write_text(Path(snakemake.output.latex), to_latex(wide, title + "."))


run(snakemake, main)
