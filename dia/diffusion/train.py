"""Train one diffusion model on the normal training images of a dataset.

The loop is the library Trainer's recipe (Adam, gradient accumulation, gradient clipping, EMA via
ema-pytorch, horizontal flips, full precision) written over in-memory tensors: the Trainer itself
wants a folder of image files, refuses fewer than 100 images (the 10% data-ratio runs of Fig. 4
have fewer) and starts one loader worker per core. State is checkpointed to ``state_dir`` every
``checkpoint_every`` steps, so a killed job resumes where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from ema_pytorch import EMA
from torchvision.utils import save_image

from dia.config import DiffusionConfig
from dia.diffusion.model import build_diffusion, save_diffusion
from dia.io import atomic_path
from dia.progress import library_bars, progress


def _checkpoint(
    state_dir: Path,
    step: int,
    diffusion: torch.nn.Module,
    ema: EMA,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
) -> None:
    with atomic_path(state_dir / "last.pt") as tmp:
        torch.save(
            {
                "step": step,
                "model": diffusion.state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )


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
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    diffusion = build_diffusion(cfg).to(device)
    ema = EMA(
        diffusion, beta=cfg.ema_decay, update_every=cfg.ema_update_every, include_online_model=False
    ).to(device)
    opt = torch.optim.Adam(diffusion.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas))
    step = 0
    state_file = state_dir / "last.pt"
    if state_file.exists():
        state = torch.load(state_file, map_location=device, weights_only=False)
        diffusion.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]

    n = images.shape[0]
    batch = min(cfg.batch_size, n)
    losses: list[float] = []
    started = time.perf_counter()
    first_step = step
    with progress(cfg.steps, "diffusion", initial=step) as bar:
        while step < cfg.steps:
            diffusion.train()
            total = 0.0
            for _ in range(cfg.grad_accum):
                idx = torch.randint(n, (batch,), generator=gen)
                x = images[idx]
                if cfg.hflip:
                    flip = torch.rand(batch, generator=gen) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                loss = diffusion(x.to(device)) / cfg.grad_accum
                loss.backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(diffusion.parameters(), cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update()
            step += 1
            losses.append(total)
            bar.set_postfix(loss=f"{total:.4f}")
            bar.update(1)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                state_dir.mkdir(parents=True, exist_ok=True)
                _checkpoint(state_dir, step, diffusion, ema, opt, gen)
    elapsed = time.perf_counter() - started

    save_diffusion(model_path, diffusion, ema.ema_model, cfg)
    ema.ema_model.eval()
    with torch.inference_mode(), library_bars():
        samples = ema.ema_model.sample(batch_size=cfg.n_samples)
    with atomic_path(samples_path) as tmp:
        save_image(samples, tmp, nrow=max(1, int(cfg.n_samples**0.5)), format="png")
    state_file.unlink(missing_ok=True)
    tail = losses[-50:] or [float("nan")]
    return {
        "final_loss": sum(tail) / len(tail),
        "steps_per_second": (step - first_step) / elapsed if elapsed > 0 else float("nan"),
    }
