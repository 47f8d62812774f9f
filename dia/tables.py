"""Aggregation of per-run metrics into tidy and paper-shaped tables."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dia.errors import DiaError
from dia.evaluation.bootstrap import paired_bootstrap
from dia.evaluation.selection import RULES
from dia.io import atomic_path, read_json
from dia.paper import paper_auroc

RUN_KEYS = ("method", "dataset", "variant", "seed")


def collect_metrics(runs: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (method, dataset, variant, seed, selection, metric) from metrics.json files.

    ``runs``: mappings with the run keys and ``path``, the run's metrics.json.
    """
    rows = []
    for run in runs:
        metrics = read_json(run["path"])
        for selection in (rule for rule in RULES if rule in metrics):
            for metric in ("auroc", "auprc"):
                rows.append(
                    {
                        **{k: run[k] for k in RUN_KEYS},
                        "selection": selection,
                        "metric": metric,
                        "value": metrics[selection][metric],
                    }
                )
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "selection", "metric", "value"])


def collapse_families(long: pd.DataFrame, families: dict[str, list[str]]) -> pd.DataFrame:
    """Replace the runs of a one-class family's members by their mean per seed.

    Each (method, family, variant, seed, selection, metric) becomes one row whose value is the
    mean over the family's classes, the one-class protocol's number. A seed missing any class
    is dropped, so it shows as a missing seed rather than a mean over fewer classes.
    """
    member_of = {m: family for family, members in families.items() for m in members}
    is_member = long["dataset"].isin(list(member_of))
    members = long[is_member].assign(dataset=long.loc[is_member, "dataset"].map(member_of))
    keys = [*RUN_KEYS, "selection", "metric"]
    grouped = members.groupby(keys, sort=False)["value"].agg(["mean", "count"]).reset_index()
    sizes = grouped["dataset"].map({f: len(m) for f, m in families.items()})
    complete = grouped[grouped["count"] == sizes].rename(columns={"mean": "value"})
    return pd.concat([long[~is_member], complete[[*keys, "value"]]], ignore_index=True)


