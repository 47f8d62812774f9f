"""The MAC counter on layers with known costs, and the Table 4 rows."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dia.config import ContrastiveConfig, DiffusionConfig
from dia.evaluation.cost import count_macs, count_params, measured_throughput, table4


def test_conv_and_linear_macs_are_exact():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, torch.zeros(1, 3, 16, 16)) == 8 * 3 * 9 * 16 * 16
    linear = nn.Linear(10, 4)
    assert count_macs(linear, torch.zeros(2, 10)) == 2 * 10 * 4
    assert count_params(linear) == 44


class _Attention(nn.Module):
    """Single-head attention written with einsum, as the diffusion Unet's attention is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.einsum("bid,bjd->bij", x, x).softmax(-1)
        return torch.einsum("bij,bjd->bid", weights, x)


class _FusedAttention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


def test_attention_matmuls_are_counted():
    x = torch.zeros(1, 5, 16)
    expected = 2 * 5 * 5 * 16  # q k^T and weights x v
    assert count_macs(_Attention(), x) == expected
    assert count_macs(_FusedAttention(), x) == expected


def test_resnet18_at_224_matches_the_standard_cost():
    table = table4(
        ContrastiveConfig(arch="resnet18_imagenet", image_size=224),
        DiffusionConfig(dim=8, dim_mults=(1, 2)),
        resolutions=(32,),
    )
    base = table.iloc[0]
    # torchvision's ResNet-18 is 1.82 GMACs and 11.7 M parameters; ours adds the CSI heads
    assert base["macs_g"] == pytest.approx(1.82, abs=0.01)
    assert 11.2 < base["params_m"] < 12.0
    assert list(table["dissolve_resolution"]) == ["none", "32"]
    assert table.iloc[1]["macs_g"] > base["macs_g"]
    assert table.iloc[1]["paper_macs_g"] == 2.33


def test_measured_throughput_averages_the_runs_meta_files(tmp_path):
    def meta(name, **values):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"device_name": "gpu0", **values}))
        return path

    train = [
        ("32", meta("t1", steps=10, config={"contrastive": {"batch_size": 32}}, train_seconds=4)),
        ("32", meta("t2", steps=10, config={"contrastive": {"batch_size": 32}}, train_seconds=1)),
    ]
    score = [("32", meta("s1", n_scored_images=1000, wall_time_s=10.0))]
    caches = [("32", meta("c1", n_dissolved=500, wall_time_s=2.0))]
    table = measured_throughput(train, score, caches).set_index("dissolve_resolution")
    assert table.loc["32", "n_runs"] == 2
    assert table.loc["32", "train_images_per_s"] == pytest.approx((80 + 320) / 2)
    assert table.loc["32", "score_images_per_s"] == pytest.approx(100)
    assert table.loc["32", "dissolve_images_per_s"] == pytest.approx(250)
    assert table.loc["32", "devices"] == "gpu0"
