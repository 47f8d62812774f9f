"""The diffusion model used for dissolving: lucidrains' Unet and GaussianDiffusion.

DIA used denoising-diffusion-pytorch 0.27.12 with ``loss_type='l1'``; the current library
(2.x) trains with a hard-coded MSE, so :class:`L1GaussianDiffusion` restores the L1 objective of
the paper (section 4.2) and keeps everything else from the library: cosine beta schedule,
epsilon prediction, T = 1000 and its buffers, which the dissolving transformation reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from denoising_diffusion_pytorch import GaussianDiffusion, Unet

from dia.config import DiffusionConfig
from dia.errors import DiaError
from dia.io import atomic_path


class L1GaussianDiffusion(GaussianDiffusion):
    """GaussianDiffusion with the per-pixel L1 loss on the predicted noise."""

    def p_losses(  # type: ignore[override]
        self,
        x_start: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        offset_noise_strength: float | None = None,
        loss_reduction: str = "mean",
    ) -> torch.Tensor:
        if self.objective != "pred_noise" or self.self_condition:
            raise ValueError("L1GaussianDiffusion supports the pred_noise objective only")
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start=x_start, t=t, noise=noise)
        per_sample = F.l1_loss(self.model(x_t, t), noise, reduction="none").flatten(1).mean(1)
        per_sample = per_sample * self.loss_weight[t]
        return per_sample if loss_reduction == "none" else per_sample.mean()


def build_diffusion(cfg: DiffusionConfig) -> L1GaussianDiffusion:
    """The paper's diffusion model at ``cfg.resolution`` (3 channels, grayscale replicated)."""
    unet = Unet(dim=cfg.dim, dim_mults=tuple(cfg.dim_mults), channels=3)
    return L1GaussianDiffusion(
        unet,
        image_size=cfg.resolution,
        timesteps=cfg.timesteps,
        sampling_timesteps=cfg.sampling_timesteps,
        objective="pred_noise",
        beta_schedule="cosine",
    )


def save_diffusion(
    path: Path, diffusion: L1GaussianDiffusion, ema_model: torch.nn.Module, cfg: DiffusionConfig
) -> None:
    """Save online and EMA weights with the config that rebuilds the network."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "config": cfg.to_dict(),
                "model": diffusion.state_dict(),
                "ema": ema_model.state_dict(),
            },
            tmp,
        )


def load_diffusion(
    path: Path, weights: str = "online", device: torch.device | str = "cpu"
) -> L1GaussianDiffusion:
    """Load a trained model; ``weights`` picks the online (official DIA) or the EMA weights."""
    if not Path(path).exists():
        raise DiaError(f"diffusion model {path} not found; run the train_diffusion rule first")
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DiaError(f"cannot read diffusion model {path} ({exc}); delete it and re-run") from exc
    if weights not in ("online", "ema"):
        raise DiaError(f"dissolve.weights must be 'online' or 'ema', got {weights!r}")
    diffusion = build_diffusion(DiffusionConfig.from_dict(ckpt["config"]))
    state = ckpt["model"] if weights == "online" else ckpt["ema"]
    diffusion.load_state_dict(state)
    return diffusion.to(device).eval().requires_grad_(False)
