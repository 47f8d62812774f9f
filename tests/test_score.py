from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dia.config import ScoreConfig
from dia.contrastive.resnet import Outputs, ResNet18
from dia.evaluation.score import (
    ShiftFeatures,
    anomaly_scores,
    extract_features,
    fit_statistics,
    normality_scores,
)

K = 4


def random_features(n: int, d: int, seed: int) -> ShiftFeatures:
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(n, K, d, generator=g, dtype=torch.float64)
    # Positive mean logits, as for a trained shift head (the weights divide by their mean).
    logit = 1.0 + torch.rand(n, K, generator=g, dtype=torch.float64)
    return ShiftFeatures(proj, logit)


def hand_scores(train: ShiftFeatures, test: ShiftFeatures) -> list[float]:
    """The CSI score S(x), with explicit loops over shifts, test and training images."""
    n_train, d = len(train.projection), train.projection.shape[-1]

    def dot(a: torch.Tensor, b: torch.Tensor) -> float:
        return sum(float(a[j]) * float(b[j]) for j in range(d))

    w_sim, w_shi = [], []
    for k in range(K):
        norms = [
            math.sqrt(dot(train.projection[m, k], train.projection[m, k])) for m in range(n_train)
        ]
        w_sim.append(1.0 / (sum(norms) / n_train))
        w_shi.append(1.0 / (sum(float(train.shift_logit[m, k]) for m in range(n_train)) / n_train))
    scores = []
    for x in range(len(test.projection)):
        total = 0.0
        for k in range(K):
            best = -math.inf
            for m in range(n_train):
                axis = train.projection[m, k]
                norm = math.sqrt(dot(axis, axis))
                best = max(best, dot(test.projection[x, k], axis) / norm)
            total += w_sim[k] * best + w_shi[k] * float(test.shift_logit[x, k])
        scores.append(total / K)
    return scores


def test_fit_statistics_values() -> None:
    train = random_features(5, 3, seed=0)
    stats = fit_statistics(train)
    for k in range(K):
        norms = [train.projection[m, k].norm().item() for m in range(5)]
        assert stats.weight_sim[k].item() == pytest.approx(5 / sum(norms), rel=1e-12)
        mean_logit = sum(train.shift_logit[m, k].item() for m in range(5)) / 5
        assert stats.weight_shift[k].item() == pytest.approx(1 / mean_logit, rel=1e-12)
    assert stats.axes.shape == (K, 5, 3)
    assert torch.allclose(stats.axes.norm(dim=-1), torch.ones(K, 5, dtype=torch.float64))


@pytest.mark.parametrize("chunk", [256, 2])
def test_normality_scores_match_hand_computation(chunk: int) -> None:
    train, test = random_features(6, 3, seed=1), random_features(5, 3, seed=2)
    got = normality_scores(fit_statistics(train), test, chunk=chunk)
    assert got.shape == (5,)
    for value, expected in zip(got.tolist(), hand_scores(train, test), strict=True):
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_anomaly_scores_are_negated_normality() -> None:
    train, test = random_features(4, 3, seed=3), random_features(3, 3, seed=4)
    stats = fit_statistics(train)
    assert torch.equal(anomaly_scores(stats, test), -normality_scores(stats, test))


def test_anomalies_far_from_training_points_score_higher() -> None:
    """Normal test points coincide with training points; anomalies point elsewhere and have a
    weak correct-shift logit."""
    g = torch.Generator().manual_seed(5)
    axes = torch.eye(8, dtype=torch.float64)[:3]  # three training directions
    train_proj = (2.0 * axes).unsqueeze(1).expand(3, K, 8).clone()
    train = ShiftFeatures(train_proj, torch.full((3, K), 5.0, dtype=torch.float64))
    normal = ShiftFeatures(train_proj[[0, 2]], torch.full((2, K), 5.0, dtype=torch.float64))
    far = -2.0 * torch.rand(4, K, 8, generator=g, dtype=torch.float64).abs()
    anomalies = ShiftFeatures(far, torch.full((4, K), 0.5, dtype=torch.float64))
    stats = fit_statistics(train)
    normal_scores = anomaly_scores(stats, normal)
    anomaly = anomaly_scores(stats, anomalies)
    assert anomaly.min().item() > normal_scores.max().item()
    # A normal point identical to a training point: 1/K sum_k (1/2 * 2 + 1/5 * 5) = 2.
    assert normal_scores.tolist() == pytest.approx([-2.0, -2.0], rel=1e-12)


