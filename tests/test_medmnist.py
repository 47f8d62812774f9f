"""MedMNIST sources, local-path fetching and npz reading (no network: downloads are stubbed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import dia.data.medmnist as medmnist_mod
from dia.data.medmnist import fetch_medmnist, load_npz_splits, medmnist_source
from dia.errors import DiaError
from dia.io import file_digest
from tests.conftest import MEDMNIST

MD5 = {
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
}


@pytest.fixture
def real_dir() -> Path:
    if not all((MEDMNIST / f"{flag}.npz").is_file() for flag in MD5):
        pytest.skip(f"real MedMNIST files not found in {MEDMNIST} (shared data is absent)")
    return MEDMNIST


@pytest.mark.parametrize("flag", sorted(MD5))
def test_source_from_info(flag):
    url, md5 = medmnist_source(flag)
    assert md5 == MD5[flag]
    assert f"/{flag}.npz" in url and url.startswith("https://")


def test_source_other_size():
    url, md5 = medmnist_source("pneumoniamnist", size=64)
    assert "pneumoniamnist_64.npz" in url and md5 != MD5["pneumoniamnist"]


def test_source_unknown_flag_lists_valid_flags():
    with pytest.raises(DiaError, match=r"pneumoniamnist.*breastmnist"):
        medmnist_source("pneumonia")


def test_source_unknown_size_lists_valid_sizes():
    with pytest.raises(DiaError, match="28, 64, 128, 224"):
        medmnist_source("breastmnist", size=32)


def test_fetch_without_local_path_downloads_with_md5(monkeypatch, tmp_path):
    calls = []

    def fake_download(*args: object, **kwargs: object) -> object:
        calls.append((args, kwargs))
        return args[1]

    monkeypatch.setattr(medmnist_mod, "download", fake_download)
    dest = tmp_path / "breastmnist.npz"
    assert fetch_medmnist("breastmnist", dest) == dest
    (((url, got_dest), kwargs),) = calls
    assert url == medmnist_source("breastmnist")[0] and got_dest == dest
    assert kwargs == {"md5": MD5["breastmnist"]}


@pytest.mark.realdata
@pytest.mark.parametrize("flag", sorted(MD5))
def test_fetch_local_path(real_dir, tmp_path, flag):
    dest = tmp_path / "raw" / f"{flag}.npz"
    assert fetch_medmnist(flag, dest, local_path=real_dir / f"{flag}.npz") == dest
    assert file_digest(dest, "md5") == MD5[flag]
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


@pytest.mark.realdata
def test_fetch_tampered_local_copy(real_dir, tmp_path):
    tampered = tmp_path / "breastmnist.npz"
    data = bytearray((real_dir / "breastmnist.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    dest = tmp_path / "out" / "breastmnist.npz"
    with pytest.raises(DiaError) as excinfo:
        fetch_medmnist("breastmnist", dest, local_path=tampered)
    message = str(excinfo.value)
    assert str(tampered) in message and MD5["breastmnist"] in message
    assert file_digest(tampered, "md5") in message
    assert not dest.exists()


def test_fetch_missing_local_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(
        DiaError, match=r"nope\.npz not found; set datasets\.breastmnist\.local_path"
    ):
        fetch_medmnist("breastmnist", tmp_path / "out.npz", local_path=missing)


@pytest.mark.realdata
def test_load_real_splits(real_dir):
    splits = load_npz_splits(real_dir / "breastmnist.npz")
    assert {s: len(y) for s, (_, y) in splits.items()} == {"train": 546, "val": 78, "test": 156}
    images, labels = splits["train"]
    assert images.dtype == np.uint8 and images.shape == (546, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (546,) and set(labels) == {0, 1}


def _small_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 5), ("test", 5)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, (n, 1), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def test_load_rgb_layout(tmp_path):
    splits = load_npz_splits(_small_npz(tmp_path / "small.npz"))
    assert splits["val"][0].shape == (5, 28, 28, 3) and splits["val"][1].shape == (5,)


def test_truncated_npz_names_file(tmp_path):
    path = _small_npz(tmp_path / "small.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DiaError, match=r"small\.npz.*delete"):
        load_npz_splits(path)


@pytest.mark.realdata
def test_truncated_real_npz_names_file(real_dir, tmp_path):
    path = tmp_path / "pneumoniamnist.npz"
    path.write_bytes((real_dir / "pneumoniamnist.npz").read_bytes()[:1_000_000])
    with pytest.raises(DiaError, match=r"pneumoniamnist\.npz is corrupt.*delete"):
        load_npz_splits(path)


def test_missing_keys_named(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(DiaError, match=r"partial\.npz lacks val_images, val_labels"):
        load_npz_splits(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "text.npz"
    shutil.copyfile(__file__, path)
    with pytest.raises(DiaError, match=r"text\.npz is corrupt"):
        load_npz_splits(path)
