"""bf16 autocast: every trained network runs in it, results stay float32 and close to fp32, and
the official code, which has no such switch, refuses it."""

from __future__ import annotations

import pytest
import torch

from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig, ScoreConfig
from dia.contrastive.train import Trainer
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import build_diffusion
from dia.diffusion.train import _Run
from dia.errors import DiaError
from dia.official.contrastive import check_expressible
from dia.precision import autocast


def test_autocast_is_a_no_op_for_fp32_and_rejects_other_names() -> None:
    x = torch.ones(2, 2)
    with autocast("cpu", "fp32"):
        assert (x @ x).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp32 or bf16"):
        autocast("cpu", "fp16")


def contrastive_cfg(precision: str) -> ContrastiveConfig:
    return ContrastiveConfig(
        method="csi", image_size=16, width=8, batch_size=4, precision=precision
    )


def test_a_bf16_training_step_keeps_float32_weights_and_a_close_loss() -> None:
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(contrastive_cfg(precision), images, dissolve=None, seed=0)
        losses[precision] = trainer.train_step(torch.arange(4), 0, 0)["loss"].item()
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_bf16_dissolving_returns_float32_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = build_diffusion(DiffusionConfig(dim=8, dim_mults=(1, 2), resolution=16)).eval()
    x, t = torch.rand(3, 3, 16, 16), torch.tensor([30, 60, 90])
    out = {
        precision: Dissolver(
            model, DissolveConfig(resolution=16, precision=precision), image_size=16
        )(x, t)
        for precision in ("fp32", "bf16")
    }
    assert out["bf16"].dtype == torch.float32
    assert (out["bf16"] - out["fp32"]).abs().max() < 0.1
    assert not torch.equal(out["bf16"], out["fp32"])


def test_a_bf16_diffusion_step_has_a_finite_loss() -> None:
    cfg = DiffusionConfig(dim=8, dim_mults=(1, 2), resolution=16, batch_size=4, grad_accum=1)
    run = _Run(cfg.replace(precision="bf16"), seed=0, device="cpu")
    loss = run.train_step(torch.rand(6, 3, 16, 16))
    assert torch.isfinite(loss) and run.step == 1


def test_the_official_code_refuses_bf16() -> None:
    cfg = contrastive_cfg("bf16").replace(width=64)
    with pytest.raises(DiaError, match=r"contrastive\.precision: 'bf16' \(official: 'fp32'\)"):
        check_expressible(cfg, DissolveConfig(), ScoreConfig())
