"""Blur stand-ins for dissolving (the official README's ablation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dia.contrastive.blur import BlurDissolve, gaussian_blur, gaussian_kernel, median_blur
from dia.contrastive.views import make_views
from dia.errors import DiaError

RNG = torch.Generator().manual_seed(0)


def test_gaussian_taps_are_opencvs() -> None:
    """cv2.getGaussianKernel(7, 0) as OpenCV 4.6 returns it, and a 9-tap kernel summing to 1."""
    expected = [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]
    assert gaussian_kernel(7).tolist() == expected
    taps = gaussian_kernel(9)
    assert taps.sum().item() == pytest.approx(1.0) and torch.equal(taps, taps.flip(0))


def test_gaussian_blur_matches_opencv_zero_border() -> None:
    """Impulses at the centre and in a corner of a 9 x 9 image; first row from cv2.sepFilter2D
    with BORDER_CONSTANT (computed once with OpenCV 4)."""
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = x[0, 0, 0, 0] = 1.0
    row = gaussian_blur(x, 7)[0, 0, 0, :4]
    assert torch.allclose(row, torch.tensor([0.07910156, 0.06152344, 0.03076172, 0.00878906]))
    taps = gaussian_kernel(7)
    assert torch.allclose(gaussian_blur(x, 7)[0, 0, 4, 4], taps[3] ** 2)


def _median_direct(image: np.ndarray, size: int) -> np.ndarray:
    pad = size // 2
    padded = np.pad(image, pad)
    out = np.empty_like(image)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = np.median(padded[i : i + size, j : j + size])
    return out


def test_median_blur_against_a_direct_computation() -> None:
    x = torch.rand(11, 2, 10, 12, generator=RNG)
    out = median_blur(x, 3)
    for n in (0, 10):
        for c in range(2):
            assert np.allclose(out[n, c].numpy(), _median_direct(x[n, c].numpy(), 3))


def test_median_removes_salt_noise_and_keeps_a_flat_interior() -> None:
    x = torch.full((1, 3, 16, 16), 0.5)
    x[0, :, 8, 8] = 1.0
    out = median_blur(x, 7)
    assert torch.equal(out[..., 3:13, 3:13], torch.full((1, 3, 10, 10), 0.5))
    assert torch.allclose(gaussian_blur(x * 0 + 0.5, 7)[..., 3:13, 3:13], torch.tensor(0.5))


def test_blur_dissolve_kinds() -> None:
    x = torch.rand(2, 3, 8, 8, generator=RNG)
    index = torch.arange(2)
    assert torch.equal(BlurDissolve("none", 7)(index, x, RNG), x)
    assert torch.equal(BlurDissolve("median", 3)(index, x, RNG), median_blur(x, 3))
    assert torch.equal(BlurDissolve("gaussian", 7)(index, x, RNG), gaussian_blur(x, 7))
    with pytest.raises(DiaError, match="blur_kernel"):
        BlurDissolve("gaussian", 4)


@pytest.mark.parametrize("dissolve_all", [False, True])
def test_dissolve_all_blurs_every_branch_once(dissolve_all: bool) -> None:
    """Official blur ablations blur O, O' and A; otherwise only A is dissolved."""
    x = torch.rand(4, 3, 8, 8, generator=RNG)
    calls = []

    def grey(index: torch.Tensor, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        calls.append(len(images))
        return torch.full_like(images, 0.5)

    views, labels = make_views(
        x,
        torch.arange(4),
        shift="rotation",
        dissolve=grey,
        rng=torch.Generator().manual_seed(1),
        aug_rng=torch.Generator().manual_seed(2),
        dissolve_all=dissolve_all,
    )
    n = len(x) * 4
    assert views.shape == (3 * n, 3, 8, 8) and labels.shape == (3 * n,)
    assert torch.equal(views[2 * n :], torch.full_like(views[2 * n :], 0.5))
    assert torch.equal(views[:n], torch.full_like(views[:n], 0.5)) == dissolve_all
    assert calls == ([4] if dissolve_all else [4] * 4)
