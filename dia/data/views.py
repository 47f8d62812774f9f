"""Baseline input views: each baseline's images resized from the original files, as its official
loader does, instead of from the pipeline's 224 x 224 prepared array.

A high-resolution dataset is prepared once as a 224 x 224 squash (what DIA and CSI train on).
The baselines' official loaders resize the *original* file to their own input size: RD4AD to
256 x 256, Transformaly to 384 x 384, KDAD to 128 x 128, and Mean-Shift's ``Resize(256)`` keeps
the aspect ratio before its 224 centre crop. Resizing the squash instead would upsample it
(224 -> 384) or crop an already distorted image, so :func:`write_views` decodes the originals
once more into one array per distinct view and the baselines read theirs.

Views exist only for datasets decoded from image files at an ``image_size``; MedMNIST, CIFAR and
the phantom keep their original pixels in the prepared array, and a baseline resizes from it.
"""

from __future__ import annotations

import dataclasses
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

from dia.errors import DiaError
from dia.io import atomic_path, read_json, write_json

INDEX = "index.json"
Kind = Literal["square", "short"]
Resample = Literal["bilinear", "bicubic"]
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclasses.dataclass(frozen=True)
class View:
    """How a baseline's official loader resizes an original image.

    ``square``: ``Resize((size, size))``, the aspect ratio is not kept. ``short``:
    ``Resize(size)`` (the shorter side to ``size``, the aspect ratio kept) and then the central
    ``size`` x ``size`` square, which holds the baseline's own centre crop; its random crops see
    that square rather than the whole original (the one difference left, for non-square
    originals).
    """

    kind: Kind
    size: int
    resample: Resample = "bilinear"

    def __post_init__(self) -> None:
        if self.kind not in get_args(Kind) or self.resample not in _FILTERS:
            raise DiaError(
                f"unknown input view {self.kind}/{self.resample}: the kind is one of "
                f"{', '.join(get_args(Kind))}, the resampling one of {', '.join(_FILTERS)}"
            )
        if self.size < 1:
            raise DiaError(f"input view size must be positive, got {self.size}")

    @property
    def name(self) -> str:
        return f"{self.kind}{self.size}-{self.resample}"

    def apply(self, image: Image.Image) -> Image.Image:
        """The view of one original image, as torchvision's PIL transforms compute it."""
        size, resample = self.size, _FILTERS[self.resample]
        if self.kind == "square":
            return image if image.size == (size, size) else image.resize((size, size), resample)
        width, height = image.size
        if width <= height:
            new = (size, int(size * height / width))
        else:
            new = (int(size * width / height), size)
        if new != image.size:
            image = image.resize(new, resample)
        left = round((new[0] - size) / 2)
        top = round((new[1] - size) / 2)
        return image.crop((left, top, left + size, top + size))


def prepared_view(image_size: int) -> View:
    """The view a dataset's prepared array already is (PIL bilinear to ``image_size`` squared)."""
    return View("square", image_size)


def write_views(
    out_dir: Path,
    root: Path,
    paths: Sequence[str],
    ids: Sequence[str],
    views: Sequence[View],
    *,
    prepared: View,
    sha256: Sequence[str],
    workers: int = 1,
) -> None:
    """Decode every original ``root / path`` into one ``<view name>.npz`` per view other than
    the ``prepared`` array's, then write ``index.json`` last: it marks the folder complete.

    ``sha256``: the manifest's pixel hashes; an original that no longer has its hash (the files
    changed since the prepare step) stops the step, naming it.
    """
    from dia.data.images import decode_images

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for view in dict.fromkeys(v for v in views if v != prepared):
        images, digests = decode_images(root, paths, view, workers=workers)
        changed = [p for p, old, new in zip(paths, sha256, digests, strict=True) if old != new]
        if changed:
            raise DiaError(
                f"{root / changed[0]} (and {len(changed) - 1} more) differ from the prepared "
                f"dataset's manifest; delete the dataset's results/data folder and re-run"
            )
        with atomic_path(out_dir / f"{view.name}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, images=images, ids=np.asarray(ids))
        files[view.name] = f"{view.name}.npz"
    write_json(out_dir / INDEX, {"prepared": prepared.name, "views": files})


def load_view(views_dir: Path, view: View, ids: np.ndarray) -> np.ndarray | None:
    """The ``view`` array of a prepared dataset, checked to list the manifest's ``ids``; None
    when the prepared array itself is that view."""
    views_dir = Path(views_dir)
    redo = f"delete {views_dir} and re-run the prepare_views rule"
    if not (views_dir / INDEX).is_file():
        raise DiaError(f"{views_dir / INDEX} not found; {redo}")
    index: Mapping[str, Any] = read_json(views_dir / INDEX)
    if view.name == index["prepared"]:
        return None
    if view.name not in index["views"]:
        raise DiaError(
            f"input view {view.name} is not among those prepared in {views_dir} "
            f"({', '.join(index['views']) or 'none'}); {redo}"
        )
    path = views_dir / index["views"][view.name]
    try:
        with np.load(path, allow_pickle=False) as data:
            images, stored = data["images"], data["ids"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DiaError(f"{path} is corrupt or unreadable ({exc}); {redo}") from exc
    if not np.array_equal(stored, ids):
        raise DiaError(f"{path} lists other images than the dataset's manifest; {redo}")
    return images
