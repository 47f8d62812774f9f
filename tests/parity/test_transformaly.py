"""Our Transformaly (dia/baselines/transformaly.py) against the official code
(MatanCohen1/Transformaly at its pinned commit), with the same weights and inputs, each with a
stated tolerance.

The official ViT-B/16 (``pytorch_pretrained_vit``, ``B_16_imagenet1k`` with random weights) runs
at 64 px (16 patches and the class token) instead of 384 px to stay cheap on a CPU; every block
is the full-width one. Its weights are copied into ours (timm's fused qkv = the official q, k and
v projections stacked). Run with ``DIA_OFFICIAL_REPOS`` naming a folder of snapshots (README,
"Parity with the official code"); without it every test here skips.
"""

from __future__ import annotations

import ast
import textwrap
import types
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from dia.baselines.transformaly import Transformaly, TransformalyConfig
from dia.data.prepare import ImageBatches, to_float_tensor
from dia.official.imports import legacy_runtime
from tests.parity.conftest import importer, official_folder

Modules = dict[str, types.ModuleType]  # official modules by dotted name
KEY = "MatanCohen1__Transformaly"
VIT = "B_16_imagenet1k"  # train.py / eval.py VIT_MODEL_NAME with use_imagenet
SIZE = 64


@pytest.fixture(scope="module")
def official() -> Modules:
    # train.py and eval.py keep their work under `if __name__ == "__main__"`: importing them
    # gives their imports (eval.py's PCA, GaussianMixture, eig) and nothing runs
    return importer(KEY)("pytorch_pretrained_vit.model", "utils", "train", "eval")


def _cuda(arg: Any) -> bool:
    return (isinstance(arg, str) and arg.startswith("cuda")) or (
        isinstance(arg, torch.device) and arg.type == "cuda"
    )


def _stay_on_cpu(method: Any) -> Any:
    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple("cpu" if _cuda(a) else a for a in args)
        if _cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return method(self, *args, **kwargs)

    return to


@contextmanager
def on_cpu() -> Iterator[None]:
    """legacy_runtime(), and the official ``.to('cuda')`` / ``.cuda()`` calls kept on the CPU
    (utils.get_features, get_finetuned_features and forward_one_epoch hard-code 'cuda')."""
    with legacy_runtime(), pytest.MonkeyPatch.context() as mp:
        for owner in (torch.Tensor, nn.Module):
            mp.setattr(owner, "to", _stay_on_cpu(owner.to))
            mp.setattr(owner, "cuda", lambda self, *_a, **_k: self)
        yield


