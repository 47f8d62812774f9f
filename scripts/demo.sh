#!/usr/bin/env bash
# Quick start 1: install, then run the whole pipeline on the embedded phantom dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The demo's jobs are small: two one-thread jobs at a time use two cores better than one
# two-thread job.
.venv/bin/snakemake --configfile config/demo.yaml --replace-workflow-config \
    --set-threads train=1 score=1 train_diffusion=1 dissolve_cache=1 "$@"
