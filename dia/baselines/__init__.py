"""Table 1's baselines besides CSI, each behind :class:`~dia.baselines.base.BaselineModel`.

Modules (and torch) are imported only when a baseline's config or model is needed, so
``dia.config`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dia.baselines.base import BaselineModel

# config key (method `model` and config section) -> (module, model class); the config class is
# the model class's name + "Config", and the key is that name in lower case
BASELINES: dict[str, tuple[str, str]] = {
    "kdad": ("dia.baselines.kdad", "KDAD"),
    "transformaly": ("dia.baselines.transformaly", "Transformaly"),
    "rd4ad": ("dia.baselines.rd4ad", "RD4AD"),
    "uniad": ("dia.baselines.uniad", "UniAD"),
    "meanshift": ("dia.baselines.meanshift", "MeanShift"),
}


def config_class(name: str) -> Any:
    """The frozen config dataclass of baseline ``name`` (official defaults)."""
    module, cls = BASELINES[name]
    return getattr(import_module(module), f"{cls}Config")


def build_baseline(name: str, cfg: Any) -> BaselineModel:
    """A fresh model of baseline ``name`` for the resolved config ``cfg``."""
    module, cls = BASELINES[name]
    return getattr(import_module(module), cls)(cfg)
