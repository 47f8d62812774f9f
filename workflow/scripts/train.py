from pathlib import Path

from _dia import optional_input, run

from dia.meta import pick_device
from dia.stages.runs import run_train

run(
    snakemake,
    lambda: run_train(
        data_dir=Path(snakemake.input.data).parent,
        out_dir=Path(snakemake.output.model).parent,
        state_dir=Path(snakemake.params.state_dir),
        preset=snakemake.params.preset,
        layers=snakemake.params.layers,
        seed=int(snakemake.wildcards.seed),
        baseline=snakemake.params.baseline or None,
        device=pick_device(snakemake.params.device),
        cache=optional_input(snakemake, "cache"),
        diffusion=optional_input(snakemake, "diffusion"),
        official=optional_input(snakemake, "official"),
        views=optional_input(snakemake, "views"),
    ),
)
