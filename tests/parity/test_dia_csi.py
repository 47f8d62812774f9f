"""Our DIA and CSI against the official code (shijianjian/DIA and alinlab/CSI at their pinned
commits), with the same weights and inputs, each with a stated tolerance.

Run with ``DIA_OFFICIAL_REPOS`` naming a folder of snapshots (README, "Parity with the official
code"); without it every test here skips.
"""

from __future__ import annotations

import re
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from ema_pytorch import EMA

from dia.config import DiffusionConfig, DissolveConfig
from dia.contrastive.augment import SimCLRAugment, _adjust_contrast, _adjust_hsv
from dia.contrastive.loss import contrastive_loss
from dia.contrastive.optim import step_position, warmup_cosine_lr
from dia.contrastive.resnet import ResNet18
from dia.contrastive.shifts import NUM_SHIFTS, SHIFTS
from dia.contrastive.views import make_views
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import build_diffusion, save_diffusion
from dia.evaluation.metrics import auroc
from dia.evaluation.score import ShiftFeatures, fit_statistics, normality_scores
from dia.official.contrastive import ARCHS
from tests.parity.conftest import randomise_batch_norms

K = NUM_SHIFTS


def projections(n_branches: int, b: int = 3, d: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(n_branches)
    return torch.randn(n_branches * K * b, d, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("method", ["csi", "dia"])
def test_contrastive_loss_and_gradient(method: str, dia_official, csi_official) -> None:
    """CSI: NT_xent (alinlab/CSI); DIA: NT_xent_neg, mode shifted_removed (the official default).
    Values and gradients to 1e-12 in float64."""
    utils = dia_official("utils.utils")["utils.utils"]
    n_branches = 3 if method == "dia" else 2
    z_ours = projections(n_branches).requires_grad_()
    z_ref = z_ours.detach().clone().requires_grad_()
    if method == "csi":
        loss_module = csi_official("training.contrastive_loss")["training.contrastive_loss"]
        sim = loss_module.get_similarity_matrix(utils.normalize(z_ref), chunk=2)
        ref = loss_module.NT_xent(sim, temperature=0.5, chunk=2)
    else:
        loss_module = dia_official("training.contrastive_loss")["training.contrastive_loss"]
        sim = loss_module.get_similarity_matrix(utils.normalize(z_ref), chunk=3)
        ref = loss_module.NT_xent_neg(sim, temperature=0.5, chunk=3, mode="shifted_removed")
    ours = contrastive_loss(z_ours, n_branches=n_branches, temperature=0.5)
    assert abs(ours.item() - ref.item()) < 1e-12
    ours.backward()
    ref.backward()
    torch.testing.assert_close(z_ours.grad, z_ref.grad, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore")  # torch deprecates step(epoch), which the official code uses
@pytest.mark.parametrize(
    ("epochs", "cosine_epochs", "batches", "trained"),
    [(30, 1000, 7, 7), (20, 20, 5, 5), (15, 15, 10, 3)],
)
def test_warmup_cosine_schedule(
    dia_official, epochs: int, cosine_epochs: int, batches: int, trained: int
) -> None:
    """GradualWarmupScheduler(x10, 10 epochs) over CosineAnnealingLR(T_max = --epochs), stepped
    after every iteration at epoch - 1 + n / len(loader) (common/train.py, simclr_DIA.train),
    also when the loop stops after ``trained`` of the loader's ``batches`` (num_batches_per_epoch):
    the rate each official iteration uses equals ours to 1e-12, except the first iteration after
    warm-up: there the official chain returns torch's recursive cosine form instead of the
    closed one (measured: 2.5e-6 above it with T_max 1000, 6.4e-3 with T_max 20, 1.1e-2 with T_max
    15 and 3 of 10 batches)."""
    scheduler = dia_official("training.scheduler")["training.scheduler"]
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cosine_epochs)
    warmup = scheduler.GradualWarmupScheduler(
        optimizer, multiplier=10.0, total_epoch=10, after_scheduler=cosine
    )
    used = []
    for epoch in range(1, epochs + 1):
        for n in range(trained):
            used.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            warmup.step(epoch - 1 + n / batches)
    ours = [
        warmup_cosine_lr(
            step_position(e, n, trained=trained, per_pass=batches),
            base_lr=0.1,
            warmup_epochs=10,
            warmup_multiplier=10,
            total_epochs=cosine_epochs,
        )
        for e in range(epochs)
        for n in range(trained)
    ]
    first_after_warmup = 10 * trained + 2
    np.testing.assert_allclose(used[first_after_warmup], ours[first_after_warmup], rtol=2e-2)
    del used[first_after_warmup], ours[first_after_warmup]
    np.testing.assert_allclose(used, ours, rtol=0, atol=1e-12)


def test_csi_score(dia_official, monkeypatch) -> None:
    """evals/ood_pre.eval_ood_detection fits the axes and weights on the training features and
    get_scores scores the test features; ours from the same per-sample features: scores to 1e-6
    relative, AUROC equal."""
    ood_pre = dia_official("evals.ood_pre")["evals.ood_pre"]
    gen = torch.Generator().manual_seed(0)
    t, d = 3, 8

    def raw(n: int, shift: float = 0.0) -> dict[str, torch.Tensor]:
        sim = torch.randn(n, K, t, d, generator=gen) + shift
        logits = torch.randn(n, K, t, K, generator=gen) + 2.0  # positive mean logits
        return {"simclr": sim.reshape(n, K * t, d), "shift": logits.reshape(n, K * t, K)}

    feats = {"data_train": raw(12), "data": raw(6), "anomaly": raw(5, shift=0.5)}
    monkeypatch.setattr(ood_pre, "get_features", lambda _p, name, *a, **kw: feats[name])
    opts = types.SimpleNamespace(
        load_path="model.pt",
        ood_samples=t,
        resize_fix=True,
        resize_factor=0.54,
        ood_layer=["simclr", "shift"],
        K_shift=K,
        dataset="data",
        one_class_idx=0,
        print_score=False,
    )
    official = ood_pre.eval_ood_detection(
        opts, None, None, {"anomaly": None}, ["CSI"], None, object()
    )

    def ours(name: str) -> ShiftFeatures:
        f = feats[name]
        n = len(f["simclr"])
        sim = f["simclr"].view(n, K, t, d).mean(2)
        logits = f["shift"].view(n, K, t, K).mean(2)
        return ShiftFeatures(sim, logits[:, torch.arange(K), torch.arange(K)])

    stats = fit_statistics(ours("data_train"))
    for name in ("data", "anomaly"):
        ref = ood_pre.get_scores(opts, feats[name], "CSI")
        torch.testing.assert_close(normality_scores(stats, ours(name)), ref, rtol=1e-6, atol=1e-6)
    labels = np.r_[np.zeros(6), np.ones(5)]
    scores = -torch.cat([normality_scores(stats, ours(n)) for n in ("data", "anomaly")]).numpy()
    assert auroc(labels, scores) == pytest.approx(official["anomaly"]["CSI"], abs=1e-12)


@pytest.fixture(scope="module")
def paper_diffusion_model(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A randomly initialised diffusion model at the official width, saved as our pipeline
    saves it (the official loader reads its "model" key)."""
    torch.manual_seed(0)
    cfg = DiffusionConfig()
    diffusion = build_diffusion(cfg).eval()
    path = tmp_path_factory.mktemp("diffusion") / "model.pt"
    save_diffusion(path, diffusion, EMA(diffusion).ema_model, cfg)
    return path, diffusion


@pytest.mark.parametrize(
    ("dataset", "size", "fit"), [("pneumoniamnist", 28, "pad_crop"), ("covid", 64, "resize")]
)
def test_dissolving_through_the_official_shift_module(
    dia_official, paper_diffusion_model, dataset: str, size: int, fit: str
) -> None:
    """models/classifier.get_shift_module builds DiffusionCustomTrans from our checkpoint; with t
    fixed (random=False) its dissolved, rotated views equal ours to 1e-5. (The official
    post-processing resizes to 224; ``covid`` is checked at 224 too.)"""
    modules = dia_official("models.classifier")
    path, diffusion = paper_diffusion_model
    opts = types.SimpleNamespace(
        mode="simclr_DIA",
        shift_trans_type="diffusion_rotation",
        dataset=dataset,
        diff_resolution=32,
        diffusion_model_path=str(path),
        kernel_size=7,
        resize_to_constant=False,
    )
    shift_module, k_shift = modules["models.classifier"].get_shift_module(opts, eval=True)
    assert k_shift == K
    image = 224 if fit == "resize" else size
    x = torch.rand(2, 3, image, image, generator=torch.Generator().manual_seed(1))
    dissolver = Dissolver(diffusion, DissolveConfig(fit=fit, resolution=32), image_size=image)
    for t in (30, 60, 99):
        ours = dissolver(x, torch.full((2,), t))
        for k in range(K):
            with torch.no_grad():
                ref = shift_module(x, k, diffusion=True, diffusion_offset=t / 100, random=False)
            torch.testing.assert_close(SHIFTS["rotation"](ours, k), ref, rtol=1e-5, atol=1e-5)


def test_colour_jitter_grayscale_and_crop_given_the_same_draws(dia_official) -> None:
    """ColorJitterLayer's contrast and HSV steps (atan2 hue shifted by f_h * 255 / 360, hexcone
    back), RandomColorGrayLayer and
    RandomResizedCropLayer's affine zoom, fed the factors, masks and boxes our layer draws."""
    tl = dia_official("models.transform_layers")["models.transform_layers"]
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 20, 20, generator=gen)
    jitter = tl.ColorJitterLayer(p=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)

    torch.manual_seed(3)
    ref = jitter.adjust_contrast(x.clone())
    torch.manual_seed(3)
    factor = x.new_empty(6, 1, 1, 1).uniform_(0.6, 1.4)
    torch.testing.assert_close(_adjust_contrast(x, factor), ref, rtol=0, atol=1e-6)

    f_h = torch.empty(6, 1, 1).uniform_(-0.1, 0.1, generator=gen)
    f_s = torch.empty(6, 1, 1).uniform_(0.6, 1.4, generator=gen)
    f_v = torch.empty(6, 1, 1).uniform_(0.6, 1.4, generator=gen)
    ref = tl.RandomHSVFunction.apply(x.clone(), f_h, f_s, f_v)
    ours = _adjust_hsv(x, f_h * 255 / 360, f_s, f_v, "atan2")
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)

    gray = tl.RandomColorGrayLayer(p=0.2)(x, aug_index=1)
    ours_gray = SimCLRAugment(image_size=20, jitter_p=0.0, gray_p=1.0)._grayscale(x, gen)
    torch.testing.assert_close(ours_gray, gray, rtol=0, atol=1e-6)

    aug = SimCLRAugment(image_size=20)
    top, left, box_h, box_w = aug._crop_boxes(6, 20, 20, gen, x.device)
    whbias = torch.stack(
        [box_w / 20, box_h / 20, (2 * left + box_w) / 20 - 1, (2 * top + box_h) / 20 - 1], 1
    ).double()
    ref = tl.RandomResizedCropLayer(size=(20, 20, 3)).double()(x.double(), whbias).float()
    gen_replay = torch.Generator().manual_seed(7)
    aug._crop_boxes = lambda *a: (top, left, box_h, box_w)  # type: ignore[method-assign]
    torch.testing.assert_close(aug._resized_crop(x, gen_replay), ref, rtol=0, atol=1e-5)


