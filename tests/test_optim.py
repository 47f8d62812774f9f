from __future__ import annotations

import math

import pytest
import torch

from dia.config import ContrastiveConfig
from dia.contrastive.optim import lars, set_lr, warmup_cosine_lr


def make_lars(params, **overrides: float) -> torch.optim.Optimizer:
    cfg = ContrastiveConfig(**{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-6, **overrides})
    return lars(params, cfg)


def step_with_grad(opt: torch.optim.Optimizer, p: torch.Tensor, grad: list[float]) -> None:
    p.grad = torch.tensor(grad, dtype=p.dtype)
    opt.step()


def test_lars_matches_hand_computation_with_momentum() -> None:
    p = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    lr, mom, wd, tc, eps = 0.5, 0.9, 0.1, 0.01, 1e-8
    opt = make_lars([p], lr=lr, momentum=mom, weight_decay=wd, lars_trust_coef=tc)
    # Step 1: ||w|| = 5, g = (0, 2), ||g|| = 2.
    ratio1 = tc * 5 / (2 + wd * 5 + eps)
    d1 = torch.tensor([0.3, 2.4], dtype=torch.float64) * ratio1
    w1 = torch.tensor([3.0, 4.0], dtype=torch.float64) - lr * d1
    step_with_grad(opt, p, [0.0, 2.0])
    torch.testing.assert_close(p.detach(), w1)
    # Step 2: g = (1, 0); buffer = mom * d1 + d2.
    w_norm = w1.norm().item()
    ratio2 = tc * w_norm / (1 + wd * w_norm + eps)
    d2 = (torch.tensor([1.0, 0.0], dtype=torch.float64) + wd * w1) * ratio2
    step_with_grad(opt, p, [1.0, 0.0])
    torch.testing.assert_close(p.detach(), w1 - lr * (mom * d1 + d2))


def test_lars_zero_norms_use_unit_ratio() -> None:
    p = torch.zeros(3, requires_grad=True)
    opt = make_lars([p], lr=0.1, momentum=0.0, weight_decay=0.5)
    step_with_grad(opt, p, [1.0, -2.0, 0.0])
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1, 0.2, 0.0]))
    q = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = make_lars([q], lr=0.1, momentum=0.0, weight_decay=0.5)
    step_with_grad(opt, q, [0.0, 0.0])
    torch.testing.assert_close(q.detach(), torch.tensor([0.95, 1.9]))


def test_lars_skips_parameters_without_grad() -> None:
    p = torch.ones(2, requires_grad=True)
    make_lars([p]).step()
    assert torch.equal(p.detach(), torch.ones(2))


def test_warmup_cosine_official_defaults() -> None:
    kw = {"base_lr": 0.1, "warmup_epochs": 10, "warmup_multiplier": 10, "total_epochs": 1000}
    assert warmup_cosine_lr(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine_lr(5, **kw) == pytest.approx(0.55)
    assert warmup_cosine_lr(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine_lr(510, **kw) == pytest.approx(0.5)
    assert warmup_cosine_lr(1000, **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert warmup_cosine_lr(1010, **kw) == pytest.approx(0.0, abs=1e-12)


def test_cosine_without_warmup_starts_at_peak() -> None:
    kw = {"base_lr": 0.1, "warmup_epochs": 0, "warmup_multiplier": 10, "total_epochs": 100}
    assert warmup_cosine_lr(0, **kw) == pytest.approx(1.0)
    assert warmup_cosine_lr(50, **kw) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        warmup_cosine_lr(0, **{**kw, "warmup_multiplier": 0.5})


def test_set_lr_updates_every_group() -> None:
    a, b = torch.ones(1, requires_grad=True), torch.ones(1, requires_grad=True)
    opt = make_lars([{"params": [a]}, {"params": [b], "lr": 0.5}])
    set_lr(opt, 0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]


def reference_lars_step(params: list[torch.Tensor], buffers: dict, lr: float) -> None:
    """The update this package computed by hand before it used timm's ``Lars``: the same trust
    ratio and momentum, written out, so the switch provably changes no trained weight."""
    wd, trust, eps, momentum = 1e-6, 1e-3, 1e-8, 0.9
    with torch.no_grad():
        for i, p in enumerate(params):
            w_norm = torch.linalg.vector_norm(p)
            g_norm = torch.linalg.vector_norm(p.grad)
            ratio = trust * w_norm / (g_norm + wd * w_norm + eps)
            ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
            update = p.grad.add(p, alpha=wd).mul_(ratio)
            if i in buffers:
                update = buffers[i].mul_(momentum).add_(update)
            else:
                buffers[i] = update
            p.add_(update, alpha=-lr)


def test_lars_update_equals_the_former_hand_written_one_bit_for_bit() -> None:
    """20 float32 steps of a small network with a zero-norm parameter and a changing LR."""

    def run(use_lars: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        torch.nn.init.zeros_(net[0].bias)
        params = list(net.parameters())
        opt = make_lars(params) if use_lars else None
        buffers: dict = {}
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
        for step in range(20):
            lr = 0.1 + 0.01 * step
            for p in params:
                p.grad = None
            net(x).square().sum().backward()
            if opt is None:
                reference_lars_step(params, buffers, lr)
            else:
                set_lr(opt, lr)
                opt.step()
        return [p.detach().clone() for p in params]

    for ours, reference in zip(run(True), run(False), strict=True):
        assert torch.equal(ours, reference)
