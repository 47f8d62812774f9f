from __future__ import annotations

import math

import pytest
import torch

from dia.contrastive.optim import LARS, set_lr, warmup_cosine_lr


def step_with_grad(opt: torch.optim.Optimizer, p: torch.Tensor, grad: list[float]) -> None:
    p.grad = torch.tensor(grad, dtype=p.dtype)
    opt.step()


def test_lars_matches_hand_computation_with_momentum() -> None:
    p = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    lr, mom, wd, tc, eps = 0.5, 0.9, 0.1, 0.01, 1e-8
    opt = LARS([p], lr=lr, momentum=mom, weight_decay=wd, trust_coef=tc, eps=eps)
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
    opt = LARS([p], lr=0.1, momentum=0.0, weight_decay=0.5, trust_coef=1e-3)
    step_with_grad(opt, p, [1.0, -2.0, 0.0])
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1, 0.2, 0.0]))
    q = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = LARS([q], lr=0.1, momentum=0.0, weight_decay=0.5, trust_coef=1e-3)
    step_with_grad(opt, q, [0.0, 0.0])
    torch.testing.assert_close(q.detach(), torch.tensor([0.95, 1.9]))


def test_lars_equals_sgd_when_trust_ratio_is_one() -> None:
    w0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    grad = torch.tensor([[0.2, 0.1], [-0.4, 0.3]], dtype=torch.float64)
    wd = 1e-2
    trust_coef = (grad.norm() + wd * w0.norm()).item() / w0.norm().item()
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    lars = LARS([a], lr=0.3, momentum=0.9, weight_decay=wd, trust_coef=trust_coef, eps=0.0)
    sgd = torch.optim.SGD([b], lr=0.3, momentum=0.9, weight_decay=wd)
    a.grad, b.grad = grad.clone(), grad.clone()
    lars.step()
    sgd.step()
    torch.testing.assert_close(a, b)


def test_lars_skips_parameters_without_grad_and_rejects_negative_values() -> None:
    p = torch.ones(2, requires_grad=True)
    LARS([p], lr=0.1).step()
    assert torch.equal(p.detach(), torch.ones(2))
    with pytest.raises(ValueError, match="weight_decay"):
        LARS([p], lr=0.1, weight_decay=-1.0)


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
    opt = LARS([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    set_lr(opt, 0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]


def test_lars_equals_timm_lars_always_adapting() -> None:
    """An independent implementation of torchlars' rule (the official optimiser, whose CUDA
    extension does not build here): timm's Lars with always_adapt, over 20 steps of a small
    network with a zero-norm parameter, equal to 1e-12 in float64."""
    from timm.optim import Lars

    def run(make: type) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        net = net.double()
        torch.nn.init.zeros_(net[0].bias)
        opt = make(net.parameters())
        x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        for step in range(20):
            set_lr(opt, 0.1 + 0.01 * step)
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    ours = run(lambda ps: LARS(ps, lr=0.1, momentum=0.9, weight_decay=1e-6, trust_coef=1e-3))
    timm = run(
        lambda ps: Lars(
            ps, lr=0.1, momentum=0.9, weight_decay=1e-6, trust_coeff=1e-3, always_adapt=True
        )
    )
    for a, b in zip(ours, timm, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
