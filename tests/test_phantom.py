"""The phantom dataset: deterministic, balanced, oriented, its lesion small and local."""

from __future__ import annotations

import numpy as np
import pytest

from dia.data.medmnist import load_npz_splits
from dia.data.phantom import make_phantom, render_phantom, write_phantom_npz
from dia.errors import DiaError

SMALL = {"n_train": 12, "n_val": 10, "n_test": 7}


def test_deterministic_per_seed():
    a, b = make_phantom(**SMALL, seed=3), make_phantom(**SMALL, seed=3)
    c = make_phantom(**SMALL, seed=4)
    for split in a:
        assert np.array_equal(a[split][0], b[split][0])
        assert np.array_equal(a[split][1], b[split][1])
        assert not np.array_equal(a[split][0], c[split][0])


def test_splits_independent_of_other_split_sizes():
    a = make_phantom(**SMALL)
    b = make_phantom(**{**SMALL, "n_train": 30})
    assert np.array_equal(a["test"][0], b["test"][0])
    assert np.array_equal(a["train"][0], b["train"][0][:12])


def test_shapes_dtypes_and_variety():
    data = make_phantom(**SMALL, size=32)
    for split, n in (("train", 12), ("val", 10), ("test", 7)):
        images, labels = data[split]
        assert images.shape == (n, 32, 32) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
    train = data["train"][0].astype(float)
    assert np.abs(train[0] - train[1]).mean() > 5  # images genuinely vary
    assert train.std() > 20  # and use the intensity range


def test_class_balance():
    data = make_phantom(n_train=8, n_val=20, n_test=9, anomaly_fraction=0.25)
    assert data["train"][1].sum() == 0
    assert data["val"][1].sum() == 5
    assert data["test"][1].sum() == 2
    assert set(data["val"][1]) == {0, 1}
    assert not np.array_equal(data["val"][1], np.sort(data["val"][1]))  # shuffled, not sorted


def test_anomalies_are_lesioned_normals():
    """The anomalous images in a split are exactly their normal twins plus a lesion."""
    data = make_phantom(n_train=0, n_val=6, n_test=0, seed=1)
    images, labels = data["val"]
    seeds = np.random.SeedSequence(1).spawn(3)[1].spawn(7)[1:]
    for image, label, seed in zip(images, labels, seeds, strict=True):
        twin = render_phantom(np.random.default_rng(seed), lesion=bool(label))
        assert np.array_equal(image, twin)


@pytest.mark.parametrize("seed", range(10))
def test_lesion_is_small_local_and_textured(seed):
    radius = 4.0
    normal = render_phantom(np.random.default_rng(seed), lesion_radius=radius).astype(float)
    lesioned = render_phantom(np.random.default_rng(seed), lesion=True, lesion_radius=radius)
    diff = lesioned.astype(float) - normal
    rows, cols = np.nonzero(diff)
    centre = rows.mean(), cols.mean()
    assert np.hypot(rows - centre[0], cols - centre[1]).max() <= radius + 3  # local
    assert len(rows) <= 0.15 * normal.size  # small: a few percent of the image
    core = np.hypot(*np.mgrid[0:28, 0:28] - np.array(centre)[:, None, None]) <= radius - 1
    assert diff[core].mean() > 5  # brighter on average
    assert diff[core].std() > 10  # and speckled: its pixels alternate around that mean


def test_no_texture_no_speckle():
    rng = np.random.default_rng
    normal = render_phantom(rng(0)).astype(float)
    smooth = render_phantom(rng(0), lesion=True, lesion_contrast=0.4, lesion_texture=0.0)
    diff = smooth.astype(float) - normal
    assert diff.min() >= -1 and diff.max() > 5  # a brightening, no dark speckle


def test_rotation_changes_the_distribution():
    """CSI and DIA learn by telling rotated images apart: the anatomy must have an up."""
    images = make_phantom(n_train=64, n_val=2, n_test=2)["train"][0].astype(float)
    top, bottom = images[:, 4:12, 8:20].mean(), images[:, 16:24, 8:20].mean()
    left, right = images[:, 6:12, 6:14].mean(), images[:, 6:12, 14:22].mean()
    assert bottom - top > 5  # brighter towards the bottom
    assert right - left > 5  # the cavity darkens the upper left


def test_write_npz_has_medmnist_layout(tmp_path):
    dest = write_phantom_npz(tmp_path / "phantom.npz", **SMALL, seed=2)
    with np.load(dest) as npz:
        assert sorted(npz.files) == sorted(
            f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")
        )
        assert npz["val_labels"].shape == (10, 1) and npz["val_labels"].dtype == np.uint8
    loaded, made = load_npz_splits(dest), make_phantom(**SMALL, seed=2)
    for split in made:
        assert np.array_equal(loaded[split][0], made[split][0])
        assert np.array_equal(loaded[split][1], made[split][1])
    assert [p.name for p in tmp_path.iterdir()] == ["phantom.npz"]


@pytest.mark.parametrize(
    "override",
    [
        {"n_val": -1},
        {"anomaly_fraction": 1.5},
        {"lesion_contrast": 0.0, "lesion_texture": 0.0},
        {"lesion_texture": 1.5},
        {"lesion_radius": 20},
    ],
)
def test_invalid_parameters(override):
    with pytest.raises(DiaError, match=r"datasets\.phantom"):
        make_phantom(**{**SMALL, **override})
