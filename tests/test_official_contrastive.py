"""impl: official refuses settings the official code cannot express, and its in-training
evaluations leave the training draws alone (no snapshot needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from dia.config import ContrastiveConfig, DissolveConfig, ScoreConfig
from dia.errors import DiaError
from dia.official.contrastive import _aside, check_expressible, seed_everything

OFFICIAL = {"impl": "official", "dissolve_source": "online"}


def test_official_settings_pass() -> None:
    check_expressible(ContrastiveConfig(**OFFICIAL), DissolveConfig(flip="before"), ScoreConfig())


def test_inexpressible_settings_are_named_together() -> None:
    cfg = ContrastiveConfig(**OFFICIAL, width=32, temperature=0.2, loss_normalizer="anchors")
    with pytest.raises(DiaError) as error:
        check_expressible(cfg, DissolveConfig(cache_t_stride=10), ScoreConfig(flip="shared"))
    message = str(error.value)
    for key in (
        "contrastive.width: 32",
        "contrastive.temperature: 0.2",
        "contrastive.loss_normalizer: 'anchors'",
        "dissolve.cache_t_stride: 10",
        "dissolve.flip: 'after'",
        "score.flip: 'shared'",
    ):
        assert key in message


def test_csi_ignores_dissolve_settings() -> None:
    cfg = ContrastiveConfig(**{**OFFICIAL, "method": "csi"})
    check_expressible(cfg, DissolveConfig(cache_t_stride=10), ScoreConfig())


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_an_evaluation_leaves_the_global_rngs_as_it_found_them() -> None:
    def reseeding(_model: nn.Module) -> dict[str, np.ndarray]:
        """As the official evaluation: every sample drawn after set_random_seed(s)."""
        seed_everything(0)
        return {"val": torch.rand(3).numpy()}

    seed_everything(5)
    expected = draws()
    seed_everything(5)
    scores = _aside(reseeding, nn.Identity())
    assert draws() == expected
    assert scores["val"].shape == (3,)
