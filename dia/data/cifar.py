"""CIFAR-10 and CIFAR-100 (paper Fig. 4), in torchvision's archive format.

The archive URL, its md5 and the md5 of every batch file come from torchvision's dataset classes
(pinned in pyproject), so the files are exactly those torchvision would download. The batches are
read here rather than through torchvision because CIFAR-100's one-class protocol uses the 20
superclasses (``coarse_labels``), which torchvision's class does not expose.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dia.errors import DiaError
from dia.io import file_digest


@dataclass(frozen=True)
class CifarArchive:
    url: str
    md5: str
    folder: str
    batches: dict[str, list[tuple[str, str]]]
    label_key: str


def cifar_archive(name: str) -> CifarArchive:
    """Where CIFAR ``name`` (cifar10 | cifar100) comes from and how its batches are checked."""
    from torchvision.datasets import CIFAR10, CIFAR100

    classes = {"cifar10": (CIFAR10, "labels"), "cifar100": (CIFAR100, "coarse_labels")}
    if name not in classes:
        raise DiaError(f"unknown CIFAR dataset {name!r}; use cifar10 or cifar100")
    cls, label_key = classes[name]
    return CifarArchive(
        url=cls.url,
        md5=cls.tgz_md5,
        folder=cls.base_folder,
        batches={
            "train": [(f, m) for f, m in cls.train_list],
            "test": [(f, m) for f, m in cls.test_list],
        },
        label_key=label_key,
    )


def find_cifar(root: Path, name: str) -> Path:
    """The batch folder (``cifar-10-batches-py`` / ``cifar-100-python``) in or under ``root``."""
    archive = cifar_archive(name)
    root = Path(root)
    for folder in (root, root / archive.folder):
        if all((folder / f).is_file() for files in archive.batches.values() for f, _ in files):
            return folder
    raise DiaError(
        f"{root} holds no {name} batches ({archive.folder}/ from {archive.url.rsplit('/', 1)[-1]})"
    )


def load_cifar(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(images uint8 (N, 32, 32, 3), labels, official split per image, id per image).

    Labels are CIFAR-10's classes or CIFAR-100's 20 superclasses. Every batch is checked against
    torchvision's md5 before it is unpickled.
    """
    archive = cifar_archive(name)
    folder = find_cifar(root, name)
    images, labels, splits, ids = [], [], [], []
    for split, files in archive.batches.items():
        for filename, md5 in files:
            path = folder / filename
            if file_digest(path, "md5") != md5:
                raise DiaError(
                    f"{path} has the wrong md5 (expected {md5}); delete {folder} and re-run the "
                    f"download"
                )
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            images.append(data.transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[archive.label_key], dtype=np.int64))
            splits += [split] * len(data)
            ids += [f"{filename}_{i:05d}" for i in range(len(data))]
    return np.concatenate(images), np.concatenate(labels), splits, ids
