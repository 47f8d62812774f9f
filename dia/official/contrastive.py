"""``impl: official``: CSI and DIA trained and scored by the official DIA repository's own code.

The official training step (``training/unsup/simclr_DIA.train`` or the repository's
``simclr_CSI.train``), network (``models.classifier``), SimCLR augmentation, shift and dissolving
layers, warm-up scheduler and CSI score (``evals/ood_pre``) run on this pipeline's prepared
arrays, splits and diffusion model, at the config's budget. Only the glue is ours: a DataLoader
over the training normals, the official optimiser's update (torchlars' CUDA extension does not
build on today's toolchains; the same rule from timm, checked equal in tests/test_optim.py),
epoch-level checkpoints, and the files every run writes.

One official behaviour is kept out of training on purpose. The official evaluation reseeds the
global RNGs (sample s of every batch is drawn after ``set_random_seed(s)``), and the official
``train.py`` evaluates between epochs, so after its first evaluation every run draws the same
shuffles, augmentations and dissolving steps whatever its seed: its seeds stop being independent
samples. Here an in-training evaluation leaves the global RNGs as it found them, and each seed
trains on its own draws, as native runs do.

Settings the official code cannot express (another temperature, the paper's loss normaliser, a
dissolve cache, per-image t, ...) are refused with the keys named, so an official run never
silently differs from its config.
"""

from __future__ import annotations

import random
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dia.checkpoint import global_rng_state, load_state, set_global_rng_state
from dia.config import OFFICIAL_HUE, ContrastiveConfig, DissolveConfig, ScoreConfig
from dia.contrastive.optim import lars
from dia.contrastive.train import batches_per_epoch, schedule
from dia.data.prepare import ImageBatches
from dia.diffusion.model import load_diffusion
from dia.errors import DiaError
from dia.io import atomic_path
from dia.official.imports import import_official
from dia.progress import progress
from dia.training import TrainState, check_finite

MODULES = (
    "models.classifier",
    "models.transform_layers",
    "training.scheduler",
    "training.unsup.simclr_DIA",
    "training.unsup.simclr_CSI",
    "evals.ood_pre",
)
ARCHS = {"resnet18_cifar": "resnet18", "resnet18_imagenet": "resnet18_imagenet"}
# What the official code always does, as (section, key, value).
FIXED = (
    ("contrastive", "width", 64),
    ("contrastive", "temperature", 0.5),
    ("contrastive", "loss_normalizer", "all_views"),
    ("contrastive", "warmup_multiplier", 10.0),
    ("contrastive", "momentum", 0.9),
    ("contrastive", "lars_trust_coef", 1e-3),
    ("contrastive", "jitter_p", 0.8),
    ("contrastive", "gray_p", 0.2),
    ("contrastive", "jitter_hue", OFFICIAL_HUE),
    ("contrastive", "jitter_hue_from", "atan2"),
    ("contrastive", "resnet_init", "official"),
    ("contrastive", "drop_last", False),
    ("contrastive", "dissolve_source", "online"),
    ("contrastive", "precision", "fp32"),
    ("contrastive", "channels_last", False),
    ("contrastive", "compile", False),
    ("dissolve", "kind", "diffusion"),
    ("dissolve", "input_scaling", "unit"),
    ("dissolve", "weights", "online"),
    ("dissolve", "t_sampling", "per_batch_shift"),
    ("dissolve", "cache_t_stride", 1),
    ("dissolve", "flip", "before"),
    ("dissolve", "precision", "fp32"),
    ("score", "flip", "per_shift"),
    ("score", "selection_ties", "earlier"),
)


def check_expressible(
    cfg: ContrastiveConfig, dissolve_cfg: DissolveConfig, score: ScoreConfig
) -> None:
    """Stop naming every setting the official code cannot run with."""
    sections = {"contrastive": cfg, "dissolve": dissolve_cfg, "score": score}
    wrong = [
        f"{section}.{key}: {getattr(sections[section], key)!r} (official: {value!r})"
        for section, key, value in FIXED
        if not (section == "dissolve" and cfg.method == "csi")
        and getattr(sections[section], key) != value
    ]
    if cfg.max_batches_per_epoch is None:
        wrong.append("contrastive.max_batches_per_epoch: None (official: a cap, 201)")
    if cfg.warmup_epochs <= 0:
        wrong.append(f"contrastive.warmup_epochs: {cfg.warmup_epochs} (official: > 0)")
    if wrong:
        raise DiaError("impl: official cannot run with " + "; ".join(wrong))


