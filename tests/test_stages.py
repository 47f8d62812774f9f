"""Stage entry points on tiny phantom data: determinism, resumption and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn.utils import clip_grad_norm_

from dia.errors import DiaError
from dia.evaluation.selection import OFFICIAL_RULES
from dia.io import file_digest
from dia.sections import config_sections
from dia.stages.data import run_download, run_prepare
from dia.stages.diffusion import diffusion_subset, run_dissolve_cache, run_train_diffusion
from dia.stages.runs import run_score, run_train
from tests.conftest import TINY_CONFIG
from tests.fakes import write_prepared

CONFIG = yaml.safe_load(TINY_CONFIG.read_text())
SPEC = CONFIG["datasets"]["phantom"]
BASELINES = ("kdad", "transformaly", "rd4ad", "uniad", "meanshift")
LAYERS = [{s: CONFIG[s] for s in config_sections()}, SPEC]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom data, a diffusion model and its dissolve cache, built once."""
    root = tmp_path_factory.mktemp("stages")
    run_download("phantom", SPEC, root / "raw.npz")
    run_prepare("phantom", SPEC, root / "raw.npz", root / "data")
    run_train_diffusion(
        data_dir=root / "data",
        out_dir=root / "diffusion",
        state_dir=root / "state",
        preset="dia_code",
        layers=LAYERS,
        resolution=16,
        ratio=1.0,
        seed=0,
        device="cpu",
    )
    run_dissolve_cache(
        data_dir=root / "data",
        model_path=root / "diffusion/model.pt",
        dest=root / "cache.npz",
        preset="dia_code",
        layers=LAYERS,
        resolution=16,
        device="cpu",
    )
    return root


def _run(
    root: Path,
    out: Path,
    layers: list,
    seed: int = 0,
    cache: Path | None = None,
    baseline: str | None = None,
) -> str:
    """Train and score one run; its scores.csv text."""
    run_train(
        data_dir=root / "data",
        out_dir=out,
        state_dir=out / "state",
        preset="dia_code",
        layers=layers,
        seed=seed,
        device="cpu",
        baseline=baseline,
        cache=cache,
    )
    run_score(data_dir=root / "data", run_dir=out, preset="dia_code", layers=layers, device="cpu")
    return (out / "scores.csv").read_text()


def _train_and_score(root: Path, out: Path, method: str, seed: int) -> str:
    layers = [*LAYERS, {"contrastive": {"method": method}}]
    return _run(root, out, layers, seed, root / "cache.npz" if method == "dia" else None)


@pytest.mark.parametrize("method", ["dia", "csi"])
def test_same_seed_gives_the_same_scores_on_cpu(
    prepared: Path, tmp_path: Path, method: str
) -> None:
    first = _train_and_score(prepared, tmp_path / "a", method, seed=3)
    again = _train_and_score(prepared, tmp_path / "b", method, seed=3)
    other = _train_and_score(prepared, tmp_path / "c", method, seed=4)
    assert first == again
    assert first != other
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert [metrics[r]["epoch"] for r in ("last",)] == [2]