def block_weights(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """One official transformer.Block's weights under timm's Block names."""
    out = {
        f"{n}.{p}": state[f"{prefix}.{n}.{p}"]
        for n in ("norm1", "norm2")
        for p in ("weight", "bias")
    }
    for p in ("weight", "bias"):
        out[f"attn.qkv.{p}"] = torch.cat([state[f"{prefix}.attn.proj_{c}.{p}"] for c in "qkv"])
        out[f"attn.proj.{p}"] = state[f"{prefix}.proj.{p}"]
        out[f"mlp.fc1.{p}"] = state[f"{prefix}.pwff.fc1.{p}"]
        out[f"mlp.fc2.{p}"] = state[f"{prefix}.pwff.fc2.{p}"]
    return out


def ours_from(model: nn.Module) -> dict[str, torch.Tensor]:
    """An official AnomalyViT's state under our names: teacher = blocks, student = cloned_blocks."""
    state = model.state_dict()
    out = {
        "teacher.cls_token": state["class_token"],
        "teacher.pos_embed": state["positional_embedding.pos_embedding"],
        "teacher.patch_embed.proj.weight": state["patch_embedding.weight"],
        "teacher.patch_embed.proj.bias": state["patch_embedding.bias"],
        "teacher.norm.weight": state["norm.weight"],
        "teacher.norm.bias": state["norm.bias"],
    }
    for i in range(len(model.transformer.blocks)):
        for key, value in block_weights(state, f"transformer.blocks.{i}").items():
            out[f"teacher.blocks.{i}.{key}"] = value
        for key, value in block_weights(state, f"transformer.cloned_blocks.{i}").items():
            out[f"student.{i}.{key}"] = value
    return out


def build_pair(official: Modules, **changes: Any) -> tuple[nn.Module, Transformaly]:
    """The official AnomalyViT (fc = Identity, as train.py sets it; biases, norms and the class
    token perturbed so that none is trivial) and ours with its weights (strict)."""
    torch.manual_seed(0)
    ref = official["pytorch_pretrained_vit.model"].AnomalyViT(
        VIT, pretrained=False, image_size=SIZE
    )
    ref.fc = official["utils"].Identity()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name or name.endswith("bias") or name == "class_token":
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    ours = Transformaly(TransformalyConfig(pretrained=False, image_size=SIZE, **changes))
    ours.load_state_dict(ours_from(ref))
    return ref, ours


@pytest.fixture(scope="module")
def pair(official: Modules) -> tuple[nn.Module, Transformaly]:
    ref, ours = build_pair(official)
    return ref.eval(), ours.eval()


def uint8_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def normalised(x: torch.Tensor) -> torch.Tensor:
    """utils.get_transforms after ToTensor: Normalize([0.5] * 3, [0.5] * 3)."""
    return (x - 0.5) / 0.5


def test_blocks_and_pretrained_feature(
    official: Modules, pair: tuple[nn.Module, Transformaly]
) -> None:
    """Eval mode: AnomalyViT's 12 teacher block outputs and 12 cloned-block outputs (each on
    the teacher's input of its block) against our teacher states and student blocks, and the
    pretrained feature (ViT with fc = Identity: the final LayerNorm's class token, train.py:202
    and utils.get_features) against ours: all to rtol 1e-5, atol 5e-5 (values up to ~15)."""
    ref, ours = pair
    x = to_float_tensor(uint8_images(2, 0))
    vit = official["pytorch_pretrained_vit.model"].ViT(VIT, pretrained=False, image_size=SIZE)
    vit.fc = official["utils"].Identity()
    vit.load_state_dict({k: v for k, v in ref.state_dict().items() if "cloned" not in k})
    with torch.no_grad():
        teacher, student = ref(normalised(x))
        states = ours._teacher_states(x)
        mine = torch.stack([block(states[i]) for i, block in enumerate(ours.student)])
        with on_cpu():
            cls = official["utils"].get_features(vit.eval(), [(normalised(x), None)])
        our_cls, _ = ours._features(x)
    torch.testing.assert_close(torch.stack(states[1:]), teacher, rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(mine, student, rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(our_cls.float(), torch.from_numpy(cls), rtol=1e-5, atol=5e-5)


def test_distillation_loss_and_gradients(official: Modules) -> None:
    """nn.MSELoss()(cloned_block_outputs, origin_block_outputs), as utils.forward_one_epoch
    computes it (utils.py:315-316), against our training_loss, and its gradients on the cloned
    blocks against ours on the student, in eval mode, then in train mode: there the official
    teacher's dropout is switched off (our documented deviation: the frozen teacher stays
    deterministic) and the global generator is seeded as our training_loss seeds it, so the
    students' dropout masks (attention probabilities, after the projection, after the MLP)
    coincide. Loss to 1e-6 relative, gradients to rtol 1e-4, atol 1e-7."""
    ref, ours = build_pair(official)
    eval_loss = float("nan")
    x = to_float_tensor(uint8_images(2, 1))
    for mode in ("eval", "train"):
        rng = torch.Generator().manual_seed(2)
        if mode == "train":
            for module in ref.transformer.blocks.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
            draws = torch.Generator().set_state(rng.get_state())  # our training_loss's draw
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=draws)))
        ref.train(mode == "train")
        ours.train(mode == "train")
        ref.zero_grad()
        ours.zero_grad()
        teacher, student = ref(normalised(x))
        expected = nn.MSELoss()(student, teacher)
        loss = ours.training_loss(x, rng)
        assert abs(loss.item() - expected.item()) <= 1e-6 * expected.item(), mode
        if mode == "eval":
            eval_loss = loss.item()
        else:  # the students' dropout really acted
            assert abs(loss.item() - eval_loss) > 1e-3 * eval_loss
        expected.backward()
        loss.backward()
        grads = {k: v.grad for k, v in ours.student.named_parameters()}
        for i, block in enumerate(ref.transformer.cloned_blocks):
            state = {f"cloned.{k}": v.grad for k, v in block.named_parameters()}
            for key, grad in block_weights(state, "cloned").items():
                torch.testing.assert_close(grads[f"{i}.{key}"], grad, rtol=1e-4, atol=1e-7)


def argparse_defaults(script: str) -> dict[str, Any]:
    """``--name: default`` of every parser.add_argument call in an official script."""
    tree = ast.parse((official_folder(KEY) / script).read_text())
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            kw = {k.arg: k.value for k in node.keywords}
            if "default" in kw:
                out[ast.literal_eval(node.args[0])] = ast.literal_eval(kw["default"])
    return out


