"""Our UniAD (dia/baselines/uniad.py) against the official code (zhiyuanyou/UniAD at its pinned
commit), with the same weights and inputs, each with a stated tolerance.

Random weights only (no download); the official model is assembled from its modules as
``models/model_helper.py`` would (backbone, MFCN neck, UniAD reconstruction) with the kwargs of
``experiments/MVTec-AD/config.yaml``. Run with ``DIA_OFFICIAL_REPOS`` naming a folder of snapshots
(README, "Parity with the official code"); without it every test here skips.
"""

from __future__ import annotations

import copy
import re
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from dia.baselines.backbones import IMAGENET_MEAN, IMAGENET_STD
from dia.baselines.uniad import UniAD, UniADConfig, neighbour_mask
from dia.official.imports import legacy_runtime
from tests.conftest import ROOT
from tests.parity.conftest import importer, official_folder

Modules = dict[str, types.ModuleType]  # official modules by dotted name
KEY = "zhiyuanyou__UniAD"
SIZE = 128  # the MedMNIST resolution of our runs: an 8x8 token grid at stride 16
GRID = SIZE // 16

# official state-dict names (models/reconstructions/uniad.py) -> ours
RENAMES = [
    (r"^pos_embed\.", ""),
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"encoder.\1.attn."),
    (r"^transformer\.(en|de)coder\.layers\.(\d+)\.linear1\.", r"\1coder.\2.ff.0."),
    (r"^transformer\.(en|de)coder\.layers\.(\d+)\.linear2\.", r"\1coder.\2.ff.3."),
    (r"^transformer\.(en|de)coder\.layers\.(\d+)\.norm", r"\1coder.\2.norm"),
    (r"^transformer\.decoder\.layers\.(\d+)\.learned_embed\.", r"decoder.\1.query."),
    # self_attn: the learned queries attend to the encoder output (mask "dec1")
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.", r"decoder.\1.memory_attn."),
    # multihead_attn: ... then to the previous decoder layer's output (mask "dec2")
    (r"^transformer\.decoder\.layers\.(\d+)\.multihead_attn\.", r"decoder.\1.output_attn."),
    (r"^transformer\.decoder\.norm\.", "decoder_norm."),
]


@pytest.fixture(scope="module")
def official() -> Modules:
    return importer(KEY)(
        "models.backbones",
        "models.necks.mfcn",
        "models.reconstructions.uniad",
        "utils.criterion_helper",
        "utils.eval_helper",
        "utils.optimizer_helper",
        "utils.lr_helper",
    )


@pytest.fixture(scope="module")
def mvtec() -> dict[str, Any]:
    """experiments/MVTec-AD/config.yaml, the configuration our defaults follow."""
    return yaml.safe_load((official_folder(KEY) / "experiments/MVTec-AD/config.yaml").read_text())


@pytest.fixture(scope="module")
def cifar10() -> dict[str, Any]:
    """experiments/CIFAR-10/01234/config.yaml (the other three splits differ only in normals)."""
    path = official_folder(KEY) / "experiments/CIFAR-10/01234/config.yaml"
    return yaml.safe_load(path.read_text())


