"""Decode image files once, into one uint8 array per dataset and resolution.

Every file is converted to RGB (what torchvision's default loader and the official DIA code do, so
grayscale CT and OCT scans become three equal channels) and resized as a
:class:`~dia.data.views.View` says: for the prepared array ``size`` x ``size`` with PIL's bilinear
filter, as ``torchvision.transforms.Resize((size, size))`` does on PIL images.
Its identity is the sha256 of its decoded RGB pixels at native resolution, which survives lossless
re-encoding of the archive. A dataset whose images all have equal channels is stored with one
channel; :func:`dia.data.prepare.to_float_tensor` replicates it to three.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from dia.errors import DiaError
from dia.io import bytes_digest
from dia.progress import progress

if TYPE_CHECKING:
    from dia.data.views import View

_CHUNK = 32


def pixel_sha256(pixels: np.ndarray) -> str:
    """sha256 of an image's decoded pixels and shape: equal for losslessly re-encoded files."""
    header = "x".join(map(str, pixels.shape)).encode() + b":"
    return bytes_digest(header + np.ascontiguousarray(pixels).tobytes())


_WIDE_MODES = frozenset({"I", "F"})  # Pillow's 32-bit integer and float modes; "I;16*" too


def decode_image(path: Path, view: View | None) -> tuple[np.ndarray, str]:
    """(RGB uint8 image resized to ``view`` (native when None), sha256 of the native pixels)."""
    try:
        with Image.open(path) as img:
            if img.mode in _WIDE_MODES or img.mode.startswith("I;"):
                raise DiaError(
                    f"{path} has pixel mode {img.mode} (more than 8 bits per pixel), which "
                    f"would be clipped to 8 bits; convert it to 8-bit grayscale or RGB first"
                )
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DiaError(
            f"cannot decode image {path} ({exc}); replace it with an intact copy (for an official "
            f"dataset: delete the extracted folder and re-run the download)"
        ) from exc
    digest = pixel_sha256(np.asarray(rgb))
    if view is not None:
        rgb = view.apply(rgb)
    return np.asarray(rgb, dtype=np.uint8), digest


def _decode_chunk(args: tuple[list[Path], View | None]) -> list[tuple[np.ndarray, str]]:
    paths, view = args
    out = []
    for path in paths:
        image, digest = decode_image(path, view)
        gray = bool((image == image[..., :1]).all())
        out.append((image[..., :1].copy() if gray else image, digest))
    return out


def exit_with_parent() -> None:
    """Pool worker initializer: the worker exits once the process that started it is gone.

    A job killed with SIGKILL cannot shut its pool down, and its idle workers would otherwise wait
    for work forever, each holding its memory.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def decode_images(
    root: Path,
    paths: Sequence[str],
    view: View | None,
    *,
    workers: int = 1,
) -> tuple[np.ndarray, list[str]]:
    """Decode ``root / path`` for every path into (N, H, W, C) uint8 and pixel hashes, each image
    resized to ``view`` (:mod:`dia.data.views`; None keeps the native size).

    ``C`` is 1 when every image has three equal channels, else 3. ``workers`` > 1 decodes in a
    process pool (large archives such as Kermany's 84,000 OCT scans).
    """
    files = [Path(root) / p for p in paths]
    chunks = [(files[i : i + _CHUNK], view) for i in range(0, len(files), _CHUNK)]
    decoded = []
    with progress(len(files), "decode") as bar, contextlib.ExitStack() as stack:
        mapper = map
        if workers > 1 and len(chunks) > 1:
            pool = ProcessPoolExecutor(
                max_workers=min(workers, os.cpu_count() or 1), initializer=exit_with_parent
            )
            mapper = stack.enter_context(pool).map
        for chunk in mapper(_decode_chunk, chunks):
            decoded.extend(chunk)
            bar.update(len(chunk))
    if not decoded:
        raise DiaError(f"no images to decode under {root}")
    shapes = {image.shape[:2] for image, _ in decoded}
    if len(shapes) > 1:
        raise DiaError(
            f"images under {root} have different sizes {sorted(shapes)[:3]}...; set the "
            f"dataset's image_size option so they are resized to one size"
        )
    channels = max(image.shape[-1] for image, _ in decoded)
    images = np.empty((len(decoded), *shapes.pop(), channels), dtype=np.uint8)
    for i, (image, _) in enumerate(decoded):
        images[i] = image  # a one-channel image broadcasts to three equal channels
    return images, [digest for _, digest in decoded]
