"""The diffusion model is the official code's: denoising-diffusion-pytorch 0.27.12's Unet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ema_pytorch import EMA

from dia.config import DiffusionConfig
from dia.diffusion.model import build_diffusion, load_diffusion, save_diffusion
from dia.errors import DiaError


def test_official_architecture_at_the_paper_width() -> None:
    """Width 64, mults (1, 2, 4, 8): 36.25 M parameters, weight-standardised convolutions with
    GroupNorm, 1 full and 8 linear attention layers, L1 loss on the predicted noise."""
    diffusion = build_diffusion(DiffusionConfig())
    unet = diffusion.model
    assert sum(p.numel() for p in unet.parameters()) == 36_251_779
    kinds = [type(m).__name__ for m in unet.modules()]
    assert kinds.count("Attention") == 1
    assert kinds.count("LinearAttention") == 8
    assert "WeightStandardizedConv2d" in kinds
    assert diffusion.loss_type == "l1"
    assert diffusion.objective == "pred_noise"


def small(tmp_path: Path) -> tuple[Path, DiffusionConfig]:
    cfg = DiffusionConfig(dim=8, dim_mults=(1, 2), resolution=8)
    diffusion = build_diffusion(cfg)
    path = tmp_path / "model.pt"
    save_diffusion(path, diffusion, EMA(diffusion).ema_model, cfg)
    return path, cfg


def test_round_trip(tmp_path: Path) -> None:
    path, _ = small(tmp_path)
    loaded = load_diffusion(path)
    assert not loaded.training
    assert isinstance(loaded.model(torch.rand(1, 3, 8, 8), torch.tensor([3])), torch.Tensor)


def test_model_of_another_library_version_is_refused(tmp_path: Path) -> None:
    path, _ = small(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["library"]  # as written before the version was recorded (2.x Unet)
    torch.save(ckpt, path)
    with pytest.raises(DiaError, match=r"denoising-diffusion-pytorch 2\.x .*delete it and re-run"):
        load_diffusion(path)
