"""Our Mean-Shift (dia/baselines/meanshift.py) against the official code
(talreiss/Mean-Shifted-Anomaly-Detection at its pinned commit): ``utils.Model`` with random
weights copied into ours, the same inputs, each comparison with a stated tolerance.

``utils.Model`` builds torchvision's ResNet with ``pretrained=True``, which downloads ImageNet
weights; here ``utils.models`` is replaced by builders of the same networks with random weights
(no network access). kNN search runs through the ``faiss`` shim of dia.official.imports (exact
``IndexFlatL2``). Run with ``DIA_OFFICIAL_REPOS`` naming a folder of snapshots; without it every
test here skips.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from dia.baselines.meanshift import MeanShift, MeanShiftConfig
from dia.data.prepare import ImageBatches
from tests.parity.conftest import importer, official_folder, randomise_batch_norms

KEY = "talreiss__Mean-Shifted-Anomaly-Detection"
SIZE = 64  # the networks are fully convolutional + average pooling; 64 px keeps CPU time low
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def official() -> Iterator[dict[str, types.ModuleType]]:
    """main and utils, utils.models building its ResNets with random weights."""
    modules = importer(KEY)("main", "utils")

    def builder(name: str) -> Any:
        def build(pretrained: bool) -> nn.Module:
            assert pretrained  # the official Model always asks for ImageNet weights
            return getattr(torchvision.models, name)(weights=None)

        return build

    fake = types.SimpleNamespace(resnet18=builder("resnet18"), resnet152=builder("resnet152"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modules["utils"], "models", fake)
        yield modules


def pair(official: dict[str, types.ModuleType], *, angular: bool) -> tuple[nn.Module, MeanShift]:
    """utils.Model(18) with random weights, in eval mode as train_model puts it, and ours."""
    torch.manual_seed(0)
    model = official["utils"].Model(18)
    randomise_batch_norms(model)
    model.eval()
    cfg = MeanShiftConfig(backbone="resnet18", pretrained=False, image_size=SIZE, angular=angular)
    ours = MeanShift(cfg)
    ours.backbone.load_state_dict(model.backbone.state_dict(), strict=True)
    return model, ours


def uint8_images(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def normalised(images: np.ndarray) -> torch.Tensor:
    """What the official loaders give for images already at the network's size."""
    return (ImageBatches(images)[:] - MEAN) / STD


