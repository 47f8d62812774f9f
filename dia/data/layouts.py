"""The official archive layouts of the image-file datasets, and how to list their images.

A lister finds the dataset's folder inside an extracted archive (or a user's local copy, which may
sit one or two folders deeper), checks the layout and returns every image with its raw label and
official split. Paths are relative to that folder, with forward slashes, so manifests and frozen
splits are the same on every machine. Images of classes a config does not select are dropped
later, in prepare.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dia.errors import DiaError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
_MAX_DEPTH = 3


@dataclass(frozen=True)
class Listing:
    """Images of one dataset: ``root / paths[i]`` has raw label ``raw_labels[i]``."""

    root: Path
    paths: list[str]
    raw_labels: list[str]
    official: list[str | None]


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def find_folder(root: Path, wanted: Callable[[Path], bool], what: str) -> Path:
    """The shallowest folder under ``root`` (itself included) for which ``wanted`` holds.

    Archives differ in wrapping (Kaggle zips have none, Simula's has one folder, a user's copy may
    have more); ties at one depth go to the first name in sorted order, so the choice is stable.
    """
    root = Path(root)
    if not root.is_dir():
        raise DiaError(f"{root} is not a folder; point the dataset's local_path at the dataset")
    level = [root]
    for _ in range(_MAX_DEPTH + 1):
        for folder in level:
            if wanted(folder):
                return folder
        level = sorted(
            child
            for folder in level
            for child in folder.iterdir()
            if child.is_dir() and not child.name.startswith((".", "__MACOSX"))
        )
    raise DiaError(f"{root} does not hold the expected layout: {what}")


def _class_folders(root: Path, classes: list[Path], split: str | None) -> Listing:
    paths, labels = [], []
    for folder in classes:
        for image in _images_in(folder):
            paths.append(image.relative_to(root).as_posix())
            labels.append(folder.name)
    return Listing(root, paths, labels, [split] * len(paths))


def list_sarscov2(root: Path) -> Listing:
    """Kaggle plameneduardo/sarscov2-ctscan-dataset: ``COVID/`` and ``non-COVID/`` PNGs."""
    names = ("COVID", "non-COVID")
    top = find_folder(
        root,
        lambda f: all((f / n).is_dir() for n in names),
        "folders COVID/ and non-COVID/ (Kaggle plameneduardo/sarscov2-ctscan-dataset)",
    )
    return _class_folders(top, [top / n for n in names], None)


KVASIR_CLASSES = (
    "dyed-lifted-polyps",
    "dyed-resection-margins",
    "esophagitis",
    "normal-cecum",
    "normal-pylorus",
    "normal-z-line",
    "polyps",
    "ulcerative-colitis",
)


def list_kvasir(root: Path) -> Listing:
    """Simula Kvasir v2 (``kvasir-dataset-v2/<class>/*.jpg``, eight classes of 1,000 images)."""
    top = find_folder(
        root,
        lambda f: all((f / n).is_dir() for n in KVASIR_CLASSES),
        f"the eight Kvasir v2 class folders ({', '.join(KVASIR_CLASSES)})",
    )
    return _class_folders(top, [top / n for n in KVASIR_CLASSES], None)


KERMANY_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def list_kermany(root: Path) -> Listing:
    """Kermany 2018 OCT (Kaggle paultimothymooney/kermany2018): ``OCT2017/{train,test}/<class>``.

    The official train/test split is kept. The archive's 32-image ``val`` folder is not used (the
    DIA code ignores it too); validation is carved from train instead.
    """
    top = find_folder(
        root,
        lambda f: all((f / s / c).is_dir() for s in ("train", "test") for c in KERMANY_CLASSES),
        "OCT2017/train/ and OCT2017/test/, each with CNV/, DME/, DRUSEN/ and NORMAL/ "
        "(Kaggle paultimothymooney/kermany2018)",
    )
    parts = [
        _class_folders(top, [top / s / c for c in KERMANY_CLASSES], s) for s in ("train", "test")
    ]
    return Listing(
        top,
        [p for part in parts for p in part.paths],
        [r for part in parts for r in part.raw_labels],
        [s for part in parts for s in part.official],
    )


def list_aptos2019(root: Path) -> Listing:
    """APTOS 2019 competition: ``train.csv`` (id_code, diagnosis 0-4) and ``train_images/``.

    Only the labelled training images are used; ``test_images/`` has no public labels.
    """
    top = find_folder(
        root,
        lambda f: (f / "train.csv").is_file() and (f / "train_images").is_dir(),
        "train.csv and train_images/ (Kaggle competition aptos2019-blindness-detection)",
    )
    table = top / "train.csv"
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        if not {"id_code", "diagnosis"} <= set(reader.fieldnames or ()):
            raise DiaError(f"{table} lacks the columns id_code and diagnosis")
        rows = [(r["id_code"], r["diagnosis"].strip()) for r in reader]
    paths, labels, missing = [], [], []
    for id_code, diagnosis in rows:
        path = f"train_images/{id_code}.png"
        (paths if (top / path).is_file() else missing).append(path)
        labels.append(diagnosis)
    if missing:
        raise DiaError(
            f"{len(missing)} image(s) listed in {table} are missing, e.g. {top / missing[0]}; "
            f"the copy is incomplete: extract the competition archive again"
        )
    return Listing(top, paths, labels, [None] * len(paths))


FOLDER_SPLITS = ("train", "val", "test")


def list_folder(root: Path) -> Listing:
    """A user's own images, one folder per class, in either of two layouts.

    ``train/<class>/``, ``test/<class>/`` and optionally ``val/<class>/`` (anomalib's and BMAD's
    layout: those splits are kept; without ``val/``, validation is carved as
    :func:`dia.data.splits.assign_splits` says), or ``<class>/`` at the top (every split is
    generated). Images sit directly in their class folder; sub-folders of a class folder (e.g.
    segmentation masks) are not read. Wrapping folders, as an archive of the folder has, are
    stepped into.
    """
    root = Path(root)
    if not root.is_dir():
        raise DiaError(f"{root} is not a folder; point the dataset's local_path at your images")
    while len(subs := _subfolders(root)) == 1 and subs[0].name not in FOLDER_SPLITS:
        if _images_in(root):
            break
        root = subs[0]
    splits = [s for s in FOLDER_SPLITS if (root / s).is_dir()]
    if splits and not {"train", "test"} <= set(splits):
        raise DiaError(
            f"{root} has {'/, '.join(splits)}/ but needs both train/ and test/ (and optionally "
            f"val/), each with one folder per class"
        )
    parts = [(root / s, s) for s in splits] or [(root, None)]
    listings = [_class_folders(root, _classes(folder), split) for folder, split in parts]
    return Listing(
        root,
        [p for part in listings for p in part.paths],
        [r for part in listings for r in part.raw_labels],
        [s for part in listings for s in part.official],
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        c for c in folder.iterdir() if c.is_dir() and not c.name.startswith((".", "__MACOSX"))
    )


def _classes(folder: Path) -> list[Path]:
    """The class folders of ``folder``; an empty one or loose images are errors, not skipped."""
    classes = _subfolders(folder)
    if not classes:
        raise DiaError(
            f"{folder} has no class folders; put the images in one folder per class, e.g. "
            f"{folder / 'good'} and {folder / 'lesion'}"
        )
    if loose := _images_in(folder):
        raise DiaError(
            f"{loose[0]} and {len(loose) - 1} other image(s) sit outside a class folder; move "
            f"them into the folder of their class under {folder}"
        )
    for c in classes:
        if not _images_in(c):
            raise DiaError(
                f"class folder {c} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add "
                f"its images or remove the folder"
            )
    return classes


LISTERS: dict[str, Callable[[Path], Listing]] = {
    "folder": list_folder,
    "sarscov2": list_sarscov2,
    "kvasir": list_kvasir,
    "kermany": list_kermany,
    "aptos2019": list_aptos2019,
}
