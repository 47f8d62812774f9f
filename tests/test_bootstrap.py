"""Paired bootstrap interval of an AUROC difference, against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dia.evaluation.bootstrap import paired_bootstrap


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(40, int), np.ones(30, int)]
    good = [labels * 1.5 + rng.normal(size=70) for _ in range(3)]
    weak = [labels * 0.3 + rng.normal(size=70) for _ in range(2)]
    return labels, good, weak


def test_matches_a_direct_computation():
    labels, good, weak = _data()
    result = paired_bootstrap(labels, good, weak, n_boot=200, seed=7)
    rng = np.random.default_rng(7)
    normals, anomalies = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    diffs = []
    for _ in range(200):
        index = np.r_[rng.choice(normals, 40), rng.choice(anomalies, 30)]
        a = np.mean([roc_auc_score(labels[index], s[index]) for s in good])
        b = np.mean([roc_auc_score(labels[index], s[index]) for s in weak])
        diffs.append(a - b)
    assert result.low == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert result.high == pytest.approx(np.percentile(diffs, 97.5), abs=1e-12)
    observed = np.mean([roc_auc_score(labels, s) for s in good]) - np.mean(
        [roc_auc_score(labels, s) for s in weak]
    )
    assert result.diff == pytest.approx(observed, abs=1e-12)
    assert 0 < result.low < result.diff < result.high


def test_identical_methods_give_a_zero_interval_and_order_matters():
    labels, good, weak = _data(1)
    same = paired_bootstrap(labels, good, good, n_boot=100)
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)
    flipped = paired_bootstrap(labels, weak, good, n_boot=100)
    forward = paired_bootstrap(labels, good, weak, n_boot=100)
    assert flipped.low == pytest.approx(-forward.high)
    assert flipped.high < 0


def test_bad_input():
    labels, good, _ = _data()
    with pytest.raises(ValueError, match="at least one run"):
        paired_bootstrap(labels, good, [])
    with pytest.raises(ValueError, match="align"):
        paired_bootstrap(labels, good, [good[0][:10]])
