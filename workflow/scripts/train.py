from pathlib import Path

from _dia import run

from dia.meta import pick_device
from dia.stages.runs import run_train


def _optional(name: str) -> Path | None:
    """DIA runs get a dissolve cache or a diffusion model as input, CSI runs neither."""
    path = snakemake.input.get(name)
    return Path(path) if path else None


run(
    snakemake,
    lambda: run_train(
        data_dir=Path(snakemake.input.data).parent,
        out_dir=Path(snakemake.output.model).parent,
        state_dir=Path(snakemake.params.state_dir),
        preset=snakemake.params.preset,
        layers=snakemake.params.layers,
        seed=int(snakemake.wildcards.seed),
        device=pick_device(snakemake.params.device),
        cache=_optional("cache"),
        diffusion=_optional("diffusion"),
    ),
)
