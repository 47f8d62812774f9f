"""Expansion of one-class families (CIFAR in Fig. 4) into one dataset per normal class."""

from __future__ import annotations

import pytest

from dia.data.one_class import expand_one_class
from dia.errors import DiaError


def test_family_becomes_one_dataset_per_class_sharing_its_download() -> None:
    specs, families = expand_one_class(
        {
            "kvasir": {"source": "kvasir", "normal_labels": ["normal-cecum"]},
            "cifar10": {"source": "cifar10", "one_class": [0, 3], "main": False},
        }
    )
    assert list(specs) == ["kvasir", "cifar10_class0", "cifar10_class3"]
    assert families == {"cifar10": ["cifar10_class0", "cifar10_class3"]}
    assert specs["cifar10_class3"] == {
        "source": "cifar10",
        "main": False,
        "normal_labels": [3],
        "family": "cifar10",
    }
    assert specs["kvasir"] == {"source": "kvasir", "normal_labels": ["normal-cecum"]}


@pytest.mark.parametrize(
    ("datasets", "culprit"),
    [
        ({"c": {"source": "cifar10", "one_class": [0, 1], "normal_labels": [0]}}, "datasets.c"),
        ({"c": {"source": "cifar10"}}, "set normal_labels"),
        (
            {
                "c": {"source": "cifar10", "one_class": [0, 1]},
                "c_class1": {"source": "cifar10", "normal_labels": [1]},
            },
            "c_class1",
        ),
    ],
)
def test_ambiguous_families_are_config_errors(datasets, culprit: str) -> None:
    with pytest.raises(DiaError, match=culprit):
        expand_one_class(datasets)
