"""KDAD (multiresolution knowledge distillation): the official cloner layout, the official loss
and score formulas, frozen source, training, determinism, score orientation and the config."""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from dia.baselines import kdad
from dia.baselines.base import fit_baseline, score_images
from dia.baselines.kdad import KDAD, KDADConfig
from dia.data.prepare import ImageBatches
from dia.errors import DiaError
from tests.baseline_checks import (
    fit_and_score,
    fixed_batch_losses,
    mean_scores,
    smooth_images,
)


@functools.cache
def _vgg16_features() -> nn.Sequential:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).features


@pytest.fixture(autouse=True)
def _one_random_vgg(monkeypatch):
    """Building VGG-16 with random weights takes seconds (its 120M-parameter classifier): build it
    once and hand every model a copy of its features (test_source_is_torchvision_vgg16 builds one
    for real)."""

    def backbone(name: str, *, pretrained: bool) -> SimpleNamespace:
        assert (name, pretrained) == ("vgg16", False)
        return SimpleNamespace(features=copy.deepcopy(_vgg16_features()))

    monkeypatch.setattr(kdad, "torchvision_backbone", backbone)


def _cfg(**changes: object) -> KDADConfig:
    base = {"pretrained": False, "image_size": 32, "batch_size": 4}
    return KDADConfig.from_dict({**base, **changes})


def test_source_is_torchvision_vgg16(monkeypatch) -> None:
    monkeypatch.undo()
    model = KDAD(_cfg())
    reference = _vgg16_features()
    assert [type(m) for m in model.source] == [type(m) for m in reference]
    shapes = {k: v.shape for k, v in model.source.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}


def test_cloner_has_the_official_layout() -> None:
    """make_arch('B', cfg, use_bias=False, batch_norm=True): conv-BN-ReLU, but conv-ReLU before
    each max-pool, module indices unchanged, so official Cloner_*.pth state dicts load."""
    cloner = KDAD(_cfg()).cloner
    kinds = "".join(
        {"Conv2d": "C", "BatchNorm2d": "B", "ReLU": "R", "MaxPool2d": "M"}[type(m).__name__]
        for m in cloner.features
    )
    assert kinds == "CBRCRMCBRCRMCBRCBRCRMCBRCBRCRMCBRCBRCRM"
    state = cloner.state_dict()
    convs = {k: tuple(v.shape) for k, v in state.items() if v.ndim == 4}
    assert convs["features.0.weight"] == (16, 3, 3, 3)
    assert convs["features.9.weight"] == (128, 16, 3, 3)
    assert convs["features.18.weight"] == (256, 16, 3, 3)
    assert convs["features.27.weight"] == (512, 16, 3, 3)
    assert convs["features.36.weight"] == (512, 16, 3, 3)
    assert len(convs) == 13
    assert not any(k.replace(".weight", ".bias") in state for k in convs)  # use_bias: False
    assert sum(p.numel() for p in cloner.parameters()) == 343_984
    with_bias = KDAD(_cfg(use_bias=True)).cloner.state_dict()
    assert with_bias["features.36.bias"].shape == (512,)


def test_pool_outputs_match_the_source_widths() -> None:
    torch.manual_seed(0)
    for equal in (False, True):
        model = KDAD(_cfg(equal_network_size=equal))
        x = torch.rand(2, 3, 32, 32)
        cloner, source = model.cloner(x), kdad.pool_outputs(model.source, x)
        assert [tuple(s.shape) for s in source] == [
            (2, 64, 16, 16),
            (2, 128, 8, 8),
            (2, 256, 4, 4),
            (2, 512, 2, 2),
            (2, 512, 1, 1),
        ]
        start = 0 if equal else 1  # the small cloner's pool1 has 16 channels, not 64
        for c, s in zip(cloner[start:], source[start:], strict=True):
            assert c.shape == s.shape


@pytest.mark.parametrize("direction_only", [False, True])
def test_loss_and_score_are_the_official_formulas(direction_only: bool) -> None:
    """MseDirectionLoss on pool2..pool5 (batch means); detection_test on pool3..pool5 only."""
    torch.manual_seed(0)
    model = KDAD(_cfg(lamda=0.5, direction_loss_only=direction_only))
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        cloner, source = model.cloner(x), kdad.pool_outputs(model.source, x)
        loss = model.training_loss(x, torch.Generator())
    mse, cos = nn.MSELoss(), nn.CosineSimilarity()
    expected = 0.0
    for p in (2, 3, 4, 5):
        c, s = cloner[p - 1], source[p - 1]
        expected += torch.mean(1 - cos(c.view(5, -1), s.view(5, -1)))
        expected += 0.0 if direction_only else 0.5 * mse(c, s)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    model.eval()
    with torch.no_grad():
        cloner, source = model.cloner(x), kdad.pool_outputs(model.source, x)
        scores = model.anomaly_score(x)
    expected = torch.zeros(5)
    for p in (3, 4, 5):
        c, s = cloner[p - 1], source[p - 1]
        expected += 1 - cos(c.view(5, -1), s.view(5, -1))
        expected += 0.0 if direction_only else 0.5 * torch.mean((c - s) ** 2, dim=(1, 2, 3))
    torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-7)


