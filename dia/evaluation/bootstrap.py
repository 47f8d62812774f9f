"""Paired bootstrap confidence interval of an AUROC difference between two methods.

Both methods scored the same test images, so each replicate resamples image indices once and
evaluates both methods on that same resample: the interval reflects test-set sampling, paired,
with the seed-to-seed spread of each method folded in by averaging its seeds' AUROCs. Normals
and anomalies are resampled separately (stratified), so every replicate has both classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dia.evaluation.metrics import auroc


@dataclass(frozen=True)
class Interval:
    """Observed mean-over-seeds AUROC difference (a - b) and its percentile interval."""

    diff: float
    low: float
    high: float
    n_boot: int


def _mean_auroc(labels: np.ndarray, runs: Sequence[np.ndarray], index: np.ndarray) -> float:
    return float(np.mean([auroc(labels[index], scores[index]) for scores in runs]))


def paired_bootstrap(
    labels: np.ndarray,
    runs_a: Sequence[np.ndarray],
    runs_b: Sequence[np.ndarray],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Interval of mean AUROC(a) - mean AUROC(b) over seeds, on the same resampled images.

    ``runs_a`` / ``runs_b``: one score array per seed, each aligned with ``labels``.
    """
    labels = np.asarray(labels)
    if not runs_a or not runs_b:
        raise ValueError("both methods need at least one run")
    if any(len(s) != len(labels) for s in (*runs_a, *runs_b)):
        raise ValueError("every score array must align with labels")
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in (0, 1)]
    everything = np.arange(len(labels))
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        index = np.concatenate([rng.choice(members, len(members)) for members in classes])
        diffs[i] = _mean_auroc(labels, runs_a, index) - _mean_auroc(labels, runs_b, index)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    observed = _mean_auroc(labels, runs_a, everything) - _mean_auroc(labels, runs_b, everything)
    return Interval(diff=observed, low=float(low), high=float(high), n_boot=n_boot)
