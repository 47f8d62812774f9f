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

from dia.data.cifar import load_cifar
from dia.data.images import decode_images, pixel_sha256
from dia.data.layouts import Listing
from dia.data.medmnist import SPLITS, load_npz_splits
from dia.data.splits import SplitSpec, assign_splits, frozen_splits
from dia.data.views import prepared_view
from dia.device import fits_on
from dia.errors import DiaError
from dia.io import atomic_path, file_digest, mapped_npz_array

if TYPE_CHECKING:
    import torch

MANIFEST = "manifest.csv"
IMAGES = "images.npz"
COLUMNS = ("id", "path", "sha256", "raw_label", "label", "split")


@dataclass(frozen=True, eq=False)
class PreparedData:
    """A prepared dataset; rows follow the manifest order. ``images`` is memory-mapped when
    loaded from disk (:func:`load_prepared`): a job reads only the rows it indexes."""

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


def label_map(
    present: set[str],
    normal_labels: Sequence[int | str],
    anomaly_labels: Sequence[int | str] | None,
    source: object,
) -> dict[str, int]:
    """Binary label of each selected raw label (0 normal, 1 anomaly); unselected ones are absent.

    Raw labels are compared as strings, so config values may be class indices or folder names.
    Without ``anomaly_labels`` every raw label that is not normal is an anomaly.
    """
    normal = {str(v) for v in normal_labels}
    anomaly = present - normal if anomaly_labels is None else {str(v) for v in anomaly_labels}
    if not normal:
        raise DiaError("normal_labels is empty; list the normal raw labels in the dataset's config")
    absent = sorted((normal | anomaly) - present)
    if absent:
        raise DiaError(
            f"label(s) {absent} selected as normal/anomaly but {source} has labels "
            f"{sorted(present)}; fix normal_labels/anomaly_labels in the dataset's config"
        )
    if normal & anomaly:
        raise DiaError(
            f"label(s) {sorted(normal & anomaly)} are both normal and anomaly; fix "
            f"normal_labels/anomaly_labels in the dataset's config"
        )
    return {label: int(label in anomaly) for label in normal | anomaly}


def prepare_from_npz(
    raw_npz: Path,
    out_dir: Path,
    *,
    normal_labels: Sequence[int | str],
    anomaly_labels: Sequence[int | str] | None = None,
) -> None:
    """Write ``manifest.csv`` and ``images.npz`` for a MedMNIST-layout npz (official splits)."""
    raw_npz = Path(raw_npz)
    splits = load_npz_splits(raw_npz)
    present = {str(v) for _, labels in splits.values() for v in np.unique(labels)}
    binary = label_map(present, normal_labels, anomaly_labels, raw_npz)
    rows: list[dict[str, object]] = []
    kept: list[np.ndarray] = []
    for split in SPLITS:
        images, raw_labels = splits[split]
        for index in np.flatnonzero(np.isin(raw_labels.astype(str), list(binary))):
            image = np.ascontiguousarray(images[index])
            raw_label = str(raw_labels[index])
            rows.append(
                {
                    "id": f"{split}_{index:06d}",
                    "path": f"{raw_npz.name}#{split}/{index}",
                    "sha256": pixel_sha256(image),
                    "raw_label": raw_label,
                    "label": binary[raw_label],
                    "split": split,
                }
            )
            kept.append(image if image.ndim == 3 else image[..., None])
    if not rows:
        raise DiaError(f"no image of {raw_npz} has a selected label; check the label config")
    _write(Path(out_dir), rows, np.stack(kept))


