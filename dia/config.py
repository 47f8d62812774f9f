"""Typed, validated stage configurations.

Snakemake passes each stage only its config subtree (so its ``params`` rerun trigger retrains
exactly what changed); the stage builds one of these frozen dataclasses from it. Unknown keys are
rejected with a one-line :class:`~dia.errors.DiaError` naming the key, which catches typos that a
silently ignored key would turn into a wrong experiment.

Where the DIA paper and the official code disagree, each difference is a named field, and the
presets :data:`PRESETS` bundle them: ``dia_code`` reproduces the official code, ``dia_paper``
follows the paper's text (docs: config/README.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Self, get_args

from dia.errors import DiaError

if TYPE_CHECKING:
    from dia.data.views import View

Scaling = Literal["unit", "symmetric"]
Fit = Literal["pad_crop", "resize"]
TSampling = Literal["per_batch_shift", "per_image"]
DissolveFlip = Literal["after", "before"]
CacheDtype = Literal["float32", "float16"]
FamilyModel = Literal["shared", "per_class"]
Precision = Literal["fp32", "bf16"]
Arch = Literal["resnet18_cifar", "resnet18_imagenet"]
Shift = Literal["rotation", "perm"]
Method = Literal["dia", "csi"]
Normalizer = Literal["all_views", "anchors"]
DissolveSource = Literal["cache", "online"]
DissolveKind = Literal["diffusion", "gaussian", "median", "none"]
BlurBranches = Literal["all", "dissolved"]
Weights = Literal["online", "ema"]
ResnetInit = Literal["official", "kaiming"]
ScoreFlip = Literal["per_shift", "shared"]
Ties = Literal["earlier", "later"]
HueFrom = Literal["atan2", "hexcone"]
Impl = Literal["native", "official"]

# The official ColorJitterLayer shifts hue by U(-0.1, 0.1) * 255 / 360 of the hue circle.
OFFICIAL_HUE = 0.1 * 255 / 360


def _check_literals(obj: Any, where: str) -> None:
    # Annotations are strings here (postponed evaluation), so look the Literal up by name.
    for field in dataclasses.fields(obj):
        allowed = LITERALS.get(str(field.type))
        value = getattr(obj, field.name)
        if allowed and value not in allowed:
            raise DiaError(
                f"config {where}.{field.name}: {value!r} is not one of {', '.join(allowed)}"
            )


def _frozen(value: Any) -> Any:
    """YAML lists (nested too) as tuples, so configs stay hashable."""
    return tuple(map(_frozen, value)) if isinstance(value, list | tuple) else value


class _Config:
    """Mixin: construction from a plain mapping with unknown-key and type checks."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, *, where: str = "") -> Self:
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise DiaError(
                f"unknown config key {where + '.' if where else ''}{unknown[0]}; "
                f"valid keys: {', '.join(sorted(names))}"
            )
        values = {key: _frozen(value) for key, value in values.items()}
        obj = cls(**values)  # type: ignore[call-arg]
        _check_literals(obj, where or cls.__name__)
        return obj

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(_Config):
    """denoising-diffusion-pytorch training (paper section 4.2).

    ``batch_by_resolution``: (resolution, batch size) pairs that replace ``batch_size`` at those
    resolutions; the paper trains with 128 at 64 px and 32 at 128 px, the official code with
    256 everywhere. ``family_model``: the one-class problems of a family (CIFAR) share one model
    per resolution and data ratio, trained on all its classes' training images, as the official
    code trains one per CIFAR dataset (``shared``); or each trains its own on its normal class
    (``per_class``).
    """

    resolution: int = 32
    dim: int = 64
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    timesteps: int = 1000
    steps: int = 25_000
    batch_size: int = 256
    grad_accum: int = 2
    lr: float = 8e-5
    adam_betas: tuple[float, float] = (0.9, 0.99)
    max_grad_norm: float = 1.0
    ema_decay: float = 0.995
    ema_update_every: int = 10
    hflip: bool = True
    batch_by_resolution: tuple[tuple[int, int], ...] = ()
    data_ratio: float = 1.0
    family_model: FamilyModel = "shared"
    precision: Precision = "fp32"
    checkpoint_every: int = 1000
    n_samples: int = 16
    sampling_timesteps: int = 250

    def at_resolution(self, resolution: int) -> DiffusionConfig:
        """This config for a model trained at ``resolution`` (with its batch size)."""
        batch = dict(self.batch_by_resolution).get(resolution, self.batch_size)
        return self.replace(resolution=resolution, batch_size=batch)


