"""MedMNIST archives: where they come from, how to fetch them, how to read them.

URLs and md5s are taken from the ``medmnist`` package's INFO (pinned in pyproject) rather than
copied here, so they match exactly what the official loader would download.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dia.data.download import download
from dia.errors import DiaError
from dia.io import atomic_path, file_digest

SPLITS = ("train", "val", "test")


def medmnist_source(flag: str, size: int = 28) -> tuple[str, str]:
    """Return ``(url, md5)`` of the MedMNIST archive ``flag`` at image ``size``."""
    from medmnist.info import INFO  # importing medmnist pulls in torch: only do it when needed

    if flag not in INFO:
        raise DiaError(f"unknown MedMNIST dataset {flag!r}; valid flags: {', '.join(INFO)}")
    info = INFO[flag]
    suffix = "" if size == 28 else f"_{size}"
    if f"url{suffix}" not in info or f"MD5{suffix}" not in info:
        sizes = [28] + [int(k[4:]) for k in info if k.startswith("url_")]
        raise DiaError(
            f"MedMNIST {flag} has no size {size}; valid sizes: {', '.join(map(str, sizes))}"
        )
    return info[f"url{suffix}"], info[f"MD5{suffix}"]


def fetch_medmnist(
    flag: str, dest: Path, *, local_path: Path | None = None, size: int = 28
) -> Path:
    """Put the verified MedMNIST archive at ``dest``: copied from ``local_path`` or downloaded.

    ``local_path`` serves air-gapped machines; it is checked against the same md5 as a download.
    """
    url, md5 = medmnist_source(flag, size)
    if local_path is None:
        return download(url, Path(dest), md5=md5)
    local_path = Path(local_path)
    if not local_path.is_file():
        raise DiaError(
            f"{local_path} not found; set datasets.{flag}.local_path to an existing copy of "
            f"{url.split('?')[0].rsplit('/', 1)[-1]} or remove it to download the file"
        )
    actual = file_digest(local_path, "md5")
    if actual != md5:
        raise DiaError(
            f"{local_path} has md5 {actual}, expected {md5} for MedMNIST {flag} (size {size}); "
            f"replace it with an intact copy or unset datasets.{flag}.local_path to download it"
        )
    with atomic_path(dest) as tmp:
        shutil.copyfile(local_path, tmp)
    return Path(dest)


def load_npz_splits(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST-layout npz into ``{split: (images uint8, labels int64 (N,))}``."""
    path = Path(path)
    redo = f"delete {path} and re-run to fetch it again"
    if not path.is_file():
        raise DiaError(f"{path} not found; re-run the download step")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
            missing = [key for key in missing if key not in npz.files]
            if missing:
                raise DiaError(f"{path} lacks {', '.join(missing)}; {redo}")
            raw = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in SPLITS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DiaError(f"{path} is corrupt or unreadable ({exc}); {redo}") from exc
    return {split: _check_split(path, split, *arrays, redo) for split, arrays in raw.items()}


def _check_split(
    path: Path, split: str, images: np.ndarray, labels: np.ndarray, redo: str
) -> tuple[np.ndarray, np.ndarray]:
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DiaError(
            f"{path}: {split}_images is {images.dtype} {images.shape}, expected uint8 (N,H,W[,C]); "
            f"{redo}"
        )
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DiaError(f"{path}: {split}_labels is multi-label {labels.shape}, not supported")
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != len(images):
        raise DiaError(f"{path}: {split} has {len(images)} images but {len(labels)} labels; {redo}")
    return images, labels