def _namespace(
    cfg: ContrastiveConfig, dissolve_cfg: DissolveConfig, score: ScoreConfig, *, scoring: bool
) -> types.SimpleNamespace:
    """The official argparse namespace ``P``: training crops (crop_scale_min, 1), or the score's."""
    return types.SimpleNamespace(
        model=ARCHS[cfg.arch],
        dataset="data",
        K_shift=4,
        sim_lambda=1.0,
        n_gpus=1,
        multi_gpu=False,
        resize_factor=score.crop_scale if scoring else cfg.crop_scale_min,
        resize_fix=score.crop_fixed if scoring else False,
        diffusion_scheduler="uniform",
        # t = int(100 (a + (b - a) u)), u ~ U(0, 1): a = t_min / 100, b = (t_max + 1) / 100
        diffusion_offset=dissolve_cfg.t_min / 100,
        diffusion_upper_offset=(dissolve_cfg.t_max + 1) / 100,
        loss_mode="shifted_removed",
        load_path="unused/model.pt",
        ood_samples=score.samples,
        ood_layer=["simclr", "shift"],
        one_class_idx=None,
        print_score=False,
    )


def _fits(dissolve_cfg: DissolveConfig, image_size: int) -> tuple[nn.Module, nn.Module]:
    """The pre- and post-processing ``models.classifier.get_shift_module`` picks per dataset;
    a resize goes back to the network's input size, which the official code fixes at 224."""
    if dissolve_cfg.fit == "pad_crop":
        pad = (dissolve_cfg.resolution - image_size) // 2
        return T.Pad(pad), T.CenterCrop(image_size)
    if dissolve_cfg.resolution == image_size:
        return nn.Identity(), nn.Identity()
    return (
        T.Resize((dissolve_cfg.resolution, dissolve_cfg.resolution), antialias=False),
        T.Resize((image_size, image_size), antialias=False),
    )


@dataclass
class OfficialRun:
    """The official modules and objects of one run, built from our configs."""

    repo: Path
    cfg: ContrastiveConfig
    dissolve_cfg: DissolveConfig
    score: ScoreConfig
    device: str
    diffusion: Path | None = None
    modules: dict[str, types.ModuleType] = field(init=False)

    def __post_init__(self) -> None:
        check_expressible(self.cfg, self.dissolve_cfg, self.score)
        official_device = "cuda" if torch.cuda.is_available() else "cpu"
        if torch.device(self.device).type != official_device:
            raise DiaError(
                f"impl: official runs on {official_device} (the official modules pick the device "
                f"themselves); set device: auto instead of {self.device}"
            )
        self.modules = import_official(self.repo, *MODULES)
        self.tl = self.modules["models.transform_layers"]
        self.size = (self.cfg.image_size, self.cfg.image_size, 3)

    def augmentation(self, opts: types.SimpleNamespace) -> nn.Module:
        classifier = self.modules["models.classifier"]
        return classifier.get_simclr_augmentation(opts, image_size=self.size).to(self.device)

    def training_namespace(self) -> types.SimpleNamespace:
        """``P`` of the training loop, with its shift (and dissolving) transformation."""
        opts = _namespace(self.cfg, self.dissolve_cfg, self.score, scoring=False)
        opts.shift_trans = self._shift_trans()
        return opts

    def _shift_trans(self) -> nn.Module:
        transform = "rotation" if self.cfg.shift == "rotation" else "cutperm"
        if self.cfg.method == "csi":
            return self.tl.Rotation() if transform == "rotation" else self.tl.CutPerm()
        if self.diffusion is None:
            raise DiaError("impl: official DIA needs the diffusion model (dissolve_source online)")
        pre, post = _fits(self.dissolve_cfg, self.cfg.image_size)
        model = load_diffusion(self.diffusion, "online", self.device)
        return self.tl.DiffusionCustomTrans(
            model=model, pre_process=pre, post_process=post, transform=transform
        ).to(self.device)

    def build_model(self) -> nn.Module:
        classifier = self.modules["models.classifier"]
        model = classifier.get_classifier(ARCHS[self.cfg.arch], n_classes=2)
        return classifier.get_shift_classifer(model, 4).to(self.device)

    def scoring_namespace(self) -> types.SimpleNamespace:
        """``P`` of the evaluation: plain shifts (dissolving maps to rotation there, official
        ``train.py``) and the score's crops."""
        opts = _namespace(self.cfg, self.dissolve_cfg, self.score, scoring=True)
        opts.shift_trans = self.tl.Rotation() if self.cfg.shift == "rotation" else self.tl.CutPerm()
        return opts

    def anomaly_scores(
        self, model: nn.Module, train: ImageBatches, splits: dict[str, ImageBatches]
    ) -> dict[str, np.ndarray]:
        """Negated official CSI score of each split (higher = anomalous), statistics fitted on
        ``train`` by ``evals/ood_pre.eval_ood_detection``, scores by its ``get_scores``."""
        ood_pre = self.modules["evals.ood_pre"]
        opts = self.scoring_namespace()
        aug = self.augmentation(opts)

        def features(images: ImageBatches) -> dict[str, torch.Tensor]:
            loader = _loader(images, self.score.batch_size, shuffle=False)
            return ood_pre._get_features(
                opts, model, loader, simclr_aug=aug, sample_num=self.score.samples
            )

        feats = {"train": features(train)} | {name: features(x) for name, x in splits.items()}
        # eval_ood_detection fits the statistics on "<dataset>_train" features and also scores
        # "<dataset>" (unused here); it reads both through get_features.
        original = ood_pre.get_features
        ood_pre.get_features = lambda _p, name, *_a, **_kw: feats[
            "train" if name == f"{opts.dataset}_train" else next(iter(splits))
        ]
        try:
            ood_pre.eval_ood_detection(opts, model, None, {}, ["CSI"], None, aug)
        finally:
            ood_pre.get_features = original
        return {name: -ood_pre.get_scores(opts, feats[name], "CSI").numpy() for name in splits}


