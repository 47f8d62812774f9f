"""Batched SimCLR augmentation and random horizontal flip, run on the training device.

The views are augmented on the device, each image with its own random draws. Every draw comes
from an explicit ``torch.Generator``, so the training and evaluation RNG streams stay apart (the
official evaluation reseeds the global RNGs, which leaks into training; here it cannot) and CPU
runs are reproducible. Draws are made on the generator's device and then moved to the data's
device. Images are float tensors (N, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LUMA = (0.299, 0.587, 0.114)
_CROP_TRIALS = 10


def _rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _spread(u: Tensor, low: float, high: float) -> Tensor:
    return low + (high - low) * u


def _per_image(mask: Tensor) -> Tensor:
    return mask[:, None, None, None]


def random_hflip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image horizontally with probability 1/2, independently."""
    flip = _rand((x.shape[0],), generator, x.device) < 0.5
    return torch.where(_per_image(flip), x.flip(-1), x)


def rgb_to_hsv(x: Tensor, hue_from: str = "hexcone") -> Tensor:
    """RGB -> HSV, all channels in [0, 1]; hue is a fraction of the full circle.

    ``hexcone`` is the usual piecewise-linear hue (torchvision, PIL); ``atan2`` is the circular
    hue atan2(sqrt(3) (g - b), 2r - g - b) of the official colour-jitter layer, which agrees at
    multiples of 30 degrees and differs by up to about 1.2 degrees between them. Only the hexcone
    hue inverts exactly with :func:`hsv_to_rgb`; the official layer converts back with it all the
    same.
    """
    r, g, b = x.unbind(1)
    v, argmax = x.max(1)
    chroma = v - x.min(1).values
    if hue_from == "atan2":
        hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) % (2 * math.pi) / (2 * math.pi)
    elif hue_from == "hexcone":
        safe_chroma = torch.where(chroma > 0, chroma, 1.0)
        hue_r = ((g - b) / safe_chroma) % 6
        hue_g = (b - r) / safe_chroma + 2
        hue_b = (r - g) / safe_chroma + 4
        hue = torch.where(argmax == 0, hue_r, torch.where(argmax == 1, hue_g, hue_b)) / 6
    else:
        raise ValueError(f"hue_from must be 'hexcone' or 'atan2', got {hue_from!r}")
    hue = torch.where(chroma > 0, hue, 0.0)
    sat = torch.where(v > 0, chroma / torch.where(v > 0, v, 1.0), 0.0)
    return torch.stack((hue, sat, v), 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    hue, sat, v = (c.unsqueeze(1) for c in hsv.unbind(1))
    offsets = torch.tensor((5.0, 3.0, 1.0), dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = (offsets + 6 * hue) % 6
    return v * (1 - sat * torch.minimum(k, 4 - k).clamp(0, 1))


def _adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def _adjust_hsv(
    x: Tensor, hue_shift: Tensor, sat_factor: Tensor, val_factor: Tensor, hue_from: str
) -> Tensor:
    hue, sat, val = rgb_to_hsv(x, hue_from).unbind(1)
    hue = (hue + hue_shift) % 1
    sat = (sat * sat_factor).clamp(0, 1)
    val = (val * val_factor).clamp(0, 1)
    return hsv_to_rgb(torch.stack((hue, sat, val), 1)).clamp(0, 1)


class SimCLRAugment(nn.Module):
    """Colour jitter, random grayscale and random resized crop, in this order.

    ``jitter`` is (brightness/value, contrast, saturation, hue); the hue shift is drawn from
    U(-hue, hue) as a fraction of the full hue circle (the official layer scales it by 255/360:
    pass ``hue * 255 / 360`` to reproduce that), in the hue of ``hue_from`` (see
    :func:`rgb_to_hsv`; the official layer uses ``atan2``). As in the official layer, one coin
    flip per call decides whether contrast or the HSV step comes first, for the whole batch. The
    crop keeps a box of area fraction ~ U(crop_scale) and log-uniform aspect ratio in
    ``crop_ratio`` (first valid box of 10 trials, else the full image), its corner uniform over
    half-pixel steps as the official layer draws it (torchvision: whole pixels, which spreads the
    centres a little wider), zoomed by bilinear ``grid_sample`` straight to ``image_size`` x
    ``image_size``. A fixed area such as (0.54, 0.54) gives the evaluation-time crop.
    """

    def __init__(
        self,
        *,
        image_size: int,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        hue_from: str = "hexcone",
    ) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale}")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {crop_ratio}")
        if not (all(0 <= j <= 1 for j in jitter[:3]) and 0 <= jitter[3] <= 0.5):
            raise ValueError(f"jitter factors must lie in [0, 1] and hue in [0, 0.5], got {jitter}")
        if not (0 <= jitter_p <= 1 and 0 <= gray_p <= 1):
            raise ValueError(f"probabilities must lie in [0, 1], got {jitter_p}, {gray_p}")
        self.image_size = image_size
        self.crop_scale = crop_scale
        self.crop_ratio = crop_ratio
        self.jitter = jitter
        self.jitter_p = jitter_p
        self.gray_p = gray_p
        self.hue_from = hue_from

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        x = self._color_jitter(x, generator)
        x = self._grayscale(x, generator)
        return self._resized_crop(x, generator)

    def _color_jitter(self, x: Tensor, generator: torch.Generator) -> Tensor:
        brightness, contrast, saturation, hue = self.jitter
        u = _rand((x.shape[0], 5, 1, 1), generator, x.device).unbind(1)
        apply = u[0] < self.jitter_p
        contrast_factor = _spread(u[1], 1 - contrast, 1 + contrast).unsqueeze(1)
        hue_shift = _spread(u[2], -hue, hue)
        sat_factor = _spread(u[3], 1 - saturation, 1 + saturation)
        val_factor = _spread(u[4], 1 - brightness, 1 + brightness)
        contrast_first = bool(_rand((1,), generator, torch.device("cpu")) < 0.5)
        out = x
        if contrast_first:
            out = _adjust_contrast(out, contrast_factor)
        out = _adjust_hsv(out, hue_shift, sat_factor, val_factor, self.hue_from)
        if not contrast_first:
            out = _adjust_contrast(out, contrast_factor)
        return torch.where(apply.unsqueeze(1), out, x)

    def _grayscale(self, x: Tensor, generator: torch.Generator) -> Tensor:
        apply = _rand((x.shape[0],), generator, x.device) < self.gray_p
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        luma = (x * weights).sum(1, keepdim=True).expand_as(x)
        return torch.where(_per_image(apply), luma, x)

    def _crop_boxes(
        self, n: int, height: int, width: int, generator: torch.Generator, device: torch.device
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Box (top, left, box_h, box_w) in pixels per image: whole-pixel sides as torchvision
        draws them, the corner in half-pixel steps (2 (side - box) + 1 positions per axis)."""
        u = _rand((n, _CROP_TRIALS, 4), generator, device).unbind(-1)
        area = height * width * _spread(u[0], *self.crop_scale)
        log_ratio = _spread(u[1], math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        box_w = torch.sqrt(area * torch.exp(log_ratio)).round()
        box_h = torch.sqrt(area * torch.exp(-log_ratio)).round()
        valid = (box_w >= 1) & (box_w <= width) & (box_h >= 1) & (box_h <= height)
        top = torch.floor(u[2] * (2 * (height - box_h) + 1)) / 2
        left = torch.floor(u[3] * (2 * (width - box_w) + 1)) / 2
        first = valid.int().argmax(1, keepdim=True)
        found = valid.any(1)

        def pick(trials: Tensor, fallback: float) -> Tensor:
            return torch.where(found, trials.gather(1, first).squeeze(1), fallback)

        return pick(top, 0.0), pick(left, 0.0), pick(box_h, height), pick(box_w, width)

    def _resized_crop(self, x: Tensor, generator: torch.Generator) -> Tensor:
        n, channels, height, width = x.shape
        top, left, box_h, box_w = self._crop_boxes(n, height, width, generator, x.device)
        # Affine map from output to input coordinates in [-1, 1] (align_corners=False: pixel edges).
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = box_w / width
        theta[:, 0, 2] = (2 * left + box_w) / width - 1
        theta[:, 1, 1] = box_h / height
        theta[:, 1, 2] = (2 * top + box_h) / height - 1
        size = (n, channels, self.image_size, self.image_size)
        grid = F.affine_grid(theta, list(size), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )
