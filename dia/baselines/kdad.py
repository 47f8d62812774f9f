"""KDAD: multiresolution knowledge distillation for anomaly detection.

Paper: Salehi et al., "Multiresolution Knowledge Distillation for Anomaly Detection", CVPR 2021.
Official code: github.com/rohban-lab/Knowledge_Distillation_AD, pinned commit 0c574ae9
(``models/network.py``, ``loss_functions.py``, ``train.py``, ``test_functions.py``,
``dataloader.py``, ``configs/config.yaml``).

What the official code does, and this module reproduces:

* Source (teacher): torchvision's ImageNet VGG-16 ``features`` (``vgg16-397923af.pth``), never
  optimised. Its max-pool outputs pool1..pool5 (``Vgg16.forward`` taps 1, 3, 6, 9, 12 of its 13
  taps) are what the cloner imitates.
* Cloner (student): ``make_arch('B', cfg, use_bias, batch_norm=True)``, a narrow VGG trained from
  scratch, widths ``16 16 M 16 128 M 16 16 256 M 16 16 512 M 16 16 512 M``: each 3x3 conv is
  followed by BatchNorm and ReLU, except the conv just before a max-pool (conv and ReLU only);
  convs have no bias (``use_bias: False``) and Xavier-uniform weights. Its pool2..pool5 outputs
  have the teacher's widths (128, 256, 512, 512). ``equal_network_size: True`` uses the VGG-16
  widths (config 'A') instead.
* Loss (``loss_functions.MseDirectionLoss``), on the taps 3, 6, 9, 12 = pool2, pool3, pool4,
  pool5: per layer, (1 - cosine similarity of the flattened maps) averaged over the batch, plus
  ``lamda`` times the MSE of the maps (``nn.MSELoss``), summed over the four layers.
  ``direction_loss_only`` drops the MSE term (``DirectionOnlyLoss``).
* Score (``test_functions.detection_test``): the same per-image quantity, per-image MSE over
  (C, H, W), with the same ``lamda`` and ``direction_loss_only``, but on taps 6, 9, 12 only:
  pool3, pool4, pool5, *not* pool2. Higher means more anomalous (it is ``roc_curve``'d with
  ``pos_label=0``, label 0 = anomalous). ``loss_pools`` and ``score_pools`` hold both choices.
* Training (``train.py``): Adam(cloner parameters, lr 1e-3, default betas), batch 64, shuffled,
  last partial batch kept, no augmentation, no LR schedule.
* Data (``dataloader.py``, the medical ``retina`` branch, which the MVTec branch matches at its
  default ``mvtec_img_size``): images resized to 128x128 (PIL bilinear), ``ToTensor`` into
  [0, 1], *no* ImageNet normalisation (only the CIFAR-10 branch normalises), grayscale
  repeated to three channels. ``lamda`` is 0.01 for every dataset but MVTec (0.5).
* Epochs: ``configs/config.yaml`` ships ``num_epochs: 201`` (its comment: "mnist/fashionmnist:51,
  cifar10:201, mvtec:601"; the retina branch has no value of its own). ``train.py`` loops over
  ``range(num_epochs + 1)`` and saves the cloner every 50 epochs, so the last checkpoint
  ``test.py`` can load is ``Cloner_*_epoch_200.pth``, written after 201 epochs: the default here.

Deviations, none of which changes what is computed:

* The teacher runs without gradients; the official one builds a graph whose parameter
  gradients are never used (the optimiser holds only the cloner), so the updates are identical.
  Its ``forward`` runs all 31 layers of ``vgg16().features``, as the official one does.
* Only pool outputs are collected (the official networks also return eight ReLU taps that the
  loss and the score never read). The cloner's ``features`` keeps the official module indices, so
  an official ``Cloner_*.pth`` state dict loads into ``KDAD.cloner`` unchanged.
* The loss is computed as the batch mean of the per-image score on ``loss_pools``, which equals
  the official sum of batch means term by term (every image has the same number of elements).
* ``image_size`` must be at least 32: VGG's five 2x2 max-pools leave a 1x1 map at 32 px and an
  empty one below (28 -> 14 -> 7 -> 3 -> 1 -> 0). Inputs of any size are resized first, so
  28x28 MedMNIST images work.

Where a run here differs from an official run (the pipeline's shared conventions):

* Images of an image-file dataset arrive resized from the original files to ``image_size`` by
  PIL, as the official loader does (the ``prepare_views`` rule, :mod:`dia.data.views`); smaller
  datasets (MedMNIST) are resized here with bilinear interpolation, antialiased when
  downsampling like PIL's bilinear ``Resize``.
* Epochs go through :func:`~dia.baselines.base.fit_baseline`: shuffled batches with the last
  partial batch kept, except a last batch of a single image, which is dropped.
* The official script prints the test AUROC every 10 epochs (after epochs 1, 11, 21, ...);
  ``eval_every_epochs: 10`` scores after epochs 10, 20, ... for the ``val`` / ``test_oracle``
  rules. Checkpointing and seeding are the pipeline's (the official code sets no seed).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from dia.baselines.backbones import torchvision_backbone
from dia.baselines.base import BaselineModel, resize_square
from dia.config import BaselineConfig
from dia.errors import DiaError

# models/network.py get_networks(): cfg 'A' (= VGG-16's own widths) and the smaller cloner 'B',
# written per stage; every stage ends in a 2x2 max-pool ('M' there).
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CLONER_STAGES = ((16, 16), (16, 128), (16, 16, 256), (16, 16, 512), (16, 16, 512))
MIN_IMAGE_SIZE = 32  # five 2x2 max-pools


@dataclasses.dataclass(frozen=True)
class KDADConfig(BaselineConfig):
    """KDAD hyperparameters; defaults are the official ``retina`` (medical) settings."""

    image_size: int = 128  # dataloader.py retina branch: Resize([128, 128])
    epochs: int = 201  # configs/config.yaml num_epochs: 201 (see the module docstring)
    batch_size: int = 64  # configs/config.yaml batch_size: 64 (train and test loaders)
    lr: float = 1e-3  # configs/config.yaml learning_rate: 1e-3, torch.optim.Adam
    eval_every_epochs: int | None = 10  # train.py: detection_test every 10 epochs
    lamda: float = 0.01  # configs/config.yaml lamda: "mvtec:0.5, Others:0.01"
    direction_loss_only: bool = False  # configs/config.yaml direction_loss_only: False
    equal_network_size: bool = False  # configs/config.yaml: False = the small cloner 'B'
    use_bias: bool = False  # configs/config.yaml use_bias: False (cloner convs)
    loss_pools: tuple[int, ...] = (2, 3, 4, 5)  # MseDirectionLoss: taps 3, 6, 9, 12
    score_pools: tuple[int, ...] = (3, 4, 5)  # detection_test: taps 6, 9, 12

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            raise DiaError(
                f"kdad image_size {self.image_size} is below {MIN_IMAGE_SIZE}: VGG-16's five "
                "2x2 max-pools need at least 32x32 inputs (the official code resizes to 128)"
            )
        stages = VGG16_STAGES if self.equal_network_size else CLONER_STAGES
        matching = [
            i + 1
            for i, (s, t) in enumerate(zip(stages, VGG16_STAGES, strict=True))
            if s[-1] == t[-1]
        ]
        for key in ("loss_pools", "score_pools"):
            pools = getattr(self, key)
            bad = [p for p in pools if p not in matching]
            if not pools or bad or len(set(pools)) != len(pools):
                raise DiaError(
                    f"kdad {key} {list(pools)} must be distinct max-pool numbers from "
                    f"{matching} (those whose cloner and VGG-16 widths agree)"
                )


class Cloner(nn.Module):
    """The official ``VGG(make_layers(cfg, use_bias, batch_norm=True))``, same module indices."""

    def __init__(self, stages: tuple[tuple[int, ...], ...], *, use_bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for stage in stages:
            for j, width in enumerate(stage):
                conv = nn.Conv2d(c_in, width, kernel_size=3, padding=1, bias=use_bias)
                nn.init.xavier_uniform_(conv.weight)
                norm = [nn.BatchNorm2d(width)] if j < len(stage) - 1 else []
                layers += [conv, *norm, nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return pool_outputs(self.features, x)


def pool_outputs(features: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of every max-pool of a VGG feature stack: [pool1, ..., pool5]."""
    outs = []
    for layer in features:
        x = layer(x)
        if isinstance(layer, nn.MaxPool2d):
            outs.append(x)
    return outs


