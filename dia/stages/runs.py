"""Stages ``train`` and ``score`` of one run (method x dataset x variant x seed).

CSI and DIA go through :mod:`dia.stages.contrastive`, a baseline through
:mod:`dia.stages.baselines`; both write the same files.

``train`` writes model.pt, train_log.csv, evals.npz (the periodic validation and test scores the
``val`` and ``test_oracle`` selection rules need) and train_meta.json. ``score`` scores the final
model and writes scores.csv, metrics.json and meta.json.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia.checkpoint import claim_state_dir, file_stamp
from dia.data.prepare import PreparedData, load_prepared
from dia.data.splits import EVAL_SPLITS
from dia.data.views import INDEX as VIEWS_INDEX
from dia.errors import DiaError, one_line
from dia.evaluation.selection import OFFICIAL_RULES, select_all
from dia.io import atomic_path, file_digest, read_json, write_json
from dia.meta import build_meta
from dia.sections import resolve
from dia.stages.baselines import score_baseline, train_baseline
from dia.stages.contrastive import contrastive_name, score_contrastive, train_contrastive
from dia.training import TrainState

Layers = list[dict[str, Any]]


def _write_run(out_dir: Path, ckpt: dict[str, Any], state: TrainState, data: PreparedData) -> None:
    """model.pt (the weights, with the name and config that rebuild the model), the training
    log and the periodic evaluations."""
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(ckpt, tmp)
    _write_log(out_dir / "train_log.csv", state.log)
    _write_evals(out_dir / "evals.npz", state, data)


def _write_log(path: Path, log: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        fields = list(log[0]) if log else ["epoch"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(log)


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
    inputs = {"cache": cache, "diffusion": diffusion, "official": official, "views": views}
    claim_state_dir(state_dir, _fingerprint(data, preset, layers, seed, baseline, inputs))
    common = {"state_dir": state_dir, "preset": preset, "layers": layers, "seed": seed}
    if baseline:
        model, state, config = train_baseline(
            baseline, data, views=views, device=device, official=official, **common
        )
    else:
        model, state, config = train_contrastive(
            data, device=device, cache=cache, diffusion=diffusion, official=official, **common
        )
    name = baseline or contrastive_name(config)
    ckpt = {"model_name": name, "config": config, "model": model.state_dict()}
    _write_run(out_dir, ckpt, state, data)
    meta = build_meta(
        stage="train",
        config=config,
        seed=seed,
        device=device,
        started=started,
        inputs=_train_inputs(data, cache=cache, diffusion=diffusion),
        extra=_train_summary(name, state, data),
    )
    write_json(out_dir / "train_meta.json", meta)
    # the run's resumable state (ours, and an official trainer's own checkpoints) is done with
    shutil.rmtree(state_dir, ignore_errors=True)


def _fingerprint(
    data: PreparedData,
    preset: str,
    layers: Layers,
    seed: int,
    baseline: str | None,
    inputs: dict[str, Path | None],
) -> dict[str, Any]:
    """What a run's result depends on: its resolved sections, seed, data and input files."""
    sections = (baseline,) if baseline else ("contrastive", "score", "dissolve")
    return {
        "stage": "train",
        "config": {s: resolve(s, preset, layers).to_dict() for s in sections},
        "seed": seed,
        "inputs": {
            "manifest_sha256": data.manifest_sha256,
            **{name: file_stamp(path) for name, path in inputs.items() if name != "views"},
            "views": file_stamp(inputs["views"], marker=VIEWS_INDEX),
        },
    }


def _train_inputs(
    data: PreparedData, *, cache: Path | None, diffusion: Path | None
) -> dict[str, str]:
    """What train_meta.json records of a run's inputs. The diffusion model's digest tells whether
    two runs dissolved with the same network (one retrained on other hardware, or with another
    thread count, need not have the same weights at the same seed), which a native-against-official
    pairing needs."""
    return {
        "manifest_sha256": data.manifest_sha256,
        "cache": str(cache or ""),
        "diffusion": str(diffusion or ""),
        "diffusion_sha256": file_digest(diffusion) if diffusion else "",
    }


def _train_summary(name: str, state: TrainState, data: PreparedData) -> dict[str, Any]:
    return {
        "model": name,
        "epochs": state.epoch,
        "steps": state.step,
        "n_train_images": int(data.select("train", 0).sum()),
        "train_seconds": sum(e.get("seconds", 0.0) for e in state.log),
    }


def _load_model(path: Path, device: str) -> dict[str, Any]:
    """A trained run's model.pt, read as weights and plain values only (never code)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise DiaError(
            f"cannot read trained model {path} ({one_line(exc)}); delete it and re-run: the "
            f"train rule builds it again"
        ) from exc


def _check_scores(final: dict[str, np.ndarray], run_dir: Path) -> None:
    """Refuse to write scores that are not finite: no metric can be computed from them."""
    for split in EVAL_SPLITS:
        bad = int((~np.isfinite(final[split])).sum())
        if bad:
            raise DiaError(
                f"{bad} of the {len(final[split])} {split} scores of {run_dir / 'model.pt'} are "
                f"NaN or infinite; the model is broken (see {run_dir / 'train_log.csv'}): delete "
                f"{run_dir} and re-run, with a lower learning rate if its losses grew"
            )


def _write_scores(path: Path, data: PreparedData, final: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split", "label", "score"])
        for split in EVAL_SPLITS:
            mask = data.select(split)
            for i, label, score in zip(
                data.ids[mask], data.labels[mask], final[split], strict=True
            ):
                writer.writerow([i, split, int(label), f"{score:.8g}"])


def _history(run_dir: Path, final: dict[str, np.ndarray], epochs: int) -> dict[str, Any]:
    """Scores (and selection losses) of every evaluated model, the final one last."""
    with np.load(run_dir / "evals.npz") as z:
        history = {
            "epochs": [*z["epochs"], epochs],
            **{s: [*z[s], final[s]] for s in EVAL_SPLITS},
        }
        # the losses of the evaluated epochs, and the final model's when it is on schedule
        losses = [*z.get("selection_loss", []), *np.atleast_1d(final.get("selection_loss", []))]
    if losses:
        history["selection_loss"] = np.array(losses)
    return history


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
    ckpt = _load_model(run_dir / "model.pt", device)
    data = load_prepared(data_dir)
    model_name = ckpt["model_name"]
    if model_name in ("contrastive", "official"):
        final, config = score_contrastive(
            ckpt, data, preset=preset, layers=layers, device=device, official=official
        )
    else:
        final, config = score_baseline(ckpt, data, device, views, official=official)
    _check_scores(final, run_dir)
    _write_scores(run_dir / "scores.csv", data, final)
    train_meta = read_json(run_dir / "train_meta.json")
    labels = {s: data.labels[data.select(s)] for s in EVAL_SPLITS}
    metrics = select_all(
        _history(run_dir, final, train_meta["epochs"]),
        labels,
        ties=resolve("score", preset, layers).selection_ties,
        official=model_name if model_name in OFFICIAL_RULES else None,
    )
    scored = int(data.select("train", 0).sum()) + sum(len(v) for v in labels.values())
    write_json(run_dir / "metrics.json", metrics)
    meta = build_meta(
        stage="score",
        config=config,
        seed=train_meta["seed"],
        device=device,
        started=started,
        inputs={"manifest_sha256": data.manifest_sha256},
        extra={"n_scored_images": scored, "train": train_meta},
    )
    write_json(run_dir / "meta.json", meta)
