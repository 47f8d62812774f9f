"""The interface every baseline implements, and the one training loop they share.

A baseline is trained on the normal training images only and scores any image, higher meaning
more anomalous, exactly like DIA; the stages then write the same scores.csv / metrics.json /
meta.json. Images arrive as float (B, 3, H, W) in [0, 1]: on an image-file dataset resized from
the original files to the model's input view (:mod:`dia.data.views`), else at the prepared
resolution; each model resizes what still needs it and normalises, as its official code does.

The loop (:func:`fit_baseline`) shuffles with its own generator, checkpoints every
``checkpoint_every_steps`` steps to ``state_dir/last.pt`` and resumes from there, and scores the
model every ``eval_every_epochs`` epochs for the ``val`` / ``test_oracle`` selection rules.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dia.contrastive.train import TrainState
from dia.data.prepare import ImageBatches
from dia.io import atomic_path
from dia.progress import progress


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

    # Subclasses with frozen parts override ``train(mode)`` to keep them in eval mode.

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


def on_schedule(cfg: Any, epoch: int) -> bool:
    """Whether ``epoch`` is on the evaluation schedule: from ``eval_start_epoch`` (default
    ``eval_every_epochs``) every ``eval_every_epochs`` epochs."""
    every = cfg.eval_every_epochs
    if not every:
        return False
    start = every if cfg.eval_start_epoch is None else cfg.eval_start_epoch
    return epoch >= start and (epoch - start) % every == 0


def evaluated(cfg: Any, epoch: int) -> bool:
    """Whether training evaluates the model after ``epoch``: on the schedule, the final epoch
    excluded (the score stage scores that model anyway)."""
    return epoch < cfg.epochs and on_schedule(cfg, epoch)


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
            out.append(model.anomaly_score(images[i : i + batch_size].to(device)).float().cpu())
            bar.update()
    model.train(was_training)
    return torch.cat(out).numpy()


EvalFn = Callable[[BaselineModel], dict[str, np.ndarray]]


def _save(path: Path, model: BaselineModel, opt: Any, sched: Any, rng: Any, state: Any) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "rng": rng.get_state(),
                "torch_rng": torch.get_rng_state(),
                "state": state,
            },
            tmp,
        )


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
    cfg = model.cfg
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model.to(device)
    model.on_train_start(images, device)
    opt, sched = model.make_optimizer()
    state_file = state_dir / "last.pt"
    state = TrainState()
    if state_file.exists():
        ckpt = torch.load(state_file, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if sched is not None:
            sched.load_state_dict(ckpt["scheduler"])
        rng.set_state(ckpt["rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]
    batch_size = min(cfg.batch_size, len(images))
    n_batches = len(images) // batch_size + int(len(images) % batch_size > 1)
    model.train()
    bar = progress(cfg.epochs * n_batches, type(model).__name__, initial=state.step)
    epoch_started = time.perf_counter()
    while state.epoch < cfg.epochs:
        if state.perm is None:
            state.perm = torch.randperm(len(images), generator=rng)
        while state.batch < n_batches:
            index = state.perm[state.batch * batch_size : (state.batch + 1) * batch_size]
            loss = model.training_loss(images[index].to(device), rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state.running["loss"] = state.running.get("loss", 0.0) + loss.item()
            state.batch += 1
            state.step += 1
            bar.update(1)
            bar.set_postfix(epoch=state.epoch + 1, loss=f"{loss.item():.4f}")
            if state.step % cfg.checkpoint_every_steps == 0:
                _save(state_file, model, opt, sched, rng, state)
        if sched is not None:
            sched.step()
        state.epoch += 1
        state.log.append(
            {
                "epoch": state.epoch,
                "step": state.step,
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_started,
                "loss": state.running.get("loss", 0.0) / n_batches,
            }
        )
        state.batch, state.perm, state.running = 0, None, {}
        if evaluate and evaluated(cfg, state.epoch):
            state.evals.append((state.epoch, evaluate(model)))
            model.train()
        epoch_started = time.perf_counter()
    bar.close()
    return state
