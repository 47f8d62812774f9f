"""Our RD4AD (dia/baselines/rd4ad.py) against the official code (hq-deng/RD4AD at its pinned
commit): the same random weights copied into both, the same inputs, each with a stated tolerance.

The resnet18 / de_resnet18 pair of the official code (``resnet.resnet18``,
``de_resnet.de_resnet18``) keeps the CPU time low; our ``backbone: resnet18`` builds the same
networks. Run with
``DIA_OFFICIAL_REPOS`` naming a folder of snapshots; without it every test here skips.
"""

from __future__ import annotations

import ast
import contextlib
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from dia.baselines.backbones import IMAGENET_MEAN, IMAGENET_STD
from dia.baselines.rd4ad import RD4AD, RD4ADConfig
from tests.parity.conftest import importer, official_folder, randomise_batch_norms

KEY = "hq-deng__RD4AD"
SIZE = 64  # a multiple of 32: encoder maps 16/8/4, embedding 2
# float32 networks computing the same operations in the same order: agreement to 1e-5
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def official() -> dict[str, types.ModuleType]:
    return importer(KEY)("resnet", "de_resnet", "main", "test")


_ENCODER = [(r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."), (r"^layer(\d)\.", "layers.{0}.")]
_OCBE = [
    (r"^bn_layer\.", "ocbe.embed."),
    (r"^conv1\.", "ocbe.from_layer1.0."),
    (r"^bn1\.", "ocbe.from_layer1.1."),
    (r"^conv2\.", "ocbe.from_layer1.3."),
    (r"^bn2\.", "ocbe.from_layer1.4."),
    (r"^conv3\.", "ocbe.from_layer2.0."),
    (r"^bn3\.", "ocbe.from_layer2.1."),
]
# de_resnet BasicBlock: conv1 bn1 (relu) conv2 bn2 -> our body.0 body.1 body.3 body.4
_DECODER_BLOCK = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}


def encoder_name(name: str) -> str | None:
    """Our name of an official encoder (resnet.ResNet) entry; None for layer4 / fc (unused)."""
    if name.startswith(("layer4.", "fc.")):
        return None
    for pattern, repl in _ENCODER:
        match = re.match(pattern, name)
        if match:
            groups = [str(int(g) - 1) for g in match.groups()]
            return repl.format(*groups) + name[match.end() :]
    raise AssertionError(f"unmapped encoder entry {name}")


def ocbe_name(name: str) -> str | None:
    """Our name of an official ``BN_layer`` entry; None for conv4 / bn4 (never used)."""
    if name.startswith(("conv4.", "bn4.")):
        return None
    for pattern, repl in _OCBE:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    raise AssertionError(f"unmapped BN_layer entry {name}")


def decoder_name(name: str) -> str:
    """Our name of an official de_resnet entry: layer{s}.{j}.conv1 ->
    decoder.stages.{s-1}.{j}.body.0, layer{s}.{j}.upsample.{k} ->
    decoder.stages.{s-1}.{j}.shortcut.{k}."""
    match = re.fullmatch(r"layer(\d)\.(\d+)\.(\w+)\.(.+)", name)
    assert match, name
    stage, block, part, rest = match.groups()
    prefix = f"decoder.stages.{int(stage) - 1}.{block}."
    if part == "upsample":
        return prefix + "shortcut." + rest
    return prefix + f"body.{_DECODER_BLOCK[part]}." + rest


def copy_weights(encoder: nn.Module, bn: nn.Module, decoder: nn.Module, ours: RD4AD) -> None:
    """Load the official modules' state into ours; strict, so every entry of ours is covered."""
    state: dict[str, torch.Tensor] = {}
    for module, rename in ((encoder, encoder_name), (bn, ocbe_name), (decoder, decoder_name)):
        for name, value in module.state_dict().items():
            ours_name = rename(name)
            if ours_name is not None:
                state[ours_name] = value.clone()
    ours.load_state_dict(state, strict=True)


@pytest.fixture(scope="module")
def networks(
    official: dict[str, types.ModuleType],
) -> tuple[nn.Module, nn.Module, nn.Module, RD4AD]:
    """Official encoder, BN_layer and decoder with random weights, and ours holding the same."""
    torch.manual_seed(0)
    encoder, bn = official["resnet"].resnet18(pretrained=False)
    decoder = official["de_resnet"].de_resnet18(pretrained=False)
    randomise_batch_norms(encoder, bn, decoder)
    ours = RD4AD(RD4ADConfig(backbone="resnet18", pretrained=False, image_size=SIZE))
    copy_weights(encoder, bn, decoder, ours)
    return encoder, bn, decoder, ours


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def normalise(x: torch.Tensor) -> torch.Tensor:
    """dataset.get_data_transforms: ToTensor + ImageNet Normalize (the resize is a no-op here)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def test_forward(networks) -> None:
    """Eval mode: encoder layer1..3 maps, the BN_layer embedding and the decoder's three maps of
    the official modules equal ours to 1e-5 (rtol and atol)."""
    encoder, bn, decoder, ours = networks
    for m in (encoder, bn, decoder, ours):
        m.eval()
    x = images(2, seed=1)
    with torch.no_grad():
        inputs = encoder(normalise(x))
        embedding = bn(inputs)
        outputs = decoder(embedding)
        teacher, student = ours._features(x)
        ours_embedding = ours.ocbe(teacher)
    assert [t.shape[-1] for t in inputs] == [16, 8, 4]
    for ref, got in zip(inputs, teacher, strict=True):
        torch.testing.assert_close(got, ref, **TOL)
    torch.testing.assert_close(ours_embedding, embedding, **TOL)
    for ref, got in zip(outputs, student, strict=True):
        torch.testing.assert_close(got, ref, **TOL)


def test_training_loss_and_gradients(official, networks) -> None:
    """Training mode (encoder in eval, BN_layer and decoder in train, as main.train):
    main.loss_fucntion(encoder(x), decoder(bn(encoder(x)))) equals our training_loss to 1e-6,
    and the gradient of every trained official parameter equals ours to 1e-4 relative, 1e-6
    absolute (the gradients of conv4 / bn4, which BN_layer never uses, are None)."""
    encoder, bn, decoder, ours = networks
    encoder.eval()
    bn.train()
    decoder.train()
    ours.train()
    for m in (bn, decoder, ours):
        m.zero_grad(set_to_none=True)
    x = images(2, seed=2)
    inputs = encoder(normalise(x))
    ref = official["main"].loss_fucntion(inputs, decoder(bn(inputs)))
    loss = ours.training_loss(x, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-6)
    ref.backward()
    loss.backward()
    ours_params = dict(ours.named_parameters())
    compared = 0
    for module, rename in ((bn, ocbe_name), (decoder, decoder_name)):
        for name, param in module.named_parameters():
            ours_name = rename(name)
            if ours_name is None:
                assert param.grad is None, name
                continue
            torch.testing.assert_close(
                ours_params[ours_name].grad, param.grad, rtol=1e-4, atol=1e-6, msg=name
            )
            compared += 1
    assert compared == sum(p.requires_grad for p in ours.parameters())
    assert all(p.grad is None for p in ours.encoder_parameters())


def test_anomaly_map_and_score(official, networks, monkeypatch) -> None:
    """test.evaluation (cal_anomaly_map with amap_mode 'a', scipy gaussian_filter sigma 4, max)
    run on batches of one image: the pixel maps it passes to roc_auc_score equal our
    anomaly_map and its image scores our anomaly_score, both to 1e-5 (rtol and atol;
    float32 torch against float64 scipy)."""
    encoder, bn, decoder, ours = networks
    test_module = official["test"]
    seen: list[tuple[list[Any], list[Any]]] = []

    def roc_auc_score(labels: list[Any], scores: list[Any]) -> float:
        seen.append((labels, scores))
        return 0.5

    monkeypatch.setattr(test_module, "roc_auc_score", roc_auc_score)
    monkeypatch.setattr(test_module, "compute_pro", lambda *_a, **_k: 0.0)  # PRO: not compared
    encoder.eval()  # main.train: encoder.eval(); evaluation sets bn and decoder to eval
    x = images(3, seed=3)
    loader = [
        (normalise(x[i : i + 1]), torch.zeros(1, 1, SIZE, SIZE), torch.tensor([i % 2]), "name")
        for i in range(len(x))
    ]
    test_module.evaluation(encoder, bn, decoder, loader, "cpu")
    (_, pixel_scores), (_, image_scores) = seen
    ours.eval()
    with torch.no_grad():
        maps = ours.anomaly_map(x)
        scores = ours.anomaly_score(x)
    np.testing.assert_allclose(maps.reshape(-1).numpy(), np.asarray(pixel_scores), **TOL)
    np.testing.assert_allclose(scores.numpy(), np.asarray(image_scores), **TOL)


class _OptimiserBuiltError(Exception):
    """Raised by the recording optimiser once main.train has built its optimiser."""


def _function_literals(path: Path, function: str) -> dict[str, Any]:
    """``name = <literal>`` assignments in the body of ``function`` of the file at ``path``."""
    tree = ast.parse(path.read_text())
    body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    out = {}
    for node in body.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError):  # not a literal
                    out[target.id] = ast.literal_eval(node.value)
    return out


def test_optimiser_and_training_settings(official, monkeypatch) -> None:
    """main.train up to its optimiser (networks, datasets and loaders stubbed, stopped once Adam
    is built): the Adam hyperparameters (lr 0.005, betas (0.5, 0.999), eps, weight decay,
    amsgrad) equal those of our make_optimizer exactly, it optimises decoder + BN_layer, which
    map one to one onto ours (less the unused conv4 / bn4), and its image size, batch size and
    epochs (read from main.train's literals) are our defaults."""
    main = official["main"]
    torch.manual_seed(0)
    encoder, bn = official["resnet"].resnet18(pretrained=False)
    decoder = official["de_resnet"].de_resnet18(pretrained=False)
    ours = RD4AD(RD4ADConfig(backbone="resnet18", pretrained=False))
    ours_opt, ours_sched = ours.make_optimizer()
    defaults = RD4ADConfig()
    recorded: dict[str, Any] = {}

    def record(key: str, value: Any) -> Callable[..., Any]:
        def fake(*args: Any, **kwargs: Any) -> Any:
            recorded.setdefault(key, (args, kwargs))
            return value

        return fake

    real_adam = torch.optim.Adam

    def adam(params: Any, **kwargs: Any) -> None:
        recorded["optimizer"] = real_adam(params, **kwargs)
        raise _OptimiserBuiltError

    monkeypatch.setattr(main, "get_data_transforms", record("transforms", (None, None)))
    monkeypatch.setattr(main, "ImageFolder", record("train_data", []))
    monkeypatch.setattr(main, "MVTecDataset", record("test_data", []))
    monkeypatch.setattr(main, "wide_resnet50_2", record("encoder", (encoder, bn)))
    monkeypatch.setattr(main, "de_wide_resnet50_2", record("decoder", decoder))
    monkeypatch.setattr(torch.utils.data, "DataLoader", record("train_loader", []))
    monkeypatch.setattr(torch.optim, "Adam", adam)
    with pytest.raises(_OptimiserBuiltError):
        main.train("carpet")
    monkeypatch.undo()

    assert recorded["encoder"][1] == {"pretrained": True}
    assert recorded["transforms"][0] == (defaults.image_size, defaults.image_size)
    assert recorded["train_loader"][1]["batch_size"] == defaults.batch_size
    literals = _function_literals(official_folder(KEY) / "main.py", "train")
    assert literals["epochs"] == defaults.epochs
    assert literals["learning_rate"] == defaults.lr

    opt = recorded["optimizer"]
    assert ours_sched is None
    (group,) = opt.param_groups
    (ours_group,) = ours_opt.param_groups
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
        assert ours_group[key] == group[key], key
    assert group["lr"] == defaults.lr
    assert group["betas"] == defaults.adam_betas

    names = {id(p): ("decoder", n) for n, p in decoder.named_parameters()}
    names.update({id(p): ("bn", n) for n, p in bn.named_parameters()})
    optimised = [names[id(p)] for p in group["params"]]
    assert len(optimised) == len(names)  # all of decoder + BN_layer, nothing of the encoder
    mapped = {(decoder_name(n) if part == "decoder" else ocbe_name(n)) for part, n in optimised} - {
        None
    }
    ours_names = {id(p): n for n, p in ours.named_parameters()}
    assert mapped == {ours_names[id(p)] for p in ours_group["params"]}
