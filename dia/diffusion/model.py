"""The diffusion model used for dissolving: lucidrains' Unet and GaussianDiffusion.

The official DIA code trains and dissolves with denoising-diffusion-pytorch 0.27.12, which this
package pins: the same Unet (weight-standardised convolutions with GroupNorm, strided
downsampling, linear attention at every level and full attention in the middle; 36.25 M
parameters at width 64), ``loss_type='l1'`` on the predicted noise, the cosine beta schedule and
T = 1000. Later releases of the library changed the architecture, so a checkpoint records the
library version it was built with and is refused by another one.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet

from dia.config import DiffusionConfig
from dia.errors import DiaError
from dia.io import atomic_path

LIBRARY_VERSION = metadata.version("denoising-diffusion-pytorch")


def build_diffusion(cfg: DiffusionConfig) -> GaussianDiffusion:
    """The paper's diffusion model at ``cfg.resolution`` (3 channels, grayscale replicated)."""
    unet = Unet(dim=cfg.dim, dim_mults=tuple(cfg.dim_mults), channels=3)
    return GaussianDiffusion(
        unet,
        image_size=cfg.resolution,
        timesteps=cfg.timesteps,
        sampling_timesteps=cfg.sampling_timesteps,
        loss_type="l1",
        objective="pred_noise",
        beta_schedule="cosine",
    )


def save_diffusion(
    path: Path, diffusion: GaussianDiffusion, ema_model: torch.nn.Module, cfg: DiffusionConfig
) -> None:
    """Save online and EMA weights with the config and library version that rebuild them."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "config": cfg.to_dict(),
                "library": LIBRARY_VERSION,
                "model": diffusion.state_dict(),
                "ema": ema_model.state_dict(),
            },
            tmp,
        )


def load_diffusion(
    path: Path, weights: str = "online", device: torch.device | str = "cpu"
) -> GaussianDiffusion:
    """Load a trained model; ``weights`` picks the online (official DIA) or the EMA weights."""
    if not Path(path).exists():
        raise DiaError(f"diffusion model {path} not found; run the train_diffusion rule first")
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DiaError(f"cannot read diffusion model {path} ({exc}); delete it and re-run") from exc
    if weights not in ("online", "ema"):
        raise DiaError(f"dissolve.weights must be 'online' or 'ema', got {weights!r}")
    built_with = ckpt.get("library", "2.x (before the version was recorded)")
    if built_with != LIBRARY_VERSION:
        raise DiaError(
            f"diffusion model {path} was built with denoising-diffusion-pytorch {built_with}, "
            f"this pipeline uses {LIBRARY_VERSION} (another Unet); delete it and re-run"
        )
    diffusion = build_diffusion(DiffusionConfig.from_dict(ckpt["config"]))
    state = ckpt["model"] if weights == "online" else ckpt["ema"]
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise DiaError(
            f"diffusion model {path} has NaN or infinite {weights} weights (its training "
            f"diverged); delete it and re-run with a lower diffusion.lr"
        )
    diffusion.load_state_dict(state)
    return diffusion.to(device).eval().requires_grad_(False)
