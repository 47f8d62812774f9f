"""The embedded ``phantom`` dataset: synthetic tissue where the anomaly is one small lesion.

It needs no download or account, so the whole pipeline runs on a fresh machine, and it is
fine-grained by construction: a normal and an anomalous image differ only in a disc a few pixels
wide, whose mean brightness and fine speckled texture set it apart from smooth tissue. The
speckle is the high-frequency detail that dissolving removes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dia.errors import DiaError
from dia.io import atomic_path

_BACKGROUND = 0.06
_TISSUE_MEAN = 0.55
_TISSUE_STD = 0.03
_NOISE_STD = 0.015
_EDGE = 0.04  # organ boundary softness, in normalised coordinates
_CAVITY_DEPTH = 0.6  # relative darkening at the cavity's centre
_SHADING = 0.2  # relative brightening from the organ's centre to its bottom edge


def render_phantom(
    rng: np.random.Generator,
    size: int = 28,
    *,
    lesion: bool = False,
    lesion_radius: float = 4.0,
    lesion_contrast: float = 0.4,
    lesion_texture: float = 0.6,
) -> np.ndarray:
    """Render one ``(size, size)`` uint8 image from ``rng``.

    All tissue and noise draws come before the lesion draws, so two generators in the same state
    give the same image with and without its lesion (what the tests compare).
    ``lesion_radius`` is in pixels; ``lesion_contrast`` (brightness offset) and
    ``lesion_texture`` (amplitude of a per-pixel +-1 speckle) are fractions of the tissue's 2-98
    percentile intensity range.
    """
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size * 2.0 - 1.0
    organ, inside = _organ(rng, xx, yy)
    tissue = _TISSUE_MEAN + _TISSUE_STD * _texture(rng, xx, yy)
    image = _BACKGROUND + organ * (tissue - _BACKGROUND)
    image *= 1.0 - 0.25 * (xx**2 + yy**2) / 2.0
    image += rng.normal(0.0, _NOISE_STD, image.shape)
    if lesion:
        lo, hi = np.percentile(image[inside], [2, 98])
        disc = _lesion(rng, inside, size, lesion_radius)
        speckle = rng.choice((-1.0, 1.0), image.shape)
        image += (hi - lo) * disc * (lesion_contrast + lesion_texture * speckle)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _organ(
    rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A soft organ mask with an anatomy, and the pixels safely inside it (where lesions may sit).

    The organ is a near-upright ellipse, taller than wide, with a dark cavity in its upper left
    and brighter tissue towards the bottom, so that a 90-degree rotation is as visible as it is in
    a chest X-ray: CSI and DIA learn by telling rotated images apart.
    """
    cx, cy = rng.uniform(-0.04, 0.04, 2)
    a, b = rng.uniform(0.6, 0.66), rng.uniform(0.84, 0.9)
    theta = rng.uniform(-0.05, 0.05)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    dist = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    organ = 1.0 / (1.0 + np.exp((dist - 1.0) / _EDGE))
    cu, cv, r = rng.uniform(-0.45, -0.3), rng.uniform(-0.5, -0.35), rng.uniform(0.18, 0.25)
    cavity = np.exp(-((u / a - cu) ** 2 + (v / b - cv) ** 2) / (2.0 * r**2))
    shading = (1.0 - _CAVITY_DEPTH * cavity) * (1.0 + _SHADING * v / b)
    return organ * shading, (dist < 0.6) & (cavity < 0.3)


