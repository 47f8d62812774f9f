"""The official optimiser (LARS) and its warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from timm.optim import Lars

from dia.config import ContrastiveConfig


def lars(params: Iterable[torch.Tensor], cfg: ContrastiveConfig) -> torch.optim.Optimizer:
    """The official LARS: torchlars' rule around momentum SGD, as timm's ``Lars`` with
    ``always_adapt`` computes it (torchlars' CUDA extension does not build on current CUDA).

    With g the raw gradient of weight w, d = (g + wd * w) * trust_coef * ||w|| / (||g|| +
    wd * ||w|| + eps), the ratio being 1 when ||w|| or ||g|| is 0; then buf = momentum * buf + d
    and w -= lr * buf, weight decay applied once.
    """
    return Lars(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        trust_coeff=cfg.lars_trust_coef,
        always_adapt=True,
    )


def warmup_cosine_lr(
    epoch: float,
    *,
    base_lr: float,
    warmup_epochs: float,
    warmup_multiplier: float,
    total_epochs: float,
) -> float:
    """Learning rate at fractional epoch ``epoch`` (GradualWarmupScheduler + CosineAnnealingLR).

    Linear warm-up from ``base_lr`` to the peak ``base_lr * warmup_multiplier`` over
    ``warmup_epochs``, then cosine decay from the peak. As in the official code the cosine period
    is ``total_epochs``, not ``total_epochs - warmup_epochs``, so the rate does not reach 0 at the
    last epoch. Without warm-up it is a plain cosine from the peak.
    """
    if epoch < 0 or warmup_epochs < 0 or total_epochs <= 0 or warmup_multiplier < 1:
        raise ValueError(
            "need epoch >= 0, warmup_epochs >= 0, total_epochs > 0 and warmup_multiplier >= 1, "
            f"got {epoch}, {warmup_epochs}, {total_epochs}, {warmup_multiplier}"
        )
    if epoch < warmup_epochs:
        return base_lr * ((warmup_multiplier - 1) * epoch / warmup_epochs + 1)
    peak = base_lr * warmup_multiplier
    return peak * 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / total_epochs))


def step_position(epoch: int, batch: int, *, trained: int, per_pass: int) -> float:
    """The fractional epoch whose rate step ``batch`` of ``epoch`` (both from 0) trains at.

    The official loop steps its scheduler after iteration n of an epoch to epoch + n / len(loader)
    (``per_pass`` batches, uncapped), so each iteration trains at the position its predecessor
    set. The first iteration of an epoch follows the previous epoch's last one, which is
    ``trained - 1`` when the epoch is capped below a pass.
    """
    if batch == 0:
        epoch, batch = epoch - 1, trained
    return max(0.0, epoch + (batch - 1) / per_pass)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group (the schedule is stepped per iteration)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
