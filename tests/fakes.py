"""Small generated datasets laid out exactly like the official archives.

Kvasir, Kermany OCT, APTOS 2019 and CIFAR cannot be downloaded here; these builders reproduce
their folder layouts, file names and formats with a few tiny images each.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from dia.data.layouts import KERMANY_CLASSES, KVASIR_CLASSES
from dia.data.prepare import COLUMNS, IMAGES, MANIFEST, PreparedData


def _image(path: Path, rng: np.random.Generator, size: tuple[int, int], gray: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def make_sarscov2(root: Path, per_class: int = 3) -> Path:
    """``COVID/Covid (<n>).png`` and ``non-COVID/Non-Covid (<n>).png``, as in the Kaggle zip."""
    rng = np.random.default_rng(4)
    for folder, stem in (("COVID", "Covid"), ("non-COVID", "Non-Covid")):
        for i in range(per_class):
            _image(root / folder / f"{stem} ({i + 1}).png", rng, (30, 24), gray=False)
    return root


def make_kermany(root: Path, per_class: int = 3) -> Path:
    """``OCT2017/{train,test,val}/<class>/<CLASS>-<patient>-<n>.jpeg``, grayscale JPEGs."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2), ("val", 1)):
        for cls in KERMANY_CLASSES:
            for i in range(n):
                name = f"{cls}-{1000 + i}-{i + 1}.jpeg"
                _image(root / "OCT2017" / split / cls / name, rng, (40, 36), gray=True)
    return root


def make_kvasir(root: Path, per_class: int = 4) -> Path:
    """``kvasir-dataset-v2/<class>/<hex>.jpg`` for the eight classes, colour JPEGs."""
    rng = np.random.default_rng(1)
    for cls in KVASIR_CLASSES:
        for i in range(per_class):
            name = hashlib.md5(f"{cls}{i}".encode()).hexdigest()[:8] + ".jpg"
            _image(root / "kvasir-dataset-v2" / cls / name, rng, (48, 40), gray=False)
    return root


def make_aptos(root: Path, per_grade: int = 3) -> Path:
    """``train.csv`` (id_code, diagnosis), ``train_images/``, ``test.csv``, ``test_images/``."""
    rng = np.random.default_rng(2)
    rows = []
    for grade in range(5):
        for i in range(per_grade):
            code = hashlib.sha1(f"{grade}-{i}".encode()).hexdigest()[:12]
            _image(root / "train_images" / f"{code}.png", rng, (50, 40), gray=False)
            rows.append(f"{code},{grade}")
    (root / "train.csv").write_text("id_code,diagnosis\n" + "\n".join(rows) + "\n")
    _image(root / "test_images" / "0005cfc8afb6.png", rng, (50, 40), gray=False)
    (root / "test.csv").write_text("id_code\n0005cfc8afb6\n")
    (root / "sample_submission.csv").write_text("id_code,diagnosis\n0005cfc8afb6,0\n")
    return root


def make_cifar(root: Path, name: str, per_batch: int = 20) -> tuple[Path, dict[str, str]]:
    """torchvision's CIFAR batch folder with ``per_batch`` images per batch; returns md5s."""
    rng = np.random.default_rng(3)
    if name == "cifar10":
        folder, files, label_keys = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            {"labels": 10},
        )
    else:
        folder, files = root / "cifar-100-python", ["train", "test"]
        label_keys = {"fine_labels": 100, "coarse_labels": 20}
    folder.mkdir(parents=True)
    md5 = {}
    for filename in files:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)}
        for key, n in label_keys.items():
            batch[key] = [int(v) for v in np.arange(per_batch) % n]
        with open(folder / filename, "wb") as f:
            pickle.dump(batch, f)
        md5[filename] = hashlib.md5((folder / filename).read_bytes()).hexdigest()
    return folder, md5


def zip_tree(folder: Path, dest: Path) -> Path:
    """Zip everything under ``folder`` with paths relative to it, as the official zips are."""
    with zipfile.ZipFile(dest, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    return dest


def noise_prepared() -> PreparedData:
    """28 random 28 x 28 grey images, prepared: 12 normal train, 8 normal val, 4 + 4 test."""
    rng = np.random.default_rng(0)
    n = 28
    return PreparedData(
        ids=np.array([f"img{i}" for i in range(n)]),
        images=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
        labels=np.array([0] * 20 + [0, 1] * 4),
        splits=np.array(["train"] * 12 + ["val"] * 8 + ["test"] * 8),
        manifest_sha256="0" * 64,
    )


def write_prepared(
    folder: Path, n: int, n_normal_train: int, size: int, n_anomalous_train: int = 0
) -> int:
    """A prepared dataset laid out as the prepare stage writes it: ``n_normal_train`` random
    normal and ``n_anomalous_train`` random anomalous training images, the rest (black) test
    images, alternately anomalous; returns the array's size in bytes. ``np.zeros`` leaves the
    untouched pages unallocated, so writing a large one costs no memory."""
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    n_train = n_normal_train + n_anomalous_train
    images[:n_train] = rng.integers(0, 256, images[:n_train].shape, dtype=np.uint8)
    ids = np.array([f"img{i:06d}" for i in range(n)])
    folder.mkdir(parents=True)
    with open(folder / IMAGES, "wb") as f:
        np.savez(f, images=images, ids=ids)
    with open(folder / MANIFEST, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i, image_id in enumerate(ids):
            label = 0 if i < n_normal_train or (i >= n_train and i % 2) else 1
            split = "train" if i < n_train else "test"
            writer.writerow([image_id, "", "", str(label), label, split])
    return images.nbytes
