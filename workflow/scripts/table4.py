from pathlib import Path

from _dia import run

from dia.evaluation.cost import RESOLUTIONS, measured_throughput, table4
from dia.io import write_text
from dia.sections import resolve
from dia.tables import cost_text_table, to_latex, to_markdown, write_csv

TITLE = (
    "Table 4: parameters (M) and MACs (G) per image of the 224 px model without dissolving and "
    "with dissolving at each resolution (px), beside the paper; throughput measured by the runs"
)


def main() -> None:
    preset, layers = snakemake.params.preset, snakemake.params.layers
    # Table 4's setting: the 224 px ImageNet-style ResNet-18 of the high-resolution datasets
    contrastive = resolve("contrastive", preset, layers).replace(
        arch="resnet18_imagenet", image_size=224
    )
    rows = snakemake.params.rows
    speed = measured_throughput(
        zip(rows, map(Path, snakemake.input.train), strict=True),
        zip(rows, map(Path, snakemake.input.score), strict=True),
        zip(snakemake.params.cache_rows, map(Path, snakemake.input.caches), strict=True),
    )
    # the paper's rows always, plus the resolutions this configuration dissolves at
    resolutions = tuple(sorted({*RESOLUTIONS, *snakemake.params.resolutions}))
    cost = table4(contrastive, resolve("diffusion", preset, layers), resolutions)
    table = cost.merge(speed, on="dissolve_resolution", how="left")
    table["n_runs"] = table["n_runs"].fillna(0).astype(int)  # rows no run measured
    write_csv(table, Path(snakemake.output.table))
    text = {"": cost_text_table(table)}
    write_text(Path(snakemake.output.markdown), to_markdown(text, TITLE))
    write_text(Path(snakemake.output.latex), to_latex(text, TITLE + "."))


run(snakemake, main)
