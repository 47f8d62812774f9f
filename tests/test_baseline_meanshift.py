from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from dia.baselines import meanshift
from dia.baselines.base import fit_baseline, score_images
from dia.baselines.meanshift import MeanShift, MeanShiftConfig
from dia.data.prepare import ImageBatches, to_float_tensor
from dia.errors import DiaError

SMALL = {
    "backbone": "resnet18",
    "pretrained": False,
    "image_size": 32,
    "batch_size": 4,
    "score_batch_size": 4,
}


def small_cfg(**changes: object) -> MeanShiftConfig:
    return MeanShiftConfig.from_dict({**SMALL, **changes})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): a random flat colour plus a gentle horizontal ramp."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-0.1, 0.1, size)[None, None, :, None]
    colour = rng.uniform(0.35, 0.65, (n, 1, 1, 3))
    images = colour + rng.uniform(0.5, 1.0, (n, 1, 1, 1)) * ramp + np.zeros((n, size, size, 3))
    return (255 * images.clip(0, 1)).round().astype(np.uint8)


def test_forward_shapes_and_gradient() -> None:
    model = MeanShift(small_cfg())
    normals = ImageBatches(smooth_images(6))
    model.on_train_start(normals, "cpu")
    loss = model.training_loss(normals[:4], gen())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.backbone.layer4[1].conv2.weight.grad.abs().sum() > 0
    model.fit_scoring(normals, "cpu")
    scores = score_images(
        model, ImageBatches(smooth_images(5, size=20, seed=1)), batch_size=2, device="cpu"
    )
    assert scores.shape == (5,) and np.isfinite(scores).all()