def table1(long: pd.DataFrame, datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """AUROC mean and sample std over seeds per method, dataset and selection rule.

    ``datasets`` restricts it to Table 1's datasets (the long file also holds e.g. CIFAR).
    """
    auroc = long[(long["metric"] == "auroc") & (long["variant"] == "default")]
    if datasets is not None:
        auroc = auroc[auroc["dataset"].isin(list(datasets))]
    grouped = auroc.groupby(["method", "dataset", "selection"], sort=False)["value"]
    table = grouped.agg(n_seeds="count", auroc_mean="mean", auroc_std="std").reset_index()
    table["paper_auroc"] = [
        paper_auroc(m, d) for m, d in zip(table["method"], table["dataset"], strict=True)
    ]
    table["diff_vs_paper"] = table["auroc_mean"] - table["paper_auroc"].astype(float)
    order = {rule: i for i, rule in enumerate(RULES)}
    table = table.sort_values(
        ["dataset", "method", "selection"],
        key=lambda c: c.map(order) if c.name == "selection" else c,
    )
    return table.reset_index(drop=True)


def variant_table(
    long: pd.DataFrame,
    method: str,
    variants: dict[str, str],
    paper: dict[str, dict[str, float]],
) -> pd.DataFrame:
    """One ablation table (Tables 2, 3, ...): ``method``'s AUROC per dataset for each variant.

    ``variants`` maps the table's labels (e.g. ``perm``, ``64``) to variant names; ``paper``
    holds the paper's value per label and dataset. Combinations without runs are absent.
    """
    auroc = long[(long["metric"] == "auroc") & (long["method"] == method)]
    frames = []
    for label, variant in variants.items():
        rows = auroc[auroc["variant"] == variant]
        grouped = rows.groupby(["dataset", "selection"], sort=False)["value"]
        part = grouped.agg(n_seeds="count", auroc_mean="mean", auroc_std="std").reset_index()
        part.insert(0, "setting", label)
        part.insert(1, "variant", variant)
        part["paper_auroc"] = [paper.get(label, {}).get(d) for d in part["dataset"]]
        frames.append(part)
    columns = [
        "setting",
        "variant",
        "dataset",
        "selection",
        "n_seeds",
        "auroc_mean",
        "auroc_std",
        "paper_auroc",
    ]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    table["diff_vs_paper"] = table["auroc_mean"] - table["paper_auroc"].astype(float)
    return table


def _cell(row: pd.Series | None) -> str:
    """``mean ± std (n)``, then the paper's value and our difference; missing runs say so."""
    if row is None:
        return "missing"
    std = "" if pd.isna(row["auroc_std"]) else f" ± {row['auroc_std']:.3f}"
    text = f"{row['auroc_mean']:.3f}{std} (n={int(row['n_seeds'])})"
    if not pd.isna(row["paper_auroc"]):
        text += f"; paper {row['paper_auroc']:.3f}, {row['diff_vs_paper']:+.3f}"
    return text


def wide_tables(
    table: pd.DataFrame, rows: list[str], datasets: list[str], key: str = "method"
) -> dict[str, pd.DataFrame]:
    """Paper-shaped tables (``rows`` x datasets of text cells), one per selection rule.

    ``key`` is the column the rows come from: ``method`` (Table 1) or ``setting`` (Tables 2
    and 3). Every requested row and dataset appears; a combination without runs reads "missing"
    (in the ``official`` table, a row with that rule on no dataset reads "—").
    """
    index = {(r[key], r["dataset"], r["selection"]): r for r in table.to_dict("records")}
    out = {}
    for rule in RULES:
        # Only Transformaly and UniAD have an `official` rule: its table exists when a row has
        # one, and a row without it anywhere reads as a dash (not applicable), not "missing".
        having = {k[0] for k in index if k[2] == rule}
        if rule == "official" and not having:
            continue
        cells = {
            dataset: [
                _cell(pd.Series(index[(row, dataset, rule)]))
                if (row, dataset, rule) in index
                else "—"
                if rule == "official" and row not in having
                else "missing"
                for row in rows
            ]
            for dataset in datasets
        }
        out[rule] = pd.DataFrame(cells, index=pd.Index(rows, name=key))
    return out


def cost_text_table(table: pd.DataFrame) -> pd.DataFrame:
    """Table 4 as text cells: ours beside the paper's, measured throughput or "missing"."""

    def number(value: Any, digits: int) -> str:
        return "missing" if value is None or pd.isna(value) else f"{value:.{digits}f}"

    def beside(ours: float, paper: Any) -> str:
        return f"{ours:.2f}" + ("" if paper is None or pd.isna(paper) else f" (paper {paper:.2f})")

    cells = {
        "params (M)": [beside(r.params_m, r.paper_params_m) for r in table.itertuples()],
        "MACs (G)": [beside(r.macs_g, r.paper_macs_g) for r in table.itertuples()],
    }
    for column, label in (
        ("train_images_per_s", "train img/s"),
        ("score_images_per_s", "score img/s"),
        ("dissolve_images_per_s", "dissolve img/s"),
    ):
        cells[label] = [number(v, 1) for v in table.get(column, [None] * len(table))]
    cells["device"] = [d if isinstance(d, str) else "missing" for d in table["devices"]]
    index = pd.Index(table["dissolve_resolution"].astype(str), name="dissolving")
    return pd.DataFrame(cells, index=index)


def bootstrap_text_table(
    table: pd.DataFrame, methods: list[str], datasets: list[str]
) -> pd.DataFrame:
    """The bootstrap intervals as text cells, one row per compared method and a column per
    dataset: ``+diff [low, high]``; a comparison without runs reads "missing"."""
    index = {(r["method"], r["dataset"]): r for r in table.to_dict("records")}
    cells = {
        dataset: [
            f"{r['auroc_diff']:+.3f} [{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]"
            if (r := index.get((method, dataset)))
            else "missing"
            for method in methods
        ]
        for dataset in datasets
    }
    return pd.DataFrame(cells, index=pd.Index(methods, name="DIA minus"))


def parity_table(long: pd.DataFrame, pairs: dict[str, str]) -> pd.DataFrame:
    """Native against official test AUROC per (official method, dataset, selection, seed), with
    the paired difference. ``pairs``: official method -> its native twin."""
    auroc = long[(long["metric"] == "auroc") & (long["variant"] == "default")]
    keys = ["dataset", "selection", "seed"]
    rows = []
    for official, native in pairs.items():
        ours = auroc[auroc["method"] == native].set_index(keys)["value"]
        theirs = auroc[auroc["method"] == official].set_index(keys)["value"]
        both = pd.concat({"native_auroc": ours, "official_auroc": theirs}, axis=1).dropna()
        both["difference"] = both["native_auroc"] - both["official_auroc"]
        rows.append(both.reset_index().assign(method=native, official=official))
    columns = ["method", "official", *keys, "native_auroc", "official_auroc", "difference"]
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    order = {rule: i for i, rule in enumerate(RULES)}
    table = table[columns].sort_values(
        ["method", "dataset", "selection", "seed"],
        key=lambda c: c.map(order) if c.name == "selection" else c,
    )
    return table.reset_index(drop=True)


def check_same_diffusion(runs: Iterable[dict[str, Any]], pairs: dict[str, str]) -> None:
    """Refuse to pair a native and an official run (same dataset, variant and seed) that dissolved
    with different diffusion models: their difference would compare two dissolving networks as
    well as two implementations. ``runs``: mappings with the run keys and ``train_meta``, the
    run's train_meta.json; a run that records no digest (no diffusion model, or trained before
    the digest was recorded) is not checked."""
    recorded = {}
    for run in runs:
        digest = read_json(run["train_meta"]).get("inputs", {}).get("diffusion_sha256", "")
        recorded[tuple(run[k] for k in RUN_KEYS)] = (digest, run["train_meta"])
    for (method, *rest), (digest, path) in recorded.items():
        if method not in pairs or not digest:
            continue
        twin, twin_path = recorded.get((pairs[method], *rest), ("", ""))
        if twin and twin != digest:
            raise DiaError(
                f"{twin_path} and {path} record different diffusion models (sha256 "
                f"{twin[:12]} and {digest[:12]}); delete one of the two run folders and re-run "
                f"it, so that both dissolve with the same model"
            )


def parity_text_table(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per selection rule: native and official mean ± std over seeds (n) and the mean paired
    difference ± its std, a row per method and dataset."""
    out = {}
    for rule in RULES:
        part = table[table["selection"] == rule]
        if part.empty:
            continue
        rows = {}
        for (method, dataset), g in part.groupby(["method", "dataset"], sort=True):
            rows[f"{method} / {dataset}"] = [
                *(
                    f"{g[c].mean():.3f} ± {g[c].std():.3f}"
                    for c in ("native_auroc", "official_auroc")
                ),
                f"{g['difference'].mean():+.3f} ± {g['difference'].std():.3f}",
                str(len(g)),
            ]
        frame = pd.DataFrame.from_dict(
            rows, orient="index", columns=["native", "official", "native - official", "n"]
        )
        frame.index.name = "method / dataset"
        out[rule] = frame
    return out


def to_markdown(tables: dict[str, pd.DataFrame], title: str) -> str:
    """One Markdown table per selection rule (a rule named "" gets no heading)."""
    lines = [f"# {title}", ""]
    for rule, frame in tables.items():
        if rule:
            lines += [f"## Selection rule: {rule}", ""]
        lines.append(f"| {frame.index.name} | " + " | ".join(frame.columns) + " |")
        lines.append("|---" * (len(frame.columns) + 1) + "|")
        lines += [f"| {m} | " + " | ".join(row) + " |" for m, row in frame.iterrows()]
        lines.append("")
    return "\n".join(lines)


def _tex(text: str) -> str:
    return text.replace("±", r"$\pm$").replace("_", r"\_").replace("%", r"\%")


def to_latex(tables: dict[str, pd.DataFrame], caption: str) -> str:
    """One booktabs table per selection rule (a rule named "" adds nothing to the caption)."""
    parts = []
    for rule, frame in tables.items():
        suffix = f" Selection rule: {_tex(rule)}." if rule else ""
        spec = "l" + "c" * len(frame.columns)
        rows = [" & ".join([frame.index.name, *map(_tex, frame.columns)]) + r" \\"]
        body = [" & ".join([_tex(m), *map(_tex, row)]) + r" \\" for m, row in frame.iterrows()]
        parts += [
            r"\begin{table}[t]",
            r"\centering\scriptsize",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            *rows,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{{_tex(caption)}{suffix}}}",
            r"\end{table}",
            "",
        ]
    return "\n".join(parts)


def write_csv(frame: pd.DataFrame, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")


def read_test_scores(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, scores) of the test split of a run's scores.csv."""
    frame = pd.read_csv(path)
    test = frame[frame["split"] == "test"]
    return test["id"].to_numpy(), test["label"].to_numpy(), test["score"].to_numpy()


def bootstrap_table(
    runs: Iterable[dict[str, Any]], *, reference: str = "dia", n_boot: int = 2000
) -> pd.DataFrame:
    """Paired bootstrap 95% interval of AUROC(reference) - AUROC(method) per dataset.

    ``runs``: mappings with the run keys and ``path``, the run's scores.csv (final model, i.e.
    the ``last`` selection rule). Only ``default`` variants are compared.
    """
    scores: dict[tuple[str, str], list[np.ndarray]] = {}
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for run in runs:
        if run["variant"] != "default":
            continue
        ids, labels, values = read_test_scores(run["path"])
        known = truth.setdefault(run["dataset"], (ids, labels))
        if not np.array_equal(known[0], ids):
            raise DiaError(f"{run['path']} scores other test images than the other runs")
        scores.setdefault((run["method"], run["dataset"]), []).append(values)
    rows = []
    for (method, dataset), runs_b in sorted(scores.items()):
        runs_a = scores.get((reference, dataset))
        if method == reference or runs_a is None:
            continue
        result = paired_bootstrap(truth[dataset][1], runs_a, runs_b, n_boot=n_boot)
        rows.append(
            {
                "dataset": dataset,
                "reference": reference,
                "method": method,
                "n_seeds_reference": len(runs_a),
                "n_seeds_method": len(runs_b),
                "auroc_diff": result.diff,
                "ci95_low": result.low,
                "ci95_high": result.high,
                "n_boot": result.n_boot,
            }
        )
    columns = [
        "dataset",
        "reference",
        "method",
        "n_seeds_reference",
        "n_seeds_method",
        "auroc_diff",
        "ci95_low",
        "ci95_high",
        "n_boot",
    ]
    return pd.DataFrame(rows, columns=columns)
