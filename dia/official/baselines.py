"""``impl: official`` for the baselines: each trained and scored by its official repository's code
on this pipeline's data, with the same files as a native run.

What is theirs, and what the adapter replaces:

* **KDAD** (rohban-lab/Knowledge_Distillation_AD): their training function ``train.train(config)``
  runs, with its networks (``models.network.get_networks``: ``Vgg16`` source, ``make_arch``
  cloner), loss (``MseDirectionLoss`` / ``DirectionOnlyLoss``), Adam and epoch loop. Replaced:
  ``load_data`` (a loader of our normals resized to ``image_size`` in [0, 1], as their
  ``retina`` branch yields them), ``detection_test`` during training (their test AUROC every 10
  epochs; our evaluation runs every ``eval_every_epochs``), and ``get_networks`` returns the
  networks the adapter built beforehand with their ``get_networks`` (so a rerun can load them).
  The score is their ``test_functions.detection_test``: the per-image values it hands to
  ``roc_curve``. Their own checkpoints land in ``state_dir/official``.
* **Mean-Shift** (talreiss/Mean-Shifted-Anomaly-Detection): their training function
  ``main.train_model`` runs, with their ``utils.Model`` (backbone, freezing, normalised
  features), ``run_epoch``, ``contrastive_loss``, SGD and centre, on loaders of our images made
  PIL images for their transforms (``utils.Transform`` views; ``transform_color`` or
  ``transform_resnet18`` for features). Replaced: ``get_score``, whose train features (the
  centre) are extracted the same way and whose per-epoch test AUROC becomes our evaluation. The
  score is their ``utils.knn_score`` over their model's features of their eval transform.
* **RD4AD** (hq-deng/RD4AD): their ``main.train(_class_)`` cannot be driven (MVTec folders,
  200 epochs and batch 16 hard-coded, a pixel-level evaluation against MVTec masks), so their
  encoder and OCBE (``resnet.<backbone>``), decoder (``de_resnet.de_<backbone>``), loss
  (``main.loss_fucntion``) and image score (``test.cal_anomaly_map(..., amap_mode='a')``, their
  ``gaussian_filter``, the maximum: the per-image lines of ``test.evaluation``) run in our loop,
  :func:`~dia.baselines.base.fit_baseline`, with their optimiser (Adam over decoder and OCBE;
  lr and betas from the config, whose defaults are theirs). Replaced: the data loading (resize
  and ImageNet normalisation of ``get_data_transforms``, on tensors); the encoder's parameters
  are frozen, which changes nothing (their optimiser never holds them).
* **UniAD** (zhiyuanyou/UniAD): its driver ``tools/train_val.main`` assumes
  ``torch.distributed`` (``setup_distributed``, ``DistributedDataParallel``, distributed
  samplers, a ``validate`` that gathers files across ranks), so the adapter runs main()'s epoch
  loop itself on one process: their ``ModelHelper`` built from a config shaped like
  ``experiments/MVTec-AD/config.yaml`` (via their ``update_config``), their ``get_optimizer``,
  ``get_scheduler`` and ``build_criterion``, then per epoch their ``train_one_epoch`` (forward,
  loss, gradient clipping, AdamW step) and ``lr_scheduler.step(epoch)``. Replaced: the
  distributed parts (``dist`` answers for a world of one process, the model is handed over as
  ``.module`` like DDP does), the data loading (our images resized and normalised as their
  dataset does), ``validate`` (our evaluation) and the checkpoints. The score is their
  evaluator's image score (``EvalImageMax.encode_pred`` of the anomaly map, or ``Mean`` /
  ``Std``).
* **Transformaly** has no adapter: its score exists only as module-level code under
  ``if __name__ == '__main__':`` in ``eval.py``, which nothing can import, and reads features
  that ``utils.extract_fetures`` writes after loading its own datasets (CIFAR-10/100, FMNIST,
  cats-vs-dogs, DIOR); its ``AnomalyViT`` builds only the named ViT-B/16, B/32 and L/16
  configurations (without a name it raises ``NameError: name 'resize_positional_embedding' is
  not defined``).

The torchvision backbones (RD4AD, KDAD, Mean-Shift) are built by :mod:`dia.baselines.backbones`
in the order the native model builds them after the same seed, so the native and official runs
of a seed start from the same (random or ImageNet) backbone weights; KDAD's cloner, drawn next
in the same order, starts equal too. UniAD's official EfficientNet is lukemelas' implementation,
not timm's, so its random weights differ from the native run's. The driven loops checkpoint at
every epoch end (model, optimiser, scheduler, RNGs) and resume from there. Settings the official
code hard-codes are refused when the config differs.
"""

