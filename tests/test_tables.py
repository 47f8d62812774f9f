"""Aggregation from hand-made metrics and score files: missing seeds and runs, bootstrap."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dia.errors import DiaError
from dia.evaluation.bootstrap import paired_bootstrap
from dia.evaluation.selection import RULES
from dia.tables import (
    bootstrap_table,
    bootstrap_text_table,
    collapse_families,
    collect_metrics,
    cost_text_table,
    table1,
    to_latex,
    to_markdown,
    variant_table,
    wide_tables,
)


def _scores(path: Path, labels: np.ndarray, scores: np.ndarray) -> dict[str, object]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "split", "label", "score"])
        writer.writerow(["v0", "val", 0, 0.5])  # val rows are ignored
        for i, (label, score) in enumerate(zip(labels, scores, strict=True)):
            writer.writerow([f"img ({i}).png", "test", int(label), f"{score:.8g}"])
    return {"path": path}


def _runs(tmp_path: Path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(30, int), np.ones(20, int)]
    values = {}
    runs = []
    # DIA with seeds 0-2, CSI with seed 1 missing, a perm variant that must be ignored
    for method, seeds, strength in (("dia", (0, 1, 2), 2.0), ("csi", (0, 2), 0.5)):
        for seed in seeds:
            scores = labels * strength + rng.normal(size=len(labels))
            values.setdefault(method, []).append(np.array([float(f"{s:.8g}") for s in scores]))
            path = tmp_path / method / f"seed{seed}" / "scores.csv"
            runs.append(
                {
                    "method": method,
                    "dataset": "d",
                    "variant": "default",
                    "seed": seed,
                    **_scores(path, labels, scores),
                }
            )
    variant = tmp_path / "dia_perm" / "scores.csv"
    runs.append(
        {
            "method": "dia",
            "dataset": "d",
            "variant": "perm",
            "seed": 0,
            **_scores(variant, labels, rng.normal(size=len(labels))),
        }
    )
    return runs, labels, values


def test_bootstrap_table_uses_every_seed_and_skips_variants(tmp_path):
    runs, labels, values = _runs(tmp_path)
    table = bootstrap_table(runs, n_boot=300)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["method"], row["n_seeds_reference"], row["n_seeds_method"]) == ("csi", 3, 2)
    direct = paired_bootstrap(labels, values["dia"], values["csi"], n_boot=300)
    assert row["auroc_diff"] == pytest.approx(direct.diff)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((direct.low, direct.high))
    assert 0 < row["ci95_low"] < row["auroc_diff"] < row["ci95_high"]
    text = bootstrap_text_table(table, ["csi", "rd4ad"], ["d", "kvasir"])
    expected = f"{row['auroc_diff']:+.3f} [{row['ci95_low']:+.3f}, {row['ci95_high']:+.3f}]"
    assert text.loc["csi", "d"] == expected
    assert text.loc["rd4ad", "d"] == text.loc["csi", "kvasir"] == "missing"


def test_missing_method_gives_no_row_and_mismatched_images_are_an_error(tmp_path):
    runs, labels, _ = _runs(tmp_path)
    assert bootstrap_table([r for r in runs if r["method"] != "dia"], n_boot=10).empty
    other = _scores(tmp_path / "x" / "scores.csv", labels[:-1], np.zeros(len(labels) - 1))
    odd = {"method": "csi", "dataset": "d", "variant": "default", "seed": 5, **other}
    with pytest.raises(DiaError, match="other test images"):
        bootstrap_table([*runs, odd], n_boot=10)


def _metrics(path: Path, auroc: float, rules: tuple[str, ...] = RULES[:3]) -> dict[str, object]:
    path.parent.mkdir(parents=True, exist_ok=True)
    rule = {"epoch": 10, "auroc": auroc, "auprc": auroc, "val_auroc": auroc}
    path.write_text(json.dumps({r: rule for r in rules}))
    return {"path": path}


def test_table1_with_a_missing_seed_and_a_missing_run(tmp_path):
    runs = [
        {
            "method": "dia",
            "dataset": "sarscov2",
            "variant": "default",
            "seed": s,
            **_metrics(tmp_path / f"dia{s}.json", v),
        }
        for s, v in ((0, 0.80), (1, 0.90), (2, 0.85))
    ]
    runs.append(
        {
            "method": "csi",
            "dataset": "sarscov2",
            "variant": "default",
            "seed": 0,
            **_metrics(tmp_path / "csi0.json", 0.70),
        }
    )
    long = collect_metrics(runs)
    assert len(long) == 4 * 3 * 2  # runs x selection rules x metrics
    table = table1(long)
    dia = table[(table["method"] == "dia") & (table["selection"] == "last")].iloc[0]
    assert dia["n_seeds"] == 3 and dia["auroc_mean"] == pytest.approx(0.85)
    assert dia["auroc_std"] == pytest.approx(0.05)
    assert dia["diff_vs_paper"] == pytest.approx(0.85 - 0.851)
    assert table1(long, ["kvasir"]).empty and len(table1(long, ["sarscov2"])) == len(table)
    wide = wide_tables(table, ["csi", "dia", "rd4ad"], ["sarscov2", "kvasir"])
    last = wide["last"]
    assert last.loc["dia", "sarscov2"] == "0.850 ± 0.050 (n=3); paper 0.851, -0.001"
    assert last.loc["csi", "sarscov2"] == "0.700 (n=1); paper 0.785, -0.085"
    assert last.loc["rd4ad", "sarscov2"] == "missing"
    assert last.loc["dia", "kvasir"] == "missing"
    markdown = to_markdown(wide, "T")
    assert markdown.count("## Selection rule:") == 3
    assert "| rd4ad | missing | missing |" in markdown
    latex = to_latex(wide, "T.")
    assert latex.count(r"\begin{tabular}{lcc}") == 3
    assert r"0.850 $\pm$ 0.050" in latex and "test\\_oracle" in latex


def test_variant_table_compares_settings_with_the_paper(tmp_path):
    runs = []
    for variant, values in (("default", (0.80, 0.90)), ("perm", (0.70,))):
        for seed, value in enumerate(values):
            path = tmp_path / f"{variant}{seed}.json"
            runs.append(
                {
                    "method": "dia",
                    "dataset": "kvasir",
                    "variant": variant,
                    "seed": seed,
                    **_metrics(path, value),
                }
            )
    runs.append(
        {
            "method": "csi",
            "dataset": "kvasir",
            "variant": "default",
            "seed": 0,
            **_metrics(tmp_path / "csi.json", 0.1),
        }
    )
    table = variant_table(
        collect_metrics(runs),
        "dia",
        {"rotation": "default", "perm": "perm"},
        {"rotation": {"kvasir": 0.860}, "perm": {"kvasir": 0.840}},
    )
    last = table[table["selection"] == "last"].set_index("setting")
    assert last.loc["rotation", "auroc_mean"] == pytest.approx(0.85)
    assert last.loc["rotation", "n_seeds"] == 2 and last.loc["perm", "n_seeds"] == 1
    assert last.loc["perm", "diff_vs_paper"] == pytest.approx(0.70 - 0.840)
    assert set(table["selection"]) == {"last", "val", "test_oracle"}


def test_one_class_family_is_the_mean_over_classes_per_seed(tmp_path):
    """Fig. 4's CIFAR cell: per seed the mean over classes; a seed missing a class is dropped."""
    values = {(0, 0): 0.9, (0, 1): 0.7, (0, 2): 0.8, (1, 0): 0.6, (1, 1): 0.8, (1, 2): 0.7}
    runs = [
        {
            "method": "dia",
            "dataset": f"cifar10_class{k}",
            "variant": "default",
            "seed": seed,
            **_metrics(tmp_path / f"{seed}_{k}.json", v),
        }
        for (seed, k), v in values.items()
    ]
    runs += [  # seed 2 lacks class 2; another dataset passes through unchanged
        {
            "method": "dia",
            "dataset": f"cifar10_class{k}",
            "variant": "default",
            "seed": 2,
            **_metrics(tmp_path / f"2_{k}.json", 0.1),
        }
        for k in (0, 1)
    ]
    runs.append(
        {
            "method": "dia",
            "dataset": "kvasir",
            "variant": "default",
            "seed": 0,
            **_metrics(tmp_path / "k.json", 0.5),
        }
    )
    families = {"cifar10": [f"cifar10_class{k}" for k in range(3)]}
    long = collapse_families(collect_metrics(runs), families)
    last = long[(long["selection"] == "last") & (long["metric"] == "auroc")]
    cifar = last[last["dataset"] == "cifar10"].set_index("seed")["value"]
    assert sorted(cifar.index) == [0, 1]
    assert cifar[0] == pytest.approx(0.8) and cifar[1] == pytest.approx(0.7)
    assert last[last["dataset"] == "kvasir"]["value"].tolist() == [0.5]
    table = variant_table(long, "dia", {"1.0": "default"}, {"1.0": {"cifar10": 0.935}})
    row = table[(table["selection"] == "last") & (table["dataset"] == "cifar10")].iloc[0]
    assert row["n_seeds"] == 2 and row["auroc_mean"] == pytest.approx(0.75)
    assert row["diff_vs_paper"] == pytest.approx(0.75 - 0.935)


