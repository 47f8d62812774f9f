"""Training and scoring of the baselines (KDAD, Transformaly, RD4AD, UniAD, Mean-Shift).

The stage functions in :mod:`dia.stages.runs` call these and write the same files as for DIA, so
the tables treat every method alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.baselines import build_baseline
from dia.baselines.base import BaselineModel, fit_baseline, schedule, score_images
from dia.data.prepare import ImageBatches, PreparedData
from dia.data.splits import EVAL_SPLITS
from dia.data.views import load_view
from dia.official.baselines import load_official_baseline, train_official_baseline
from dia.sections import resolve, section_class
from dia.training import TrainState


def baseline_data(data: PreparedData, cfg: Any, views: Path | None) -> PreparedData:
    """``data`` with the images of the baseline's input view, resized from the original files
    (:mod:`dia.data.views`), when the dataset has views and the prepared array is not that one."""
    if views is None:
        return data
    images = load_view(views, cfg.input_view(), data.ids)
    return data if images is None else dataclasses.replace(data, images=images)


def baseline_splits(
    model: BaselineModel, data: PreparedData, normals: ImageBatches, device: str
) -> dict[str, np.ndarray]:
    """Fit the score's training statistics, then score the val and test images; plus the
    ``selection_loss`` on the test normals of a baseline whose official selection uses one."""
    bs = model.cfg.score_batch_size
    model.eval()
    with torch.no_grad():
        model.fit_scoring(normals, device)
        loss = model.selection_loss(ImageBatches(data.images[data.select("test", 0)]), device)
    scores = {
        split: score_images(
            model, ImageBatches(data.images[data.select(split)]), batch_size=bs, device=device
        )
        for split in EVAL_SPLITS
    }
    return scores if loss is None else scores | {"selection_loss": np.array(loss)}


def train_baseline(
    name: str,
    data: PreparedData,
    *,
    views: Path | None,
    state_dir: Path,
    preset: str,
    layers: list[dict[str, Any]],
    seed: int,
    device: str,
    official: Path | None = None,
) -> tuple[BaselineModel, TrainState, dict[str, Any]]:
    """Train baseline ``name`` with its resolved config; return model, state and config.

    ``official``: the repository record an ``impl: official`` run trains with.
    """
    cfg = resolve(name, preset, layers)
    data = baseline_data(data, cfg, views)
    normals = ImageBatches(data.images[data.select("train", 0)])
    if cfg.impl == "official":
        model, state, commit = train_official_baseline(
            name,
            cfg,
            normals,
            official=official,
            seed=seed,
            device=device,
            state_dir=state_dir,
            evaluate=lambda m: baseline_splits(m, data, normals, device),
        )
        return model, state, {name: cfg.to_dict(), "official_commit": commit}
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
    ckpt: dict[str, Any],
    data: PreparedData,
    device: str,
    views: Path | None,
    official: Path | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Scores of the val and test images from a trained baseline's checkpoint."""
    name = ckpt["model_name"]
    cfg = section_class(name).from_dict(ckpt["config"][name], where=name)
    config = {name: cfg.to_dict()}
    if cfg.impl == "official":
        model = load_official_baseline(name, cfg, ckpt, official=official, device=device)
        config["official_commit"] = ckpt["config"]["official_commit"]
    else:
        # every weight, frozen backbones included, is in the checkpoint: no download needed
        model = build_baseline(name, cfg.replace(pretrained=False)).to(device)
        model.load_state_dict(ckpt["model"])
    data = baseline_data(data, cfg, views)
    normals = ImageBatches(data.images[data.select("train", 0)])
    final = baseline_splits(model, data, normals, device)
    # the official selection never saw the final model
    if not schedule(cfg).on_schedule(cfg.epochs):
        final.pop("selection_loss", None)
    return final, config
