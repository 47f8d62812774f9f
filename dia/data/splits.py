"""Deterministic train/val/test splits and the frozen split manifests under config/splits/.

Datasets without an official split (SARS-CoV-2, Kvasir, APTOS 2019) are split by ranking every
image on ``sha256(f"{seed}/{key}")`` within its raw class: the result depends only on the file
names and the split seed, never on a library's random stream, so any user with the same files gets
the same split on any machine. Identical images (the SARS-CoV-2 archive has two duplicate pairs)
share the key of their first file name, so a duplicate can never sit in train and test at once.

A frozen manifest (path, sha256, raw label, split) pins the split and the exact files: a local copy
that differs from it stops the run with the differing files named.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dia.errors import DiaError
from dia.io import atomic_path

SPLITS = ("train", "val", "test")
# The splits every method scores: val for the val selection rule, test for the reported numbers.
EVAL_SPLITS = ("val", "test")
FROZEN_COLUMNS = ("path", "sha256", "raw_label", "split")
_SHOWN = 5


@dataclass(frozen=True)
class SplitSpec:
    """How to split a dataset that lacks (part of) an official split."""

    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise DiaError("split fractions must lie in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise DiaError(
                f"split.val_fraction + split.test_fraction = "
                f"{self.val_fraction + self.test_fraction:g} leaves no training images"
            )


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()


def _group_keys(paths: Sequence[str], sha256: Sequence[str]) -> list[str]:
    """Key of each image: the smallest file name among the images with the same pixels."""
    first: dict[str, str] = {}
    for path, digest in zip(paths, sha256, strict=True):
        if digest not in first or path < first[digest]:
            first[digest] = path
    return [first[digest] for digest in sha256]


def assign_splits(
    paths: Sequence[str],
    sha256: Sequence[str],
    raw_labels: Sequence[str],
    spec: SplitSpec,
    official: Sequence[str | None] | None = None,
) -> list[str]:
    """Split of every image, stratified by raw label.

    ``official`` gives each image's official split (or None). Images with an official split keep
    it; when the official split has no ``val``, validation is carved from the official ``train``
    images with ``spec.val_fraction`` (normals and anomalies alike, stratified), and for a class
    with no official training image (a defect class that only ``test`` holds) from its ``test``
    images. Images without an official split get ``test_fraction`` test, ``val_fraction`` val
    and the rest train.
    """
    n = len(paths)
    official = list(official) if official is not None else [None] * n
    if not len(sha256) == len(raw_labels) == len(official) == n:
        raise ValueError("paths, sha256, raw_labels and official must have the same length")
    has_val = "val" in official
    in_train = {
        label for label, split in zip(raw_labels, official, strict=True) if split == "train"
    }
    keys = _group_keys(paths, sha256)
    out: list[str | None] = list(official)
    pools: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for i, split in enumerate(official):
        # a class the official train split lacks (anomalib's test/<defect>) gives val from test
        carve = split == "train" or (split == "test" and raw_labels[i] not in in_train)
        if split is None or (carve and not has_val):
            pools[(raw_labels[i], split)].append(i)
    for (_, split), members in sorted(pools.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        fractions = (
            {"test": spec.test_fraction, "val": spec.val_fraction}
            if split is None
            else {"val": spec.val_fraction}
        )
        _fill(out, members, keys, spec.seed, fractions, rest=split or "train")
    return [s if s is not None else "train" for s in out]


def _fill(
    out: list[str | None],
    members: list[int],
    keys: list[str],
    seed: int,
    fractions: dict[str, float],
    rest: str = "train",
) -> None:
    """Give the lowest-ranked groups of ``members`` the splits in ``fractions``, the rest
    ``rest``."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in members:
        groups[keys[i]].append(i)
    order = sorted(groups, key=lambda k: (_rank(seed, k), k))
    quotas = [(split, round(len(members) * f)) for split, f in fractions.items()]
    position = 0
    for split, quota in quotas:
        taken = 0
        while taken < quota and position < len(order):
            for i in groups[order[position]]:
                out[i] = split
            taken += len(groups[order[position]])
            position += 1
    for key in order[position:]:
        for i in groups[key]:
            out[i] = rest


def write_frozen(
    dest: Path,
    paths: Sequence[str],
    sha256: Sequence[str],
    raw_labels: Sequence[str],
    splits: Sequence[str],
) -> None:
    """Write a frozen split manifest, sorted by path so diffs stay readable."""
    rows = sorted(zip(paths, sha256, raw_labels, splits, strict=True))
    with atomic_path(dest) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FROZEN_COLUMNS)
        writer.writerows(rows)


def read_frozen(path: Path) -> dict[str, tuple[str, str, str]]:
    """``{path: (sha256, raw_label, split)}`` of a frozen split manifest."""
    path = Path(path)
    if not path.is_file():
        raise DiaError(f"frozen split {path} not found; fix the dataset's split.frozen option")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FROZEN_COLUMNS:
            raise DiaError(f"{path} has columns {reader.fieldnames}, expected {FROZEN_COLUMNS}")
        rows = {r["path"]: (r["sha256"], r["raw_label"], r["split"]) for r in reader}
    bad = sorted({s for _, _, s in rows.values()} - set(SPLITS))
    if bad:
        raise DiaError(f"{path} has unknown split(s) {bad}; expected {', '.join(SPLITS)}")
    return rows


def frozen_splits(
    frozen: Path, paths: Sequence[str], sha256: Sequence[str], raw_labels: Sequence[str]
) -> list[str]:
    """Splits from ``frozen``, after checking that the local files are exactly the frozen ones."""
    rows = read_frozen(frozen)
    local = {p: (d, r) for p, d, r in zip(paths, sha256, raw_labels, strict=True)}
    missing = sorted(set(rows) - set(local))
    extra = sorted(set(local) - set(rows))
    changed = sorted(p for p in set(rows) & set(local) if rows[p][:2] != local[p])
    problems = [
        _listing(kind, names)
        for kind, names in (("missing", missing), ("not in it", extra), ("changed", changed))
        if names
    ]
    if problems:
        raise DiaError(
            f"the local files differ from the frozen split {frozen}: {'; '.join(problems)}; "
            f"use an unmodified copy of the official archive"
        )
    return [rows[p][2] for p in paths]


def _listing(kind: str, names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{len(names)} {kind} ({shown}{more})"
