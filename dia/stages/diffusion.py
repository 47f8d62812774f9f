"""Stages ``train_diffusion`` and ``dissolve_cache``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.checkpoint import claim_state_dir
from dia.config import DiffusionConfig
from dia.data.prepare import ImageBatches, PreparedData, load_prepared
from dia.diffusion.cache import build_cache, t_grid
from dia.diffusion.dissolve import Dissolver, fit_to
from dia.diffusion.model import load_diffusion
from dia.diffusion.train import train_diffusion
from dia.errors import DiaError
from dia.io import write_json
from dia.meta import build_meta
from dia.sections import resolve

Layers = list[dict[str, Any]]
_FIT_CHUNK = 512


def diffusion_subset(n: int, ratio: float, seed: int) -> np.ndarray:
    """Indices of the first ``ratio`` of a seeded permutation (Fig. 4's data-ratio runs)."""
    if not 0 < ratio <= 1:
        raise DiaError(f"diffusion data ratio must be in (0, 1], got {ratio}")
    keep = max(1, round(n * ratio))
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


def _training_images(
    data: PreparedData, all_classes: bool, cfg: DiffusionConfig, seed: int, fit: str
) -> torch.Tensor:
    """The ``data_ratio`` subset of the training images a model learns, fitted to its size."""
    train = data.images[data.select("train", None if all_classes else 0)]
    batches = ImageBatches(train[diffusion_subset(len(train), cfg.data_ratio, seed)])
    chunks = range(0, len(batches), _FIT_CHUNK)
    return torch.cat([fit_to(batches[i : i + _FIT_CHUNK], cfg.resolution, fit) for i in chunks])


def run_train_diffusion(
    *,
    data_dir: Path,
    out_dir: Path,
    state_dir: Path,
    preset: str,
    layers: Layers,
    resolution: int,
    ratio: float,
    seed: int,
    device: str,
    all_classes: bool = False,
) -> None:
    """Train on the normal training images (``all_classes``: every training image, a one-class
    family's shared model), fitted to ``resolution`` like dissolving does."""
    started = time.time()
    diffusion_cfg = (
        resolve("diffusion", preset, layers).at_resolution(resolution).replace(data_ratio=ratio)
    )
    fit = resolve("dissolve", preset, layers).fit
    data = load_prepared(data_dir)
    made_by = {"config": diffusion_cfg.to_dict(), "fit": fit, "all_classes": all_classes}
    inputs = {"manifest_sha256": data.manifest_sha256}
    claim_state_dir(
        state_dir, {"stage": "train_diffusion", **made_by, "seed": seed, "inputs": inputs}
    )
    images = _training_images(data, all_classes, diffusion_cfg, seed, fit)
    summary = train_diffusion(
        images,
        diffusion_cfg,
        model_path=out_dir / "model.pt",
        samples_path=out_dir / "samples.png",
        state_dir=state_dir,
        seed=seed,
        device=device,
    )
    write_json(
        out_dir / "meta.json",
        build_meta(
            stage="train_diffusion",
            config=diffusion_cfg.to_dict(),
            seed=seed,
            device=device,
            started=started,
            inputs=inputs,
            extra={"n_images": len(images), "all_classes": all_classes, "fit": fit, **summary},
        ),
    )
    # the model is complete: its resumable state is done with
    shutil.rmtree(state_dir, ignore_errors=True)


def run_dissolve_cache(
    *,
    data_dir: Path,
    model_path: Path,
    dest: Path,
    preset: str,
    layers: Layers,
    resolution: int,
    device: str,
) -> None:
    """Dissolve every normal training image on the configured t grid."""
    started = time.time()
    cfg = resolve("dissolve", preset, layers).replace(resolution=resolution)
    image_size = resolve("contrastive", preset, layers).image_size
    data = load_prepared(data_dir)
    mask = data.select("train", 0)
    dissolver = Dissolver(
        load_diffusion(model_path, cfg.weights, device), cfg, image_size=image_size
    )
    with torch.inference_mode():
        build_cache(dissolver, ImageBatches(data.images[mask]), data.ids[mask], dest, device=device)
    n_dissolved = int(mask.sum()) * len(t_grid(cfg))
    write_json(
        dest.with_suffix(".meta.json"),
        build_meta(
            stage="dissolve_cache",
            config=cfg.to_dict(),
            seed=None,
            device=device,
            started=started,
            inputs={"manifest_sha256": data.manifest_sha256},
            extra={"n_dissolved": n_dissolved},
        ),
    )
