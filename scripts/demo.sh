#!/usr/bin/env bash
# Quick start 1: install, then run the whole pipeline on the embedded phantom dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/snakemake --configfile config/demo.yaml --replace-workflow-config "$@"
