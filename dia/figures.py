"""Figures: the dissolving grid (paper Fig. 1), the data-ratio bars (Fig. 4), ROC curves and
training curves per dataset.

Each function takes plain arrays or file paths and writes one PNG atomically, so the rules stay
thin and the figures are testable without a workflow run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from dia.io import atomic_path

_FPR_GRID = np.linspace(0.0, 1.0, 201)


def _save(fig: plt.Figure, dest: Path) -> None:
    fig.tight_layout()
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)


def dissolving_grid(rows: Mapping[str, np.ndarray], t_values: Sequence[int], dest: Path) -> None:
    """One row per dataset: the original, then D(x, t) for each ``t`` (images in [0, 1]).

    ``rows[name]``: float (1 + len(t_values), H, W, 3), the original first.
    """
    columns = ["original", *(f"t = {t}" for t in t_values)]
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(1.6 * len(columns), 1.7 * len(rows)), squeeze=False
    )
    for r, (name, images) in enumerate(rows.items()):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(np.clip(image, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle("Dissolved images D(x, t) at increasing diffusion step t", fontsize=10, y=1.02)
    _save(fig, dest)


def _mean_roc(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """TPR on a fixed FPR grid, averaged over runs (seeds)."""
    curves = []
    for labels, scores in runs:
        fpr, tpr, _ = roc_curve(labels, scores)
        curves.append(np.interp(_FPR_GRID, fpr, tpr))
    return np.mean(curves, axis=0)


def roc_figure(
    runs: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    aurocs: Mapping[str, float],
    dataset: str,
    dest: Path,
) -> None:
    """Test ROC of every method on ``dataset``, TPR averaged over its seeds."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for method, method_runs in runs.items():
        label = f"{method} (AUROC {aurocs[method]:.3f}, {len(method_runs)} seeds)"
        ax.plot(_FPR_GRID, _mean_roc(method_runs), label=label, lw=1.4)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (mean over seeds)")
    ax.set_title(f"ROC, test split: {dataset}")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, dest)


def training_curves(logs: Mapping[str, Sequence[pd.DataFrame]], dataset: str, dest: Path) -> None:
    """Training loss per epoch of every method on ``dataset``: mean over seeds, min-max band.

    Losses of different methods have different scales, so each method gets its own panel.
    """
    methods = list(logs)
    ncols = min(4, len(methods))
    nrows = -(-len(methods) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.4 * nrows), squeeze=False)
    for ax in axes.flat[len(methods) :]:
        ax.set_visible(False)
    for ax, method in zip(axes.flat, methods, strict=False):
        frames = logs[method]
        epochs = frames[0]["epoch"].to_numpy()
        losses = np.stack([f["loss"].to_numpy()[: len(epochs)] for f in frames])
        ax.plot(epochs, losses.mean(0), lw=1.4)
        ax.fill_between(epochs, losses.min(0), losses.max(0), alpha=0.25)
        ax.set_title(f"{method} ({len(frames)} seeds)", fontsize=9)
        ax.set_xlabel("epoch")
    for row in axes:
        row[0].set_ylabel("training loss")
    fig.suptitle(f"Training curves: {dataset}", fontsize=10, y=1.04)
    _save(fig, dest)


def data_ratio_figure(table: pd.DataFrame, datasets: Sequence[str], dest: Path) -> None:
    """Fig. 4: bars per dataset for each diffusion data ratio, ours with the std over seeds as
    error bars (none for one seed) and the paper's value as a black tick (in the legend only
    where the paper has one: it has none for the phantom); a missing combination has no bar.

    ``table``: rows of one selection rule with ``setting`` (ratio), ``dataset``, ``auroc_mean``,
    ``auroc_std``, ``n_seeds`` and ``paper_auroc``.
    """
    settings = sorted(table["setting"].unique(), key=float)
    index = {(r["setting"], r["dataset"]): r for r in table.to_dict("records")}
    width = 0.8 / max(1, len(settings))
    fig, ax = plt.subplots(figsize=(2.0 + 1.3 * len(datasets), 3.4))
    for i, setting in enumerate(settings):
        xs = np.arange(len(datasets)) + (i - (len(settings) - 1) / 2) * width
        rows = [index.get((setting, d)) for d in datasets]
        mean = [r["auroc_mean"] if r else np.nan for r in rows]
        std = [r["auroc_std"] if r else np.nan for r in rows]
        ax.bar(xs, mean, width * 0.95, yerr=std, capsize=3, label=f"ours, ratio {setting}")
        paper = [r["paper_auroc"] if r else np.nan for r in rows]
        ax.scatter(xs, paper, marker="_", s=250, color="black", zorder=3)
        for x, r in zip(xs, rows, strict=True):
            if r:
                ax.text(x, 0.02, f"n={int(r['n_seeds'])}", ha="center", fontsize=6, rotation=90)
    if table["paper_auroc"].notna().any():
        ax.scatter([], [], marker="_", s=250, color="black", label="paper")
    ax.set_xticks(np.arange(len(datasets)), datasets, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test AUROC (mean over seeds)")
    ax.set_title("Fig. 4: diffusion training-data ratio", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, dest)