def test_cost_table_text_shows_missing_throughput():
    table = pd.DataFrame(
        {
            "dissolve_resolution": ["none", "40"],
            "params_m": [11.51, 47.2],
            "macs_g": [1.814, 3.0],
            "paper_params_m": [11.2, None],
            "paper_macs_g": [1.82, None],
            "train_images_per_s": [120.0, None],
            "score_images_per_s": [300.0, None],
            "dissolve_images_per_s": [None, None],
            "devices": ["x86_64", None],
        }
    )
    text = cost_text_table(table)
    assert text.loc["none", "params (M)"] == "11.51 (paper 11.20)"
    assert text.loc["40", "MACs (G)"] == "3.00"
    assert text.loc["none", "train img/s"] == "120.0"
    assert text.loc["40", "train img/s"] == "missing" and text.loc["40", "device"] == "missing"
    markdown = to_markdown({"": text}, "Table 4")
    assert "Selection rule" not in markdown and "| dissolving | params (M) |" in markdown
    assert "Selection rule" not in to_latex({"": text}, "Table 4.")


def test_parity_table_pairs_native_and_official_runs_by_seed() -> None:
    from dia.tables import parity_table, parity_text_table

    rows = []
    for method, values in {"dia": [0.8, 0.7], "dia_official": [0.75, 0.72]}.items():
        for seed, value in enumerate(values):
            for selection in ("last", "val", "test_oracle"):
                rows.append(("auroc", method, "phantom", "default", seed, selection, value))
    long = pd.DataFrame(
        rows, columns=["metric", "method", "dataset", "variant", "seed", "selection", "value"]
    )
    table = parity_table(long, {"dia_official": "dia"})
    last = table[table["selection"] == "last"]
    assert list(last["seed"]) == [0, 1]
    assert list(last["difference"].round(6)) == [0.05, -0.02]
    text = parity_text_table(table)["last"]
    assert text.loc["dia / phantom"].tolist() == [
        "0.750 ± 0.071",
        "0.735 ± 0.021",
        "+0.015 ± 0.049",
        "2",
    ]
    assert parity_table(long, {}).empty


