"""Stages ``download`` and ``prepare``: raw archive -> manifest.csv + images.npz."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dia.data.medmnist import fetch_medmnist
from dia.data.phantom import write_phantom_npz
from dia.data.prepare import prepare_from_npz
from dia.errors import DiaError
from dia.io import file_digest, write_json
from dia.meta import build_meta


def run_download(dataset: str, spec: dict[str, Any], dest: Path) -> None:
    """Fetch (or generate, for ``phantom``) the raw npz of ``dataset`` into ``dest``."""
    source = spec.get("source")
    if source == "phantom":
        write_phantom_npz(dest, **(spec.get("phantom") or {}))
    elif source == "medmnist":
        local = spec.get("local_path")
        fetch_medmnist(
            spec.get("flag", dataset),
            dest,
            local_path=Path(local) if local else None,
            size=int(spec.get("size", 28)),
        )
    else:
        raise DiaError(
            f"datasets.{dataset}.source: unknown source {source!r}; use 'medmnist' or 'phantom'"
        )


def run_prepare(dataset: str, spec: dict[str, Any], raw: Path, out_dir: Path) -> None:
    started = time.time()
    prepare_from_npz(
        raw, out_dir, normal_labels=spec["normal_labels"], anomaly_labels=spec.get("anomaly_labels")
    )
    write_json(
        out_dir / "meta.json",
        build_meta(
            stage="prepare",
            config={"dataset": dataset, **spec},
            seed=None,
            device="cpu",
            started=started,
            inputs={str(raw): file_digest(raw)},
        ),
    )