def test_diffusion_training_resumes_to_the_same_model(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed after its step-3 checkpoint and restarted ends with the same weights."""
    kwargs = dict(
        data_dir=prepared / "data",
        preset="dia_code",
        layers=LAYERS,
        resolution=16,
        ratio=1.0,
        seed=0,
        device="cpu",
    )
    run_train_diffusion(out_dir=tmp_path / "straight", state_dir=tmp_path / "s1", **kwargs)

    calls = {"n": 0}
    original = clip_grad_norm_

    def dying_clip(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dying_clip)
    with pytest.raises(KeyboardInterrupt):
        run_train_diffusion(out_dir=tmp_path / "resumed", state_dir=tmp_path / "s2", **kwargs)
    assert (tmp_path / "s2/last.pt").exists() and not (tmp_path / "resumed/model.pt").exists()
    monkeypatch.undo()
    run_train_diffusion(out_dir=tmp_path / "resumed", state_dir=tmp_path / "s2", **kwargs)

    straight = torch.load(tmp_path / "straight/model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed/model.pt", weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)
    assert not (tmp_path / "s2/last.pt").exists()


def test_a_family_model_trains_on_every_class(tmp_path: Path) -> None:
    """``all_classes``: the training images of every label (a one-class family's shared model),
    not only the normal ones."""
    write_prepared(tmp_path / "data", n=30, n_normal_train=8, n_anomalous_train=12, size=16)
    common = {"preset": "dia_code", "layers": LAYERS, "seed": 0, "device": "cpu"}
    for all_classes, expected in ((True, 20), (False, 8)):
        out = tmp_path / str(all_classes)
        run_train_diffusion(
            data_dir=tmp_path / "data",
            out_dir=out,
            state_dir=tmp_path / "state",
            resolution=16,
            ratio=1.0,
            all_classes=all_classes,
            **common,
        )
        meta = json.loads((out / "meta.json").read_text())
        assert (meta["n_images"], meta["all_classes"]) == (expected, all_classes)


def test_diffusion_subset_is_deterministic_and_sized() -> None:
    a, b = diffusion_subset(1214, 0.1, seed=0), diffusion_subset(1214, 0.1, seed=0)
    assert np.array_equal(a, b) and len(a) == 121 and len(np.unique(a)) == 121
    with pytest.raises(DiaError, match="ratio"):
        diffusion_subset(10, 0.0, seed=0)


@pytest.mark.parametrize(
    ("override", "culprit"),
    [
        ({"contrastive": {"method": "dia"}}, "dissolve_source"),
        ({"contrastive": {"method": "csi", "image_size": 28}}, "image_size"),
        ({"contrastive": {"method": "dia"}, "dissolve": {"flip": "before"}}, "dissolve.flip"),
    ],
)
def test_bad_run_setup_is_a_clear_error(
    prepared: Path, tmp_path: Path, override: dict[str, object], culprit: str
) -> None:
    """DIA without a dissolve cache, images of another size than the network expects, or the
    official flip order with a cache (which holds unflipped dissolved images)."""
    layers = [*LAYERS, override]
    with pytest.raises(DiaError, match=culprit):
        run_train(
            data_dir=prepared / "data",
            out_dir=tmp_path,
            state_dir=tmp_path / "s",
            preset="dia_code",
            layers=layers,
            seed=0,
            device="cpu",
        )


@pytest.mark.parametrize("kind", ["gaussian", "median", "none"])
def test_blur_ablation_trains_without_a_diffusion_model(
    prepared: Path, tmp_path: Path, kind: str
) -> None:
    """dissolve.kind replaces the cache; the run records which dissolving it used."""
    layers = [*LAYERS, {"contrastive": {"method": "dia"}, "dissolve": {"kind": kind}}]
    _run(prepared, tmp_path, layers)
    config = json.loads((tmp_path / "train_meta.json").read_text())["config"]
    assert config["dissolve"]["kind"] == kind and config["dissolve"]["blur_branches"] == "all"
    assert json.loads((tmp_path / "metrics.json").read_text())["last"]["auroc"] > 0


def test_a_run_records_the_digest_of_its_diffusion_model(prepared: Path, tmp_path: Path) -> None:
    """A DIA run that dissolves online records the sha256 of the diffusion model it used (the
    parity table refuses pairs whose digests differ); a run without one records none."""
    dia = [*LAYERS, {"contrastive": {"method": "dia", "dissolve_source": "online"}}]
    model = prepared / "diffusion/model.pt"
    for out, layers, diffusion, expected in (
        (tmp_path / "dia", dia, model, file_digest(model)),
        (tmp_path / "csi", [*LAYERS, {"contrastive": {"method": "csi"}}], None, ""),
    ):
        run_train(
            data_dir=prepared / "data",
            out_dir=out,
            state_dir=out / "state",
            preset="dia_code",
            layers=layers,
            seed=0,
            device="cpu",
            diffusion=diffusion,
        )
        inputs = json.loads((out / "train_meta.json").read_text())["inputs"]
        assert inputs["diffusion_sha256"] == expected


@pytest.mark.parametrize("baseline", BASELINES)
def test_baselines_train_and_score_in_bf16(prepared: Path, tmp_path: Path, baseline: str) -> None:
    """``precision: bf16``: finite float32 scores and losses from every baseline."""
    layers = [*LAYERS, {baseline: {"precision": "bf16"}}]
    _run(prepared, tmp_path, layers, baseline=baseline)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["train"]["config"][baseline]["precision"] == "bf16"
    with open(tmp_path / "scores.csv") as f:
        assert all(np.isfinite(float(row.split(",")[3])) for row in list(f)[1:])
    with open(tmp_path / "train_log.csv") as f:
        assert "nan" not in f.read()


@pytest.mark.parametrize("baseline", BASELINES)
def test_baselines_train_and_score_like_dia(prepared: Path, tmp_path: Path, baseline: str) -> None:
    """Same files as a DIA run, deterministic for a seed, the training normals only."""
    first = _run(prepared, tmp_path / "a", LAYERS, baseline=baseline)
    assert first == _run(prepared, tmp_path / "b", LAYERS, baseline=baseline)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    official = {"official"} if baseline in OFFICIAL_RULES else set()  # Transformaly, UniAD
    assert set(metrics) == {"last", "val", "test_oracle"} | official
    assert 0.0 <= metrics["last"]["auroc"] <= 1.0
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["train"]["model"] == baseline
    assert meta["train"]["config"][baseline]["pretrained"] is False
    assert meta["train"]["n_train_images"] == SPEC["phantom"]["n_train"]
