"""Model cost for Table 4: parameters and multiply-accumulates (MACs) per image, and the
throughput the runs measured.

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts every matmul and
convolution the forward pass dispatches (attention included), as FLOPs = 2 x MACs; bias adds and
element-wise ops are not counted, as in the usual MAC convention.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from dia.config import ContrastiveConfig, DiffusionConfig
from dia.contrastive.resnet import ResNet18
from dia.diffusion.model import build_diffusion
from dia.io import read_json
from dia.paper import TABLE4_COST

RESOLUTIONS = (32, 64, 128)


def _cpu_flash_attention(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(q, k, v)


# torch's counter has no formula for the CPU kernel of scaled_dot_product_attention
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one forward pass of ``module`` on ``inputs``."""
    was_training = module.training
    module.eval()
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
        module(*inputs)
    module.train(was_training)
    return counter.get_total_flops() // 2


def table4(
    contrastive: ContrastiveConfig,
    diffusion: DiffusionConfig,
    resolutions: tuple[int, ...] = RESOLUTIONS,
) -> pd.DataFrame:
    """Per image: the contrastive network alone, and plus one dissolving pass at each resolution.

    Dissolving costs one Unet forward per image at the dissolve resolution (resizing is free).
    """
    size = contrastive.image_size
    net = ResNet18(arch=contrastive.arch, width=contrastive.width)
    base_params = count_params(net)
    base_macs = count_macs(net, torch.zeros(1, 3, size, size))
    rows = [("none", base_params, base_macs)]
    for res in resolutions:
        unet = build_diffusion(diffusion.replace(resolution=res)).model
        macs = count_macs(unet, torch.zeros(1, 3, res, res), torch.zeros(1, dtype=torch.long))
        rows.append((str(res), base_params + count_params(unet), base_macs + macs))
    return pd.DataFrame(
        [
            {
                "dissolve_resolution": key,
                "params_m": params / 1e6,
                "macs_g": macs / 1e9,
                "paper_params_m": TABLE4_COST.get(key, (None, None))[0],
                "paper_macs_g": TABLE4_COST.get(key, (None, None))[1],
            }
            for key, params, macs in rows
        ]
    )


def measured_throughput(
    train: Iterable[tuple[str, Path]],
    score: Iterable[tuple[str, Path]],
    caches: Iterable[tuple[str, Path]],
) -> pd.DataFrame:
    """Images per second per Table 4 row, averaged over the runs' meta files.

    ``train``/``score``: (row, train_meta.json / meta.json of a CSI or DIA run); ``caches``:
    (row, meta.json of a dissolve cache). Training counts batch images per second of training
    loop (periodic evaluations excluded), scoring the images scored per second of the stage,
    dissolving the (image, t) pairs the cache computed per second; devices are listed as
    recorded, since the numbers only compare within one machine.
    """
    samples: dict[str, dict[str, list[float]]] = {}
    devices: dict[str, set[str]] = {}

    def add(row: str, key: str, value: float, meta: dict[str, Any]) -> None:
        samples.setdefault(row, {}).setdefault(key, []).append(value)
        devices.setdefault(row, set()).add(meta["device_name"])

    for row, path in train:
        meta = read_json(path)
        images = meta["steps"] * meta["config"]["contrastive"]["batch_size"]
        add(row, "train_images_per_s", images / meta["train_seconds"], meta)
    for row, path in score:
        meta = read_json(path)
        add(row, "score_images_per_s", meta["n_scored_images"] / meta["wall_time_s"], meta)
    for row, path in caches:
        meta = read_json(path)
        add(row, "dissolve_images_per_s", meta["n_dissolved"] / meta["wall_time_s"], meta)
    columns = ["train_images_per_s", "score_images_per_s", "dissolve_images_per_s"]
    rows = [
        {
            "dissolve_resolution": row,
            "n_runs": len(values.get("train_images_per_s", [])),
            **{c: sum(values[c]) / len(values[c]) if c in values else None for c in columns},
            "devices": "; ".join(sorted(devices[row])),
        }
        for row, values in samples.items()
    ]
    return pd.DataFrame(rows, columns=["dissolve_resolution", "n_runs", *columns, "devices"])
