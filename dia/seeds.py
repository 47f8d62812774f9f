"""Independent random streams of one run, all derived from its seed.

A run's weights start from the global torch RNG seeded with the run's seed, as the official code
seeds it. The draws the pipeline makes itself (batch order, dissolving steps, augmentations) come
from generators with streams of their own: seeding them with the seed itself would replay the
initialisation's numbers, and with ``seed + 1`` the next seed's.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def stream_seed(seed: int, purpose: str) -> int:
    """The seed of ``purpose``'s stream in the run seeded ``seed`` (a 64-bit SeedSequence draw)."""
    if seed < 0:
        raise ValueError(f"seeds must be >= 0, got {seed}")
    sequence = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(purpose.encode()),))
    return int(sequence.generate_state(1, np.uint64)[0])


def generator(seed: int, purpose: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` drawing ``purpose``'s stream of the run seeded ``seed``."""
    return torch.Generator(device).manual_seed(stream_seed(seed, purpose))