@pytest.mark.filterwarnings("ignore")
def test_training_steps_through_official_train(
    official: Modules, monkeypatch: pytest.MonkeyPatch
) -> None:
    """utils.train (Adam over model.parameters() at train.py's --lr default, nn.MSELoss) for one
    epoch of two batches, with dropout 0 everywhere (its dropout also acts on the teacher),
    against two steps of our make_optimizer on the same batches: the cloned blocks equal our
    student to 1e-5 (a tenth of one step at lr 1e-4) and 99% of each tensor's weights to 1e-7
    (the key bias, whose gradient is 0 up to noise, apart); the epoch's training loss equals ours
    to 1e-6 relative; the model it keeps as best after the first evaluation is that model."""
    ref, ours = build_pair(official, dropout=0.0)
    best = official["pytorch_pretrained_vit.model"].AnomalyViT(
        VIT, pretrained=False, image_size=SIZE
    )
    best.fc = official["utils"].Identity()
    for module in ref.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    official["utils"].freeze_finetuned_model(ref)  # train.py:164: only cloned blocks train
    batches = [to_float_tensor(uint8_images(2, seed)) for seed in (3, 4)]
    loader = [(normalised(x), torch.zeros(len(x))) for x in batches]
    args = {
        "lr": argparse_defaults("train.py")["--lr"],
        "epochs": 1,
        "eval_every": 1,
        "plot_every_layer_summarization": False,
    }
    monkeypatch.setattr(torch, "save", lambda *_a, **_k: None)  # train() checkpoints each epoch
    with on_cpu():
        model, best, losses = official["utils"].train(
            model=ref,
            best_model=best,
            args=args,
            dataloaders={"training": loader, "val": loader[:1], "test": loader[:1]},
            model_checkpoint_path="unused",
            output_path="unused",
            device="cpu",
        )
    ours.train()
    opt, _ = ours.make_optimizer()
    rng = torch.Generator().manual_seed(5)
    our_losses = []
    for x in batches:
        loss = ours.training_loss(x, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        our_losses.append(loss.item())
    np.testing.assert_allclose(losses["training_losses"], [np.mean(our_losses)], rtol=1e-6)
    expected = ours_from(model)
    for key, value in ours.student.state_dict().items():
        diff = (value - expected[f"student.{key}"]).abs()
        if key.endswith("attn.qkv.bias"):
            # the key bias's gradient is 0 up to float noise (it shifts all of a query's scores
            # alike, which softmax ignores), and Adam scales that noise up to ~lr / 100
            diff = torch.cat([diff[:768], diff[1536:]])
        # Adam divides each gradient element by its own size: where that is float noise around
        # 0, the step may differ by up to lr = 1e-4; elsewhere the weights agree to 1e-7
        assert diff.max() < 1e-5, key
        assert diff.gt(1e-7).float().mean() < 1e-2, key
    for key, value in best.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def eval_py(first: str, last: str) -> str:
    """The lines of eval.py's main loop from ``first`` to ``last`` (stripped), dedented."""
    lines = (official_folder(KEY) / "eval.py").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == first)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == last)
    return textwrap.dedent("\n".join(lines[start : end + 1]))


