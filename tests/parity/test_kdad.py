"""Our KDAD (dia/baselines/kdad.py) against the official code (rohban-lab/Knowledge_Distillation_AD
at its pinned commit): the official networks of ``models/network.get_networks`` with random
weights copied into ours, the same inputs, each comparison with a stated tolerance.

``Vgg16`` builds torchvision's ``vgg16('vgg16-397923af.pth')``, which downloads ImageNet weights;
here that call is replaced by the same network with random weights (no network access). Run with
``DIA_OFFICIAL_REPOS`` naming a folder of snapshots; without it every test here skips.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from dia.baselines.backbones import TORCHVISION_WEIGHTS
from dia.baselines.kdad import KDAD, KDADConfig, pool_outputs
from dia.official.imports import legacy_runtime
from tests.parity.conftest import importer, official_folder, randomise_batch_norms

KEY = "rohban-lab__Knowledge_Distillation_AD"
SIZE = 64  # VGG's five max-pools: 32, 16, 8, 4, 2
POOL_TAPS = (1, 3, 6, 9, 12)  # pool1..pool5 among the 13 outputs of both official networks
# float32 networks computing the same operations in the same order: agreement to 1e-5
TOL = {"rtol": 1e-5, "atol": 1e-5}
# test_functions.py imports gaussian_filter from scipy.ndimage.filters, deprecated in SciPy 1.8
pytestmark = pytest.mark.filterwarnings("ignore:Please import `gaussian_filter`:DeprecationWarning")


@pytest.fixture(scope="module")
def official() -> dict[str, types.ModuleType]:
    return importer(KEY)(
        "models.network", "loss_functions", "test_functions", "train", "utils.utils"
    )


@pytest.fixture(scope="module")
def config(official: dict[str, types.ModuleType]) -> dict[str, Any]:
    """configs/config.yaml, read by the official utils.get_config."""
    with legacy_runtime():
        return official["utils.utils"].get_config(
            str(official_folder(KEY) / "configs" / "config.yaml")
        )


@pytest.fixture(scope="module")
def networks(
    official: dict[str, types.ModuleType], config: dict[str, Any]
) -> tuple[nn.Module, nn.Module, KDAD, tuple[Any, ...]]:
    """get_networks(config) (source Vgg16 and cloner 'B') with random weights, ours holding the
    same, and the arguments the official Vgg16 passed to torchvision's vgg16."""
    network = official["models.network"]
    vgg16_args: list[tuple[Any, ...]] = []

    def vgg16(*args: Any, **kwargs: Any) -> nn.Module:
        vgg16_args.append(args)
        return torchvision.models.vgg16(weights=None)

    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp, legacy_runtime():
        mp.setattr(network, "vgg16", vgg16)
        vgg, cloner = network.get_networks(config, load_checkpoint=False)
    randomise_batch_norms(cloner)
    ours = KDAD(KDADConfig(pretrained=False, image_size=SIZE))
    source_state = {k.removeprefix("features."): v for k, v in vgg.state_dict().items()}
    ours.source.load_state_dict(source_state, strict=True)
    ours.cloner.load_state_dict(cloner.state_dict(), strict=True)
    return vgg, cloner, ours, vgg16_args[0]


def images(n: int, seed: int) -> torch.Tensor:
    """[0, 1] images at SIZE: the official retina loader's Resize + ToTensor, no normalisation."""
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_networks(networks) -> None:
    """The official Vgg16 asks torchvision for the weights file our backbone loads; in eval
    mode the pool1..pool5 outputs of the official source and cloner (their taps 1, 3, 6, 9, 12)
    equal ours to 1e-5 (rtol and atol), and the cloner state dict loads into ours unchanged
    (strict)."""
    vgg, cloner, ours, vgg16_args = networks
    weights = getattr(torchvision.models, TORCHVISION_WEIGHTS["vgg16"]).IMAGENET1K_V1
    assert vgg16_args == (weights.url.rsplit("/", 1)[-1],)
    cloner.eval()
    ours.eval()
    x = images(2, seed=1)
    ref_source, ref_cloner = vgg(x), cloner(x)  # with gradients: VGG.forward hooks layer 11
    with torch.no_grad():
        ours_source, ours_cloner = pool_outputs(ours.source, x), ours.cloner(x)
    assert len(ref_source) == len(ref_cloner) == 13
    for tap, got_s, got_c in zip(POOL_TAPS, ours_source, ours_cloner, strict=True):
        assert ref_source[tap].shape == ref_cloner[tap].shape or tap == 1
        torch.testing.assert_close(got_s, ref_source[tap].detach(), **TOL)
        torch.testing.assert_close(got_c, ref_cloner[tap].detach(), **TOL)


