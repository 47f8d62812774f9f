"""Official code for the parity tests: each repository from ``$DIA_OFFICIAL_REPOS``, verified
against its pin in config/config.yaml. Without the variable or the repository the tests skip with
one line; a snapshot at another commit fails, naming the digests."""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from dia.errors import DiaError
from dia.official.imports import ENV_VAR, import_official, snapshot
from dia.official.repos import pinned_repos
from tests.conftest import ROOT

PINS = pinned_repos(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


def official_folder(key: str) -> Path:
    repo = PINS[key]
    try:
        return snapshot(repo)
    except DiaError as exc:
        if "not set" in str(exc) or "not found" in str(exc):
            pytest.skip(
                f"no snapshot of {key}: set {ENV_VAR} (README, Parity with the official code)"
            )
        raise


def importer(key: str) -> Callable[..., dict[str, types.ModuleType]]:
    folder = official_folder(key)
    return lambda *modules: import_official(folder, *modules)


@pytest.fixture(scope="session")
def dia_official() -> Callable[..., dict[str, types.ModuleType]]:
    return importer("shijianjian__DIA")


@pytest.fixture(scope="session")
def csi_official() -> Callable[..., dict[str, types.ModuleType]]:
    return importer("alinlab__CSI")


def randomise_batch_norms(*modules: nn.Module) -> None:
    """Random affine parameters and running statistics, so that eval mode is not an identity."""
    gen = torch.Generator().manual_seed(11)
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.data = 0.5 + torch.rand(n, generator=gen)
                m.bias.data = 0.1 * torch.randn(n, generator=gen)
                m.running_mean = 0.1 * torch.randn(n, generator=gen)
                m.running_var = 0.5 + torch.rand(n, generator=gen)
