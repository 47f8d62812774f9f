#!/usr/bin/env bash
# Quick start 2: install, then lint and run the whole test suite (unit, workflow, end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/snakefmt --check workflow
.venv/bin/python -m pytest "$@"
