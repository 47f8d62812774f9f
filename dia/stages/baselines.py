"""Training and scoring of the baselines (KDAD, Transformaly, RD4AD, UniAD, Mean-Shift).

The stage functions in :mod:`dia.stages.runs` call these and write the same files as for DIA, so
the tables treat every method alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.baselines import build_baseline
from dia.baselines.base import BaselineModel, fit_baseline, score_images
from dia.config import resolve, section_class
from dia.contrastive.train import TrainState
from dia.data.prepare import ImageBatches, PreparedData
from dia.data.splits import EVAL_SPLITS


def baseline_splits(
    model: BaselineModel, data: PreparedData, normals: ImageBatches, device: str
) -> dict[str, np.ndarray]:
    """Fit the score's training statistics, then score the val and test images."""
    bs = model.cfg.score_batch_size
    model.eval()
    with torch.no_grad():
        model.fit_scoring(normals, device)
    return {
        split: score_images(
            model, ImageBatches(data.images[data.select(split)]), batch_size=bs, device=device
        )
        for split in EVAL_SPLITS
    }


def train_baseline(
    name: str,
    data: PreparedData,
    normals: ImageBatches,
    *,
    state_dir: Path,
    preset: str,
    layers: list[dict[str, Any]],
    seed: int,
    device: str,
) -> tuple[BaselineModel, TrainState, dict[str, Any]]:
    """Train baseline ``name`` with its resolved config; return model, state and config."""
    cfg = resolve(name, preset, layers)
    torch.manual_seed(seed)
    model = build_baseline(name, cfg)
    state = fit_baseline(
        model,
        normals,
        seed=seed,
        device=device,
        state_dir=state_dir,
        evaluate=lambda m: baseline_splits(m, data, normals, device),
    )
    return model, state, {name: cfg.to_dict()}


def score_baseline(
    ckpt: dict[str, Any], data: PreparedData, device: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Scores of the val and test images from a trained baseline's checkpoint."""
    name = ckpt["model_name"]
    cfg = section_class(name).from_dict(ckpt["config"][name], where=name)
    # every weight, frozen backbones included, is in the checkpoint: no download needed
    model = build_baseline(name, cfg.replace(pretrained=False)).to(device)
    model.load_state_dict(ckpt["model"])
    normals = ImageBatches(data.images[data.select("train", 0)])
    return baseline_splits(model, data, normals, device), {name: cfg.to_dict()}
