"""Config sections and how one is resolved: the stage sections of :mod:`dia.config` and each
baseline's own (``kdad``, ``rd4ad``, ...), built from the preset and the workflow's layers.

It sits above both :mod:`dia.config` and :mod:`dia.baselines`, whose configs subclass
:class:`~dia.config.BaselineConfig`, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dia.baselines import BASELINES, config_class
from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig, ScoreConfig, preset
from dia.errors import DiaError

SECTIONS = {
    "diffusion": DiffusionConfig,
    "dissolve": DissolveConfig,
    "contrastive": ContrastiveConfig,
    "score": ScoreConfig,
}
# Sections a config layer may hold: one per stage and one per baseline.
CONFIG_SECTIONS = (*SECTIONS, *BASELINES)


def section_class(section: str) -> Any:
    """Config dataclass of a stage section or of a baseline (``kdad``, ``rd4ad``, ...)."""
    if section in SECTIONS:
        return SECTIONS[section]
    if section in BASELINES:
        return config_class(section)
    raise DiaError(f"unknown config section {section!r}")


def resolve(section: str, preset_name: str, layers: list[Mapping[str, Any]]) -> Any:
    """Build one stage config: preset values, then each layer's ``section`` subtree in order.

    The workflow passes the layers global -> dataset -> method, so a dataset can set its input
    size and a method its own switches without repeating the rest.
    """
    cls = section_class(section)
    merged: dict[str, Any] = dict(preset(preset_name).get(section, {}))
    for layer in layers:
        merged.update((layer or {}).get(section) or {})
    return cls.from_dict(merged, where=section)
