"""NT-Xent for CSI and the feature-amplified NT-Xent of DIA.

Views are laid out branch-major, then shift-major: flat index = b * N + k * B + i, with branches
O, O' (and A, the dissolved one, for DIA), N = K * B. Anchors are the O and O' views; the positive
of (0, k, i) is (1, k, i) and vice versa. Other shifts of the same image are negatives (CSI).
DIA adds the dissolved views A as extra negatives, except the anchor's own dissolved twin
(2, k, i), which is masked out of the denominator: a dissolved copy of the same image with the
same shift is too similar to push away, while every other dissolved view is a hard negative that
forces the encoder to rely on the fine details dissolving removed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-8


def blocked_mask(n: int, n_branches: int, device: torch.device | None = None) -> torch.Tensor:
    """(S, S) boolean mask of the pairs excluded from every denominator, S = n_branches * n."""
    s = n_branches * n
    mask = torch.eye(s, dtype=torch.bool, device=device)
    if n_branches == 3:
        idx = torch.arange(n, device=device)
        for b in (0, 1):
            mask[b * n + idx, 2 * n + idx] = True
            mask[2 * n + idx, b * n + idx] = True
    return mask


def contrastive_loss(
    z: torch.Tensor, *, n_branches: int, temperature: float = 0.5, normalizer: str = "all_views"
) -> torch.Tensor:
    """Loss over projections ``z`` (S, d), S = n_branches * N, in the layout above.

    ``normalizer``: ``all_views`` divides the sum of the 2N anchor terms by S (official code:
    3N for DIA, 2N for CSI); ``anchors`` divides by the number of anchor terms, 2N.
    """
    if n_branches not in (2, 3):
        raise ValueError("n_branches must be 2 (CSI) or 3 (DIA)")
    s = z.shape[0]
    n = s // n_branches
    zn = z / (z.norm(dim=1, keepdim=True) + _EPS)
    sim = torch.exp(zn[: 2 * n] @ zn.T / temperature)
    sim = sim.masked_fill(blocked_mask(n, n_branches, z.device)[: 2 * n], 0.0)
    anchors = torch.arange(2 * n, device=z.device)
    positives = (anchors + n) % (2 * n)
    ratio = sim[anchors, positives] / (sim.sum(dim=1) + _EPS)
    total = -torch.log(ratio + _EPS).sum()
    return total / (s if normalizer == "all_views" else 2 * n)


def shift_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the shift classifier over every view, dissolved ones included (Eq. 8)."""
    return F.cross_entropy(logits, labels)
