"""Every dataset source the pipeline reads, in one table: what its download step writes and where
its files come from. Torch-free, so that the Snakefile (which download rule, whose Kaggle
credentials to check), the download stage and the config schema's ``source`` enum (kept equal by
a test) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Kaggle:
    """A Kaggle dataset or competition (competitions need their rules accepted once)."""

    kind: Literal["dataset", "competition"]
    ref: str


@dataclass(frozen=True)
class Source:
    """``raw``: the download step writes an ``npz`` of arrays (generated or MedMNIST's), or
    records a folder of image ``files`` read by the layout lister of the same name (CIFAR: its
    python pickles). ``kaggle`` / ``url``: where the archive is downloaded from; neither for a
    source that is generated, has its own downloader, or is always local."""

    raw: Literal["npz", "files"]
    kaggle: Kaggle | None = None
    url: str | None = None


SOURCES: dict[str, Source] = {
    "phantom": Source("npz"),
    "medmnist": Source("npz"),
    "sarscov2": Source("files", kaggle=Kaggle("dataset", "plameneduardo/sarscov2-ctscan-dataset")),
    "kermany": Source("files", kaggle=Kaggle("dataset", "paultimothymooney/kermany2018")),
    "aptos2019": Source("files", kaggle=Kaggle("competition", "aptos2019-blindness-detection")),
    "kvasir": Source(
        "files", url="https://datasets.simula.no/downloads/kvasir/kvasir-dataset-v2.zip"
    ),
    "cifar10": Source("files"),
    "cifar100": Source("files"),
    "folder": Source("files"),
}
NPZ_SOURCES = tuple(name for name, s in SOURCES.items() if s.raw == "npz")
FILE_SOURCES = tuple(name for name, s in SOURCES.items() if s.raw == "files")
CIFAR = ("cifar10", "cifar100")


def needs_kaggle(spec: dict) -> bool:
    """Whether a dataset's config entry downloads from Kaggle (no ``local_path`` given)."""
    source = SOURCES.get(spec.get("source", ""))
    return bool(source and source.kaggle) and not spec.get("local_path")
