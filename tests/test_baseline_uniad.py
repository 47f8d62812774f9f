"""UniAD baseline: shapes, optimisation, determinism, score orientation, frozen backbone, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dia.baselines.base import fit_baseline, score_images
from dia.baselines.uniad import UniAD, UniADConfig, neighbour_mask
from dia.data.prepare import ImageBatches
from dia.errors import DiaError


def small_cfg(**changes: object) -> UniADConfig:
    """A B0 backbone with random weights, a 4x4 token grid and a one-layer transformer."""
    values: dict[str, object] = {
        "backbone": "tf_efficientnet_b0",
        "pretrained": False,
        "image_size": 64,
        "hidden_dim": 32,
        "nhead": 4,
        "num_encoder_layers": 1,
        "num_decoder_layers": 1,
        "dim_feedforward": 64,
        "neighbor_size": (3, 3),
        "avgpool_size": 8,
        "batch_size": 4,
        "epochs": 2,
        "score_batch_size": 4,
        "lr": 1e-3,
    }
    values.update(changes)
    return UniADConfig.from_dict(values)


def smooth_images(n: int, seed: int, size: int = 32) -> np.ndarray:
    """uint8 (n, size, size, 3): horizontal grey ramps of random slope and offset, faint noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)[None, None, :, None]
    offset = rng.uniform(0.3, 0.5, (n, 1, 1, 1))
    slope = rng.uniform(0.0, 0.2, (n, 1, 1, 1))
    img = offset + slope * ramp + rng.normal(0, 0.01, (n, size, size, 3))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def test_forward_shapes_and_gradient() -> None:
    torch.manual_seed(0)
    model = UniAD(small_cfg())
    x = torch.rand(3, 3, 28, 28)  # MedMNIST resolution: the model upsamples it itself
    loss = model.training_loss(x, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.reconstruction.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    model.eval()
    with torch.no_grad():
        assert model.anomaly_map(x).shape == (3, 1, 64, 64)
        for image_score in ("max", "mean", "std"):
            model.cfg = small_cfg(image_score=image_score)
            scores = model.anomaly_score(x)
            assert scores.shape == (3,) and torch.isfinite(scores).all()


def test_default_neighbour_mask_at_the_medmnist_size_is_finite() -> None:
    """128 px gives an 8x8 grid, the smallest one the official 7x7 mask leaves usable."""
    torch.manual_seed(0)
    model = UniAD(small_cfg(image_size=128, neighbor_size=(7, 7), avgpool_size=16)).eval()
    with torch.no_grad():
        scores = model.anomaly_score(torch.rand(2, 3, 28, 28))
    assert torch.isfinite(scores).all()


def test_optimisation_lowers_the_loss_and_clips_gradients() -> None:
    torch.manual_seed(0)
    model = UniAD(small_cfg())
    opt, sched = model.make_optimizer()
    assert isinstance(opt, torch.optim.AdamW) and isinstance(sched, torch.optim.lr_scheduler.StepLR)
    x = torch.from_numpy(smooth_images(4, seed=1)).permute(0, 3, 1, 2).float() / 255

    def fixed_loss() -> float:
        with torch.no_grad():
            return model.training_loss(x, torch.Generator().manual_seed(123)).item()

    before = fixed_loss()
    rng = torch.Generator().manual_seed(0)
    for _ in range(15):
        loss = model.training_loss(x, rng)
        opt.zero_grad()
        (loss * 1e3).backward()
        opt.step()
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in model.reconstruction.parameters()])
        )
        assert norm <= model.cfg.clip_max_norm * 1.001  # the official clip_grad_norm_ 0.1
    assert fixed_loss() < 0.8 * before


def test_training_randomness_comes_from_rng_only() -> None:
    torch.manual_seed(0)
    model = UniAD(small_cfg())
    x = torch.rand(2, 3, 32, 32)
    state = torch.get_rng_state()
    a = model.training_loss(x, torch.Generator().manual_seed(5))
    torch.manual_seed(99)  # a different global state must not change the loss
    b = model.training_loss(x, torch.Generator().manual_seed(5))
    c = model.training_loss(x, torch.Generator().manual_seed(6))
    assert a.item() == b.item() != c.item()
    torch.set_rng_state(state)
    model.training_loss(x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)  # dropout's seeding is undone afterwards


def test_feature_jitter_scale_and_probability() -> None:
    model = UniAD(small_cfg())
    tokens = torch.full((2, 50, 400), 0.5)  # every token has norm 10
    noise = model.jitter(tokens, torch.Generator().manual_seed(0)) - tokens
    assert noise.std().item() == pytest.approx(20.0 * 10 / 400, rel=0.05)
    model.cfg = small_cfg(feature_jitter_prob=0.0)
    assert torch.equal(model.jitter(tokens, torch.Generator().manual_seed(0)), tokens)


