"""The PneumoniaMNIST slice of scripts/gpu_check.sh: write its config, then report its runs.

    python scripts/gpu_slice_config.py OUT            # OUT/slice.yaml from medmnist_cpu.yaml
    python scripts/gpu_slice_config.py --report OUT   # AUROC and step times per precision

The slice is config/medmnist_cpu.yaml on the GPU at one seed: a small diffusion model, then CSI
and DIA for 500 steps each, scored. ``PNEUMONIAMNIST_NPZ`` names a local pneumoniamnist.npz
instead of downloading it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def write_config(out: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "medmnist_cpu.yaml").read_text())
    config["device"], config["seeds"] = "cuda", [0]
    local = os.environ.get("PNEUMONIAMNIST_NPZ")
    if local:
        config["datasets"]["pneumoniamnist"]["local_path"] = str(Path(local).resolve())
    (out / "slice.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"slice: PneumoniaMNIST from {local or 'the MedMNIST download'}, seed 0")


def report(out: Path) -> None:
    for precision in PRECISIONS:
        work = out / f"slice_{precision}"
        diffusion = work / "results/diffusion/pneumoniamnist/res32_ratio1.0/meta.json"
        if diffusion.exists():
            rate = json.loads(diffusion.read_text())["steps_per_second"]
            print(f"slice {precision} diffusion: {rate:.1f} steps/s")
        for method in ("csi", "dia"):
            run = work / f"results/runs/{method}/pneumoniamnist/default/seed0"
            if not (run / "metrics.json").exists():
                print(f"slice {precision} {method}: not finished")
                continue
            meta = json.loads((run / "train_meta.json").read_text())
            auroc = json.loads((run / "metrics.json").read_text())["last"]["auroc"]
            ms = 1000 * meta["train_seconds"] / max(meta["steps"], 1)
            print(f"slice {precision} {method}: test AUROC {auroc:.3f}, {ms:.1f} ms/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    (report if args.report else write_config)(args.out)


if __name__ == "__main__":
    main()
