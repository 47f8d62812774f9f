"""Train one diffusion model on the normal training images of a dataset.

The loop is the library Trainer's recipe (Adam, gradient accumulation, gradient clipping, EMA via
ema-pytorch, horizontal flips, full precision) written over in-memory tensors: the Trainer itself
wants a folder of image files, refuses fewer than 100 images (the 10% data-ratio runs of Fig. 4
have fewer) and starts one loader worker per core. State is checkpointed to ``state_dir`` every
``checkpoint_every`` steps, so a killed job resumes where it stopped, and the first non-finite
loss stops training with an error naming the step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from ema_pytorch import EMA
from torchvision.utils import save_image

from dia.checkpoint import load_state
from dia.config import DiffusionConfig
from dia.diffusion.model import build_diffusion, save_diffusion
from dia.io import atomic_path
from dia.precision import autocast
from dia.progress import library_bars, progress
from dia.seeds import generator
from dia.training import READ_EVERY, Losses, read_finite


class _Run:
    """The model, its EMA, the optimiser and the generator of one training run, checkpointed
    together so that a killed job resumes bit for bit."""

    def __init__(self, cfg: DiffusionConfig, seed: int, device: str) -> None:
        torch.manual_seed(seed)
        self.cfg, self.device = cfg, device
        self.gen = generator(seed, "draws")
        self.diffusion = build_diffusion(cfg).to(device)
        self.ema = EMA(
            self.diffusion,
            beta=cfg.ema_decay,
            update_every=cfg.ema_update_every,
            include_online_model=False,
        ).to(device)
        self.opt = torch.optim.Adam(
            self.diffusion.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas)
        )
        self.step = 0

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(
                {
                    "step": self.step,
                    "model": self.diffusion.state_dict(),
                    "ema": self.ema.state_dict(),
                    "opt": self.opt.state_dict(),
                    "rng": self.gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                },
                tmp,
            )

    def restore(self, state: dict[str, Any]) -> None:
        self.diffusion.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]

    def train_step(self, images: torch.Tensor) -> torch.Tensor:
        """One optimiser step over ``grad_accum`` batches drawn with replacement; the loss, on
        the device."""
        cfg, n = self.cfg, images.shape[0]
        batch = min(cfg.batch_size, n)
        self.diffusion.train()
        total = torch.zeros((), device=self.device)
        for _ in range(cfg.grad_accum):
            x = images[torch.randint(n, (batch,), generator=self.gen)]
            if cfg.hflip:
                flip = torch.rand(batch, generator=self.gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            with autocast(self.device, cfg.precision):
                loss = self.diffusion(x.to(self.device)).float() / cfg.grad_accum
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), cfg.max_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update()
        self.step += 1
        return total


def train_diffusion(
    images: torch.Tensor,
    cfg: DiffusionConfig,
    *,
    model_path: Path,
    samples_path: Path,
    state_dir: Path,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """Train on ``images`` (N, 3, r, r) in [0, 1]; write the model and a grid of EMA samples.

    Returns summary figures (final loss, steps per second) for the meta file.
    """
    run = _Run(cfg, seed, device)
    state_file = state_dir / "last.pt"
    saved = load_state(state_file)
    if saved is not None:
        run.restore(saved)
    losses: list[float] = []
    pending: list[Losses] = []
    finite = {
        "name": "train_diffusion",
        "knob": "diffusion.lr",
        "at": lambda step: f"step {step} of {cfg.steps}",
    }
    started, first_step = time.perf_counter(), run.step
    with progress(cfg.steps, "diffusion", initial=run.step) as bar:
        while run.step < cfg.steps:
            pending.append({"loss": run.train_step(images)})
            bar.update(1)
            save = run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps
            if save or run.step == cfg.steps or len(pending) == READ_EVERY:
                rows = read_finite(pending, first=run.step - len(pending), **finite)
                losses += [row["loss"] for row in rows]
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
                pending = []
            if save:
                run.save(state_file)
    elapsed = time.perf_counter() - started
    save_diffusion(model_path, run.diffusion, run.ema.ema_model, cfg)
    _write_samples(run.ema.ema_model, cfg.n_samples, samples_path)
    tail = losses[-50:] or [float("nan")]
    return {
        "final_loss": sum(tail) / len(tail),
        "steps_per_second": (run.step - first_step) / elapsed if elapsed > 0 else float("nan"),
    }


def _write_samples(model: torch.nn.Module, n: int, path: Path) -> None:
    model.eval()
    with torch.inference_mode(), library_bars():
        samples = model.sample(batch_size=n)
    with atomic_path(path) as tmp:
        save_image(samples, tmp, nrow=max(1, int(n**0.5)), format="png")
