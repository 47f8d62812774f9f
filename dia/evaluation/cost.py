"""Model cost for Table 4: parameters and multiply-accumulates (MACs) per image.

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts every matmul and
convolution the forward pass dispatches (attention included), as FLOPs = 2 x MACs; bias adds and
element-wise ops are not counted, as in the usual MAC convention.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from dia.config import ContrastiveConfig, DiffusionConfig
from dia.contrastive.resnet import ResNet18
from dia.diffusion.model import build_diffusion
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
                "paper_params_m": TABLE4_COST[key][0],
                "paper_macs_g": TABLE4_COST[key][1],
            }
            for key, params, macs in rows
        ]
    )
