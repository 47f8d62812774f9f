"""Turn a raw split archive into the pipeline's uniform prepared form.

Every dataset ends up as ``manifest.csv`` (one row per image: id, source path, sha256, raw and
binary label, split) plus ``images.npz`` (uint8 (N, H, W, C) and ids in manifest order), so
training and scoring never care where the data came from, and the manifest's hash pins the data
in every artefact's meta.json.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dia.data.medmnist import SPLITS, load_npz_splits
from dia.errors import DiaError
from dia.io import atomic_path, bytes_digest, file_digest

if TYPE_CHECKING:
    import torch

MANIFEST = "manifest.csv"
IMAGES = "images.npz"
COLUMNS = ("id", "path", "sha256", "raw_label", "label", "split")


@dataclass(frozen=True, eq=False)
class PreparedData:
    """A prepared dataset in memory; rows follow the manifest order."""

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    manifest_sha256: str

    def select(self, split: str, label: int | None = None) -> np.ndarray:
        """Boolean mask of the rows in ``split`` (and with binary ``label`` when given)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        mask = self.splits == split
        return mask if label is None else mask & (self.labels == label)


def prepare_from_npz(
    raw_npz: Path,
    out_dir: Path,
    *,
    normal_labels: Sequence[int],
    anomaly_labels: Sequence[int] | None = None,
) -> None:
    """Write ``manifest.csv`` and ``images.npz`` for a MedMNIST-layout npz.

    Raw labels in ``normal_labels`` become 0, those in ``anomaly_labels`` (default: every other
    label) become 1, and images with a raw label in neither are dropped.
    """
    raw_npz = Path(raw_npz)
    splits = load_npz_splits(raw_npz)
    normal, anomaly = _label_sets(raw_npz, splits, normal_labels, anomaly_labels)
    rows: list[dict[str, object]] = []
    kept: list[np.ndarray] = []
    for split in SPLITS:
        images, raw_labels = splits[split]
        for index in np.flatnonzero(np.isin(raw_labels, list(normal | anomaly))):
            image = np.ascontiguousarray(images[index])
            raw_label = int(raw_labels[index])
            rows.append(
                {
                    "id": f"{split}_{index:06d}",
                    "path": f"{raw_npz.name}#{split}/{index}",
                    "sha256": bytes_digest(image.tobytes()),
                    "raw_label": raw_label,
                    "label": int(raw_label in anomaly),
                    "split": split,
                }
            )
            kept.append(image if image.ndim == 3 else image[..., None])
    if not rows:
        raise DiaError(f"no image of {raw_npz} has a selected label; check the label config")
    _write(Path(out_dir), rows, np.stack(kept))


def _label_sets(
    raw_npz: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    normal_labels: Sequence[int],
    anomaly_labels: Sequence[int] | None,
) -> tuple[set[int], set[int]]:
    present = {int(v) for _, labels in splits.values() for v in np.unique(labels)}
    normal = {int(v) for v in normal_labels}
    anomaly = present - normal if anomaly_labels is None else {int(v) for v in anomaly_labels}
    absent = sorted((normal | anomaly) - present)
    if not normal:
        raise DiaError("normal_labels is empty; list the normal raw labels in the dataset's config")
    if absent:
        raise DiaError(
            f"label(s) {absent} selected as normal/anomaly but {raw_npz} has labels "
            f"{sorted(present)}; fix normal_labels/anomaly_labels in the dataset's config"
        )
    if normal & anomaly:
        raise DiaError(
            f"label(s) {sorted(normal & anomaly)} are both normal and anomaly; fix "
            f"normal_labels/anomaly_labels in the dataset's config"
        )
    return normal, anomaly


def _write(out_dir: Path, rows: list[dict[str, object]], images: np.ndarray) -> None:
    """Images first, manifest last: the manifest is the stage's declared output."""
    ids = np.array([row["id"] for row in rows])
    with atomic_path(out_dir / IMAGES) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images, ids=ids)
    with atomic_path(out_dir / MANIFEST) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def load_prepared(out_dir: Path) -> PreparedData:
    """Load a prepared dataset, checking that its manifest and image array belong together."""
    out_dir = Path(out_dir)
    manifest, npz = out_dir / MANIFEST, out_dir / IMAGES
    redo = f"delete {out_dir} and re-run the prepare step"
    for path in (manifest, npz):
        if not path.is_file():
            raise DiaError(f"{path} not found; {redo}")
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise DiaError(f"{manifest} has columns {reader.fieldnames}, not {COLUMNS}; {redo}")
        rows = list(reader)
    try:
        with np.load(npz, allow_pickle=False) as data:
            images, ids = data["images"], data["ids"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DiaError(f"{npz} is corrupt or unreadable ({exc}); {redo}") from exc
    manifest_ids = np.array([row["id"] for row in rows])
    if ids.shape != manifest_ids.shape or not np.array_equal(ids, manifest_ids):
        raise DiaError(f"{manifest} and {npz} list different images; {redo}")
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(ids):
        raise DiaError(f"{npz} holds {images.dtype} {images.shape}, not uint8 (N,H,W,C); {redo}")
    return PreparedData(
        ids=manifest_ids,
        images=images,
        labels=np.array([int(row["label"]) for row in rows], dtype=np.int64),
        splits=np.array([row["split"] for row in rows]),
        manifest_sha256=file_digest(manifest),
    )


def to_float_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, 3, H, W) in [0, 1]; grayscale is replicated to RGB.

    Backbones are ImageNet-style 3-channel networks, whatever the dataset's channel count.
    """
    import torch

    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, H, W, 1|3), got {images.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor.contiguous()
