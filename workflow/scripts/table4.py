from pathlib import Path

from _dia import run

from dia.config import resolve
from dia.evaluation.cost import table4
from dia.tables import write_csv


def main() -> None:
    preset, layers = snakemake.params.preset, snakemake.params.layers
    # Table 4's setting: the 224 px ImageNet-style ResNet-18 of the high-resolution datasets
    contrastive = resolve("contrastive", preset, layers).replace(
        arch="resnet18_imagenet", image_size=224
    )
    write_csv(table4(contrastive, resolve("diffusion", preset, layers)), Path(snakemake.output[0]))


run(snakemake, main)
