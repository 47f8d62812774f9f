"""LARS optimiser and the official warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    """Momentum SGD whose per-tensor update is rescaled by the layer-wise trust ratio.

    Same semantics as torchlars wrapping SGD: with g the raw gradient of weight w,
    d = (g + wd * w) * trust_coef * ||w|| / (||g|| + wd * ||w|| + eps), the ratio being 1 when
    ||w|| or ||g|| is 0; then buf = momentum * buf + d (buf = d at the first step) and
    w -= lr * buf, without applying weight decay a second time.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coef: float = 1e-3,
        eps: float = 1e-8,
    ) -> None:
        for name, value in [
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
            ("trust_coef", trust_coef),
            ("eps", eps),
        ]:
            if value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coef": trust_coef,
            "eps": eps,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                w_norm = torch.linalg.vector_norm(p)
                g_norm = torch.linalg.vector_norm(p.grad)
                ratio = group["trust_coef"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
                update = p.grad.add(p, alpha=wd).mul_(ratio)
                if group["momentum"] != 0:
                    state = self.state[p]
                    if "momentum_buffer" in state:
                        update = state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                    else:
                        state["momentum_buffer"] = update
                p.add_(update, alpha=-group["lr"])
        return loss


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


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group (the schedule is stepped per iteration)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
