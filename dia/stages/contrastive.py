"""CSI and DIA in the ``train`` and ``score`` stages: the trainer with its dissolve source, or the
official code (:mod:`dia.stages.official`) for ``impl: official``, and the CSI score of a model."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.config import ContrastiveConfig, DissolveConfig, ScoreConfig
from dia.contrastive.blur import BlurDissolve
from dia.contrastive.resnet import ResNet18
from dia.contrastive.train import Trainer, build_model
from dia.contrastive.views import CachedDissolve, DissolveFn, OnlineDissolve
from dia.data.prepare import ImageBatches, PreparedData
from dia.data.splits import EVAL_SPLITS
from dia.diffusion.cache import DissolveCache
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import load_diffusion
from dia.errors import DiaError
from dia.evaluation.score import anomaly_scores, extract_features, fit_statistics
from dia.sections import resolve
from dia.stages.official import score_official_run, train_official_run
from dia.training import TrainState

Layers = list[dict[str, Any]]


def score_splits(
    model: ResNet18,
    *,
    data: PreparedData,
    cfg: ContrastiveConfig,
    score_cfg: ScoreConfig,
    device: str,
) -> dict[str, np.ndarray]:
    """Anomaly scores of the val and test images, with statistics from the training normals."""

    def features(mask: np.ndarray) -> Any:
        return extract_features(
            model,
            ImageBatches(data.images[mask]),
            shift=cfg.shift,
            cfg=score_cfg,
            image_size=cfg.image_size,
            hue=cfg.jitter_hue,
            hue_from=cfg.jitter_hue_from,
            device=device,
            precision=cfg.precision,
        )

    stats = fit_statistics(features(data.select("train", 0)))
    return {
        split: anomaly_scores(stats, features(data.select(split))).numpy() for split in EVAL_SPLITS
    }


def _dissolve_source(
    cfg: ContrastiveConfig,
    dissolve_cfg: DissolveConfig,
    *,
    cache: Path | None,
    diffusion: Path | None,
    ids: np.ndarray,
    device: str,
) -> DissolveFn | None:
    """DIA's third branch: the dissolve cache, the diffusion model online, or a blur."""
    if cfg.method == "csi":
        return None
    if dissolve_cfg.kind != "diffusion":
        return BlurDissolve(dissolve_cfg.kind, dissolve_cfg.blur_kernel)
    if cfg.dissolve_source == "cache":
        if dissolve_cfg.flip == "before":
            raise DiaError(
                "dissolve.flip 'before' needs contrastive.dissolve_source 'online' (the cache "
                "holds unflipped dissolved images); set one of the two"
            )
        if cache is None:
            raise DiaError("contrastive.dissolve_source is 'cache' but no cache was given")
        cached = DissolveCache.load(cache, ids).on(device)
        return CachedDissolve(cached, dissolve_cfg, image_size=cfg.image_size)
    if diffusion is None:
        raise DiaError("contrastive.dissolve_source is 'online' but no diffusion model was given")
    model = load_diffusion(diffusion, dissolve_cfg.weights, device)
    return OnlineDissolve(Dissolver(model, dissolve_cfg, image_size=cfg.image_size))


def _check_image_size(normals: ImageBatches, cfg: ContrastiveConfig) -> None:
    if normals.shape[-1] != cfg.image_size:
        raise DiaError(
            f"images are {normals.shape[-1]} px but contrastive.image_size is "
            f"{cfg.image_size}; set it in the dataset's config"
        )


def train_contrastive(
    data: PreparedData,
    *,
    state_dir: Path,
    preset: str,
    layers: Layers,
    seed: int,
    device: str,
    cache: Path | None,
    diffusion: Path | None,
    official: Path | None,
) -> tuple[torch.nn.Module, TrainState, dict[str, Any]]:
    """Train CSI or DIA with its resolved configs; return model, state and config."""
    cfg = resolve("contrastive", preset, layers)
    score_cfg = resolve("score", preset, layers)
    dissolve_cfg = resolve("dissolve", preset, layers)
    normals = ImageBatches(data.images[data.select("train", 0)])
    _check_image_size(normals, cfg)
    common = {"seed": seed, "device": device, "diffusion": diffusion}
    if cfg.impl == "official":
        return train_official_run(
            data,
            normals,
            cfg=cfg,
            dissolve_cfg=dissolve_cfg,
            score_cfg=score_cfg,
            official=official,
            state_dir=state_dir,
            **common,
        )
    train_ids = data.ids[data.select("train", 0)]
    source = _dissolve_source(
        cfg, dissolve_cfg, cache=cache, diffusion=diffusion, ids=train_ids, device=device
    )
    blurs_all = dissolve_cfg.kind != "diffusion" and dissolve_cfg.blur_branches == "all"
    trainer = Trainer(
        cfg,
        normals,
        dissolve=source,
        seed=seed,
        device=device,
        dissolve_all=source is not None and blurs_all,
        flip_first=dissolve_cfg.flip == "before",
    )
    evaluate = partial(score_splits, data=data, cfg=cfg, score_cfg=score_cfg, device=device)
    state = trainer.fit(state_dir=state_dir, evaluate=evaluate)
    config = {"contrastive": cfg.to_dict(), "score": score_cfg.to_dict()}
    if source is not None:
        config["dissolve"] = dissolve_cfg.to_dict()
    return trainer.model, state, config


def contrastive_name(config: dict[str, Any]) -> str:
    """The ``model_name`` a CSI / DIA checkpoint records: which code scores it."""
    return "official" if config["contrastive"]["impl"] == "official" else "contrastive"


def score_contrastive(
    ckpt: dict[str, Any],
    data: PreparedData,
    *,
    preset: str,
    layers: Layers,
    device: str,
    official: Path | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Scores of the val and test images from a CSI / DIA checkpoint, ours or the official."""
    score_cfg = resolve("score", preset, layers)
    if ckpt["model_name"] == "official":
        return score_official_run(ckpt, data, score_cfg=score_cfg, official=official, device=device)
    cfg = ContrastiveConfig.from_dict(ckpt["config"]["contrastive"])
    model = build_model(cfg).to(device)
    model.load_state_dict(ckpt["model"])
    final = score_splits(model, data=data, cfg=cfg, score_cfg=score_cfg, device=device)
    return final, {"score": score_cfg.to_dict()}
