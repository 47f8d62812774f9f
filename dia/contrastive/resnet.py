"""ResNet-18 encoder with the SimCLR projection head and the shift-classifier head.

Two stems, as in CSI and DIA: ``resnet18_cifar`` (3x3 stride-1 conv, no max-pool) for 28-32 px
inputs and ``resnet18_imagenet`` (7x7 stride-2 conv and max-pool) for 224 px inputs. Both start
from random weights. ``width`` scales every stage (64 = the standard network); CPU presets use a
narrower one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dia.contrastive.shifts import NUM_SHIFTS


def kaiming_init(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal Conv2d weights (fan-out; transposed
    convolutions keep theirs), BatchNorm to (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Outputs(NamedTuple):
    features: torch.Tensor
    projection: torch.Tensor
    shift_logits: torch.Tensor


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Encoder f plus heads: SimCLR projection (f -> f -> 128) and shift logits (f -> K).

    Inputs are [0, 1] images; the network normalises them to [-1, 1] itself, like the official
    code, so every caller feeds the same range. ``init``: ``official`` initialises the ImageNet
    stem's network with Kaiming fan-out and leaves the CIFAR one at PyTorch's defaults, as the
    official model files do; ``kaiming`` uses Kaiming fan-out for both.
    """

    def __init__(
        self,
        *,
        arch: str = "resnet18_cifar",
        width: int = 64,
        projection_dim: int = 128,
        num_shifts: int = NUM_SHIFTS,
        init: str = "official",
    ) -> None:
        super().__init__()
        if arch == "resnet18_cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
        elif arch == "resnet18_imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            raise ValueError(f"unknown arch {arch!r}")
        stages, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1))
            )
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.feature_dim = c_in
        self.projection = nn.Sequential(
            nn.Linear(c_in, c_in), nn.ReLU(), nn.Linear(c_in, projection_dim)
        )
        self.shift_head = nn.Linear(c_in, num_shifts)
        if init not in ("official", "kaiming"):
            raise ValueError(f"unknown init {init!r}")
        if init == "kaiming" or arch == "resnet18_imagenet":
            kaiming_init(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem((x - 0.5) / 0.5))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)

    def forward(self, x: torch.Tensor) -> Outputs:
        f = self.encode(x)
        return Outputs(f, self.projection(f), self.shift_head(f))
