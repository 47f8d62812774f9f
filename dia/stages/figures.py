"""Stages of the figures: ROC and training curves per dataset, the dissolving grid (Fig. 1)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dia.data.prepare import ImageBatches, load_prepared
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import load_diffusion
from dia.evaluation.metrics import auroc
from dia.figures import dissolving_grid, roc_figure, training_curves
from dia.sections import resolve
from dia.tables import read_test_scores

FIG1_T = (30, 60, 100, 130, 200)


def run_roc_figure(runs: list[dict[str, Any]], dataset: str, dest: Path) -> None:
    """``runs``: records with ``method`` and ``path`` (scores.csv) of one dataset."""
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run in runs:
        _, labels, scores = read_test_scores(run["path"])
        curves[run["method"]].append((labels, scores))
    aurocs = {m: float(np.mean([auroc(lab, s) for lab, s in c])) for m, c in curves.items()}
    roc_figure(curves, aurocs, dataset, dest)


def run_training_figure(runs: list[dict[str, Any]], dataset: str, dest: Path) -> None:
    """``runs``: records with ``method`` and ``path`` (train_log.csv) of one dataset."""
    logs: dict[str, list[pd.DataFrame]] = defaultdict(list)
    for run in runs:
        logs[run["method"]].append(pd.read_csv(run["path"]))
    training_curves(logs, dataset, dest)


def run_dissolving_figure(
    datasets: list[dict[str, Any]], preset: str, dest: Path, t_values: tuple[int, ...] = FIG1_T
) -> None:
    """``datasets``: ``name``, ``data_dir``, ``model`` (diffusion model.pt) and ``layers``.

    Shows the first normal training image of each dataset, dissolved at every ``t``.
    """
    rows = {}
    for entry in datasets:
        cfg = resolve("dissolve", preset, entry["layers"])
        data = load_prepared(entry["data_dir"])
        image = ImageBatches(data.images[data.select("train", 0)])[0:1]
        dissolver = Dissolver(
            load_diffusion(entry["model"], cfg.weights), cfg, image_size=image.shape[-1]
        )
        with torch.inference_mode():
            dissolved = [dissolver(image, torch.tensor([t])) for t in t_values]
        if cfg.input_scaling == "unit":
            dissolved = [d.clamp(0, 1) for d in dissolved]
        stack = torch.cat([image, *dissolved]).permute(0, 2, 3, 1).numpy()
        rows[entry["name"]] = stack
    dissolving_grid(rows, t_values, dest)