def _texture(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Smooth random texture (Gaussian blobs + low-frequency waves), zero mean and unit std."""
    n_blobs = rng.integers(6, 12)
    centres = rng.uniform(-1.0, 1.0, (n_blobs, 2))
    sigmas = rng.uniform(0.12, 0.4, n_blobs)
    amps = rng.uniform(-1.0, 1.0, n_blobs)
    tex = np.zeros_like(xx)
    for (bx, by), sigma, amp in zip(centres, sigmas, amps, strict=True):
        tex += amp * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2.0 * sigma**2))
    for _ in range(2):
        freq = rng.uniform(1.0, 3.0) * np.pi
        angle = rng.uniform(0.0, 2.0 * np.pi)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        tex += rng.uniform(0.1, 0.3) * np.sin(
            freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase
        )
    tex -= tex.mean()
    return tex / (tex.std() + 1e-8)


def _lesion(rng: np.random.Generator, inside: np.ndarray, size: int, radius: float) -> np.ndarray:
    """A soft disc of height 1 and ``radius`` pixels at a random pixel inside the organ."""
    rows, cols = np.nonzero(inside)
    k = rng.integers(len(rows))
    cy, cx = rows[k] + rng.uniform(-0.5, 0.5), cols[k] + rng.uniform(-0.5, 0.5)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.where(r < radius + 2.0, 1.0 / (1.0 + np.exp((r - radius) / 0.5)), 0.0)


def make_phantom(
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    size: int = 28,
    anomaly_fraction: float = 0.5,
    lesion_radius: float = 4.0,
    lesion_contrast: float = 0.4,
    lesion_texture: float = 0.6,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Generate ``{split: (images uint8 (N,H,W), labels int64 (N,))}``; label 1 = lesion.

    Train holds normals only; val and test hold ``round(n * anomaly_fraction)`` anomalies. Each
    split and image has its own seed stream, so changing one split's size leaves the others alone.
    """
    _validate(
        n_train,
        n_val,
        n_test,
        size,
        anomaly_fraction,
        lesion_radius,
        lesion_contrast,
        lesion_texture,
    )
    counts = {"train": n_train, "val": n_val, "test": n_test}
    streams = np.random.SeedSequence(seed).spawn(len(counts))
    out = {}
    for (split, n), stream in zip(counts.items(), streams, strict=True):
        label_seed, *image_seeds = stream.spawn(n + 1)
        n_anomalies = 0 if split == "train" else round(n * anomaly_fraction)
        labels = np.zeros(n, dtype=np.int64)
        labels[:n_anomalies] = 1
        np.random.default_rng(label_seed).shuffle(labels)
        images = np.empty((n, size, size), dtype=np.uint8)
        for i, (image_seed, label) in enumerate(zip(image_seeds, labels, strict=True)):
            images[i] = render_phantom(
                np.random.default_rng(image_seed),
                size,
                lesion=bool(label),
                lesion_radius=lesion_radius,
                lesion_contrast=lesion_contrast,
                lesion_texture=lesion_texture,
            )
        out[split] = (images, labels)
    return out


def _validate(
    n_train: int,
    n_val: int,
    n_test: int,
    size: int,
    anomaly_fraction: float,
    lesion_radius: float,
    lesion_contrast: float,
    lesion_texture: float,
) -> None:
    problems = [
        (min(n_train, n_val, n_test) < 0, "n_train/n_val/n_test must be >= 0"),
        (size < 8, f"size must be >= 8, got {size}"),
        (not 0.0 <= anomaly_fraction <= 1.0, "anomaly_fraction must be in [0, 1]"),
        (not 0.0 < lesion_radius <= size / 4, f"lesion_radius must be in (0, {size / 4}]"),
        (not 0.0 <= lesion_contrast <= 1.0, "lesion_contrast must be in [0, 1]"),
        (not 0.0 <= lesion_texture <= 1.0, "lesion_texture must be in [0, 1]"),
        (lesion_contrast + lesion_texture == 0.0, "lesion_contrast + lesion_texture must be > 0"),
    ]
    for bad, message in problems:
        if bad:
            raise DiaError(f"phantom dataset: {message}; fix datasets.phantom in the config")


def write_phantom_npz(dest: Path, **kwargs: float) -> Path:
    """Write :func:`make_phantom` output in MedMNIST's npz layout, so one loader reads both."""
    arrays = {}
    for split, (images, labels) in make_phantom(**kwargs).items():
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(dest)
