"""UniAD: "A Unified Model for Multi-class Anomaly Detection" (You et al., NeurIPS 2022).

A frozen ImageNet EfficientNet-B4 gives feature maps of several stages; they are resized to one
stride (16) and concatenated (the paper's MFCN neck). A transformer reconstructs these feature
tokens: a linear projection to 256 dimensions, 4 encoder layers, 4 decoder layers whose queries
are learned per layer (the "layer-wise query decoder"), and a projection back. Two tricks keep it
from learning the identity: attention is barred from each token's 7x7 neighbourhood (the
neighbour-masked attention, in the encoder and both decoder attentions), and training adds
feature jitter, Gaussian noise of scale 20 * ||token|| / channels, to the input tokens. The loss
is the MSE between the reconstruction and the clean features; the anomaly map is the L2 norm of
their difference, upsampled to the image, and the image score its maximum after a 16x16 average
pool (the MVTec evaluator; ``image_score: mean`` is the CIFAR-10 choice of the paper).

Official code: zhiyuanyou/UniAD at the pinned commit a5b9d9d20c2aae680fa00fe5088616b611e05f3c,
``experiments/MVTec-AD/config.yaml`` run by ``tools/train_val.py``; the model is
``models/reconstructions/uniad.py`` (a DETR-style post-norm transformer) with
``models/necks/mfcn.py``. Every config default below is that file's value.

Backbone stages: the official ``outlayers [1, 2, 3, 4]`` select EfficientNet-B4 blocks
[1, 5, 9, 21] (``models/backbones/__init__.py``), the last blocks of the stage groups at
strides 2, 4, 8 and 16 with 24, 32, 56 and 160 channels. timm's ``features_only`` feature
indices are exactly those stage ends (blocks.0, blocks.1, blocks.2, blocks.4), so official layer
``k`` is timm ``out_indices`` entry ``k - 1``.

Deviations, and why:

* Backbone weights: the official code loads lukemelas' ``efficientnet-b4-6ed6700e.pth``; this
  loads timm's ``tf_efficientnet_b4.aa_in1k``, the same TensorFlow AutoAugment checkpoint
  (through :mod:`dia.baselines.backbones`, so missing weights stop with instructions). timm pads
  "SAME" for the actual input while lukemelas pads statically for B4's native 380 px; at 224 px
  (and 128 px) the two differ only in the first 5x5 stride-2 depthwise conv of the stride-8 stage
  (official block 6), padded 1 px less at the top/left here.
* Gradient clipping (``trainer.clip_max_norm: 0.1``) runs as a step pre-hook of the optimiser,
  because the shared loop (:func:`dia.baselines.base.fit_baseline`) does not clip.
* The official loop calls ``StepLR.step(epoch)`` with the finished epoch's index, which delays
  the decay by one epoch (801 epochs at 1e-4, 199 at 1e-5); the shared loop's plain ``step()``
  decays after epoch 800.
* Randomness comes from the run's generator: the jitter noise and its ``prob`` draw, and a seed
  for the dropout of each training step (the official code uses Python's ``random``, and torch's
  global generators).
* Images arrive at their input size from the original files (the ``prepare_views`` rule: PIL
  bilinear, as the official ``custom`` dataset resizes); smaller datasets (MedMNIST) are resized
  here with torch's bilinear interpolation (antialiased when shrinking, as PIL is).
* Only the variants the official configs use are built: learned positional embedding, post-norm
  layers, ReLU, xavier-uniform initialisation of the linear layers.
* The official run evaluates every ``val_freq_epoch`` (10) epochs and keeps the checkpoint with
  the best test metric, an AUROC below 0.5 counting as its complement (``eval_helper.py``). That
  is the ``official`` selection rule (:mod:`dia.evaluation.selection`), reported beside the
  pipeline's own (``last`` the primary); the image-level AUROC stands in for MVTec-AD's key
  metric, the pixel AUROC, as these datasets have no masks.
* One model per normal class (DIA's one-class protocol) rather than one for all MVTec classes;
  the model and its training are the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dia.baselines.backbones import register_imagenet_stats, timm_backbone
from dia.baselines.base import BaselineModel, resize_square
from dia.config import BaselineConfig
from dia.errors import DiaError

IMAGE_SCORES = ("max", "mean", "std")


@dataclasses.dataclass(frozen=True)
class UniADConfig(BaselineConfig):
    """UniAD hyperparameters; defaults from experiments/MVTec-AD/config.yaml of the official repo.

    ``image_size`` must be a multiple of ``outstride`` and give a token grid larger than the
    neighbour mask (MedMNIST runs use 128, as the DIA paper does).
    """

    image_size: int = 224  # dataset.input_size [224, 224]
    epochs: int = 1000  # trainer.max_epoch
    eval_every_epochs: int | None = 10  # trainer.val_freq_epoch (the official selection's)
    batch_size: int = 8  # dataset.batch_size
    lr: float = 1e-4  # trainer.optimizer: AdamW lr
    betas: tuple[float, float] = (0.9, 0.999)  # trainer.optimizer betas
    weight_decay: float = 1e-4  # trainer.optimizer weight_decay
    lr_step_size: int = 800  # trainer.lr_scheduler: StepLR step_size (epochs)
    lr_gamma: float = 0.1  # trainer.lr_scheduler gamma
    clip_max_norm: float = 0.1  # trainer.clip_max_norm; 0 disables, as in the official check
    backbone: str = "tf_efficientnet_b4.aa_in1k"  # net.backbone efficientnet_b4 (pretrained)
    outlayers: tuple[int, ...] = (1, 2, 3, 4)  # net.backbone.outlayers (stride 2, 4, 8, 16)
    outstride: int = 16  # net.neck MFCN outstrides [16]
    hidden_dim: int = 256  # net.reconstruction.hidden_dim
    nhead: int = 8  # net.reconstruction.nhead
    num_encoder_layers: int = 4  # net.reconstruction.num_encoder_layers
    num_decoder_layers: int = 4  # net.reconstruction.num_decoder_layers
    dim_feedforward: int = 1024  # net.reconstruction.dim_feedforward
    dropout: float = 0.1  # net.reconstruction.dropout
    feature_jitter_scale: float = 20.0  # net.reconstruction.feature_jitter.scale
    feature_jitter_prob: float = 1.0  # net.reconstruction.feature_jitter.prob
    neighbor_size: tuple[int, ...] = (7, 7)  # net.reconstruction.neighbor_mask.neighbor_size
    # net.reconstruction.neighbor_mask.mask [enc, dec1, dec2]: all True
    neighbor_mask_encoder: bool = True
    neighbor_mask_decoder_memory: bool = True  # dec1: the queries attend to the encoder output
    neighbor_mask_decoder_output: bool = True  # dec2: ... to the previous decoder layer's output
    image_score: str = "max"  # evaluator "max" (MVTec-AD); "mean" (CIFAR-10 in the paper), "std"
    avgpool_size: int = 16  # evaluator max: avgpool_size [16, 16]

    def __post_init__(self) -> None:
        grid, rest = divmod(self.image_size, self.outstride)
        if rest or grid == 0:
            raise DiaError(
                f"uniad: image_size {self.image_size} is not a multiple of the feature stride "
                f"{self.outstride}; use e.g. 128 or 224"
            )
        if self.image_score not in IMAGE_SCORES:
            raise DiaError(
                f"uniad: image_score {self.image_score!r} is not one of {', '.join(IMAGE_SCORES)}"
            )
        if not self.outlayers or not set(self.outlayers) <= {1, 2, 3, 4, 5}:
            raise DiaError(f"uniad: outlayers {self.outlayers} must be EfficientNet layers 1..5")
        if len(self.neighbor_size) != 2 or min(self.neighbor_size) < 1:
            raise DiaError(f"uniad: neighbor_size {self.neighbor_size} must be two sizes >= 1")
        if self.hidden_dim % (2 * self.nhead):
            raise DiaError(
                f"uniad: hidden_dim {self.hidden_dim} must be a multiple of 2 * nhead "
                f"({2 * self.nhead})"
            )
        if not 1 <= self.avgpool_size <= self.image_size:
            raise DiaError(f"uniad: avgpool_size {self.avgpool_size} must be in 1..image_size")
        spans = [2 * (n // 2) + 1 for n in self.neighbor_size]
        masked = (
            self.neighbor_mask_encoder
            or self.neighbor_mask_decoder_memory
            or self.neighbor_mask_decoder_output
        )
        if masked and all(grid <= span for span in spans):
            raise DiaError(
                f"uniad: image_size {self.image_size} gives a {grid}x{grid} token grid that the "
                f"{spans[0]}x{spans[1]} neighbour mask covers entirely, so a query attends to no "
                f"token and the scores are NaN; use a larger image_size, at least "
                f"{self.outstride * (min(spans) + 1)} (the DIA paper runs MedMNIST at 128)"
            )


def neighbour_mask(grid: int, size: tuple[int, ...]) -> torch.Tensor:
    """(grid^2, grid^2) bool attention mask, True where a query may NOT look.

    Tokens are in row-major order; each query is barred from the ``size`` window around itself
    (clipped at the border), so it must reconstruct itself from farther tokens.
    """
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    near_rows = (rows[:, None] - rows[None, :]).abs() <= size[0] // 2
    near_cols = (cols[:, None] - cols[None, :]).abs() <= size[1] // 2
    return near_rows & near_cols


def _feed_forward(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, dim),
        nn.Dropout(dropout),
    )


class _EncoderLayer(nn.Module):
    """DETR post-norm encoder layer; positions are added to queries and keys, not values."""

    def __init__(self, dim: int, nhead: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = _feed_forward(dim, hidden, dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        q = x + pos
        x = self.norm1(x + self.drop(self.attn(q, q, x, attn_mask=mask, need_weights=False)[0]))
        return self.norm2(x + self.ff(x))


class _DecoderLayer(nn.Module):
    """Layer-wise query decoder layer: its own learned queries attend first to the encoder
    output, then to the previous decoder layer's output (the encoder output for the first)."""

    def __init__(self, dim: int, tokens: int, nhead: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Embedding(tokens, dim)
        self.memory_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.output_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = _feed_forward(dim, hidden, dropout)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        out: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        memory_mask: torch.Tensor | None,
        output_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        q = self.query.weight.expand(memory.shape[0], -1, -1)
        attended = self.memory_attn(
            q + pos, memory + pos, memory, attn_mask=memory_mask, need_weights=False
        )[0]
        q = self.norm1(q + self.drop(attended))
        attended = self.output_attn(
            q + pos, out + pos, out, attn_mask=output_mask, need_weights=False
        )[0]
        q = self.norm2(q + self.drop(attended))
        return self.norm3(q + self.ff(q))


class _Reconstructor(nn.Module):
    """The UniAD transformer: (B, grid^2, channels) feature tokens -> their reconstruction."""

    def __init__(self, channels: int, grid: int, cfg: UniADConfig) -> None:
        super().__init__()
        dim = cfg.hidden_dim
        self.grid = grid
        self.input_proj = nn.Linear(channels, dim)
        self.row_embed = nn.Embedding(grid, dim // 2)
        self.col_embed = nn.Embedding(grid, dim // 2)
        self.encoder = nn.ModuleList(
            _EncoderLayer(dim, cfg.nhead, cfg.dim_feedforward, cfg.dropout)
            for _ in range(cfg.num_encoder_layers)
        )
        self.decoder = nn.ModuleList(
            _DecoderLayer(dim, grid * grid, cfg.nhead, cfg.dim_feedforward, cfg.dropout)
            for _ in range(cfg.num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.output_proj = nn.Linear(dim, channels)
        self.register_buffer("mask", neighbour_mask(grid, cfg.neighbor_size), persistent=False)
        self.masked = (
            cfg.neighbor_mask_encoder,
            cfg.neighbor_mask_decoder_memory,
            cfg.neighbor_mask_decoder_output,
        )
        # Official initialiser: xavier-uniform weights and zero biases of every linear layer
        # (attention output projections included); embeddings keep their own initialisation.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def positions(self) -> torch.Tensor:
        """(grid^2, dim) learned embedding: [column embedding, row embedding] per token."""
        g = self.grid
        cols = self.col_embed.weight[None].expand(g, g, -1)
        rows = self.row_embed.weight[:, None].expand(g, g, -1)
        return torch.cat([cols, rows], dim=-1).flatten(0, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        enc_mask, memory_mask, output_mask = (self.mask if on else None for on in self.masked)
        pos = self.positions()
        memory = self.input_proj(tokens)
        for layer in self.encoder:
            memory = layer(memory, pos, enc_mask)
        out = memory
        for layer in self.decoder:
            out = layer(out, memory, pos, memory_mask, output_mask)
        return self.output_proj(self.decoder_norm(out))


@contextlib.contextmanager
def _dropout_seeded(rng: torch.Generator, device: torch.device) -> Iterator[None]:
    """Seed the global generators dropout draws from with a seed drawn from ``rng``, and restore
    them afterwards, so a training step is reproducible (and resumable) on CPU and CUDA alike."""
    seed = int(torch.randint(2**62, (), generator=rng))
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else [], device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


class UniAD(BaselineModel):
    """Frozen EfficientNet features, reconstructed by the neighbour-masked transformer."""

    def __init__(self, cfg: UniADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = cfg.image_size // cfg.outstride
        self.backbone = timm_backbone(
            cfg.backbone,
            pretrained=cfg.pretrained,
            features_only=True,
            out_indices=tuple(layer - 1 for layer in cfg.outlayers),
        )
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        channels = sum(self.backbone.feature_info.channels())
        self.reconstruction = _Reconstructor(channels, self.grid, cfg)
        register_imagenet_stats(self)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
        cfg = self.cfg
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        if cfg.clip_max_norm:

            def clip(*_: object) -> None:
                nn.utils.clip_grad_norm_(params, cfg.clip_max_norm)

            opt.register_step_pre_hook(clip)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
        return opt, sched

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, grid^2, C) tokens: the selected stages resized to the common stride, concatenated.

        Like the official MFCN (``nn.UpsamplingBilinear2d``), resizing is bilinear with aligned
        corners, which samples the finer maps rather than averaging them.
        """
        x = resize_square(x, self.cfg.image_size)
        maps = self.backbone((x - self.mean) / self.std)
        g = self.grid
        maps = [F.interpolate(m, size=(g, g), mode="bilinear", align_corners=True) for m in maps]
        return torch.cat(maps, dim=1).flatten(2).transpose(1, 2)

    def jitter(self, tokens: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Feature jitter: with probability ``prob``, noise N(0, (scale * ||token|| / C)^2)."""
        if float(torch.rand((), generator=rng)) > self.cfg.feature_jitter_prob:
            return tokens
        noise = torch.randn(tokens.shape, generator=rng).to(tokens.device)
        spread = tokens.norm(dim=-1, keepdim=True) / tokens.shape[-1]
        return tokens + noise * spread * self.cfg.feature_jitter_scale

    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        tokens = self.features(x)
        noisy = self.jitter(tokens, rng)
        with _dropout_seeded(rng, x.device):
            reconstructed = self.reconstruction(noisy)
        return F.mse_loss(reconstructed, tokens)

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, image_size, image_size) L2 reconstruction error, bilinearly upsampled."""
        tokens = self.features(x)
        error = torch.linalg.vector_norm(self.reconstruction(tokens) - tokens, dim=-1)
        error = error.view(-1, 1, self.grid, self.grid)
        size = self.cfg.image_size
        return F.interpolate(error, size=(size, size), mode="bilinear", align_corners=True)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        amap = self.anomaly_map(x)
        if self.cfg.image_score == "max":
            return F.avg_pool2d(amap, self.cfg.avgpool_size, stride=1).amax(dim=(1, 2, 3))
        if self.cfg.image_score == "mean":
            return amap.mean(dim=(1, 2, 3))
        return amap.flatten(1).std(dim=1, correction=0)
