"""Stages ``train`` and ``score`` of one run (method x dataset x variant x seed).

CSI and DIA share the contrastive trainer; a baseline (the method's ``model`` key) goes through
:mod:`dia.stages.baselines`. Both write the same files.

``train`` writes model.pt, train_log.csv, evals.npz (the periodic validation and test scores the
``val`` and ``test_oracle`` selection rules need) and train_meta.json. ``score`` scores the final
model and writes scores.csv, metrics.json and meta.json.
"""

from __future__ import annotations

import csv
import shutil
import time
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
from dia.data.prepare import ImageBatches, PreparedData, load_prepared
from dia.data.splits import EVAL_SPLITS
from dia.diffusion.cache import DissolveCache
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import load_diffusion
from dia.errors import DiaError
from dia.evaluation.score import anomaly_scores, extract_features, fit_statistics
from dia.evaluation.selection import OFFICIAL_RULES, select_all
from dia.io import atomic_path, read_json, write_json
from dia.meta import build_meta
from dia.sections import resolve
from dia.stages.baselines import score_baseline, train_baseline
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
        if cache is None:
            raise DiaError("contrastive.dissolve_source is 'cache' but no cache was given")
        cached = DissolveCache.load(cache, ids)
        return CachedDissolve(cached, dissolve_cfg, image_size=cfg.image_size)
    if diffusion is None:
        raise DiaError("contrastive.dissolve_source is 'online' but no diffusion model was given")
    model = load_diffusion(diffusion, dissolve_cfg.weights, device)
    return OnlineDissolve(Dissolver(model, dissolve_cfg, image_size=cfg.image_size))


