"""Estimated time of every stage of a configuration on one device, from measured throughput.

Each stage's unit of work (a diffusion training image, a dissolved image, a contrastive step, a
scored image, a baseline training image) is timed on the device at the configuration's sizes
with random weights and inputs (only the cost matters); :class:`~dia.plan.Plan` says how many
units each job has. The result is an estimate: it leaves out data loading, checkpoints, start-up
and the CPU stages (download, prepare, tables), and a probe batch smaller than the configured
one (``probe_batch``) underestimates a GPU's throughput.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dia.baselines import build_baseline
from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig, ScoreConfig
from dia.contrastive.blur import BlurDissolve
from dia.contrastive.train import Trainer, batches_per_epoch, build_model, schedule
from dia.contrastive.views import CachedDissolve, DissolveFn, OnlineDissolve
from dia.data.prepare import ImageBatches
from dia.diffusion.cache import DissolveCache, t_grid
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import build_diffusion
from dia.evaluation.score import extract_features
from dia.plan import Plan
from dia.sections import resolve

# (normal training images, images a score pass reads: those + val + test) of the paper's
# datasets as this pipeline prepares them: official splits, or the configured fractions of the
# published class counts. Prepared manifests replace these when they exist.
DATASET_SIZES: dict[str, tuple[int, int]] = {
    "pneumoniamnist": (1214, 1214 + 524 + 624),
    "breastmnist": (399, 399 + 78 + 156),
    "sarscov2": (860, 860 + 248 + 496),
    "kvasir": (2100, 2100 + 400 + 800),
    "oct2017": (25789, 25789 + 1670 + 968),
    "aptos2019": (1263, 1263 + 366 + 733),
    "cifar10": (4500, 4500 + 5000 + 10000),
    "cifar100": (2250, 2250 + 5000 + 10000),
}


def dataset_sizes(plan: Plan, data_root: Path) -> dict[str, tuple[int, int]]:
    """Sizes per dataset: its prepared manifest if present, else :data:`DATASET_SIZES`."""
    sizes = {}
    for name, spec in plan.specs.items():
        manifest = data_root / name / "manifest.csv"
        if manifest.exists():
            frame = pd.read_csv(manifest, usecols=["label", "split"])
            normals = int(((frame["split"] == "train") & (frame["label"] == 0)).sum())
            sizes[name] = (normals, normals + int((frame["split"] != "train").sum()))
        elif spec.get("family", name) in DATASET_SIZES:
            sizes[name] = DATASET_SIZES[spec.get("family", name)]
    return sizes


@dataclass
class Stage:
    """Work of one stage: jobs and units, and what one unit costs (timed once per key)."""

    jobs: int = 0
    units: float = 0.0
    seconds: float = 0.0

    def add(self, jobs: int, units: float, seconds_per_unit: float) -> None:
        self.jobs += jobs
        self.units += units
        self.seconds += units * seconds_per_unit


class Probe:
    """Times units of work on ``device``, each distinct configuration once."""

    def __init__(self, device: str, probe_batch: int | None = None, reps: int = 2) -> None:
        self.device, self.probe_batch, self.reps = device, probe_batch, reps
        self._memo: dict[Hashable, Any] = {}

    def batch(self, configured: int) -> int:
        return min(configured, self.probe_batch) if self.probe_batch else configured

    def _timed(self, key: Hashable, setup: Callable[[], Callable[[], Any]]) -> float:
        """Median seconds of the callable ``setup`` returns, after one warm-up call."""
        if key not in self._memo:
            run = setup()
            run()
            times = []
            for _ in range(self.reps):
                self._sync()
                start = time.perf_counter()
                run()
                self._sync()
                times.append(time.perf_counter() - start)
            self._memo[key] = statistics.median(times)
        return self._memo[key]

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def _images(self, n: int, size: int) -> torch.Tensor:
        return torch.rand(n, 3, size, size, device=self.device)

    def diffusion_image(self, cfg: DiffusionConfig) -> float:
        """Seconds per image of diffusion training (forward, backward, Adam)."""
        b = self.batch(cfg.batch_size)

        def setup() -> Callable[[], None]:
            model = build_diffusion(cfg).to(self.device)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            x = self._images(b, cfg.resolution)

            def step() -> None:
                model(x).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            return step

        return self._timed(("diffusion", cfg, b), setup) / b

    def dissolve_image(self, cfg: DiffusionConfig, dissolve_cfg: DissolveConfig) -> float:
        """Seconds per image dissolved at the model's resolution (one Unet forward)."""
        b = self.batch(dissolve_cfg.batch_size)

        def setup() -> Callable[[], torch.Tensor]:
            dissolver = self._dissolver(cfg, dissolve_cfg)
            x, t = self._images(b, dissolve_cfg.resolution), torch.full((b,), dissolve_cfg.t_min)
            return lambda: dissolver.dissolve_small(x, t)

        return self._timed(("dissolve", cfg, dissolve_cfg, b), setup) / b

    def _dissolver(self, cfg: DiffusionConfig, dissolve_cfg: DissolveConfig) -> Dissolver:
        model = build_diffusion(cfg.replace(resolution=dissolve_cfg.resolution)).to(self.device)
        return Dissolver(model.eval(), dissolve_cfg, image_size=dissolve_cfg.resolution)

    def contrastive_step(
        self,
        cfg: ContrastiveConfig,
        mode: str | None,
        dissolve_cfg: DissolveConfig,
        diffusion_cfg: DiffusionConfig,
    ) -> float:
        """Seconds per training step of CSI (``mode`` None) or DIA (cache, online or a blur)."""
        b = self.batch(cfg.batch_size)
        cfg = cfg.replace(batch_size=b)

        def setup() -> Callable[[], Any]:
            images = self._images(b, cfg.image_size).cpu()
            dissolve = self._dissolve_fn(mode, cfg, dissolve_cfg, diffusion_cfg, b)
            blur_all = mode == "blur" and dissolve_cfg.blur_branches == "all"
            trainer = Trainer(
                cfg, images, dissolve=dissolve, seed=0, device=self.device, dissolve_all=blur_all
            )
            index = torch.arange(b)
            return lambda: trainer.step(index)

        return self._timed(("contrastive", cfg, mode, dissolve_cfg, diffusion_cfg), setup)

    def _dissolve_fn(
        self,
        mode: str | None,
        cfg: ContrastiveConfig,
        dissolve_cfg: DissolveConfig,
        diffusion_cfg: DiffusionConfig,
        b: int,
    ) -> DissolveFn | None:
        if mode == "cache":
            r = dissolve_cfg.resolution
            cache = DissolveCache(
                torch.rand(b, 2, 3, r, r),
                torch.tensor([dissolve_cfg.t_min, dissolve_cfg.t_max]),
                np.arange(b),
            )
            return CachedDissolve(
                cache, dissolve_cfg.replace(cache_t_stride=1), image_size=cfg.image_size
            )
        if mode == "online":
            dissolver = self._dissolver(diffusion_cfg, dissolve_cfg)
            dissolver.image_size = cfg.image_size
            return OnlineDissolve(dissolver)
        if mode == "blur":
            return BlurDissolve(dissolve_cfg.kind, dissolve_cfg.blur_kernel)
        return None

    def score_image(self, cfg: ContrastiveConfig, score: ScoreConfig) -> float:
        """Seconds per image of the CSI score's feature pass (samples x shifts forwards)."""
        b = self.batch(score.batch_size)

        def setup() -> Callable[[], Any]:
            model = build_model(cfg).to(self.device).eval()
            images = ImageBatches(np.zeros((b, cfg.image_size, cfg.image_size, 3), np.uint8))
            return lambda: extract_features(
                model,
                images,
                shift=cfg.shift,
                cfg=score.replace(batch_size=b),
                image_size=cfg.image_size,
                hue=cfg.jitter_hue,
                hue_from=cfg.jitter_hue_from,
                device=self.device,
            )

        return self._timed(("score", cfg.arch, cfg.width, cfg.image_size, score, b), setup) / b

    def baseline_images(self, name: str, cfg: Any, image_size: int) -> tuple[float, float]:
        """Seconds per image of a baseline's training step and of its anomaly score."""
        cfg = cfg.replace(pretrained=False)  # same cost, no weight download
        key = ("baseline", name, cfg, image_size)
        if key not in self._memo:  # building e.g. a ViT-B pair costs seconds: once per config
            self._memo[key] = self._measure_baseline(name, cfg, image_size)
        return self._memo[key]

    def _measure_baseline(self, name: str, cfg: Any, image_size: int) -> tuple[float, float]:
        b = self.batch(cfg.batch_size)
        model = build_baseline(name, cfg).to(self.device)
        x = self._images(b, image_size)
        noise = np.random.default_rng(0).integers(0, 256, (max(b, 16), image_size, image_size, 3))
        normals = ImageBatches(noise.astype(np.uint8))  # scoring fits need some variance
        model.on_train_start(normals, self.device)
        opt, _ = model.make_optimizer()
        rng = torch.Generator(self.device).manual_seed(0)

        def train() -> Callable[[], None]:
            model.train()

            def step() -> None:
                model.training_loss(x, rng).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            return step

        def score() -> Callable[[], Any]:
            model.eval()
            model.fit_scoring(normals, self.device)
            return lambda: model.anomaly_score(x)

        key = (name, cfg, image_size, b)
        train_s = self._timed(("baseline-train", key), train) / b
        with torch.no_grad():
            score_s = self._timed(("baseline-score", key), score) / b
        return train_s, score_s