class _Images(Dataset):
    """(image in [0, 1], label 0) pairs, decoded from uint8 one at a time like image files."""

    def __init__(self, images: ImageBatches) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[np.array([index])][0], 0


def _loader(images: ImageBatches, batch_size: int, *, shuffle: bool) -> DataLoader:
    """As the official loaders: the shuffle draws from the global torch RNG."""
    return DataLoader(_Images(images), batch_size=batch_size, shuffle=shuffle)


class _Counted:
    """A loader that advances a progress bar for every batch the official loop draws from it
    (the loop itself prints nothing a log could show)."""

    def __init__(self, loader: DataLoader, bar: Any) -> None:
        self.loader, self.bar = loader, bar

    def __iter__(self) -> Any:
        for batch in self.loader:
            yield batch
            self.bar.update()

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class _Logger:
    """Collects the epoch averages the official loop reports through its logger."""

    def __init__(self) -> None:
        self.scalars: dict[str, float] = {}

    def log(self, *_args: Any) -> None:
        pass

    def scalar_summary(self, tag: str, value: float, _step: int) -> None:
        self.scalars[tag.removeprefix("train/")] = float(value)


def seed_everything(seed: int) -> None:
    """The official code sets no training seed; seeding its global RNGs makes runs repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_official(
    run: OfficialRun,
    normals: ImageBatches,
    *,
    seed: int,
    state_dir: Path,
    evaluate: Callable[[nn.Module], dict[str, np.ndarray]] | None,
) -> tuple[nn.Module, TrainState]:
    """Train with the official loop, one official ``train(P, epoch, ...)`` call per epoch.

    Resumable at epoch boundaries from ``state_dir/last.pt``.
    """
    cfg = run.cfg
    seed_everything(seed)
    model = run.build_model()
    optimizer, scheduler, linear_optim = _optimizers(run, model)
    evaluated = schedule(cfg).evaluates_after
    opts = run.training_namespace()
    step = partial(
        run.modules[f"training.unsup.simclr_{cfg.method.upper()}"].train,
        simclr_aug=run.augmentation(opts),
        linear=model.linear,
        linear_optim=linear_optim,
        num_batches_per_epoch=cfg.max_batches_per_epoch - 1,  # it stops after n >= this
    )
    state_file = state_dir / "last.pt"
    state = _load(state_file, model, optimizer, scheduler, linear_optim)
    per_epoch = batches_per_epoch(cfg, len(normals))
    # The official loop steps its scheduler with an explicit epoch, which torch deprecates.
    warnings.filterwarnings("ignore", "The epoch parameter in `scheduler.step", UserWarning)
    name = f"{cfg.method} (official)"
    bar = progress(cfg.epochs * per_epoch, name, initial=state.step)
    loader = _Counted(_loader(normals, cfg.batch_size, shuffle=True), bar)
    while state.epoch < cfg.epochs:
        logger = _Logger()
        started = time.perf_counter()
        model.train()
        criterion = nn.CrossEntropyLoss()
        step(opts, state.epoch + 1, model, criterion, optimizer, scheduler, loader, logger=logger)
        state.epoch += 1
        state.step += per_epoch
        _log_epoch(state, logger.scalars, optimizer, time.perf_counter() - started, name)
        bar.n = state.step  # the official loop may draw one batch more than it trains on
        bar.set_postfix(epoch=state.epoch, loss=f"{state.log[-1]['loss']:.3f}")
        if evaluate and evaluated(state.epoch):
            state.evals.append((state.epoch, _aside(evaluate, model)))
        _save(state_file, model, optimizer, scheduler, linear_optim, state)
    bar.close()
    return model, state


def _aside(
    evaluate: Callable[[nn.Module], dict[str, np.ndarray]], model: nn.Module
) -> dict[str, np.ndarray]:
    """``evaluate(model)`` with the global RNGs restored afterwards (see the module's docstring)."""
    rng = global_rng_state()
    try:
        return evaluate(model)
    finally:
        set_global_rng_state(rng)


def _optimizers(run: OfficialRun, model: nn.Module) -> tuple[Any, Any, Any]:
    """Their LARS under GradualWarmupScheduler + cosine, and the Adam of the linear head."""
    cfg = run.cfg
    optimizer = lars(model.parameters(), cfg)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, cfg.lr_cosine_epochs or cfg.epochs
    )
    scheduler = run.modules["training.scheduler"].GradualWarmupScheduler(
        optimizer, multiplier=10.0, total_epoch=cfg.warmup_epochs, after_scheduler=cosine
    )
    linear_optim = torch.optim.Adam(
        model.linear.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=cfg.weight_decay
    )
    return optimizer, scheduler, linear_optim