class _Probe(torch.nn.Module):
    """Stands in for the official ResNet: records the views it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 8)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, **_: bool) -> tuple[None, dict[str, torch.Tensor]]:
        self.seen.append(x.detach().clone())
        f = self.head(x.mean((2, 3)))
        return None, {"simclr": f, "shift": f[:, :K], "penultimate": f}


def _official_step(dia_official, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Dissolver]:
    """The views and shift labels one step of the official training/unsup/simclr_DIA.train
    gives a probe network (identity SimCLR augmentation, t in [30, 99]), and our dissolver with
    the same diffusion weights."""
    modules = dia_official("training.unsup.simclr_DIA", "models.transform_layers")
    tl = modules["models.transform_layers"]
    torch.manual_seed(0)
    diffusion = build_diffusion(DiffusionConfig(dim=8, dim_mults=(1, 2), resolution=32)).eval()
    shift = tl.DiffusionCustomTrans(
        model=diffusion, pre_process=T.Pad(2), post_process=T.CenterCrop(28)
    )
    opts = types.SimpleNamespace(
        sim_lambda=1.0,
        K_shift=K,
        model="resnet18",
        dataset="pneumoniamnist",
        n_gpus=1,
        multi_gpu=False,
        diffusion_scheduler="uniform",
        shift_trans=shift,
        diffusion_offset=0.3,
        diffusion_upper_offset=1.0,
        loss_mode="shifted_removed",
    )
    b = len(x)
    probe = _Probe()
    labels_seen: list[torch.Tensor] = []
    ce = torch.nn.CrossEntropyLoss()

    def criterion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels_seen.append(labels.clone())
        return ce(logits, labels)

    linear = torch.nn.Linear(8, 2)
    modules["training.unsup.simclr_DIA"].train(
        opts,
        1,
        probe,
        criterion,
        torch.optim.SGD(probe.parameters(), lr=0.1),
        types.SimpleNamespace(step=lambda *a: None),
        [(x, torch.zeros(b, dtype=torch.long))],
        logger=types.SimpleNamespace(log=lambda *a: None, scalar_summary=lambda *a: None),
        simclr_aug=torch.nn.Identity(),
        linear=linear,
        linear_optim=torch.optim.SGD(linear.parameters(), lr=0.1),
        num_batches_per_epoch=0,
    )
    dissolver = Dissolver(diffusion, DissolveConfig(fit="pad_crop"), image_size=28)
    return probe.seen[0], labels_seen[0], dissolver


class _Dissolved:
    """D(x, t) and D(flip x, t) for every t the official step draws (30..99), to tell which t
    and which order made each block of dissolved views."""

    def __init__(self, dissolver: Dissolver, x: torch.Tensor) -> None:
        full = partial(torch.full, (len(x),))
        self.plain = {t: dissolver(x, full(t)) for t in range(30, 100)}
        self.flipped = {t: dissolver(x.flip(-1), full(t)) for t in range(30, 100)}

    def flipped_first(self, block: torch.Tensor, k: int, t: int) -> bool:
        """Every view of ``block`` is D(x_i, t) or D(flip x_i, t), rotated by k."""
        rotate = SHIFTS["rotation"]
        both = rotate(self.plain[t], k), rotate(self.flipped[t], k)
        return all(
            any(torch.allclose(v, d[i], atol=1e-5) for d in both) for i, v in enumerate(block)
        )

    def t_of_blocks(self, dissolved_views: torch.Tensor) -> list[int]:
        """The one t of each of the K blocks, each made in the official order."""
        out = []
        for k, block in enumerate(dissolved_views.chunk(K)):
            matches = [t for t in self.plain if self.flipped_first(block, k, t)]
            assert len(matches) == 1, (k, matches)
            out.append(matches[0])
        return out


def test_dia_training_step_views_and_shift_labels(dia_official) -> None:
    """One official DIA step: the views are [O | O' | A], k-major, A_k the image dissolved at
    one t in [30, 99] per shift and rotated by k, shift labels k repeated over the branches;
    our make_views gives the same layout. Images are mirror-symmetric, so that the random flips
    (drawn from different generators) cannot hide a difference."""
    b = 3
    x = torch.rand(b, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    x = (x + x.flip(-1)) / 2
    views, official_labels, dissolver = _official_step(dia_official, x)
    n = K * b
    assert views.shape == (3 * n, 3, 28, 28)
    assert torch.equal(official_labels, torch.arange(K).repeat_interleave(b).repeat(3))
    rotate = SHIFTS["rotation"]
    for branch in (0, 1):
        for k in range(K):
            torch.testing.assert_close(
                views[branch * n + k * b : branch * n + (k + 1) * b], rotate(x, k)
            )
    dissolved = _Dissolved(dissolver, x)  # x is symmetric: D(flip x, t) = D(x, t)
    t_of_shift = dissolved.t_of_blocks(views[2 * n :])
    calls = iter(t_of_shift)

    def same_t(index: torch.Tensor, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return dissolver(images, torch.full((len(images),), next(calls)))

    ours, labels = make_views(
        x,
        torch.arange(b),
        shift="rotation",
        dissolve=same_t,
        rng=torch.Generator(),
        aug_rng=torch.Generator(),
    )
    assert torch.equal(labels, official_labels)
    torch.testing.assert_close(ours[: 2 * n], views[: 2 * n])
    for k, t in enumerate(t_of_shift):  # dissolve.flip 'after' (default): a flipped D(x, t)
        for i in range(b):
            view, d = ours[2 * n + k * b + i], dissolved.plain[t][i]
            assert any(torch.allclose(view, rotate(e, k), atol=1e-5) for e in (d, d.flip(-1)))


@pytest.mark.parametrize("flip_first", [True, False])
def test_dia_step_flips_before_dissolving_as_dissolve_flip_before_does(
    dia_official, flip_first: bool
) -> None:
    """Images that are not mirror-symmetric, and a diffusion model that does not commute with
    the flip: every dissolved view of the official step is D(x, t) or D(flip x, t), rotated, and
    so is every one of ours with ``flip_first`` (``dissolve.flip: before``); flipping after
    dissolving gives flip(D(x, t)) instead, which is neither."""
    b = 8
    x = torch.rand(b, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    views, _, dissolver = _official_step(dia_official, x)
    n = K * b
    dissolved = _Dissolved(dissolver, x)
    assert not torch.allclose(dissolved.plain[30].flip(-1), dissolved.flipped[30], atol=1e-3)
    t_of_shift = dissolved.t_of_blocks(views[2 * n :])
    calls = iter(t_of_shift)
    ours, _ = make_views(
        x,
        torch.arange(b),
        shift="rotation",
        dissolve=lambda _index, images, _rng: dissolver(
            images, torch.full((len(images),), next(calls))
        ),
        rng=torch.Generator(),
        aug_rng=torch.Generator().manual_seed(0),
        flip_first=flip_first,
    )
    ours_in_order = [
        dissolved.flipped_first(block, k, t)
        for k, (block, t) in enumerate(zip(ours[2 * n :].chunk(K), t_of_shift, strict=True))
    ]
    assert all(ours_in_order) == flip_first


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official ResNet-18's weights under our names. Its ``linear`` (the linear-evaluation
    head, trained on detached features) and ``joint_distribution_layer`` feed no loss and no
    score, and ours has neither."""
    renames = [
        (r"^conv1\.", "stem.0."),
        (r"^bn1\.", "stem.1."),
        (r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}."),
        (r"\.downsample\.", ".shortcut."),
        (r"^simclr_layer\.", "projection."),
        (r"^shift_cls_layer\.", "shift_head."),
    ]
    ours = {}
    for key, value in state.items():
        if key.startswith(("linear.", "joint_distribution_layer.")):
            continue
        for pattern, name in renames:
            key = re.sub(pattern, name, key)
        ours[key] = value
    return ours


@pytest.mark.parametrize(("arch", "size"), [("resnet18_cifar", 28), ("resnet18_imagenet", 64)])
def test_resnet18_and_heads_equal_the_official_network(dia_official, arch: str, size: int) -> None:
    """models.classifier's network with K = 4 shift logits, its weights loaded into ours: the
    same penultimate features, SimCLR projections and shift logits in eval mode (the score) and
    in train mode (batch statistics, as in training), to 1e-5."""
    classifier = dia_official("models.classifier")["models.classifier"]
    torch.manual_seed(0)
    official = classifier.get_shift_classifer(classifier.get_classifier(ARCHS[arch], 2), K)
    randomise_batch_norms(official)
    ours = ResNet18(arch=arch)
    ours.load_state_dict(official_to_ours(official.state_dict()))
    x = torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(4))
    for train in (False, True):
        official.train(train)
        ours.train(train)
        with torch.no_grad():
            _, ref = official(x, penultimate=True, simclr=True, shift=True)
            out = ours(x)
        for name, value in zip(("penultimate", "simclr", "shift"), out, strict=True):
            torch.testing.assert_close(value, ref[name], rtol=1e-5, atol=1e-5, msg=name)


