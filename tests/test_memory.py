"""A job reads only the rows of the prepared array it uses: the array is memory-mapped, so a
training job on a large dataset peaks below the array's size (it would hold all of it else)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dia.data.prepare import IMAGES, load_prepared
from dia.io import mapped_npz_array
from tests.conftest import ROOT, TINY_CONFIG
from tests.fakes import write_prepared


def test_load_prepared_maps_the_images(tmp_path: Path) -> None:
    write_prepared(tmp_path / "data", n=40, n_normal_train=10, size=8)
    data = load_prepared(tmp_path / "data")
    assert isinstance(data.images, np.memmap)
    normals = data.images[data.select("train", 0)]
    assert normals.shape == (10, 8, 8, 3) and normals.any() and not data.images[10:].any()
    # copy-on-write: writable for torch.from_numpy, and a write never reaches the file
    data.images[0] = 255
    assert not (load_prepared(tmp_path / "data").images[0] == 255).all()


def test_mapped_arrays_equal_loaded_ones_in_every_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "c": rng.integers(0, 256, (5, 4, 3), dtype=np.uint8),
        "f": np.asfortranarray(rng.normal(size=(6, 7))),
        "s": np.array(["a", "bcd"]),
    }
    np.savez(tmp_path / "plain.npz", **arrays)
    np.savez_compressed(tmp_path / "small.npz", **arrays)
    for path in (tmp_path / "plain.npz", tmp_path / "small.npz"):
        for name, array in arrays.items():
            np.testing.assert_array_equal(mapped_npz_array(path, name), array)
    assert isinstance(mapped_npz_array(tmp_path / "plain.npz", "c"), np.memmap)


TRAIN = """
import sys
from pathlib import Path
import yaml
from dia.stages.runs import run_train
layers = yaml.safe_load(Path(sys.argv[2]).read_text())
run_train(data_dir=Path(sys.argv[1]), out_dir=Path(sys.argv[1]) / "run",
          state_dir=Path(sys.argv[1]) / "state", preset="dia_code", layers=layers, seed=0,
          device="cpu")
"""


def train_peak_mb(folder: Path) -> float:
    """Peak resident memory (MB) of CSI's training job on the prepared dataset in ``folder``
    (224 px, a small network, two steps), as its train_meta.json reports it."""
    tiny = yaml.safe_load(TINY_CONFIG.read_text())
    contrastive = {
        **tiny["contrastive"],
        "method": "csi",
        "arch": "resnet18_imagenet",
        "image_size": 224,
        "width": 8,
        "epochs": 1,
        "max_batches_per_epoch": 2,
        "batch_size": 8,
        "eval_every_epochs": 10,
    }
    (folder / "layers.yaml").write_text(yaml.safe_dump([{"contrastive": contrastive}]))
    result = subprocess.run(
        [sys.executable, "-c", TRAIN, str(folder), str(folder / "layers.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((folder / "run" / "train_meta.json").read_text())
    assert meta["n_train_images"] == 64
    return meta["peak_rss_mb"]


@pytest.mark.slow
def test_a_training_job_peaks_below_its_prepared_array(tmp_path: Path) -> None:
    """The same job on 64 normal training images among 100 and among 20,000 images (2.9 GB):
    the large array costs it almost nothing (it held all of it before), and the job peaks
    below the array's size. The job's own footprint (the package and torch imported, a small
    network at 224 px) is 1.2 to 1.5 GB depending on the build, hence the large array."""
    write_prepared(tmp_path / "small", n=100, n_normal_train=64, size=224)
    size_mb = write_prepared(tmp_path / "large", n=20_000, n_normal_train=64, size=224) / 2**20
    small, large = train_peak_mb(tmp_path / "small"), train_peak_mb(tmp_path / "large")
    (tmp_path / "large" / IMAGES).unlink()  # 2.9 GB that pytest would keep for a few runs
    assert large < size_mb, (large, size_mb)
    assert large - small < 0.1 * size_mb, (small, large, size_mb)
