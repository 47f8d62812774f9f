"""Transformaly (Cohen & Avidan, "Transformaly - Two (Feature Spaces) Are Better Than One",
CVPRW 2022), unimodal setting: one class is normal.

Method. A frozen ImageNet ViT-B/16 at 384x384 is the teacher. A student block is trained for
every teacher block to map that block's *teacher* input to its teacher output (block-wise
distillation: each student block sees the teacher's token sequence, never the student's own
earlier outputs). An image's anomaly score combines two feature spaces: the teacher's final
CLS feature, PCA-whitened and scored by a Gaussian fitted on the training normals, and the
vector of per-block student-teacher distances, scored by a second Gaussian. The normality score
is the sum of the two log-likelihoods; :meth:`Transformaly.anomaly_score` returns its negative.

Official code (MatanCohen1/Transformaly, pinned commit 09d226b5), as replicated here:

* Network (``pytorch_pretrained_vit/model.py`` ``AnomalyViT``, ``transformer.py``
  ``AnomalyTransformer``): lukemelas ``B_16_imagenet1k`` teacher; 12 cloned blocks; cloned
  block i gets the input of teacher block i. The checkpoint has no ``cloned_blocks`` keys and is
  loaded with ``strict=False``, so the cloned blocks keep ``init_weights``' random init
  (xavier-uniform Linear weights, q/k/v as separate 768x768 matrices, N(0, 1e-6) biases, unit
  LayerNorms); ``student_from_teacher`` instead copies the teacher's weights. Dropout 0.1
  (``configs.py`` ``dropout_rate``) acts on attention probabilities, after the attention
  projection and after the MLP (not between fc1 and fc2).
* Training (``utils.py`` ``train``/``forward_one_epoch``, ``freeze_finetuned_model``): only the
  cloned blocks train; loss ``nn.MSELoss()`` of the stacked (12, B, tokens, dim) outputs, i.e. the
  mean over all 12 blocks, tokens and channels; Adam lr 1e-4; README: 30 epochs, batch 32.
  Inputs: ``Resize((384, 384))`` then ``Normalize(0.5, 0.5)``, no augmentation.
* Scoring (``eval.py``, unimodal): pretrained feature = final LayerNorm's CLS token of the
  teacher ViT (``ViT.forward`` with ``fc = Identity``). The number of PCA components is the
  index of the first cumulative explained-variance ratio above ``whitening_threshold`` (0.9) of
  the training features' covariance (``eval.py`` lines 127-136: the loop keeps ``i`` components,
  one fewer than needed to pass the threshold), then ``PCA(whiten=True)`` and a 1-component
  ``GaussianMixture``. Distillation feature = per-block MSE (mean over tokens and channels,
  negated in ``get_finetuned_features``) of the student against the teacher, in eval mode, for
  blocks ``use_layer_outputs = 2..11``; another 1-component ``GaussianMixture``. The combined
  score is the plain sum of the two ``score_samples`` log-likelihoods (no standardisation).

Deviations and why:

* timm's ``vit_base_patch16_384.orig_in21k_ft_in1k`` (the same Google checkpoint, fused qkv)
  replaces the lukemelas port; dropout rates are set on the student's copied timm blocks.
* The teacher stays in eval mode. The official code calls ``model.train()`` on the whole
  ``AnomalyViT``, so during training its frozen teacher blocks also apply dropout 0.1 to the
  inputs and targets of the student; the project's contract keeps frozen parts deterministic.
* Dropout randomness comes from a seed drawn from the ``rng`` of :meth:`training_loss` (in a
  forked global RNG), so training is reproducible and resumable.
* The official run keeps the epoch with the lowest distillation loss on the *test* normals
  (``train``: evaluated after epochs 1, 6, ..., 26 with ``--eval_every 5``, an epoch replaces
  the best if ``best_val_loss - 0.001 > val_epoch_loss``) and scores with that "best" model. That
  selects on test data: it is the ``official`` selection rule, reported beside the pipeline's
  own (``last`` the primary). :meth:`Transformaly.selection_loss` is that loss: the mean over
  test-normal batches of the training loss in eval mode.
* Both 1-component ``GaussianMixture`` fits are done in closed form (float64): EM with one
  component converges to the sample mean and the maximum-likelihood covariance plus
  ``reg_covar`` on the diagonal, which is exactly what sklearn fits and scores. PCA whitening is
  an SVD of the centred features (sklearn's ``svd_solver='full'``, sign flips are irrelevant to
  a Gaussian). The distance features are not negated (a Gaussian's likelihood is unchanged).
* When the first component alone passes the threshold the official rule would keep 0
  components and fail; one is kept.
* Images of an image-file dataset arrive resized from the original files to 384 px by PIL, as
  the official loader does (:mod:`dia.data.views`); smaller datasets (MedMNIST) are resized with
  ``torch.nn.functional.interpolate`` (bilinear, antialiased when downsampling) rather than PIL.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from dia.baselines.backbones import timm_backbone
from dia.baselines.base import BaselineModel, resize_square
from dia.config import BaselineConfig
from dia.data.prepare import ImageBatches
from dia.errors import DiaError

# utils.py get_transforms: transforms.Normalize([0.5] * 3, [0.5] * 3) (also timm's cfg of the ViT)
_MEAN = 0.5
_STD = 0.5


@dataclasses.dataclass(frozen=True)
class TransformalyConfig(BaselineConfig):
    """Transformaly hyperparameters; defaults are the official unimodal run's."""

    image_size: int = 384  # utils.py get_transforms: Resize((384, 384)) with use_imagenet
    epochs: int = 30  # README train command --epochs 30
    batch_size: int = 32  # README train command --batch_size 32
    lr: float = 1e-4  # train.py --lr default 0.0001 (Adam, utils.py train)
    score_batch_size: int = 32  # README eval command --batch_size 32 (does not change scores)
    # README --eval_every 5; utils.train evaluates when (epoch - 1) % eval_every == 0
    eval_every_epochs: int | None = 5
    eval_start_epoch: int | None = 1
    # train.py VIT_MODEL_NAME 'B_16_imagenet1k'; the same Google checkpoint in timm
    backbone: str = "vit_base_patch16_384.orig_in21k_ft_in1k"
    layers: tuple[int, ...] = tuple(range(2, 12))  # train.py / eval.py use_layer_outputs
    dropout: float = 0.1  # configs.py get_base_config dropout_rate (student blocks)
    whitening_threshold: float = 0.9  # eval.py --whitening_threshold (README: 0.9)
    reg_covar: float = 1e-6  # sklearn GaussianMixture default, used by eval.py
    # official: the cloned blocks are not in the checkpoint and keep their random init
    student_from_teacher: bool = False


