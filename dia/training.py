"""The epoch loop every trained network shares: CSI and DIA (:mod:`dia.contrastive.train`) and the
baselines (:mod:`dia.baselines.base`).

Each epoch trains on a fresh permutation of the images in batches, drawn from the task's own
generator; every ``checkpoint_every`` steps the task's state and the loop's position go to
``state_dir/last.pt``, and a rerun resumes from there mid-epoch, bit for bit. After each epoch the
loop writes one log row and, on the evaluation schedule, scores the model for the ``val`` and
``test_oracle`` selection rules. Losses stay on the device between reads; a read that finds a
non-finite loss stops the run with an error naming the step and the task's learning-rate key,
before any checkpoint is written. What a step does (loss, optimiser, LR schedule) is the task's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from dia.checkpoint import load_state
from dia.errors import DiaError
from dia.io import atomic_path
from dia.progress import progress

EvalFn = Callable[[nn.Module], dict[str, np.ndarray]]
# A step's losses, left on the device: the loop reads them every READ_EVERY steps (and before a
# checkpoint and at an epoch's end), so a GPU is not made to wait for the host at every step.
Losses = dict[str, torch.Tensor | float]
READ_EVERY = 25


@dataclass
class TrainState:
    """The loop's position and history: everything a resumed run needs besides the task's state.

    ``epoch_seconds`` is the training time the current epoch had taken at its last checkpoint, so
    that an epoch interrupted and resumed logs that time plus the time after the resume.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    perm: torch.Tensor | None = None
    log: list[dict[str, float]] = field(default_factory=list)
    evals: list[tuple[int, dict[str, np.ndarray]]] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=dict)
    epoch_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values and tensors only, so that the state loads with ``weights_only``."""
        out = asdict(self)
        out["evals"] = [
            (epoch, {k: torch.from_numpy(np.asarray(v)) for k, v in ev.items()})
            for epoch, ev in self.evals
        ]
        return out

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        evals = [(epoch, {k: v.numpy() for k, v in ev.items()}) for epoch, ev in saved["evals"]]
        return cls(**{**saved, "evals": evals})


def check_finite(losses: dict[str, float], *, name: str, where: str, knob: str) -> None:
    """Stop training at the first non-finite loss, naming the run, the step and the knob."""
    bad = {key: value for key, value in losses.items() if not math.isfinite(value)}
    if bad:
        found = ", ".join(f"{key} = {value}" for key, value in bad.items())
        raise DiaError(
            f"{name}: {found} at {where}, training stopped; the usual cause is a learning rate "
            f"too high for this data: lower {knob}, then re-run"
        )


@dataclass(frozen=True)
class Schedule:
    """How long to train, and when to checkpoint (steps) and evaluate (epochs).

    Evaluation starts after epoch ``eval_start`` (None: ``eval_every``) and repeats every
    ``eval_every`` epochs; 0 or None never evaluates.
    """

    epochs: int
    checkpoint_every: int
    eval_every: int | None = None
    eval_start: int | None = None

    def on_schedule(self, epoch: int) -> bool:
        """Whether ``epoch`` is on the evaluation schedule."""
        if not self.eval_every:
            return False
        start = self.eval_every if self.eval_start is None else self.eval_start
        return epoch >= start and (epoch - start) % self.eval_every == 0

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the loop scores the model after ``epoch``: on the schedule, the final epoch
        excluded (the score stage scores that model anyway)."""
        return epoch < self.epochs and self.on_schedule(epoch)

    def evaluations(self) -> int:
        """How many times a whole run scores the model during training."""
        return sum(self.evaluates_after(epoch) for epoch in range(1, self.epochs + 1))


