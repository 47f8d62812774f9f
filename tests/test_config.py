"""Stage configs: presets and per-resolution settings."""

from __future__ import annotations

import pytest

from dia.config import DiffusionConfig, resolve


@pytest.mark.parametrize(
    ("preset", "expected"), [("dia_code", (256, 256, 256)), ("dia_paper", (256, 128, 32))]
)
def test_diffusion_batch_per_resolution(preset: str, expected: tuple[int, ...]) -> None:
    """The paper trains with 256/128/32 at 32/64/128 px, the official code with 256 throughout."""
    cfg = resolve("diffusion", preset, [])
    batches = tuple(cfg.at_resolution(r).batch_size for r in (32, 64, 128))
    assert batches == expected
    assert cfg.at_resolution(128).resolution == 128


def test_yaml_pairs_become_hashable_tuples() -> None:
    cfg = DiffusionConfig.from_dict({"batch_by_resolution": [[64, 8]]})
    assert cfg.batch_by_resolution == ((64, 8),) and hash(cfg)
    assert cfg.at_resolution(64).batch_size == 8
