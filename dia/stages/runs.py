"""Stages ``train`` and ``score`` of a CSI or DIA run (one method x dataset x variant x seed).

``train`` writes model.pt, train_log.csv, evals.npz (the periodic validation and test scores the
``val`` and ``test_oracle`` selection rules need) and train_meta.json. ``score`` scores the final
model and writes scores.csv, metrics.json and meta.json.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.config import ContrastiveConfig, ScoreConfig, resolve
from dia.contrastive.resnet import ResNet18
from dia.contrastive.train import Trainer, build_model
from dia.contrastive.views import CachedDissolve, OnlineDissolve
from dia.data.prepare import ImageBatches, PreparedData, load_prepared
from dia.diffusion.cache import DissolveCache
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import load_diffusion
from dia.errors import DiaError
from dia.evaluation.score import anomaly_scores, extract_features, fit_statistics
from dia.evaluation.selection import select_all
from dia.io import atomic_path, read_json, write_json
from dia.meta import build_meta

Layers = list[dict[str, Any]]
EVAL_SPLITS = ("val", "test")


def score_splits(
    model: ResNet18, data: PreparedData, cfg: ContrastiveConfig, score_cfg: ScoreConfig, device: str
) -> dict[str, np.ndarray]:
    """Anomaly scores of the val and test images, with statistics from the training normals."""

    def features(mask: np.ndarray) -> Any:
        return extract_features(
            model,
            ImageBatches(data.images[mask]),
            shift=cfg.shift,
            cfg=score_cfg,
            image_size=cfg.image_size,
            device=device,
        )

    stats = fit_statistics(features(data.select("train", 0)))
    return {
        split: anomaly_scores(stats, features(data.select(split))).numpy() for split in EVAL_SPLITS
    }


def _dissolve_source(
    cfg: ContrastiveConfig,
    preset: str,
    layers: Layers,
    *,
    cache: Path | None,
    diffusion: Path | None,
    ids: np.ndarray,
    device: str,
) -> Any:
    if cfg.method == "csi":
        return None
    dcfg = resolve("dissolve", preset, layers)
    if cfg.dissolve_source == "cache":
        if cache is None:
            raise DiaError("contrastive.dissolve_source is 'cache' but no cache was given")
        return CachedDissolve(DissolveCache.load(cache, ids), dcfg, image_size=cfg.image_size)
    if diffusion is None:
        raise DiaError("contrastive.dissolve_source is 'online' but no diffusion model was given")
    model = load_diffusion(diffusion, dcfg.weights, device)
    return OnlineDissolve(Dissolver(model, dcfg, image_size=cfg.image_size))


def _write_log(path: Path, log: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        fields = list(log[0]) if log else ["epoch"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(log)


def run_train(
    *,
    data_dir: Path,
    out_dir: Path,
    state_dir: Path,
    preset: str,
    layers: Layers,
    seed: int,
    device: str,
    cache: Path | None = None,
    diffusion: Path | None = None,
) -> None:
    started = time.time()
    cfg = resolve("contrastive", preset, layers)
    score_cfg = resolve("score", preset, layers)
    data = load_prepared(data_dir)
    mask = data.select("train", 0)
    images = ImageBatches(data.images[mask])
    if images.shape[-1] != cfg.image_size:
        raise DiaError(
            f"images are {images.shape[-1]} px but contrastive.image_size is "
            f"{cfg.image_size}; set it in the dataset's config"
        )
    source = _dissolve_source(
        cfg, preset, layers, cache=cache, diffusion=diffusion, ids=data.ids[mask], device=device
    )
    trainer = Trainer(cfg, images, dissolve=source, seed=seed, device=device)
    state = trainer.fit(
        state_dir=state_dir, evaluate=lambda m: score_splits(m, data, cfg, score_cfg, device)
    )
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save({"config": cfg.to_dict(), "model": trainer.model.state_dict()}, tmp)
    _write_log(out_dir / "train_log.csv", state.log)
    epochs = np.array([e for e, _ in state.evals], dtype=np.int64)
    with atomic_path(out_dir / "evals.npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            epochs=epochs,
            **{
                s: np.stack([ev[s] for _, ev in state.evals])
                if state.evals
                else np.empty((0, int(data.select(s).sum())))
                for s in EVAL_SPLITS
            },
        )
    write_json(
        out_dir / "train_meta.json",
        build_meta(
            stage="train",
            config={"contrastive": cfg.to_dict(), "score": score_cfg.to_dict()},
            seed=seed,
            device=device,
            started=started,
            inputs={
                "manifest_sha256": data.manifest_sha256,
                "cache": str(cache or ""),
                "diffusion": str(diffusion or ""),
            },
            extra={"steps": state.step, "n_train_images": len(images)},
        ),
    )
    (state_dir / "last.pt").unlink(missing_ok=True)


def run_score(*, data_dir: Path, run_dir: Path, preset: str, layers: Layers, device: str) -> None:
    started = time.time()
    ckpt = torch.load(run_dir / "model.pt", map_location=device, weights_only=True)
    cfg = ContrastiveConfig.from_dict(ckpt["config"])
    score_cfg = resolve("score", preset, layers)
    model = build_model(cfg).to(device)
    model.load_state_dict(ckpt["model"])
    data = load_prepared(data_dir)
    final = score_splits(model, data, cfg, score_cfg, device)

    with atomic_path(run_dir / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split", "label", "score"])
        for split in EVAL_SPLITS:
            mask = data.select(split)
            for i, label, score in zip(
                data.ids[mask], data.labels[mask], final[split], strict=True
            ):
                writer.writerow([i, split, int(label), f"{score:.8g}"])

    with np.load(run_dir / "evals.npz") as z:
        history = {
            "epochs": [*z["epochs"], cfg.epochs],
            **{s: [*z[s], final[s]] for s in EVAL_SPLITS},
        }
    labels = {s: data.labels[data.select(s)] for s in EVAL_SPLITS}
    metrics = select_all(history, labels)
    write_json(run_dir / "metrics.json", metrics)
    train_meta = read_json(run_dir / "train_meta.json")
    write_json(
        run_dir / "meta.json",
        build_meta(
            stage="score",
            config={"score": score_cfg.to_dict()},
            seed=train_meta["seed"],
            device=device,
            started=started,
            inputs={"manifest_sha256": data.manifest_sha256},
            extra={"train": train_meta},
        ),
    )
