from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from denoising_diffusion_pytorch import GaussianDiffusion

from dia.config import DiffusionConfig, DissolveConfig
from dia.contrastive.views import CachedDissolve, OnlineDissolve
from dia.device import fits_on
from dia.diffusion.cache import DissolveCache, build_cache, t_grid
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import build_diffusion
from dia.errors import DiaError

SIZE = 12
CFG = DissolveConfig(t_min=30, t_max=50, cache_t_stride=10, resolution=16, fit="pad_crop")
IDS = np.array(["a", "b", "c", "d", "e"])


@pytest.fixture(scope="module")
def dissolver() -> Dissolver:
    torch.manual_seed(0)
    diffusion = build_diffusion_small()
    return Dissolver(diffusion, CFG.replace(batch_size=2), image_size=SIZE)


def build_diffusion_small() -> GaussianDiffusion:
    model = build_diffusion(DiffusionConfig(dim=8, dim_mults=(1, 2), resolution=16)).eval()
    with torch.no_grad():  # warm-up: the first forward pass pays one-off initialisation
        model.model(torch.zeros(1, 3, 16, 16), torch.zeros(1, dtype=torch.long))
    return model


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(len(IDS), 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def cache_file(dissolver: Dissolver, images: torch.Tensor, tmp_path_factory) -> Path:
    """Cache of 5 images over t = 30, 40, 50, built in batches of 2 (last batch short)."""
    dest = tmp_path_factory.mktemp("cache") / "dissolved.npz"
    build_cache(dissolver, images, IDS, dest)
    return dest


def test_t_grid_is_inclusive() -> None:
    assert t_grid(CFG).tolist() == [30, 40, 50]
    assert t_grid(CFG.replace(t_max=49)).tolist() == [30, 40]


def test_cache_file_layout(cache_file: Path) -> None:
    cache = DissolveCache.load(cache_file, IDS)
    assert cache.dissolved.shape == (5, 3, 3, 16, 16)
    assert cache.t_grid.tolist() == [30, 40, 50]
    assert cache.ids.tolist() == IDS.tolist()
    assert not list(cache_file.parent.glob(".*.dia-tmp"))


def test_lookup_equals_dissolve_small(
    cache_file: Path, dissolver: Dissolver, images: torch.Tensor
) -> None:
    cache = DissolveCache.load(cache_file, IDS)
    index = torch.tensor([4, 0, 2, 2])
    t = torch.tensor([50, 30, 40, 30])
    got = cache.lookup(index, t)
    for row, (i, ti) in enumerate(zip(index.tolist(), t.tolist(), strict=True)):
        expected = dissolver.dissolve_small(images[i : i + 1], torch.tensor([ti]))
        assert (got[row : row + 1] - expected).abs().max().item() < 1e-6
    assert (got[2] - got[3]).abs().max().item() > 1e-5


def test_half_size_cache_is_within_its_stated_bound(
    cache_file: Path, dissolver: Dissolver, images: torch.Tensor, tmp_path: Path
) -> None:
    """float16 storage: half the bytes, every value within a relative 2^-11 of float32 (2.5e-4
    absolute in [-1, 1]); lookups come back as float32."""
    half_dissolver = Dissolver(
        dissolver.diffusion, dissolver.cfg.replace(cache_dtype="float16"), image_size=SIZE
    )
    build_cache(half_dissolver, images, IDS, tmp_path / "half.npz")
    full, half = DissolveCache.load(cache_file, IDS), DissolveCache.load(tmp_path / "half.npz", IDS)
    assert half.dissolved.dtype == torch.float16
    assert half.dissolved.nbytes * 2 == full.dissolved.nbytes
    error = (half.dissolved.float() - full.dissolved).abs()
    assert full.dissolved.abs().max() <= 1.0
    assert bool((error <= full.dissolved.abs() * 2**-11 + 2**-24).all())
    assert error.max() <= 2.5e-4 and error.max() > 0
    index, t = torch.tensor([0, 3]), torch.tensor([30, 50])
    assert half.lookup(index, t).dtype == torch.float32


def test_lookup_rejects_off_grid_t(cache_file: Path) -> None:
    cache = DissolveCache.load(cache_file)
    for bad in (35, 20, 60):
        with pytest.raises(ValueError, match="grid"):
            cache.lookup(torch.tensor([0, 1]), torch.tensor([30, bad]))


@pytest.mark.parametrize("t_sampling", ["per_batch_shift", "per_image"])
def test_cached_and_online_dissolve_agree(
    cache_file: Path, dissolver: Dissolver, images: torch.Tensor, t_sampling: str
) -> None:
    """Same generator state -> same t drawn -> same dissolved images at the network size."""
    cfg = CFG.replace(t_sampling=t_sampling)
    cached = CachedDissolve(DissolveCache.load(cache_file, IDS), cfg, image_size=SIZE)
    online = OnlineDissolve(Dissolver(dissolver.diffusion, cfg, image_size=SIZE))
    index = torch.tensor([3, 1, 0])
    rng_a = torch.Generator().manual_seed(7)
    rng_b = torch.Generator().manual_seed(7)
    for _ in range(3):
        a = cached(index, images[index], rng_a)
        b = online(index, images[index], rng_b)
        assert a.shape == (3, 3, SIZE, SIZE)
        assert (a - b).abs().max().item() < 1e-6
    assert torch.equal(rng_a.get_state(), rng_b.get_state())


def test_per_image_sampling_draws_different_t(cache_file: Path, images: torch.Tensor) -> None:
    """per_image draws one t per image; per_batch_shift one t for the whole call."""
    cache = DissolveCache.load(cache_file, IDS)
    index = torch.tensor([0, 0, 0, 0, 0, 0])
    x = images[index]
    shared = CachedDissolve(cache, CFG, image_size=SIZE)
    own = CachedDissolve(cache, CFG.replace(t_sampling="per_image"), image_size=SIZE)
    rng = torch.Generator().manual_seed(0)
    out = shared(index, x, rng)
    assert all(torch.equal(out[0], o) for o in out)
    out = own(index, x, rng)
    assert not all(torch.equal(out[0], o) for o in out)


def test_load_with_other_ids_raises(cache_file: Path) -> None:
    with pytest.raises(DiaError, match="other images"):
        DissolveCache.load(cache_file, np.array(["a", "b", "c", "d", "x"]))
    with pytest.raises(DiaError, match="other images"):
        DissolveCache.load(cache_file, IDS[:4])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "missing_key"])
def test_corrupt_cache_raises_dia_error(cache_file: Path, tmp_path: Path, damage: str) -> None:
    data = cache_file.read_bytes()
    bad = tmp_path / "bad.npz"
    if damage == "garbage":
        bad.write_bytes(b"not a cache" * 20)
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        np.savez(bad, dissolved=np.zeros((1, 1, 3, 4, 4), np.float32), ids=np.array(["a"]))
    with pytest.raises(DiaError, match="unreadable"):
        DissolveCache.load(bad)


def test_missing_cache_raises_dia_error(tmp_path: Path) -> None:
    with pytest.raises(DiaError, match="unreadable"):
        DissolveCache.load(tmp_path / "absent.npz")


def test_the_cache_stays_on_the_host_without_a_gpu(cache_file: Path) -> None:
    cache = DissolveCache.load(cache_file, IDS)
    assert cache.on("cpu") is cache and not fits_on("cpu", 1)
