"""The one-class protocol over all classes (CIFAR-10/100 in the paper's Fig. 4).

A dataset entry with ``one_class: [labels]`` is a *family*: the workflow runs one dataset per
label, named ``<family>_class<label>``, with that label normal and every other label anomalous.
All members share the family's download; each is prepared, trained and scored alone, and a
family's result is the mean over its members. Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dia.errors import DiaError


def member_name(family: str, label: int | str) -> str:
    return f"{family}_class{label}"


def expand_one_class(
    datasets: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """(specs of the datasets as runs see them, members of each family).

    A member's spec is its family's, with ``normal_labels: [label]``, no ``anomaly_labels`` and
    ``family`` naming where its raw data comes from. Other datasets pass through unchanged.
    """
    specs: dict[str, dict[str, Any]] = {}
    families: dict[str, list[str]] = {}
    for name, spec in datasets.items():
        labels = spec.get("one_class")
        if labels is None:
            if not spec.get("normal_labels"):
                raise DiaError(
                    f"invalid config at datasets.{name}: set normal_labels (or one_class for "
                    f"the one-class protocol over all classes)"
                )
            specs[name] = dict(spec)
            continue
        if spec.get("normal_labels") or spec.get("anomaly_labels"):
            raise DiaError(
                f"invalid config at datasets.{name}: one_class sets the normal class of each "
                f"member; remove normal_labels/anomaly_labels"
            )
        base = {k: v for k, v in spec.items() if k not in ("one_class", "anomaly_labels")}
        families[name] = [member_name(name, label) for label in labels]
        for label, member in zip(labels, families[name], strict=True):
            if member in datasets:
                raise DiaError(f"invalid config at datasets.{member}: name taken by {name}'s class")
            specs[member] = {**base, "normal_labels": [label], "family": name}
    return specs, families
