"""Pretrained ImageNet backbones of the baselines, loaded by their standard weight names.

torchvision weights live in ``$TORCH_HOME/hub/checkpoints/<file>`` and timm weights in the
Hugging Face cache, exactly where those libraries look, so weights staged by hand on an offline
cluster are found without a download. When they are neither cached nor downloadable the run stops
naming the file and where to put it; it never falls back to random weights. ``pretrained=False``
(tests, the CPU demo) builds the same network with random weights and says so in meta files.
"""

from __future__ import annotations

from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from dia.errors import DiaError

# The ImageNet statistics every official baseline normalises its inputs with (torchvision's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register_imagenet_stats(module: nn.Module, mean: str = "mean", std: str = "std") -> None:
    """Give ``module`` non-persistent (1, 3, 1, 1) buffers ``mean`` and ``std``: they follow
    the module's device without entering its checkpoints."""
    module.register_buffer(mean, torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    module.register_buffer(std, torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)


# torchvision builder -> the weights the official baseline code loads (all ImageNet-1k V1)
TORCHVISION_WEIGHTS = {
    "vgg16": "VGG16_Weights",
    "wide_resnet50_2": "Wide_ResNet50_2_Weights",
    "resnet18": "ResNet18_Weights",
    "resnet152": "ResNet152_Weights",
}


def torchvision_backbone(name: str, *, pretrained: bool) -> nn.Module:
    """torchvision model ``name`` with its IMAGENET1K_V1 weights (or random ones)."""
    import torchvision.models as models

    if name not in TORCHVISION_WEIGHTS:
        raise DiaError(
            f"unknown torchvision backbone {name!r}; use {', '.join(TORCHVISION_WEIGHTS)}"
        )
    builder = getattr(models, name)
    if not pretrained:
        return builder(weights=None)
    weights = getattr(models, TORCHVISION_WEIGHTS[name]).IMAGENET1K_V1
    try:
        return builder(weights=weights)
    except (URLError, OSError, RuntimeError) as exc:
        filename = weights.url.rsplit("/", 1)[-1]
        cache = f"{torch.hub.get_dir()}/checkpoints"
        raise DiaError(
            f"pretrained weights {filename} ({name}, ImageNet) are not in {cache} and could not "
            f"be downloaded ({_reason(exc)}); download {weights.url} into that folder (or point "
            f"TORCH_HOME at a folder whose hub/checkpoints holds it) and re-run"
        ) from exc


def timm_backbone(name: str, *, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm model ``name``, its pretrained tag included (e.g. ``.orig_in21k_ft_in1k``)."""
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or not pretrained:
            raise DiaError(f"timm cannot build {name!r}: {_reason(exc)}") from exc
        raise _missing_timm(name, exc) from exc
    except (OSError, URLError, ValueError) as exc:
        if not pretrained:
            raise
        raise _missing_timm(name, exc) from exc


def _missing_timm(name: str, exc: BaseException) -> DiaError:
    from huggingface_hub.constants import HF_HUB_CACHE
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) or name
    return DiaError(
        f"pretrained weights of {name} (Hugging Face repo {repo}) are not in {HF_HUB_CACHE} and "
        f"could not be downloaded ({_reason(exc)}); run `hf download {repo}` on a machine with "
        f"internet and copy its cache there (or set HF_HUB_CACHE), then re-run"
    )


def _reason(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "reason", None) or exc).split())[:200]
