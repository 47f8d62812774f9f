from pathlib import Path

import pandas as pd
from _dia import run

from dia.figures import data_ratio_figure


def main() -> None:
    table = pd.read_csv(snakemake.input[0])
    last = table[table["selection"] == "last"]
    data_ratio_figure(last, list(snakemake.params.datasets), Path(snakemake.output[0]))


run(snakemake, main)