@pytest.fixture
def model() -> ResNet18:
    torch.manual_seed(0)
    return ResNet18(width=4)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(6))


def test_extract_features_shapes_and_determinism(model: ResNet18, images: torch.Tensor) -> None:
    cfg = ScoreConfig(samples=2, batch_size=3)
    model.train()
    a = extract_features(model, images, shift="rotation", cfg=cfg, image_size=16, hue=0.1)
    assert model.training  # mode restored
    b = extract_features(model, images, shift="rotation", cfg=cfg, image_size=16, hue=0.1)
    assert a.projection.shape == (5, K, 128)
    assert a.shift_logit.shape == (5, K)
    assert torch.equal(a.projection, b.projection)
    assert torch.equal(a.shift_logit, b.shift_logit)
    one = extract_features(
        model, images, shift="rotation", cfg=cfg.replace(samples=1), image_size=16, hue=0.1
    )
    assert not torch.equal(one.projection, a.projection)


def test_extract_features_uses_eval_mode(model: ResNet18, images: torch.Tensor) -> None:
    """Scoring runs in eval mode: BN running statistics are not updated."""
    cfg = ScoreConfig(samples=1, batch_size=8)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extract_features(model, images, shift="rotation", cfg=cfg, image_size=16, hue=0.1)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model(images)  # a train-mode forward pass does move them
    assert not torch.equal(before["stem.1.running_mean"], model.state_dict()["stem.1.running_mean"])


class LayoutProbe(nn.Module):
    """Fake model: view v of a batch of b images has projection (v // b, v % b) and shift
    logits 100 * j + v // b, so the correct-shift logit of block k is 101 * k."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> Outputs:
        v = torch.arange(len(x), dtype=torch.float32)
        b = len(x) // K
        block, pos = v // b, v % b
        logits = 100.0 * torch.arange(K, dtype=torch.float32) + block[:, None]
        proj = torch.stack([block, pos], 1)
        return Outputs(proj, proj, logits)


def test_extract_features_layout_is_k_major() -> None:
    images = torch.rand(3, 3, 8, 8)
    cfg = ScoreConfig(samples=2, batch_size=2)
    feats = extract_features(
        LayoutProbe(),  # type: ignore[arg-type]
        images,
        shift="rotation",
        cfg=cfg,
        image_size=8,
        hue=0.1,
    )
    expected_logit = torch.tensor([[0.0, 101.0, 202.0, 303.0]] * 3)
    assert torch.equal(feats.shift_logit, expected_logit)
    # Batches of 2 then 1: position within the batch is 0, 1, 0.
    for n, pos in enumerate([0, 1, 0]):
        for k in range(K):
            assert feats.projection[n, k].tolist() == [k, pos]


class FlipProbe(nn.Module):
    """Fake model whose projection is the mean of the left half minus the right half of each
    view: its sign tells whether that view was flipped."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> Outputs:
        w = x.shape[-1] // 2
        side = (x[..., :w].mean((1, 2, 3)) - x[..., w:].mean((1, 2, 3)))[:, None]
        return Outputs(side, side, torch.zeros(len(x), K))


@pytest.mark.parametrize("flip", ["per_shift", "shared"])
def test_score_flip_per_shift_or_shared(flip: str) -> None:
    """``shared``: the K shifted copies of an image are flipped alike; ``per_shift`` (official)
    draws one flip per copy, so over many images some copies of one image differ."""
    images = torch.zeros(64, 3, 8, 8)
    images[..., :4] = 1.0  # bright left half; rotation by 180 degrees also swaps the halves
    cfg = ScoreConfig(samples=1, batch_size=64, crop_scale=1.0, flip=flip)
    model = FlipProbe()
    feats = extract_features(model, images, shift="rotation", cfg=cfg, image_size=8, hue=0.0)
    side = feats.projection[..., 0]  # (N, K): +-0.5 at k = 0, 2 (k = 1, 3 see both halves)
    flipped_0 = side[:, 0] < 0
    flipped_2 = side[:, 2] > 0
    if flip == "shared":
        assert torch.equal(flipped_0, flipped_2)
    else:
        assert not torch.equal(flipped_0, flipped_2)
