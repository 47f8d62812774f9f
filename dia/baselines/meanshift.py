"""Mean-Shifted Contrastive Loss (MSC), Reiss & Hoshen, "Mean-Shifted Contrastive Loss for Anomaly
Detection", AAAI 2023.

Method: an ImageNet-pretrained ResNet without its fc head gives L2-normalised features phi(x).
The centre c is the mean of phi over the training normals, computed once with the pretrained
network before training and then fixed. Training contrasts two augmented views of each normal
image after shifting them to the centre: z = phi(x) - c is re-normalised and fed to NT-Xent
(temperature 0.25), so the loss only acts on the angles around c and the features cannot drift
away from the pretrained ones as in plain contrastive fine-tuning. The optional angular centre
loss (``angular``) uses the normalised centre and adds mean ||phi(x') - c||^2 of each view. The
anomaly score is the kNN distance (k = 2): the sum of squared L2 distances from phi(test) to its
two nearest phi(training normal).

Official code (talreiss/Mean-Shifted-Anomaly-Detection @ 22769369, main.py and utils.py), which
this module follows: torchvision ResNet-152 (or ResNet-18) with ``fc = Identity``; for ResNet-152
conv1, bn1, layer1 and layer2 are frozen, for ResNet-18 nothing is; SGD lr 1e-5, weight decay
5e-5, no momentum, no schedule, 20 epochs of batch 64. The two views use the MoCo-v2 transform
(RandomResizedCrop 224 scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale
p 0.2, Gaussian blur sigma U(0.1, 2) with p 0.5, horizontal flip, ImageNet normalisation); centre
and kNN bank use Resize 256 + CenterCrop 224 (ResNet-152) or bicubic Resize 224 (ResNet-18).
``train_model`` puts the model in eval mode once and never back, so the whole network trains with
batch-norm running statistics frozen; this module keeps the backbone in eval mode likewise.

Deviations, and why:

* Augmentations run batched on float tensors on the device, every draw from the ``rng``
  generator, instead of per-image PIL ops, so there is no uint8 rounding between steps. They
  keep torchvision/PIL semantics: the crop sampler of RandomResizedCrop, ColorJitter's four ops
  in a random order per image (contrast against the grey mean, saturation against the grey
  image; the hue shift in float HSV where PIL uses 8-bit HSV), and Pillow's three box-blur
  passes per axis for GaussianBlur (equal to PIL up to its 8-bit rounding). The crop is resized
  image by image because every box has its own size.
* Resizing uses ``interpolate(antialias=True)``, which matches PIL's resampling filters (bicubic
  with a = -0.5 included) when up- and downsampling. For an ``image_size`` other than 224 the
  ResNet-152 eval resize keeps the official 256/224 ratio.
* On an image-file dataset the images arrive as the official eval resize of the original file
  (shorter side to 256, aspect ratio kept; :meth:`MeanShiftConfig.input_view`), cut to its
  central square, which holds the 224 centre crop: the eval view is then exact. The training
  crops (RandomResizedCrop) are drawn from that square, where the official ones are drawn from
  the whole original; for a non-square original they miss its two side margins.
* NT-Xent is the project's :func:`~dia.contrastive.loss.contrastive_loss`, the official form
  (each anchor against the 2B - 1 other views, mean over the 2B anchors) with a 1e-8 guard.
* Both views go through one forward pass; with batch norm in eval mode this equals the official
  two passes.
* The kNN search is exact ``torch.cdist`` on the device, one scored batch at a time, instead of
  faiss ``IndexFlatL2`` (no faiss dependency; the same squared distances).
* ``frozen_stages`` generalises the official backbone-dependent freezing (None keeps it).
* The official code is CIFAR-10 only and just prints AUROCs; here the project's loop feeds the
  normals (a final batch of one image is dropped) and the model after the last epoch is scored,
  which is the number the official code reports.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dia.baselines.backbones import register_imagenet_stats, torchvision_backbone
from dia.baselines.base import BaselineModel
from dia.config import BaselineConfig
from dia.contrastive.augment import hsv_to_rgb, random_hflip, rgb_to_hsv
from dia.contrastive.loss import contrastive_loss
from dia.data.prepare import ImageBatches
from dia.data.views import View
from dia.errors import DiaError

_LUMA = (0.299, 0.587, 0.114)  # PIL's convert("L"), which the official PIL pipeline uses
_CROP_RATIO = (3 / 4, 4 / 3)  # torchvision RandomResizedCrop default
_CROP_TRIALS = 10  # torchvision RandomResizedCrop.get_params
_BLUR_PASSES = 3  # PIL ImageFilter.GaussianBlur: three box-blur passes (BoxBlur.c)
# Residual stages frozen with the stem per official backbone (utils.py freeze_parameters).
_OFFICIAL_FROZEN_STAGES = {"resnet152": 2, "resnet18": 0}


@dataclasses.dataclass(frozen=True)
class MeanShiftConfig(BaselineConfig):
    """MSC hyperparameters; defaults are the official ones (main.py argparse, utils.py)."""

    image_size: int = 224  # utils.py: RandomResizedCrop(224) / CenterCrop(224)
    epochs: int = 20  # main.py --epochs
    batch_size: int = 64  # main.py --batch_size (train loaders)
    lr: float = 1e-5  # main.py --lr
    score_batch_size: int = 64  # main.py --batch_size (feature loaders)
    backbone: str = "resnet152"  # main.py --backbone 152 (official alternative: resnet18)
    # Stem + first k residual stages frozen; None: the official rule (2 for R152, 0 for R18).
    frozen_stages: int | None = dataclasses.field(default=None, metadata={"minimum": 1})
    weight_decay: float = 5e-5  # main.py train_model: optim.SGD(..., weight_decay=0.00005)
    temperature: float = 0.25  # main.py contrastive_loss: temp = 0.25
    angular: bool = False  # main.py --angular (angular centre loss)
    knn_k: int = 2  # utils.py knn_score(n_neighbours=2)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # utils.py Transform: RandomResizedCrop scale
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # ColorJitter(0.4, ..., 0.1)
    jitter_p: float = 0.8  # RandomApply([ColorJitter], p=0.8)
    gray_p: float = 0.2  # RandomGrayscale(p=0.2)
    blur_p: float = 0.5  # RandomApply([GaussianBlur], p=0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # GaussianBlur([.1, 2.])

    def __post_init__(self) -> None:
        if self.backbone not in _OFFICIAL_FROZEN_STAGES:
            raise DiaError(
                f"meanshift backbone {self.backbone!r} is not one of the official "
                f"{', '.join(_OFFICIAL_FROZEN_STAGES)}"
            )
        if self.frozen_stages is not None and not 0 <= self.frozen_stages <= 4:
            raise DiaError(f"meanshift frozen_stages must lie in 0..4, got {self.frozen_stages}")
        if self.knn_k < 1:
            raise DiaError(f"meanshift knn_k must be positive, got {self.knn_k}")

    def input_view(self) -> View:
        """The official test transform's resize of the original (``Resize(256)`` bilinear for
        ResNet-152, ``Resize(224, BICUBIC)`` for ResNet-18), aspect ratio kept; the centre
        square of it holds the centre crop (:meth:`MeanShift.eval_view`)."""
        if self.backbone == "resnet152":
            return View("short", round(self.image_size * 256 / 224))
        return View("short", self.image_size, "bicubic")


def _uniform(
    shape: tuple[int, ...], rng: torch.Generator, low: float, high: float, device: torch.device
) -> Tensor:
    return (low + (high - low) * torch.rand(shape, generator=rng, device=rng.device)).to(device)


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """PIL-like resize of float images in [0, 1]: Pillow resizes horizontally, then vertically,
    clipping each pass to uint8's range, so a bicubic overshoot of the first pass is clipped
    before the second (one 2-D pass would keep it: up to 20 levels apart on 28 px images)."""
    if tuple(x.shape[-2:]) == size:
        return x
    for step in ((x.shape[-2], size[1]), size):
        if tuple(x.shape[-2:]) != step:
            x = F.interpolate(x, size=step, mode=mode, antialias=True, align_corners=False)
            x = x.clamp(0, 1)
    return x


def _gray(x: Tensor) -> Tensor:
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """PIL ImageEnhance: other + factor * (x - other), clipped."""
    return (other + factor.view(-1, 1, 1, 1) * (x - other)).clamp(0, 1)


def _brightness(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def _contrast(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), factor)


def _saturation(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, _gray(x), factor)


def _hue(x: Tensor, shift: Tensor) -> Tensor:
    hue, sat, val = rgb_to_hsv(x).unbind(1)
    return hsv_to_rgb(torch.stack(((hue + shift.view(-1, 1, 1)) % 1, sat, val), 1)).clamp(0, 1)


def _pil_box_kernel(sigma: Tensor) -> Tensor:
    """(n, K) 1-D box kernels of PIL's GaussianBlur(radius=sigma) (Pillow BoxBlur.c).

    Pillow picks a box of fractional radius l + a whose three passes have variance sigma^2:
    weight 1 / (2(l + a) + 1) on the 2 floor(l + a) + 1 central taps, the rest split between the
    two next taps.
    """
    var = sigma.double().square() / _BLUR_PASSES
    whole = torch.floor((torch.sqrt(12 * var + 1) - 1) / 2)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * var) / (6 * (var - (whole + 1) ** 2))
    radius = (whole + frac)[:, None]
    inner = torch.floor(radius)
    reach = int(inner.max()) + 1
    taps = torch.arange(-reach, reach + 1, dtype=var.dtype, device=var.device).abs()
    edge = torch.where(taps == inner + 1, (radius - inner) / (2 * radius + 1), 0.0)
    return torch.where(taps <= inner, 1 / (2 * radius + 1), edge).to(sigma.dtype)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


class MeanShift(BaselineModel):
    """Pretrained ResNet fine-tuned with the mean-shifted contrastive loss, scored by kNN."""

    def __init__(self, cfg: MeanShiftConfig) -> None:
        super().__init__()
        self.cfg = cfg
        net = torchvision_backbone(cfg.backbone, pretrained=cfg.pretrained)
        dim = net.fc.in_features
        net.fc = nn.Identity()
        self.backbone = net
        for module in self.fixed_stages():
            module.requires_grad_(False)
        # Saved with the model so a resumed run keeps the centre of the pretrained network.
        self.register_buffer("center", torch.zeros(dim))
        register_imagenet_stats(self, "pixel_mean", "pixel_std")
        self.bank: Tensor | None = None
        self.train()

    def fixed_stages(self) -> list[nn.Module]:
        """The stem and first residual stages whose weights never change."""
        stages = self.cfg.frozen_stages
        if stages is None:
            stages = _OFFICIAL_FROZEN_STAGES[self.cfg.backbone]
        if stages == 0:
            return []
        net = self.backbone
        return [net.conv1, net.bn1, *(getattr(net, f"layer{k}") for k in range(1, stages + 1))]

    def frozen_modules(self) -> list[nn.Module]:
        """The backbone always runs in eval mode: official training never leaves model.eval()."""
        return [self.backbone]

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return opt, None

    def embed(self, x: Tensor) -> Tensor:
        """L2-normalised features of ImageNet-normalised images at ``image_size``."""
        return F.normalize(self.backbone(x), dim=1)

    def _normalize(self, x: Tensor) -> Tensor:
        return (x - self.pixel_mean) / self.pixel_std

    def eval_view(self, x: Tensor) -> Tensor:
        """The official test transform: shorter side resized, centre crop, ImageNet normalisation.

        ResNet-152: bilinear resize to 256/224 * image_size; ResNet-18: bicubic to image_size.
        """
        size = self.cfg.image_size
        if self.cfg.backbone == "resnet152":
            short, mode = round(size * 256 / 224), "bilinear"
        else:
            short, mode = size, "bicubic"
        height, width = x.shape[-2:]
        if width <= height:
            resized = (int(short * height / width), short)
        else:
            resized = (short, int(short * width / height))
        x = _resize(x, resized, mode)
        top = round((x.shape[-2] - size) / 2)
        left = round((x.shape[-1] - size) / 2)
        return self._normalize(x[..., top : top + size, left : left + size])

    def moco_view(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """One MoCo-v2 view per image (utils.py Transform), every draw from ``rng``."""
        x = self._random_resized_crop(x, rng)
        x = self._color_jitter(x, rng)
        gray = _uniform((len(x),), rng, 0.0, 1.0, x.device) < self.cfg.gray_p
        x = torch.where(gray.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)
        x = self._gaussian_blur(x, rng)
        return self._normalize(random_hflip(x, rng))

    def _random_resized_crop(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """torchvision RandomResizedCrop: first valid of 10 boxes, else a centre crop."""
        n, _, height, width = x.shape
        u = torch.rand((n, _CROP_TRIALS, 4), generator=rng, device=rng.device).cpu().double()
        low, high = self.cfg.crop_scale
        area = height * width * (low + (high - low) * u[..., 0])
        log_lo, log_hi = math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
        box_w = torch.sqrt(area * ratio).round()
        box_h = torch.sqrt(area / ratio).round()
        valid = (box_w >= 1) & (box_w <= width) & (box_h >= 1) & (box_h <= height)
        top = torch.floor(u[..., 2] * (height - box_h + 1))
        left = torch.floor(u[..., 3] * (width - box_w + 1))
        fallback = self._center_box(height, width)
        size = (self.cfg.image_size, self.cfg.image_size)
        crops = []
        for i in range(n):
            hits = valid[i].nonzero()
            if len(hits):
                k = int(hits[0])
                box = (int(top[i, k]), int(left[i, k]), int(box_h[i, k]), int(box_w[i, k]))
            else:
                box = fallback
            y, x0, h, w = box
            crops.append(_resize(x[i : i + 1, :, y : y + h, x0 : x0 + w], size, "bilinear"))
        return torch.cat(crops)

    @staticmethod
    def _center_box(height: int, width: int) -> tuple[int, int, int, int]:
        """torchvision's fallback box when no trial fits: the whole image, aspect clamped."""
        h, w = height, width
        if width / height < _CROP_RATIO[0]:
            h = round(width / _CROP_RATIO[0])
        elif width / height > _CROP_RATIO[1]:
            w = round(height * _CROP_RATIO[1])
        return (height - h) // 2, (width - w) // 2, h, w

    def _color_jitter(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """torchvision ColorJitter with probability ``jitter_p``; op order random per image."""
        n, device = len(x), x.device
        apply = _uniform((n,), rng, 0.0, 1.0, device) < self.cfg.jitter_p
        brightness, contrast, saturation, hue = self.cfg.jitter
        factors = (
            _uniform((n,), rng, max(0.0, 1 - brightness), 1 + brightness, device),
            _uniform((n,), rng, max(0.0, 1 - contrast), 1 + contrast, device),
            _uniform((n,), rng, max(0.0, 1 - saturation), 1 + saturation, device),
            _uniform((n,), rng, -hue, hue, device),
        )
        order = torch.rand((n, 4), generator=rng, device=rng.device).argsort(1).to(device)
        x = x.clone()
        for position in range(4):
            for op, (fn, factor) in enumerate(zip(_JITTER_OPS, factors, strict=True)):
                chosen = apply & (order[:, position] == op)
                if chosen.any():
                    x[chosen] = fn(x[chosen], factor[chosen])
        return x

    def _gaussian_blur(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """PIL GaussianBlur(radius=sigma), sigma ~ U(blur_sigma), with probability ``blur_p``."""
        n, channels, _, _ = x.shape
        apply = _uniform((n,), rng, 0.0, 1.0, x.device) < self.cfg.blur_p
        sigma = _uniform((n,), rng, *self.cfg.blur_sigma, x.device)
        if not apply.any():
            return x
        chosen = x[apply]
        kernel = _pil_box_kernel(sigma[apply]).repeat_interleave(channels, 0)
        reach = kernel.shape[1] // 2
        planes = chosen.reshape(1, -1, *chosen.shape[-2:])
        groups = planes.shape[1]
        # Pillow blurs rows then columns, each pass with the edge pixels replicated.
        for pad, shape in (((reach, reach, 0, 0), (1, -1)), ((0, 0, reach, reach), (-1, 1))):
            for _ in range(_BLUR_PASSES):
                planes = F.pad(planes, pad, mode="replicate")
                planes = F.conv2d(planes, kernel.view(groups, 1, *shape), groups=groups)
        out = x.clone()
        out[apply] = planes.view_as(chosen).to(out.dtype)  # bf16 under autocast
        return out

    @torch.no_grad()
    def features(self, images: ImageBatches, device: str) -> Tensor:
        """Normalised eval-transform features of ``images``, in batches of score_batch_size."""
        bs = self.cfg.score_batch_size
        batches = (images[i : i + bs].to(device) for i in range(0, len(images), bs))
        return torch.cat([self.embed(self.eval_view(batch)) for batch in batches])

    def on_train_start(self, normals: ImageBatches, device: str) -> None:
        """Centre = mean normalised feature of the pretrained network (normalised if angular)."""
        center = self.features(normals, device).mean(0)
        self.center.copy_(F.normalize(center, dim=0) if self.cfg.angular else center)

    def training_loss(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """Mean-shifted NT-Xent of two MoCo views (+ the angular centre loss if enabled)."""
        with torch.no_grad():
            views = torch.cat([self.moco_view(x, rng), self.moco_view(x, rng)])
        shifted = self.embed(views) - self.center
        loss = contrastive_loss(shifted, n_branches=2, temperature=self.cfg.temperature)
        if self.cfg.angular:
            loss = loss + shifted.square().sum(1).view(2, -1).mean(1).sum()
        return loss

    def fit_scoring(self, normals: ImageBatches, device: str) -> None:
        """The kNN bank: normalised features of every training normal."""
        self.bank = self.features(normals, device)

    def anomaly_score(self, x: Tensor) -> Tensor:
        """Sum of squared L2 distances to the ``knn_k`` nearest training normals."""
        if self.bank is None:
            raise DiaError("MeanShift.anomaly_score called before fit_scoring")
        if len(self.bank) < self.cfg.knn_k:
            raise DiaError(
                f"meanshift needs at least knn_k={self.cfg.knn_k} training normals, "
                f"got {len(self.bank)}"
            )
        dist = torch.cdist(self.embed(self.eval_view(x)), self.bank).square()
        return dist.topk(self.cfg.knn_k, dim=1, largest=False).values.sum(1)
