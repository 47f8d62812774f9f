from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dia.contrastive.loss import blocked_mask, contrastive_loss, shift_loss

TAU = 0.5
EPS = 1e-8


def hand_terms(z: torch.Tensor, n_branches: int, tau: float = TAU) -> list[float]:
    """Per-anchor terms l(r -> p), r = 0..2N-1, with explicit loops.

    View v = (b, k, i) sits at flat index b * N + k * B + i; only the within-branch offset
    j = k * B + i matters here. Anchors are O (b = 0) and O' (b = 1); the positive of (0, j) is
    (1, j) and vice versa. The denominator D(r) holds every column c != r, and for DIA (three
    branches) not the anchor's own dissolved twin (2, j).
    """
    z = z.double()
    s = z.shape[0]
    n = s // n_branches
    unit = [z[c] / (math.sqrt(sum(float(v) ** 2 for v in z[c])) + EPS) for c in range(s)]

    def e(r: int, c: int) -> float:
        return math.exp(
            sum(float(a) * float(b) for a, b in zip(unit[r], unit[c], strict=True)) / tau
        )

    terms = []
    for b in (0, 1):
        for j in range(n):
            r = b * n + j
            p = (1 - b) * n + j
            denominator = 0.0
            for c in range(s):
                if c == r:
                    continue
                if n_branches == 3 and c == 2 * n + j:
                    continue
                denominator += e(r, c)
            terms.append(-math.log(e(r, p) / (denominator + EPS) + EPS))
    return terms


def hand_loss(z: torch.Tensor, n_branches: int, normalizer: str) -> float:
    n = z.shape[0] // n_branches
    total = sum(hand_terms(z, n_branches))
    return total / (n_branches * n if normalizer == "all_views" else 2 * n)