UNITS = {
    "train_diffusion": "diffusion training image",
    "dissolve_cache": "dissolved image (image x t)",
    "train: CSI and DIA": "training step",
    "train: periodic evaluations": "scored image",
    "train: baselines": "training image",
    "score": "scored image",
}


def estimate(
    plan: Plan, preset: str, sizes: dict[str, tuple[int, int]], probe: Probe
) -> pd.DataFrame:
    """Jobs, units of work and estimated hours per stage (training split into its parts)."""
    stages = {name: Stage() for name in UNITS}
    for run in plan.runs():
        for stage, jobs, units, seconds in _run_work(plan, preset, sizes, probe, run):
            stages[stage].add(jobs, units, seconds)
    for dataset, tag in plan.diffusion_models():
        layers = plan.diffusion_layers(dataset)
        cfg = resolve("diffusion", preset, layers).at_resolution(tag.resolution)
        images = cfg.steps * cfg.batch_size * cfg.grad_accum
        stages["train_diffusion"].add(1, images, probe.diffusion_image(cfg))
    for dataset, tag in plan.dissolve_caches():
        layers = plan.layers(dataset)
        dissolve_cfg = resolve("dissolve", preset, layers).replace(resolution=tag.resolution)
        cfg = resolve("diffusion", preset, layers).replace(resolution=tag.resolution)
        n = sizes[dataset][0] * len(t_grid(dissolve_cfg))
        stages["dissolve_cache"].add(1, n, probe.dissolve_image(cfg, dissolve_cfg))
    rows = [
        {
            "stage": name,
            "jobs": entry.jobs,
            "unit": UNITS[name],
            "units": entry.units,
            "hours": entry.seconds / 3600,
        }
        for name, entry in stages.items()
        if entry.units
    ]
    return pd.DataFrame(rows, columns=["stage", "jobs", "unit", "units", "hours"])


