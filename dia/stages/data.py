"""Stages ``download``, ``prepare`` (raw archive -> manifest.csv + images.npz) and
``prepare_views`` (the baselines' input views of an image-file dataset)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from dia.data.layouts import LISTERS
from dia.data.medmnist import fetch_medmnist
from dia.data.phantom import write_phantom_npz
from dia.data.prepare import (
    MANIFEST,
    prepare_from_cifar,
    prepare_from_listing,
    prepare_from_npz,
)
from dia.data.registry import CIFAR, NPZ_SOURCES, SOURCES
from dia.data.sources import fetch_files, files_root
from dia.data.splits import SplitSpec
from dia.data.views import prepared_view, write_views
from dia.errors import DiaError
from dia.io import file_digest, write_json
from dia.meta import build_meta


def run_download(dataset: str, spec: dict[str, Any], dest: Path) -> None:
    """Fetch (or generate) ``dataset``: its raw npz, or for image files its source.json."""
    source = spec.get("source")
    local = spec.get("local_path")
    if source == "phantom":
        write_phantom_npz(dest, **(spec.get("phantom") or {}))
    elif source == "medmnist":
        fetch_medmnist(
            spec.get("flag", dataset),
            dest,
            local_path=Path(local) if local else None,
            size=int(spec.get("size", 28)),
        )
    elif source in SOURCES:
        fetch_files(source, dataset, dest, local)
    else:
        raise DiaError(
            f"datasets.{dataset}.source: unknown source {source!r}; use one of {', '.join(SOURCES)}"
        )


def run_prepare(
    dataset: str,
    spec: dict[str, Any],
    raw: Path,
    out_dir: Path,
    *,
    frozen: Path | None = None,
    workers: int = 1,
) -> None:
    """Write the prepared form of ``dataset`` from the download step's output ``raw``."""
    started = time.time()
    source = spec["source"]
    labels = {"normal_labels": spec["normal_labels"], "anomaly_labels": spec.get("anomaly_labels")}
    split = SplitSpec(**{k: v for k, v in (spec.get("split") or {}).items() if k != "frozen"})
    if source in NPZ_SOURCES:
        prepare_from_npz(raw, out_dir, **labels)
    elif source in CIFAR:
        prepare_from_cifar(files_root(raw), source, out_dir, split=split, **labels)
    else:
        prepare_from_listing(
            LISTERS[source](files_root(raw)),
            out_dir,
            image_size=spec.get("image_size"),
            split=split,
            frozen=frozen,
            workers=workers,
            **labels,
        )
    inputs = {str(raw): file_digest(raw)}
    if frozen is not None:
        inputs[str(frozen)] = file_digest(frozen)
    write_json(
        out_dir / "meta.json",
        build_meta(
            stage="prepare",
            config={"dataset": dataset, **spec},
            seed=None,
            device="cpu",
            started=started,
            inputs=inputs,
        ),
    )


def run_prepare_views(
    spec: dict[str, Any],
    raw: Path,
    data_dir: Path,
    out_dir: Path,
    *,
    preset: str,
    baselines: list[tuple[str, list[dict[str, Any]]]],
    workers: int = 1,
) -> None:
    """Decode the originals of a prepared image-file dataset into each baseline's input view.

    ``baselines`` lists (baseline name, config layers) of every baseline run on the dataset;
    their resolved configs say which views (:meth:`~dia.config.BaselineConfig.input_view`).
    """
    from dia.sections import resolve

    with open(data_dir / MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f))
    write_views(
        out_dir,
        LISTERS[spec["source"]](files_root(raw)).root,
        [row["path"] for row in rows],
        [row["id"] for row in rows],
        [resolve(name, preset, layers).input_view() for name, layers in baselines],
        prepared=prepared_view(int(spec["image_size"])),
        sha256=[row["sha256"] for row in rows],
        workers=workers,
    )