def discrepancy(
    cloner: list[torch.Tensor],
    source: list[torch.Tensor],
    pools: tuple[int, ...],
    *,
    lamda: float,
    direction_only: bool,
) -> torch.Tensor:
    """(B,) sum over ``pools`` of (1 - cosine) + ``lamda`` * MSE of each image's flattened maps."""
    total = torch.zeros(cloner[0].shape[0], device=cloner[0].device)
    for p in pools:
        c, s = cloner[p - 1].flatten(1), source[p - 1].flatten(1)
        total = total + 1 - F.cosine_similarity(c, s, dim=1)
        if not direction_only:
            total = total + lamda * (c - s).pow(2).mean(dim=1)
    return total


class KDAD(BaselineModel):
    """Frozen ImageNet VGG-16 source, small VGG cloner, value + direction discrepancy."""

    def __init__(self, cfg: KDADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.source = torchvision_backbone("vgg16", pretrained=cfg.pretrained).features
        self.source.requires_grad_(False)
        stages = VGG16_STAGES if cfg.equal_network_size else CLONER_STAGES
        self.cloner = Cloner(stages, use_bias=cfg.use_bias)
        self.train()

    def frozen_modules(self) -> list[nn.Module]:
        return [self.source]

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.Adam(self.cloner.parameters(), lr=self.cfg.lr), None

    def _discrepancy(self, x: torch.Tensor, pools: tuple[int, ...]) -> torch.Tensor:
        x = resize_square(x, self.cfg.image_size)
        with torch.no_grad():
            source = pool_outputs(self.source, x)
        return discrepancy(
            self.cloner(x),
            source,
            pools,
            lamda=self.cfg.lamda,
            direction_only=self.cfg.direction_loss_only,
        )

    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """The official loss on ``loss_pools``; KDAD draws nothing random, so ``rng`` is unused."""
        return self._discrepancy(x, self.cfg.loss_pools).mean()

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """``detection_test``'s per-image score on ``score_pools``."""
        return self._discrepancy(x, self.cfg.score_pools)
