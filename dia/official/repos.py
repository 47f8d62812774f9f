"""Fetching and verifying the official repositories at their pinned commits.

A repository is pinned in the config (``official_repos.<owner>__<name>``) by its commit and the
sha256 *content digest* of its files at that commit: the sha256 of the sorted lines
``<sha256 of the file>  <path>`` over every file (``.git`` excluded). The digest depends on the
files alone, not on how an archive was compressed nor on file modes, so the same pin verifies a
GitHub archive, a ``git archive`` of a local clone, or a checked-out folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dia.data.archive import MARKER, extract_archive
from dia.data.download import download
from dia.errors import DiaError
from dia.io import file_digest, read_json, write_json

_SKIP = {".git", MARKER}


@dataclass(frozen=True)
class OfficialRepo:
    """One pinned repository; ``key`` is ``<owner>__<name>``, its folder name everywhere."""

    key: str
    commit: str
    sha256: str
    license: str
    url: str | None = None
    local_path: str | None = None

    @property
    def owner(self) -> str:
        return self.key.split("__", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split("__", 1)[1]

    @property
    def archive_url(self) -> str:
        """GitHub's archive of the pinned commit, unless the config names a mirror."""
        return (
            self.url or f"https://github.com/{self.owner}/{self.name}/archive/{self.commit}.tar.gz"
        )


def pinned_repos(config: dict[str, Any]) -> dict[str, OfficialRepo]:
    """The config's ``official_repos`` as :class:`OfficialRepo` objects, by key."""
    repos = {}
    for key, spec in (config.get("official_repos") or {}).items():
        if "__" not in key:
            raise DiaError(f"official_repos.{key}: name it <owner>__<name>, e.g. alinlab__CSI")
        repos[key] = OfficialRepo(key=key, **spec)
    return repos


def content_digest(folder: Path) -> str:
    """sha256 of the sorted ``<file sha256>  <relative path>`` lines of every file in ``folder``."""
    folder = Path(folder)
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in _SKIP]
        for name in set(files) - _SKIP:
            path = Path(root, name)
            digest = (
                hashlib.sha256(os.readlink(path).encode()).hexdigest()
                if path.is_symlink()
                else file_digest(path)
            )
            entries.append((path.relative_to(folder).as_posix(), digest))
    lines = "".join(f"{digest}  {rel}\n" for rel, digest in sorted(entries))
    return hashlib.sha256(lines.encode()).hexdigest()


def verify(folder: Path, repo: OfficialRepo) -> Path:
    """Return ``folder`` if its content digest is the pinned one, else stop naming both."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DiaError(f"official repository {repo.key}: {folder} is not a folder")
    actual = content_digest(folder)
    if actual != repo.sha256:
        raise DiaError(
            f"official repository {repo.key} at {folder} has content digest {actual[:12]}, "
            f"expected {repo.sha256[:12]} (commit {repo.commit[:12]}): check it out at that "
            f"commit with no local changes, or delete it and re-run"
        )
    return folder


def _unpack(archive: Path, folder: Path, repo: OfficialRepo) -> Path:
    """Extract ``archive`` (its single top folder, as GitHub wraps it) onto ``folder``, verified."""
    staging = folder.with_name(f".{folder.name}.unpacked")
    extract_archive(archive, staging)
    top = [p for p in staging.iterdir() if p.name != MARKER]
    root = top[0] if len(top) == 1 and top[0].is_dir() else staging
    verify(root, repo)
    if folder.exists():
        shutil.rmtree(folder)
    if root is staging:
        (staging / MARKER).unlink()
    os.replace(root, folder)
    shutil.rmtree(staging, ignore_errors=True)
    return folder


def fetch(repo: OfficialRepo, dest: Path, *, download_fn: Any = download) -> Path:
    """Bring ``repo`` to ``dest/<key>`` (or use its ``local_path`` folder in place), verify it and
    write ``dest/<key>.json``; return the verified folder.

    ``local_path`` takes a checkout (used in place, never copied) or an archive (.tar.gz, .zip).
    So ``dest`` can serve as ``DIA_OFFICIAL_REPOS`` for the parity tests.
    """
    dest = Path(dest)
    folder = dest / repo.key
    if repo.local_path and Path(repo.local_path).is_dir():
        folder = verify(Path(repo.local_path), repo)
    elif repo.local_path:
        archive = Path(repo.local_path)
        if not archive.is_file():
            raise DiaError(
                f"official_repos.{repo.key}.local_path {archive} does not exist; point it at a "
                f"checkout or an archive of commit {repo.commit}"
            )
        _unpack(archive, folder, repo)
    elif not (folder.is_dir() and content_digest(folder) == repo.sha256):
        hint = (
            f"check the network and re-run, or set official_repos.{repo.key}.local_path to a "
            f"checkout or archive of commit {repo.commit}"
        )
        archive = download_fn(repo.archive_url, dest / f"{repo.key}.tar.gz", hint=hint)
        _unpack(archive, folder, repo)
    write_json(
        dest / f"{repo.key}.json",
        {"key": repo.key, "commit": repo.commit, "sha256": repo.sha256, "path": str(folder)},
    )
    return folder


def recorded(record: Path) -> tuple[Path, str]:
    """Folder and commit of a repository from the record ``fetch`` wrote."""
    values = read_json(record)
    return Path(values["path"]), values["commit"]
