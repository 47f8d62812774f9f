"""Each purpose of each seed draws its own stream."""

from __future__ import annotations

import pytest
import torch

from dia.seeds import generator, stream_seed


def first_draws(gen: torch.Generator) -> torch.Tensor:
    return torch.rand(8, generator=gen)


def test_streams_are_reproducible() -> None:
    assert torch.equal(first_draws(generator(3, "draws")), first_draws(generator(3, "draws")))


def test_no_two_purposes_or_seeds_share_a_stream() -> None:
    """Not with each other, and not with the global RNG that initialises the weights (the
    ``Generator(seed)`` / ``Generator(seed + 1)`` pattern replays those)."""
    streams = {
        ("init", seed): first_draws(torch.Generator().manual_seed(seed)) for seed in range(4)
    }
    for seed in range(4):
        for purpose in ("draws", "augment"):
            streams[(purpose, seed)] = first_draws(generator(seed, purpose))
    values = list(streams.values())
    assert all(not torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1 :])


def test_a_negative_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="seeds must be >= 0"):
        stream_seed(-1, "draws")
