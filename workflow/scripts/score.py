from pathlib import Path

from _dia import optional_input, run

from dia.meta import pick_device
from dia.stages.runs import run_score

run(
    snakemake,
    lambda: run_score(
        data_dir=Path(snakemake.input.data).parent,
        run_dir=Path(snakemake.input.model).parent,
        preset=snakemake.params.preset,
        layers=snakemake.params.layers,
        device=pick_device(snakemake.params.device),
        official=optional_input(snakemake, "official"),
        views=optional_input(snakemake, "views"),
    ),
)