@pytest.mark.parametrize(("lamda", "direction_only"), [(0.01, False), (0.5, False), (0.01, True)])
def test_training_loss_and_gradients(
    official, networks, monkeypatch, lamda: float, direction_only: bool
) -> None:
    """Training mode (cloner batch norm on batch statistics): loss_functions.MseDirectionLoss
    (lamda 0.01 as configured, 0.5 as for MVTec) and DirectionOnlyLoss on the official outputs
    equal our training_loss to 1e-6 relative, and the cloner gradients equal ours to 1e-4
    relative, 1e-7 absolute."""
    losses = official["loss_functions"]
    vgg, cloner, ours, _ = networks
    cfg = dataclasses.replace(ours.cfg, lamda=lamda, direction_loss_only=direction_only)
    monkeypatch.setattr(ours, "cfg", cfg)
    criterion = losses.DirectionOnlyLoss() if direction_only else losses.MseDirectionLoss(lamda)
    cloner.train()
    ours.train()
    cloner.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)
    x = images(3, seed=2)
    ref = criterion(cloner(x), vgg(x))
    loss = ours.training_loss(x, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    ref.backward()
    loss.backward()
    ours_params = dict(ours.cloner.named_parameters())
    for name, param in cloner.named_parameters():
        torch.testing.assert_close(
            ours_params[name].grad, param.grad, rtol=1e-4, atol=1e-7, msg=name
        )
    assert all(p.grad is None for p in ours.source.parameters())


@pytest.mark.parametrize("direction_only", [False, True])
def test_detection_score(official, networks, config, monkeypatch, direction_only: bool) -> None:
    """test_functions.detection_test on one test batch: the per-image scores it passes to
    roc_curve (pool3..pool5 only, per-image MSE) equal our anomaly_score to 1e-6 relative
    (rtol 1e-6, atol 1e-7)."""
    test_functions = official["test_functions"]
    vgg, cloner, ours, _ = networks
    monkeypatch.setattr(
        ours, "cfg", dataclasses.replace(ours.cfg, direction_loss_only=direction_only)
    )
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    roc_curve = test_functions.roc_curve

    def recording_roc_curve(labels: np.ndarray, scores: np.ndarray, **kwargs: Any) -> Any:
        seen.append((labels, scores))
        return roc_curve(labels, scores, **kwargs)

    monkeypatch.setattr(test_functions, "roc_curve", recording_roc_curve)
    x = images(4, seed=3)
    labels = torch.tensor([3, 3, 1, 5])  # normal_class 3 -> label 1, the others 0
    opts = {**config, "dataset_name": "retina", "direction_loss_only": direction_only}
    with legacy_runtime():  # it calls .cuda(); VGG.forward needs gradients (a hook on layer 11)
        test_functions.detection_test(cloner, vgg, [(x, labels)], opts)
    ((ref_labels, ref_scores),) = seen
    np.testing.assert_array_equal(ref_labels, [1, 1, 0, 0])
    ours.eval()
    with torch.no_grad():
        scores = ours.anomaly_score(x)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-6, atol=1e-7)


class _OptimiserBuiltError(Exception):
    """Raised by the recording optimiser once train.train has built its optimiser."""


def test_optimiser_and_training_settings(official, networks, config, monkeypatch, tmp_path) -> None:
    """train.train(config) up to its optimiser (loaders and networks stubbed, stopped once Adam is
    built): Adam over exactly the cloner's parameters, lr and the other hyperparameters equal
    those of our make_optimizer exactly; configs/config.yaml's batch size, lamda ("Others: 0.01"),
    loss and network switches equal our defaults, and our epochs are those of the last
    checkpoint train.py writes (every 50 of its num_epochs + 1 epochs)."""
    train = official["train"]
    vgg, cloner, ours, _ = networks
    defaults = KDADConfig()
    ours_opt, ours_sched = ours.make_optimizer()
    recorded: dict[str, Any] = {}
    real_adam = torch.optim.Adam

    def adam(params: Any, **kwargs: Any) -> None:
        recorded["optimizer"] = real_adam(params, **kwargs)
        raise _OptimiserBuiltError

    monkeypatch.chdir(tmp_path)  # train.train creates ./outputs/<experiment>/...
    monkeypatch.setattr(train, "load_data", lambda _config: ([], []))
    monkeypatch.setattr(train, "get_networks", lambda _config, **_kw: (vgg, cloner))
    monkeypatch.setattr(torch.optim, "Adam", adam)
    with pytest.raises(_OptimiserBuiltError):
        train.train({**config, "dataset_name": "retina"})
    monkeypatch.undo()

    opt = recorded["optimizer"]
    assert ours_sched is None
    (group,) = opt.param_groups
    (ours_group,) = ours_opt.param_groups
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
        assert ours_group[key] == group[key], key
    assert group["lr"] == defaults.lr == float(config["learning_rate"])
    names = {id(p): n for n, p in cloner.named_parameters()}
    assert sorted(names[id(p)] for p in group["params"]) == sorted(names.values())
    ours_names = {id(p): n for n, p in ours.cloner.named_parameters()}
    assert sorted(ours_names[id(p)] for p in ours_group["params"]) == sorted(names.values())

    assert config["batch_size"] == defaults.batch_size
    assert config["lamda"] == defaults.lamda
    assert config["direction_loss_only"] == defaults.direction_loss_only
    assert config["use_bias"] == defaults.use_bias
    assert config["equal_network_size"] == defaults.equal_network_size
    last_saved = max(e for e in range(config["num_epochs"] + 1) if e % 50 == 0)
    assert defaults.epochs == last_saved + 1