def prepare_from_listing(
    listing: Listing,
    out_dir: Path,
    *,
    normal_labels: Sequence[int | str],
    anomaly_labels: Sequence[int | str] | None = None,
    image_size: int | None,
    split: SplitSpec,
    frozen: Path | None = None,
    workers: int = 1,
) -> None:
    """Decode the selected images of an image-file dataset once and write the prepared form.

    Splits come from ``frozen`` when given (after checking the local files against it), else from
    the official split where the archive has one, else from :func:`assign_splits`.
    """
    binary = label_map(set(listing.raw_labels), normal_labels, anomaly_labels, listing.root)
    keep = [i for i, r in enumerate(listing.raw_labels) if r in binary]
    paths = [listing.paths[i] for i in keep]
    raw = [listing.raw_labels[i] for i in keep]
    view = prepared_view(image_size) if image_size else None
    images, sha256 = decode_images(listing.root, paths, view, workers=workers)
    if frozen is not None:
        splits = frozen_splits(frozen, paths, sha256, raw)
    else:
        splits = assign_splits(paths, sha256, raw, split, [listing.official[i] for i in keep])
    rows = [
        {"id": p, "path": p, "sha256": d, "raw_label": r, "label": binary[r], "split": s}
        for p, d, r, s in zip(paths, sha256, raw, splits, strict=True)
    ]
    if not any(row["split"] == "train" and row["label"] == 0 for row in rows):
        raise DiaError(
            f"no normal image ({', '.join(map(str, normal_labels))}) in the training split of "
            f"{listing.root}; the methods train on normal images only: add some, or fix "
            f"normal_labels"
        )
    _write(Path(out_dir), rows, images)


def prepare_from_cifar(
    root: Path,
    name: str,
    out_dir: Path,
    *,
    normal_labels: Sequence[int | str],
    anomaly_labels: Sequence[int | str] | None = None,
    split: SplitSpec,
) -> None:
    """CIFAR-10/100 with the official train/test split and validation carved from train."""
    images, labels, official, ids = load_cifar(root, name)
    raw = [str(v) for v in labels]
    binary = label_map(set(raw), normal_labels, anomaly_labels, f"{name} under {root}")
    keep = [i for i, r in enumerate(raw) if r in binary]
    sha256 = [pixel_sha256(images[i]) for i in keep]
    splits = assign_splits(
        [ids[i] for i in keep], sha256, [raw[i] for i in keep], split, [official[i] for i in keep]
    )
    rows = [
        {
            "id": ids[i],
            "path": ids[i],
            "sha256": d,
            "raw_label": raw[i],
            "label": binary[raw[i]],
            "split": s,
        }
        for i, d, s in zip(keep, sha256, splits, strict=True)
    ]
    _write(Path(out_dir), rows, images[keep])


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
            ids = data["ids"]
        images = mapped_npz_array(npz, "images")
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


def to_float_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, 3, H, W) in [0, 1]; grayscale is replicated to RGB.

    Backbones are ImageNet-style 3-channel networks, whatever the dataset's channel count. A
    tensor is converted where it lives (on the GPU for images held there).
    """
    import torch

    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (N, H, W, 1|3), got {tuple(images.shape)}")
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    tensor = images.permute(0, 3, 1, 2).float() / 255.0
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor.contiguous()


class ImageBatches:
    """uint8 (N, H, W, C) images served as float (B, 3, H, W) batches on demand.

    A 224-px dataset such as Kermany OCT needs 16 GB as one float tensor but 4 GB as uint8, so
    training, scoring and caching index this instead of converting everything up front.
    """

    def __init__(self, images: np.ndarray | torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"expected images of shape (N, H, W, 1|3), got {images.shape}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n, h, w, _ = self.images.shape
        return n, 3, h, w

    def on(self, device: str | torch.device) -> ImageBatches:
        """These images held on a GPU ``device`` as uint8, uploaded once, when they fit
        (:func:`dia.device.fits_on`): each batch is then indexed and converted there, with no
        copy from the host per step. Unchanged on the CPU, or when they do not fit."""
        import torch

        if isinstance(self.images, torch.Tensor) or not fits_on(device, self.images.nbytes):
            return self
        return ImageBatches(torch.from_numpy(np.ascontiguousarray(self.images)).to(device))

    def __getitem__(self, index: slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        import torch

        if isinstance(self.images, torch.Tensor):
            if not isinstance(index, slice):
                index = torch.as_tensor(index, device=self.images.device)
        elif not isinstance(index, slice):
            index = np.asarray(index)
        return to_float_tensor(self.images[index])