def image_metrics(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The evaluator's AUROC metrics: name -> kwargs."""
    return {m["name"]: m.get("kwargs", {}) for m in config["evaluator"]["metrics"]["auc"]}


@contextmanager
def on_cpu() -> Iterator[None]:
    """legacy_runtime() (np.int etc.), and ``.cuda()`` kept on the CPU even where CUDA exists:
    the official forward moves its mask and jitter noise with hard-coded ``.cuda()`` calls."""
    with legacy_runtime(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "cuda", lambda self, *_a, **_k: self)
        mp.setattr(nn.Module, "cuda", lambda self, *_a, **_k: self)
        yield


def ours_model(**changes: Any) -> UniAD:
    torch.manual_seed(0)
    return UniAD(UniADConfig(pretrained=False, image_size=SIZE, **changes)).eval()


def official_reconstruction(
    official: Modules, mvtec: dict[str, Any], channels: int, **changes: Any
) -> nn.Module:
    """models.reconstructions.UniAD built with the MVTec config's kwargs, as ModelHelper and
    utils/misc_helper.update_config pass them (inplanes, instrides, feature_size)."""
    kwargs = copy.deepcopy(mvtec["net"][2]["kwargs"])
    kwargs.update(changes)
    kwargs.update(
        inplanes=[channels],
        instrides=[16],
        feature_size=[GRID, GRID],
        save_recon=False,
        feature_jitter=types.SimpleNamespace(**kwargs["feature_jitter"]),
        neighbor_mask=types.SimpleNamespace(**kwargs["neighbor_mask"]),
    )
    torch.manual_seed(1)
    model = official["models.reconstructions.uniad"].UniAD(**kwargs)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # the initialiser zeroes biases and leaves unit norms: perturb them
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def rename(key: str) -> str:
    for pattern, repl in RENAMES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def copy_weights(official: nn.Module, ours: UniAD) -> None:
    """The official reconstruction's weights into ours, every key mapped (strict)."""
    ours.reconstruction.load_state_dict({rename(k): v for k, v in official.state_dict().items()})


def images(n: int, size: int = SIZE, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def as_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, grid^2, C) row-major tokens -> (B, C, grid, grid), the official layout."""
    return tokens.transpose(1, 2).unflatten(2, (GRID, GRID))


@pytest.mark.parametrize(("grid", "size"), [(8, (7, 7)), (14, (7, 7)), (10, (3, 5))])
def test_neighbour_mask(official: Modules, grid: int, size: tuple[int, int]) -> None:
    """Transformer.generate_mask (-inf where barred) against our bool mask: exactly equal."""
    transformer = official["models.reconstructions.uniad"].Transformer
    with on_cpu():
        ref = transformer.generate_mask(None, [grid, grid], list(size))
    assert torch.equal(torch.isinf(ref), neighbour_mask(grid, size))


def official_efficientnet(official: Modules, ours: UniAD) -> nn.Module:
    """models.backbones.efficientnet_b4 (lukemelas' port), random weights and batch-norm
    statistics, copied into our timm backbone in parameter order (shapes checked)."""
    info = official["models.backbones"].backbone_info["efficientnet_b4"]
    torch.manual_seed(4)
    net = official["models.backbones"].efficientnet_b4(
        pretrained=False, outblocks=info["blocks"], outstrides=info["strides"]
    )
    gen = torch.Generator().manual_seed(5)
    state = net.state_dict()
    for key, value in state.items():
        if "_bn" in key and key.endswith(("weight", "running_var")):
            value.copy_(0.5 + torch.rand(value.shape, generator=gen))
        elif "_bn" in key and key.endswith(("bias", "running_mean")):
            value.copy_(0.1 * torch.randn(value.shape, generator=gen))
    net.load_state_dict(state)
    body = [(k, v) for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))]
    target = ours.backbone.state_dict()
    assert len(body) >= len(target)
    for (src, value), (dst, like) in zip(body, target.items(), strict=False):
        assert value.shape == like.shape, (src, dst)
    ours.backbone.load_state_dict(
        {dst: value for (_, value), dst in zip(body, target, strict=False)}
    )
    return net.eval()


@pytest.mark.parametrize("size", [380, 224])
def test_backbone_stages(official: Modules, size: int) -> None:
    """EfficientNet-B4 stage outputs (official outlayers 1..5 = blocks 1, 5, 9, 21, 31) of the
    lukemelas port and our timm model with the same weights: equal to 1e-5 at 380 px, B4's
    native size, where static and dynamic "SAME" padding agree. At 224 px the one documented
    deviation shows (block 6's 5x5 stride-2 depthwise conv, padded (2, 2) there and (1, 2) here):
    strides 2 and 4 agree, stride 8 does not; given our padding, every stage agrees to 1e-5."""
    info = official["models.backbones"].backbone_info["efficientnet_b4"]
    ours = ours_model(outlayers=(1, 2, 3, 4, 5))
    assert ours.backbone.feature_info.channels() == info["planes"]
    assert ours.backbone.feature_info.reduction() == info["strides"]
    net = official_efficientnet(official, ours)
    x = images(1, size)
    with torch.no_grad():
        mine = ours.backbone(x)
        ref = net({"image": x})["features"]
        if size != 380:
            for a, b in zip(ref[:2], mine[:2], strict=True):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
            assert (ref[2] - mine[2]).abs().max() > 1e-3
            net._blocks[6]._depthwise_conv.static_padding = nn.ZeroPad2d((1, 2, 1, 2))
            ref = net({"image": x})["features"]
    for a, b in zip(ref, mine, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outlayers", [(1, 2, 3, 4), (1, 2, 3, 4, 5)], ids=["mvtec", "cifar10"])
def test_mfcn_neck(official: Modules, outlayers: tuple[int, ...]) -> None:
    """models/necks/mfcn.MFCN (UpsamplingBilinear2d to stride 16, concatenation) on our
    backbone's stage maps against our features(): equal to 1e-6, for the MVTec layers [1, 2, 3, 4]
    and the CIFAR-10 layers [1, 2, 3, 4, 5]."""
    ours = ours_model(outlayers=outlayers)
    info = official["models.backbones"].backbone_info["efficientnet_b4"]
    planes = [info["planes"][layer - 1] for layer in outlayers]
    strides = [info["strides"][layer - 1] for layer in outlayers]
    neck = official["models.necks.mfcn"].MFCN(
        inplanes=planes, outplanes=[sum(planes)], instrides=strides, outstrides=[16]
    )
    x = images(2)
    with torch.no_grad():
        maps = ours.backbone((x - ours.mean) / ours.std)
        ref = neck({"features": maps})["feature_align"]
        torch.testing.assert_close(as_map(ours.features(x)), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "mask", [(True, True, True), (True, False, True), (False, True, False)], ids=str
)
def test_reconstruction_and_anomaly_map(
    official: Modules, mvtec: dict[str, Any], mask: tuple[bool, ...]
) -> None:
    """Eval mode: the official UniAD reconstruction (learned positions, encoder, layer-wise
    query decoder, neighbour masks [enc, dec1, dec2]) with its weights copied into ours gives the
    same feature_rec (random tokens) and the same pred, the L2 error upsampled x16 with aligned
    corners, from our features of random images; both to 1e-5."""
    ours = ours_model(
        neighbor_mask_encoder=mask[0],
        neighbor_mask_decoder_memory=mask[1],
        neighbor_mask_decoder_output=mask[2],
    )
    channels = sum(ours.backbone.feature_info.channels())
    neighbor = {**mvtec["net"][2]["kwargs"]["neighbor_mask"], "mask": list(mask)}
    ref_model = official_reconstruction(official, mvtec, channels, neighbor_mask=neighbor).eval()
    copy_weights(ref_model, ours)
    tokens = torch.randn(2, GRID * GRID, channels, generator=torch.Generator().manual_seed(6))
    x = images(2)
    with torch.no_grad(), on_cpu():
        ref = ref_model({"feature_align": as_map(tokens)})["feature_rec"]
        torch.testing.assert_close(as_map(ours.reconstruction(tokens)), ref, rtol=1e-5, atol=1e-5)
        pred = ref_model({"feature_align": as_map(ours.features(x))})["pred"]
        torch.testing.assert_close(ours.anomaly_map(x), pred, rtol=1e-5, atol=1e-5)


def test_training_loss_and_gradients(official: Modules, mvtec: dict[str, Any]) -> None:
    """Train mode, dropout 0 in both (their masks come from different tensor layouts), the
    same jitter noise: add_jitter (noise * ||token|| / C * 20) then the criterion of the config
    (FeatureMSELoss, weight 1, summed as tools/train_val.py does) equals our training_loss to
    1e-6 relative, and every reconstruction gradient to rtol and atol 1e-5."""
    ours = ours_model(dropout=0.0).train()
    channels = sum(ours.backbone.feature_info.channels())
    ref_model = official_reconstruction(official, mvtec, channels, dropout=0.0).train()
    copy_weights(ref_model, ours)
    x = images(2)
    rng = torch.Generator().manual_seed(7)
    draws = torch.Generator().manual_seed(7)
    assert float(torch.rand((), generator=draws)) <= 1.0  # our jitter's prob draw (prob 1.0)
    noise = torch.randn(2, GRID * GRID, channels, generator=draws)  # our (B, tokens, C) noise

    criterion = official["utils.criterion_helper"].build_criterion(mvtec["criterion"])
    with on_cpu(), pytest.MonkeyPatch.context() as mp:
        # add_jitter draws torch.randn((tokens, B, C)).cuda(): hand it our noise
        mp.setattr(torch, "randn", lambda *_a, **_k: noise.transpose(0, 1).clone())
        outputs = ref_model({"feature_align": as_map(ours.features(x))})
    ref = sum(c.weight * c(outputs) for c in criterion.values())
    loss = ours.training_loss(x, rng)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    ref.backward()
    loss.backward()
    grads = dict(ours.reconstruction.named_parameters())
    for name, p in ref_model.named_parameters():
        torch.testing.assert_close(grads[rename(name)].grad, p.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("image_score", ["max", "mean", "std"])
def test_image_scores(
    official: Modules, mvtec: dict[str, Any], cifar10: dict[str, Any], image_score: str
) -> None:
    """utils/eval_helper.EvalImage{Max,Mean,Std}.encode_pred on the official pred (max: of the
    16x16 average-pooled map, the MVTec config's; mean: the CIFAR-10 config's key metric; std)
    against our anomaly_score with that image_score: equal to 1e-5 relative."""
    ours = ours_model(image_score=image_score)
    channels = sum(ours.backbone.feature_info.channels())
    ref_model = official_reconstruction(official, mvtec, channels).eval()
    copy_weights(ref_model, ours)
    metrics = {**image_metrics(mvtec), **image_metrics(cifar10)}
    evaluator = {"max": "EvalImageMax", "mean": "EvalImageMean", "std": "EvalImageStd"}
    x = images(3)
    with torch.no_grad(), on_cpu():
        pred = ref_model({"feature_align": as_map(ours.features(x))})["pred"]
        encode = getattr(official["utils.eval_helper"], evaluator[image_score]).encode_pred
        ref = encode(pred[:, 0].numpy(), **metrics[image_score])
        mine = ours.anomaly_score(x).numpy()
    np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=0)


@pytest.mark.filterwarnings("ignore")  # torch deprecates step(epoch), which the official code uses
def test_optimizer_clipping_and_schedule(official: Modules, mvtec: dict[str, Any]) -> None:
    """utils/optimizer_helper.get_optimizer and lr_helper.get_scheduler with the config's
    trainer section against our make_optimizer: the same AdamW hyperparameters and trainable
    parameters; one step after clip_grad_norm_(0.1) (tools/train_val.py:218-221) moves the same
    weights to 1e-6; the per-epoch rates of the official loop (StepLR.step(epoch) after each
    epoch) equal ours except epoch 801, the documented one-epoch delay."""
    trainer = mvtec["trainer"]
    ours = ours_model()
    channels = sum(ours.backbone.feature_info.channels())
    ref_model = official_reconstruction(official, mvtec, channels)
    copy_weights(ref_model, ours)
    spec = types.SimpleNamespace(**trainer["optimizer"])
    ref_opt = official["utils.optimizer_helper"].get_optimizer(
        [{"params": ref_model.parameters()}], spec
    )
    opt, sched = ours.make_optimizer()
    skip = {"params", "initial_lr", "foreach", "fused", "capturable", "differentiable", "maximize"}
    ref_hyper = {k: v for k, v in ref_opt.param_groups[0].items() if k not in skip}
    assert {k: v for k, v in opt.param_groups[0].items() if k not in skip} == ref_hyper
    assert type(opt) is type(ref_opt)
    trainable = [p for group in opt.param_groups for p in group["params"]]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in ref_model.parameters())

    gen = torch.Generator().manual_seed(8)
    grads = {name: torch.randn(p.shape, generator=gen) for name, p in ref_model.named_parameters()}
    mine = dict(ours.reconstruction.named_parameters())
    for name, p in ref_model.named_parameters():
        p.grad = grads[name].clone()
        mine[rename(name)].grad = grads[name].clone()
    torch.nn.utils.clip_grad_norm_(ref_model.parameters(), trainer["clip_max_norm"])
    ref_opt.step()
    opt.step()
    for name, p in ref_model.named_parameters():
        torch.testing.assert_close(mine[rename(name)].detach(), p.detach(), rtol=1e-6, atol=1e-6)

    ref_sched = official["utils.lr_helper"].get_scheduler(
        ref_opt, types.SimpleNamespace(**trainer["lr_scheduler"])
    )
    official_lrs, our_lrs = [], []
    for epoch in range(trainer["max_epoch"]):
        official_lrs.append(ref_opt.param_groups[0]["lr"])
        our_lrs.append(opt.param_groups[0]["lr"])
        ref_sched.step(epoch)
        sched.step()
    differ = [e + 1 for e, (a, b) in enumerate(zip(official_lrs, our_lrs, strict=True)) if a != b]
    assert differ == [801]
    assert len(our_lrs) == ours.cfg.epochs


def test_config_defaults_are_the_mvtec_config(mvtec: dict[str, Any]) -> None:
    """UniADConfig's defaults equal experiments/MVTec-AD/config.yaml, value by value."""
    cfg = UniADConfig()
    data, trainer, net = mvtec["dataset"], mvtec["trainer"], mvtec["net"]
    recon = net[2]["kwargs"]
    assert [cfg.image_size] * 2 == data["input_size"]
    assert (tuple(data["pixel_mean"]), tuple(data["pixel_std"])) == (IMAGENET_MEAN, IMAGENET_STD)
    assert cfg.batch_size == data["batch_size"]
    assert cfg.epochs == trainer["max_epoch"]
    assert cfg.clip_max_norm == trainer["clip_max_norm"]
    assert trainer["lr_scheduler"] == {
        "type": "StepLR",
        "kwargs": {"step_size": cfg.lr_step_size, "gamma": cfg.lr_gamma},
    }
    assert trainer["optimizer"] == {
        "type": "AdamW",
        "kwargs": {"lr": cfg.lr, "betas": list(cfg.betas), "weight_decay": cfg.weight_decay},
    }
    assert net[0]["type"] == "models.backbones.efficientnet_b4" and net[0]["frozen"]
    assert list(cfg.outlayers) == net[0]["kwargs"]["outlayers"]
    assert [cfg.outstride] == net[1]["kwargs"]["outstrides"]
    assert recon["pos_embed_type"] == "learned" and recon["activation"] == "relu"
    assert not recon["normalize_before"]
    assert recon["initializer"] == {"method": "xavier_uniform"}
    assert (
        cfg.hidden_dim,
        cfg.nhead,
        cfg.num_encoder_layers,
        cfg.num_decoder_layers,
        cfg.dim_feedforward,
        cfg.dropout,
    ) == (
        recon["hidden_dim"],
        recon["nhead"],
        recon["num_encoder_layers"],
        recon["num_decoder_layers"],
        recon["dim_feedforward"],
        recon["dropout"],
    )
    assert recon["feature_jitter"] == {
        "scale": cfg.feature_jitter_scale,
        "prob": cfg.feature_jitter_prob,
    }
    assert recon["neighbor_mask"] == {
        "neighbor_size": list(cfg.neighbor_size),
        "mask": [
            cfg.neighbor_mask_encoder,
            cfg.neighbor_mask_decoder_memory,
            cfg.neighbor_mask_decoder_output,
        ],
    }
    assert image_metrics(mvtec)[cfg.image_score] == {"avgpool_size": [cfg.avgpool_size] * 2}


def test_uniad_cifar_method_is_the_cifar10_config(
    mvtec: dict[str, Any], cifar10: dict[str, Any]
) -> None:
    """config/uniad_cifar.yaml (method ``uniad_cifar``) against experiments/CIFAR-10: its
    outlayers, batch size and image score (the key metric mean_mean_auc); and the two official
    configs differ in nothing else that reaches the model, its training or its score (seed,
    data source, evaluator set and save_recon apart; CIFAR's unset AdamW betas are torch's
    default, MVTec's explicit (0.9, 0.999))."""
    method = yaml.safe_load((ROOT / "config" / "uniad_cifar.yaml").read_text())
    cfg = UniADConfig.from_dict(method["methods"]["uniad_cifar"]["uniad"])
    assert list(cfg.outlayers) == cifar10["net"][0]["kwargs"]["outlayers"]
    assert cfg.batch_size == cifar10["dataset"]["batch_size"]
    assert cifar10["evaluator"]["key_metric"] == f"mean_{cfg.image_score}_auc"
    cifar_changes = {"outlayers": cfg.outlayers, "batch_size": cfg.batch_size}
    assert UniADConfig().replace(**cifar_changes, image_score=cfg.image_score) == cfg

    def reaching_the_model(config: dict[str, Any]) -> dict[str, Any]:
        config = copy.deepcopy(config)
        config["trainer"]["optimizer"]["kwargs"].setdefault("betas", [0.9, 0.999])
        config["net"][0]["kwargs"].pop("outlayers")
        config["net"][2]["kwargs"].pop("save_recon")
        return {
            "input_size": config["dataset"]["input_size"],
            "criterion": config["criterion"],
            "trainer": config["trainer"],
            "frozen_layers": config["frozen_layers"],
            "net": config["net"],
        }

    assert reaching_the_model(mvtec) == reaching_the_model(cifar10)
