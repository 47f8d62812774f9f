"""Checks every baseline's tests share: smooth 'normal' images, loss curves, score orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dia.baselines.base import BaselineModel, fit_baseline, score_images
from dia.data.prepare import ImageBatches


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth horizontal/vertical colour gradients, uint8 (n, size, size, 3): the normal class."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)
    out = np.empty((n, size, size, 3))
    for i in range(n):
        a, b = rng.uniform(0.2, 0.8, 2)
        base = 0.5 + 0.25 * (a * ramp[None, :] + b * ramp[:, None] - (a + b) / 2)
        out[i] = base[..., None] * rng.uniform(0.8, 1.2, 3)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def fixed_batch_losses(model: BaselineModel, x: torch.Tensor, steps: int) -> list[float]:
    """Losses of ``steps`` optimisation steps on the same batch, with the model's optimiser."""
    opt, _ = model.make_optimizer()
    rng = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        loss = model.training_loss(x, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def mean_scores(model: BaselineModel, normal: np.ndarray, square: slice) -> dict[str, float]:
    """Mean anomaly score of held-out normals, the same with strong noise, and with a bright
    square at ``square`` (rows and columns), for orientation checks."""
    noisy = normal.astype(float) + np.random.default_rng(5).normal(0, 60, normal.shape)
    bright = normal.copy()
    bright[:, square, square] = 255
    images = {"normal": normal, "noisy": np.clip(noisy, 0, 255).astype(np.uint8), "square": bright}
    return {
        name: float(score_images(model, ImageBatches(a), batch_size=6, device="cpu").mean())
        for name, a in images.items()
    }


def fit_and_score(model: BaselineModel, state_dir: Path) -> np.ndarray:
    """Train with the shared loop (seed 7) on smooth 28 px images, then score five others."""
    train = ImageBatches(smooth_images(8, 28, 1))
    fit_baseline(model, train, seed=7, device="cpu", state_dir=state_dir)
    model.eval()
    model.fit_scoring(train, "cpu")
    return score_images(model, ImageBatches(smooth_images(5, 28, 2)), batch_size=3, device="cpu")
