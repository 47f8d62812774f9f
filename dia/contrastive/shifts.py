"""The K = 4 shifting transformations S_k whose index the shift head predicts.

A shifted image is treated as a different sample (a negative in the contrastive loss),
so the views of a batch are laid out k-major: the k = 0 copies of all B images, then k = 1, ...
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

NUM_SHIFTS = 4


def _check_index(k: int) -> None:
    if not 0 <= k < NUM_SHIFTS:
        raise ValueError(f"shift index must be in [0, {NUM_SHIFTS}), got {k}")


def rotate(x: Tensor, k: int) -> Tensor:
    """Rotate by k quarter turns over (H, W) (the ``rotation`` shift)."""
    _check_index(k)
    return torch.rot90(x, k, dims=(-2, -1))


def cut_perm(x: Tensor, k: int) -> Tensor:
    """Swap the top/bottom halves if k // 2 and the left/right halves if k % 2 (``perm`` shift)."""
    _check_index(k)
    height, width = x.shape[-2:]
    if k // 2:
        x = torch.cat((x[..., height // 2 :, :], x[..., : height // 2, :]), dim=-2)
    if k % 2:
        x = torch.cat((x[..., width // 2 :], x[..., : width // 2]), dim=-1)
    return x


SHIFTS: dict[str, Callable[[Tensor, int], Tensor]] = {"rotation": rotate, "perm": cut_perm}


def shift_all(x: Tensor, kind: str) -> Tensor:
    """Concatenate S_0(x), ..., S_3(x) along the batch axis, k-major."""
    if kind not in SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; expected one of {sorted(SHIFTS)}")
    shift = SHIFTS[kind]
    return torch.cat([shift(x, k) for k in range(NUM_SHIFTS)])


def shift_labels(
    batch_size: int, n_branches: int, device: torch.device | str | None = None
) -> Tensor:
    """Shift targets [0]*B, [1]*B, [2]*B, [3]*B repeated per branch."""
    labels = torch.arange(NUM_SHIFTS, device=device).repeat_interleave(batch_size)
    return labels.repeat(n_branches)
