"""impl: official runs end to end on generated data: the official training step and CSI score
driven by dia.official.contrastive, resumable at epoch boundaries, refused for another commit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ema_pytorch import EMA

from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig, ScoreConfig
from dia.data.prepare import ImageBatches, PreparedData
from dia.diffusion.model import build_diffusion, save_diffusion
from dia.errors import DiaError
from dia.official.contrastive import OfficialRun, train_official
from dia.stages.official import score_official_run, train_official_run
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


def data() -> PreparedData:
    rng = np.random.default_rng(0)
    n = 28
    return PreparedData(
        ids=np.array([f"img{i}" for i in range(n)]),
        images=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
        labels=np.array([0] * 20 + [0, 1] * 4),
        splits=np.array(["train"] * 12 + ["val"] * 8 + ["test"] * 8),
        manifest_sha256="0" * 64,
    )


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
    return cfg, DissolveConfig(fit="pad_crop"), ScoreConfig(samples=2, batch_size=8)


@pytest.mark.parametrize("method", ["csi", "dia"])
def test_official_run_trains_scores_and_records_the_commit(
    method: str, record: Path, diffusion: Path, tmp_path: Path
) -> None:
    prepared = data()
    cfg, dcfg, score = configs(method)
    normals = ImageBatches(prepared.images[prepared.select("train", 0)])
    model, state, config = train_official_run(
        prepared,
        normals,
        cfg=cfg,
        dcfg=dcfg,
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
    ckpt["config"] = {**config, "official_commit": "f" * 40}
    with pytest.raises(DiaError, match="retrain it"):
        score_official_run(ckpt, prepared, score_cfg=score, official=record, device="cpu")


def test_official_run_resumes_at_an_epoch_boundary(record: Path, diffusion: Path, tmp_path) -> None:
    folder = official_folder("shijianjian__DIA")
    cfg, dcfg, score = configs("dia")
    normals = ImageBatches(data().images[:12])

    def train(state_dir: Path, crash_at: int | None = None) -> torch.nn.Module:
        run = OfficialRun(folder, cfg, dcfg, score, "cpu", diffusion=diffusion)
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
