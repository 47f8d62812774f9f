"""Listing the official archive layouts, on generated copies of each."""

from __future__ import annotations

from collections import Counter

import pytest

from dia.data.layouts import list_aptos2019, list_kermany, list_kvasir, list_sarscov2
from dia.errors import DiaError
from tests.fakes import make_aptos, make_kermany, make_kvasir


def test_kermany_official_split_without_val_folder(tmp_path):
    listing = list_kermany(make_kermany(tmp_path, per_class=3))
    assert listing.root == tmp_path / "OCT2017"
    assert Counter(listing.official) == {"train": 12, "test": 8}
    assert not any(p.startswith("val/") for p in listing.paths)
    assert "train/NORMAL/NORMAL-1000-1.jpeg" in listing.paths
    assert set(listing.raw_labels) == {"CNV", "DME", "DRUSEN", "NORMAL"}


def test_kvasir_found_inside_its_top_folder(tmp_path):
    listing = list_kvasir(make_kvasir(tmp_path, per_class=2))
    assert listing.root == tmp_path / "kvasir-dataset-v2"
    assert len(listing.paths) == 16 and set(listing.official) == {None}
    assert Counter(listing.raw_labels)["polyps"] == 2


def test_aptos_reads_train_csv(tmp_path):
    listing = list_aptos2019(make_aptos(tmp_path, per_grade=2))
    assert Counter(listing.raw_labels) == {str(g): 2 for g in range(5)}
    assert all(p.startswith("train_images/") and p.endswith(".png") for p in listing.paths)


def test_aptos_missing_image_is_named(tmp_path):
    make_aptos(tmp_path, per_grade=1)
    victim = sorted((tmp_path / "train_images").iterdir())[0]
    victim.unlink()
    with pytest.raises(DiaError, match=f"1 image.*{victim.name}"):
        list_aptos2019(tmp_path)


def test_wrong_layout_says_what_was_expected(tmp_path):
    make_kvasir(tmp_path, per_class=1)
    with pytest.raises(DiaError, match="COVID/ and non-COVID/"):
        list_sarscov2(tmp_path)
    with pytest.raises(DiaError, match="not a folder"):
        list_kvasir(tmp_path / "absent")


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    make_kvasir(tmp_path, per_class=1)
    (tmp_path / "kvasir-dataset-v2" / "polyps" / ".DS_Store").write_text("x")
    (tmp_path / "kvasir-dataset-v2" / "polyps" / "notes.txt").write_text("x")
    assert len(list_kvasir(tmp_path).paths) == 8
