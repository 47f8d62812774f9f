"""Making image-file datasets available: local folders, local archives, downloads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import dia.data.sources as sources
from dia.data.prepare import load_prepared
from dia.errors import DiaError
from dia.io import read_json
from dia.stages.data import run_download, run_prepare
from tests.conftest import ROOT, SHARED_DATA
from tests.fakes import make_kermany, make_kvasir, zip_tree

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


def test_unknown_source_lists_the_valid_ones(tmp_path):
    with pytest.raises(DiaError, match="unknown source 'imagenet'; use one of medmnist, phantom"):
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
