"""The `folder` source: a user's own images in class folders, through listing, prepare and the
whole workflow, and a clear error for each way such a folder goes wrong."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dia.data.layouts import list_folder
from dia.data.prepare import load_prepared
from dia.data.sources import fetch_files
from dia.errors import DiaError
from dia.stages.data import run_download, run_prepare
from tests.conftest import run_workflow, table1_cells, tiny_config
from tests.fakes import zip_tree


def _save(path: Path, rng: np.random.Generator, size: int, *, gray: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if gray else (size, size, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def make_split_folder(root: Path, n_train: int = 12, n_test: int = 6) -> Path:
    """anomalib's layout: ``train/good``, ``test/good``, ``test/lesion``; PNGs and JPEGs of
    two sizes, and a mask folder inside a class folder that must not be read."""
    rng = np.random.default_rng(0)
    for i in range(n_train):
        _save(root / "train" / "good" / f"{i:03d}.png", rng, 20 + 4 * (i % 2))
    for i in range(n_test):
        _save(root / "test" / "good" / f"{i:03d}.jpg", rng, 24)
        _save(root / "test" / "lesion" / f"{i:03d}.png", rng, 20)
        _save(root / "test" / "lesion" / "masks" / f"{i:03d}.png", rng, 20)
    return root


def _spec(root: Path, **extra: object) -> dict:
    return {"source": "folder", "local_path": str(root), "normal_labels": ["good"], **extra}


def _prepare(tmp_path: Path, spec: dict) -> Path:
    source_json, out = tmp_path / "raw" / "source.json", tmp_path / "prepared"
    run_download("mine", spec, source_json)
    run_prepare("mine", spec, source_json, out)
    return out


def test_split_layout_keeps_train_and_test_and_carves_val(tmp_path: Path) -> None:
    root = make_split_folder(tmp_path / "images")
    listing = list_folder(root)
    assert len(listing.paths) == 24  # masks/ inside test/lesion is not read
    assert set(zip(listing.raw_labels, listing.official, strict=True)) == {
        ("good", "train"),
        ("good", "test"),
        ("lesion", "test"),
    }
    out = _prepare(tmp_path, _spec(root, image_size=16, split={"val_fraction": 0.25}))
    data = load_prepared(out)
    assert data.images.shape == (24, 16, 16, 1)
    assert (data.labels[data.splits == "train"] == 0).all()
    # val: a quarter of train/good and, as train has no lesions, a quarter of test/lesion
    val = data.labels[data.splits == "val"]
    assert (val == 0).sum() == 3 and (val == 1).sum() == 2
    test = data.labels[data.splits == "test"]
    assert (test == 0).sum() == 6 and (test == 1).sum() == 4


def test_an_archive_of_the_folder_is_extracted_and_unwrapped(tmp_path: Path) -> None:
    root = make_split_folder(tmp_path / "wrap" / "my_scans")
    archive = zip_tree(root.parent, tmp_path / "my_scans.zip")
    data = load_prepared(_prepare(tmp_path, {**_spec(archive), "image_size": 16}))
    assert len(data.images) == 24
    assert {i.split("/")[0] for i in data.ids} == {"train", "test"}


def test_flat_layout_generates_every_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(20):
        _save(tmp_path / "images" / "normal" / f"{i}.png", rng, 16, gray=False)
        _save(tmp_path / "images" / "tumour" / f"{i}.png", rng, 16, gray=False)
    listing = list_folder(tmp_path / "images")
    assert set(listing.official) == {None}
    spec = {**_spec(tmp_path / "images"), "normal_labels": ["normal"]}
    data = load_prepared(_prepare(tmp_path, spec))
    assert data.images.shape == (40, 16, 16, 3)
    for split in ("train", "val", "test"):  # stratified; training reads the normals only
        assert set(data.labels[data.splits == split]) == {0, 1}, split


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "test" / "empty").mkdir(), r"class folder .*empty holds no images"),
        (
            lambda r: _save(r / "test" / "loose.png", np.random.default_rng(0), 20),
            r"loose\.png and 0 other image\(s\) sit outside a class folder",
        ),
        (lambda r: shutil.rmtree(r / "test"), r"needs both train/ and test/"),
    ],
    ids=["empty class", "loose image", "no test"],
)
def test_bad_layouts_are_named(tmp_path: Path, damage, message: str) -> None:
    root = make_split_folder(tmp_path / "images")
    damage(root)
    with pytest.raises(DiaError, match=message):
        list_folder(root)


def test_no_normal_image_in_training_is_an_error(tmp_path: Path) -> None:
    root = make_split_folder(tmp_path / "images")
    (root / "train" / "good").rename(root / "train" / "lesion")
    with pytest.raises(DiaError, match=r"no normal image \(good\) in the training split"):
        _prepare(tmp_path, _spec(root, image_size=16))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_split_folder(tmp_path / "images")
    (root / "test" / "lesion" / "002.png").write_bytes(b"not a png")
    with pytest.raises(DiaError, match=r"cannot decode image .*lesion/002\.png"):
        _prepare(tmp_path, _spec(root, image_size=16))


def test_grayscale_and_colour_mix_as_three_channels(tmp_path: Path) -> None:
    """Real folders mix them (the SARS-CoV-2 CT set does): grayscale images are broadcast."""
    root = make_split_folder(tmp_path / "images")
    _save(root / "test" / "lesion" / "colour.png", np.random.default_rng(3), 20, gray=False)
    data = load_prepared(_prepare(tmp_path, _spec(root, image_size=16)))
    assert data.images.shape == (25, 16, 16, 3)


def test_images_of_more_than_8_bits_are_named(tmp_path: Path) -> None:
    root = make_split_folder(tmp_path / "images")
    wide = np.full((20, 20), 40_000, dtype=np.uint16)
    Image.fromarray(wide).save(root / "test" / "lesion" / "wide.png")
    with pytest.raises(DiaError, match=r"wide\.png has pixel mode I;16 .* convert it to 8-bit"):
        _prepare(tmp_path, _spec(root, image_size=16))


def test_different_sizes_need_image_size(tmp_path: Path) -> None:
    root = make_split_folder(tmp_path / "images")
    with pytest.raises(DiaError, match=r"different sizes .*image_size"):
        _prepare(tmp_path, _spec(root))


def test_folder_needs_local_path(tmp_path: Path) -> None:
    with pytest.raises(DiaError, match=r"datasets\.mine\.local_path is not set"):
        fetch_files("folder", "mine", tmp_path / "raw" / "source.json", None)


@pytest.mark.slow
def test_folder_dataset_runs_every_method_end_to_end(tmp_path: Path) -> None:
    """One config entry, the user's folder: DIA, CSI and baselines of both input kinds (the
    prepared images, and views decoded from the files) run on it."""
    root = make_split_folder(tmp_path / "images", n_train=40, n_test=10)
    datasets = {
        "mine": {
            **_spec(root, image_size=16),
            "contrastive": {"arch": "resnet18_cifar", "image_size": 16},
            "dissolve": {"fit": "resize"},
        }
    }
    path = tiny_config(tmp_path, datasets, baselines=("kdad", "rd4ad", "meanshift"))
    work = tmp_path / "work"
    result = run_workflow(work, path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    methods = ("dia", "csi", "kdad", "rd4ad", "meanshift")
    assert table1_cells(work) == {(m, "mine") for m in methods}
    with open(work / "results/runs/csi/mine/default/seed0/scores.csv") as f:
        ids = {r["id"] for r in csv.DictReader(f)}
    assert "test/lesion/000.png" in ids
