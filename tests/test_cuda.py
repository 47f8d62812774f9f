"""The CUDA code path: generators on the device, dissolving, determinism and bf16 on a GPU.

Skipped without one; ``scripts/gpu_check.sh`` runs them (``pytest -m cuda``). Tolerances, not
equality: cuDNN picks its kernels per run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dia.checkpoint import global_rng_state, set_global_rng_state
from dia.config import ContrastiveConfig, DiffusionConfig, DissolveConfig, ScoreConfig
from dia.contrastive.train import Trainer
from dia.contrastive.views import CachedDissolve
from dia.diffusion.cache import DissolveCache, build_cache
from dia.diffusion.dissolve import Dissolver
from dia.diffusion.model import build_diffusion
from dia.evaluation.score import extract_features

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]
DEVICE = "cuda"


def images(n: int = 8, size: int = 28) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def trainer(method: str = "csi", precision: str = "fp32", dissolve=None) -> Trainer:
    cfg = ContrastiveConfig(
        method=method, image_size=28, width=16, batch_size=8, precision=precision
    )
    return Trainer(cfg, images(), dissolve=dissolve, seed=0, device=DEVICE)


def dissolver(precision: str = "fp32") -> Dissolver:
    torch.manual_seed(0)
    model = build_diffusion(DiffusionConfig(dim=16, dim_mults=(1, 2), resolution=32))
    cfg = DissolveConfig(fit="pad_crop", t_min=30, t_max=50, cache_t_stride=10, precision=precision)
    return Dissolver(model.to(DEVICE).eval(), cfg, image_size=28)


def test_a_training_step_draws_from_generators_on_the_device() -> None:
    run = trainer()
    assert run.aug_rng.device.type == "cuda"
    losses = run.train_step(torch.arange(8), 0, 0)
    assert torch.isfinite(losses["loss"]).item()
    assert next(run.model.parameters()).device.type == "cuda"


def test_scoring_on_the_device_is_repeatable() -> None:
    run = trainer()
    cfg = ScoreConfig(samples=2, batch_size=8)
    kwargs = dict(shift="rotation", cfg=cfg, image_size=28, hue=0.07, device=DEVICE)
    a = extract_features(run.model, images(), **kwargs)
    b = extract_features(run.model, images(), **kwargs)
    torch.testing.assert_close(a.projection, b.projection, atol=1e-4, rtol=1e-4)


def test_the_dissolve_cache_equals_online_dissolving_on_the_gpu(tmp_path) -> None:
    d = dissolver()
    ids = np.array([str(i) for i in range(8)])
    build_cache(d, images(), ids, tmp_path / "cache.npz", device=DEVICE)
    cache = DissolveCache.load(tmp_path / "cache.npz", ids)
    t = torch.tensor([30, 40, 50, 30, 40, 50, 30, 40])
    online = d.dissolve_small(images().to(DEVICE), t.to(DEVICE)).cpu()
    torch.testing.assert_close(cache.lookup(torch.arange(8), t), online, atol=1e-4, rtol=1e-4)
    view = CachedDissolve(cache, d.cfg, image_size=28)
    assert view(torch.arange(8), images().to(DEVICE), torch.Generator()).device.type == "cuda"


def test_two_runs_with_one_seed_agree() -> None:
    weights = []
    for _ in range(2):
        run = trainer()
        for batch in range(3):
            run.train_step(torch.arange(8), 0, batch)
        weights.append([p.detach().cpu() for p in run.model.parameters()])
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_bf16_is_close_to_fp32_on_the_gpu() -> None:
    losses = {
        p: trainer(precision=p).train_step(torch.arange(8), 0, 0)["loss"].item()
        for p in ("fp32", "bf16")
    }
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    x, t = images().to(DEVICE), torch.full((8,), 40, device=DEVICE)
    full, half = dissolver("fp32")(x, t), dissolver("bf16")(x, t)
    assert half.dtype == torch.float32 and (half - full).abs().max() < 0.1


def test_images_uploaded_once_give_the_same_batches() -> None:
    from dia.data.prepare import ImageBatches

    host = ImageBatches(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8))
    device = host.on(DEVICE)
    assert isinstance(device.images, torch.Tensor) and device.images.device.type == "cuda"
    index = torch.tensor([5, 0, 2])
    torch.testing.assert_close(device[index].cpu(), host[index], atol=0, rtol=0)


def test_a_cache_on_the_gpu_looks_up_what_the_host_one_does(tmp_path) -> None:
    d = dissolver()
    ids = np.array([str(i) for i in range(8)])
    build_cache(d, images(), ids, tmp_path / "cache.npz", device=DEVICE)
    host = DissolveCache.load(tmp_path / "cache.npz", ids)
    gpu = host.on(DEVICE)
    assert gpu.dissolved.device.type == "cuda"
    index, t = torch.tensor([7, 0, 3]), torch.tensor([50, 30, 40])
    torch.testing.assert_close(gpu.lookup(index, t).cpu(), host.lookup(index, t), atol=0, rtol=0)
    # a cache left in host memory (too big for the GPU) reaches the GPU through pinned memory
    staged = host.lookup(index, t, DEVICE)
    assert staged.device.type == "cuda" and host.dissolved.device.type == "cpu"
    torch.testing.assert_close(staged.cpu(), host.lookup(index, t), atol=0, rtol=0)


def test_the_global_rng_state_holds_the_gpus_generators() -> None:
    saved = global_rng_state()
    expected = torch.rand(4, device=DEVICE)
    torch.cuda.manual_seed_all(123)
    set_global_rng_state(saved)
    torch.testing.assert_close(torch.rand(4, device=DEVICE), expected, rtol=0, atol=0)
