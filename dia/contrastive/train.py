"""CSI's and DIA's training step, driven by the shared epoch loop (:mod:`dia.training`).

Per step: a batch of normal images becomes 2 (CSI) or 3 (DIA) branches of K shifted views, all
views get the SimCLR augmentation on the training device, and the loss is the (amplified)
NT-Xent plus the shift cross-entropy, optimised with LARS under warm-up + cosine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dia.config import ContrastiveConfig
from dia.contrastive.augment import SimCLRAugment
from dia.contrastive.loss import contrastive_loss, shift_loss
from dia.contrastive.optim import lars, set_lr, step_position, warmup_cosine_lr
from dia.contrastive.resnet import ResNet18
from dia.contrastive.views import DissolveFn, make_views
from dia.data.prepare import ImageBatches
from dia.precision import autocast
from dia.seeds import generator
from dia.training import EvalFn, Schedule, TrainState, run_epochs


def build_model(cfg: ContrastiveConfig) -> ResNet18:
    return ResNet18(arch=cfg.arch, width=cfg.width, init=cfg.resnet_init)


def schedule(cfg: ContrastiveConfig) -> Schedule:
    """A CSI / DIA config's training schedule (its ``epochs`` and ``eval_every_epochs``)."""
    return Schedule(
        epochs=cfg.epochs,
        checkpoint_every=cfg.checkpoint_every_steps,
        eval_every=cfg.eval_every_epochs,
    )


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

    lr_key = "contrastive.lr"  # what a non-finite loss tells the user to lower

    def __init__(
        self,
        cfg: ContrastiveConfig,
        images: torch.Tensor | ImageBatches,
        *,
        dissolve: DissolveFn | None,
        seed: int,
        device: str = "cpu",
        dissolve_all: bool = False,
        flip_first: bool = False,
    ) -> None:
        if (cfg.method == "dia") != (dissolve is not None):
            raise ValueError("DIA needs a dissolve source and CSI must not have one")
        if isinstance(images, ImageBatches):
            images = images.on(device)
        self.cfg, self.images, self.dissolve, self.device = cfg, images, dissolve, device
        self.dissolve_all, self.flip_first = dissolve_all, flip_first
        torch.manual_seed(seed)
        self.model = build_model(cfg).to(device)
        self.memory_format = torch.contiguous_format
        if cfg.channels_last:
            self.memory_format = torch.channels_last
            self.model.to(memory_format=self.memory_format)
        # the compiled wrapper shares the model's parameters; checkpoints save the model itself
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = lars(self.model.parameters(), cfg)
        self.augment = SimCLRAugment(
            image_size=cfg.image_size,
            crop_scale=(cfg.crop_scale_min, 1.0),
            jitter_p=cfg.jitter_p,
            gray_p=cfg.gray_p,
            jitter=(0.4, 0.4, 0.4, cfg.jitter_hue),
            hue_from=cfg.jitter_hue_from,
        )
        self.rng = generator(seed, "draws")
        self.aug_rng = generator(seed, "augment", device)
        self.n_branches = 3 if cfg.method == "dia" else 2
        self.pass_batches = loader_batches(cfg, len(images))
        self.epoch_batches = batches_per_epoch(cfg, len(images))

    def lr_at(self, epoch: float) -> float:
        cfg = self.cfg
        return warmup_cosine_lr(
            epoch,
            base_lr=cfg.lr,
            warmup_epochs=cfg.warmup_epochs,
            warmup_multiplier=cfg.warmup_multiplier,
            total_epochs=cfg.lr_cosine_epochs or cfg.epochs,
        )

    def step(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step on the training images ``index``; its losses, on the device."""
        x = self.images[index].to(self.device)
        views, labels = make_views(
            x,
            index,
            shift=self.cfg.shift,
            dissolve=self.dissolve,
            rng=self.rng,
            aug_rng=self.aug_rng,
            dissolve_all=self.dissolve_all,
            flip_first=self.flip_first,
        )
        augmented = self.augment(views, self.aug_rng).contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.cfg.precision):
            out = self.forward(augmented)
        loss_con = contrastive_loss(
            out.projection.float(),
            n_branches=self.n_branches,
            temperature=self.cfg.temperature,
            normalizer=self.cfg.loss_normalizer,
        )
        loss_cls = shift_loss(out.shift_logits.float(), labels)
        loss = loss_con + loss_cls
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), "loss_con": loss_con.detach(), "loss_cls": loss_cls.detach()}

    def train_step(self, index: torch.Tensor, epoch: int, batch: int) -> dict[str, torch.Tensor]:
        position = step_position(
            epoch, batch, trained=self.epoch_batches, per_pass=self.pass_batches
        )
        set_lr(self.optimizer, self.lr_at(position))
        return self.step(index)

    def end_epoch(self) -> None:
        """The LR follows the position within the epoch, not the epoch count."""

    def lr(self) -> float:
        """The rate of the last step, kept (and restored) by the optimiser's state."""
        return self.optimizer.param_groups[0]["lr"]

    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(),
            "aug_rng": self.aug_rng.get_state(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.rng.set_state(ckpt["rng"])
        self.aug_rng.set_state(ckpt["aug_rng"])

    def fit(self, *, state_dir: Path, evaluate: EvalFn | None = None) -> TrainState:
        """Train for ``cfg.epochs`` epochs, resuming from ``state_dir/last.pt`` if present."""
        cfg = self.cfg
        return run_epochs(
            self,
            schedule(cfg),
            n_images=len(self.images),
            batches=self.epoch_batches,
            batch_size=min(cfg.batch_size, len(self.images)),
            state_dir=state_dir,
            name=cfg.method,
            evaluate=evaluate,
        )
