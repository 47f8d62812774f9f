"""Building the 2 (CSI) or 3 (DIA) branches of shifted views of one batch.

O and O' are two independently flipped copies of the batch, each shifted K ways (k-major).
DIA's third branch A holds dissolved copies, one dissolving draw per shift block k. With
``dissolve_all`` (the official blur ablations) O and O' are built from the
dissolved batch too, so blurred views are contrasted with blurred views. The dissolved
image is flipped after dissolving by default, because the cache stores unflipped images; the
official code flips first (``flip_first``, online dissolving only). The two orders differ as far
as the diffusion model fails to commute with the flip: for the small PneumoniaMNIST parity model,
by 54-65% of the dissolving's own change (mean absolute values, t from 30 to 130).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dia.config import DissolveConfig
from dia.contrastive.augment import random_hflip
from dia.contrastive.shifts import NUM_SHIFTS, SHIFTS, shift_all, shift_labels
from dia.diffusion.cache import DissolveCache
from dia.diffusion.dissolve import Dissolver, fit_back

DissolveFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def _draw_t(values: torch.Tensor, n: int, per_image: bool, rng: torch.Generator) -> torch.Tensor:
    pick = torch.randint(len(values), (n if per_image else 1,), generator=rng)
    return values[pick].expand(n).contiguous()


class CachedDissolve:
    """D(x, t) looked up in the precomputed cache; t uniform over the cache's grid."""

    def __init__(self, cache: DissolveCache, cfg: DissolveConfig, *, image_size: int) -> None:
        self.cache, self.cfg, self.image_size = cache, cfg, image_size

    def __call__(self, index: torch.Tensor, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        per_image = self.cfg.t_sampling == "per_image"
        t = _draw_t(self.cache.t_grid, len(index), per_image, rng)
        small = self.cache.lookup(index, t, x.device)
        return fit_back(small, self.image_size, self.cfg.fit)


class OnlineDissolve:
    """D(x, t) computed by the diffusion model at every step; t uniform in [t_min, t_max]."""

    def __init__(self, dissolver: Dissolver) -> None:
        self.dissolver = dissolver
        cfg = dissolver.cfg
        self.values = torch.arange(cfg.t_min, cfg.t_max + 1, cfg.cache_t_stride)

    def __call__(self, index: torch.Tensor, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        per_image = self.dissolver.cfg.t_sampling == "per_image"
        return self.dissolver(x, _draw_t(self.values, len(x), per_image, rng).to(x.device))


def make_views(
    x: torch.Tensor,
    index: torch.Tensor,
    *,
    shift: str,
    dissolve: DissolveFn | None,
    rng: torch.Generator,
    aug_rng: torch.Generator,
    dissolve_all: bool = False,
    flip_first: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the views [O | O' | A] (S, 3, H, W) and their shift labels (S,); ``flip_first``
    flips each block of A before dissolving it."""
    if dissolve_all:
        if dissolve is None:
            raise ValueError("dissolve_all needs a dissolve function")
        x = dissolve(index, x, rng)
    branches = [shift_all(random_hflip(x, aug_rng), shift) for _ in range(2)]
    if dissolve is not None:

        def dissolved() -> torch.Tensor:
            if dissolve_all:
                return random_hflip(x, aug_rng)
            if flip_first:
                return dissolve(index, random_hflip(x, aug_rng), rng)
            return random_hflip(dissolve(index, x, rng), aug_rng)

        branches.append(torch.cat([SHIFTS[shift](dissolved(), k) for k in range(NUM_SHIFTS)]))
    labels = shift_labels(len(x), len(branches), x.device)
    return torch.cat(branches), labels
