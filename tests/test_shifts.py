from __future__ import annotations

import pytest
import torch

from dia.contrastive.shifts import NUM_SHIFTS, SHIFTS, cut_perm, rotate, shift_all, shift_labels

GRID = torch.arange(16).view(1, 1, 4, 4)


def rows(*values: list[int]) -> torch.Tensor:
    return torch.tensor(values).view(1, 1, 4, 4)


def test_rotate_quarter_turn_matches_hand_example() -> None:
    expected = rows([3, 7, 11, 15], [2, 6, 10, 14], [1, 5, 9, 13], [0, 4, 8, 12])
    assert torch.equal(rotate(GRID, 1), expected)
    assert torch.equal(rotate(GRID, 2), GRID.flip(-1).flip(-2))


def test_cut_perm_matches_hand_examples() -> None:
    left_right = rows([2, 3, 0, 1], [6, 7, 4, 5], [10, 11, 8, 9], [14, 15, 12, 13])
    top_bottom = rows([8, 9, 10, 11], [12, 13, 14, 15], [0, 1, 2, 3], [4, 5, 6, 7])
    both = rows([10, 11, 8, 9], [14, 15, 12, 13], [2, 3, 0, 1], [6, 7, 4, 5])
    assert torch.equal(cut_perm(GRID, 0), GRID)
    assert torch.equal(cut_perm(GRID, 1), left_right)
    assert torch.equal(cut_perm(GRID, 2), top_bottom)
    assert torch.equal(cut_perm(GRID, 3), both)


def test_shifts_are_distinct_permutations() -> None:
    for shift in SHIFTS.values():
        copies = [shift(GRID, k) for k in range(NUM_SHIFTS)]
        for out in copies:
            assert torch.equal(out.flatten().sort().values, GRID.flatten())
        assert len({tuple(c.flatten().tolist()) for c in copies}) == NUM_SHIFTS


def test_rotation_has_period_four_and_cut_perm_is_an_involution() -> None:
    x = torch.rand(2, 3, 6, 6)
    y = x
    for _ in range(4):
        y = rotate(y, 1)
    assert torch.equal(y, x)
    assert torch.equal(rotate(rotate(x, 1), 3), x)
    for k in range(NUM_SHIFTS):
        assert torch.equal(cut_perm(cut_perm(x, k), k), x)
    assert torch.equal(cut_perm(cut_perm(x, 1), 2), cut_perm(x, 3))


@pytest.mark.parametrize("kind", sorted(SHIFTS))
def test_shift_all_is_k_major(kind: str) -> None:
    x = torch.rand(3, 3, 4, 4)
    out = shift_all(x, kind)
    assert out.shape == (12, 3, 4, 4)
    for k in range(NUM_SHIFTS):
        assert torch.equal(out[3 * k : 3 * (k + 1)], SHIFTS[kind](x, k))


def test_shift_labels_layout() -> None:
    labels = shift_labels(2, 3)
    assert labels.dtype == torch.long
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] * 3


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown shift"):
        shift_all(GRID, "blur")
    with pytest.raises(ValueError, match="shift index"):
        cut_perm(GRID, 4)
    with pytest.raises(ValueError, match="shift index"):
        rotate(GRID, -1)
