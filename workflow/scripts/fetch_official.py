from pathlib import Path

from _dia import run

from dia.official.repos import OfficialRepo, fetch

repo = OfficialRepo(key=snakemake.wildcards.repo, **snakemake.params.spec)
run(snakemake, lambda: fetch(repo, Path(snakemake.output[0]).parent))
