"""Transformaly baseline: shapes, training, determinism, score orientation, frozen teacher, config,
and the closed-form density against sklearn's PCA + GaussianMixture of the official eval.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dia.baselines.base import fit_baseline, score_images
from dia.baselines.transformaly import Transformaly, TransformalyConfig, _Gaussian, _Whitening
from dia.data.prepare import ImageBatches
from dia.errors import DiaError
from tests.baseline_checks import fixed_batch_losses

TINY = {"backbone": "vit_tiny_patch16_224", "image_size": 32, "pretrained": False}


def _model(seed: int = 0, **changes: object) -> Transformaly:
    torch.manual_seed(seed)
    return Transformaly(TransformalyConfig(**{**TINY, **changes}))


def _smooth(n: int, seed: int, size: int = 28) -> np.ndarray:
    """Near-uniform grey images with a faint horizontal gradient: the 'normal' class."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-20, 20, size)[None, None, :, None]
    base = rng.uniform(110, 140, size=(n, 1, 1, 1)) + ramp + rng.normal(0, 2, (n, size, size, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_shapes_and_gradient() -> None:
    model = _model()
    model.train()
    x = torch.rand(3, 3, 28, 28)
    loss = model.training_loss(x, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.student.parameters())
    model.fit_scoring(ImageBatches(_smooth(8, 0)), "cpu")
    model.eval()
    with torch.no_grad():
        scores = model.anomaly_score(x)
    assert scores.shape == (3,) and torch.isfinite(scores).all()


def test_optimisation_lowers_loss() -> None:
    model = _model()
    model.train()
    opt, sched = model.make_optimizer()
    assert sched is None and isinstance(opt, torch.optim.Adam)
    x = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    losses = fixed_batch_losses(model, x, 6)
    assert losses[-1] < 0.9 * losses[0]


def test_fit_baseline_is_deterministic(tmp_path) -> None:
    images = ImageBatches(_smooth(10, 0))
    test = ImageBatches(np.concatenate([_smooth(3, 1), _smooth(3, 2)]))
    runs = []
    for run in range(2):
        model = _model(seed=3, epochs=1, batch_size=4)
        fit_baseline(model, images, seed=5, device="cpu", state_dir=tmp_path / str(run))
        model.eval()
        model.fit_scoring(images, "cpu")
        runs.append(score_images(model, test, batch_size=4, device="cpu"))
    assert np.isfinite(runs[0]).all()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_dropout_is_drawn_from_rng() -> None:
    model = _model()
    model.train()
    x = torch.rand(2, 3, 28, 28)
    state = torch.get_rng_state()
    a = model.training_loss(x, torch.Generator().manual_seed(7))
    b = model.training_loss(x, torch.Generator().manual_seed(7))
    c = model.training_loss(x, torch.Generator().manual_seed(8))
    assert a.item() == b.item() != c.item()
    assert torch.equal(torch.get_rng_state(), state)


def test_student_blocks_see_teacher_inputs() -> None:
    """A student copied from the teacher reproduces every teacher block: zero loss and distance."""
    model = _model(student_from_teacher=True, dropout=0.0)
    model.train()
    x = torch.rand(2, 3, 28, 28)
    assert model.training_loss(x, torch.Generator().manual_seed(0)).item() == 0.0
    _, dists = model._features(x)
    assert dists.shape == (2, len(model.cfg.layers)) and torch.all(dists == 0)
    assert _model().training_loss(x, torch.Generator().manual_seed(0)).item() > 0.0


def test_anomalies_score_higher(tmp_path) -> None:
    normals = ImageBatches(_smooth(24, 0))
    model = _model(epochs=1, batch_size=8)
    fit_baseline(model, normals, seed=0, device="cpu", state_dir=tmp_path)
    model.eval()
    model.fit_scoring(normals, "cpu")
    held_out = _smooth(6, 1)
    rng = np.random.default_rng(2)
    noisy = rng.integers(0, 256, size=held_out.shape, dtype=np.uint8)
    square = held_out.copy()
    square[:, 8:20, 8:20] = 255
    score = lambda a: score_images(model, ImageBatches(a), batch_size=6, device="cpu")  # noqa: E731
    normal_mean = score(held_out).mean()
    assert score(noisy).mean() > normal_mean
    assert score(square).mean() > normal_mean


def test_teacher_stays_frozen() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model.train()
    assert not model.teacher.training and model.student.training
    assert not any(p.requires_grad for p in model.teacher.parameters())
    opt, _ = model.make_optimizer()
    loss = model.training_loss(torch.rand(2, 3, 28, 28), torch.Generator().manual_seed(0))
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.teacher.training


def test_config_defaults() -> None:
    cfg = TransformalyConfig()
    assert cfg.pretrained is True
    assert cfg.backbone == "vit_base_patch16_384.orig_in21k_ft_in1k"
    assert (cfg.image_size, cfg.epochs, cfg.batch_size, cfg.lr) == (384, 30, 32, 1e-4)
    assert cfg.layers == tuple(range(2, 12))
    assert cfg.whitening_threshold == 0.9 and cfg.dropout == 0.1
    assert cfg.student_from_teacher is False
    assert TransformalyConfig.from_dict({"layers": [3, 4]}).layers == (3, 4)
    with pytest.raises(DiaError):
        TransformalyConfig.from_dict({"unknown": 1})
    with pytest.raises(DiaError):
        Transformaly(TransformalyConfig(**{**TINY, "layers": (12,)}))


def test_density_matches_sklearn() -> None:
    """Whitening + Gaussian equal eval.py's PCA(whiten=True) + 1-component GaussianMixture,
    with eval.py's component count (index of the first cumulative ratio above the threshold)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12)) + 3.0
    test = rng.normal(size=(9, 12)) @ rng.normal(size=(12, 12))
    eig = np.sort(np.linalg.eigvalsh(np.cov(train.T)))[::-1]
    ratio = np.cumsum(eig) / eig.sum()
    k = int(np.argmax(ratio > 0.9))
    pca = PCA(n_components=k, svd_solver="full", whiten=True).fit(train)
    gmm = GaussianMixture(n_components=1, max_iter=1000).fit(pca.transform(train))

    whitening, gauss = _Whitening(), _Gaussian()
    whitening.fit(torch.from_numpy(train), 0.9)
    gauss.fit(whitening(torch.from_numpy(train)), 1e-6)
    assert whitening.projection.shape == (12, k)
    ours = gauss.log_prob(whitening(torch.from_numpy(test))).numpy()
    np.testing.assert_allclose(ours, gmm.score_samples(pca.transform(test)), rtol=1e-6)

    small = rng.normal(scale=1e-3, size=(40, 10)) + 0.01
    direct = _Gaussian()
    direct.fit(torch.from_numpy(small), 1e-6)
    ref = GaussianMixture(n_components=1, max_iter=500).fit(small).score_samples(small[:5])
    np.testing.assert_allclose(direct.log_prob(torch.from_numpy(small[:5])).numpy(), ref, rtol=1e-6)


def test_selection_loss_is_the_eval_mode_loss_averaged_over_batches() -> None:
    """The official selection's loss: training loss in eval mode (no dropout, so no draw from the
    run's generator), the mean of the per-batch means over batches of ``batch_size``."""
    model = _model(batch_size=4)
    model.train()
    images = ImageBatches(_smooth(10, 3))
    rng_state = torch.get_rng_state()
    loss = model.selection_loss(images, "cpu")
    assert model.training  # restored
    assert torch.equal(torch.get_rng_state(), rng_state)
    model.eval()
    with torch.no_grad():
        batches = [images[i : i + 4] for i in (0, 4, 8)]
        expected = [float(model.training_loss(b, torch.Generator())) for b in batches]
    assert loss == pytest.approx(sum(expected) / 3, rel=1e-6)
    assert loss != pytest.approx(model.training_loss(images[0:10], torch.Generator()).item())


def test_official_evaluation_schedule_is_epochs_1_6_11_and_so_on(tmp_path) -> None:
    """README --eval_every 5 with utils.train's ``(epoch - 1) % eval_every == 0``: epochs 1, 6,
    11 of a 12-epoch run (the final epoch is scored by the score stage), each with its loss."""
    model = _model(epochs=12, batch_size=5)
    images = ImageBatches(_smooth(10, 0))
    seen = []

    def evaluate(m: Transformaly) -> dict[str, np.ndarray]:
        seen.append(m.selection_loss(images, "cpu"))
        return {}

    state = fit_baseline(model, images, seed=0, device="cpu", state_dir=tmp_path, evaluate=evaluate)
    assert [epoch for epoch, _ in state.evals] == [1, 6, 11]
    assert len(seen) == 3 and all(np.isfinite(seen))
