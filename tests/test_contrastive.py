from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dia.config import ContrastiveConfig
from dia.contrastive.resnet import ResNet18
from dia.contrastive.shifts import NUM_SHIFTS, SHIFTS
from dia.contrastive.train import Trainer, batches_per_epoch, schedule
from dia.contrastive.views import make_views
from dia.training import TrainState, read_losses

K = NUM_SHIFTS


@pytest.mark.parametrize(("arch", "size"), [("resnet18_cifar", 28), ("resnet18_imagenet", 64)])
def test_resnet_output_shapes(arch: str, size: int) -> None:
    torch.manual_seed(0)
    model = ResNet18(arch=arch, width=8)
    out = model(torch.rand(2, 3, size, size))
    assert model.feature_dim == 64
    assert out.features.shape == (2, 64)
    assert out.projection.shape == (2, 128)
    assert out.shift_logits.shape == (2, K)


def test_resnet_rejects_unknown_arch() -> None:
    with pytest.raises(ValueError, match="arch"):
        ResNet18(arch="resnet50")


def images_batch(b: int = 2, size: int = 8) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(0))


def view(views: torch.Tensor, branch: int, k: int, i: int, b: int) -> torch.Tensor:
    return views[branch * K * b + k * b + i]


def assert_shifted_copies(views: torch.Tensor, base: torch.Tensor, branch: int, shift: str) -> None:
    """Branch ``branch`` holds S_k(x_i) or S_k(flip(x_i)), with one flip per (branch, i)."""
    b = len(base)
    for i in range(b):
        flipped = [
            all(torch.equal(view(views, branch, k, i, b), SHIFTS[shift](src, k)) for k in range(K))
            for src in (base[i], base[i].flip(-1))
        ]
        assert any(flipped), (branch, i)


@pytest.mark.parametrize("shift", ["rotation", "perm"])
def test_make_views_csi_layout(shift: str) -> None:
    x = images_batch(3)
    views, labels = make_views(
        x,
        torch.arange(3),
        shift=shift,
        dissolve=None,
        rng=torch.Generator().manual_seed(0),
        aug_rng=torch.Generator().manual_seed(1),
    )
    assert views.shape == (2 * K * 3, 3, 8, 8)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3] * 2
    for branch in (0, 1):
        assert_shifted_copies(views, x, branch, shift)


def test_make_views_dia_layout_with_constant_dissolve() -> None:
    x = images_batch(2)
    calls: list[torch.Tensor] = []

    def dissolve(index: torch.Tensor, xs: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        calls.append(index)
        assert torch.equal(xs, x)
        return xs * 0 + 0.25

    views, labels = make_views(
        x,
        torch.tensor([5, 9]),
        shift="rotation",
        dissolve=dissolve,
        rng=torch.Generator().manual_seed(0),
        aug_rng=torch.Generator().manual_seed(1),
    )
    assert views.shape == (3 * K * 2, 3, 8, 8)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] * 3
    assert len(calls) == K  # one dissolving draw per shift block
    assert all(c.tolist() == [5, 9] for c in calls)
    assert torch.equal(views[2 * K * 2 :], torch.full((K * 2, 3, 8, 8), 0.25))
    for branch in (0, 1):
        assert_shifted_copies(views, x, branch, "rotation")


