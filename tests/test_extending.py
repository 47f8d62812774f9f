"""The README's "Extending" recipes, followed for real.

A new baseline is one module (its config dataclass and model, here this test module), one line in
the registry (``dia.baselines.BASELINES``, patched here) and a test: the schema, the plan and
the train and score stages pick it up with no other edit. A new dataset of a known layout is one
config entry.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml
from torch import nn

from dia.baselines import BASELINES
from dia.baselines.base import BaselineModel, resize_square
from dia.config import BaselineConfig
from dia.plan import Plan
from dia.sections import complete_schema
from dia.stages.data import run_download, run_prepare
from dia.stages.runs import run_score, run_train
from tests.conftest import ROOT, TINY_CONFIG, snakemake, tiny_config
from tests.fakes import make_kvasir


@dataclasses.dataclass(frozen=True)
class ToyConfig(BaselineConfig):
    """Toy baseline: squared distance of an image to a learnt normal template."""

    image_size: int = 16
    epochs: int = 3
    batch_size: int = 8
    lr: float = 0.5
    pretrained: bool = False
    eval_every_epochs: int | None = 1


class Toy(BaselineModel):
    """Learns the mean normal image; scores by the distance to it."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.template = nn.Parameter(torch.zeros(3, cfg.image_size, cfg.image_size))

    def make_optimizer(self) -> tuple[torch.optim.Optimizer, None]:
        return torch.optim.SGD(self.parameters(), lr=self.cfg.lr), None

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        return (resize_square(x, self.cfg.image_size) - self.template).square().flatten(1).mean(1)

    def training_loss(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return self._distance(x).mean()

    def anomaly_score(self, x: torch.Tensor) -> torch.Tensor:
        return self._distance(x)


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry line a new baseline adds."""
    monkeypatch.setitem(BASELINES, "toy", (__name__, "Toy"))


def toy_config() -> dict:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["methods"] = {"csi": config["methods"]["csi"], "toy": {"model": "toy"}}
    config["toy"] = {"epochs": 2}
    config.pop("variants")
    return config


def test_a_registered_baseline_is_in_the_schema_and_the_plan(toy_registered: None) -> None:
    config = toy_config()
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    schema = complete_schema(schema, config)
    jsonschema.validate(config, schema)
    with pytest.raises(jsonschema.ValidationError, match="'many' is not of type 'integer'"):
        jsonschema.validate({**config, "toy": {"epochs": "many"}}, schema)
    plan = Plan(config)
    assert plan.baseline("toy") == "toy" and plan.baseline("csi") is None
    assert plan.dissolve_input("phantom", "toy") is None


def test_a_registered_baseline_trains_and_scores_like_dia(
    toy_registered: None, tmp_path: Path
) -> None:
    config = toy_config()
    spec = config["datasets"]["phantom"]
    run_download("phantom", spec, tmp_path / "raw.npz")
    run_prepare("phantom", spec, tmp_path / "raw.npz", tmp_path / "data")
    run = tmp_path / "run"
    layers = Plan(config).layers("phantom", "toy")
    common = {"data_dir": tmp_path / "data", "preset": config["preset"], "layers": layers}
    run_train(**common, out_dir=run, state_dir=run / "state", seed=0, device="cpu", baseline="toy")
    run_score(**common, run_dir=run, device="cpu")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["train"]["model"] == "toy" and meta["train"]["epochs"] == 2
    assert meta["train"]["config"]["toy"]["lr"] == 0.5
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"last", "val", "test_oracle"}
    # the lesion makes an image farther from the learnt mean normal image
    assert metrics["last"]["auroc"] > 0.5


@pytest.mark.slow
def test_a_dataset_of_a_known_layout_is_one_config_entry(tmp_path: Path) -> None:
    """A Kvasir-layout folder added under a new name: the workflow plans every stage for it."""
    make_kvasir(tmp_path / "kvasir_copy")
    entry = {
        "source": "kvasir",
        "local_path": str(tmp_path / "kvasir_copy"),
        "normal_labels": ["normal-cecum", "normal-pylorus", "normal-z-line"],
        "anomaly_labels": ["polyps"],
        "image_size": 16,
        "split": {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2},
        "contrastive": {"image_size": 16},
        "dissolve": {"fit": "resize"},
    }
    config = tiny_config(tmp_path, {"my_endoscopy": entry})
    result = snakemake("-n", "--configfile", config, "--replace-workflow-config")
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("download_files", "prepare", "train_diffusion", "train", "score", "table1"):
        assert f"rule {rule}:" in result.stdout or f"{rule}  " in result.stdout, rule
    assert "my_endoscopy" in result.stdout
