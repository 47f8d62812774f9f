"""Precomputed dissolved images, so contrastive training never runs the diffusion model.

The cache holds D(x, t) at the model's resolution for every normal training image and every t of
a grid ``t_min, t_min + stride, ..., <= t_max``, as float32 or (``cache_dtype: float16``) half.
Training then costs one gather and one resize per view instead of a Unet forward pass.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dia.config import DissolveConfig
from dia.data.prepare import ImageBatches
from dia.device import fits_on
from dia.diffusion.dissolve import Dissolver
from dia.errors import DiaError
from dia.io import atomic_path
from dia.progress import progress


def t_grid(cfg: DissolveConfig) -> np.ndarray:
    return np.arange(cfg.t_min, cfg.t_max + 1, cfg.cache_t_stride, dtype=np.int64)


def build_cache(
    dissolver: Dissolver,
    images: torch.Tensor | ImageBatches,
    ids: np.ndarray,
    dest: Path,
    *,
    device: str = "cpu",
) -> None:
    """Dissolve ``images`` (N, 3, H, W) at every grid t and write ``dest`` (npz) atomically;
    non-finite dissolved images stop it before anything is written."""
    grid = t_grid(dissolver.cfg)
    r = dissolver.cfg.resolution
    out = np.empty((len(images), len(grid), 3, r, r), dtype=dissolver.cfg.cache_dtype)
    bs = dissolver.cfg.batch_size
    total = len(grid) * ((len(images) + bs - 1) // bs)
    with progress(total, "dissolve cache") as bar:
        for g, t in enumerate(grid):
            for start in range(0, len(images), bs):
                x = images[start : start + bs].to(device)
                ts = torch.full((len(x),), int(t), dtype=torch.long)
                dissolved = dissolver.dissolve_small(x, ts)
                if not torch.isfinite(dissolved).all():
                    raise DiaError(
                        f"dissolving for {dest} gave NaN or infinite images (t = {t}): the "
                        f"diffusion model is broken; retrain it (delete it and re-run) with a "
                        f"lower diffusion.lr, or dissolve with precision: fp32"
                    )
                out[start : start + len(x), g] = dissolved.cpu().numpy()
                bar.update(1)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            dissolved=out,
            t_grid=grid,
            ids=ids.astype(str),
            config=np.array(repr(dissolver.cfg.to_dict())),
        )


@dataclass(frozen=True)
class DissolveCache:
    """Lookup of cached dissolved images by (image index, t)."""

    dissolved: torch.Tensor
    t_grid: torch.Tensor
    ids: np.ndarray

    @classmethod
    def load(cls, path: Path, ids: np.ndarray | None = None) -> DissolveCache:
        try:
            with np.load(path) as z:
                obj = cls(torch.from_numpy(z["dissolved"]), torch.from_numpy(z["t_grid"]), z["ids"])
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise DiaError(
                f"dissolve cache {path} is unreadable ({exc}); delete it and re-run"
            ) from exc
        if ids is not None and not np.array_equal(obj.ids, np.asarray(ids).astype(str)):
            raise DiaError(
                f"dissolve cache {path} was built for other images; delete it and re-run"
            )
        return obj

    def on(self, device: str | torch.device) -> DissolveCache:
        """This cache with its images on a GPU ``device`` when they fit
        (:func:`dia.device.fits_on`): a lookup then gathers there, with no copy per step. A
        cache that does not fit stays in host memory, and each lookup for the GPU stages its rows
        in pinned memory (:meth:`lookup`)."""
        if not fits_on(device, self.dissolved.nbytes):
            return self
        return dataclasses.replace(self, dissolved=self.dissolved.to(device))

    def lookup(
        self, index: torch.Tensor, t: torch.Tensor, device: str | torch.device | None = None
    ) -> torch.Tensor:
        """Dissolved images (model resolution, float32) of images ``index`` at grid steps ``t``,
        on ``device`` (None: where the cache is). A float16 cache stays float16 in memory and
        only the rows looked up are widened, on the device they go to; rows gathered on the host
        for a GPU go through pinned memory, so the copy runs without stalling the host."""
        pos = torch.searchsorted(self.t_grid, t).clamp(max=len(self.t_grid) - 1)
        if not bool((self.t_grid[pos] == t).all()):
            raise ValueError("t values must lie on the cache grid")
        where = self.dissolved.device
        rows = self.dissolved[index.to(where), pos.to(where)]
        target = where if device is None else torch.device(device)
        if target.type == "cuda" and where.type == "cpu":
            rows = rows.pin_memory().to(target, non_blocking=True)
        return rows.to(target).float()
