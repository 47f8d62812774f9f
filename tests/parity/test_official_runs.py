"""impl: official runs end to end on generated data: the official training step and CSI score
driven by dia.official.contrastive, resumable at epoch boundaries, refused for another commit,
stepping at the rates of our loop; and the official RD4AD, KDAD, Mean-Shift and UniAD code
driven by dia.official.baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ema_pytorch import EMA

import dia.official.contrastive as adapter
from dia.baselines import build_baseline
from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig, ScoreConfig
from dia.contrastive.optim import lars
from dia.contrastive.train import Trainer
from dia.data.prepare import ImageBatches
from dia.diffusion.model import build_diffusion, save_diffusion
from dia.errors import DiaError
from dia.official.baselines import ADAPTERS
from dia.official.contrastive import OfficialRun, train_official
from dia.sections import resolve
from dia.stages.baselines import score_baseline, train_baseline
from dia.stages.official import score_official_run, train_official_run
from tests.fakes import noise_prepared
from tests.parity.conftest import PINS, official_folder


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> Path:
    folder = official_folder("shijianjian__DIA")
    path = tmp_path_factory.mktemp("official") / "shijianjian__DIA.json"
    path.write_text(json.dumps({"path": str(folder), "commit": PINS["shijianjian__DIA"].commit}))
    return path


@pytest.fixture(scope="module")
def diffusion(tmp_path_factory) -> Path:
    cfg = DiffusionConfig(dim=8, dim_mults=(1, 2), resolution=32)
    model = build_diffusion(cfg)
    path = tmp_path_factory.mktemp("diffusion") / "model.pt"
    save_diffusion(path, model, EMA(model).ema_model, cfg)
    return path


def configs(method: str) -> tuple[ContrastiveConfig, DissolveConfig, ScoreConfig]:
    cfg = ContrastiveConfig(
        method=method,
        impl="official",
        image_size=28,
        batch_size=8,
        epochs=2,
        max_batches_per_epoch=2,
        warmup_epochs=1,
        lr_cosine_epochs=None,
        eval_every_epochs=1,
        dissolve_source="online",
    )
    return cfg, DissolveConfig(fit="pad_crop", flip="before"), ScoreConfig(samples=2, batch_size=8)


@pytest.mark.parametrize("method", ["csi", "dia"])
def test_official_run_trains_scores_and_records_the_commit(
    method: str, record: Path, diffusion: Path, tmp_path: Path
) -> None:
    prepared = noise_prepared()
    cfg, dissolve_cfg, score = configs(method)
    normals = ImageBatches(prepared.images[prepared.select("train", 0)])
    model, state, config = train_official_run(
        prepared,
        normals,
        cfg=cfg,
        dissolve_cfg=dissolve_cfg,
        score_cfg=score,
        official=record,
        diffusion=diffusion,
        seed=0,
        device="cpu",
        state_dir=tmp_path,
    )
    assert [row["epoch"] for row in state.log] == [1, 2]
    assert state.step == 4  # 12 images in batches of 8: 2 per pass
    assert all(np.isfinite(row["loss"]) for row in state.log)
    assert [e for e, _ in state.evals] == [1]
    assert config["official_commit"] == PINS["shijianjian__DIA"].commit
    ckpt = {"config": config, "model": model.state_dict()}
    scores, _ = score_official_run(ckpt, prepared, score_cfg=score, official=record, device="cpu")
    assert {k: v.shape for k, v in scores.items()} == {"val": (8,), "test": (8,)}
    assert all(np.isfinite(v).all() for v in scores.values())
    if method == "dia":  # recorded before dissolve.flip existed: the official order is implied
        ckpt["config"]["dissolve"].pop("flip")
        score_official_run(ckpt, prepared, score_cfg=score, official=record, device="cpu")
    ckpt["config"] = {**config, "official_commit": "f" * 40}
    with pytest.raises(DiaError, match="retrain it"):
        score_official_run(ckpt, prepared, score_cfg=score, official=record, device="cpu")


def test_official_run_resumes_at_an_epoch_boundary(record: Path, diffusion: Path, tmp_path) -> None:
    folder = official_folder("shijianjian__DIA")
    cfg, dissolve_cfg, score = configs("dia")
    normals = ImageBatches(noise_prepared().images[:12])

    def train(state_dir: Path, crash_at: int | None = None) -> torch.nn.Module:
        run = OfficialRun(folder, cfg, dissolve_cfg, score, "cpu", diffusion=diffusion)
        if crash_at is not None:
            module = run.modules["training.unsup.simclr_DIA"]
            real = module.train

            def crashing(opts, epoch, *args, **kwargs):
                if epoch == crash_at:
                    raise RuntimeError("simulated crash")
                return real(opts, epoch, *args, **kwargs)

            module.train = crashing
        return train_official(run, normals, seed=0, state_dir=state_dir, evaluate=None)[0]

    whole = train(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tmp_path / "resumed", crash_at=2)
    resumed = train(tmp_path / "resumed")
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_an_official_evaluation_between_epochs_leaves_the_training_draws_alone(
    diffusion: Path, tmp_path: Path
) -> None:
    """The official score reseeds the global RNGs for every sample; a run evaluated between
    epochs still trains exactly as one never evaluated, so its seed keeps its own draws."""
    folder = official_folder("shijianjian__DIA")
    cfg, dissolve_cfg, score = configs("dia")
    normals = ImageBatches(noise_prepared().images[:12])
    run = OfficialRun(folder, cfg, dissolve_cfg, score, "cpu", diffusion=diffusion)

    def evaluate(model: torch.nn.Module) -> dict[str, np.ndarray]:
        return run.anomaly_scores(model, normals, {"val": normals})

    plain = train_official(run, normals, seed=0, state_dir=tmp_path / "plain", evaluate=None)
    evaluated = train_official(
        run, normals, seed=0, state_dir=tmp_path / "evaluated", evaluate=evaluate
    )
    assert [epoch for epoch, _ in evaluated[1].evals] == [1]  # the final model is scored apart
    for key, value in plain[0].state_dict().items():
        torch.testing.assert_close(evaluated[0].state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.filterwarnings("ignore")  # torch deprecates step(epoch), which the official code uses
def test_every_step_of_a_capped_run_trains_at_the_official_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three epochs of 2 of 3 batches, each loop run whole: the official one stepping its
    scheduler after every iteration, ours through run_epochs. Every step, each epoch's first
    one included, trains at the same rate (all in warm-up, where the official chain has no
    recursive-cosine step; the cosine itself is tested above)."""
    folder = official_folder("shijianjian__DIA")
    cfg, dissolve_cfg, score = configs("csi")
    cfg = cfg.replace(
        batch_size=4, epochs=3, max_batches_per_epoch=2, warmup_epochs=2, eval_every_epochs=None
    )
    normals = ImageBatches(noise_prepared().images[:12])
    rates: dict[str, list[float]] = {"official": [], "ours": []}

    def recording(optimizer: torch.optim.Optimizer, key: str) -> torch.optim.Optimizer:
        optimizer.register_step_pre_hook(
            lambda opt, _args, _kwargs: rates[key].append(opt.param_groups[0]["lr"])
        )
        return optimizer

    monkeypatch.setattr(adapter, "lars", lambda *a: recording(lars(*a), "official"))
    run = OfficialRun(folder, cfg, dissolve_cfg, score, "cpu")
    train_official(run, normals, seed=0, state_dir=tmp_path / "official", evaluate=None)
    trainer = Trainer(cfg.replace(impl="native"), normals, dissolve=None, seed=0)
    recording(trainer.optimizer, "ours")
    trainer.fit(state_dir=tmp_path / "ours")
    assert len(rates["official"]) == 6
    np.testing.assert_allclose(rates["ours"], rates["official"], rtol=0, atol=1e-12)
    assert rates["official"][2] < rates["official"][3]  # epoch 2 starts below its second step


