"""Aggregation of per-run metrics into tidy and paper-shaped tables (design.md section 6)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dia.evaluation.selection import RULES
from dia.io import atomic_path, read_json
from dia.paper import paper_auroc

RUN_KEYS = ("method", "dataset", "variant", "seed")


def collect_metrics(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (method, dataset, variant, seed, selection, metric) from metrics.json files.

    ``runs``: mappings with the run keys and ``path``, the run's metrics.json.
    """
    rows = []
    for run in runs:
        metrics = read_json(run["path"])
        for selection in RULES:
            for metric in ("auroc", "auprc"):
                rows.append(
                    {
                        **{k: run[k] for k in RUN_KEYS},
                        "selection": selection,
                        "metric": metric,
                        "value": metrics[selection][metric],
                    }
                )
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "selection", "metric", "value"])


def table1(long: pd.DataFrame) -> pd.DataFrame:
    """AUROC mean and sample std over seeds per method, dataset and selection rule."""
    auroc = long[(long["metric"] == "auroc") & (long["variant"] == "default")]
    grouped = auroc.groupby(["method", "dataset", "selection"], sort=False)["value"]
    table = grouped.agg(n_seeds="count", auroc_mean="mean", auroc_std="std").reset_index()
    table["paper_auroc"] = [
        paper_auroc(m, d) for m, d in zip(table["method"], table["dataset"], strict=True)
    ]
    order = {rule: i for i, rule in enumerate(RULES)}
    table = table.sort_values(
        ["dataset", "method", "selection"],
        key=lambda c: c.map(order) if c.name == "selection" else c,
    )
    return table.reset_index(drop=True)


def write_csv(frame: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")