def test_28px_inputs_are_resized() -> None:
    torch.manual_seed(0)
    model = KDAD(_cfg())
    x = torch.rand(3, 3, 28, 28)  # MedMNIST resolution: five pools would leave 0x0 maps
    loss = model.training_loss(x, torch.Generator())
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None for p in model.cloner.parameters())
    model.eval()
    with torch.no_grad():
        scores = model.anomaly_score(x)
        resized = model.anomaly_score(torch.nn.functional.interpolate(x, size=32, mode="bilinear"))
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, resized)


def test_source_stays_frozen() -> None:
    torch.manual_seed(0)
    model = KDAD(_cfg())
    model.train()
    assert not model.source.training and model.cloner.training
    assert all(not p.requires_grad for p in model.source.parameters())
    before = {k: v.clone() for k, v in model.source.state_dict().items()}
    opt, sched = model.make_optimizer()
    assert sched is None and isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 1e-3
    trained = {id(p) for group in opt.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.cloner.parameters()}
    loss = model.training_loss(torch.rand(4, 3, 32, 32), torch.Generator())
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.source.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = KDAD(_cfg())
    x = torch.from_numpy(smooth_images(4, 32, 0)).permute(0, 3, 1, 2).float() / 255
    losses = fixed_batch_losses(model, x, 8)
    assert losses[-1] < 0.8 * losses[0]


def test_fit_is_deterministic(tmp_path) -> None:
    torch.manual_seed(123)
    first = fit_and_score(KDAD(_cfg(epochs=2)), tmp_path / "a")
    torch.manual_seed(123)
    second = fit_and_score(KDAD(_cfg(epochs=2)), tmp_path / "b")
    assert first.shape == (5,) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_state_dict_round_trip(tmp_path) -> None:
    """The stage rebuilds with random weights and loads the checkpoint: source included."""
    torch.manual_seed(0)
    model = KDAD(_cfg(epochs=1))
    fit_baseline(
        model, ImageBatches(smooth_images(8, 32, 1)), seed=0, device="cpu", state_dir=tmp_path
    )
    fresh = KDAD(_cfg(epochs=1))
    with torch.no_grad():
        next(fresh.source.parameters()).add_(1.0)  # must be overwritten by the checkpoint
    fresh.load_state_dict(model.state_dict())
    images = ImageBatches(smooth_images(4, 32, 2))
    np.testing.assert_array_equal(
        score_images(model, images, batch_size=4, device="cpu"),
        score_images(fresh, images, batch_size=4, device="cpu"),
    )


def test_anomalies_score_higher(tmp_path) -> None:
    torch.manual_seed(0)
    model = KDAD(_cfg(epochs=5))
    fit_baseline(
        model, ImageBatches(smooth_images(16, 32, 3)), seed=0, device="cpu", state_dir=tmp_path
    )
    scores = mean_scores(model, smooth_images(6, 32, 4), slice(8, 20))
    assert scores["noisy"] > scores["normal"]
    assert scores["square"] > scores["normal"]


def test_config_defaults_and_validation() -> None:
    cfg = KDADConfig()
    assert (cfg.image_size, cfg.epochs, cfg.batch_size, cfg.lr) == (128, 201, 64, 1e-3)
    assert (cfg.lamda, cfg.use_bias, cfg.equal_network_size, cfg.direction_loss_only) == (
        0.01,
        False,
        False,
        False,
    )
    assert (cfg.loss_pools, cfg.score_pools) == ((2, 3, 4, 5), (3, 4, 5))
    assert cfg.pretrained is True and cfg.eval_every_epochs == 10
    with pytest.raises(DiaError, match="unknown"):
        KDADConfig.from_dict({"unknown": 1})
    with pytest.raises(DiaError, match="image_size 28 is below 32"):
        KDADConfig.from_dict({"image_size": 28})
    assert KDADConfig.from_dict({"image_size": 32}).image_size == 32
    with pytest.raises(DiaError, match=r"loss_pools \[1, 2\] must be distinct"):
        KDADConfig.from_dict({"loss_pools": [1, 2]})  # small cloner: pool1 is 16 wide, not 64
    with pytest.raises(DiaError, match="score_pools"):
        KDADConfig.from_dict({"score_pools": [3, 3]})
    with pytest.raises(DiaError, match="score_pools"):
        KDADConfig.from_dict({"score_pools": []})
    wide = KDADConfig.from_dict({"equal_network_size": True, "loss_pools": [1, 2, 3, 4, 5]})
    assert wide.loss_pools == (1, 2, 3, 4, 5)
