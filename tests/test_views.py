"""Baseline input views: resized from the original files as the official loaders do, not from the
224 x 224 squash the pipeline trains DIA on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from dia.baselines.base import resize_square
from dia.baselines.meanshift import MeanShift, MeanShiftConfig
from dia.baselines.rd4ad import RD4ADConfig
from dia.data.images import pixel_sha256
from dia.data.layouts import LISTERS
from dia.data.prepare import load_prepared, prepare_from_listing, to_float_tensor
from dia.data.sources import fetch_files, files_root
from dia.data.splits import SplitSpec
from dia.data.views import View, load_view, prepared_view, write_views
from dia.errors import DiaError
from dia.plan import Plan
from dia.sections import resolve
from dia.stages.data import run_prepare_views
from tests.fakes import make_kvasir

IMAGENET = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _original(width: int = 300, height: int = 200) -> Image.Image:
    """A non-square image with structure at every scale (smooth ramps plus a sharp disc)."""
    y, x = np.mgrid[0:height, 0:width]
    r = x * 255 // width
    g = y * 255 // height
    b = np.where((x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2, 255, 0)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8))


def _tensor(image: Image.Image) -> torch.Tensor:
    return to_float_tensor(np.array(image)[None])  # a writable copy, as decoded datasets are


@pytest.mark.parametrize(
    ("view", "official"),
    [
        (View("square", 256), transforms.Resize((256, 256))),
        (
            View("square", 96, "bicubic"),
            transforms.Resize((96, 96), transforms.InterpolationMode.BICUBIC),
        ),
        (
            View("short", 256),
            transforms.Compose([transforms.Resize(256), transforms.CenterCrop(256)]),
        ),
        (
            View("short", 224, "bicubic"),
            transforms.Compose(
                [
                    transforms.Resize(224, transforms.InterpolationMode.BICUBIC),
                    transforms.CenterCrop(224),
                ]
            ),
        ),
    ],
)
@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256)])
def test_view_is_the_torchvision_transform_of_the_original(
    view: View, official: transforms.Compose, size: tuple[int, int]
) -> None:
    image = _original(*size)
    assert np.array_equal(np.asarray(view.apply(image)), np.asarray(official(image)))


def test_rd4ad_view_differs_from_resizing_the_squash() -> None:
    """RD4AD's official Resize((256, 256)) of the original against 224 squash -> 256."""
    original = _original()
    squash = _tensor(prepared_view(224).apply(original))
    view = _tensor(View("square", RD4ADConfig().image_size).apply(original))
    from_squash = resize_square(squash, 256)
    assert view.shape == from_squash.shape == (1, 3, 256, 256)
    assert (view - from_squash).abs().max() > 0.05  # the disc's edge: double resampling blurs it
    assert resize_square(view, 256) is view  # the model no longer resizes its view


def test_meanshift_eval_view_is_the_official_transform_of_the_original() -> None:
    """Mean-Shift's Resize(256) + CenterCrop(224) keeps the aspect ratio: exact from the view,
    a different image from the squash (a 3:2 original squashed to 1:1 before the crop)."""
    cfg = MeanShiftConfig(backbone="resnet152", pretrained=False)
    model = MeanShift(cfg).eval()
    original = _original()
    official = IMAGENET(
        transforms.ToTensor()(transforms.CenterCrop(224)(transforms.Resize(256)(original)))
    )
    from_view = model.eval_view(_tensor(cfg.input_view().apply(original)))[0]
    from_squash = model.eval_view(_tensor(prepared_view(224).apply(original)))[0]
    torch.testing.assert_close(from_view, official, atol=1e-6, rtol=0)
    assert (from_squash - official).abs().max() > 0.5


def test_meanshift_resnet18_view_is_bicubic_at_the_crop_size() -> None:
    assert MeanShiftConfig(backbone="resnet18").input_view() == View("short", 224, "bicubic")
    assert MeanShiftConfig().input_view() == View("short", 256, "bilinear")
    assert RD4ADConfig().input_view() == View("square", 256)


