"""The interface every baseline implements, and the one training loop they share.

A baseline is trained on the normal training images only and scores any image, higher meaning
more anomalous, exactly like DIA; the stages then write the same scores.csv / metrics.json /
meta.json. Images arrive as float (B, 3, H, W) in [0, 1]: on an image-file dataset resized from
the original files to the model's input view (:mod:`dia.data.views`), else at the prepared
resolution; each model resizes what still needs it and normalises, as its official code does.

:func:`fit_baseline` trains one with the epoch loop CSI and DIA use (:mod:`dia.training`):
shuffled batches from its own generator, checkpoints every ``checkpoint_every_steps`` steps, and
scores every ``eval_every_epochs`` epochs for the ``val`` / ``test_oracle`` selection rules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dia.data.prepare import ImageBatches
from dia.precision import autocast
from dia.progress import progress
from dia.seeds import generator
from dia.training import EvalFn, Schedule, TrainState, run_epochs


def resize_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to ``size`` x ``size``, antialiased when shrinking.

    The official loaders resize PIL images, whose filters always antialias; this matches them on
    tensors to about 1e-6 when downsampling.
    """
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = x.shape[-2] > size or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=shrink)


class BaselineModel(nn.Module, ABC):
    """A baseline behind DIA's interface (fit on normals, score anything)."""

    cfg: Any

    def frozen_modules(self) -> list[nn.Module]:
        """Parts that stay in eval mode whatever ``train(mode)`` asks (frozen backbones, as their
        official code sets them once); default none."""
        return []

    def train(self, mode: bool = True) -> BaselineModel:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    @abstractmethod
    def make_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        """The official optimiser and an optional LR scheduler stepped once per epoch."""

    def on_train_start(self, normals: ImageBatches, device: str) -> None:
        """Statistics fixed before training (e.g. Mean-Shift's feature centre); default none."""

    @abstractmethod
    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Scalar loss on a batch of normal images; ``rng`` drives any randomness."""

    def fit_scoring(self, normals: ImageBatches, device: str) -> None:
        """Statistics of the training normals the score needs (kNN bank, GMMs); default none."""

    @abstractmethod
    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) anomaly scores, higher = more anomalous; called in eval mode without gradients."""

    def selection_loss(self, images: ImageBatches, device: str) -> float | None:
        """The loss the official code selects its model by, on ``images`` (the test normals);
        None (the default) for a baseline whose official selection needs none."""
        return None


def schedule(cfg: Any) -> Schedule:
    """A baseline config's training schedule (its ``epochs`` and ``eval_*`` fields)."""
    return Schedule(
        epochs=cfg.epochs,
        checkpoint_every=cfg.checkpoint_every_steps,
        eval_every=cfg.eval_every_epochs,
        eval_start=cfg.eval_start_epoch,
    )


@torch.no_grad()
def score_images(
    model: BaselineModel, images: ImageBatches, *, batch_size: int, device: str
) -> np.ndarray:
    """Anomaly scores of every image, in order."""
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, len(images), batch_size)
    with progress(len(starts), "scores", leave=False) as bar:
        for i in starts:
            with autocast(device, model.cfg.precision):
                scores = model.anomaly_score(images[i : i + batch_size].to(device))
            out.append(scores.float().cpu())
            bar.update()
    model.train(was_training)
    return torch.cat(out).numpy()


class _BaselineTask:
    """A baseline's step for :func:`dia.training.run_epochs`: its loss under its optimiser, the
    scheduler stepped once per epoch, and the generator that draws batches and any randomness."""

    def __init__(self, model: BaselineModel, images: ImageBatches, seed: int, device: str) -> None:
        torch.manual_seed(seed)
        self.model, self.images, self.device = model, images.on(device), device
        self.rng = generator(seed, "draws")
        self.lr_key = f"{model.cfg.section()}.lr"
        model.to(device)
        model.on_train_start(images, device)
        self.optimizer, self.scheduler = model.make_optimizer()

    def train_step(self, index: torch.Tensor, epoch: int, batch: int) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.model.cfg.precision):
            loss = self.model.training_loss(self.images[index].to(self.device), self.rng).float()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.rng.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])


def fit_baseline(
    model: BaselineModel,
    images: ImageBatches,
    *,
    seed: int,
    device: str,
    state_dir: Path,
    evaluate: EvalFn | None = None,
) -> TrainState:
    """Train ``model`` on ``images`` for ``model.cfg.epochs`` epochs of shuffled batches.

    Epochs cover every image once, as the official DataLoaders do; a last batch of one image is
    dropped (batch norm cannot train on it).
    """
    task = _BaselineTask(model, images, seed, device)
    batch_size = min(model.cfg.batch_size, len(images))
    return run_epochs(
        task,
        schedule(model.cfg),
        n_images=len(images),
        batches=len(images) // batch_size + int(len(images) % batch_size > 1),
        batch_size=batch_size,
        state_dir=state_dir,
        name=type(model).__name__,
        evaluate=evaluate,
    )