class _Whitening(nn.Module):
    """PCA whitening fitted on training features (sklearn ``PCA(whiten=True)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", None, persistent=False)
        self.register_buffer("projection", None, persistent=False)

    def fit(self, features: torch.Tensor, threshold: float) -> None:
        """Keep the components before the first cumulative explained-variance ratio > threshold."""
        if len(features) < 2:
            raise DiaError("Transformaly needs at least 2 training normals to fit its whitening")
        mean = features.mean(0)
        _, s, vh = torch.linalg.svd(features - mean, full_matrices=False)
        variance = s**2 / (len(features) - 1)
        if variance.sum() <= 0:
            raise DiaError("Transformaly: the training features have zero variance")
        ratio = variance.cumsum(0) / variance.sum()
        k = min(max(int((ratio <= threshold).sum()), 1), len(variance))
        self.mean = mean
        self.projection = vh[:k].T / variance[:k].sqrt()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) @ self.projection


class _Gaussian(nn.Module):
    """One full-covariance Gaussian: what a 1-component sklearn ``GaussianMixture`` fits."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", None, persistent=False)
        self.register_buffer("chol", None, persistent=False)

    def fit(self, x: torch.Tensor, reg_covar: float) -> None:
        """Maximum-likelihood mean and covariance, plus ``reg_covar`` on the diagonal."""
        mean = x.mean(0)
        centred = x - mean
        cov = centred.T @ centred / len(x)
        cov = cov + reg_covar * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
        self.mean = mean
        self.chol = torch.linalg.cholesky(cov)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.linalg.solve_triangular(self.chol, (x - self.mean).T, upper=False)
        log_det = 2 * self.chol.diagonal().log().sum()
        return -0.5 * (len(self.mean) * math.log(2 * math.pi) + log_det + z.pow(2).sum(0))


def _official_student_init(block: nn.Module) -> None:
    """AnomalyViT.init_weights on one block: xavier-uniform weights (q, k, v each on its own
    square matrix, as in the unfused original), N(0, 1e-6) biases, unit LayerNorms."""
    qkv = getattr(block.attn, "qkv", None)
    for module in block.modules():
        if isinstance(module, nn.Linear):
            weights = module.weight.chunk(3, dim=0) if module is qkv else (module.weight,)
            for weight in weights:
                nn.init.xavier_uniform_(weight)
            if module.bias is not None:
                nn.init.normal_(module.bias, std=1e-6)
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()


