from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from dia.evaluation.metrics import auprc, auroc, detection_metrics
from dia.evaluation.selection import OFFICIAL_RULES, RULES, select_all


def random_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """Continuous scores, heavily tied integer scores and all-tied scores, various sizes."""
    rng = np.random.default_rng(0)
    cases = []
    for trial in range(60):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        labels[0], labels[-1] = 0, 1  # both classes present
        rng.shuffle(labels)
        kind = trial % 3
        if kind == 0:
            scores = rng.normal(size=n) + labels
        elif kind == 1:
            scores = rng.integers(-2, 3, n)
        else:
            scores = rng.integers(0, 2, n).astype(float) * 0.5
        cases.append((labels, scores))
    cases.append((np.array([0, 1, 0, 1]), np.array([3, 3, 3, 3])))
    return cases


@pytest.mark.parametrize(("labels", "scores"), random_cases())
def test_auroc_and_auprc_match_sklearn(labels: np.ndarray, scores: np.ndarray) -> None:
    assert abs(auroc(labels, scores) - roc_auc_score(labels, scores)) < 1e-12
    assert abs(auprc(labels, scores) - average_precision_score(labels, scores)) < 1e-12


def test_hand_examples() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    # Ranked: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-): AP = 1/2 * 1 + 1/2 * 2/3.
    assert auprc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(5 / 6)
    assert auroc(labels, np.array([1, 2, 3, 4])) == 1.0
    assert auroc(labels, np.array([4, 3, 2, 1])) == 0.0
    assert detection_metrics(labels, np.array([1, 2, 3, 4])) == {"auroc": 1.0, "auprc": 1.0}


