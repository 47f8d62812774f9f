from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from denoising_diffusion_pytorch import GaussianDiffusion

from dia.config import DiffusionConfig, DissolveConfig
from dia.diffusion.dissolve import Dissolver, fit_back, fit_to
from dia.diffusion.model import build_diffusion

RES = 16


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    torch.manual_seed(0)
    model = build_diffusion(DiffusionConfig(dim=8, dim_mults=(1, 2), resolution=RES)).eval()
    with torch.no_grad():  # warm-up: the first forward pass pays one-off initialisation
        model.model(torch.zeros(1, 3, RES, RES), torch.zeros(1, dtype=torch.long))
    return model


@pytest.fixture
def images() -> torch.Tensor:
    """Three 12 px images in [0, 1] (pad_crop brings them to 16 px)."""
    return torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def dissolver(diffusion: GaussianDiffusion, **cfg: object) -> Dissolver:
    values = {"resolution": RES, "fit": "pad_crop", **cfg}
    return Dissolver(diffusion, DissolveConfig.from_dict(values), image_size=12)


def library_x0(diffusion: GaussianDiffusion, x: torch.Tensor, t: int) -> torch.Tensor:
    """The official call: x0_hat = p_sample(x, t)[1]."""
    return diffusion.p_sample(x, t)[1].clone()


@pytest.mark.parametrize("t", [0, 30, 99, 130, 500])
def test_predict_x0_matches_library_p_sample(diffusion: GaussianDiffusion, t: int) -> None:
    x = torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(t))
    got = dissolver(diffusion).predict_x0(x, torch.full((2,), t))
    expected = library_x0(diffusion, x, t)
    assert (got - expected).abs().max().item() < 1e-5


def test_dissolve_small_unit_scaling_feeds_raw_images(
    diffusion: GaussianDiffusion, images: torch.Tensor
) -> None:
    """Official code: [0, 1] images padded to 16 px go in as they are; output stays in [-1, 1]."""
    got = dissolver(diffusion, input_scaling="unit").dissolve_small(images, torch.full((3,), 60))
    expected = library_x0(diffusion, F.pad(images, (2, 2, 2, 2)), 60)
    assert got.shape == (3, 3, RES, RES)
    assert (got - expected).abs().max().item() < 1e-5


def test_dissolve_small_symmetric_scaling_maps_to_and_from_unit_range(
    diffusion: GaussianDiffusion, images: torch.Tensor
) -> None:
    got = dissolver(diffusion, input_scaling="symmetric").dissolve_small(
        images, torch.full((3,), 60)
    )
    padded = F.pad(images, (2, 2, 2, 2))
    expected = (library_x0(diffusion, padded * 2 - 1, 60) + 1) / 2
    assert (got - expected).abs().max().item() < 1e-5
    assert got.min().item() >= 0.0 and got.max().item() <= 1.0
    unit = dissolver(diffusion, input_scaling="unit").dissolve_small(images, torch.full((3,), 60))
    assert (got - unit).abs().max().item() > 1e-3


def test_pad_crop_round_trip_is_exact() -> None:
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    padded = fit_to(x, 32, "pad_crop")
    assert padded.shape == (2, 3, 32, 32)
    assert torch.equal(padded[..., 2:30, 2:30], x)
    border = padded.clone()
    border[..., 2:30, 2:30] = 0
    assert torch.equal(border, torch.zeros_like(border))
    assert torch.equal(fit_back(padded, 28, "pad_crop"), x)


def test_pad_crop_rejects_larger_images() -> None:
    with pytest.raises(ValueError, match="pad_crop"):
        fit_to(torch.zeros(1, 3, 40, 40), 32, "pad_crop")


def test_fit_is_identity_at_model_resolution() -> None:
    x = torch.rand(1, 3, 16, 16)
    for fit in ("pad_crop", "resize"):
        assert fit_to(x, 16, fit) is x
        assert fit_back(x, 16, fit) is x


def test_resize_shapes_and_constant_image() -> None:
    x = torch.full((2, 3, 24, 24), 0.37)
    small = fit_to(x, 16, "resize")
    back = fit_back(small, 24, "resize")
    assert small.shape == (2, 3, 16, 16)
    assert back.shape == (2, 3, 24, 24)
    assert torch.allclose(small, x[..., :16, :16], atol=1e-6)
    assert torch.allclose(back, x, atol=1e-6)


def test_resize_is_bilinear_without_antialias() -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    expected = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(fit_to(x, 16, "resize"), expected)


def test_dissolve_changes_the_image_and_clamps(diffusion: GaussianDiffusion) -> None:
    """Unit scaling at a large t: output differs from the input and saturates at the clamp."""
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    d = dissolver(diffusion, input_scaling="unit")
    out = d(x, torch.full((2,), 900))
    assert out.shape == x.shape
    assert (out - x).abs().max().item() > 1e-2
    assert out.min().item() >= -1.0 and out.max().item() <= 1.0
    assert ((out == 1.0) | (out == -1.0)).any()
    small = d(x, torch.full((2,), 30))
    assert (small - x).abs().max().item() > 1e-4


def test_call_is_dissolve_small_then_fit_back(
    diffusion: GaussianDiffusion, images: torch.Tensor
) -> None:
    d = dissolver(diffusion)
    t = torch.full((3,), 45)
    assert torch.equal(d(images, t), d.dissolve_small(images, t)[..., 2:14, 2:14])


def test_per_image_t_equals_one_by_one(diffusion: GaussianDiffusion, images: torch.Tensor) -> None:
    d = dissolver(diffusion)
    ts = torch.tensor([30, 77, 130])
    batched = d(images, ts)
    for i in range(3):
        alone = d(images[i : i + 1], ts[i : i + 1])
        assert (batched[i : i + 1] - alone).abs().max().item() < 1e-5
    same_t = d(images, torch.full((3,), 30))
    assert (batched[1:] - same_t[1:]).abs().max().item() > 1e-4
