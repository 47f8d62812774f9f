"""Model-selection rules, reported side by side and never mixed (design.md section 5).

``last`` is the final model (the primary number); ``val`` the evaluated epoch with the best
validation AUROC; ``test_oracle`` the epoch with the best test AUROC, as the official code selects
its checkpoint, and therefore optimistic. Every rule reports metrics on the test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dia.evaluation.metrics import detection_metrics

RULES = ("last", "val", "test_oracle")


def select_all(history: dict[str, Any], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """``history``: ``epochs`` and per-split score arrays in the same order (final model last)."""
    epochs = list(history["epochs"])
    per_epoch = [
        {split: detection_metrics(labels[split], history[split][i]) for split in ("val", "test")}
        for i in range(len(epochs))
    ]
    chosen = {
        "last": len(epochs) - 1,
        # ties go to the later epoch, the one closer to the fully trained model
        "val": max(range(len(epochs)), key=lambda i: (per_epoch[i]["val"]["auroc"], i)),
        "test_oracle": max(range(len(epochs)), key=lambda i: (per_epoch[i]["test"]["auroc"], i)),
    }
    return {
        rule: {
            "epoch": int(epochs[i]),
            **per_epoch[i]["test"],
            "val_auroc": per_epoch[i]["val"]["auroc"],
        }
        for rule, i in chosen.items()
    }
