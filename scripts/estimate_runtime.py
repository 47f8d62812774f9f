"""Estimate how long each stage of a configuration takes on this machine's device.

Times one unit of each stage's work (diffusion training image, dissolved image, contrastive
step, scored image, baseline training image) at the config's sizes with random weights, then
multiplies by the units the config's jobs need (dataset sizes from results/data/*/manifest.csv
when prepared, else the paper datasets' known sizes). An estimate: data loading, checkpoints,
start-up and the CPU stages are left out.

    python scripts/estimate_runtime.py                              # config/config.yaml, GPU
    python scripts/estimate_runtime.py --device cpu --probe-batch 4 # quick, underestimates GPUs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from dia.errors import DiaError
from dia.evaluation.runtime import Probe, dataset_sizes, estimate
from dia.plan import Plan


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    p.add_argument("--data", type=Path, default=Path("results/data"), help="prepared datasets")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--probe-batch", type=int, default=None, help="time this many images instead of a batch"
    )
    p.add_argument("--reps", type=int, default=2, help="timed repetitions per unit")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    config = yaml.safe_load(args.configfile.read_text())
    plan = Plan(config)
    sizes = dataset_sizes(plan, args.data)
    unknown = sorted(set(plan.datasets) - set(sizes))
    if unknown:
        raise DiaError(
            f"no size known for {', '.join(unknown)}: prepare it first "
            f"(snakemake --until prepare) or pass --data"
        )
    probe = Probe(args.device, args.probe_batch, args.reps)
    table = estimate(plan, config["preset"], sizes, probe)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"ESTIMATE for {args.configfile} on {name} (one job at a time):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    print(f"total: {table['hours'].sum():,.1f} hours")


if __name__ == "__main__":
    try:
        main()
    except DiaError as exc:
        sys.exit(f"error: {exc}")
