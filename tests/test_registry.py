"""The registries: the source registry is the one list of dataset sources (the schema's enum is
written from it, and the layout listers and the workflow's download and credential lists agree
with it), and every registered baseline's config names its own section."""

from __future__ import annotations

import yaml

from dia.baselines import BASELINES, config_class
from dia.data.layouts import LISTERS
from dia.data.registry import CIFAR, FILE_SOURCES, NPZ_SOURCES, SOURCES, needs_kaggle
from dia.plan import Plan
from dia.sections import complete_schema
from tests.conftest import ROOT


def test_the_schema_takes_its_source_enum_from_the_registry() -> None:
    path = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    written = yaml.safe_load(path.read_text())
    assert "enum" not in written["$defs"]["dataset"]["properties"]["source"]  # one home
    schema = complete_schema(written, {"datasets": {}})
    assert schema["$defs"]["dataset"]["properties"]["source"]["enum"] == list(SOURCES)


def test_every_image_file_source_has_a_lister() -> None:
    assert set(FILE_SOURCES) - set(CIFAR) == set(LISTERS)
    assert set(NPZ_SOURCES) | set(FILE_SOURCES) == set(SOURCES)


def test_kaggle_needs_credentials_only_without_local_path() -> None:
    kaggle = [name for name, s in SOURCES.items() if s.kaggle]
    assert kaggle == ["sarscov2", "kermany", "aptos2019"]
    assert all(needs_kaggle({"source": name}) for name in kaggle)
    assert not needs_kaggle({"source": "sarscov2", "local_path": "data/sarscov2"})
    assert not needs_kaggle({"source": "kvasir"})


def test_the_plan_sorts_downloads_by_what_they_write() -> None:
    datasets = {
        "pneu": {"source": "medmnist", "normal_labels": [0]},
        "ct": {"source": "sarscov2", "normal_labels": ["non-COVID"]},
        "ct_local": {"source": "sarscov2", "local_path": "x", "normal_labels": ["non-COVID"]},
        "mine": {"source": "folder", "local_path": "y", "normal_labels": ["normal"]},
        "c10": {"source": "cifar10", "one_class": [0, 1]},
    }
    plan = Plan({"datasets": datasets, "methods": {"csi": {}}, "seeds": [0]})
    assert plan.downloads("npz") == ["pneu"]
    assert plan.downloads("files") == ["ct", "ct_local", "mine", "c10"]
    assert plan.kaggle_downloads() == ["ct"]


def test_every_baseline_config_knows_its_section() -> None:
    """Error messages name a baseline's keys (``kdad.lr``) through ``section()``."""
    for name in BASELINES:
        assert config_class(name).section() == name
