"""Pretrained backbones: missing weights stop with the file name and where to put it."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch

from dia.baselines.backbones import timm_backbone, torchvision_backbone
from dia.errors import DiaError


def _no_network(*args: object, **kwargs: object) -> None:
    raise URLError("network unreachable (test)")


def test_missing_torchvision_weights_name_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", _no_network)
    with pytest.raises(DiaError) as err:
        torchvision_backbone("wide_resnet50_2", pretrained=True)
    message = str(err.value)
    assert "wide_resnet50_2-95faca4d.pth" in message
    assert f"{tmp_path}/hub/checkpoints" in message
    assert "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth" in message


def test_missing_timm_weights_name_the_hub_repo(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", _no_network)
    with pytest.raises(DiaError, match=r"Hugging Face repo timm/vit_tiny_patch16_224\.augreg"):
        timm_backbone("vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=True)


def test_random_weights_need_no_download(monkeypatch):
    monkeypatch.setattr(torch.hub, "urlopen", _no_network)
    model = torchvision_backbone("resnet18", pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    with pytest.raises(DiaError, match="unknown torchvision backbone 'resnet999'"):
        torchvision_backbone("resnet999", pretrained=False)
    with pytest.raises(DiaError, match="timm cannot build 'not_a_model'"):
        timm_backbone("not_a_model", pretrained=False)