@dataclasses.dataclass(frozen=True)
class DissolveConfig(_Config):
    """The dissolving transformation x -> x0_hat(x, t) (paper Eq. 4).

    ``input_scaling``: ``unit`` feeds [0, 1] images as they are and keeps the [-1, 1]-clamped
    output (official code); ``symmetric`` maps to [-1, 1] and back (what the model was trained on).
    ``t_min``/``t_max`` are inclusive integer bounds of the uniform t draw. ``cache_dtype:
    float16`` stores the dissolve cache at half the size, each value within a relative 2^-11
    of float32 (dissolved values lie in [-1, 1]: within 2.5e-4, a sixteenth of a uint8 step).

    ``kind`` replaces the diffusion model for the official README's ablation: a ``gaussian``
    (7 x 7, sigma 1.4) or ``median`` blur of size ``blur_kernel``, or ``none`` (identity). The
    official code applies a blur to every branch, not only the dissolved one (``blur_branches:
    all``); ``dissolved`` blurs only the third branch, as the paper's Eq. reads.

    ``flip``: the third branch's random horizontal flip comes ``after`` dissolving (what a cache
    of unflipped dissolved images allows) or ``before`` it, as the official step does (online
    dissolving only).
    """

    kind: DissolveKind = "diffusion"
    blur_kernel: int = 7
    blur_branches: BlurBranches = "all"
    resolution: int = 32
    fit: Fit = "resize"
    input_scaling: Scaling = "unit"
    weights: Weights = "online"
    t_min: int = 30
    t_max: int = 99
    t_sampling: TSampling = "per_batch_shift"
    cache_t_stride: int = 1
    flip: DissolveFlip = "after"
    cache_dtype: CacheDtype = "float32"
    precision: Precision = "fp32"
    batch_size: int = 256


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig(_Config):
    """CSI and DIA training.

    ``lr_cosine_epochs`` is the period of the cosine decay (null: ``epochs``); the official code
    decays over its default 1000 epochs while the paper reports models within 200.
    ``resnet_init: official`` keeps PyTorch's default initialisation for the CIFAR-style network
    and Kaiming fan-out for the ImageNet-style one, as the two official model files do;
    ``kaiming`` uses Kaiming fan-out for both. ``drop_last: false`` trains on the last partial
    batch of every epoch, as the official DataLoader does. ``jitter_hue`` (fraction of the hue
    circle) and ``jitter_hue_from`` (see :func:`dia.contrastive.augment.rgb_to_hsv`) give the
    official colour jitter by default and SimCLR's (torchvision's) with 0.1 and ``hexcone``.
    ``impl: official`` trains and scores with the official repository's code
    (:mod:`dia.official.contrastive`) instead of this package's. ``channels_last`` and
    ``compile`` are GPU speed switches for training (NHWC convolutions, ``torch.compile``): a step
    agrees with the default one up to rounding, so runs are not bit-identical with and without.
    """

    method: Method = "dia"
    impl: Impl = "native"
    arch: Arch = "resnet18_cifar"
    width: int = 64
    image_size: int = 32
    shift: Shift = "rotation"
    batch_size: int = 32
    temperature: float = 0.5
    loss_normalizer: Normalizer = "all_views"
    epochs: int = 1000
    max_batches_per_epoch: int | None = 201
    lr: float = 0.1
    lr_cosine_epochs: int | None = None
    warmup_epochs: float = 10.0
    warmup_multiplier: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    lars_trust_coef: float = 1e-3
    crop_scale_min: float = 0.08
    jitter_p: float = 0.8
    gray_p: float = 0.2
    jitter_hue: float = OFFICIAL_HUE
    jitter_hue_from: HueFrom = "atan2"
    resnet_init: ResnetInit = "official"
    drop_last: bool = False
    dissolve_source: DissolveSource = "cache"
    eval_every_epochs: int = 10
    checkpoint_every_steps: int = 200
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False


