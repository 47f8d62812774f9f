"""Blur stand-ins for dissolving: the official README's ablation.

They answer the question the ablation asks: does DIA need a diffusion model, or would any
low-pass filter that removes fine detail do? ``gaussian`` is the separable kernel the official code
takes from OpenCV's ``getGaussianKernel(k, 0)``: OpenCV's fixed tables up to k = 7 (at 7 that is
[1, 3.5, 7, 9, 7, 3.5, 1] / 32, close to sigma 1.4), a Gaussian with its sigma rule above
(OpenCV 4 rounds those taps slightly differently; the official k is 7). ``median`` is a k x k
median. Both zero-pad like the official conv and kornia's MedianBlur, at the input resolution.
``none`` is the identity (the official ``blurnone``), which isolates the third branch itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dia.errors import DiaError

_MEDIAN_CHUNK = 8
# OpenCV's getGaussianKernel(k, sigma <= 0) returns these fixed taps for k <= 7.
_OPENCV_SMALL = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def opencv_sigma(size: int) -> float:
    """The sigma OpenCV derives from the kernel size when it is given as 0."""
    return 0.3 * ((size - 1) * 0.5 - 1) + 0.8


def gaussian_kernel(size: int) -> torch.Tensor:
    """OpenCV's 1-D taps of odd length ``size`` for ``getGaussianKernel(size, 0)``."""
    if size in _OPENCV_SMALL:
        return torch.tensor(_OPENCV_SMALL[size])
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * opencv_sigma(size) ** 2))
    return (taps / taps.sum()).float()


def gaussian_blur(x: torch.Tensor, size: int) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, each channel alone, zero padding."""
    channels = x.shape[1]
    taps = gaussian_kernel(size).to(x)
    rows = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)
    cols = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
    pad = size // 2
    x = F.conv2d(x, rows, padding=(0, pad), groups=channels)
    return F.conv2d(x, cols, padding=(pad, 0), groups=channels)


def median_blur(x: torch.Tensor, size: int) -> torch.Tensor:
    """k x k median of (N, C, H, W) images with zero padding, a few images at a time.

    The window tensor holds k^2 values per pixel; chunking keeps a 224 px batch near 250 MB.
    """
    pad = size // 2
    out = []
    for chunk in x.split(_MEDIAN_CHUNK):
        windows = F.pad(chunk, (pad, pad, pad, pad)).unfold(2, size, 1).unfold(3, size, 1)
        out.append(windows.reshape(*chunk.shape, size * size).median(dim=-1).values)
    return torch.cat(out)


class BlurDissolve:
    """A :data:`~dia.contrastive.views.DissolveFn` that blurs instead of dissolving."""

    def __init__(self, kind: str, size: int) -> None:
        if kind not in ("gaussian", "median", "none"):
            raise ValueError(f"unknown blur kind {kind!r}")
        if size < 1 or size % 2 == 0:
            raise DiaError(
                f"config dissolve.blur_kernel: must be a positive odd number, got {size}"
            )
        self.kind, self.size = kind, size

    def __call__(self, index: torch.Tensor, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self.kind == "gaussian":
            return gaussian_blur(x, self.size)
        if self.kind == "median":
            return median_blur(x, self.size)
        return x