@pytest.mark.filterwarnings("ignore")
def test_score(official: Modules, pair: tuple[nn.Module, Transformaly]) -> None:
    """The unimodal score of eval.py, run from its own lines (127-153: components before the
    explained variance passes 0.9, PCA whitening, a 1-component GaussianMixture; 240-262: the
    per-block distances of layers 2..11 from utils.get_finetuned_features, a second mixture, the
    sum of both log-likelihoods) on features from the official ViT and AnomalyViT, against our
    fit_scoring / anomaly_score: the same component count; each log-likelihood and the summed
    score to rtol 1e-5, atol 1e-4 (measured: 2e-5 at values 5..18; the official features, PCA and
    mixtures are float32, ours float64)."""
    ref, ours = pair
    train, test = uint8_images(24, 6), uint8_images(6, 7)
    vit = official["pytorch_pretrained_vit.model"].ViT(VIT, pretrained=False, image_size=SIZE)
    vit.fc = official["utils"].Identity()
    vit.load_state_dict({k: v for k, v in ref.state_dict().items() if "cloned" not in k})
    vit.eval()

    def loader(images: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = normalised(to_float_tensor(images))
        return [(x[i : i + 8], torch.zeros(len(x[i : i + 8]))) for i in range(0, len(x), 8)]

    utils = official["utils"]
    with torch.no_grad(), on_cpu():
        scope: dict[str, Any] = {
            **vars(official["eval"]),
            "print_and_add_to_log": lambda *_a: None,
            "args": {"whitening_threshold": 0.9, "use_layer_outputs": list(range(2, 12))},
            "results": defaultdict(list),
            "anomaly_targets": [0, 1] * 3,
            "train_features": utils.get_features(vit, loader(train)),
            "test_features": utils.get_features(vit, loader(test)),
            # eval.py:204-205, 236-237: the (1, N, 12) output is squeezed to (N, 12)
            "train_finetuned_features": utils.get_finetuned_features(ref, loader(train))[0],
            "test_finetuned_features": utils.get_finetuned_features(ref, loader(test))[0],
        }
        exec(
            eval_py(
                "# estimate the number of components",
                "test_pretrained_samples_likelihood = dens_model.score_samples(test_features)",
            ),
            scope,
        )
        exec(
            eval_py(
                "train_finetuned_features = train_finetuned_features[:, args['use_layer_outputs']]",
                "range(len(test_pretrained_samples_likelihood))]",
            ),
            scope,
        )
    ours.fit_scoring(ImageBatches(train), "cpu")
    x = to_float_tensor(test)
    with torch.no_grad():
        cls, dists = ours._features(x)
        pretrained = ours.pretrained_density.log_prob(ours.whitening(cls)).numpy()
        distill = ours.distill_density.log_prob(dists).numpy()
        score = ours.anomaly_score(x).numpy()
    assert ours.whitening.projection.shape[1] == scope["n_components"]
    tol = {"rtol": 1e-5, "atol": 1e-4}
    np.testing.assert_allclose(pretrained, scope["test_pretrained_samples_likelihood"], **tol)
    np.testing.assert_allclose(distill, scope["test_finetuned_samples_likelihood"], **tol)
    np.testing.assert_allclose(-score, scope["finetuned_and_pretrained_samples_likelihood"], **tol)


def test_config_defaults(official: Modules, pair: tuple[nn.Module, Transformaly]) -> None:
    """TransformalyConfig's defaults against the official scripts: train.py's --lr and
    use_layer_outputs, the README's --epochs 30 --batch_size 32 --whitening_threshold 0.9 (also
    eval.py's default), utils.get_transforms' Resize((384, 384)) and Normalize(0.5, 0.5), the
    B_16_imagenet1k config's dropout 0.1 and sklearn's reg_covar; our optimiser is Adam at that
    rate with torch's other defaults, as utils.train builds it (utils.py:346)."""
    cfg = TransformalyConfig()
    train, evaluate = argparse_defaults("train.py"), argparse_defaults("eval.py")
    readme = (official_folder(KEY) / "README.md").read_text()
    assert cfg.lr == train["--lr"]
    assert cfg.whitening_threshold == evaluate["--whitening_threshold"]
    assert f"--whitening_threshold {cfg.whitening_threshold} --unimodal" in readme
    assert (
        f"--epochs {cfg.epochs} --batch_size {cfg.batch_size} --eval_every 5 --unimodal" in readme
    )
    for script in ("train.py", "eval.py"):
        source = (official_folder(KEY) / script).read_text()
        layers = f"args['use_layer_outputs'] = list(range({cfg.layers[0]}, {cfg.layers[-1] + 1}))"
        assert layers in source and list(cfg.layers) == list(range(2, 12))
    transforms = official["utils"].get_transforms("cifar10", use_imagenet=True).transforms
    assert list(transforms[0].size) == [cfg.image_size] * 2
    assert list(transforms[-1].mean) == [0.5] * 3 and list(transforms[-1].std) == [0.5] * 3
    vit_config = official["pytorch_pretrained_vit.model"].PRETRAINED_MODELS[VIT]
    assert vit_config["config"]["dropout_rate"] == cfg.dropout
    assert tuple(vit_config["image_size"]) == (cfg.image_size,) * 2
    assert official["eval"].mixture.GaussianMixture().reg_covar == cfg.reg_covar
    opt, sched = pair[1].make_optimizer()
    assert type(opt) is torch.optim.Adam and sched is None
    reference = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=train["--lr"])
    skip = {"params"}
    ref_group = {k: v for k, v in reference.param_groups[0].items() if k not in skip}
    assert {k: v for k, v in opt.param_groups[0].items() if k not in skip} == ref_group
