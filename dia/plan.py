"""What a configuration asks for: datasets, runs, diffusion models and ablation tables.

The workflow's input functions and :mod:`dia.evaluation.runtime` both read the experiment off
the config through :class:`Plan`, so the job list has one definition, testable without
Snakemake. Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

from dia.config import Impl
from dia.data.layouts import LISTERS
from dia.data.one_class import expand_one_class
from dia.data.registry import SOURCES, needs_kaggle
from dia.errors import DiaError
from dia.sections import config_sections, resolve

RESOLUTION_VARIANT = re.compile(r"dslv(\d+)")
# What a variant may change besides the training and scoring sections: the two keys a diffusion
# model and its dissolve cache are keyed on (by path), the blur stand-ins, which need neither,
# and the order of flipping and dissolving, which changes neither.
VARIANT_KEYS = {
    "diffusion": {"data_ratio"},
    "dissolve": {"resolution", "kind", "blur_kernel", "blur_branches", "flip"},
}
# The dissolving ablation of the official README: setting label -> variant.
DISSOLVE_ABLATION = {
    "diffusion, rotation": "default",
    "diffusion, perm": "perm",
    "gaussian, rotation": "gaussian",
    "gaussian, perm": "gaussian_perm",
    "median, rotation": "median",
    "median, perm": "median_perm",
    "none, rotation": "blurnone",
    "none, perm": "blurnone_perm",
}

Record = dict[str, Any]
# Minutes per attempt of a train job, unless its method sets ``runtime``.
TRAIN_RUNTIME = 1440


@dataclass(frozen=True, order=True)
class DiffusionTag:
    """What a diffusion model and its dissolve cache are keyed on; ``res<N>_ratio<r>`` in paths."""

    resolution: int
    data_ratio: float

    def __str__(self) -> str:
        return f"res{self.resolution}_ratio{self.data_ratio}"


IMPLS = get_args(Impl)
# The repository whose code an ``impl: official`` run of each section runs: CSI and DIA (the
# ``contrastive`` section) the DIA repository's, a baseline its own (dia/official/baselines.py).
OFFICIAL_CODE = {
    "contrastive": "shijianjian__DIA",
    "kdad": "rohban-lab__Knowledge_Distillation_AD",
    "rd4ad": "hq-deng__RD4AD",
    "meanshift": "talreiss__Mean-Shifted-Anomaly-Detection",
    "uniad": "zhiyuanyou__UniAD",
}


class Plan:
    """The experiment a validated config describes.

    A run record is ``{"method", "dataset", "variant", "seed"}``; datasets are the prepared ones
    (one-class families expanded), *main* datasets those of Table 1.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.specs, self.families = expand_one_class(config["datasets"])
        self.datasets = list(self.specs)
        self.main_datasets = [d for d in self.datasets if self.specs[d].get("main", True)]
        self.methods = list(config["methods"])
        self.seeds = [int(s) for s in config["seeds"]]
        self.variants: dict[str, Any] = dict(config.get("variants") or {})
        self._check_variants()
        for r in self.runs():  # an unknown impl, or official code not there, stops here
            self.official_repo(r["dataset"], r["method"], r["variant"])
        self.parity_pairs = self._parity_pairs()
        self.ablations = {
            "table2_shift": {"rotation": "default", "perm": "perm"},
            "table3_resolution": self._resolution_settings(),
            "ablation_dissolve": DISSOLVE_ABLATION,
            "fig4_data_ratio": {"1.0": "default", "0.1": "ratio01"},
        }

    def downloads(self, raw: str) -> list[str]:
        """Configured datasets (a one-class family once) whose download step writes ``raw``:
        ``npz`` or ``files`` (:data:`dia.data.registry.SOURCES`)."""
        datasets = self.config["datasets"]
        return [d for d, spec in datasets.items() if SOURCES[spec["source"]].raw == raw]

    def kaggle_downloads(self) -> list[str]:
        """Configured datasets downloaded from Kaggle: their credentials are checked up front."""
        return [d for d, spec in self.config["datasets"].items() if needs_kaggle(spec)]

    def expand_families(self, names: list[str]) -> list[str]:
        """Dataset names of a config list, each one-class family replaced by its members."""
        return [m for name in names for m in self.families.get(name, [name])]

    def global_layer(self) -> dict[str, Any]:
        """The config's own sections: the first layer of every job, and all of a global job's."""
        return {s: self.config.get(s, {}) for s in config_sections()}

    def layers(
        self, dataset: str, method: str | None = None, variant: str = "default"
    ) -> list[dict[str, Any]]:
        """Config layers in precedence order: global, dataset, method, variant (its sections)."""
        out = [self.global_layer(), self.specs[dataset]]
        if method is not None:
            out.append(self.config["methods"][method])
        if variant != "default":
            spec = self.variants[variant]
            out.append({s: spec[s] for s in config_sections() if s in spec})
        return out

    def setting(
        self,
        section: str,
        key: str,
        default: Any,
        dataset: str,
        method: str | None = None,
        variant: str = "default",
    ) -> Any:
        """A job's ``section.key``: the last config layer that sets it wins (presets never do)."""
        for layer in reversed(self.layers(dataset, method, variant)):
            value = (layer.get(section) or {}).get(key)
            if value is not None:
                return value
        return default

    def train_runtime(self, method: str) -> int:
        """Minutes per attempt of ``method``'s train jobs: its ``runtime``, else 24 hours. A
        longer run spans attempts: each resumes from the checkpoint the last one left."""
        return int(self.config["methods"][method].get("runtime", TRAIN_RUNTIME))

    def baseline(self, method: str) -> str | None:
        """The baseline ``method`` trains (its ``model`` key), or None for CSI and DIA."""
        return _baseline(self.config["methods"][method])

    def diffusion_tag(
        self, dataset: str, method: str | None = None, variant: str = "default"
    ) -> DiffusionTag:
        """The diffusion model (and dissolve cache) a job uses: resolution and data ratio."""
        key = (dataset, method, variant)
        return DiffusionTag(
            int(self.setting("dissolve", "resolution", 32, *key)),
            float(self.setting("diffusion", "data_ratio", 1.0, *key)),
        )

    def diffusion_models(self) -> list[tuple[str, DiffusionTag]]:
        """Every diffusion model the config trains, by owner (:meth:`diffusion_owner`): those DIA
        runs dissolve with, and each main dataset's default one for Fig. 1 when DIA runs."""
        models = {(self.diffusion_owner(r["dataset"]), tag) for r, tag in self._dissolving_runs()}
        if "dia" in self.methods:
            models |= {(self.diffusion_owner(d), self.diffusion_tag(d)) for d in self.main_datasets}
        return sorted(models)

    def diffusion_owner(self, dataset: str) -> str:
        """Whose diffusion models ``dataset`` dissolves with: its own, or for a one-class
        problem its family's when the family shares them (``diffusion.family_model``)."""
        family = self.specs[dataset].get("family")
        if family is None:
            return dataset
        cfg = resolve("diffusion", self.config["preset"], self.layers(dataset))
        return family if cfg.family_model == "shared" else dataset

    def diffusion_training_data(self, owner: str) -> tuple[str, bool]:
        """(prepared dataset, whether all its training images rather than the normal ones) a
        diffusion model of ``owner`` trains on: a family's shared model reads its first
        member's data, every class (the members hold the same images)."""
        if owner in self.families:
            return self.families[owner][0], True
        return owner, False

    def diffusion_layers(self, owner: str) -> list[dict[str, Any]]:
        """Config layers of the diffusion jobs of ``owner``: those of the data they train on."""
        return self.layers(self.diffusion_training_data(owner)[0])

    def dissolve_caches(self) -> list[tuple[str, DiffusionTag]]:
        """Every dissolve cache the config builds: those of DIA runs that read a cache."""
        runs = self._dissolving_runs()
        return sorted({(r["dataset"], tag) for r, tag in runs if r["dissolve"] == "cache"})

    def _dissolving_runs(self) -> list[tuple[Record, DiffusionTag]]:
        out = []
        for r in self.runs():
            key = (r["dataset"], r["method"], r["variant"])
            if source := self.dissolve_input(*key):
                out.append(({**r, "dissolve": source}, self.diffusion_tag(*key)))
        return out

    def dissolve_input(self, dataset: str, method: str, variant: str = "default") -> str | None:
        """``cache``, ``online`` (the diffusion model) or None for what a run dissolves with.

        DIA dissolves with a diffusion model unless ``dissolve.kind`` is a blur; CSI and the
        baselines never do.
        """
        if self.baseline(method):
            return None
        key = (dataset, method, variant)
        if self.setting("contrastive", "method", method, *key) != "dia":
            return None
        if self.setting("dissolve", "kind", "diffusion", *key) != "diffusion":
            return None
        return self.setting("contrastive", "dissolve_source", "cache", *key)

    def needs_views(self, dataset: str, method: str) -> bool:
        """Whether a run of ``method`` reads baseline input views of ``dataset``: a baseline on a
        dataset decoded from image files at an ``image_size`` (:mod:`dia.data.views`)."""
        spec = self.specs[dataset]
        return (
            bool(self.baseline(method))
            and spec.get("source") in LISTERS
            and bool(spec.get("image_size"))
        )

    def baseline_layers(self, dataset: str) -> list[tuple[str, list[Mapping[str, Any]]]]:
        """(baseline, its own section of each config layer) of every baseline run on
        ``dataset``: what its views are prepared for, and nothing else, so that changing another
        setting does not redo the views (and with them every baseline run)."""
        out = {}
        for r in self.runs():
            if r["dataset"] == dataset and self.needs_views(dataset, r["method"]):
                model = self.baseline(r["method"])
                layers = self.layers(dataset, r["method"], r["variant"])
                out[(r["method"], r["variant"])] = (
                    model,
                    [{model: (layer or {}).get(model) or {}} for layer in layers],
                )
        return list(out.values())

    def official_repo(self, dataset: str, method: str, variant: str = "default") -> str | None:
        """The official repository an ``impl: official`` run imports (``<section>.impl``, the
        section being the baseline's or ``contrastive``), else None; stops on an unknown impl, a
        baseline without an official adapter, or a repository not pinned in ``official_repos``."""
        section = _impl_section(self.config["methods"][method])
        impl = self.setting(section, "impl", "native", dataset, method, variant)
        if impl not in IMPLS:
            raise DiaError(
                f"methods.{method}: {section}.impl {impl!r} is not one of {', '.join(IMPLS)}"
            )
        if impl == "native":
            return None
        repo = OFFICIAL_CODE.get(section)
        if repo is None:
            raise DiaError(
                f"methods.{method}: {section} has no impl: official (only "
                f"{', '.join(OFFICIAL_CODE)} do; config/README.md says why)"
            )
        if repo not in (self.config.get("official_repos") or {}):
            raise DiaError(
                f"methods.{method} runs the official code: pin official_repos.{repo} "
                f"(commit and sha256, as in config/config.yaml)"
            )
        return repo

    def _parity_pairs(self) -> dict[str, str]:
        """Each method with ``impl: official`` in its section that has a native twin (the method
        whose config is the same but for that ``impl``), with that twin: the parity table
        compares them."""

        def impl(spec: Mapping[str, Any]) -> str:
            return (spec.get(_impl_section(spec)) or {}).get("impl", "native")

        def without_impl(spec: Mapping[str, Any]) -> dict[str, Any]:
            section = _impl_section(spec)
            settings = {k: v for k, v in (spec.get(section) or {}).items() if k != "impl"}
            merged = {**spec, section: settings}
            return {k: v for k, v in merged.items() if v != {} and k != "runtime"}

        methods = self.config["methods"]
        pairs = {}
        for name, spec in methods.items():
            if impl(spec) != "official":
                continue
            twins = [
                other
                for other, other_spec in methods.items()
                if impl(other_spec) == "native" and without_impl(other_spec) == without_impl(spec)
            ]
            if twins:
                pairs[name] = twins[0]
        return pairs

    def runs(self) -> list[Record]:
        """Every run: each method on each main dataset by default; each variant's methods on its
        datasets (at the variant's seeds, if it has its own), as the variant and by default
        (what the variant is compared with)."""
        keys = {
            (m, d, "default", s): None
            for m in self.methods
            for d in self.main_datasets
            for s in self.seeds
        }
        for v, spec in self.variants.items():
            seeds = [int(s) for s in spec.get("seeds", self.seeds)]
            for m in spec["methods"]:
                for d in self.expand_families(spec["datasets"]):
                    keys.update({(m, d, var, s): None for var in ("default", v) for s in seeds})
        return [{"method": m, "dataset": d, "variant": v, "seed": s} for m, d, v, s in keys]

    def main_runs(self) -> list[Record]:
        """Default-variant runs on the main datasets: Table 1, the bootstrap and the figures."""
        return [
            r
            for r in self.runs()
            if r["variant"] == "default" and r["dataset"] in self.main_datasets
        ]

    def _check_variants(self) -> None:
        """Variants name configured methods and datasets, and change no key that a shared
        diffusion model or dissolve cache depends on, except those in their paths."""
        for v, spec in self.variants.items():
            where = f"invalid config at variants.{v}"
            known = set(self.datasets) | set(self.families)
            unknown = sorted(set(spec["methods"]) - set(self.methods)) + sorted(
                set(spec["datasets"]) - known
            )
            if unknown:
                raise DiaError(f"{where}: unknown {', '.join(unknown)}")
            named = RESOLUTION_VARIANT.fullmatch(v)
            if named and int(named[1]) != (spec.get("dissolve") or {}).get("resolution"):
                raise DiaError(
                    f"{where}: Table 3 reads dslv<N> variants as dissolving at N px; set "
                    f"dissolve.resolution: {named[1]}"
                )
            for section, allowed in VARIANT_KEYS.items():
                extra = sorted(set(spec.get(section) or {}) - allowed)
                if extra:
                    raise DiaError(
                        f"{where}.{section}.{extra[0]}: a variant may set only "
                        f"{', '.join(f'{section}.{k}' for k in sorted(allowed))} here (the "
                        f"diffusion model and dissolve cache are shared by all runs)"
                    )

    def _resolution_settings(self) -> dict[str, str]:
        """Table 3's rows: the default dissolving resolution, then each dslv<N> at N px."""
        default = int((self.config.get("dissolve") or {}).get("resolution", 32))
        named = sorted(
            (int(m[1]), v) for v in self.variants if (m := RESOLUTION_VARIANT.fullmatch(v))
        )
        return {str(default): "default", **{str(res): v for res, v in named}}

    def built_ablations(self) -> list[str]:
        """Ablation tables the config asks for: DIA runs, a variant besides the default, and
        all of the table's variants configured."""
        return [
            name
            for name, settings in self.ablations.items()
            if "dia" in self.methods
            and len(settings) > 1
            and all(v == "default" or v in self.variants for v in settings.values())
        ]

    def ablation_datasets(self, name: str) -> list[str]:
        """An ablation table's columns (families unexpanded): those of its first named variant."""
        named = [v for v in self.ablations[name].values() if v != "default"]
        return list(self.variants[named[0]]["datasets"])

    def ablation_runs(self, name: str) -> list[Record]:
        """DIA runs of an ablation table: its variants, on its datasets."""
        datasets = self.expand_families(self.ablation_datasets(name))
        variants = set(self.ablations[name].values())
        return [
            r
            for r in self.runs()
            if r["method"] == "dia" and r["variant"] in variants and r["dataset"] in datasets
        ]

    def table4_runs(self) -> list[Record]:
        """Runs measuring Table 4's throughput, each with its ``row``: CSI for no dissolving,
        DIA at each of Table 3's resolutions, on Table 3's datasets (else the main ones)."""
        rows = {("csi", "default"): "none"}
        rows.update({("dia", v): res for res, v in self.ablations["table3_resolution"].items()})
        if "table3_resolution" in self.built_ablations():
            datasets = self.expand_families(self.ablation_datasets("table3_resolution"))
        else:
            datasets = self.main_datasets
        return [
            {**r, "row": rows[(r["method"], r["variant"])]}
            for r in self.runs()
            if (r["method"], r["variant"]) in rows and r["dataset"] in datasets
        ]


def _baseline(spec: Mapping[str, Any]) -> str | None:
    return spec.get("model")


def _impl_section(spec: Mapping[str, Any]) -> str:
    """The config section whose ``impl`` a method's runs follow: its baseline's, or
    ``contrastive`` for CSI and DIA."""
    return _baseline(spec) or "contrastive"
