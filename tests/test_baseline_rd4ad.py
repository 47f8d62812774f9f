"""RD4AD (reverse distillation): shapes, training, determinism, score orientation, frozen teacher,
the scipy-equivalent Gaussian smoothing and the config."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from dia.baselines.base import fit_baseline
from dia.baselines.rd4ad import RD4AD, RD4ADConfig, gaussian_filter
from dia.data.prepare import ImageBatches
from dia.errors import DiaError
from tests.baseline_checks import (
    fit_and_score,
    fixed_batch_losses,
    mean_scores,
    smooth_images,
)


def _cfg(**changes: object) -> RD4ADConfig:
    base = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "batch_size": 4}
    return RD4ADConfig.from_dict({**base, **changes})


def test_forward_shapes_and_28px_inputs() -> None:
    torch.manual_seed(0)
    model = RD4AD(_cfg())
    x = torch.rand(3, 3, 28, 28)  # MedMNIST resolution: resized to 32 inside
    loss = model.training_loss(x, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert all(p.grad is not None for p in model.ocbe.parameters())
    model.eval()
    with torch.no_grad():
        scores = model.anomaly_score(x)
        amap = model.anomaly_map(x)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    assert amap.shape == (3, 32, 32)


def test_anomaly_map_matches_official_formula() -> None:
    """Per-layer 1 - cos maps, bilinear align_corners upsampling, sum, scipy sigma=4, max."""
    torch.manual_seed(0)
    model = RD4AD(_cfg(image_size=64)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        teacher, student = model._features(x)
        scores = model.anomaly_score(x)
    for b in range(2):
        total = np.zeros((64, 64))
        for t, s in zip(teacher, student, strict=True):
            layer_map = 1 - F.cosine_similarity(t[b : b + 1], s[b : b + 1])
            up = F.interpolate(layer_map[:, None], size=64, mode="bilinear", align_corners=True)
            total += up[0, 0].double().numpy()
        expected = scipy.ndimage.gaussian_filter(total, sigma=4).max()
        assert scores[b].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("size", "sigma"), [(32, 4.0), (10, 4.0), (23, 1.5)])
def test_gaussian_filter_matches_scipy(size: int, sigma: float) -> None:
    """Same kernel (truncate 4.0) and 'reflect' boundary, also when the radius exceeds the map."""
    maps = np.random.default_rng(0).normal(size=(2, size, size + 3))
    ours = gaussian_filter(torch.from_numpy(maps).float(), sigma).double().numpy()
    for m, o in zip(maps, ours, strict=True):
        np.testing.assert_allclose(o, scipy.ndimage.gaussian_filter(m, sigma), atol=1e-6)


def test_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = RD4AD(_cfg())
    assert model.make_optimizer()[1] is None
    x = torch.from_numpy(smooth_images(4, 32, 0)).permute(0, 3, 1, 2).float() / 255
    losses = fixed_batch_losses(model, x, 6)
    assert losses[-1] < 0.8 * losses[0]


def test_fit_is_deterministic(tmp_path) -> None:
    torch.manual_seed(123)
    first = fit_and_score(RD4AD(_cfg(epochs=2)), tmp_path / "a")
    torch.manual_seed(123)
    second = fit_and_score(RD4AD(_cfg(epochs=2)), tmp_path / "b")
    assert first.shape == (5,) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)


def test_anomalies_score_higher(tmp_path) -> None:
    torch.manual_seed(0)
    model = RD4AD(_cfg(epochs=5))  # untrained, noise scores lower than normals
    fit_baseline(
        model, ImageBatches(smooth_images(16, 32, 3)), seed=0, device="cpu", state_dir=tmp_path
    )
    scores = mean_scores(model, smooth_images(6, 32, 4), slice(8, 20))
    assert scores["noisy"] > scores["normal"]
    assert scores["square"] > scores["normal"]


def test_encoder_stays_frozen() -> None:
    torch.manual_seed(0)
    model = RD4AD(_cfg())
    model.train()
    assert not model.stem.training and not any(m.training for m in model.layers.modules())
    assert model.decoder.training and model.ocbe.training
    assert all(not p.requires_grad for p in model.encoder_parameters())
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("stem", "lay"))}
    opt, _ = model.make_optimizer()
    trained = {id(p) for group in opt.param_groups for p in group["params"]}
    assert trained.isdisjoint(id(p) for p in model.encoder_parameters())
    decoder_before = next(model.decoder.parameters()).clone()
    loss = model.training_loss(torch.rand(4, 3, 32, 32), torch.Generator())
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # weights and BN statistics
    assert not torch.equal(decoder_before, next(model.decoder.parameters()))


def test_config_defaults_and_validation() -> None:
    cfg = RD4ADConfig()
    assert (cfg.image_size, cfg.epochs, cfg.batch_size, cfg.lr) == (256, 200, 16, 0.005)
    assert cfg.adam_betas == (0.5, 0.999)
    assert cfg.backbone == "wide_resnet50_2" and cfg.gaussian_sigma == 4.0
    assert cfg.pretrained is True
    with pytest.raises(DiaError, match="unknown"):
        RD4ADConfig.from_dict({"unknown": 1})
    with pytest.raises(DiaError, match="multiple of 32"):
        RD4ADConfig.from_dict({"image_size": 28})
    with pytest.raises(DiaError, match="backbone"):
        RD4ADConfig.from_dict({"backbone": "vgg16"})
    assert RD4ADConfig.from_dict({"adam_betas": [0.9, 0.99]}).adam_betas == (0.9, 0.99)
