"""Making image-file datasets available: local folders, local archives, downloads."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import pytest
from torchvision.datasets import CIFAR10

import dia.data.sources as sources
from dia.data.prepare import load_prepared
from dia.errors import DiaError
from dia.io import read_json
from dia.stages.data import run_download, run_prepare
from tests.conftest import ROOT, SHARED_DATA
from tests.fakes import (
    make_aptos,
    make_cifar,
    make_kermany,
    make_kvasir,
    make_sarscov2,
    zip_tree,
)

KVASIR = {
    "source": "kvasir",
    "normal_labels": ["normal-cecum", "normal-pylorus", "normal-z-line"],
    "anomaly_labels": ["polyps"],
    "image_size": 16,
    "split": {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2},
}


def test_local_folder_is_used_in_place(tmp_path):
    make_kermany(tmp_path / "copy")
    dest = tmp_path / "raw" / "oct2017" / "source.json"
    spec = {"source": "kermany", "local_path": str(tmp_path / "copy"), "normal_labels": ["NORMAL"]}
    run_download("oct2017", spec, dest)
    info = read_json(dest)
    assert info["origin"] == "local folder" and Path(info["root"]) == (tmp_path / "copy").resolve()
    assert not (dest.parent / "files").exists()


def test_local_archive_is_extracted_and_prepared(tmp_path):
    archive = zip_tree(make_kvasir(tmp_path / "src", per_class=5), tmp_path / "kvasir.zip")
    dest = tmp_path / "raw" / "kvasir" / "source.json"
    spec = {**KVASIR, "local_path": str(archive)}
    run_download("kvasir", spec, dest)
    assert read_json(dest)["origin"] == "local archive"
    run_prepare("kvasir", spec, dest, tmp_path / "data")
    data = load_prepared(tmp_path / "data")
    assert data.images.shape == (20, 16, 16, 3)
    assert Counter(data.labels.tolist()) == {0: 15, 1: 5}
    assert read_json(tmp_path / "data" / "meta.json")["stage"] == "prepare"


def test_kvasir_download_goes_through_the_official_url(tmp_path, monkeypatch):
    archive = zip_tree(make_kvasir(tmp_path / "src", per_class=1), tmp_path / "served.zip")
    calls = []

    def fake_download(url: str, dest: Path, **kwargs: object) -> Path:  # the network boundary
        calls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(archive.read_bytes())
        return dest

    monkeypatch.setattr(sources, "download", fake_download)
    dest = tmp_path / "raw" / "kvasir" / "source.json"
    run_download("kvasir", {**KVASIR, "local_path": None}, dest)
    assert calls == ["https://datasets.simula.no/downloads/kvasir/kvasir-dataset-v2.zip"]
    assert read_json(dest)["origin"] == "download"
    assert (dest.parent / "files" / "kvasir-dataset-v2" / "polyps").is_dir()


def test_bad_local_paths_are_named(tmp_path):
    dest = tmp_path / "raw" / "source.json"
    with pytest.raises(DiaError, match=r"datasets\.kvasir\.local_path: .*absent does not exist"):
        run_download("kvasir", {**KVASIR, "local_path": str(tmp_path / "absent")}, dest)
    make_kermany(tmp_path / "oct")
    with pytest.raises(DiaError, match="eight Kvasir v2 class folders"):
        run_download("kvasir", {**KVASIR, "local_path": str(tmp_path / "oct")}, dest)
    assert not dest.exists()


def test_a_bad_local_archive_is_the_users_to_replace_not_to_delete(tmp_path):
    archive = tmp_path / "kvasir.zip"
    archive.write_bytes(b"PK\x03\x04 truncated")
    dest = tmp_path / "raw" / "source.json"
    with pytest.raises(DiaError) as excinfo:
        run_download("kvasir", {**KVASIR, "local_path": str(archive)}, dest)
    message = str(excinfo.value)
    assert "corrupt or incomplete" in message and "datasets.kvasir.local_path" in message
    assert "replace it with an intact copy" in message and "delete" not in message
    assert archive.exists()


def test_unknown_source_lists_the_valid_ones(tmp_path):
    with pytest.raises(
        DiaError, match="unknown source 'imagenet'; use one of phantom, medmnist, sarscov2"
    ):
        run_download("x", {"source": "imagenet"}, tmp_path / "x.npz")


@pytest.mark.realdata
def test_sarscov2_from_local_path_with_frozen_split(tmp_path):
    local = SHARED_DATA / "sarscov2-ctscan"
    if not local.is_dir():
        pytest.skip(f"{local} not found (shared real data is absent)")
    spec = {
        "source": "sarscov2",
        "local_path": str(local),
        "normal_labels": ["non-COVID"],
        "image_size": 16,
        "split": {"seed": 0, "frozen": "config/splits/sarscov2.csv"},
    }
    dest = tmp_path / "raw" / "source.json"
    run_download("sarscov2", spec, dest)
    frozen = ROOT / "config" / "splits" / "sarscov2.csv"
    run_prepare("sarscov2", spec, dest, tmp_path / "data", frozen=frozen, workers=2)
    data = load_prepared(tmp_path / "data")
    assert data.images.shape == (2481, 16, 16, 3)
    assert (data.select("test", 0).sum(), data.select("test", 1).sum()) == (246, 250)


@pytest.mark.parametrize(
    ("source", "make", "kind", "ref"),
    [
        ("sarscov2", make_sarscov2, "dataset", "plameneduardo/sarscov2-ctscan-dataset"),
        ("kermany", make_kermany, "dataset", "paultimothymooney/kermany2018"),
        ("aptos2019", make_aptos, "competition", "aptos2019-blindness-detection"),
    ],
)
def test_kaggle_sources_download_their_official_archive(
    tmp_path, monkeypatch, source, make, kind, ref
):
    archive = zip_tree(make(tmp_path / "src"), tmp_path / "served.zip")
    calls = []

    def fake_kaggle(kind: str, ref: str, dest: Path, *, dataset: str) -> Path:  # network boundary
        calls.append((kind, ref, dest.name, dataset))
        dest.write_bytes(archive.read_bytes())
        return dest

    monkeypatch.setattr(sources, "kaggle_download", fake_kaggle)
    dest = tmp_path / "raw" / "source.json"
    dest.parent.mkdir()
    sources.fetch_files(source, "mine", dest)
    assert calls == [(kind, ref, "archive.zip", "mine")]
    assert read_json(dest)["origin"] == "download"


def test_cifar_archive_from_local_path(tmp_path, monkeypatch):
    folder, md5 = make_cifar(tmp_path / "src", "cifar10")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    monkeypatch.setattr(CIFAR10, "train_list", [[f, m] for f, m in md5.items() if "data" in f])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    dest = tmp_path / "raw" / "source.json"
    spec = {"source": "cifar10", "local_path": str(archive), "normal_labels": [0]}
    run_download("cifar10", spec, dest)
    run_prepare("cifar10", {**spec, "split": {"val_fraction": 0.1}}, dest, tmp_path / "data")
    data = load_prepared(tmp_path / "data")
    assert data.images.shape == (120, 32, 32, 3)
    assert data.select("test").sum() == 20