class EpochTask(Protocol):
    """What the loop drives: a model, the generator that shuffles, one step, and its state."""

    model: nn.Module
    rng: torch.Generator
    lr_key: str  # the config key of its learning rate, which a non-finite loss names

    def train_step(self, index: torch.Tensor, epoch: int, batch: int) -> Losses:
        """Train on the images ``index`` at ``batch`` of ``epoch``; return the losses (0-d
        tensors, not yet read to the host)."""

    def end_epoch(self) -> None:
        """Per-epoch bookkeeping, e.g. stepping an epoch-wise LR scheduler."""

    def lr(self) -> float:
        """The learning rate of the last step, for the log."""

    def checkpoint(self) -> dict[str, Any]:
        """The task's resumable state (weights, optimiser, generators)."""

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load what :meth:`checkpoint` returned."""


def _save(path: Path, task: EpochTask, state: TrainState) -> None:
    with atomic_path(path) as tmp:
        torch.save({**task.checkpoint(), "state": state.to_dict()}, tmp)


def _resume(path: Path, task: EpochTask) -> TrainState:
    ckpt = load_state(path)
    if ckpt is None:
        return TrainState()
    task.restore(ckpt)
    return TrainState.from_dict(ckpt["state"])


def read_losses(pending: list[Losses]) -> list[dict[str, float]]:
    """The losses of ``pending`` steps as floats, in one transfer from the device."""
    keys = list(pending[0])
    # a task may mix plain floats with device tensors: everything meets on the tensors' device
    device = next((v.device for v in pending[0].values() if isinstance(v, torch.Tensor)), None)
    rows = [
        torch.stack([torch.as_tensor(step[k], device=device).detach().float() for k in keys])
        for step in pending
    ]
    return [dict(zip(keys, row, strict=True)) for row in torch.stack(rows).cpu().tolist()]


def read_finite(
    pending: list[Losses], *, first: int, name: str, knob: str, at: Callable[[int], str]
) -> list[dict[str, float]]:
    """The losses of the steps after step ``first`` (:func:`read_losses`); the first non-finite
    one stops training, named by ``at(step)``."""
    rows = read_losses(pending)
    for step, losses in enumerate(rows, start=first + 1):
        check_finite(losses, name=name, where=at(step), knob=knob)
    return rows


def _take(pending: list[Losses], state: TrainState, task: EpochTask, bar: Any, name: str) -> None:
    """Read the steps since the last read: stop at a non-finite loss, else add them up."""
    rows = read_finite(
        pending,
        first=state.step - len(pending),
        name=name,
        knob=task.lr_key,
        at=lambda step: f"epoch {state.epoch + 1}, step {step}",
    )
    for losses in rows:
        for key, value in losses.items():
            state.running[key] = state.running.get(key, 0.0) + value
    bar.set_postfix(epoch=state.epoch + 1, loss=f"{rows[-1]['loss']:.4f}", lr=f"{task.lr():.3g}")


def _close_epoch(state: TrainState, task: EpochTask, batches: int, seconds: float) -> None:
    task.end_epoch()
    state.epoch += 1
    means = {key: value / batches for key, value in state.running.items()}
    state.log.append(
        {"epoch": state.epoch, "step": state.step, "lr": task.lr(), "seconds": seconds, **means}
    )
    state.batch, state.perm, state.running, state.epoch_seconds = 0, None, {}, 0.0


def run_epochs(
    task: EpochTask,
    schedule: Schedule,
    *,
    n_images: int,
    batches: int,
    batch_size: int,
    state_dir: Path,
    name: str,
    evaluate: EvalFn | None = None,
) -> TrainState:
    """Train ``task`` for ``schedule.epochs`` epochs of ``batches`` batches of ``batch_size``
    images out of ``n_images``, resuming from ``state_dir/last.pt`` if present."""
    state_file = state_dir / "last.pt"
    state = _resume(state_file, task)
    task.model.train()
    bar = progress(schedule.epochs * batches, name, initial=state.step)
    epoch_started = time.perf_counter() - state.epoch_seconds
    while state.epoch < schedule.epochs:
        if state.perm is None:
            state.perm = torch.randperm(n_images, generator=task.rng)
        pending: list[Losses] = []
        while state.batch < batches:
            index = state.perm[state.batch * batch_size : (state.batch + 1) * batch_size]
            pending.append(task.train_step(index, state.epoch, state.batch))
            state.batch += 1
            state.step += 1
            bar.update(1)
            checkpoint = state.step % schedule.checkpoint_every == 0
            if checkpoint or state.batch == batches or len(pending) == READ_EVERY:
                _take(pending, state, task, bar, name)
                pending = []
            if checkpoint:
                state.epoch_seconds = time.perf_counter() - epoch_started
                _save(state_file, task, state)
        _close_epoch(state, task, batches, time.perf_counter() - epoch_started)
        if evaluate and schedule.evaluates_after(state.epoch):
            state.evals.append((state.epoch, evaluate(task.model)))
            task.model.train()
        epoch_started = time.perf_counter()
    bar.close()
    return state