def test_fit_and_score_are_deterministic(tmp_path) -> None:
    images = ImageBatches(smooth_images(6, seed=2))
    runs = []
    for run in range(2):
        torch.manual_seed(7)
        model = UniAD(small_cfg(batch_size=3))
        state = fit_baseline(model, images, seed=3, device="cpu", state_dir=tmp_path / str(run))
        assert state.step == 4
        model.fit_scoring(images, "cpu")
        runs.append(score_images(model, images, batch_size=4, device="cpu"))
    assert np.isfinite(runs[0]).all()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_anomalies_score_higher_than_normals(tmp_path) -> None:
    train = ImageBatches(smooth_images(16, seed=3))
    torch.manual_seed(0)
    model = UniAD(small_cfg(epochs=6))
    fit_baseline(model, train, seed=0, device="cpu", state_dir=tmp_path)
    model.fit_scoring(train, "cpu")
    normal = smooth_images(6, seed=4)
    square = normal.copy()
    square[:, 10:22, 10:22] = 255
    salt_pepper = np.random.default_rng(5).integers(0, 2, (6, 32, 32, 1), dtype=np.uint8) * 255
    noisy = salt_pepper.repeat(3, axis=-1)
    scores = {
        name: score_images(model, ImageBatches(arr), batch_size=4, device="cpu").mean()
        for name, arr in {"normal": normal, "square": square, "noisy": noisy}.items()
    }
    assert scores["square"] > 1.3 * scores["normal"]
    assert scores["noisy"] > 1.3 * scores["normal"]


def test_backbone_stays_frozen() -> None:
    torch.manual_seed(0)
    model = UniAD(small_cfg())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    opt, _ = model.make_optimizer()
    model.train()
    assert not model.backbone.training and model.reconstruction.training
    loss = model.training_loss(torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included


def test_neighbour_mask_hides_the_window_around_each_query() -> None:
    mask = neighbour_mask(8, (7, 7))
    assert mask.shape == (64, 64)
    assert mask[0].sum() == 16  # corner query: rows and columns 0..3
    assert mask[4 * 8 + 4].sum() == 49  # centre query: rows and columns 1..7
    assert mask[0, 3 * 8 + 3] and not mask[0, 4 * 8 + 4] and mask.diagonal().all()


def test_config_defaults_and_validation() -> None:
    cfg = UniADConfig()
    assert cfg.backbone == "tf_efficientnet_b4.aa_in1k" and cfg.pretrained is True
    assert (cfg.image_size, cfg.epochs, cfg.batch_size, cfg.lr) == (224, 1000, 8, 1e-4)
    assert (cfg.weight_decay, cfg.lr_step_size, cfg.lr_gamma, cfg.clip_max_norm) == (
        1e-4,
        800,
        0.1,
        0.1,
    )
    assert cfg.outlayers == (1, 2, 3, 4) and cfg.outstride == 16
    assert (cfg.hidden_dim, cfg.num_encoder_layers, cfg.num_decoder_layers) == (256, 4, 4)
    assert cfg.neighbor_size == (7, 7) and cfg.feature_jitter_scale == 20.0
    assert (cfg.image_score, cfg.avgpool_size) == ("max", 16)
    assert UniADConfig.from_dict({"neighbor_size": [5, 5]}).neighbor_size == (5, 5)
    with pytest.raises(DiaError, match="unknown config key"):
        UniADConfig.from_dict({"unknown": 1})
    with pytest.raises(DiaError, match="multiple of the feature stride"):
        UniADConfig.from_dict({"image_size": 100})
    with pytest.raises(DiaError, match="larger image_size, at least 128"):
        UniADConfig.from_dict({"image_size": 32})  # DIA's 32x32: the mask hides every token
    with pytest.raises(DiaError, match="image_score"):
        UniADConfig.from_dict({"image_score": "median"})
    assert UniADConfig.from_dict({"image_size": 128}).image_size == 128


def test_timm_feature_indices_match_the_official_b4_layers() -> None:
    """Official outlayers 1..4 are B4 blocks 1, 5, 9, 21: 24/32/56/160 channels, strides 2..16."""
    model = UniAD(UniADConfig(pretrained=False, hidden_dim=32, nhead=4, dim_feedforward=32))
    info = model.backbone.feature_info
    assert info.channels() == [24, 32, 56, 160]
    assert info.reduction() == [2, 4, 8, 16]
