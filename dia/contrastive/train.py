"""One training loop for CSI and DIA.

Per step: a batch of normal images becomes 2 (CSI) or 3 (DIA) branches of K shifted views, all
views get the SimCLR augmentation on the training device, and the loss is the (amplified)
NT-Xent plus the shift cross-entropy, optimised with LARS under warm-up + cosine. The loop
checkpoints to ``state_dir`` every ``checkpoint_every_steps`` steps and resumes from there, and it
can score the model every ``eval_every_epochs`` epochs for the ``val``/``test_oracle`` selection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dia.config import ContrastiveConfig
from dia.contrastive.augment import SimCLRAugment
from dia.contrastive.loss import contrastive_loss, shift_loss
from dia.contrastive.optim import LARS, set_lr, warmup_cosine_lr
from dia.contrastive.resnet import ResNet18
from dia.contrastive.views import DissolveFn, make_views
from dia.data.prepare import ImageBatches
from dia.io import atomic_path
from dia.progress import progress

EvalFn = Callable[[ResNet18], dict[str, np.ndarray]]


@dataclass
class TrainState:
    """Everything a resumed run needs besides the model and optimiser."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    perm: torch.Tensor | None = None
    log: list[dict[str, float]] = field(default_factory=list)
    evals: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=dict)


def build_model(cfg: ContrastiveConfig) -> ResNet18:
    return ResNet18(arch=cfg.arch, width=cfg.width, init=cfg.resnet_init)


def loader_batches(cfg: ContrastiveConfig, n_images: int) -> int:
    """Batches in one pass over the images, the last partial one included unless ``drop_last``
    (the official ``len(loader)``)."""
    n = n_images // cfg.batch_size if cfg.drop_last else -(-n_images // cfg.batch_size)
    return max(1, n)


def batches_per_epoch(cfg: ContrastiveConfig, n_images: int) -> int:
    """Batches trained per epoch: a pass, capped by ``max_batches_per_epoch`` (official: 201)."""
    n = loader_batches(cfg, n_images)
    return min(n, cfg.max_batches_per_epoch) if cfg.max_batches_per_epoch else n


class Trainer:
    """Holds model, optimiser, augmentation and RNGs so a step can run alone (benchmarks)."""

    def __init__(
        self,
        cfg: ContrastiveConfig,
        images: torch.Tensor | ImageBatches,
        *,
        dissolve: DissolveFn | None,
        seed: int,
        device: str = "cpu",
        dissolve_all: bool = False,
    ) -> None:
        if (cfg.method == "dia") != (dissolve is not None):
            raise ValueError("DIA needs a dissolve source and CSI must not have one")
        self.cfg, self.images, self.dissolve, self.device = cfg, images, dissolve, device
        self.dissolve_all = dissolve_all
        torch.manual_seed(seed)
        self.model = build_model(cfg).to(device)
        self.optimizer = LARS(
            self.model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            trust_coef=cfg.lars_trust_coef,
        )
        self.augment = SimCLRAugment(
            image_size=cfg.image_size,
            crop_scale=(cfg.crop_scale_min, 1.0),
            jitter_p=cfg.jitter_p,
            gray_p=cfg.gray_p,
            jitter=(0.4, 0.4, 0.4, cfg.jitter_hue),
            hue_from=cfg.jitter_hue_from,
        )
        self.rng = torch.Generator().manual_seed(seed)
        self.aug_rng = torch.Generator(device).manual_seed(seed + 1)
        self.n_branches = 3 if cfg.method == "dia" else 2

    def lr_at(self, epoch: float) -> float:
        cfg = self.cfg
        return warmup_cosine_lr(
            epoch,
            base_lr=cfg.lr,
            warmup_epochs=cfg.warmup_epochs,
            warmup_multiplier=cfg.warmup_multiplier,
            total_epochs=cfg.lr_cosine_epochs or cfg.epochs,
        )

    def step(self, index: torch.Tensor) -> dict[str, float]:
        """One optimisation step on the training images ``index``."""
        x = self.images[index].to(self.device)
        views, labels = make_views(
            x,
            index,
            shift=self.cfg.shift,
            dissolve=self.dissolve,
            rng=self.rng,
            aug_rng=self.aug_rng,
            dissolve_all=self.dissolve_all,
        )
        out = self.model(self.augment(views, self.aug_rng))
        loss_con = contrastive_loss(
            out.projection,
            n_branches=self.n_branches,
            temperature=self.cfg.temperature,
            normalizer=self.cfg.loss_normalizer,
        )
        loss_cls = shift_loss(out.shift_logits, labels)
        loss = loss_con + loss_cls
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "loss_con": loss_con.item(), "loss_cls": loss_cls.item()}

    def save_state(self, path: Path, state: TrainState) -> None:
        with atomic_path(path) as tmp:
            torch.save(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "rng": self.rng.get_state(),
                    "aug_rng": self.aug_rng.get_state(),
                    "state": state,
                },
                tmp,
            )

    def load_state(self, path: Path) -> TrainState:
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.rng.set_state(ckpt["rng"])
        self.aug_rng.set_state(ckpt["aug_rng"])
        return ckpt["state"]

    def fit(self, *, state_dir: Path, evaluate: EvalFn | None = None) -> TrainState:
        """Train for ``cfg.epochs`` epochs, resuming from ``state_dir/last.pt`` if present."""
        cfg = self.cfg
        state_file = state_dir / "last.pt"
        state = self.load_state(state_file) if state_file.exists() else TrainState()
        n_batches = batches_per_epoch(cfg, len(self.images))
        # The official loop steps the scheduler after iteration n to epoch + n / len(loader)
        # (len uncapped), so iteration n trains at the rate of position n - 1.
        pass_batches = loader_batches(cfg, len(self.images))
        lr = self.lr_at(0.0)
        batch_size = min(cfg.batch_size, len(self.images))
        self.model.train()
        bar = progress(cfg.epochs * n_batches, cfg.method, initial=state.step)
        epoch_started = time.perf_counter()
        while state.epoch < cfg.epochs:
            if state.perm is None:
                state.perm = torch.randperm(len(self.images), generator=self.rng)
            while state.batch < n_batches:
                lr = self.lr_at(max(0.0, state.epoch + (state.batch - 1) / pass_batches))
                set_lr(self.optimizer, lr)
                index = state.perm[state.batch * batch_size : (state.batch + 1) * batch_size]
                losses = self.step(index)
                for key, value in losses.items():
                    state.running[key] = state.running.get(key, 0.0) + value
                state.batch += 1
                state.step += 1
                bar.update(1)
                bar.set_postfix(epoch=state.epoch + 1, loss=f"{losses['loss']:.3f}", lr=f"{lr:.3g}")
                if state.step % cfg.checkpoint_every_steps == 0:
                    self.save_state(state_file, state)
            state.epoch += 1
            state.log.append(
                {
                    "epoch": state.epoch,
                    "step": state.step,
                    "lr": lr,
                    "seconds": time.perf_counter() - epoch_started,
                    **{k: v / n_batches for k, v in state.running.items()},
                }
            )
            state.batch, state.perm, state.running = 0, None, {}
            if evaluate and state.epoch % cfg.eval_every_epochs == 0 and state.epoch < cfg.epochs:
                state.evals.append((state.epoch, evaluate(self.model)))
                self.model.train()
            epoch_started = time.perf_counter()
        bar.close()
        return state