from __future__ import annotations

import contextlib
import re
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, Dataset

from dia.baselines.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    register_imagenet_stats,
    torchvision_backbone,
)
from dia.baselines.base import BaselineModel, fit_baseline, resize_square, schedule
from dia.baselines.kdad import KDADConfig
from dia.baselines.meanshift import MeanShiftConfig
from dia.baselines.rd4ad import RD4ADConfig
from dia.baselines.uniad import UniADConfig
from dia.checkpoint import global_rng_state, load_state, set_global_rng_state
from dia.data.prepare import ImageBatches
from dia.errors import DiaError
from dia.io import atomic_path
from dia.official.contrastive import seed_everything
from dia.official.imports import import_official, legacy_runtime
from dia.official.repos import recorded
from dia.training import TrainState, check_finite

EvalFn = Callable[[nn.Module], dict[str, np.ndarray]]


# backbone -> their encoder (with OCBE) and decoder builders
RD4AD_BUILDERS = {
    "wide_resnet50_2": ("wide_resnet50_2", "de_wide_resnet50_2"),
    "resnet18": ("resnet18", "de_resnet18"),
}
# MseDirectionLoss reads taps 3, 6, 9, 12 (pools 2-5), detection_test taps 6, 9, 12
KDAD_FIXED = {"loss_pools": (2, 3, 4, 5), "score_pools": (3, 4, 5)}
MEANSHIFT_DEPTHS = {"resnet152": 152, "resnet18": 18}
# utils.py transforms, main.py contrastive_loss and SGD, utils.knn_score's default k
MEANSHIFT_FIXED = {
    "image_size": 224,
    "frozen_stages": None,
    "weight_decay": 5e-5,
    "temperature": 0.25,
    "knn_k": 2,
    "crop_scale": (0.2, 1.0),
    "jitter": (0.4, 0.4, 0.4, 0.1),
    "jitter_p": 0.8,
    "gray_p": 0.2,
    "blur_p": 0.5,
    "blur_sigma": (0.1, 2.0),
}


def _check_fixed(name: str, cfg: Any, fixed: dict[str, Any]) -> None:
    """Stop naming every setting that differs from what the official code hard-codes."""
    wrong = [
        f"{name}.{key}: {getattr(cfg, key)!r} (official: {value!r})"
        for key, value in fixed.items()
        if getattr(cfg, key) != value
    ]
    if wrong:
        raise DiaError(
            "impl: official cannot run with "
            + "; ".join(wrong)
            + ": the official code hard-codes these; remove them or use impl: native"
        )


def _check_device(device: str) -> None:
    official = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != official:
        raise DiaError(
            f"impl: official runs on {official} (the official code calls .cuda() itself); set "
            f"device: auto instead of {device}"
        )


@contextlib.contextmanager
def _patched(module: types.ModuleType, **names: Any) -> Iterator[None]:
    """Bind names in a module of the snapshot while its code runs (globals its ``main()`` would
    set included); its files stay untouched."""
    saved = {name: vars(module)[name] for name in names if name in vars(module)}
    vars(module).update(names)
    try:
        yield
    finally:
        for name in names:
            del vars(module)[name]
        vars(module).update(saved)


@contextlib.contextmanager
def _optimizer_hook(hook: Callable[[torch.optim.Optimizer], None]) -> Iterator[None]:
    """Call ``hook`` with every optimiser before its step: how the adapter reaches the optimiser
    an official training function builds in a local variable."""
    handle = register_optimizer_step_pre_hook(lambda optimizer, _args, _kwargs: hook(optimizer))
    try:
        yield
    finally:
        handle.remove()


