"""The experiment a config describes: runs, dissolving inputs, ablation tables."""

from __future__ import annotations

import pytest
import yaml

from dia.errors import DiaError
from dia.plan import Plan
from tests.conftest import ROOT

PAPER = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_paper_plan_runs_table1_and_every_ablation() -> None:
    plan = Plan(PAPER)
    runs = plan.runs()
    assert len(runs) == len({tuple(r.values()) for r in runs}) == 3 * (7 * 6 + 9 * 4 + 2 + 2 * 30)
    assert len(plan.main_runs()) == 3 * 7 * 6
    assert plan.built_ablations() == [
        "table2_shift",
        "table3_resolution",
        "ablation_dissolve",
        "fig4_data_ratio",
    ]
    assert plan.ablations["table3_resolution"] == {
        "32": "default",
        "64": "dslv64",
        "128": "dslv128",
    }
    fig4 = plan.ablation_runs("fig4_data_ratio")
    assert {r["dataset"] for r in fig4} == {
        "pneumoniamnist",
        "kvasir",
        *(f"cifar10_class{k}" for k in range(10)),
        *(f"cifar100_class{k}" for k in range(20)),
    }
    assert {r["variant"] for r in fig4} == {"default", "ratio01"}


def test_one_class_families_share_their_diffusion_models() -> None:
    """One model per CIFAR dataset and data ratio, trained on all classes (official code):
    20 models instead of 76, and the per-class models on request."""
    plan = Plan(PAPER)
    models = plan.diffusion_models()
    assert len(models) == 76 - 60 + 4
    assert {str(t) for d, t in models if d == "cifar100"} == {"res32_ratio1.0", "res32_ratio0.1"}
    assert plan.diffusion_owner("cifar100_class7") == "cifar100"
    assert plan.diffusion_owner("kvasir") == "kvasir"
    assert plan.diffusion_training_data("cifar10") == ("cifar10_class0", True)
    assert plan.diffusion_training_data("kvasir") == ("kvasir", False)
    assert plan.diffusion_layers("cifar10")[1]["family"] == "cifar10"
    per_class = {**PAPER, "diffusion": {**PAPER["diffusion"], "family_model": "per_class"}}
    assert len(Plan(per_class).diffusion_models()) == 76
    assert Plan(per_class).diffusion_owner("cifar100_class7") == "cifar100_class7"


@pytest.mark.parametrize(
    ("dataset", "method", "variant", "expected"),
    [
        ("sarscov2", "dia", "default", ("cache", "res32_ratio1.0")),
        ("oct2017", "dia", "default", ("online", "res32_ratio1.0")),
        ("kvasir", "dia", "dslv128", ("online", "res128_ratio1.0")),
        ("kvasir", "dia", "ratio01", ("cache", "res32_ratio0.1")),
        ("cifar100_class7", "dia", "ratio01", ("online", "res32_ratio0.1")),
        ("kvasir", "dia", "median_perm", (None, "res32_ratio1.0")),
        ("kvasir", "csi", "default", (None, "res32_ratio1.0")),
        ("kvasir", "rd4ad", "default", (None, "res32_ratio1.0")),
    ],
)
def test_what_each_run_dissolves_with(dataset, method, variant, expected) -> None:
    plan = Plan(PAPER)
    key = (dataset, method, variant)
    assert (plan.dissolve_input(*key), str(plan.diffusion_tag(*key))) == expected


def test_layers_put_the_variant_last_and_table4_rows_follow_table3() -> None:
    plan = Plan(PAPER)
    layers = plan.layers("kvasir", "dia", "gaussian_perm")
    assert layers[-1] == {"dissolve": {"kind": "gaussian"}, "contrastive": {"shift": "perm"}}
    assert plan.setting("dissolve", "t_min", None, "kvasir") == 100  # the dataset's own range
    rows = {(r["method"], r["variant"]): r["row"] for r in plan.table4_runs()}
    assert rows == {
        ("csi", "default"): "none",
        ("dia", "default"): "32",
        ("dia", "dslv64"): "64",
        ("dia", "dslv128"): "128",
    }
    assert {r["dataset"] for r in plan.table4_runs()} == {
        "sarscov2",
        "kvasir",
        "oct2017",
        "aptos2019",
    }


def test_variant_changing_a_shared_cache_key_is_refused() -> None:
    config = {**PAPER, "variants": {"x": {"methods": ["dia"], "datasets": ["kvasir"]}}}
    config["variants"]["x"]["dissolve"] = {"cache_t_stride": 5}
    with pytest.raises(DiaError, match=r"variants\.x\.dissolve\.cache_t_stride"):
        Plan(config)


PARITY = yaml.safe_load((ROOT / "config" / "parity_demo.yaml").read_text())


def test_parity_pairs_and_official_repository() -> None:
    plan = Plan(PARITY)
    assert plan.parity_pairs == {
        "dia_official": "dia",
        "csi_official": "csi",
        "rd4ad_official": "rd4ad",
        "kdad_official": "kdad",
        "meanshift_official": "meanshift",
        "uniad_official": "uniad",
    }
    assert plan.official_repo("phantom", "dia_official") == "shijianjian__DIA"
    assert plan.official_repo("phantom", "csi_official") == "shijianjian__DIA"
    assert plan.official_repo("phantom", "rd4ad_official") == "hq-deng__RD4AD"
    assert plan.official_repo("phantom", "dia") is None
    assert plan.official_repo("phantom", "rd4ad") is None
    assert Plan(PAPER).parity_pairs == {}


def test_official_method_needs_the_pin_and_pairs_only_with_a_twin() -> None:
    config = {**PARITY, "methods": {"dia_official": PARITY["methods"]["dia_official"]}}
    assert Plan(config).parity_pairs == {}
    unpinned = {k: v for k, v in PARITY.items() if k != "official_repos"}
    with pytest.raises(DiaError, match=r"pin official_repos\.shijianjian__DIA"):
        Plan(unpinned)


def test_train_runtime_is_the_methods_own_or_a_day() -> None:
    config = {
        **PAPER,
        "methods": {**PAPER["methods"], "uniad": {"model": "uniad", "runtime": 2880}},
    }
    plan = Plan(config)
    assert plan.train_runtime("uniad") == 2880 and plan.train_runtime("dia") == 1440
    parity = yaml.safe_load((ROOT / "config" / "parity_demo.yaml").read_text())
    parity["methods"]["csi_official"]["runtime"] = 60  # a runtime does not break a twin pair
    assert Plan(parity).parity_pairs["csi_official"] == "csi"
