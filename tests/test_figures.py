"""Figures from hand-made inputs: files are written, every method and seed is drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt

import dia.figures as figures
from dia.figures import data_ratio_figure, dissolving_grid, roc_figure, training_curves


def _capture(monkeypatch):
    """Keep the figure handed to _save so its content can be inspected."""
    saved = {}
    original = figures._save

    def keep(fig, dest):
        saved["axes"] = list(fig.axes)
        saved["texts"] = [
            t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts
        ]
        saved["titles"] = [ax.get_title() for ax in fig.axes]
        original(fig, dest)

    monkeypatch.setattr(figures, "_save", keep)
    return saved


def test_roc_figure_has_one_curve_per_method(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    labels = np.r_[np.zeros(10), np.ones(10)]
    rng = np.random.default_rng(0)
    runs = {
        m: [(labels, labels + rng.normal(size=20)) for _ in range(n)]
        for m, n in (("dia", 3), ("csi", 2))
    }
    roc_figure(runs, {"dia": 0.9, "csi": 0.8}, "kvasir", tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert saved["texts"] == ["dia (AUROC 0.900, 3 seeds)", "csi (AUROC 0.800, 2 seeds)"]
    assert len(saved["axes"][0].lines) == 3  # two methods and the chance diagonal


def test_training_curves_one_panel_per_method(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    log = pd.DataFrame({"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.5]})
    training_curves({"dia": [log, log * 1.1], "kdad": [log]}, "oct", tmp_path / "t.png")
    assert saved["titles"] == ["dia (2 seeds)", "kdad (1 seeds)"]
    assert (tmp_path / "t.png").stat().st_size > 0


def test_dissolving_grid_has_a_column_per_t(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    rows = {"a": np.zeros((4, 8, 8, 3)), "b": np.ones((4, 8, 8, 3))}
    dissolving_grid(rows, (30, 60, 100), tmp_path / "g.png")
    assert len(saved["axes"]) == 8
    assert saved["titles"][:4] == ["original", "t = 30", "t = 60", "t = 100"]
    plt.close("all")


def test_data_ratio_figure_draws_a_bar_per_measured_cell(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    table = pd.DataFrame(
        {
            "setting": ["1.0", "1.0", "0.1"],
            "dataset": ["kvasir", "cifar10", "kvasir"],
            "auroc_mean": [0.8, 0.9, 0.7],
            "auroc_std": [0.02, None, 0.01],
            "n_seeds": [3, 1, 3],
            "paper_auroc": [0.732, 0.935, 0.679],
        }
    )
    data_ratio_figure(table, ["kvasir", "cifar10"], tmp_path / "f.png")
    ax = saved["axes"][0]
    heights = [round(p.get_height(), 3) for p in ax.patches]
    # ratio 0.1 first (sorted), cifar10 at 0.1 is missing: a NaN bar that draws nothing
    assert heights[:1] == [0.7] and heights[2:] == [0.8, 0.9]
    assert np.isnan(heights[1])
    assert sorted(saved["texts"]) == ["ours, ratio 0.1", "ours, ratio 1.0", "paper"]
    plt.close("all")
    saved = _capture(monkeypatch)
    data_ratio_figure(table.assign(paper_auroc=np.nan), ["kvasir"], tmp_path / "f.png")
    assert sorted(saved["texts"]) == ["ours, ratio 0.1", "ours, ratio 1.0"]