@dataclasses.dataclass(frozen=True)
class ScoreConfig(_Config):
    """The CSI score, and how the selection rules break ties.

    ``flip: per_shift`` draws a new horizontal flip for each of the K shifted copies of an image
    (official); ``shared`` flips once and shifts the flipped image K ways. ``selection_ties:
    earlier`` keeps the first of equally good epochs, as the official strict ``>`` does.
    """

    samples: int = 10
    crop_scale: float = 0.54
    crop_fixed: bool = True
    flip: ScoreFlip = "per_shift"
    selection_ties: Ties = "earlier"
    batch_size: int = 128


@dataclasses.dataclass(frozen=True)
class BaselineConfig(_Config):
    """Fields every baseline has; each baseline's config adds its own, with official defaults.

    ``pretrained: false`` builds the backbones with random weights; it exists for tests and the
    CPU demo and is never a default. ``impl: official`` trains and scores with the baseline's
    official repository's code (:mod:`dia.official.baselines`) instead of this package's.
    """

    impl: Impl = "native"
    image_size: int = 224
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    pretrained: bool = True
    eval_every_epochs: int | None = dataclasses.field(default=None, metadata={"minimum": 1})
    # first evaluated epoch, then every eval_every_epochs (None: eval_every_epochs itself)
    eval_start_epoch: int | None = dataclasses.field(default=None, metadata={"minimum": 1})
    checkpoint_every_steps: int = 500
    score_batch_size: int = 64
    precision: Precision = "fp32"

    @classmethod
    def section(cls) -> str:
        """The baseline's config section (and registry key): ``KDADConfig`` -> ``kdad``."""
        return cls.__name__.removesuffix("Config").lower()

    def input_view(self) -> View:
        """How the official loader resizes an original image: ``Resize((image_size,
        image_size))`` unless the baseline says otherwise (:mod:`dia.data.views`)."""
        from dia.data.views import View

        return View("square", self.image_size)


LITERALS: dict[str, tuple[str, ...]] = {
    name: get_args(alias)
    for name, alias in {
        "Scaling": Scaling,
        "Fit": Fit,
        "TSampling": TSampling,
        "DissolveFlip": DissolveFlip,
        "CacheDtype": CacheDtype,
        "FamilyModel": FamilyModel,
        "Precision": Precision,
        "Arch": Arch,
        "Shift": Shift,
        "Method": Method,
        "Normalizer": Normalizer,
        "DissolveSource": DissolveSource,
        "DissolveKind": DissolveKind,
        "BlurBranches": BlurBranches,
        "Weights": Weights,
        "ResnetInit": ResnetInit,
        "ScoreFlip": ScoreFlip,
        "Ties": Ties,
        "HueFrom": HueFrom,
        "Impl": Impl,
    }.items()
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The official DIA repository's behaviour (its README command plus argparse defaults).
    "dia_code": {
        "contrastive": {"lr_cosine_epochs": 1000},
        "dissolve": {"t_min": 30, "t_max": 99, "input_scaling": "unit"},
        "score": {"crop_fixed": True},
    },
    # The paper's text: t ~ U(30, 130), lr 0.001 with plain cosine annealing over the 200 epochs
    # it trains, "200 samples" (7 batches of 32) per epoch, SimCLR's hue jitter of 0.1 of the
    # circle, images mapped to [-1, 1] for the diffusion model, the loss averaged over its anchor
    # terms (Eq. 7). Where the paper is silent it keeps the official behaviour.
    "dia_paper": {
        "diffusion": {"batch_by_resolution": ((64, 128), (128, 32))},
        "contrastive": {
            "lr": 0.001,
            "warmup_epochs": 0.0,
            "warmup_multiplier": 1.0,
            "epochs": 200,
            "lr_cosine_epochs": None,
            "max_batches_per_epoch": 7,
            "jitter_hue": 0.1,
            "jitter_hue_from": "hexcone",
            "loss_normalizer": "anchors",
        },
        "dissolve": {
            "t_min": 30,
            "t_max": 130,
            "input_scaling": "symmetric",
            "blur_branches": "dissolved",
        },
        "score": {},
    },
}


def preset(name: str) -> dict[str, dict[str, Any]]:
    if name not in PRESETS:
        raise DiaError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