def test_crop_boxes_follow_the_official_law(dia_official) -> None:
    """RandomResizedCropLayer draws boxes from the global NumPy RNG (the first valid ones of
    N x 10 trials), ours from a generator (the first valid of each image's 10 trials): over
    20,000 boxes each, box sides and centres have the same deciles (to one pixel: the sides are
    whole pixels), and the centres spread alike. Both draw a corner uniformly over half-pixel
    steps, so a centre c (in pixels from the middle) of a box n pixels short of the side has
    E[c^2] = n (n + 1) / 12; torchvision's whole-pixel corners would give n (n + 2) / 12, about
    10% more at the typical n."""
    tl = dia_official("models.transform_layers")["models.transform_layers"]
    n, side = 20_000, 28
    np.random.seed(0)
    official = (
        tl.RandomResizedCropLayer(scale=(0.08, 1.0))
        ._sample_latent(torch.zeros(n, 3, side, side))
        .double()
    )
    top, left, box_h, box_w = SimCLRAugment(image_size=side)._crop_boxes(
        n, side, side, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    ours = torch.stack(
        [box_w / side, box_h / side, (2 * left + box_w) / side - 1, (2 * top + box_h) / side - 1],
        1,
    ).double()
    deciles = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    torch.testing.assert_close(
        ours.quantile(deciles, dim=0), official.quantile(deciles, dim=0), rtol=0, atol=1.001 / side
    )
    for boxes in (ours, official):
        short = side * (1 - boxes[:, :2])
        centre = side / 2 * boxes[:, 2:]
        moved = short > 0
        ratio = (centre[moved] ** 2 / (short[moved] * (short[moved] + 1) / 12)).mean()
        assert ratio.item() == pytest.approx(1.0, abs=0.03)
