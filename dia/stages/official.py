"""Training and scoring of ``impl: official`` runs: the official DIA repository's code driven on
this pipeline's data (:mod:`dia.official.contrastive`), written to the same files as native runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.config import ContrastiveConfig, DissolveConfig, ScoreConfig
from dia.data.prepare import ImageBatches, PreparedData
from dia.data.splits import EVAL_SPLITS
from dia.errors import DiaError
from dia.official.contrastive import OfficialRun, train_official
from dia.official.repos import recorded
from dia.training import TrainState


def _splits(run: OfficialRun, model: torch.nn.Module, data: PreparedData) -> dict[str, np.ndarray]:
    normals = ImageBatches(data.images[data.select("train", 0)])
    splits = {s: ImageBatches(data.images[data.select(s)]) for s in EVAL_SPLITS}
    return run.anomaly_scores(model, normals, splits)


def train_official_run(
    data: PreparedData,
    normals: ImageBatches,
    *,
    cfg: ContrastiveConfig,
    dissolve_cfg: DissolveConfig,
    score_cfg: ScoreConfig,
    official: Path | None,
    diffusion: Path | None,
    seed: int,
    device: str,
    state_dir: Path,
) -> tuple[torch.nn.Module, TrainState, dict[str, Any]]:
    """Train with the official loop; evaluations and config as a native run records them."""
    if official is None:
        raise DiaError("contrastive.impl is 'official' but the official repository is no input")
    repo, commit = recorded(official)
    run = OfficialRun(repo, cfg, dissolve_cfg, score_cfg, device, diffusion=diffusion)
    model, state = train_official(
        run,
        normals,
        seed=seed,
        state_dir=state_dir,
        evaluate=lambda m: _splits(run, m, data),
    )
    config = {
        "contrastive": cfg.to_dict(),
        "score": score_cfg.to_dict(),
        "official_commit": commit,
    }
    if cfg.method == "dia":
        config["dissolve"] = dissolve_cfg.to_dict()
    return model, state, config


def score_official_run(
    ckpt: dict[str, Any],
    data: PreparedData,
    *,
    score_cfg: ScoreConfig,
    official: Path | None,
    device: str,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Score an official run's final model with the official CSI score."""
    if official is None:
        raise DiaError("this run was trained by the official code; its repository is no input")
    repo, commit = recorded(official)
    if commit != ckpt["config"]["official_commit"]:
        raise DiaError(
            f"the run was trained with the official commit {ckpt['config']['official_commit']}, "
            f"{official} holds {commit}; retrain it (delete its model.pt)"
        )
    cfg = ContrastiveConfig.from_dict(ckpt["config"]["contrastive"])
    # Official steps always flip before dissolving; runs trained before dissolve.flip existed
    # did not record it.
    dissolve_cfg = DissolveConfig.from_dict(
        {"flip": "before", **ckpt["config"].get("dissolve", {})}
    )
    run = OfficialRun(repo, cfg, dissolve_cfg, score_cfg, device)
    model = run.build_model()
    model.load_state_dict(ckpt["model"])
    return _splits(run, model, data), {"score": score_cfg.to_dict(), "official_commit": commit}
