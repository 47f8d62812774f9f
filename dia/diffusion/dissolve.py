"""The dissolving transformation D(x, t) = x0_hat (paper Eq. 4).

One reverse step from the *clean* image: the diffusion model reads x as if it were x_t and its
single-step estimate of x_0 is returned, with no noise added. Fine details the model regards as
noise dissolve while the coarse anatomy stays. Images travel to the model's resolution and back
(``fit``): ``resize`` (bilinear, no antialiasing, as the official code) for high-resolution data,
``pad_crop`` (28 -> 32 zero padding, then a centre crop) for MedMNIST.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from denoising_diffusion_pytorch import GaussianDiffusion

from dia.config import DissolveConfig
from dia.precision import autocast


def fit_to(x: torch.Tensor, resolution: int, fit: str) -> torch.Tensor:
    """Bring (N, C, H, W) images to the diffusion model's ``resolution``."""
    size = x.shape[-1]
    if size == resolution:
        return x
    if fit == "pad_crop":
        total = resolution - size
        if total < 0:
            raise ValueError(f"pad_crop needs images no larger than {resolution}, got {size}")
        lo = total // 2
        return F.pad(x, (lo, total - lo, lo, total - lo))
    return F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False
    )


def fit_back(y: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """Inverse of :func:`fit_to`: crop or resize back to ``size``."""
    resolution = y.shape[-1]
    if resolution == size:
        return y
    if fit == "pad_crop":
        lo = (resolution - size) // 2
        return y[..., lo : lo + size, lo : lo + size]
    return F.interpolate(
        y, size=(size, size), mode="bilinear", align_corners=False, antialias=False
    )


class Dissolver:
    """Applies D(x, t) with a trained model; ``cache`` and ``online`` paths share it.

    Example:
        >>> dissolver = Dissolver(load_diffusion(path), DissolveConfig(), image_size=28)
        >>> x_dissolved = dissolver(x, torch.full((len(x),), 60))
    """

    def __init__(
        self, diffusion: GaussianDiffusion, cfg: DissolveConfig, *, image_size: int
    ) -> None:
        self.diffusion = diffusion
        self.cfg = cfg
        self.image_size = image_size

    @torch.no_grad()
    def predict_x0(self, x_small: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0_hat = sqrt(1/abar_t) x - sqrt(1/abar_t - 1) eps(x, t), clamped to [-1, 1]; eps in
        ``cfg.precision``, the rest in float32."""
        d = self.diffusion
        t = t.to(x_small.device, torch.long)
        with autocast(x_small.device, self.cfg.precision):
            eps = d.model(x_small, t).float()
        a = d.sqrt_recip_alphas_cumprod[t].view(-1, 1, 1, 1)
        b = d.sqrt_recipm1_alphas_cumprod[t].view(-1, 1, 1, 1)
        return (a * x_small - b * eps).clamp(-1.0, 1.0)

    @torch.no_grad()
    def dissolve_small(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Dissolve and stop at the model's resolution (what the cache stores)."""
        small = fit_to(x, self.cfg.resolution, self.cfg.fit)
        if self.cfg.input_scaling == "symmetric":
            return (self.predict_x0(small * 2 - 1, t) + 1) / 2
        # Official code: [0, 1] images are fed as they are and the output stays in [-1, 1].
        return self.predict_x0(small, t)

    def finish(self, small: torch.Tensor) -> torch.Tensor:
        """Bring a model-resolution result back to the network's input size."""
        return fit_back(small, self.image_size, self.cfg.fit)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.finish(self.dissolve_small(x, t))