@pytest.mark.parametrize("fn", [auroc, auprc])
def test_errors(fn) -> None:
    with pytest.raises(ValueError, match="both"):
        fn(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="both"):
        fn(np.array([0, 0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([0, 1]), np.array([0.1, np.inf]))
    with pytest.raises(ValueError, match="length"):
        fn(np.array([0, 1, 1]), np.array([0.1, 0.2]))


def test_select_all_on_hand_made_history() -> None:
    """Epochs 10, 20, 30: val AUROC 1.0, 0.5, 0.75 -> val picks 10; test AUROC 0.25, 1.0, 0.75
    -> test_oracle picks 20; last is 30. Every rule reports that epoch's test metrics."""
    labels = {"val": np.array([0, 0, 1, 1]), "test": np.array([0, 1, 0, 1])}
    history = {
        "epochs": [10, 20, 30],
        "val": [
            np.array([0.1, 0.2, 0.3, 0.4]),
            np.array([0.1, 0.3, 0.2, 0.4]),
            np.array([0.1, 0.25, 0.2, 0.4]),
        ],
        "test": [
            np.array([0.3, 0.2, 0.15, 0.1]),
            np.array([0.1, 0.3, 0.2, 0.4]),
            np.array([0.1, 0.3, 0.35, 0.4]),
        ],
    }
    val_auroc = [1.0, 0.75, 0.75]
    test_auroc = [0.25, 1.0, 0.75]
    for i in range(3):
        assert auroc(labels["val"], history["val"][i]) == val_auroc[i]
        assert auroc(labels["test"], history["test"][i]) == test_auroc[i]
    result = select_all(history, labels)
    assert set(result) == set(RULES) - {"official"}  # only Transformaly and UniAD have it
    for rule, i in {"last": 2, "val": 0, "test_oracle": 1}.items():
        expected = {
            "epoch": history["epochs"][i],
            **detection_metrics(labels["test"], history["test"][i]),
            "val_auroc": val_auroc[i],
        }
        assert result[rule] == expected
    assert result["test_oracle"]["auroc"] == 1.0
    assert result["val"]["auroc"] == 0.25


@pytest.mark.parametrize(
    ("ties", "val_epoch", "oracle_epoch"), [("earlier", 5, 5), ("later", 7, 6)]
)
def test_select_all_ties(ties: str, val_epoch: int, oracle_epoch: int) -> None:
    """``earlier`` keeps the first of equal epochs (the official strict >), ``later`` the last."""
    labels = {"val": np.array([0, 1]), "test": np.array([0, 1])}
    same = [np.array([0.0, 1.0])] * 3
    history = {"epochs": [5, 6, 7], "val": same, "test": [same[0], same[0], np.array([1.0, 0.0])]}
    result = select_all(history, labels, ties=ties)
    assert result["val"]["epoch"] == val_epoch
    assert result["test_oracle"]["epoch"] == oracle_epoch
    assert result["last"]["epoch"] == 7


def _flip_history() -> tuple[dict, dict]:
    """Epochs 1, 6, 11 and the final 30: test AUROC 0.25 (flipped: 0.75), 0.5, 0.75, 0.5."""
    labels = {"val": np.array([0, 1]), "test": np.array([0, 1, 0, 1])}
    test = [
        np.array([0.3, 0.2, 0.15, 0.1]),
        np.array([0.1, 0.1, 0.1, 0.1]),
        np.array([0.1, 0.3, 0.35, 0.4]),
        np.array([0.2, 0.2, 0.2, 0.2]),
    ]
    history = {"epochs": [1, 6, 11, 30], "val": [np.array([0.0, 1.0])] * 4, "test": test}
    return history, labels


def test_uniad_official_rule_flips_auroc_below_half_and_keeps_the_later_tie() -> None:
    history, labels = _flip_history()
    result = select_all(history, labels, official="uniad")
    official = result["official"]
    assert official["epoch"] == 11  # 0.75 at epoch 1 (flipped) ties with 0.75 at 11: later
    assert official["auroc"] == 0.75
    assert official["rule"] == OFFICIAL_RULES["uniad"]
    history["test"][2] = history["test"][3]  # now only epoch 1 reaches 0.75, after the flip
    flipped = select_all(history, labels, official="uniad")["official"]
    assert (flipped["epoch"], flipped["auroc"]) == (1, 0.75)
    assert flipped == {
        "epoch": 1,
        **detection_metrics(labels["test"], -history["test"][0]),
        "val_auroc": 1.0,
        "rule": OFFICIAL_RULES["uniad"],
    }
    assert result["test_oracle"]["auroc"] == 0.75 and result["test_oracle"]["epoch"] == 11


@pytest.mark.parametrize(
    ("losses", "epoch"),
    [
        ([0.5, 0.4, 0.3], 11),
        ([0.5, 0.4995, 0.4992], 1),  # no drop beats the 0.001 margin: the first stays
        ([0.5, 0.4985, 0.6], 6),
        ([0.5, 0.4, 0.3, 0.2], 30),  # the final model, when it is on the schedule
    ],
)
def test_transformaly_official_rule_keeps_the_lowest_test_normal_loss(
    losses: list[float], epoch: int
) -> None:
    history, labels = _flip_history()
    history["selection_loss"] = np.array(losses)
    official = select_all(history, labels, official="transformaly")["official"]
    assert official["epoch"] == epoch
    i = history["epochs"].index(epoch)
    assert official["auroc"] == detection_metrics(labels["test"], history["test"][i])["auroc"]


def test_official_rule_of_another_model_is_an_error() -> None:
    history, labels = _flip_history()
    with pytest.raises(ValueError, match="no official selection rule for 'rd4ad'"):
        select_all(history, labels, official="rd4ad")


def test_transformaly_without_evaluations_has_no_official_choice() -> None:
    """No loss was recorded (no evaluation): there is nothing the official code would have kept."""
    history, labels = _flip_history()
    assert "official" not in select_all(history, labels, official="transformaly")
    history["selection_loss"] = np.zeros(5)
    with pytest.raises(ValueError, match="5 selection losses for 4 evaluated models"):
        select_all(history, labels, official="transformaly")
