"""Benchmark: time of one training step of CSI, DIA with the dissolve cache and DIA online.

Prints the median step time of each on the same batch, the ratios to CSI and, for each extra
precision, the ratio to the first. DIA trains on 3 branches against CSI's 2, so with the cache
its step should cost about 1.5x CSI's; online dissolving adds K Unet forward passes per step.
The diffusion model has random weights (only its cost matters here).

    python scripts/bench_step.py                       # paper sizes (MedMNIST: 28 px, width 64)
    python scripts/bench_step.py --precision fp32 bf16 # mixed precision against float32
    python scripts/bench_step.py --width 32 --batch-size 16 --unet-dim 16 --unet-mults 1 2 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig
from dia.contrastive.train import Trainer
from dia.contrastive.views import CachedDissolve, OnlineDissolve
from dia.diffusion.cache import DissolveCache, build_cache
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import build_diffusion


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--arch", default="resnet18_cifar")
    p.add_argument("--unet-dim", type=int, default=64)
    p.add_argument("--unet-mults", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=5, help="timed steps per method (after warm-up)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true", help="contrastive.channels_last")
    p.add_argument("--compile", action="store_true", help="contrastive.compile (warm-up compiles)")
    return p.parse_args()


def time_steps(trainer: Trainer, index: torch.Tensor, steps: int, device: str) -> float:
    trainer.step(index)
    times = []
    for _ in range(steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.step(index)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def setups(
    args: argparse.Namespace, images: torch.Tensor, precision: str
) -> dict[str, tuple[ContrastiveConfig, object]]:
    """CSI, DIA from a dissolve cache and DIA dissolving online, at ``precision``."""
    fit = "pad_crop" if args.image_size < 32 else "resize"
    n = len(images)
    dissolve_cfg = DissolveConfig(
        fit=fit, t_min=30, t_max=130, cache_t_stride=10, precision=precision
    )
    diffusion = build_diffusion(
        DiffusionConfig(dim=args.unet_dim, dim_mults=tuple(args.unet_mults))
    )
    dissolver = Dissolver(
        diffusion.to(args.device).eval(), dissolve_cfg, image_size=args.image_size
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache_path = Path(tmp) / "cache.npz"
        ids = np.array([str(i) for i in range(n)])
        with torch.inference_mode():
            build_cache(dissolver, images, ids, cache_path, device=args.device)
        cache = DissolveCache.load(cache_path, ids)
    base = dict(
        width=args.width,
        batch_size=n,
        image_size=args.image_size,
        arch=args.arch,
        precision=precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    return {
        "csi": (ContrastiveConfig(method="csi", **base), None),
        "dia_cache": (
            ContrastiveConfig(method="dia", **base),
            CachedDissolve(cache, dissolve_cfg, image_size=args.image_size),
        ),
        "dia_online": (
            ContrastiveConfig(method="dia", dissolve_source="online", **base),
            OnlineDissolve(dissolver),
        ),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size)
    index = torch.arange(args.batch_size)
    print(
        f"device={args.device} threads={args.threads} batch={args.batch_size} "
        f"image={args.image_size} width={args.width} unet_dim={args.unet_dim} "
        f"mults={args.unet_mults} channels_last={args.channels_last} compile={args.compile}"
    )
    first = args.precision[0]
    results: dict[tuple[str, str], float] = {}
    for precision in args.precision:
        for name, (cfg, source) in setups(args, images, precision).items():
            trainer = Trainer(cfg, images, dissolve=source, seed=0, device=args.device)
            seconds = time_steps(trainer, index, args.steps, args.device)
            results[precision, name] = seconds
            line = f"{precision} {name:11s} {seconds * 1000:9.1f} ms/step"
            line += f"   x{seconds / results[precision, 'csi']:.2f} CSI"
            if precision != first:
                line += f"   x{seconds / results[first, name]:.2f} {first}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