def test_parity_refuses_runs_dissolved_by_different_diffusion_models(tmp_path: Path) -> None:
    """Pairs whose train_meta.json record different diffusion models are refused, naming both
    files; equal digests, an unrecorded digest (older runs, CSI) or an unpaired run pass."""
    from dia.tables import check_same_diffusion

    def runs(digests: dict[tuple[str, int], str | None]) -> list[dict[str, object]]:
        out = []
        for (method, seed), digest in digests.items():
            path = tmp_path / f"{method}{seed}.json"
            inputs = {} if digest is None else {"diffusion_sha256": digest}
            path.write_text(json.dumps({"inputs": inputs}))
            keys = {"method": method, "dataset": "phantom", "variant": "default", "seed": seed}
            out.append(keys | {"train_meta": str(path)})
        return out

    pairs = {"dia_official": "dia"}
    check_same_diffusion(runs({("dia", 0): "a", ("dia_official", 0): "a"}), pairs)
    check_same_diffusion(runs({("dia", 0): None, ("dia_official", 0): "b"}), pairs)
    check_same_diffusion(runs({("dia", 1): "a", ("dia_official", 0): "b"}), pairs)
    with pytest.raises(DiaError, match=r"dia0\.json and .*dia_official0\.json .*different"):
        check_same_diffusion(runs({("dia", 0): "a", ("dia_official", 0): "b"}), pairs)


def test_official_rule_only_where_a_method_has_one(tmp_path):
    """Transformaly's runs carry an `official` rule, DIA's do not: the long file has it only for
    Transformaly, its wide table shows a dash for DIA; without any, there is no such table."""
    runs = [
        {"method": m, "dataset": "kvasir", "variant": "default", "seed": 0}
        | _metrics(tmp_path / f"{m}.json", v, rules)
        for m, v, rules in (("dia", 0.9, RULES[:3]), ("transformaly", 0.7, RULES))
    ]
    long = collect_metrics(runs)
    official = long[long["selection"] == "official"]
    assert set(official["method"]) == {"transformaly"} and len(official) == 2
    wide = wide_tables(table1(long), ["dia", "transformaly"], ["kvasir"])
    assert list(wide) == list(RULES)
    assert wide["official"].loc["dia", "kvasir"] == "—"
    assert wide["official"].loc["transformaly", "kvasir"].startswith("0.700 (n=1)")
    assert "official" not in wide_tables(table1(collect_metrics(runs[:1])), ["dia"], ["kvasir"])
    elsewhere = wide_tables(table1(long), ["dia", "transformaly"], ["kvasir", "sarscov2"])
    assert elsewhere["official"].loc["transformaly", "sarscov2"] == "missing"  # not run there
    assert elsewhere["official"].loc["dia", "sarscov2"] == "—"