def test_features_and_knn_score(official) -> None:
    """Eval mode: utils.Model features equal our embed to 1e-5 (rtol and atol); utils.knn_score
    (k = 2, faiss shim) of the test features against the training features equals our
    fit_scoring + anomaly_score to 1e-5 relative (atol 1e-6)."""
    model, ours = pair(official, angular=False)
    ours.eval()
    normals, test = uint8_images(6, seed=1), uint8_images(4, seed=2)
    with torch.no_grad():
        train_features = model(normalised(normals))
        test_features = model(normalised(test))
        scores = official["utils"].knn_score(train_features.numpy(), test_features.numpy())
        ours.fit_scoring(ImageBatches(normals), "cpu")
        torch.testing.assert_close(ours.bank, train_features, rtol=1e-5, atol=1e-5)
        ours_scores = ours.anomaly_score(ImageBatches(test)[:])
    np.testing.assert_allclose(ours_scores.numpy(), scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("angular", [False, True])
def test_training_epoch(official, monkeypatch, angular: bool) -> None:
    """main.train_model for one epoch of one batch (the MoCo views given, so that both sides see
    the same ones) against ours on the same views: the centre (normalised if angular) to 1e-6,
    the loss of run_epoch (mean-shifted contrastive loss, + the angular centre loss) to 1e-5
    relative, every gradient to 1e-4 relative (atol 1e-6 of the largest), the SGD settings
    exactly, and the kNN scores get_score passes to roc_auc_score before and after the step
    to 1e-5 relative (atol 1e-6)."""
    main = official["main"]
    model, ours = pair(official, angular=angular)
    lr = _argparse_defaults()["lr"]
    normals, test = uint8_images(4, seed=3), uint8_images(4, seed=4)
    gen = torch.Generator().manual_seed(5)
    views = [torch.rand(4, 3, SIZE, SIZE, generator=gen) for _ in range(2)]
    view_batches = [(v - MEAN) / STD for v in views]

    recorded: dict[str, Any] = {"scores": []}
    run_epoch = main.run_epoch

    def recording_run_epoch(*args: Any) -> float:
        recorded["center"] = args[3].clone()
        recorded["loss"] = run_epoch(*args)
        return recorded["loss"]

    def sgd(params: Any, **kwargs: Any) -> torch.optim.SGD:
        recorded["optimizer"] = torch.optim.SGD(params, **kwargs)
        return recorded["optimizer"]

    def roc_auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
        recorded["scores"].append(scores)
        return 0.5

    monkeypatch.setattr(main, "run_epoch", recording_run_epoch)
    monkeypatch.setattr(main, "optim", types.SimpleNamespace(SGD=sgd))
    monkeypatch.setattr(main, "roc_auc_score", roc_auc_score)
    args = types.SimpleNamespace(lr=lr, epochs=1, angular=angular)
    main.train_model(
        model,
        [(normalised(normals), torch.zeros(4))],
        [(normalised(test), torch.tensor([0, 0, 1, 1]))],
        [(tuple(view_batches), torch.zeros(4))],
        "cpu",
        args,
    )

    ours.train()
    ours.on_train_start(ImageBatches(normals), "cpu")
    torch.testing.assert_close(ours.center, recorded["center"], rtol=1e-6, atol=1e-6)
    ours.fit_scoring(ImageBatches(normals), "cpu")
    with torch.no_grad():
        before = ours.anomaly_score(ImageBatches(test)[:])
    np.testing.assert_allclose(before.numpy(), recorded["scores"][0], rtol=1e-5, atol=1e-6)

    opt, sched = ours.make_optimizer()
    assert sched is None
    (group,) = recorded["optimizer"].param_groups
    (ours_group,) = opt.param_groups
    for key in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"):
        assert ours_group[key] == group[key], key
    assert group["lr"] == ours.cfg.lr
    names = {id(p): n for n, p in model.named_parameters()}
    ours_names = {id(p): n for n, p in ours.named_parameters()}
    official_trained = {names[id(p)] for p in group["params"] if p.requires_grad}
    assert {ours_names[id(p)] for p in ours_group["params"]} == official_trained

    given = iter(view_batches)
    monkeypatch.setattr(ours, "moco_view", lambda x, rng: next(given))
    opt.zero_grad(set_to_none=True)
    loss = ours.training_loss(ImageBatches(normals)[:], torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(recorded["loss"], rel=1e-5)
    loss.backward()
    ours_params = dict(ours.named_parameters())
    largest = max(p.grad.abs().max().item() for p in model.parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(
            ours_params[name].grad, param.grad, rtol=1e-4, atol=1e-6 * largest, msg=name
        )
    opt.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(ours_params[name], param, rtol=1e-6, atol=1e-7, msg=name)
    ours.fit_scoring(ImageBatches(normals), "cpu")
    with torch.no_grad():
        after = ours.anomaly_score(ImageBatches(test)[:])
    np.testing.assert_allclose(after.numpy(), recorded["scores"][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("backbone", "transform"),
    [
        ("resnet18", "transform_resnet18"),
        ("resnet152", "transform_color"),
    ],
)
def test_eval_transform(official, backbone: str, transform: str) -> None:
    """The official test transforms on 32-px PIL images (CIFAR-10's size): Resize 224 bicubic
    (ResNet-18) or Resize 256 + CenterCrop 224 (ResNet-152), ToTensor, Normalize; our
    eval_view of the same images equals them within 1.25 8-bit levels (Pillow rounds to uint8
    after each of its two passes, half a level each) and within half a level on average."""
    images = uint8_images(3, seed=6, size=32)
    ref = torch.stack([getattr(official["utils"], transform)(Image.fromarray(a)) for a in images])
    ours = MeanShift(MeanShiftConfig(backbone=backbone, pretrained=False, frozen_stages=0))
    got = ours.eval_view(ImageBatches(images)[:])
    assert got.shape == ref.shape == (3, 3, 224, 224)
    levels = ((got - ref) * STD).abs() * 255  # back in 8-bit levels
    assert levels.max().item() <= 1.25
    assert levels.mean().item() <= 0.5


def _argparse_defaults() -> dict[str, Any]:
    """Defaults of main.py's argparse options (the parser lives under ``__main__``)."""
    tree = ast.parse((official_folder(KEY) / "main.py").read_text())
    out = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            option = ast.literal_eval(node.args[0]).lstrip("-")
            for kw in node.keywords:
                if kw.arg == "default":
                    out[option] = ast.literal_eval(kw.value)
    return out


def test_defaults_and_frozen_parameters(official) -> None:
    """main.py's argparse defaults (lr, epochs, batch size, ResNet-152) are our defaults, and
    utils.Model(152)'s freeze_parameters leaves trainable exactly the parameters ours trains."""
    defaults = _argparse_defaults()
    cfg = MeanShiftConfig()
    assert defaults["lr"] == cfg.lr
    assert defaults["epochs"] == cfg.epochs
    assert defaults["batch_size"] == cfg.batch_size == cfg.score_batch_size
    assert f"resnet{defaults['backbone']}" == cfg.backbone
    assert not defaults.get("angular", False) and not cfg.angular  # --angular: store_true
    model = official["utils"].Model(152)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    ours = MeanShift(MeanShiftConfig(pretrained=False))
    opt, _ = ours.make_optimizer()
    names = {id(p): n for n, p in ours.named_parameters()}
    assert {names[id(p)] for p in opt.param_groups[0]["params"]} == trainable
    assert trainable < {n for n, _ in model.named_parameters()}