def _run_work(
    plan: Plan, preset: str, sizes: dict[str, tuple[int, int]], probe: Probe, run: dict[str, Any]
) -> list[tuple[str, int, float, float]]:
    """(stage, jobs, units, seconds per unit) of one run's training and scoring."""
    key = (run["dataset"], run["method"], run["variant"])
    layers = plan.layers(*key)
    n_train, n_scored = sizes[run["dataset"]]
    if baseline := plan.baseline(run["method"]):
        cfg = resolve(baseline, preset, layers)
        image_size = resolve("contrastive", preset, layers).image_size
        train_s, score_s = probe.baseline_images(baseline, cfg, image_size)
        return [
            ("train: baselines", 1, cfg.epochs * n_train, train_s),
            ("score", 1, n_scored, score_s),
        ]
    source = plan.dissolve_input(*key)
    cfg = resolve("contrastive", preset, layers)
    score = resolve("score", preset, layers)
    dissolve_cfg = resolve("dissolve", preset, layers)
    diffusion_cfg = resolve("diffusion", preset, layers).replace(resolution=dissolve_cfg.resolution)
    mode = source or ("blur" if cfg.method == "dia" else None)
    steps = cfg.epochs * batches_per_epoch(cfg, n_train)
    evals = schedule(cfg).evaluations()
    score_s = probe.score_image(cfg, score)
    return [
        (
            "train: CSI and DIA",
            1,
            steps,
            probe.contrastive_step(cfg, mode, dissolve_cfg, diffusion_cfg),
        ),
        ("train: periodic evaluations", 0, evals * n_scored, score_s),
        ("score", 1, n_scored, score_s),
    ]