def _write_log(path: Path, log: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        fields = list(log[0]) if log else ["epoch"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(log)


def _train_contrastive(
    data: PreparedData,
    normals: ImageBatches,
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
    cfg = resolve("contrastive", preset, layers)
    score_cfg = resolve("score", preset, layers)
    if normals.shape[-1] != cfg.image_size:
        raise DiaError(
            f"images are {normals.shape[-1]} px but contrastive.image_size is "
            f"{cfg.image_size}; set it in the dataset's config"
        )
    dissolve_cfg = resolve("dissolve", preset, layers)
    if cfg.impl == "official":
        return train_official_run(
            data,
            normals,
            cfg=cfg,
            dissolve_cfg=dissolve_cfg,
            score_cfg=score_cfg,
            official=official,
            diffusion=diffusion,
            seed=seed,
            device=device,
            state_dir=state_dir,
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
    )
    evaluate = partial(score_splits, data=data, cfg=cfg, score_cfg=score_cfg, device=device)
    state = trainer.fit(state_dir=state_dir, evaluate=evaluate)
    config = {"contrastive": cfg.to_dict(), "score": score_cfg.to_dict()}
    if source is not None:
        config["dissolve"] = dissolve_cfg.to_dict()
    return trainer.model, state, config


def _write_evals(path: Path, state: TrainState, data: PreparedData) -> None:
    """The periodic evaluations: epochs, each split's scores per epoch, and any selection loss."""
    evals = state.evals
    columns = {"epochs": np.array([epoch for epoch, _ in evals], dtype=np.int64)}
    for split in EVAL_SPLITS:
        empty = np.empty((0, int(data.select(split).sum())))
        columns[split] = np.stack([ev[split] for _, ev in evals]) if evals else empty
    if evals and "selection_loss" in evals[0][1]:
        columns["selection_loss"] = np.array([ev["selection_loss"] for _, ev in evals])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **columns)


def run_train(
    *,
    data_dir: Path,
    out_dir: Path,
    state_dir: Path,
    preset: str,
    layers: Layers,
    seed: int,
    device: str,
    baseline: str | None = None,
    cache: Path | None = None,
    diffusion: Path | None = None,
    official: Path | None = None,
    views: Path | None = None,
) -> None:
    """Train ``baseline`` (:meth:`dia.plan.Plan.baseline`), or CSI / DIA when it is None, on the
    training normals.

    ``official``: the record of the official repository an ``impl: official`` run uses;
    ``views``: the dataset's baseline input views (:mod:`dia.data.views`), if it has them.
    """
    started = time.time()
    data = load_prepared(data_dir)
    normals = ImageBatches(data.images[data.select("train", 0)])
    common = {"state_dir": state_dir, "preset": preset, "layers": layers, "seed": seed}
    if baseline:
        model, state, config = train_baseline(
            baseline, data, views=views, device=device, official=official, **common
        )
    else:
        model, state, config = _train_contrastive(
            data,
            normals,
            device=device,
            cache=cache,
            diffusion=diffusion,
            official=official,
            **common,
        )
    name = baseline or _contrastive_name(config)
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save({"model_name": name, "config": config, "model": model.state_dict()}, tmp)
    _write_log(out_dir / "train_log.csv", state.log)
    _write_evals(out_dir / "evals.npz", state, data)
    inputs = {"cache": str(cache or ""), "diffusion": str(diffusion or "")}
    extra = {
        "model": name,
        "epochs": state.epoch,
        "steps": state.step,
        "n_train_images": len(normals),
        "train_seconds": sum(e.get("seconds", 0.0) for e in state.log),
    }
    write_json(
        out_dir / "train_meta.json",
        build_meta(
            stage="train",
            config=config,
            seed=seed,
            device=device,
            started=started,
            inputs={"manifest_sha256": data.manifest_sha256, **inputs},
            extra=extra,
        ),
    )
    # the run's resumable state (ours, and an official trainer's own checkpoints) is done with
    shutil.rmtree(state_dir, ignore_errors=True)


def _score_contrastive(
    ckpt: dict[str, Any], data: PreparedData, preset: str, layers: Layers, device: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    cfg = ContrastiveConfig.from_dict(ckpt["config"]["contrastive"])
    score_cfg = resolve("score", preset, layers)
    model = build_model(cfg).to(device)
    model.load_state_dict(ckpt["model"])
    final = score_splits(model, data=data, cfg=cfg, score_cfg=score_cfg, device=device)
    return final, {"score": score_cfg.to_dict()}


def _contrastive_name(config: dict[str, Any]) -> str:
    return "official" if config["contrastive"]["impl"] == "official" else "contrastive"


def run_score(
    *,
    data_dir: Path,
    run_dir: Path,
    preset: str,
    layers: Layers,
    device: str,
    official: Path | None = None,
    views: Path | None = None,
) -> None:
    """Score the trained model of ``run_dir``: scores.csv, metrics.json, meta.json."""
    started = time.time()
    ckpt = torch.load(run_dir / "model.pt", map_location=device, weights_only=True)
    data = load_prepared(data_dir)
    if ckpt["model_name"] == "contrastive":
        final, config = _score_contrastive(ckpt, data, preset, layers, device)
    elif ckpt["model_name"] == "official":
        score_cfg = resolve("score", preset, layers)
        final, config = score_official_run(
            ckpt, data, score_cfg=score_cfg, official=official, device=device
        )
    else:
        final, config = score_baseline(ckpt, data, device, views, official=official)

    with atomic_path(run_dir / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split", "label", "score"])
        for split in EVAL_SPLITS:
            mask = data.select(split)
            for i, label, score in zip(
                data.ids[mask], data.labels[mask], final[split], strict=True
            ):
                writer.writerow([i, split, int(label), f"{score:.8g}"])

    train_meta = read_json(run_dir / "train_meta.json")
    with np.load(run_dir / "evals.npz") as z:
        history = {
            "epochs": [*z["epochs"], train_meta["epochs"]],
            **{s: [*z[s], final[s]] for s in EVAL_SPLITS},
        }
        # the losses of the evaluated epochs, and the final model's when it is on schedule
        losses = [*z.get("selection_loss", []), *np.atleast_1d(final.get("selection_loss", []))]
    if losses:
        history["selection_loss"] = np.array(losses)
    labels = {s: data.labels[data.select(s)] for s in EVAL_SPLITS}
    ties = resolve("score", preset, layers).selection_ties
    model_name = ckpt["model_name"]
    metrics = select_all(
        history, labels, ties=ties, official=model_name if model_name in OFFICIAL_RULES else None
    )
    scored = int(data.select("train", 0).sum()) + sum(len(v) for v in labels.values())
    write_json(run_dir / "metrics.json", metrics)
    write_json(
        run_dir / "meta.json",
        build_meta(
            stage="score",
            config=config,
            seed=train_meta["seed"],
            device=device,
            started=started,
            inputs={"manifest_sha256": data.manifest_sha256},
            extra={"n_scored_images": scored, "train": train_meta},
        ),
    )
