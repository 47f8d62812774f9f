"""impl: official refuses settings the official code cannot express (no snapshot needed)."""

from __future__ import annotations

import pytest

from dia.config import ContrastiveConfig, DissolveConfig, ScoreConfig
from dia.errors import DiaError
from dia.official.contrastive import check_expressible

OFFICIAL = {"impl": "official", "dissolve_source": "online"}


def test_official_settings_pass() -> None:
    check_expressible(ContrastiveConfig(**OFFICIAL), DissolveConfig(), ScoreConfig())


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
        "score.flip: 'shared'",
    ):
        assert key in message


def test_csi_ignores_dissolve_settings() -> None:
    cfg = ContrastiveConfig(**{**OFFICIAL, "method": "csi"})
    check_expressible(cfg, DissolveConfig(cache_t_stride=10), ScoreConfig())