def test_write_and_load_views(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    for i, size in enumerate([(300, 200), (120, 160)]):
        _original(*size).save(root / f"{i}.png")
    ids = np.array(["a", "b"])
    out = tmp_path / "views"
    views = [View("square", 64), View("short", 48), View("square", 32), View("square", 64)]
    sha256 = [
        pixel_sha256(np.asarray(Image.open(root / f"{i}.png").convert("RGB"))) for i in (0, 1)
    ]
    paths = ["0.png", "1.png"]
    write_views(out, root, paths, list(ids), views, prepared=View("square", 32), sha256=sha256)
    index = json.loads((out / "index.json").read_text())
    assert index == {
        "prepared": "square32-bilinear",
        "views": {
            "square64-bilinear": "square64-bilinear.npz",
            "short48-bilinear": "short48-bilinear.npz",
        },
    }
    assert load_view(out, View("square", 32), ids) is None
    images = load_view(out, View("short", 48), ids)
    assert images.shape == (2, 48, 48, 3)
    assert np.array_equal(images[1], np.asarray(View("short", 48).apply(_original(120, 160))))
    with pytest.raises(
        DiaError, match=r"view square96-bilinear is not among .*re-run the prepare_views"
    ):
        load_view(out, View("square", 96), ids)
    with pytest.raises(DiaError, match="other images than the dataset's manifest"):
        load_view(out, View("square", 64), ids[::-1])
    (out / "short48-bilinear.npz").write_bytes(b"garbage")
    with pytest.raises(DiaError, match="corrupt or unreadable"):
        load_view(out, View("short", 48), ids)
    with pytest.raises(DiaError, match=r"index\.json not found"):
        load_view(tmp_path, View("short", 48), ids)
    _original(64, 64).save(root / "1.png")  # the original changed after the prepare step
    with pytest.raises(DiaError, match=r"1\.png \(and 0 more\) differ from the prepared"):
        write_views(
            tmp_path / "again", root, paths, list(ids), views[:1], prepared=views[2], sha256=sha256
        )


def test_view_rejects_bad_specs() -> None:
    with pytest.raises(DiaError, match="unknown input view"):
        View("letterbox", 32)  # type: ignore[arg-type]
    with pytest.raises(DiaError, match="must be positive"):
        View("square", 0)


def test_prepare_views_stage_on_an_image_folder(tmp_path: Path) -> None:
    """The stage decodes the originals of a prepared Kvasir-layout folder into each baseline's
    view, skipping the one the prepared array already is."""
    source = fetch_files(
        "kvasir", "kvasir", tmp_path / "raw" / "source.json", str(make_kvasir(tmp_path / "kvasir"))
    )
    data_dir = tmp_path / "data"
    prepare_from_listing(
        LISTERS["kvasir"](files_root(source)),
        data_dir,
        normal_labels=["normal-cecum"],
        anomaly_labels=["polyps"],
        image_size=32,
        split=SplitSpec(seed=0, val_fraction=0.25, test_fraction=0.25),
    )
    rd4ad = [{"rd4ad": {"image_size": 64, "backbone": "resnet18"}}]
    meanshift = [{"meanshift": {"image_size": 32, "backbone": "resnet18"}}]
    same = [{"kdad": {"image_size": 32}}]
    spec = {"source": "kvasir", "image_size": 32}
    out = tmp_path / "views"
    run_prepare_views(
        spec,
        source,
        data_dir,
        out,
        preset="dia_code",
        baselines=[("rd4ad", rd4ad), ("meanshift", meanshift), ("kdad", same)],
    )
    data = load_prepared(data_dir)
    index = json.loads((out / "index.json").read_text())
    assert set(index["views"]) == {"square64-bilinear", "short32-bicubic"}
    view = load_view(out, resolve("rd4ad", "dia_code", rd4ad).input_view(), data.ids)
    assert view.shape == (len(data.ids), 64, 64, 3)
    assert load_view(out, resolve("kdad", "dia_code", same).input_view(), data.ids) is None


def test_plan_gives_baselines_on_image_file_datasets_their_views() -> None:
    config = {
        "seeds": [0, 1],
        "datasets": {
            "kvasir": {"source": "kvasir", "image_size": 224, "normal_labels": ["a"]},
            "pneumoniamnist": {"source": "medmnist", "normal_labels": [0]},
        },
        "methods": {
            "dia": {"contrastive": {"method": "dia"}},
            "rd4ad": {"model": "rd4ad"},
            "meanshift18": {"model": "meanshift", "meanshift": {"backbone": "resnet18"}},
        },
    }
    plan = Plan(config)
    assert plan.needs_views("kvasir", "rd4ad")
    assert not plan.needs_views("kvasir", "dia")
    assert not plan.needs_views("pneumoniamnist", "rd4ad")  # the npz holds the originals
    layers = plan.baseline_layers("kvasir")
    assert [name for name, _ in layers] == ["rd4ad", "meanshift"]
    assert resolve("meanshift", "dia_code", layers[1][1]).input_view() == View(
        "short", 224, "bicubic"
    )
    assert plan.baseline_layers("pneumoniamnist") == []
