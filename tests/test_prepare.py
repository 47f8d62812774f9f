"""prepare_from_npz / load_prepared on phantom data and on the real MedMNIST files."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dia.data.medmnist import load_npz_splits
from dia.data.phantom import write_phantom_npz
from dia.data.prepare import (
    ImageBatches,
    PreparedData,
    load_prepared,
    prepare_from_npz,
    to_float_tensor,
)
from dia.errors import DiaError
from dia.io import file_digest
from tests.conftest import MEDMNIST

COLUMNS = ["id", "path", "sha256", "raw_label", "label", "split"]


def _real(name: str) -> Path:
    path = MEDMNIST / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found (shared real data is absent)")
    return path


def _rows(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def phantom_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("raw") / "phantom.npz"
    return write_phantom_npz(dest, n_train=10, n_val=6, n_test=8, seed=0)


@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pneumoniamnist")
    prepare_from_npz(_real("pneumoniamnist"), out, normal_labels=[0])
    return out


def test_phantom_round_trip(phantom_npz, tmp_path):
    prepare_from_npz(phantom_npz, tmp_path, normal_labels=[0])
    data = load_prepared(tmp_path)
    assert isinstance(data, PreparedData)
    assert data.images.shape == (24, 28, 28, 1) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64
    assert data.select("train").sum() == 10 and data.select("train", 1).sum() == 0
    assert data.select("test", 1).sum() == 4
    assert data.manifest_sha256 == file_digest(tmp_path / "manifest.csv")
    raw = load_npz_splits(phantom_npz)
    assert np.array_equal(data.images[data.select("val"), ..., 0], raw["val"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npz", "manifest.csv"]


def test_select_rejects_unknown_split(phantom_npz, tmp_path):
    prepare_from_npz(phantom_npz, tmp_path, normal_labels=[0])
    with pytest.raises(ValueError, match="validation"):
        load_prepared(tmp_path).select("validation")


def test_label_not_present_is_an_error(phantom_npz, tmp_path):
    with pytest.raises(DiaError, match=r"label\(s\) \['7'\].*labels \['0', '1'\]"):
        prepare_from_npz(phantom_npz, tmp_path, normal_labels=[0, 7])
    assert not (tmp_path / "manifest.csv").exists()


def test_overlapping_labels_are_an_error(phantom_npz, tmp_path):
    with pytest.raises(DiaError, match="both normal and anomaly"):
        prepare_from_npz(phantom_npz, tmp_path, normal_labels=[0], anomaly_labels=[0, 1])


@pytest.mark.realdata
def test_pneumonia_official_counts(pneumonia):
    data = load_prepared(pneumonia)
    assert data.select("train").sum() == 4708
    assert data.select("train", 0).sum() == 1214
    assert data.select("val").sum() == 524 and data.select("val", 0).sum() == 135
    assert data.select("test").sum() == 624 and data.select("test", 1).sum() == 390
    assert data.images.shape == (5856, 28, 28, 1)


@pytest.mark.realdata
def test_manifest_columns_and_sha256(pneumonia):
    rows = _rows(pneumonia)
    assert list(rows[0]) == COLUMNS
    row = rows[4708 + 17]  # val image 17: train rows come first
    assert row["id"] == "val_000017" and row["path"] == "pneumoniamnist.npz#val/17"
    assert row["split"] == "val"
    with np.load(_real("pneumoniamnist")) as npz:
        image, raw_label = npz["val_images"][17], int(npz["val_labels"][17, 0])
    # sha256 of the decoded pixels with their shape, as for image files (dia.data.images)
    assert row["sha256"] == hashlib.sha256(b"28x28:" + image.tobytes()).hexdigest()
    assert int(row["raw_label"]) == raw_label and int(row["label"]) == raw_label


@pytest.mark.realdata
def test_pneumonia_round_trip(pneumonia):
    data = load_prepared(pneumonia)
    raw = load_npz_splits(_real("pneumoniamnist"))
    test = data.select("test")
    assert np.array_equal(data.images[test, ..., 0], raw["test"][0])
    assert np.array_equal(data.labels[test], raw["test"][1])
    assert data.ids[0] == "train_000000" and data.ids[-1] == "test_000623"


@pytest.mark.realdata
def test_breast_normal_label_one(tmp_path):
    prepare_from_npz(_real("breastmnist"), tmp_path, normal_labels=[1])
    data = load_prepared(tmp_path)
    assert data.select("train", 0).sum() == 399
    assert data.select("train", 1).sum() == 147
    assert data.select("test", 1).sum() == 42


@pytest.mark.realdata
def test_unlisted_labels_are_dropped(tmp_path):
    prepare_from_npz(_real("breastmnist"), tmp_path, normal_labels=[1], anomaly_labels=[])
    data = load_prepared(tmp_path)
    assert len(data.ids) == 399 + 57 + 114 and data.labels.sum() == 0


def test_to_float_tensor_grayscale():
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5, 1) * 6
    tensor = to_float_tensor(images)
    assert tensor.shape == (2, 3, 4, 5) and tensor.dtype == torch.float32
    assert tensor.is_contiguous()
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    assert torch.equal(tensor[:, 0], tensor[:, 2]) and torch.equal(tensor[:, 1], tensor[:, 2])
    assert torch.allclose(tensor[:, 0], torch.from_numpy(images[..., 0] / 255.0).float())


def test_to_float_tensor_rgb_keeps_channels():
    images = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    images[..., 1] = 255
    tensor = to_float_tensor(images)
    assert tensor[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.realdata
def test_to_float_tensor_real_range(pneumonia):
    images = load_prepared(pneumonia).images[:64]
    tensor = to_float_tensor(images)
    assert tensor.shape == (64, 3, 28, 28)
    assert tensor.min() == images.min() / 255 and tensor.max() == pytest.approx(images.max() / 255)


def test_manifest_npz_mismatch(phantom_npz, tmp_path):
    prepare_from_npz(phantom_npz, tmp_path, normal_labels=[0])
    rows = _rows(tmp_path)
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows[:-1])
    with pytest.raises(DiaError, match=r"different images; delete .* re-run the prepare step"):
        load_prepared(tmp_path)


def test_missing_images_file(phantom_npz, tmp_path):
    prepare_from_npz(phantom_npz, tmp_path, normal_labels=[0])
    (tmp_path / "images.npz").unlink()
    with pytest.raises(DiaError, match=r"images\.npz not found"):
        load_prepared(tmp_path)


def test_image_batches_from_a_tensor_equal_those_from_an_array() -> None:
    """The form a GPU holds them in (``ImageBatches.on``), here on the CPU: same floats."""
    array = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
    host, tensor = ImageBatches(array), ImageBatches(torch.from_numpy(array))
    assert host.on("cpu") is host
    for index in (torch.tensor([4, 1]), slice(1, 3), np.array([0, 0, 2])):
        assert torch.equal(host[index], tensor[index])
    assert host[torch.tensor([4, 1])].shape == (2, 3, 4, 4)
