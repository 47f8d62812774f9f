"""Model-selection rules, reported side by side and never mixed.

``last`` is the final model (the primary number); ``val`` the evaluated epoch with the best
validation AUROC; ``test_oracle`` the epoch with the best test AUROC, as the official code selects
its checkpoint, and therefore optimistic. Every rule reports metrics on the test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dia.evaluation.metrics import detection_metrics

RULES = ("last", "val", "test_oracle")


def select_all(
    history: dict[str, Any], labels: dict[str, np.ndarray], *, ties: str = "earlier"
) -> dict[str, Any]:
    """``history``: ``epochs`` and per-split score arrays in the same order (final model last).

    ``ties``: which of equally good epochs a rule keeps; ``earlier`` is the official strict ``>``.
    """
    if ties not in ("earlier", "later"):
        raise ValueError(f"ties must be 'earlier' or 'later', got {ties!r}")
    epochs = list(history["epochs"])
    per_epoch = [
        {split: detection_metrics(labels[split], history[split][i]) for split in ("val", "test")}
        for i in range(len(epochs))
    ]
    order = -1 if ties == "earlier" else 1

    def best(split: str) -> int:
        return max(range(len(epochs)), key=lambda i: (per_epoch[i][split]["auroc"], order * i))

    chosen = {"last": len(epochs) - 1, "val": best("val"), "test_oracle": best("test")}
    return {
        rule: {
            "epoch": int(epochs[i]),
            **per_epoch[i]["test"],
            "val_auroc": per_epoch[i]["val"]["auroc"],
        }
        for rule, i in chosen.items()
    }
