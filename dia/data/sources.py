"""Where each image-file dataset comes from, and how its files are made available.

``fetch_files`` downloads the official archive (:mod:`dia.data.registry` says from where; CIFAR's
is torchvision's URL),
verifies and extracts it safely, or takes a local copy instead (an extracted folder, used in
place, or the archive itself), checks the layout, and records the dataset's folder in
``source.json``: the download step's only declared output, written last.
"""

from __future__ import annotations

import time
from pathlib import Path

from dia.data.archive import extract_archive
from dia.data.cifar import cifar_archive, find_cifar
from dia.data.download import download
from dia.data.kaggle import kaggle_download
from dia.data.layouts import LISTERS
from dia.data.registry import CIFAR, FILE_SOURCES, SOURCES
from dia.errors import DiaError
from dia.io import read_json, write_json


def check_layout(source: str, root: Path) -> None:
    """Fail now, in the download step, when ``root`` is not the dataset's official layout."""
    if source in CIFAR:
        find_cifar(root, source)
    else:
        LISTERS[source](root)


def _download_archive(source: str, dataset: str, raw_dir: Path) -> Path:
    if source == "folder":
        raise DiaError(
            f"datasets.{dataset}.local_path is not set; a `folder` dataset is read from your own "
            f"folder of images: set local_path to it"
        )
    entry = SOURCES[source]
    if entry.kaggle:
        kaggle = entry.kaggle
        return kaggle_download(kaggle.kind, kaggle.ref, raw_dir / "archive.zip", dataset=dataset)
    if entry.url:
        return download(entry.url, raw_dir / entry.url.rsplit("/", 1)[-1])
    archive = cifar_archive(source)
    return download(archive.url, raw_dir / archive.url.rsplit("/", 1)[-1], md5=archive.md5)


def fetch_files(source: str, dataset: str, dest: Path, local_path: str | None = None) -> Path:
    """Make ``dataset``'s files available and write ``dest`` (its source.json); return ``dest``.

    Downloads and extractions live beside ``dest`` (``archive*``, ``files/``); a local folder is
    used in place, never copied.
    """
    if source not in FILE_SOURCES:
        raise DiaError(f"datasets.{dataset}.source: {source!r} is not an image-file source")
    dest = Path(dest)
    raw_dir = dest.parent
    started = time.time()
    if local_path:
        local = Path(local_path).expanduser()
        if local.is_dir():
            root, origin = local.resolve(), "local folder"
        elif local.is_file():
            remedy = (
                f"it is your datasets.{dataset}.local_path: replace it with an intact copy of "
                f"the official archive, then re-run"
            )
            root, origin = extract_archive(local, raw_dir / "files", remedy), "local archive"
        else:
            raise DiaError(
                f"datasets.{dataset}.local_path: {local} does not exist; point it at the extracted "
                f"dataset or its official archive, or remove it to download the data"
            )
    else:
        archive = _download_archive(source, dataset, raw_dir)
        root, origin = extract_archive(archive, raw_dir / "files"), "download"
    check_layout(source, root)
    write_json(
        dest,
        {
            "dataset": dataset,
            "source": source,
            "origin": origin,
            "root": str(root),
            "seconds": round(time.time() - started, 1),
        },
    )
    return dest


def files_root(source_json: Path) -> Path:
    """The dataset folder recorded by :func:`fetch_files`."""
    root = Path(read_json(source_json)["root"])
    if not root.is_dir():
        raise DiaError(
            f"{root} (recorded in {source_json}) is gone; delete {source_json} and re-run"
        )
    return root