def test_make_views_dia_branch_is_shifted_dissolved_image() -> None:
    """A(k, i) = S_k(flip?(D(x_i))) with the k-th dissolving draw."""
    x = images_batch(2)
    counter = iter(range(K))

    def dissolve(index: torch.Tensor, xs: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return xs + 10 * (next(counter) + 1)

    views, _ = make_views(
        x,
        torch.arange(2),
        shift="rotation",
        dissolve=dissolve,
        rng=torch.Generator().manual_seed(0),
        aug_rng=torch.Generator().manual_seed(1),
    )
    for k in range(K):
        for i in range(2):
            d = x[i] + 10 * (k + 1)
            got = view(views, 2, k, i, 2)
            assert torch.equal(got, SHIFTS["rotation"](d, k)) or torch.equal(
                got, SHIFTS["rotation"](d.flip(-1), k)
            )


@pytest.mark.parametrize("flip_first", [False, True])
def test_make_views_flips_the_dissolved_branch_after_or_before_dissolving(flip_first: bool) -> None:
    """A dissolving that darkens the left half does not commute with the flip: flipping after
    it (default) leaves some A views dark on the right, flipping before (official) never."""
    x = torch.ones(16, 3, 8, 8)

    def darken_left(index: torch.Tensor, xs: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return torch.cat([xs[..., :4] * 0, xs[..., 4:]], dim=-1)

    views, _ = make_views(
        x,
        torch.arange(16),
        shift="rotation",
        dissolve=darken_left,
        rng=torch.Generator().manual_seed(0),
        aug_rng=torch.Generator().manual_seed(1),
        flip_first=flip_first,
    )
    unrotated = views[2 * K * 16 : 2 * K * 16 + 16]  # block k = 0 of A
    dark_left = unrotated[..., :4].sum((1, 2, 3)) == 0
    assert dark_left.all() == flip_first
    assert dark_left.any()


def tiny_cfg(method: str, **changes: object) -> ContrastiveConfig:
    values = {
        "method": method,
        "width": 4,
        "image_size": 16,
        "batch_size": 4,
        "epochs": 2,
        "max_batches_per_epoch": None,
        "warmup_epochs": 1.0,
        "eval_every_epochs": 1,
        "checkpoint_every_steps": 1,
        **changes,
    }
    return ContrastiveConfig.from_dict(values)


def fake_dissolve(index: torch.Tensor, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Stands in for D(x, t): consumes the dissolve RNG like the real sources do."""
    t = torch.rand(1, generator=rng)
    return (x * 0.5 + 0.2 * t).clamp(0, 1)


@pytest.fixture(scope="module")
def train_images() -> torch.Tensor:
    return torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def make_trainer(method: str, images: torch.Tensor, seed: int = 0) -> Trainer:
    dissolve = fake_dissolve if method == "dia" else None
    return Trainer(tiny_cfg(method), images, dissolve=dissolve, seed=seed)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_trainer_requires_matching_dissolve_source(train_images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="DIA"):
        Trainer(tiny_cfg("dia"), train_images, dissolve=None, seed=0)
    with pytest.raises(ValueError, match="CSI"):
        Trainer(tiny_cfg("csi"), train_images, dissolve=fake_dissolve, seed=0)


@pytest.mark.parametrize("method", ["csi", "dia"])
def test_trainer_steps_are_deterministic(method: str, train_images: torch.Tensor) -> None:
    indices = [torch.tensor([0, 1, 2, 3]), torch.tensor([6, 4, 5, 7])]
    runs = []
    for seed in (0, 0, 1):
        trainer = make_trainer(method, train_images, seed)
        losses = [read_losses([trainer.step(index)])[0] for index in indices]
        runs.append((losses, weights(trainer)))
    (losses_a, weights_a), (losses_b, weights_b), (losses_c, _) = runs
    assert losses_a == losses_b
    assert_same_weights(weights_a, weights_b)
    assert all(np.isfinite(v) for step in losses_a for v in step.values())
    assert losses_a[0]["loss"] == pytest.approx(losses_a[0]["loss_con"] + losses_a[0]["loss_cls"])
    assert losses_c[0]["loss"] != losses_a[0]["loss"]
    assert losses_c[1]["loss"] != losses_a[1]["loss"]


@pytest.mark.parametrize(
    "switch",
    [
        pytest.param({"channels_last": True}, id="channels_last"),
        # torch.compile builds its kernels with the C++ compiler: about a minute on a small CPU
        pytest.param({"compile": True}, id="compile", marks=pytest.mark.slow),
    ],
)
def test_speed_switches_train_like_the_eager_contiguous_step(
    switch: dict[str, bool], train_images: torch.Tensor
) -> None:
    """Two steps each: the same losses and weights up to rounding, and a checkpoint without the
    compiled wrapper's names."""
    runs = []
    for changes in ({}, switch):
        cfg = tiny_cfg("dia", **changes)
        trainer = Trainer(cfg, train_images, dissolve=fake_dissolve, seed=0)
        steps = [torch.tensor([0, 1, 2, 3]), torch.tensor([6, 4, 5, 7])]
        losses = read_losses([trainer.step(index) for index in steps])
        runs.append((losses, weights(trainer)))
    (eager_losses, eager), (fast_losses, fast) = runs
    for a, b in zip(eager_losses, fast_losses, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert eager.keys() == fast.keys()
    for key in eager:
        torch.testing.assert_close(fast[key], eager[key], rtol=1e-2, atol=1e-3)


def test_trainer_step_changes_weights(train_images: torch.Tensor) -> None:
    trainer = make_trainer("csi", train_images)
    before = weights(trainer)
    trainer.step(torch.arange(4))
    after = weights(trainer)
    assert not torch.equal(before["stem.0.weight"], after["stem.0.weight"])


def evaluate(model: ResNet18) -> dict[str, np.ndarray]:
    return {"val": np.array([float(p.detach().double().sum()) for p in model.parameters()][:3])}


def strip_seconds(state: TrainState) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in state.log]


@pytest.fixture(scope="module")
def uninterrupted(train_images: torch.Tensor, tmp_path_factory) -> dict[str, tuple]:
    runs = {}
    for method in ("csi", "dia"):
        trainer = make_trainer(method, train_images)
        state = trainer.fit(state_dir=tmp_path_factory.mktemp(method), evaluate=evaluate)
        runs[method] = (state, weights(trainer))
    return runs


@pytest.mark.parametrize(("method", "done"), [("csi", 1), ("csi", 2), ("csi", 3), ("dia", 3)])
def test_fit_resumes_to_the_uninterrupted_result(
    method: str, done: int, train_images: torch.Tensor, uninterrupted: dict, tmp_path: Path
) -> None:
    """Crash after ``done`` of the 4 steps (2 epochs x 2 batches; done = 2 is the epoch
    boundary), then a fresh Trainer resumes from state_dir/last.pt and must end identical."""
    trainer = make_trainer(method, train_images)
    real_step = trainer.step
    calls = 0

    def crashing_step(index: torch.Tensor) -> dict[str, float]:
        nonlocal calls
        calls += 1
        if calls > done:
            raise RuntimeError("simulated crash")
        return real_step(index)

    trainer.step = crashing_step  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.fit(state_dir=tmp_path, evaluate=evaluate)
    assert (tmp_path / "last.pt").exists()

    resumed = make_trainer(method, train_images)
    state = resumed.fit(state_dir=tmp_path, evaluate=evaluate)
    ref_state, ref_weights = uninterrupted[method]
    assert_same_weights(weights(resumed), ref_weights)
    assert state.step == ref_state.step == 4
    assert state.epoch == 2
    assert strip_seconds(state) == strip_seconds(ref_state)
    assert [e for e, _ in state.evals] == [e for e, _ in ref_state.evals] == [1]
    np.testing.assert_array_equal(state.evals[0][1]["val"], ref_state.evals[0][1]["val"])


def test_fit_on_finished_state_dir_does_nothing(
    train_images: torch.Tensor, uninterrupted: dict, tmp_path: Path
) -> None:
    trainer = make_trainer("csi", train_images)
    trainer.fit(state_dir=tmp_path)
    again = make_trainer("csi", train_images, seed=5)
    state = again.fit(state_dir=tmp_path)
    assert state.step == 4
    assert_same_weights(weights(again), uninterrupted["csi"][1])


@pytest.mark.parametrize(("drop_last", "expected"), [(False, 3), (True, 2)])
def test_drop_last_decides_the_partial_batch(
    drop_last: bool, expected: int, tmp_path: Path
) -> None:
    """10 images in batches of 4: the official DataLoader also trains on the last 2 images."""
    images = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    cfg = tiny_cfg("csi", epochs=1, drop_last=drop_last)
    assert batches_per_epoch(cfg, 10) == expected
    trainer = Trainer(cfg, images, dissolve=None, seed=0)
    seen: list[torch.Tensor] = []
    real_step = trainer.step

    def recording_step(index: torch.Tensor) -> dict[str, float]:
        seen.append(index)
        return real_step(index)

    trainer.step = recording_step  # type: ignore[method-assign]
    state = trainer.fit(state_dir=tmp_path)
    assert state.step == expected
    assert sum(len(i) for i in seen) == (10 if not drop_last else 8)


def test_batches_per_epoch_cap_applies_after_the_partial_batch() -> None:
    cfg = tiny_cfg("csi", max_batches_per_epoch=201, batch_size=32)
    assert batches_per_epoch(cfg, 100) == 4  # ceil(100 / 32)
    assert batches_per_epoch(cfg, 100_000) == 201
    assert batches_per_epoch(cfg.replace(drop_last=True), 100) == 3


def test_lr_cosine_period(train_images: torch.Tensor) -> None:
    """dia_code decays over the official 1000 epochs while training 200; null uses ``epochs``."""
    official = Trainer(
        tiny_cfg(
            "csi", epochs=200, lr=0.1, warmup_epochs=10, warmup_multiplier=10, lr_cosine_epochs=1000
        ),
        train_images,
        dissolve=None,
        seed=0,
    )
    own = Trainer(official.cfg.replace(lr_cosine_epochs=None), train_images, dissolve=None, seed=0)
    assert official.lr_at(100) == pytest.approx(0.5 * (1 + np.cos(np.pi * 90 / 1000)))
    assert own.lr_at(100) == pytest.approx(0.5 * (1 + np.cos(np.pi * 90 / 200)))
    assert official.lr_at(200) == pytest.approx(0.9135, abs=1e-4)  # lr x 10 x 0.91
    assert own.lr_at(200) == pytest.approx(0.0062, abs=1e-4)


def test_a_capped_epoch_starts_at_the_rate_its_last_step_set(train_images: torch.Tensor) -> None:
    """2 of 4 batches per epoch: the official scheduler was last stepped to epoch - 1 + 1/4, not to
    the end of a full pass, when the next epoch's first batch trains."""
    cfg = tiny_cfg("csi", batch_size=2, epochs=3, max_batches_per_epoch=2, lr=0.1, warmup_epochs=3)
    trainer = Trainer(cfg, train_images, dissolve=None, seed=0)
    rates: list[float] = []
    real_step = trainer.step

    def recording_step(index: torch.Tensor) -> dict[str, torch.Tensor]:
        rates.append(trainer.lr())
        return real_step(index)

    trainer.step = recording_step  # type: ignore[method-assign]
    for epoch in range(3):
        for batch in range(2):
            trainer.train_step(torch.arange(2 * batch, 2 * batch + 2), epoch, batch)
    positions = [0, 0, 0.25, 1, 1.25, 2]
    assert rates == pytest.approx([0.1 * (1 + 9 * p / 3) for p in positions])


@pytest.mark.parametrize("arch", ["resnet18_cifar", "resnet18_imagenet"])
def test_resnet_init(arch: str) -> None:
    """``official``: PyTorch's default conv init (kaiming-uniform, a = sqrt(5)) for the CIFAR
    network, Kaiming fan-out normal for the ImageNet one; ``kaiming``: fan-out for both."""

    def first_conv_std(init: str) -> float:
        torch.manual_seed(0)
        return float(
            ResNet18(arch=arch, width=64, init=init).stages[3][1].conv1.weight.detach().std()
        )

    fan_out_std = (2 / (512 * 9)) ** 0.5
    default_std = (1 / 3 / (512 * 9)) ** 0.5  # U(-b, b), b = 1 / sqrt(fan_in)
    assert first_conv_std("kaiming") == pytest.approx(fan_out_std, rel=0.02)
    expected = default_std if arch == "resnet18_cifar" else fan_out_std
    assert first_conv_std("official") == pytest.approx(expected, rel=0.02)
    with pytest.raises(ValueError, match="init"):
        ResNet18(init="xavier")


def test_jitter_hue_reaches_the_augmentation(train_images: torch.Tensor) -> None:
    """The official hue shift is 0.1 * 255 / 360 of the circle; the paper's SimCLR uses 0.1."""
    official = Trainer(tiny_cfg("csi"), train_images, dissolve=None, seed=0)
    assert official.augment.jitter[3] == pytest.approx(0.0708333, abs=1e-6)
    paper = Trainer(tiny_cfg("csi", jitter_hue=0.1), train_images, dissolve=None, seed=0)
    assert paper.augment.jitter[3] == 0.1
    x = train_images[:4]
    a = official.augment(x, torch.Generator().manual_seed(1))
    b = paper.augment(x, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)


def test_the_schedule_counts_the_periodic_evaluations() -> None:
    """After epochs 10, 20, ..., 190 of 200 (the final model is scored by the score stage)."""
    assert schedule(tiny_cfg("csi", epochs=200, eval_every_epochs=10)).evaluations() == 19
    assert schedule(tiny_cfg("csi", epochs=200, eval_every_epochs=0)).evaluations() == 0
