from __future__ import annotations

import pytest
import torch

from dia.contrastive.augment import SimCLRAugment, hsv_to_rgb, random_hflip, rgb_to_hsv

NO_COLOUR = {"jitter_p": 0.0, "gray_p": 0.0}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 6, size: int = 8, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, 3, size, size, generator=gen(123))


def per_image_ratio(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Assert out == f_i * ref per image and return the factors f_i."""
    factor = (out * ref).flatten(1).sum(1) / ref.square().flatten(1).sum(1)
    torch.testing.assert_close(out, factor.view(-1, 1, 1, 1) * ref, rtol=0, atol=1e-5)
    return factor


def test_output_shape_and_range() -> None:
    x = images()
    for size in (8, 5):
        out = SimCLRAugment(image_size=size)(x, gen())
        assert out.shape == (6, 3, size, size)
        assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_views_other_seed_differs() -> None:
    x = images()
    aug = SimCLRAugment(image_size=8)
    torch.testing.assert_close(aug(x, gen(1)), aug(x, gen(1)), rtol=0, atol=0)
    assert not torch.allclose(aug(x, gen(1)), aug(x, gen(2)))


def test_no_jitter_no_gray_full_crop_is_identity() -> None:
    x = images()
    out = SimCLRAugment(image_size=8, crop_scale=(1.0, 1.0), **NO_COLOUR)(x, gen())
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_crop_without_valid_box_falls_back_to_full_image() -> None:
    x = images()
    aug = SimCLRAugment(image_size=8, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0), **NO_COLOUR)
    torch.testing.assert_close(aug(x, gen()), x, rtol=0, atol=1e-5)


def test_grayscale_uses_luma_weights() -> None:
    x = images()
    out = SimCLRAugment(image_size=8, crop_scale=(1.0, 1.0), jitter_p=0.0, gray_p=1.0)(x, gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(out[:, c], luma, rtol=0, atol=1e-5)


def test_hsv_known_values_and_round_trip() -> None:
    rgb = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [0, 0, 0], [1, 1, 0]])
    expected = torch.tensor(
        [[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [0, 0, 0.5], [0, 0, 0], [1 / 6, 1, 1]]
    )
    hsv = rgb_to_hsv(rgb.T.reshape(1, 3, 6, 1))
    torch.testing.assert_close(hsv.reshape(3, 6).T, expected)
    x = images(n=4, size=16)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, rtol=0, atol=1e-5)


def test_atan2_hue_agrees_at_30_degree_steps_only() -> None:
    """The official layer's circular hue equals the hexcone hue at multiples of 30 degrees and
    differs up to about 1.2 degrees between them; it then does not invert exactly."""
    on_grid = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 0.5, 0]]).T.reshape(1, 3, 4, 1)
    hexcone, circular = rgb_to_hsv(on_grid), rgb_to_hsv(on_grid, "atan2")
    torch.testing.assert_close(circular[:, 0], hexcone[:, 0])  # 0, 60, 180, 30 degrees
    off_grid = torch.tensor([[1.0, 0.25, 0.0]]).T.reshape(1, 3, 1, 1)  # 15 degrees (hexcone)
    gap = (rgb_to_hsv(off_grid, "atan2") - rgb_to_hsv(off_grid))[0, 0].abs().item() * 360
    assert 0.5 < gap < 1.3
    assert not torch.allclose(hsv_to_rgb(rgb_to_hsv(off_grid, "atan2")), off_grid, atol=1e-3)
    with pytest.raises(ValueError, match="hue_from"):
        rgb_to_hsv(off_grid, "hsl")


def test_neutral_jitter_is_identity() -> None:
    x = images()
    aug = SimCLRAugment(
        image_size=8, crop_scale=(1.0, 1.0), jitter=(0, 0, 0, 0), jitter_p=1.0, gray_p=0.0
    )
    torch.testing.assert_close(aug(x, gen()), x, rtol=0, atol=1e-5)


def test_contrast_scales_around_per_channel_mean() -> None:
    x = images(low=0.4, high=0.6)
    aug = SimCLRAugment(
        image_size=8, crop_scale=(1.0, 1.0), jitter=(0, 0.4, 0, 0), jitter_p=1.0, gray_p=0.0
    )
    mean = x.mean((2, 3), keepdim=True)
    factor = per_image_ratio(aug(x, gen()) - mean, x - mean)
    assert ((factor >= 0.6) & (factor <= 1.4)).all() and factor.std() > 0.01


def test_value_jitter_scales_each_image() -> None:
    x = images(low=0.1, high=0.6)
    aug = SimCLRAugment(
        image_size=8, crop_scale=(1.0, 1.0), jitter=(0.4, 0, 0, 0), jitter_p=1.0, gray_p=0.0
    )
    factor = per_image_ratio(aug(x, gen()), x)
    assert ((factor >= 0.6) & (factor <= 1.4)).all() and factor.std() > 0.01


def half_pixel_slice(x: torch.Tensor, top2: int, left2: int, box: int) -> torch.Tensor:
    """x[top:top+box, left:left+box] at a corner given in half pixels; a half-pixel corner
    samples midway between two pixels, the mean of the two neighbouring slices."""
    rows = {top2 // 2, (top2 + 1) // 2}
    cols = {left2 // 2, (left2 + 1) // 2}
    return torch.stack([x[:, r : r + box, c : c + box] for r in rows for c in cols]).mean(0)


@pytest.mark.parametrize(("size", "scale", "box"), [(8, 0.25, 4), (28, 0.54, 21)])
def test_fixed_area_crop_is_a_slice_at_half_pixel_steps(size: int, scale: float, box: int) -> None:
    # Output size == box size: the affine zoom reproduces a slice of the image whose corner lies
    # on a half-pixel grid, the official layer's law.
    x = images(n=16, size=size)
    aug = SimCLRAugment(image_size=box, crop_scale=(scale, scale), crop_ratio=(1, 1), **NO_COLOUR)
    out = aug(x, gen())
    positions = 2 * (size - box) + 1
    offsets = set()
    for i in range(len(x)):
        matches = [
            (top2, left2)
            for top2 in range(positions)
            for left2 in range(positions)
            if torch.allclose(out[i], half_pixel_slice(x[i], top2, left2, box), atol=1e-5)
        ]
        assert len(matches) == 1, f"image {i}: {matches}"
        offsets.add(matches[0])
    assert {t % 2 for t, _ in offsets} == {0, 1} and {c % 2 for _, c in offsets} == {0, 1}


def test_random_hflip_flips_about_half_exactly() -> None:
    x = torch.rand(400, 3, 2, 3, generator=gen(5))
    out = random_hflip(x, gen(7))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()
    assert 0.4 < flipped.float().mean() < 0.6
    torch.testing.assert_close(random_hflip(x, gen(7)), out, rtol=0, atol=0)
