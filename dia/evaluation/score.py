"""The CSI anomaly score, shared by CSI and DIA.

For each shift k the score compares an image's mean projection with its nearest training image
(cosine times norm) and adds the shift classifier's logit for the correct shift; both terms are
rescaled by per-shift weights fitted on the training set, then averaged over the K shifts. The
official code reports normality; :func:`anomaly_scores` returns its negative, so that higher
means more anomalous everywhere in this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from dia.config import ScoreConfig
from dia.contrastive.augment import SimCLRAugment, random_hflip
from dia.contrastive.resnet import ResNet18
from dia.contrastive.shifts import NUM_SHIFTS, SHIFTS, shift_all
from dia.data.prepare import ImageBatches
from dia.precision import autocast
from dia.progress import progress


class ShiftFeatures(NamedTuple):
    """Per image and shift: mean projection (N, K, d) and mean correct-shift logit (N, K)."""

    projection: torch.Tensor
    shift_logit: torch.Tensor


@torch.no_grad()
def extract_features(
    model: ResNet18,
    images: torch.Tensor | ImageBatches,
    *,
    shift: str,
    cfg: ScoreConfig,
    image_size: int,
    hue: float,
    hue_from: str = "atan2",
    device: str = "cpu",
    precision: str = "fp32",
) -> ShiftFeatures:
    """Average the outputs over ``cfg.samples`` random flips and crops of every shifted image.

    ``hue`` and ``hue_from`` are the training augmentation's hue jitter, which the official
    evaluation reuses; ``precision`` the network's. Sample s draws from a generator seeded
    with s, so the same model always gets the same score (the official code reseeds the
    global RNGs, which leaks into training)."""
    was_training = model.training
    model.eval()
    hi = cfg.crop_scale if cfg.crop_fixed else 1.0
    aug = SimCLRAugment(
        image_size=image_size,
        crop_scale=(cfg.crop_scale, hi),
        jitter=(0.4, 0.4, 0.4, hue),
        hue_from=hue_from,
    )
    k = NUM_SHIFTS
    proj_sum: torch.Tensor | None = None
    logit_sum = torch.zeros(len(images), k)
    starts = range(0, len(images), cfg.batch_size)
    with progress(cfg.samples * len(starts), "features", leave=False) as bar:
        for s in range(cfg.samples):
            gen = torch.Generator(device).manual_seed(s)
            for start in starts:
                x = images[start : start + cfg.batch_size].to(device)
                b = len(x)
                views = aug(_shifted(x, shift, cfg.flip, gen), gen)
                proj, correct = _outputs(model, views, b, device, precision)
                if proj_sum is None:
                    proj_sum = torch.zeros(len(images), k, proj.shape[-1])
                proj_sum[start : start + b] += proj
                logit_sum[start : start + b] += correct
                bar.update()
    model.train(was_training)
    assert proj_sum is not None
    return ShiftFeatures(proj_sum / cfg.samples, logit_sum / cfg.samples)


def _outputs(
    model: ResNet18, views: torch.Tensor, b: int, device: str, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, D) projections and (B, K) logits of each copy's own shift, float32 on the CPU."""
    k = NUM_SHIFTS
    with autocast(device, precision):
        out = model(views)
    proj = out.projection.float().view(k, b, -1).transpose(0, 1).cpu()
    logits = out.shift_logits.float().view(k, b, k)
    return proj, logits[torch.arange(k), :, torch.arange(k)].T.cpu()


def _shifted(x: torch.Tensor, shift: str, flip: str, gen: torch.Generator) -> torch.Tensor:
    """The K shifted copies of ``x`` (k-major), flipped once per shift or once for all."""
    if flip == "shared":
        return shift_all(random_hflip(x, gen), shift)
    return torch.cat([SHIFTS[shift](random_hflip(x, gen), k) for k in range(NUM_SHIFTS)])


@dataclass(frozen=True)
class CSIStatistics:
    """Training-set statistics: unit axes (K, M, d) and per-shift weights (K,)."""

    axes: torch.Tensor
    weight_sim: torch.Tensor
    weight_shift: torch.Tensor


def fit_statistics(train: ShiftFeatures) -> CSIStatistics:
    """Weights 1 / mean norm and 1 / mean correct-shift logit over the training images."""
    weight_sim = 1.0 / train.projection.norm(dim=-1).mean(0)
    weight_shift = 1.0 / train.shift_logit.mean(0)
    axes = F.normalize(train.projection, dim=-1).transpose(0, 1).contiguous()
    return CSIStatistics(axes, weight_sim, weight_shift)


def normality_scores(stats: CSIStatistics, feats: ShiftFeatures, chunk: int = 256) -> torch.Tensor:
    """S(x) = 1/K sum_k [w_sim,k max_m <z_k(x), axis_k,m> + w_shi,k logit_k(x)]; higher = normal."""
    scores = []
    for start in range(0, len(feats.projection), chunk):
        z = feats.projection[start : start + chunk]
        nearest = torch.einsum("nkd,kmd->nkm", z, stats.axes).amax(dim=-1)
        logit = feats.shift_logit[start : start + chunk]
        scores.append((stats.weight_sim * nearest + stats.weight_shift * logit).mean(dim=1))
    return torch.cat(scores)


def anomaly_scores(stats: CSIStatistics, feats: ShiftFeatures) -> torch.Tensor:
    """Higher = more anomalous."""
    return -normality_scores(stats, feats)
