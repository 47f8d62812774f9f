"""Stage configs: presets and per-resolution settings."""

from __future__ import annotations

import pytest
import yaml

from dia.config import DiffusionConfig
from dia.plan import Plan
from dia.sections import resolve
from tests.conftest import ROOT


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


def test_uniad_cifar_preset_is_the_official_cifar_config_beside_the_mvtec_default() -> None:
    """config/uniad_cifar.yaml adds `uniad_cifar` with the official CIFAR-10 settings; the
    default `uniad` keeps the MVTec-AD ones (config/README.md, "UniAD's settings")."""
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    extra = yaml.safe_load((ROOT / "config" / "uniad_cifar.yaml").read_text())
    plan = Plan({**base, "methods": {**base["methods"], **extra["methods"]}})
    cifar = resolve("uniad", base["preset"], plan.layers("sarscov2", "uniad_cifar"))
    mvtec = resolve("uniad", base["preset"], plan.layers("sarscov2", "uniad"))
    assert (cifar.outlayers, cifar.batch_size, cifar.image_score) == ((1, 2, 3, 4, 5), 16, "mean")
    assert (mvtec.outlayers, mvtec.batch_size, mvtec.image_score) == ((1, 2, 3, 4), 8, "max")
    assert cifar.replace(outlayers=(1, 2, 3, 4), batch_size=8, image_score="max") == mvtec
    small = resolve("uniad", base["preset"], plan.layers("pneumoniamnist", "uniad_cifar"))
    assert small.image_size == 128  # the dataset's size still applies