@pytest.mark.parametrize("angular", [False, True])
def test_loss_is_the_official_mean_shifted_form(angular: bool) -> None:
    """NT-Xent (temperature 0.25) of the re-normalised shifted views, + the angular term."""
    model = MeanShift(small_cfg(angular=angular))
    normals = ImageBatches(smooth_images(6))
    model.on_train_start(normals, "cpu")
    centre_norm = model.center.norm().item()
    assert centre_norm == pytest.approx(1.0) if angular else centre_norm < 1.0
    x = normals[:4]
    with torch.no_grad():
        loss = model.training_loss(x, gen(3))
        rng = gen(3)
        views = torch.cat([model.moco_view(x, rng), model.moco_view(x, rng)])
        shifted = model.embed(views) - model.center
        unit = torch.nn.functional.normalize(shifted, dim=1)
        logits = unit @ unit.T / 0.25
        logits.fill_diagonal_(-torch.inf)
        positive = torch.arange(8).roll(4)
        expected = (torch.logsumexp(logits, 1) - logits[torch.arange(8), positive]).mean()
        if angular:
            expected += shifted[:4].square().sum(1).mean() + shifted[4:].square().sum(1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = MeanShift(small_cfg(lr=0.05))
    normals = ImageBatches(smooth_images(8))
    model.on_train_start(normals, "cpu")
    opt, sched = model.make_optimizer()
    assert sched is None
    x = normals[:8]
    with torch.no_grad():
        before = model.training_loss(x, gen(5)).item()
    for _ in range(5):
        loss = model.training_loss(x, gen(5))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.training_loss(x, gen(5)).item()
    assert after < before - 1e-3


def test_training_and_scoring_are_deterministic(tmp_path) -> None:
    normals = ImageBatches(smooth_images(8))
    tests = ImageBatches(smooth_images(5, seed=2))
    results = []
    for run in range(2):
        torch.manual_seed(1)
        model = MeanShift(small_cfg(epochs=1, lr=1e-3))
        untrained = [p.detach().clone() for p in model.parameters()]
        fit_baseline(model, normals, seed=7, device="cpu", state_dir=tmp_path / str(run))
        assert any(
            not torch.equal(a, b) for a, b in zip(untrained, model.parameters(), strict=True)
        )
        model.fit_scoring(normals, "cpu")
        results.append(score_images(model, tests, batch_size=2, device="cpu"))
    assert np.isfinite(results[0]).all()
    np.testing.assert_array_equal(results[0], results[1])


def test_noise_and_bright_squares_score_higher_than_held_out_normals() -> None:
    torch.manual_seed(0)
    model = MeanShift(small_cfg())
    normals = ImageBatches(smooth_images(12))
    model.on_train_start(normals, "cpu")
    model.fit_scoring(normals, "cpu")
    held_out = smooth_images(4, seed=3)
    noisy = held_out.astype(float) + np.random.default_rng(4).normal(0, 80, held_out.shape)
    noisy = noisy.clip(0, 255).astype(np.uint8)
    square = held_out.copy()
    square[:, 6:16, 6:16] = 255

    def mean_score(images: np.ndarray) -> float:
        return score_images(model, ImageBatches(images), batch_size=4, device="cpu").mean()

    normal = mean_score(held_out)
    assert mean_score(noisy) > normal
    assert mean_score(square) > normal


def test_knn_score_is_the_sum_of_the_two_smallest_squared_distances() -> None:
    model = MeanShift(small_cfg())
    normals = ImageBatches(smooth_images(7))
    model.fit_scoring(normals, "cpu")
    x = to_float_tensor(smooth_images(3, seed=5))
    with torch.no_grad():
        scores = model.anomaly_score(x).numpy()
        query = model.embed(model.eval_view(x)).double().numpy()
    bank = model.bank.double().numpy()
    squared = ((query[:, None] - bank[None]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, np.sort(squared, 1)[:, :2].sum(1), rtol=1e-4, atol=1e-6)


def test_frozen_stages_stay_frozen_and_batch_norm_stays_in_eval() -> None:
    model = MeanShift(small_cfg(frozen_stages=2, lr=0.1))
    frozen = {id(p) for m in model.fixed_stages() for p in m.parameters()}
    assert all(not p.requires_grad for m in model.fixed_stages() for p in m.parameters())
    normals = ImageBatches(smooth_images(6))
    model.on_train_start(normals, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt, _ = model.make_optimizer()
    assert all(id(p) not in frozen for g in opt.param_groups for p in g["params"])
    model.train()
    assert model.training and not any(m.training for m in model.backbone.modules())
    loss = model.training_loss(normals[:4], gen())
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.state_dict()
    for name in ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer2.1.bn2.bias"):
        assert torch.equal(before[f"backbone.{name}"], after[f"backbone.{name}"]), name
    assert not torch.equal(
        before["backbone.layer3.0.conv1.weight"], after["backbone.layer3.0.conv1.weight"]
    )
    # Official training never leaves eval mode, so no running statistic moves either.
    assert torch.equal(
        before["backbone.layer4.1.bn2.running_mean"], after["backbone.layer4.1.bn2.running_mean"]
    )


def test_official_freezing_per_backbone() -> None:
    r18 = MeanShift(small_cfg())
    assert r18.fixed_stages() == [] and all(p.requires_grad for p in r18.parameters())
    r152 = MeanShift(MeanShiftConfig(pretrained=False))
    net = r152.backbone
    assert r152.fixed_stages() == [net.conv1, net.bn1, net.layer1, net.layer2]
    assert not any(p.requires_grad for p in net.layer2.parameters())
    assert all(p.requires_grad for p in net.layer3.parameters())


@pytest.mark.parametrize("backbone", ["resnet152", "resnet18"])
def test_eval_view_is_the_official_pil_transform(backbone: str) -> None:
    """R152: Resize(256/224 * size) + CenterCrop(size); R18: bicubic Resize(size) + CenterCrop."""
    model = MeanShift(small_cfg())
    model.cfg = model.cfg.replace(backbone=backbone)  # eval_view only reads the config
    short, mode = 37, InterpolationMode.BILINEAR
    if backbone == "resnet18":
        short, mode = 32, InterpolationMode.BICUBIC
    official = transforms.Compose(
        [
            transforms.Resize(short, interpolation=mode),
            transforms.CenterCrop(32),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    images = smooth_images(2, size=30) + np.random.default_rng(8).integers(0, 60, (2, 30, 30, 3))
    images = images.astype(np.uint8)[:, :20]  # non-square: 20 x 30
    expected = torch.stack([official(Image.fromarray(image)) for image in images])
    ours = model.eval_view(to_float_tensor(images))
    torch.testing.assert_close(ours, expected, rtol=0, atol=2 / 255 / 0.224)


def test_moco_views_are_reproducible() -> None:
    model = MeanShift(small_cfg())
    images = torch.rand(3, 3, 20, 30, generator=gen(9))
    views = model.moco_view(images, gen(1))
    assert views.shape == (3, 3, 32, 32)
    torch.testing.assert_close(views, model.moco_view(images, gen(1)), rtol=0, atol=0)
    assert not torch.allclose(views, model.moco_view(images, gen(2)))


def test_colour_ops_and_blur_match_pil() -> None:
    """The batched jitter/blur steps reproduce PIL's ops up to uint8 rounding."""
    image = smooth_images(1, size=20)[0]
    noise = np.random.default_rng(6).integers(0, 60, image.shape, dtype=np.uint8)
    image = image + noise
    x = to_float_tensor(image[None])
    pil = Image.fromarray(image)
    for fn, enhance, factor in (
        (meanshift._brightness, ImageEnhance.Brightness, 1.3),
        (meanshift._contrast, ImageEnhance.Contrast, 0.7),
        (meanshift._saturation, ImageEnhance.Color, 1.4),
    ):
        ours = fn(x, torch.tensor([factor]))
        torch.testing.assert_close(
            ours,
            to_float_tensor(np.array(enhance(pil).enhance(factor))[None]),
            rtol=0,
            atol=2 / 255,
        )
    for sigma in (0.3, 1.3, 2.0):
        model = MeanShift(small_cfg(blur_p=1.0, blur_sigma=(sigma, sigma)))
        ours = model._gaussian_blur(x, gen())
        theirs = to_float_tensor(np.array(pil.filter(ImageFilter.GaussianBlur(sigma)))[None])
        torch.testing.assert_close(ours, theirs, rtol=0, atol=4 / 255)


def test_config_defaults_and_errors() -> None:
    cfg = MeanShiftConfig()
    assert (cfg.backbone, cfg.image_size, cfg.epochs, cfg.batch_size) == ("resnet152", 224, 20, 64)
    assert (cfg.lr, cfg.weight_decay, cfg.temperature, cfg.knn_k) == (1e-5, 5e-5, 0.25, 2)
    assert cfg.crop_scale == (0.2, 1.0) and cfg.jitter == (0.4, 0.4, 0.4, 0.1)
    assert (cfg.jitter_p, cfg.gray_p, cfg.blur_p, cfg.blur_sigma) == (0.8, 0.2, 0.5, (0.1, 2.0))
    assert cfg.pretrained is True and cfg.angular is False and cfg.frozen_stages is None
    assert MeanShiftConfig.from_dict({"crop_scale": [0.3, 1.0]}).crop_scale == (0.3, 1.0)
    with pytest.raises(DiaError, match="unknown"):
        MeanShiftConfig.from_dict({"unknown": 1})
    with pytest.raises(DiaError, match="backbone"):
        MeanShiftConfig.from_dict({"backbone": "resnet50"})
    with pytest.raises(DiaError, match="frozen_stages"):
        MeanShiftConfig.from_dict({"frozen_stages": 5})