BASELINES = {
    "rd4ad": ("hq-deng__RD4AD", {"backbone": "resnet18", "image_size": 32}),
    "kdad": ("rohban-lab__Knowledge_Distillation_AD", {"image_size": 32}),
    "meanshift": ("talreiss__Mean-Shifted-Anomaly-Detection", {"backbone": "resnet18"}),
    "uniad": ("zhiyuanyou__UniAD", {"backbone": "tf_efficientnet_b0", "image_size": 128}),
}


def baseline_layers(name: str) -> list[dict]:
    settings = {"impl": "official", "pretrained": False, "epochs": 2, "batch_size": 8}
    return [{name: {**settings, "eval_every_epochs": 1, **BASELINES[name][1]}}]


@pytest.mark.parametrize("name", list(BASELINES))
def test_official_baseline_run_trains_and_scores(name: str, tmp_path: Path) -> None:
    key = BASELINES[name][0]
    record = tmp_path / f"{key}.json"
    record.write_text(json.dumps({"path": str(official_folder(key)), "commit": PINS[key].commit}))
    prepared = noise_prepared()
    model, state, config = train_baseline(
        name,
        prepared,
        views=None,
        state_dir=tmp_path / "state",
        preset="dia_code",
        layers=baseline_layers(name),
        seed=0,
        device="cpu",
        official=record,
    )
    assert [row["epoch"] for row in state.log] == [1, 2]
    assert state.step == 4  # 12 images in batches of 8: 2 per pass
    assert all(np.isfinite(row["loss"]) for row in state.log)
    assert [e for e, _ in state.evals] == [1]
    assert config["official_commit"] == PINS[key].commit
    ckpt = {"model_name": name, "config": config, "model": model.state_dict()}
    scores, _ = score_baseline(ckpt, prepared, "cpu", None, official=record)
    assert {k: v.shape for k, v in scores.items()} == {"val": (8,), "test": (8,)}
    assert all(np.isfinite(v).all() for v in scores.values())


@pytest.mark.parametrize("name", ["rd4ad", "kdad", "meanshift"])
def test_official_baseline_starts_from_the_native_backbone(name: str) -> None:
    """Seeded alike, the official and native models draw the same random backbone weights."""
    key = BASELINES[name][0]
    cfg = resolve(name, "dia_code", baseline_layers(name))
    torch.manual_seed(0)
    native = build_baseline(name, cfg)
    torch.manual_seed(0)
    official = ADAPTERS[name](cfg, official_folder(key))
    backbones = {
        "rd4ad": lambda: (native.layers[0], official.encoder.layer1),
        "kdad": lambda: (native.source, official.source.features),
        "meanshift": lambda: (native.backbone, official.net.backbone),
    }
    ours, theirs = backbones[name]()
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