def _to_pil(image: torch.Tensor) -> Image.Image:
    """A (3, H, W) image in [0, 1] as the RGB PIL image it was decoded from (exact for uint8)."""
    array = (image * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


class _Resized(Dataset):
    """(image resized to ``size``, in [0, 1], label 0) pairs."""

    def __init__(self, images: ImageBatches, size: int) -> None:
        self.images, self.size = images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return resize_square(self.images[np.array([index])], self.size)[0], 0


class _PILImages(Dataset):
    """(``transform`` of the PIL image, label 0) pairs, as their CIFAR-10 datasets yield."""

    def __init__(self, images: ImageBatches, transform: Callable[[Image.Image], Any]) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(_to_pil(self.images[np.array([index])][0])), 0


class _Passes:
    """A loader that calls ``on_pass`` whenever a loop starts a pass over it (an epoch)."""

    def __init__(self, loader: DataLoader, on_pass: Callable[[], None]) -> None:
        self.loader, self.on_pass = loader, on_pass

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.on_pass()
        return iter(self.loader)


class _Epochs:
    """Epoch bookkeeping around an official training function: the log, our evaluations every
    ``eval_every_epochs``, and a checkpoint at every epoch end in ``state_dir/last.pt``.

    A rerun restores the checkpoint in the steps the official code allows: the model, the
    optimiser once the official code has built it, and the RNGs before the next epoch's draws.
    """

    def __init__(
        self, model: nn.Module, state_dir: Path, evaluate: EvalFn | None, steps_per_epoch: int
    ) -> None:
        self.model, self.evaluate, self.steps_per_epoch = model, evaluate, steps_per_epoch
        self.file = state_dir / "last.pt"
        self.resumed = load_state(self.file)
        self.state = TrainState.from_dict(self.resumed["state"]) if self.resumed else TrainState()
        self.optimizer: Any = None  # the training function's, once known
        self.scheduler: Any = None
        self.started = time.perf_counter()

    @property
    def remaining(self) -> int:
        return self.model.cfg.epochs - self.state.epoch

    def resume_model(self) -> None:
        if self.resumed:
            self.model.load_state_dict(self.resumed["model"])

    def resume_optimizer(self, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> None:
        if self.optimizer is None and self.resumed:
            optimizer.load_state_dict(self.resumed["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(self.resumed["scheduler"])
        self.optimizer, self.scheduler = optimizer, scheduler

    def resume_rng(self) -> None:
        if self.resumed:
            set_global_rng_state(self.resumed["rng"])
        self.started = time.perf_counter()

    def end(self, loss: float) -> None:
        """The epoch just trained: log it, evaluate it when due, checkpoint."""
        state, cfg = self.state, self.model.cfg
        name = f"{cfg.section()} (official)"
        check_finite(
            {"loss": loss}, name=name, where=f"epoch {state.epoch + 1}", knob=f"{cfg.section()}.lr"
        )
        state.epoch += 1
        state.step += self.steps_per_epoch
        state.log.append(
            {
                "epoch": state.epoch,
                "step": state.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - self.started,
                "loss": loss,
            }
        )
        if self.evaluate and schedule(cfg).evaluates_after(state.epoch):
            state.evals.append((state.epoch, self.evaluate(self.model)))
            self.model.train()
        with atomic_path(self.file) as tmp:
            torch.save(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                    "rng": global_rng_state(),
                    "state": state.to_dict(),
                },
                tmp,
            )
        self.started = time.perf_counter()


class OfficialRD4AD(BaselineModel):
    """Their encoder, OCBE, decoder, loss and image score in :func:`fit_baseline`."""

    MODULES = ("resnet", "de_resnet", "main", "test")

    def __init__(self, cfg: RD4ADConfig, folder: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.official = import_official(folder, *self.MODULES)
        encoder, decoder = RD4AD_BUILDERS[cfg.backbone]
        # their _resnet(pretrained=True) loads torchvision's file; the weights are the same
        backbone = torchvision_backbone(cfg.backbone, pretrained=cfg.pretrained)
        self.encoder, self.bn = getattr(self.official["resnet"], encoder)(pretrained=False)
        self.encoder.load_state_dict(backbone.state_dict())
        self.encoder.requires_grad_(False)
        self.decoder = getattr(self.official["de_resnet"], decoder)(pretrained=False)
        register_imagenet_stats(self)
        self.train()

    def frozen_modules(self) -> list[nn.Module]:
        """The encoder stays in eval mode, as ``main.train`` sets it once."""
        return [self.encoder]

    def fit(
        self,
        normals: ImageBatches,
        *,
        seed: int,
        device: str,
        state_dir: Path,
        evaluate: EvalFn | None,
    ) -> TrainState:
        return fit_baseline(
            self, normals, seed=seed, device=device, state_dir=state_dir, evaluate=evaluate
        )

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        params = [*self.decoder.parameters(), *self.bn.parameters()]  # main.train's order
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=self.cfg.adam_betas), None

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        inputs = self.encoder((resize_square(x, self.cfg.image_size) - self.mean) / self.std)
        return inputs, self.decoder(self.bn(inputs))

    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return self.official["main"].loss_fucntion(*self._features(x))

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        test = self.official["test"]
        inputs, outputs = self._features(x)
        scores = []
        for i in range(len(x)):
            anomaly_map, _ = test.cal_anomaly_map(
                [f[i : i + 1] for f in inputs],
                [f[i : i + 1] for f in outputs],
                self.cfg.image_size,
                amap_mode="a",
            )
            smoothed = test.gaussian_filter(
                anomaly_map, sigma=self.cfg.gaussian_sigma, truncate=self.cfg.gaussian_truncate
            )
            scores.append(np.max(smoothed))
        return torch.tensor(scores)


class _Driven(BaselineModel):
    """An official model trained by its own training function (:meth:`fit`), so the per-batch
    hooks of :func:`fit_baseline` have no official counterpart; scoring is as for any baseline."""

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        raise DiaError(f"{type(self).__name__} trains with its official training function")

    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        raise DiaError(f"{type(self).__name__} trains with its official training function")


class OfficialKDAD(_Driven):
    """Their source and cloner, trained by their ``train.train`` and scored by their
    ``detection_test``."""

    MODULES = ("train", "models.network", "test_functions")

    def __init__(self, cfg: KDADConfig, folder: Path) -> None:
        super().__init__()
        _check_fixed("kdad", cfg, KDAD_FIXED)
        self.cfg = cfg
        self.official = import_official(folder, *self.MODULES)
        network = self.official["models.network"]

        def vgg16(*_args: Any, **_kwargs: Any) -> nn.Module:
            return torchvision_backbone("vgg16", pretrained=cfg.pretrained)

        with _patched(network, vgg16=vgg16), legacy_runtime():
            self.source, self.cloner = network.get_networks(self._config(0))

    def frozen_modules(self) -> list[nn.Module]:
        """The source stays in eval mode, as their ``Vgg16`` sets it."""
        return [self.source]

    def _config(self, epochs: int) -> dict[str, Any]:
        """Their configs/config.yaml with our settings. ``pretrain: True`` keeps the source this
        adapter gives their ``Vgg16`` (random when ``pretrained`` is false) un-reinitialised."""
        cfg = self.cfg
        return {
            "experiment_name": "official",
            "dataset_name": "data",
            "normal_class": 0,
            "num_epochs": epochs - 1,  # their loop trains range(num_epochs + 1)
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.lr,
            "lamda": cfg.lamda,
            "pretrain": True,
            "use_bias": cfg.use_bias,
            "equal_network_size": cfg.equal_network_size,
            "direction_loss_only": cfg.direction_loss_only,
            "continue_train": False,
            "last_checkpoint": 0,
        }

    def fit(
        self,
        normals: ImageBatches,
        *,
        seed: int,
        device: str,
        state_dir: Path,
        evaluate: EvalFn | None,
    ) -> TrainState:
        """Run their ``train(config)`` for the epochs left; see the module docstring."""
        train = self.official["train"]
        loader = DataLoader(
            _Resized(normals, self.cfg.image_size), batch_size=self.cfg.batch_size, shuffle=True
        )
        epochs = _Epochs(self, state_dir, evaluate, len(loader))
        epochs.resume_model()
        if not epochs.remaining:
            return epochs.state
        losses: list[float] = []
        passes = 0

        def on_pass() -> None:
            nonlocal passes
            if passes:
                epochs.end(float(np.mean(losses)))
                losses.clear()
            else:
                epochs.resume_rng()
            passes += 1

        workdir = state_dir / "official"
        workdir.mkdir(parents=True, exist_ok=True)
        replaced = {
            "load_data": lambda _config: (_Passes(loader, on_pass), None),
            "get_networks": lambda *_args, **_kwargs: (self.source, self.cloner),
            "detection_test": lambda *_args, **_kwargs: float("nan"),
            "MseDirectionLoss": _recording(train.MseDirectionLoss, losses),
            "DirectionOnlyLoss": _recording(train.DirectionOnlyLoss, losses),
        }
        with (
            _patched(train, **replaced),
            _optimizer_hook(epochs.resume_optimizer),
            legacy_runtime(),
            contextlib.chdir(workdir),
        ):
            train.train(self._config(epochs.remaining))
        if passes:
            epochs.end(float(np.mean(losses)))
        return epochs.state

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """``detection_test``'s per-image scores (the values it passes to ``roc_curve``), with
        gradients on as there: their cloner registers a gradient hook in its forward."""
        test_functions = self.official["test_functions"]
        scores: list[np.ndarray] = []

        def roc_curve(_labels: Any, values: Any, **_kwargs: Any) -> tuple[np.ndarray, ...]:
            scores.append(np.asarray(values))
            return np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([1.0, 0.0])

        batch = [(resize_square(x, self.cfg.image_size), torch.zeros(len(x), dtype=torch.long))]
        with _patched(test_functions, roc_curve=roc_curve), legacy_runtime(), torch.enable_grad():
            test_functions.detection_test(self.cloner, self.source, batch, self._config(0))
        return torch.as_tensor(scores[0])


def _recording(loss: type[nn.Module], sink: list[float]) -> type[nn.Module]:
    """Their loss class, also appending each batch's value to ``sink`` (the epoch's log)."""

    class Recording(loss):  # type: ignore[misc, valid-type]
        def forward(self, *args: Any) -> torch.Tensor:
            value = super().forward(*args)
            sink.append(value.item())
            return value

    return Recording


class OfficialMeanShift(_Driven):
    """Their ``utils.Model`` trained by their ``main.train_model``, scored by their
    ``utils.knn_score``."""

    MODULES = ("main", "utils")

    def __init__(self, cfg: MeanShiftConfig, folder: Path) -> None:
        super().__init__()
        _check_fixed("meanshift", cfg, MEANSHIFT_FIXED)
        self.cfg = cfg
        self.official = import_official(folder, *self.MODULES)
        utils = self.official["utils"]
        models = types.SimpleNamespace(
            **{
                name: lambda name=name, **_kwargs: torchvision_backbone(
                    name, pretrained=cfg.pretrained
                )
                for name in MEANSHIFT_DEPTHS
            }
        )
        with _patched(utils, models=models):
            self.net = utils.Model(MEANSHIFT_DEPTHS[cfg.backbone])
        # utils.get_loaders: the transform of the feature loaders
        self.transform = (
            utils.transform_color if cfg.backbone == "resnet152" else utils.transform_resnet18
        )
        self.bank: np.ndarray | None = None
        self.train()

    def frozen_modules(self) -> list[nn.Module]:
        """The network stays in eval mode: ``train_model`` sets it once and never back."""
        return [self.net]

    @torch.no_grad()
    def _features(self, images: ImageBatches, device: str) -> np.ndarray:
        """Their model's features of their eval transform, as ``get_score`` extracts them."""
        loader = DataLoader(
            _PILImages(images, self.transform), batch_size=self.cfg.score_batch_size
        )
        return torch.cat([self.net(x.to(device)) for x, _ in loader]).contiguous().cpu().numpy()

    def fit(
        self,
        normals: ImageBatches,
        *,
        seed: int,
        device: str,
        state_dir: Path,
        evaluate: EvalFn | None,
    ) -> TrainState:
        """Run their ``train_model`` for the epochs left; see the module docstring."""
        main, utils = self.official["main"], self.official["utils"]
        views = DataLoader(
            _PILImages(normals, utils.Transform()), batch_size=self.cfg.batch_size, shuffle=True
        )
        epochs = _Epochs(self, state_dir, evaluate, len(views))
        if not epochs.remaining:
            epochs.resume_model()
            return epochs.state
        run_epoch = main.run_epoch
        centre_features: list[np.ndarray] = []

        def get_score(*_args: Any) -> tuple[float, np.ndarray | None]:
            if centre_features:  # after an epoch: their test AUROC, our evaluation's job
                return float("nan"), None
            centre_features.append(self._features(normals, device))
            return float("nan"), centre_features[0]

        def epoch(*args: Any) -> float:
            if epochs.optimizer is None:  # the centre is the initial model's: resume after it
                epochs.resume_model()
                epochs.resume_optimizer(args[2])
                epochs.resume_rng()
            loss = run_epoch(*args)
            epochs.end(loss)
            return loss

        opts = types.SimpleNamespace(
            lr=self.cfg.lr, epochs=epochs.remaining, angular=self.cfg.angular
        )
        with _patched(main, get_score=get_score, run_epoch=epoch):
            main.train_model(self.net, None, None, views, torch.device(device), opts)
        return epochs.state

    def fit_scoring(self, normals: ImageBatches, device: str) -> None:
        self.bank = self._features(normals, device)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        if self.bank is None:
            raise DiaError("OfficialMeanShift.anomaly_score called before fit_scoring")
        batch = torch.stack([self.transform(_to_pil(image)) for image in x]).to(x.device)
        features = self.net(batch).cpu().numpy()
        return torch.as_tensor(self.official["utils"].knn_score(self.bank, features))


class _Replica(nn.Module):
    """``DistributedDataParallel`` on one process: the model as ``.module``, called through."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.module(batch)


# torch.distributed as train_one_epoch uses it, for a world of one process
_ONE_PROCESS = types.SimpleNamespace(
    get_world_size=lambda: 1, get_rank=lambda: 0, all_reduce=lambda *_args, **_kwargs: None
)


class _Normalized(Dataset):
    """``{"image": ...}`` resized to ``size`` and normalised, as their datasets yield it."""

    def __init__(self, images: ImageBatches, size: int) -> None:
        self.images, self.size = images, size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = resize_square(self.images[np.array([index])], self.size)[0]
        return {"image": (image - self.mean) / self.std}


def _uniad_reconstruction(cfg: UniADConfig) -> dict[str, Any]:
    """The ``reconstruction`` kwargs of their config.yaml, with our settings."""
    return {
        "pos_embed_type": "learned",
        "hidden_dim": cfg.hidden_dim,
        "nhead": cfg.nhead,
        "num_encoder_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "dim_feedforward": cfg.dim_feedforward,
        "dropout": cfg.dropout,
        "activation": "relu",
        "normalize_before": False,
        "feature_jitter": {"scale": cfg.feature_jitter_scale, "prob": cfg.feature_jitter_prob},
        "neighbor_mask": {
            "neighbor_size": list(cfg.neighbor_size),
            "mask": [
                cfg.neighbor_mask_encoder,
                cfg.neighbor_mask_decoder_memory,
                cfg.neighbor_mask_decoder_output,
            ],
        },
        "save_recon": False,
        "initializer": {"method": "xavier_uniform"},
    }


def _uniad_trainer(cfg: UniADConfig) -> dict[str, Any]:
    """The ``trainer`` section of their config.yaml: epochs, clipping, StepLR and AdamW."""
    return {
        "max_epoch": cfg.epochs,
        "clip_max_norm": cfg.clip_max_norm,
        "print_freq_step": 1,
        "lr_scheduler": {
            "type": "StepLR",
            "kwargs": {"step_size": cfg.lr_step_size, "gamma": cfg.lr_gamma},
        },
        "optimizer": {
            "type": "AdamW",
            "kwargs": {"lr": cfg.lr, "betas": list(cfg.betas), "weight_decay": cfg.weight_decay},
        },
    }


class OfficialUniAD(_Driven):
    """Their ``ModelHelper`` (EfficientNet backbone, MFCN neck, UniAD reconstruction) trained by
    their ``train_one_epoch`` on one process, scored by their evaluator's image score."""

    MODULES = (
        "tools.train_val",
        "models.model_helper",
        "models.backbones",
        "models.necks",
        "models.reconstructions",
        "utils.misc_helper",
        "utils.eval_helper",
    )

    def __init__(self, cfg: UniADConfig, folder: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.official = import_official(folder, *self.MODULES)
        self.config = self._config()
        # update_config and ModelHelper import the classes the config names at call time
        modules = types.SimpleNamespace(import_module=self.official.__getitem__)
        helper, misc = self.official["models.model_helper"], self.official["utils.misc_helper"]
        with _patched(helper, importlib=modules), _patched(misc, importlib=modules):
            misc.update_config(self.config)
            self.helper = helper.ModelHelper(self.config.net)
        register_imagenet_stats(self)

    def _config(self) -> Any:
        """experiments/MVTec-AD/config.yaml with our settings (EasyDict, as main() reads it)."""
        cfg = self.cfg
        backbone = re.search(r"efficientnet_b\d", cfg.backbone)
        if backbone is None:
            raise DiaError(
                f"uniad.backbone {cfg.backbone!r}: the official UniAD builds EfficientNet-B0..B6 "
                f"(tf_efficientnet_b<k>)"
            )
        size = cfg.image_size
        config = {
            "dataset": {"input_size": [size, size], "batch_size": cfg.batch_size},
            "criterion": [
                {"name": "FeatureMSELoss", "type": "FeatureMSELoss", "kwargs": {"weight": 1.0}}
            ],
            "trainer": _uniad_trainer(cfg),
            "frozen_layers": ["backbone"],
            "net": [
                {
                    "name": "backbone",
                    "type": f"models.backbones.{backbone[0]}",
                    "frozen": True,
                    "kwargs": {"pretrained": cfg.pretrained, "outlayers": list(cfg.outlayers)},
                },
                {
                    "name": "neck",
                    "prev": "backbone",
                    "type": "models.necks.MFCN",
                    "kwargs": {"outstrides": [cfg.outstride]},
                },
                {
                    "name": "reconstruction",
                    "prev": "neck",
                    "type": "models.reconstructions.UniAD",
                    "kwargs": _uniad_reconstruction(cfg),
                },
            ],
        }
        return self.official["tools.train_val"].EasyDict(config)

    def fit(
        self,
        normals: ImageBatches,
        *,
        seed: int,
        device: str,
        state_dir: Path,
        evaluate: EvalFn | None,
    ) -> TrainState:
        """main()'s epoch loop on one process: their ``train_one_epoch``, then
        ``lr_scheduler.step(epoch)``; our evaluation instead of ``validate``."""
        train_val = self.official["tools.train_val"]
        self.helper.device = torch.device(device)
        loader = DataLoader(
            _Normalized(normals, self.cfg.image_size), batch_size=self.cfg.batch_size, shuffle=True
        )
        optimizer, scheduler = self._optimizer(train_val)
        criterion = train_val.build_criterion(self.config.criterion)
        losses: list[float] = []
        for loss in criterion.values():
            loss.register_forward_hook(lambda _m, _in, out: losses.append(out.item()))
        epochs = _Epochs(self, state_dir, evaluate, len(loader))
        epochs.resume_model()
        epochs.resume_optimizer(optimizer, scheduler)
        epochs.resume_rng()
        with (
            _patched(train_val, config=self.config, dist=_ONE_PROCESS),
            legacy_runtime(),
            warnings.catch_warnings(),
        ):
            # main() steps its scheduler with an explicit epoch, which torch deprecates
            warnings.filterwarnings("ignore", "The epoch parameter in `scheduler.step", UserWarning)
            while epochs.remaining:
                epoch = epochs.state.epoch
                train_val.train_one_epoch(
                    loader,
                    _Replica(self.helper),
                    optimizer,
                    scheduler,
                    epoch,
                    epoch * len(loader),
                    train_val.SummaryWriter(),
                    criterion,
                    self.config.frozen_layers,
                )
                scheduler.step(epoch)
                epochs.end(float(np.mean(losses)))
                losses.clear()
        return epochs.state

    def _optimizer(self, train_val: types.ModuleType) -> tuple[torch.optim.Optimizer, Any]:
        """main()'s optimiser over the active layers' parameters (in a fixed order; theirs
        iterates a set) and its scheduler."""
        params = [
            {"params": getattr(self.helper, name).parameters()}
            for name in ("neck", "reconstruction")
        ]
        optimizer = train_val.get_optimizer(params, self.config.trainer.optimizer)
        return optimizer, train_val.get_scheduler(optimizer, self.config.trainer.lr_scheduler)

    def fit_scoring(self, normals: ImageBatches, device: str) -> None:
        self.helper.device = torch.device(device)

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        """Their evaluator's image score of the anomaly map (``EvalImageMax`` etc.)."""
        image = (resize_square(x, self.cfg.image_size) - self.mean) / self.std
        with legacy_runtime():
            pred = self.helper({"image": image})["pred"][:, 0].cpu().numpy()
            eval_helper = self.official["utils.eval_helper"]
            if self.cfg.image_score == "max":
                size = [self.cfg.avgpool_size] * 2
                return torch.as_tensor(eval_helper.EvalImageMax.encode_pred(pred, size))
            kind = {"mean": eval_helper.EvalImageMean, "std": eval_helper.EvalImageStd}
            return torch.as_tensor(kind[self.cfg.image_score].encode_pred(pred))


ADAPTERS: dict[str, Any] = {
    "rd4ad": OfficialRD4AD,
    "kdad": OfficialKDAD,
    "meanshift": OfficialMeanShift,
    "uniad": OfficialUniAD,
}
CALLS_CUDA = {"kdad", "uniad"}  # official code that moves its tensors with .cuda() itself


def _snapshot(name: str, official: Path | None, device: str) -> tuple[Path, str]:
    """Folder and commit of the official repository a run uses, checked to be there."""
    if name not in ADAPTERS:
        raise DiaError(f"{name} has no impl: official (adapters: {', '.join(ADAPTERS)})")
    if name in CALLS_CUDA:
        _check_device(device)
    if official is None:
        raise DiaError(
            f"{name}.impl is 'official' but no official repository was given; run it through "
            f"the workflow, which fetches official_repos.<owner>__<name> first"
        )
    folder, commit = recorded(official)
    if not folder.is_dir():
        raise DiaError(
            f"the official {name} snapshot {folder} (recorded in {official}) is missing; "
            f"restore it, or delete {official} and re-run to fetch it"
        )
    return folder, commit


def train_official_baseline(
    name: str,
    cfg: Any,
    normals: ImageBatches,
    *,
    official: Path | None,
    seed: int,
    device: str,
    state_dir: Path,
    evaluate: EvalFn | None,
) -> tuple[nn.Module, TrainState, str]:
    """Train baseline ``name`` with its official code; return the model, state and commit."""
    _check_fixed(name, cfg, {"precision": "fp32"})  # their loops run in float32
    folder, commit = _snapshot(name, official, device)
    seed_everything(seed)
    model = ADAPTERS[name](cfg, folder).to(device)
    state = model.fit(normals, seed=seed, device=device, state_dir=state_dir, evaluate=evaluate)
    return model, state, commit


def load_official_baseline(
    name: str, cfg: Any, ckpt: dict[str, Any], *, official: Path | None, device: str
) -> nn.Module:
    """The trained official model of a checkpoint, refused for another official commit."""
    folder, commit = _snapshot(name, official, device)
    trained = ckpt["config"]["official_commit"]
    if commit != trained:
        raise DiaError(
            f"the run was trained with the official commit {trained}, {official} holds "
            f"{commit}; retrain it (delete its model.pt)"
        )
    # every weight, the backbone's included, is in the checkpoint: no download needed
    model = ADAPTERS[name](cfg.replace(pretrained=False), folder).to(device)
    model.load_state_dict(ckpt["model"])
    return model
