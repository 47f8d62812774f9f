"""Benchmark: time of one training step of CSI, DIA with the dissolve cache and DIA online.

Prints the median step time of each on the same batch, the ratios to CSI and, for each extra
precision, the ratio to the first. DIA trains on 3 branches against CSI's 2, so with the cache
its step should cost about 1.5x CSI's; online dissolving adds K Unet forward passes per step.
The last line of each precision measures that floor on this machine: the ResNet's forward and
backward pass alone on 3 branches of views over 2 (convolution kernels rarely scale exactly
with the batch).
The diffusion model has random weights (only its cost matters here).

    python scripts/bench_step.py                       # paper sizes (MedMNIST: 28 px, width 64)
    python scripts/bench_step.py --precision fp32 bf16 # mixed precision against float32
    python scripts/bench_step.py --width 32 --batch-size 16 --unet-dim 16 --unet-mults 1 2 4
    python scripts/bench_step.py --official path/to/shijianjian__DIA  # and the official steps
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig, ScoreConfig
from dia.contrastive.shifts import NUM_SHIFTS
from dia.contrastive.train import Trainer, build_model
from dia.contrastive.views import CachedDissolve, OnlineDissolve
from dia.data.prepare import ImageBatches
from dia.diffusion.cache import DissolveCache, build_cache
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import build_diffusion, save_diffusion
from dia.official.contrastive import OfficialRun, train_official
from dia.precision import autocast


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
    p.add_argument(
        "--official",
        type=Path,
        help="shijianjian/DIA at its pinned commit: time the official CSI and DIA steps too",
    )
    return p.parse_args()


def time_calls(call: Callable[[], object], steps: int, device: str) -> float:
    """Median seconds of ``call`` over ``steps`` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dissolve_config(args: argparse.Namespace, precision: str) -> DissolveConfig:
    fit = "pad_crop" if args.image_size < 32 else "resize"
    return DissolveConfig(fit=fit, t_min=30, t_max=130, cache_t_stride=10, precision=precision)


def diffusion_config(args: argparse.Namespace) -> DiffusionConfig:
    return DiffusionConfig(dim=args.unet_dim, dim_mults=tuple(args.unet_mults))


def setups(
    args: argparse.Namespace, images: torch.Tensor, precision: str
) -> dict[str, tuple[ContrastiveConfig, object]]:
    """CSI, DIA from a dissolve cache and DIA dissolving online, at ``precision``."""
    n = len(images)
    dissolve_cfg = dissolve_config(args, precision)
    diffusion = build_diffusion(diffusion_config(args))
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


def official_step(
    args: argparse.Namespace, cfg: ContrastiveConfig, dissolve_cfg: DissolveConfig, unet: Path
) -> float:
    """Seconds per step of the official training loop (``impl: official``; DIA dissolves online,
    the only way it can): its second epoch of ``args.steps`` batches over their number, the first
    epoch being the warm-up (as ours are timed after a warm-up step)."""
    cfg = cfg.replace(
        impl="official", epochs=2, max_batches_per_epoch=args.steps + 1, dissolve_source="online"
    )
    run = OfficialRun(
        args.official,
        cfg,
        dissolve_cfg.replace(cache_t_stride=1, flip="before"),
        ScoreConfig(),
        args.device,
        diffusion=unet,
    )
    n = args.batch_size * (args.steps + 1)
    rng = np.random.default_rng(0)
    images = ImageBatches(rng.integers(0, 256, (n, args.image_size, args.image_size, 3), np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        _, state = train_official(run, images, seed=0, state_dir=Path(tmp), evaluate=None)
    return state.log[1]["seconds"] / (state.log[1]["step"] - state.log[0]["step"])


def network_floor(args: argparse.Namespace, cfg: ContrastiveConfig) -> float:
    """Seconds of the ResNet's forward and backward pass alone on DIA's views (3 branches of
    K shifts) over those on CSI's (2 branches): the ratio a DIA step cannot beat (eager; in
    channels-last with ``--channels-last``)."""
    model = build_model(cfg).to(args.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    seconds = []
    for branches in (2, 3):
        n = branches * NUM_SHIFTS * args.batch_size
        x = torch.rand(n, 3, args.image_size, args.image_size, device=args.device)
        x = x.contiguous(memory_format=memory_format)

        def step(x: torch.Tensor = x) -> None:
            with autocast(args.device, cfg.precision):
                out = model(x)
            (out.projection.float().sum() + out.shift_logits.float().sum()).backward()

        seconds.append(time_calls(step, args.steps, args.device))
    return seconds[1] / seconds[0]


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
            seconds = time_calls(lambda t=trainer: t.step(index), args.steps, args.device)
            results[precision, name] = seconds
            line = f"{precision} {name:11s} {seconds * 1000:9.1f} ms/step"
            line += f"   x{seconds / results[precision, 'csi']:.2f} CSI"
            if precision != first:
                line += f"   x{seconds / results[first, name]:.2f} {first}"
            print(line, flush=True)
        floor = network_floor(args, cfg)
        print(f"{precision} the ResNet alone on 3 branches / 2: x{floor:.2f} (a DIA step's floor)")
    if args.official and "fp32" in args.precision:
        compare_official(args, results)


def compare_official(args: argparse.Namespace, results: dict[tuple[str, str], float]) -> None:
    """The official steps (fp32, the only precision it has) against ours on the same batch."""
    diffusion_cfg = diffusion_config(args)
    diffusion = build_diffusion(diffusion_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        unet = Path(tmp) / "model.pt"
        save_diffusion(unet, diffusion, diffusion, diffusion_cfg)
        for method, ours in (("csi", "csi"), ("dia", "dia_online")):
            cfg = ContrastiveConfig(
                method=method,
                width=args.width,
                batch_size=args.batch_size,
                image_size=args.image_size,
                arch=args.arch,
            )
            seconds = official_step(args, cfg, dissolve_config(args, "fp32"), unet)
            line = f"fp32 official {method:3s}    {seconds * 1000:9.1f} ms/step"
            print(f"{line}   ours ({ours}) x{results['fp32', ours] / seconds:.2f}", flush=True)


if __name__ == "__main__":
    main()