class Transformaly(BaselineModel):
    """Frozen ViT teacher, block-wise student, two Gaussian densities (see module docstring)."""

    def __init__(self, cfg: TransformalyConfig) -> None:
        super().__init__()
        if not 0.0 < cfg.whitening_threshold < 1.0:
            raise DiaError(f"whitening_threshold must be in (0, 1), got {cfg.whitening_threshold}")
        self.cfg = cfg
        self.teacher = timm_backbone(
            cfg.backbone, pretrained=cfg.pretrained, img_size=cfg.image_size, num_classes=0
        )
        depth = len(self.teacher.blocks)
        if not cfg.layers or not all(0 <= i < depth for i in cfg.layers):
            raise DiaError(f"layers {cfg.layers} must be non-empty block indices in [0, {depth})")
        self.student = copy.deepcopy(self.teacher.blocks)
        with torch.no_grad():
            for block in self.student:
                if not cfg.student_from_teacher:
                    _official_student_init(block)
                block.attn.attn_drop = nn.Dropout(cfg.dropout)
                block.attn.proj_drop = nn.Dropout(cfg.dropout)
                block.mlp.drop1 = nn.Dropout(0.0)
                block.mlp.drop2 = nn.Dropout(cfg.dropout)
        self.teacher.requires_grad_(False)
        self.student.requires_grad_(True)
        self.teacher.eval()
        self.whitening = _Whitening()
        self.pretrained_density = _Gaussian()
        self.distill_density = _Gaussian()

    def frozen_modules(self) -> list[nn.Module]:
        return [self.teacher]

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.Adam(self.student.parameters(), lr=self.cfg.lr), None

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return (resize_square(x, self.cfg.image_size) - _MEAN) / _STD

    @torch.no_grad()
    def _teacher_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token sequences entering block 0, then leaving each block (depth + 1 tensors)."""
        t = self.teacher
        h = t.norm_pre(t.patch_drop(t._pos_embed(t.patch_embed(self._prepare(x)))))
        states = [h]
        for block in t.blocks:
            h = block(h)
            states.append(h)
        return states

    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        states = self._teacher_states(x)
        seed = int(torch.randint(0, 2**62, (1,), generator=rng))
        on_accel = x.device.type != "cpu"
        with torch.random.fork_rng(
            devices=[x.device] if on_accel else [],
            device_type=x.device.type if on_accel else None,
        ):
            torch.manual_seed(seed)
            preds = torch.stack([block(states[i]) for i, block in enumerate(self.student)])
        return F.mse_loss(preds, torch.stack(states[1:]))

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher CLS feature (B, D) and per-layer student-teacher MSE (B, len(layers))."""
        states = self._teacher_states(x)
        cls = self.teacher.norm(states[-1])[:, 0]
        dists = [
            (self.student[i](states[i]) - states[i + 1]).pow(2).mean(dim=(1, 2))
            for i in self.cfg.layers
        ]
        return cls.double(), torch.stack(dists, dim=1).double()

    @torch.no_grad()
    def selection_loss(self, images: ImageBatches, device: str) -> float:
        """Mean over batches of ``batch_size`` of the training loss in eval mode (dropout off):
        ``utils.forward_one_epoch`` on the test normals, what the official run selects by."""
        was_training = self.training
        self.eval()
        # training_loss draws its dropout seed from a generator (unused in eval mode): a
        # throwaway one keeps the run's own stream untouched
        unused = torch.Generator()
        bs = self.cfg.batch_size
        losses = [
            float(self.training_loss(images[i : i + bs].to(device), unused))
            for i in range(0, len(images), bs)
        ]
        self.train(was_training)
        return sum(losses) / len(losses) if losses else float("nan")

    def fit_scoring(self, normals: ImageBatches, device: str) -> None:
        """Whitening and both Gaussians from the training normals, in eval mode as officially."""
        was_training = self.training
        self.eval()
        bs = self.cfg.score_batch_size
        feats = [self._features(normals[i : i + bs].to(device)) for i in range(0, len(normals), bs)]
        self.train(was_training)
        cls = torch.cat([c for c, _ in feats])
        dists = torch.cat([d for _, d in feats])
        self.whitening.fit(cls, self.cfg.whitening_threshold)
        self.pretrained_density.fit(self.whitening(cls), self.cfg.reg_covar)
        self.distill_density.fit(dists, self.cfg.reg_covar)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        if self.distill_density.chol is None:
            raise DiaError("Transformaly.anomaly_score needs fit_scoring to have run first")
        cls, dists = self._features(x)
        pretrained = self.pretrained_density.log_prob(self.whitening(cls))
        return -(pretrained + self.distill_density.log_prob(dists))