def _log_epoch(
    state: TrainState, scalars: dict[str, float], optimizer: Any, seconds: float, name: str
) -> None:
    """The log row of the epoch just trained, from the losses their logger received; a
    non-finite loss stops the run."""
    sim, shift = scalars.get("loss_sim", np.nan), scalars.get("loss_shift", np.nan)
    losses = {"loss": sim + shift, "loss_con": sim, "loss_cls": shift}
    check_finite(losses, name=name, where=f"epoch {state.epoch}", knob="contrastive.lr")
    state.log.append(
        {
            "epoch": state.epoch,
            "step": state.step,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            **losses,
        }
    )


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The warm-up scheduler's own fields (not its optimiser) and its cosine's state."""
    own = {k: v for k, v in vars(scheduler).items() if k not in ("optimizer", "after_scheduler")}
    return {"own": own, "after": scheduler.after_scheduler.state_dict()}


def _save(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    linear_optim: torch.optim.Optimizer,
    state: TrainState,
) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": _scheduler_state(scheduler),
                "linear_optim": linear_optim.state_dict(),
                "rng": global_rng_state(),
                "state": state.to_dict(),
            },
            tmp,
        )


def _load(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    linear_optim: torch.optim.Optimizer,
) -> TrainState:
    """The training state saved in ``path`` loaded into the model and optimisers (none: a new
    state)."""
    ckpt = load_state(path)
    if ckpt is None:
        return TrainState()
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    vars(scheduler).update(ckpt["scheduler"]["own"])
    scheduler.after_scheduler.load_state_dict(ckpt["scheduler"]["after"])
    linear_optim.load_state_dict(ckpt["linear_optim"])
    set_global_rng_state(ckpt["rng"])
    return TrainState.from_dict(ckpt["state"])
