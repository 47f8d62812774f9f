"""Pinned official repositories: content digest, fetch from archive / checkout / URL, snapshot
lookup and isolated imports with shims. Generated repositories stand in for the real ones."""

from __future__ import annotations

import json
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from dia.errors import DiaError
from dia.official.imports import import_official, snapshot
from dia.official.repos import OfficialRepo, content_digest, fetch, pinned_repos
from tests.conftest import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILES = {
    "README.md": "# toy official repo\n",
    "models/__init__.py": "",
    "models/layers.py": "import diffdist.functional as distops\n\nSCALE = 255 / 360\n",
    "training/__init__.py": "",
    "training/loss.py": "from models.layers import SCALE\n\n\ndef loss():\n    return SCALE\n",
    "training/broken.py": "import not_a_real_package_xyz\n",
}


def make_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return make_repo(tmp_path / f"toy-{COMMIT}")


@pytest.fixture
def pin(repo_dir: Path) -> OfficialRepo:
    return OfficialRepo(
        key="someone__toy", commit=COMMIT, sha256=content_digest(repo_dir), license="MIT"
    )


def tar_of(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return dest


def test_digest_depends_on_content_and_paths_not_modes(repo_dir: Path) -> None:
    before = content_digest(repo_dir)
    (repo_dir / "README.md").chmod(0o755)
    (repo_dir / ".git").mkdir()
    (repo_dir / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert content_digest(repo_dir) == before
    (repo_dir / "models" / "layers.py").write_text("SCALE = 1\n")
    assert content_digest(repo_dir) != before


def test_fetch_downloads_the_commit_archive_and_verifies_it(
    repo_dir: Path, pin: OfficialRepo, tmp_path: Path
) -> None:
    archive = tar_of(repo_dir, tmp_path / "github.tar.gz")
    urls = []

    def fake_download(url: str, dest: Path, hint: str) -> Path:
        urls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(archive.read_bytes())
        return dest

    out = tmp_path / "resources" / "official"
    folder = fetch(pin, out, download_fn=fake_download)
    assert urls == [f"https://github.com/someone/toy/archive/{COMMIT}.tar.gz"]
    assert folder == out / "someone__toy"
    assert (folder / "models" / "layers.py").read_text() == FILES["models/layers.py"]
    assert json.loads((out / "someone__toy.json").read_text())["commit"] == COMMIT
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    fetch(pin, out, download_fn=lambda *a, **k: pytest.fail("verified copy is downloaded again"))


def test_unreachable_archive_says_how_to_work_offline(pin: OfficialRepo, tmp_path: Path) -> None:
    """The real downloader against a closed loopback port (no network leaves the machine)."""
    offline = replace(pin, url="http://127.0.0.1:9/toy.tar.gz")
    with pytest.raises(DiaError, match=r"set official_repos\.someone__toy\.local_path to a"):
        fetch(offline, tmp_path / "out")


def test_fetch_from_local_zip_and_checkout(
    repo_dir: Path, pin: OfficialRepo, tmp_path: Path
) -> None:
    archive = tmp_path / "toy.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for rel in FILES:
            z.write(repo_dir / rel, f"toy-{COMMIT}/{rel}")
    out = tmp_path / "out"
    assert fetch(replace(pin, local_path=str(archive)), out).is_dir()
    in_place = fetch(replace(pin, local_path=str(repo_dir)), out)
    assert in_place == repo_dir


@pytest.mark.parametrize("mutation", ["changed", "missing_path"])
def test_fetch_refuses_a_wrong_snapshot(
    mutation: str, repo_dir: Path, pin: OfficialRepo, tmp_path: Path
) -> None:
    if mutation == "changed":  # another commit's content
        (repo_dir / "training" / "loss.py").write_text("def loss():\n    return 0\n")
        local, match = repo_dir, "content digest .* expected .*commit 0123456789ab"
    else:
        local, match = tmp_path / "nowhere.tar.gz", "does not exist"
    bad = replace(pin, local_path=str(local))
    with pytest.raises(DiaError, match=match):
        fetch(bad, tmp_path / "out")


def test_snapshot_lookup(repo_dir: Path, pin: OfficialRepo, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DIA_OFFICIAL_REPOS", raising=False)
    with pytest.raises(DiaError, match="DIA_OFFICIAL_REPOS is not set"):
        snapshot(pin)
    monkeypatch.setenv("DIA_OFFICIAL_REPOS", str(tmp_path / "empty"))
    with pytest.raises(DiaError, match=r"someone__toy not found .* someone__toy/"):
        snapshot(pin)
    root = tmp_path / "snapshots"
    root.mkdir()
    (root / "someone__toy.json").write_text(json.dumps({"path": str(repo_dir)}))
    assert snapshot(pin, root) == repo_dir


def test_import_official_isolates_modules_and_applies_shims(repo_dir: Path) -> None:
    sys.modules.pop("diffdist", None)
    modules = import_official(repo_dir, "training.loss")
    assert modules["training.loss"].loss() == pytest.approx(255 / 360)
    assert "training" not in sys.modules and "models" not in sys.modules
    assert "diffdist" not in sys.modules


def test_import_official_names_a_missing_module(repo_dir: Path) -> None:
    with pytest.raises(DiaError, match=r"needs 'not_a_real_package_xyz'.*shims: diffdist"):
        import_official(repo_dir, "training.broken")


def test_config_pins_dia_and_csi() -> None:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    repos = pinned_repos(config)
    assert repos["shijianjian__DIA"].commit == "78eb984c3af2fae7eda5f9e72e60f8bfdd6c27f0"
    assert repos["alinlab__CSI"].commit == "60742b60a16501350eca823fcc910ddd10f7a379"
    with pytest.raises(DiaError, match="<owner>__<name>"):
        pinned_repos({"official_repos": {"toy": {}}})


def test_every_config_pins_the_same_commits() -> None:
    """Configs run with --replace-workflow-config carry their own copy of the pins; they must
    equal config.yaml's."""
    reference = pinned_repos(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    for path in sorted((ROOT / "config").glob("*.yaml")):
        for key, repo in pinned_repos(yaml.safe_load(path.read_text())).items():
            assert replace(repo, local_path=None) == reference[key], path.name
