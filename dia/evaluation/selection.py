"""Model-selection rules, reported side by side and never mixed.

``last`` is the final model (the primary number); ``val`` the evaluated epoch with the best
validation AUROC; ``test_oracle`` the epoch with the best test AUROC, as the official DIA code
selects its checkpoint, and therefore optimistic. Every rule reports metrics on the test split.

``official`` exists only for the methods whose official code selects otherwise, with the rule
named by :data:`OFFICIAL_RULES`: Transformaly keeps the model with the lowest loss on the *test*
normals among its evaluations (``utils.train``: an epoch replaces the best only if its loss is
lower by more than 0.001), UniAD the evaluation with the best test AUROC, an AUROC below 0.5
counting as its complement (``utils/eval_helper.py``), ties to the later epoch
(``tools/train_val.py``: ``>=``). Both look at the test split, so both are optimistic too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dia.data.splits import EVAL_SPLITS
from dia.evaluation.metrics import detection_metrics

RULES = ("last", "val", "test_oracle", "official")
# the official selection of a method (model name) and how its metrics.json labels it
OFFICIAL_RULES = {
    "transformaly": "lowest test-normal loss (by > 0.001) at the evaluated epochs",
    "uniad": "best test AUROC, flipped below 0.5, later epoch on ties",
}
LOSS_MARGIN = 0.001  # Transformaly utils.train: best_val_loss - 0.001 > val_epoch_loss


def select_all(
    history: dict[str, Any],
    labels: dict[str, np.ndarray],
    *,
    ties: str = "earlier",
    official: str | None = None,
) -> dict[str, Any]:
    """``history``: ``epochs`` and per-split score arrays in the same order (final model last),
    and for Transformaly ``selection_loss``, the test-normal loss of each evaluated epoch.

    ``ties``: which of equally good epochs a rule keeps; ``earlier`` is the official strict ``>``.
    ``official``: the model whose official selection (:data:`OFFICIAL_RULES`) is added.
    """
    if ties not in ("earlier", "later"):
        raise ValueError(f"ties must be 'earlier' or 'later', got {ties!r}")
    epochs = list(history["epochs"])
    per_epoch = [
        {split: detection_metrics(labels[split], history[split][i]) for split in EVAL_SPLITS}
        for i in range(len(epochs))
    ]
    order = -1 if ties == "earlier" else 1

    def best(split: str) -> int:
        return max(range(len(epochs)), key=lambda i: (per_epoch[i][split]["auroc"], order * i))

    chosen = {"last": len(epochs) - 1, "val": best("val"), "test_oracle": best("test")}
    out = {rule: _report(i, per_epoch, epochs) for rule, i in chosen.items()}
    if official == "transformaly":
        losses = history.get("selection_loss")
        if losses is not None and len(losses):  # no evaluation: no official choice to report
            i = _lowest_loss(losses, len(epochs))
            out["official"] = {**_report(i, per_epoch, epochs), "rule": OFFICIAL_RULES[official]}
    elif official == "uniad":
        out["official"] = _best_flipped(history, labels, epochs) | {
            "rule": OFFICIAL_RULES[official]
        }
    elif official is not None:
        raise ValueError(f"no official selection rule for {official!r}")
    return out


def _report(i: int, per_epoch: list[dict[str, Any]], epochs: list[int]) -> dict[str, Any]:
    """The test metrics of evaluation ``i``, its epoch and its validation AUROC."""
    return {
        "epoch": int(epochs[i]),
        **per_epoch[i]["test"],
        "val_auroc": per_epoch[i]["val"]["auroc"],
    }


def _lowest_loss(losses: Any, n: int) -> int:
    """Transformaly: the evaluation kept last, each one replacing the best so far when its loss
    is lower by more than the margin. ``losses`` belong to the first of the ``n`` epochs."""
    if len(losses) > n:
        raise ValueError(f"{len(losses)} selection losses for {n} evaluated models")
    best, best_loss = 0, np.inf
    for i, loss in enumerate(losses):
        if best_loss - LOSS_MARGIN > loss:
            best, best_loss = i, loss
    return best


def _best_flipped(
    history: dict[str, Any], labels: dict[str, np.ndarray], epochs: list[int]
) -> dict[str, Any]:
    """UniAD: every evaluation scored with the sign that gives AUROC >= 0.5, the best kept."""
    flipped = []
    for i in range(len(epochs)):
        metrics = {}
        for split in EVAL_SPLITS:
            m = detection_metrics(labels[split], history[split][i])
            if m["auroc"] < 0.5:
                m = detection_metrics(labels[split], -np.asarray(history[split][i]))
            metrics[split] = m
        flipped.append(metrics)
    i = max(range(len(epochs)), key=lambda k: (flipped[k]["test"]["auroc"], k))
    return _report(i, flipped, epochs)
