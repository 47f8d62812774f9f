"""Deterministic stratified splits and frozen split manifests."""

from __future__ import annotations

from collections import Counter

import pytest

from dia.data.splits import SplitSpec, assign_splits, frozen_splits, read_frozen, write_frozen
from dia.errors import DiaError


def _dataset(n_normal: int = 50, n_anomaly: int = 30):
    paths = [f"normal/{i}.png" for i in range(n_normal)] + [
        f"sick/{i}.png" for i in range(n_anomaly)
    ]
    labels = ["normal"] * n_normal + ["sick"] * n_anomaly
    return paths, [f"h{i}" for i in range(len(paths))], labels


def test_generated_split_is_stratified_and_sized():
    paths, sha, labels = _dataset()
    splits = assign_splits(
        paths, sha, labels, SplitSpec(seed=0, val_fraction=0.1, test_fraction=0.2)
    )
    counts = Counter(zip(labels, splits, strict=True))
    assert counts == {
        ("normal", "test"): 10,
        ("normal", "val"): 5,
        ("normal", "train"): 35,
        ("sick", "test"): 6,
        ("sick", "val"): 3,
        ("sick", "train"): 21,
    }


def test_split_depends_on_names_and_seed_only():
    paths, sha, labels = _dataset()
    spec = SplitSpec(seed=3)
    splits = assign_splits(paths, sha, labels, spec)
    order = list(reversed(range(len(paths))))
    shuffled = assign_splits(
        [paths[i] for i in order], [sha[i] for i in order], [labels[i] for i in order], spec
    )
    assert [shuffled[order.index(i)] for i in range(len(paths))] == splits
    assert assign_splits(paths, sha, labels, SplitSpec(seed=4)) != splits


def test_identical_images_share_a_split():
    paths, sha, labels = _dataset()
    sha[1] = sha[0]  # normal/1.png duplicates normal/0.png
    sha[7] = sha[0]
    for seed in range(20):
        splits = assign_splits(paths, sha, labels, SplitSpec(seed=seed))
        assert splits[0] == splits[1] == splits[7]


def test_official_split_kept_and_val_carved_from_train():
    paths, sha, labels = _dataset()
    official = ["test" if i % 5 == 0 else "train" for i in range(len(paths))]
    splits = assign_splits(paths, sha, labels, SplitSpec(val_fraction=0.25), official)
    assert all(s == "test" for s, o in zip(splits, official, strict=True) if o == "test")
    carved = Counter(lab for lab, s in zip(labels, splits, strict=True) if s == "val")
    assert carved == {"normal": 10, "sick": 6}  # a quarter of each class's train images


def test_official_val_is_not_replaced():
    paths, sha, labels = _dataset(4, 4)
    official = ["train", "val", "test", "train"] * 2
    assert assign_splits(paths, sha, labels, SplitSpec(), official) == official


def test_fractions_leaving_no_training_data_are_rejected():
    with pytest.raises(DiaError, match="leaves no training images"):
        SplitSpec(val_fraction=0.5, test_fraction=0.5)


def test_frozen_round_trip_and_mismatch_lists_files(tmp_path):
    paths, sha, labels = _dataset(8, 4)
    splits = assign_splits(paths, sha, labels, SplitSpec())
    frozen = tmp_path / "frozen.csv"
    write_frozen(frozen, paths, sha, labels, splits)
    assert frozen_splits(frozen, paths, sha, labels) == splits
    assert set(read_frozen(frozen)) == set(paths)

    changed = list(sha)
    changed[2] = "other"
    with pytest.raises(DiaError) as err:
        frozen_splits(
            frozen, [*paths[1:], "extra/new.png"], [*changed[1:], "x"], [*labels[1:], "sick"]
        )
    message = str(err.value)
    assert "1 missing ('normal/0.png')" in message
    assert "1 not in it ('extra/new.png')" in message
    assert "1 changed ('normal/2.png')" in message
    assert "\n" not in message


def test_frozen_listing_is_truncated(tmp_path):
    paths, sha, labels = _dataset(20, 0)
    frozen = tmp_path / "frozen.csv"
    write_frozen(frozen, paths, sha, labels, ["train"] * 20)
    with pytest.raises(DiaError, match=r"12 missing \(.* and 7 more\)"):
        frozen_splits(frozen, paths[12:], sha[12:], labels[12:])


def test_bad_frozen_file(tmp_path):
    with pytest.raises(DiaError, match="not found"):
        read_frozen(tmp_path / "absent.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,sha256,raw_label,split\na.png,x,n,holdout\n")
    with pytest.raises(DiaError, match="unknown split"):
        read_frozen(bad)
