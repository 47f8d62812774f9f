"""Prepare for image-file datasets and CIFAR: labels, splits, one array per dataset."""

from __future__ import annotations

import csv
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import CIFAR10, CIFAR100

from dia.data.layouts import list_aptos2019, list_kermany, list_kvasir, list_sarscov2
from dia.data.prepare import load_prepared, prepare_from_cifar, prepare_from_listing
from dia.data.splits import SplitSpec, read_frozen
from dia.errors import DiaError
from tests.conftest import ROOT, SHARED_DATA
from tests.fakes import make_aptos, make_cifar, make_kermany, make_kvasir

SARSCOV2 = SHARED_DATA / "sarscov2-ctscan"
FROZEN = ROOT / "config" / "splits" / "sarscov2.csv"


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_kermany_labels_official_split_and_grayscale(tmp_path):
    out = tmp_path / "out"
    prepare_from_listing(
        list_kermany(make_kermany(tmp_path / "raw", per_class=5)),
        out,
        normal_labels=["NORMAL"],
        image_size=32,
        split=SplitSpec(val_fraction=0.2),
    )
    data = load_prepared(out)
    assert data.images.shape == (28, 32, 32, 1)
    rows = _rows(out)
    assert Counter((r["split"], r["raw_label"]) for r in rows if r["raw_label"] == "NORMAL") == {
        ("train", "NORMAL"): 4,
        ("val", "NORMAL"): 1,
        ("test", "NORMAL"): 2,
    }
    assert all(r["path"].startswith("test/") for r in rows if r["split"] == "test")
    assert Counter(r["label"] for r in rows if r["split"] == "test") == {"0": 2, "1": 6}


def test_kvasir_drops_unselected_classes(tmp_path):
    out = tmp_path / "out"
    prepare_from_listing(
        list_kvasir(make_kvasir(tmp_path / "raw", per_class=5)),
        out,
        normal_labels=["normal-cecum", "normal-pylorus", "normal-z-line"],
        anomaly_labels=["polyps"],
        image_size=24,
        split=SplitSpec(val_fraction=0.2, test_fraction=0.2),
    )
    data = load_prepared(out)
    assert data.images.shape == (20, 24, 24, 3)
    assert Counter(r["raw_label"] for r in _rows(out)) == {
        "normal-cecum": 5,
        "normal-pylorus": 5,
        "normal-z-line": 5,
        "polyps": 5,
    }
    assert data.select("test", 1).sum() == 1 and data.select("test", 0).sum() == 3


def test_aptos_integer_labels_from_config(tmp_path):
    out = tmp_path / "out"
    prepare_from_listing(
        list_aptos2019(make_aptos(tmp_path / "raw", per_grade=5)),
        out,
        normal_labels=[0],
        image_size=16,
        split=SplitSpec(val_fraction=0.2, test_fraction=0.2),
    )
    rows = _rows(out)
    assert Counter(r["label"] for r in rows) == {"0": 5, "1": 20}
    assert Counter(r["split"] for r in rows) == {"train": 15, "val": 5, "test": 5}


def test_unknown_label_is_rejected(tmp_path):
    listing = list_kvasir(make_kvasir(tmp_path, per_class=1))
    with pytest.raises(DiaError, match=r"\['normal'\] selected"):
        prepare_from_listing(
            listing, tmp_path / "out", normal_labels=["normal"], image_size=8, split=SplitSpec()
        )


@pytest.mark.parametrize(
    ("name", "cls", "per_batch", "n_normal", "n_val"),
    [
        ("cifar10", CIFAR10, 20, 12, 10),  # 10 classes x 10 train images: one val image each
        ("cifar100", CIFAR100, 200, 20, 20),  # 20 superclasses x 10 train images
    ],
)
def test_cifar_batches(tmp_path, monkeypatch, name, cls, per_batch, n_normal, n_val):
    """Official train/test, val carved per class; CIFAR-100 labels are its 20 superclasses."""
    normal = [7]
    folder, md5 = make_cifar(tmp_path, name, per_batch)
    train = [[f, md5[f]] for f in md5 if "test" not in f]
    monkeypatch.setattr(cls, "train_list", train)
    monkeypatch.setattr(cls, "test_list", [[f, md5[f]] for f in md5 if "test" in f])
    out = tmp_path / "out"
    prepare_from_cifar(tmp_path, name, out, normal_labels=normal, split=SplitSpec(val_fraction=0.1))
    data = load_prepared(out)
    assert data.images.shape[1:] == (32, 32, 3)
    assert int((data.labels == 0).sum()) == n_normal
    rows = _rows(out)
    assert {r["split"] for r in rows if r["id"].startswith("test")} == {"test"}
    assert Counter(r["split"] for r in rows)["val"] == n_val
    with open(folder / train[0][0], "rb") as f:
        first = pickle.load(f)["data"][0]
    assert np.array_equal(data.images[0], first.reshape(3, 32, 32).transpose(1, 2, 0))
    (folder / train[0][0]).write_bytes(b"tampered")
    with pytest.raises(DiaError, match="wrong md5"):
        prepare_from_cifar(tmp_path, name, out, normal_labels=normal, split=SplitSpec())


@pytest.fixture(scope="module")
def sarscov2_listing():
    if not SARSCOV2.is_dir():
        pytest.skip(f"{SARSCOV2} not found (shared real data is absent)")
    return list_sarscov2(SARSCOV2)


@pytest.mark.realdata
def test_sarscov2_real_files_reproduce_the_committed_split(sarscov2_listing, tmp_path):
    listing = sarscov2_listing
    assert Counter(listing.raw_labels) == {"COVID": 1252, "non-COVID": 1229}
    out = tmp_path / "out"
    prepare_from_listing(
        listing,
        out,
        normal_labels=["non-COVID"],
        image_size=32,
        split=SplitSpec(seed=0, val_fraction=0.1, test_fraction=0.2),
        workers=2,
    )
    rows = _rows(out)
    computed = {r["path"]: (r["sha256"], r["raw_label"], r["split"]) for r in rows}
    assert computed == read_frozen(FROZEN)
    assert Counter((r["raw_label"], r["split"]) for r in rows) == {
        ("non-COVID", "train"): 860,
        ("non-COVID", "val"): 123,
        ("non-COVID", "test"): 246,
        ("COVID", "train"): 877,
        ("COVID", "val"): 125,
        ("COVID", "test"): 250,
    }
    assert "COVID/Covid (1).png" in computed
    data = load_prepared(out)
    assert data.images.shape == (2481, 32, 32, 3)
    assert data.select("train", 0).sum() == 860


@pytest.mark.realdata
def test_sarscov2_local_copy_differing_from_frozen_split(sarscov2_listing, tmp_path):
    local = tmp_path / "copy"
    for cls in ("COVID", "non-COVID"):
        (local / cls).mkdir(parents=True)
        for src in sorted((SARSCOV2 / cls).iterdir())[:3]:
            (local / cls / src.name).symlink_to(src.resolve())
    with pytest.raises(DiaError) as err:
        prepare_from_listing(
            list_sarscov2(local),
            tmp_path / "out",
            normal_labels=["non-COVID"],
            image_size=8,
            split=SplitSpec(),
            frozen=FROZEN,
        )
    assert "2475 missing ('COVID/Covid (1000).png'" in str(err.value)
    assert not (tmp_path / "out" / "manifest.csv").exists()
