"""RD4AD: anomaly detection via reverse distillation from one-class embedding.

Paper: Deng & Li, "Anomaly Detection via Reverse Distillation from One-Class Embedding", CVPR 2022.
Official code: github.com/hq-deng/RD4AD, pinned commit 65540768 (``main.py``, ``resnet.py``,
``de_resnet.py``, ``test.py``).

What the official code does, and this module reproduces:

* Teacher: a frozen ImageNet WideResNet-50-2 (torchvision weights, kept in eval mode) whose
  layer1, layer2 and layer3 outputs (strides 4, 8, 16) are the targets.
* OCBE bottleneck (``resnet.BN_layer``), trainable: layer1 goes through two stride-2 3x3
  conv-BN-ReLU, layer2 through one, both to layer3's width and size; the three are concatenated
  and fed to one extra ResNet stage (the encoder's block type, ``layers[3]`` blocks: 3 for
  WRN-50-2, 2 for ResNet-18, first block stride 2), the one-class embedding at stride 32.
* Student decoder (``de_resnet``), trainable: the encoder's stages run backwards (2x2 stride-2
  transposed convolutions where the encoder downsamples, also on the shortcut), block counts
  ``layers[0..2]`` for its three stages, returning maps matched to encoder layer1..3.
* Conv2d weights of the OCBE and the decoder are Kaiming-normal (fan_out, relu); transposed
  convolutions keep PyTorch's default initialisation, as there.
* Loss (``main.loss_fucntion``): per layer, 1 - cosine similarity of the flattened (C*H*W)
  encoder and decoder maps, averaged over the batch, summed over the three layers.
* Training (``main.train``): Adam(decoder + OCBE parameters, lr 0.005, betas (0.5, 0.999)),
  batch 16, 200 epochs, images resized to 256x256 and ImageNet-normalised, no augmentation.
* Score (``test.evaluation`` with ``cal_anomaly_map(..., amap_mode='a')``): per layer the map
  1 - cosine similarity over channels, upsampled bilinearly (align_corners=True) to the image
  size, summed over layers, smoothed by ``scipy.ndimage.gaussian_filter(sigma=4)`` (mode
  'reflect', truncate 4.0); the image score is its maximum (higher = more anomalous already).

Deviations, none of which changes what is computed:

* The Gaussian smoothing is a separable torch convolution with scipy's kernel (radius
  ``int(truncate * sigma + 0.5)``, normalised) and scipy's 'reflect' boundary (edge sample
  repeated), in float32 on the model's device instead of float64 scipy on the CPU; the tests
  check it against scipy. This lets a whole batch be scored at once.
* The encoder is torchvision's network (loaded through :mod:`dia.baselines.backbones`) cut
  after layer3: the official copy also computes layer4 and discards it. It runs without
  gradients; the official encoder builds a graph but its parameters are not optimised, so the
  updates are identical.
* ``resnet.BN_layer`` also creates ``conv4``/``bn4``, which its forward never uses (they get
  no gradient, so Adam never touches them); they are not created here.
* Images of an image-file dataset arrive resized from the original files to ``image_size`` by
  PIL, as the official loader does (:mod:`dia.data.views`); smaller datasets (MedMNIST) are
  resized here with bilinear interpolation, antialiased when downsampling as PIL is.
* ``image_size`` must be a multiple of 32: the OCBE embedding has stride 32 and the decoder
  doubles its size three times, so the encoder's layer1 must be divisible by 8 (28x28 inputs
  give 7/4/2 encoder maps but 8/4/2 decoder maps and the official code crashes). Inputs of any
  resolution are resized to ``image_size`` first, so 28x28 MedMNIST images work.
* ``backbone`` may also be ``resnet18`` (official ``resnet18`` + ``de_resnet18`` pair) for tests
  and the CPU demo; the official default is ``wide_resnet50_2``.
* The official script's seed (111) and its evaluation every 10 epochs are the pipeline's
  business (its seed; ``eval_every_epochs``); the official reported numbers are those after the
  last (200th) epoch, which is the default here.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from dia.baselines.backbones import register_imagenet_stats, torchvision_backbone
from dia.baselines.base import BaselineModel, resize_square
from dia.config import BaselineConfig
from dia.contrastive.resnet import kaiming_init
from dia.errors import DiaError


@dataclasses.dataclass(frozen=True)
class _Arch:
    """Block type and depths of one encoder/decoder pair of the official code."""

    block: type[BasicBlock] | type[Bottleneck]
    width_per_group: int
    layers: tuple[int, int, int, int]


# resnet.py / de_resnet.py: wide_resnet50_2 -> de_wide_resnet50_2, resnet18 -> de_resnet18.
_ARCHS = {
    "wide_resnet50_2": _Arch(Bottleneck, 128, (3, 4, 6, 3)),
    "resnet18": _Arch(BasicBlock, 64, (2, 2, 2, 2)),
}


@dataclasses.dataclass(frozen=True)
class RD4ADConfig(BaselineConfig):
    """RD4AD hyperparameters; defaults are those of the official ``main.train``."""

    image_size: int = 256  # main.py train(): image_size = 256
    epochs: int = 200  # main.py train(): epochs = 200
    batch_size: int = 16  # main.py train(): batch_size = 16
    lr: float = 0.005  # main.py train(): learning_rate = 0.005
    adam_betas: tuple[float, float] = (0.5, 0.999)  # main.py train(): torch.optim.Adam(betas=)
    backbone: str = "wide_resnet50_2"  # main.py train(): wide_resnet50_2 + de_wide_resnet50_2
    gaussian_sigma: float = 4.0  # test.py evaluation(): gaussian_filter(anomaly_map, sigma=4)
    gaussian_truncate: float = 4.0  # scipy.ndimage.gaussian_filter's default truncate

    def __post_init__(self) -> None:
        if self.backbone not in _ARCHS:
            raise DiaError(
                f"rd4ad backbone {self.backbone!r} is not supported; use {', '.join(_ARCHS)}"
            )
        if self.image_size < 32 or self.image_size % 32:
            raise DiaError(
                f"rd4ad image_size {self.image_size} must be a positive multiple of 32 (the "
                "decoder upsamples the stride-32 embedding back to strides 16, 8 and 4)"
            )


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _deconv2x2(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)


class _UpBlock(nn.Module):
    """A ResNet block run backwards: where the encoder's block halves the size, this one
    doubles it with a 2x2 transposed convolution, in the residual branch and the shortcut."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        inplanes: int,
        planes: int,
        upsample: bool,
        width_group: int,
    ) -> None:
        super().__init__()
        out = planes * block.expansion
        if block is Bottleneck:
            width = planes * width_group // 64
            middle = _deconv2x2(width, width) if upsample else _conv3x3(width, width)
            layers = [_conv1x1(inplanes, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            layers += [middle, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            layers += [_conv1x1(width, out), nn.BatchNorm2d(out)]
        else:
            first = _deconv2x2(inplanes, planes) if upsample else _conv3x3(inplanes, planes)
            layers = [first, nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
            layers += [_conv3x3(planes, planes), nn.BatchNorm2d(planes)]
        self.body = nn.Sequential(*layers)
        self.shortcut = (
            nn.Sequential(_deconv2x2(inplanes, out), nn.BatchNorm2d(out))
            if upsample
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class _Decoder(nn.Module):
    """The student: three upsampling stages from the stride-32 embedding to strides 16, 8, 4."""

    def __init__(self, arch: _Arch) -> None:
        super().__init__()
        expansion = arch.block.expansion
        inplanes = 512 * expansion
        stages = []
        for planes, blocks in zip((256, 128, 64), arch.layers[:3], strict=True):
            stage = [_UpBlock(arch.block, inplanes, planes, True, arch.width_per_group)]
            inplanes = planes * expansion
            stage += [
                _UpBlock(arch.block, inplanes, planes, False, arch.width_per_group)
                for _ in range(blocks - 1)
            ]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[::-1]  # ordered like the encoder's layer1, layer2, layer3


class _OCBE(nn.Module):
    """Multi-scale feature fusion + one-class embedding (the official ``BN_layer``)."""

    def __init__(self, arch: _Arch) -> None:
        super().__init__()
        e = arch.block.expansion
        self.from_layer1 = nn.Sequential(
            _conv3x3(64 * e, 128 * e, 2),
            nn.BatchNorm2d(128 * e),
            nn.ReLU(inplace=True),
            _conv3x3(128 * e, 256 * e, 2),
            nn.BatchNorm2d(256 * e),
            nn.ReLU(inplace=True),
        )
        self.from_layer2 = nn.Sequential(
            _conv3x3(128 * e, 256 * e, 2), nn.BatchNorm2d(256 * e), nn.ReLU(inplace=True)
        )
        fused, out = 3 * 256 * e, 512 * e
        downsample = nn.Sequential(_conv1x1(fused, out, 2), nn.BatchNorm2d(out))
        blocks = [
            arch.block(fused, 512, 2, downsample, base_width=arch.width_per_group),
            *(
                arch.block(out, 512, base_width=arch.width_per_group)
                for _ in range(arch.layers[3] - 1)
            ),
        ]
        self.embed = nn.Sequential(*blocks)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        fused = torch.cat([self.from_layer1(feats[0]), self.from_layer2(feats[1]), feats[2]], 1)
        return self.embed(fused)


def gaussian_filter(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter(m, sigma, truncate=truncate)`` of each (H, W) map of a
    (B, H, W) tensor: scipy's normalised kernel and its 'reflect' (edge-repeating) boundary."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * offsets**2 / sigma**2)
    kernel = (kernel / kernel.sum()).to(maps)
    out = maps
    for dim in (1, 2):
        n = out.shape[dim]
        index = torch.arange(-radius, n + radius, device=maps.device) % (2 * n)
        index = torch.where(index >= n, 2 * n - 1 - index, index)
        padded = out.index_select(dim, index).movedim(dim, -1)
        rows = padded.reshape(-1, 1, padded.shape[-1])
        smoothed = F.conv1d(rows, kernel.view(1, 1, -1)).reshape(*padded.shape[:-1], n)
        out = smoothed.movedim(-1, dim)
    return out


class RD4AD(BaselineModel):
    """Frozen encoder, trainable OCBE + reverse decoder, cosine-distance anomaly maps."""

    def __init__(self, cfg: RD4ADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        arch = _ARCHS[cfg.backbone]
        net = torchvision_backbone(cfg.backbone, pretrained=cfg.pretrained)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3])
        for p in self.encoder_parameters():
            p.requires_grad_(False)
        self.ocbe = _OCBE(arch)
        self.decoder = _Decoder(arch)
        kaiming_init(self.ocbe)  # the official initialisation of the trained parts
        kaiming_init(self.decoder)
        register_imagenet_stats(self)
        self.train()

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The frozen teacher's parameters."""
        return [*self.stem.parameters(), *self.layers.parameters()]

    def frozen_modules(self) -> list[nn.Module]:
        return [self.stem, self.layers]

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        params = [*self.decoder.parameters(), *self.ocbe.parameters()]
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=self.cfg.adam_betas), None

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return (resize_square(x, self.cfg.image_size) - self.mean) / self.std

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoder (teacher) and decoder (student) maps at strides 4, 8 and 16."""
        with torch.no_grad():
            h = self.stem(self._preprocess(x))
            teacher = []
            for layer in self.layers:
                h = layer(h)
                teacher.append(h)
        return teacher, self.decoder(self.ocbe(teacher))

    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """The official loss; RD4AD draws nothing random, so ``rng`` is unused."""
        teacher, student = self._features(x)
        per_layer = [
            (1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)).mean()
            for t, s in zip(teacher, student, strict=True)
        ]
        return torch.stack(per_layer).sum()

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, S) smoothed sum of the per-layer 1 - cosine maps, S = ``image_size``."""
        teacher, student = self._features(x)
        size = self.cfg.image_size
        total = torch.zeros(x.shape[0], 1, size, size, device=x.device)
        for t, s in zip(teacher, student, strict=True):
            layer_map = 1 - F.cosine_similarity(t, s, dim=1).unsqueeze(1)
            total += F.interpolate(layer_map, size=size, mode="bilinear", align_corners=True)
        return gaussian_filter(total[:, 0], self.cfg.gaussian_sigma, self.cfg.gaussian_truncate)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        return self.anomaly_map(x).amax(dim=(1, 2))