@pytest.fixture
def z3() -> torch.Tensor:
    """DIA batch: N = 4 (e.g. K = 4, B = 1 or K = 2, B = 2), d = 3, so S = 12."""
    return torch.randn(12, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture
def z2() -> torch.Tensor:
    """CSI batch: N = 4, d = 3, so S = 8."""
    return torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_blocked_mask_csi_is_identity() -> None:
    assert torch.equal(blocked_mask(2, 2), torch.eye(4, dtype=torch.bool))


def test_blocked_mask_dia_matches_hand_matrix() -> None:
    """n = 2: views O0 O1 | O'0 O'1 | A0 A1 (indices 0-5). Masked: the diagonal, and
    (O_j, A_j), (A_j, O_j), (O'_j, A_j), (A_j, O'_j) for j = 0, 1. Nothing else, in particular
    not (O_j, O'_j) (positives) and not (A_0, A_1)."""
    o, x = True, False
    expected = torch.tensor(
        [
            # O0 O1 O'0 O'1 A0 A1
            [o, x, x, x, o, x],  # O0
            [x, o, x, x, x, o],  # O1
            [x, x, o, x, o, x],  # O'0
            [x, x, x, o, x, o],  # O'1
            [o, x, o, x, o, x],  # A0
            [x, o, x, o, x, o],  # A1
        ]
    )
    assert torch.equal(blocked_mask(2, 3), expected)


@pytest.mark.parametrize("normalizer", ["all_views", "anchors"])
def test_dia_loss_matches_hand_formula(z3: torch.Tensor, normalizer: str) -> None:
    got = contrastive_loss(z3, n_branches=3, temperature=TAU, normalizer=normalizer)
    assert got.item() == pytest.approx(hand_loss(z3, 3, normalizer), rel=1e-12, abs=1e-12)


def test_dia_normalizers_differ_by_two_thirds(z3: torch.Tensor) -> None:
    """all_views divides the 2N anchor terms by 3N, anchors by 2N."""
    all_views = contrastive_loss(z3, n_branches=3, normalizer="all_views")
    anchors = contrastive_loss(z3, n_branches=3, normalizer="anchors")
    assert all_views.item() == pytest.approx(anchors.item() * 2 / 3, rel=1e-12)
    assert anchors.item() == pytest.approx(sum(hand_terms(z3, 3)) / 8, rel=1e-12)


@pytest.mark.parametrize("normalizer", ["all_views", "anchors"])
def test_csi_loss_matches_hand_formula(z2: torch.Tensor, normalizer: str) -> None:
    got = contrastive_loss(z2, n_branches=2, temperature=TAU, normalizer=normalizer)
    # Both normalizers divide by 2N for CSI.
    assert got.item() == pytest.approx(sum(hand_terms(z2, 2)) / 8, rel=1e-12)


def test_temperature_is_used(z2: torch.Tensor) -> None:
    got = contrastive_loss(z2, n_branches=2, temperature=0.2)
    n = 4
    z = F.normalize(z2, dim=1)
    logits = (z @ z.T / 0.2).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = (torch.arange(2 * n) + n) % (2 * n)
    assert got.item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


def test_csi_equals_standard_nt_xent() -> None:
    """Independent NT-Xent: cross-entropy over the masked cosine logits, target = the twin."""
    z = torch.randn(16, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    n = 8
    zn = F.normalize(z, dim=1)
    logits = (zn @ zn.T / TAU).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    expected = F.cross_entropy(logits, target)
    got = contrastive_loss(z, n_branches=2, temperature=TAU)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_rows_are_not_anchors_but_get_gradient(z3: torch.Tensor) -> None:
    """A views only appear as denominator columns: the loss is the hand sum over the 2N O/O'
    anchors (already checked), and yet each A embedding receives a gradient."""
    z = z3.clone().requires_grad_(True)
    loss = contrastive_loss(z, n_branches=3)
    assert loss.item() == pytest.approx(hand_loss(z3, 3, "all_views"), rel=1e-12)
    loss.backward()
    assert z.grad is not None
    assert (z.grad[8:].norm(dim=1) > 1e-6).all()


def test_twin_is_not_in_its_anchor_denominator(z3: torch.Tensor) -> None:
    """Rotating the direction of A view (2, j=1) leaves the terms of anchors (0, 1) and (1, 1)
    unchanged, changes every other anchor term, and the loss still equals the hand formula."""
    n, j = 4, 1
    perturbed = z3.clone()
    perturbed[2 * n + j] = torch.tensor([-3.0, 0.5, 2.0], dtype=torch.float64)
    before, after = hand_terms(z3, 3), hand_terms(perturbed, 3)
    for r in range(2 * n):
        if r in (j, n + j):
            assert after[r] == pytest.approx(before[r], rel=1e-14)
        else:
            assert after[r] != pytest.approx(before[r], rel=1e-9)
    got = contrastive_loss(perturbed, n_branches=3)
    assert got.item() == pytest.approx(sum(after) / (3 * n), rel=1e-12)


def test_twin_only_batch_ignores_the_dissolved_view() -> None:
    """With N = 1 the only A view is the twin of both anchors: it has no effect at all."""
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z.requires_grad_(True)
    loss = contrastive_loss(z, n_branches=3)
    loss.backward()
    assert z.grad is not None
    assert torch.equal(z.grad[2], torch.zeros(4, dtype=torch.float64))
    moved = z.detach().clone()
    moved[2] = torch.tensor([5.0, -1.0, 0.0, 2.0])
    assert contrastive_loss(moved, n_branches=3).item() == loss.item()
    # Only the positive is in each denominator: l = -log(1 / (1 + eps) + eps) ~ 0.
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_dia_differs_from_naive_mask(z3: torch.Tensor) -> None:
    """The twin mask matters: the 'naive' identity-only mask gives another value."""
    n = 4
    zn = F.normalize(z3, dim=1)
    sim = torch.exp(zn[: 2 * n] @ zn.T / TAU) * (1 - torch.eye(3 * n, dtype=torch.float64)[: 2 * n])
    pos = (torch.arange(2 * n) + n) % (2 * n)
    naive = -torch.log(sim[torch.arange(2 * n), pos] / sim.sum(1)).sum() / (3 * n)
    got = contrastive_loss(z3, n_branches=3)
    assert got.item() < naive.item() - 1e-6


def test_loss_rejects_bad_branch_count() -> None:
    with pytest.raises(ValueError, match="n_branches"):
        contrastive_loss(torch.randn(4, 3), n_branches=4)


def test_shift_loss_is_mean_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 3])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 3)) + math.log(4)) / 2
    assert shift_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
