"""Decoding image files into one array: channels, resizing, hashing, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dia.data.images import decode_images, pixel_sha256
from dia.data.views import View
from dia.errors import DiaError


def _save(path, array):
    Image.fromarray(array).save(path)
    return path.name


def test_grayscale_files_become_one_channel_and_rgb_stays_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    names = [
        _save(tmp_path / "a (1).png", gray),
        _save(tmp_path / "b.png", np.stack([gray] * 3, -1)),
    ]
    images, digests = decode_images(tmp_path, names, None)
    assert images.shape == (2, 20, 30, 1)
    assert np.array_equal(images[0, ..., 0], gray)
    assert digests[0] == digests[1]  # same pixels once converted to RGB, whatever the encoding
    names.append(_save(tmp_path / "c.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)))
    images, _ = decode_images(tmp_path, names, None)
    assert images.shape == (3, 20, 30, 3)
    assert np.array_equal(images[0, ..., 1], gray)


def test_resize_matches_pil_bilinear_and_hash_is_of_native_pixels(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    name = _save(tmp_path / "x.png", array)
    images, digests = decode_images(tmp_path, [name], View("square", 16))
    expected = np.asarray(Image.fromarray(array).resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(images[0], expected)
    assert digests[0] == pixel_sha256(array)


def test_process_pool_gives_the_same_result(tmp_path):
    rng = np.random.default_rng(2)
    names = [
        _save(tmp_path / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        for i in range(70)
    ]
    serial = decode_images(tmp_path, names, None)
    pooled = decode_images(tmp_path, names, None, workers=2)
    assert np.array_equal(serial[0], pooled[0]) and serial[1] == pooled[1]


def test_corrupt_image_is_named(tmp_path):
    good = _save(tmp_path / "good.png", np.zeros((8, 8), np.uint8))
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "Covid (7).png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DiaError, match=r"cannot decode image .*Covid \(7\)\.png"):
        decode_images(tmp_path, [good, "Covid (7).png"], None)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DiaError, match=r"text\.png"):
        decode_images(tmp_path, ["text.png"], View("square", 8))


def test_mixed_sizes_need_image_size(tmp_path):
    names = [_save(tmp_path / "a.png", np.zeros((8, 8), np.uint8))]
    names.append(_save(tmp_path / "b.png", np.zeros((9, 8), np.uint8)))
    with pytest.raises(DiaError, match="image_size"):
        decode_images(tmp_path, names, None)
    assert decode_images(tmp_path, names, View("square", 8))[0].shape == (2, 8, 8, 1)
