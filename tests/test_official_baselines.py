"""impl: official for the baselines: config and plan validation, and each adapter end to end
on tiny fake official repositories laid out like the real ones (same files, functions and loop
shapes; the real code is in tests/parity), so these run without snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

import dia.official.baselines as adapters
from dia.baselines import build_baseline, config_class
from dia.baselines.backbones import torchvision_backbone
from dia.errors import DiaError
from dia.plan import OFFICIAL_CODE, Plan
from dia.sections import resolve
from dia.stages.baselines import score_baseline, train_baseline
from tests.conftest import ROOT
from tests.fakes import noise_prepared

PARITY = yaml.safe_load((ROOT / "config" / "parity_demo.yaml").read_text())
COMMIT = "0123456789abcdef0123456789abcdef01234567"

RD4AD = {
    "resnet.py": """
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet as TorchResNet


class ResNet(TorchResNet):
    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        a = self.layer1(x)
        b = self.layer2(a)
        return [a, b, self.layer3(b)]


class BN_layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(256, 32, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x[2])


def resnet18(pretrained=False, progress=True, **kwargs):
    assert not pretrained, "the fake has no weights to download"
    return ResNet(BasicBlock, [1, 1, 1, 1]), BN_layer()
""",
    "de_resnet.py": """
from torch import nn


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.ConvTranspose2d(32, 256, 2, stride=2)
        self.layer2 = nn.ConvTranspose2d(256, 128, 2, stride=2)
        self.layer3 = nn.ConvTranspose2d(128, 64, 2, stride=2)

    def forward(self, x):
        c = self.layer1(x)
        b = self.layer2(c)
        return [self.layer3(b), b, c]


def de_resnet18(pretrained=False, progress=True, **kwargs):
    return ResNet()
""",
    "main.py": """
import torch
from test import evaluation


def loss_fucntion(a, b):
    cos_loss = torch.nn.CosineSimilarity()
    loss = 0
    for item in range(len(a)):
        loss += torch.mean(1 - cos_loss(a[item].view(a[item].shape[0], -1),
                                        b[item].view(b[item].shape[0], -1)))
    return loss


def train(_class_):
    raise RuntimeError("reads ./mvtec/" + _class_)
""",
    "test.py": """
import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F


def cal_anomaly_map(fs_list, ft_list, out_size=224, amap_mode="mul"):
    anomaly_map = np.zeros([out_size, out_size])
    for fs, ft in zip(fs_list, ft_list):
        a_map = torch.unsqueeze(1 - F.cosine_similarity(fs, ft), dim=1)
        a_map = F.interpolate(a_map, size=out_size, mode="bilinear", align_corners=True)
        anomaly_map += a_map[0, 0].to("cpu").detach().numpy()
    return anomaly_map, []


def evaluation(encoder, bn, decoder, dataloader, device, _class_=None):
    raise RuntimeError("needs MVTec masks")
""",
}

KDAD = {
    "train.py": """
from pathlib import Path

import torch
from torch.autograd import Variable

from dataloader import load_data
from loss_functions import DirectionOnlyLoss, MseDirectionLoss
from models.network import get_networks
from test_functions import detection_test


def train(config):
    checkpoint_path = "./outputs/{}/{}/checkpoints/".format(
        config["experiment_name"], config["dataset_name"])
    Path(checkpoint_path).mkdir(parents=True, exist_ok=True)
    train_dataloader, test_dataloader = load_data(config)
    vgg, model = get_networks(config)
    if config["direction_loss_only"]:
        criterion = DirectionOnlyLoss()
    else:
        criterion = MseDirectionLoss(config["lamda"])
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config["learning_rate"]))
    for epoch in range(config["num_epochs"] + 1):
        model.train()
        for data in train_dataloader:
            X = Variable(data[0]).cuda()
            total_loss = criterion(model.forward(X), vgg(X))
            optimizer.zero_grad()
            total_loss.backward()
            optimizer.step()
        if epoch % 10 == 0:
            detection_test(model, vgg, test_dataloader, config)
        if epoch % 50 == 0:
            torch.save(model.state_dict(), "{}Cloner_{}_epoch_{}.pth".format(
                checkpoint_path, config["normal_class"], epoch))
""",
    "dataloader.py": """
def load_data(config):
    raise RuntimeError("reads ./Dataset/")
""",
    "loss_functions.py": """
import torch
from torch import nn


class MseDirectionLoss(nn.Module):
    def __init__(self, lamda):
        super().__init__()
        self.lamda = lamda

    def forward(self, output_pred, output_real):
        loss = 0
        for i in (2, 5):
            p, r = output_pred[i].flatten(1), output_real[i].flatten(1)
            loss = loss + torch.mean(1 - nn.functional.cosine_similarity(p, r))
            loss = loss + self.lamda * nn.functional.mse_loss(p, r)
        return loss


class DirectionOnlyLoss(MseDirectionLoss):
    def __init__(self):
        super().__init__(0.0)
""",
    "models/network.py": """
import torch
from torch import nn
from torchvision.models import vgg16


class VGG(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features

    def activations_hook(self, grad):
        self.gradients = grad

    def forward(self, x, target_layer=1):
        result = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == target_layer:
                x.register_hook(self.activations_hook)
            result.append(x)
        return result


class Vgg16(nn.Module):
    def __init__(self, pretrain):
        super().__init__()
        self.features = nn.ModuleList(list(vgg16("vgg16-397923af.pth").features)).eval()

    def forward(self, x):
        output = []
        for layer in self.features:
            x = layer(x)
            output.append(x)
        return output


def get_networks(config, load_checkpoint=False):
    vgg = Vgg16(config["pretrain"]).cuda()
    layers = []
    for c_in, c_out in ((3, 4), (4, 8)):
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=config["use_bias"])
        torch.nn.init.xavier_uniform_(conv.weight)
        layers += [conv, nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return vgg, VGG(nn.Sequential(*layers)).cuda()
""",
    "test_functions.py": """
import numpy as np
import torch
from sklearn.metrics import auc, roc_curve
from torch.autograd import Variable


def detection_test(model, vgg, test_dataloader, config):
    model.eval()
    label_score = []
    for X, Y in test_dataloader:
        X = Variable(X).cuda()
        output_pred, output_real = model.forward(X), vgg(X)
        p, r = output_pred[5].flatten(1), output_real[5].flatten(1)
        total_loss = 1 - torch.nn.functional.cosine_similarity(p, r)
        total_loss = total_loss + config["lamda"] * torch.mean((p - r) ** 2, dim=1)
        label_score += list(zip(Y.cpu().data.numpy().tolist(),
                                total_loss.cpu().data.numpy().tolist()))
    labels, scores = zip(*label_score)
    fpr, tpr, thresholds = roc_curve(np.array(labels), np.array(scores), pos_label=0)
    return auc(fpr, tpr)
""",
}

MEANSHIFT = {
    "main.py": """
import torch
import torch.nn.functional as F
import torch.optim as optim
from sklearn.metrics import roc_auc_score

import utils


def contrastive_loss(out_1, out_2):
    out_1, out_2 = F.normalize(out_1, dim=-1), F.normalize(out_2, dim=-1)
    out = torch.cat([out_1, out_2], dim=0)
    sim = torch.exp(out @ out.t() / 0.25)
    mask = ~torch.eye(len(out), dtype=torch.bool)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / 0.25).repeat(2)
    return (-torch.log(pos / sim.masked_select(mask).view(len(out), -1).sum(-1))).mean()


def train_model(model, train_loader, test_loader, train_loader_1, device, args):
    model.eval()
    auc, feature_space = get_score(model, device, train_loader, test_loader)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, weight_decay=0.00005)
    center = torch.FloatTensor(feature_space).mean(dim=0)
    if args.angular:
        center = F.normalize(center, dim=-1)
    center = center.to(device)
    for epoch in range(args.epochs):
        running_loss = run_epoch(model, train_loader_1, optimizer, center, device, args.angular)
        auc, _ = get_score(model, device, train_loader, test_loader)


def run_epoch(model, train_loader, optimizer, center, device, is_angular):
    total_loss, total_num = 0.0, 0
    for ((img1, img2), _) in train_loader:
        img1, img2 = img1.to(device), img2.to(device)
        optimizer.zero_grad()
        out_1, out_2 = model(img1) - center, model(img2) - center
        loss = contrastive_loss(out_1, out_2)
        loss.backward()
        optimizer.step()
        total_num += img1.size(0)
        total_loss += loss.item() * img1.size(0)
    return total_loss / total_num


def get_score(model, device, train_loader, test_loader):
    raise RuntimeError("scores the CIFAR-10 test set")
""",
    "utils.py": """
import random

import faiss
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.models as models
import torchvision.transforms as transforms
from PIL import ImageFilter


class GaussianBlur(object):
    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


transform_color = transforms.Compose([transforms.Resize(40), transforms.CenterCrop(32),
                                      transforms.ToTensor()])
transform_resnet18 = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])


class Transform:
    def __init__(self):
        self.moco_transform = transforms.Compose([
            transforms.RandomResizedCrop(32, scale=(0.2, 1.)),
            transforms.RandomApply([GaussianBlur()], p=0.5),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor()])

    def __call__(self, x):
        return self.moco_transform(x), self.moco_transform(x)


class Model(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        if backbone == 152:
            self.backbone = models.resnet152(pretrained=True)
        else:
            self.backbone = models.resnet18(pretrained=True)
        self.backbone.fc = torch.nn.Identity()

    def forward(self, x):
        return F.normalize(self.backbone(x), dim=-1)


def knn_score(train_set, test_set, n_neighbours=2):
    index = faiss.IndexFlatL2(train_set.shape[1])
    index.add(train_set)
    D, _ = index.search(test_set, n_neighbours)
    return np.sum(D, axis=1)
""",
}

UNIAD = {
    "tools/train_val.py": """
import torch
import torch.distributed as dist
from easydict import EasyDict
from models.model_helper import ModelHelper
from tensorboardX import SummaryWriter
from utils.criterion_helper import build_criterion
from utils.lr_helper import get_scheduler
from utils.optimizer_helper import get_optimizer


def main():
    raise RuntimeError("needs torch.distributed and LOCAL_RANK")


def train_one_epoch(train_loader, model, optimizer, lr_scheduler, epoch, start_iter, tb_logger,
                    criterion, frozen_layers):
    model.train()
    for layer in frozen_layers:
        module = getattr(model.module, layer)
        module.eval()
        for param in module.parameters():
            param.requires_grad = False
    world_size, rank = dist.get_world_size(), dist.get_rank()
    for i, input in enumerate(train_loader):
        outputs = model(input)
        loss = 0
        for name, criterion_loss in criterion.items():
            loss += criterion_loss.weight * criterion_loss(outputs)
        reduced_loss = loss.clone()
        dist.all_reduce(reduced_loss)
        optimizer.zero_grad()
        loss.backward()
        if config.trainer.get("clip_max_norm", None):
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.trainer.clip_max_norm)
        optimizer.step()
        if (start_iter + i + 1) % config.trainer.print_freq_step == 0 and rank == 0:
            tb_logger.add_scalar("loss_train", reduced_loss.item() / world_size, start_iter + i)
""",
    "models/model_helper.py": """
import importlib

import torch
import torch.nn as nn


class ModelHelper(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.frozen_layers = []
        for cfg_subnet in cfg:
            kwargs = cfg_subnet["kwargs"]
            if cfg_subnet.get("frozen", False):
                self.frozen_layers.append(cfg_subnet["name"])
            if cfg_subnet.get("prev", None) is not None:
                prev_module = getattr(self, cfg_subnet["prev"])
                kwargs["inplanes"] = prev_module.get_outplanes()
                kwargs["instrides"] = prev_module.get_outstrides()
            module_name, cls_name = cfg_subnet["type"].rsplit(".", 1)
            cls = getattr(importlib.import_module(module_name), cls_name)
            self.add_module(cfg_subnet["name"], cls(**kwargs))

    def forward(self, input):
        assert input["image"].device == self.device
        for submodule in self.children():
            input.update(submodule(input))
        return input

    def train(self, mode=True):
        self.training = mode
        for mname, module in self.named_children():
            module.train(mode and mname not in self.frozen_layers)
        return self
""",
    "models/backbones/__init__.py": """
from torch import nn

backbone_info = {
    "efficientnet_b0": {"layers": [1, 2], "blocks": [0, 1], "planes": [4, 8], "strides": [8, 16]},
}


class EfficientNet(nn.Module):
    def __init__(self, outblocks, outstrides):
        super().__init__()
        self.outblocks, self.outstrides = outblocks, outstrides
        self.blocks = nn.ModuleList([nn.Conv2d(3, 4, 8, stride=8), nn.Conv2d(4, 8, 2, stride=2)])

    def forward(self, inputs):
        x, feats = inputs["image"], []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return {"features": [feats[i] for i in self.outblocks]}

    def get_outplanes(self):
        return [4, 8]

    def get_outstrides(self):
        return self.outstrides


def efficientnet_b0(pretrained, outblocks, outstrides, pretrained_model=""):
    assert not pretrained, "the fake has no weights to download"
    return EfficientNet(outblocks, outstrides)
""",
    "models/necks/__init__.py": """
import torch
import torch.nn as nn
import torch.nn.functional as F


class MFCN(nn.Module):
    def __init__(self, inplanes, outplanes, instrides, outstrides):
        super().__init__()
        self.outplanes, self.outstrides = outplanes, outstrides
        self.scale_factors = [s / outstrides[0] for s in instrides]

    def forward(self, input):
        features = [F.interpolate(f, scale_factor=s, mode="bilinear")
                    for f, s in zip(input["features"], self.scale_factors)]
        return {"feature_align": torch.cat(features, dim=1)}

    def get_outplanes(self):
        return self.outplanes

    def get_outstrides(self):
        return self.outstrides
""",
    "models/reconstructions/__init__.py": """
import random

import torch
from torch import nn


class UniAD(nn.Module):
    def __init__(self, inplanes, instrides, feature_size, feature_jitter, hidden_dim, dropout,
                 **kwargs):
        super().__init__()
        self.feature_jitter = feature_jitter
        self.input_proj = nn.Linear(inplanes[0], hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output_proj = nn.Linear(hidden_dim, inplanes[0])
        self.upsample = nn.UpsamplingBilinear2d(scale_factor=instrides[0])

    def forward(self, input):
        feature_align = input["feature_align"]
        tokens = feature_align.permute(0, 2, 3, 1)
        if self.training and random.uniform(0, 1) <= self.feature_jitter.prob:
            jitter = torch.randn(tokens.shape).cuda()
            tokens = tokens + jitter * self.feature_jitter.scale / tokens.shape[-1]
        rec = self.output_proj(self.dropout(self.input_proj(tokens))).permute(0, 3, 1, 2)
        pred = torch.sqrt(torch.sum((rec - feature_align) ** 2, dim=1, keepdim=True))
        return {"feature_rec": rec, "feature_align": feature_align, "pred": self.upsample(pred)}
""",
    "utils/misc_helper.py": """
import importlib


def update_config(config):
    input_size = config.dataset.input_size
    outstride = config.net[1].kwargs.outstrides[0]
    config.net[2].kwargs.feature_size = [s // outstride for s in input_size]
    backbone_path, backbone_type = config.net[0].type.rsplit(".", 1)
    backbone = getattr(importlib.import_module(backbone_path), "backbone_info")[backbone_type]
    idx = [backbone["layers"].index(layer) for layer in config.net[0].kwargs.pop("outlayers")]
    config.net[0].kwargs.outblocks = [backbone["blocks"][i] for i in idx]
    config.net[0].kwargs.outstrides = [backbone["strides"][i] for i in idx]
    config.net[1].kwargs.outplanes = [sum(backbone["planes"][i] for i in idx)]
    return config
""",
    "utils/eval_helper.py": """
import numpy as np
import torch
import torch.nn.functional as F


class EvalImageMean:
    @staticmethod
    def encode_pred(preds):
        return preds.reshape(len(preds), -1).mean(axis=1)


class EvalImageStd:
    @staticmethod
    def encode_pred(preds):
        return preds.reshape(len(preds), -1).std(axis=1)


class EvalImageMax:
    @staticmethod
    def encode_pred(preds, avgpool_size):
        preds = torch.tensor(preds[:, None, ...]).cuda()
        preds = F.avg_pool2d(preds, avgpool_size, stride=1).cpu().numpy()
        return preds.reshape(len(preds), -1).max(axis=1)
""",
    "utils/criterion_helper.py": """
import torch.nn as nn


class FeatureMSELoss(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.criterion_mse = nn.MSELoss()
        self.weight = weight

    def forward(self, input):
        return self.criterion_mse(input["feature_rec"], input["feature_align"])


def build_criterion(config):
    return {cfg["name"]: globals()[cfg["type"]](**cfg["kwargs"]) for cfg in config}
""",
    "utils/optimizer_helper.py": """
import torch


def get_optimizer(parameters, config):
    return getattr(torch.optim, config.type)(parameters, **config.kwargs)
""",
    "utils/lr_helper.py": """
import torch


def get_scheduler(optimizer, config):
    return torch.optim.lr_scheduler.StepLR(optimizer, **config.kwargs)
""",
}

FAKES = {"rd4ad": RD4AD, "kdad": KDAD, "meanshift": MEANSHIFT, "uniad": UNIAD}
SETTINGS = {
    "rd4ad": {"backbone": "resnet18", "image_size": 32},
    "kdad": {"image_size": 32},
    "meanshift": {"backbone": "resnet18"},
    "uniad": {
        "backbone": "tf_efficientnet_b0",
        "outlayers": [1, 2],
        "image_size": 128,
        "hidden_dim": 16,
        "nhead": 2,
        "lr_step_size": 2,
    },
}


class _Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )


def tiny_backbone(name: str, *, pretrained: bool) -> nn.Module:
    """Small stand-ins with the real backbones' layout: torchvision's ResNet class (one block per
    stage) for the ResNets, a two-stage ``features`` stack for VGG-16."""
    assert not pretrained
    return _Features() if name == "vgg16" else ResNet(BasicBlock, [1, 1, 1, 1])


@pytest.fixture(autouse=True)
def _tiny_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "torchvision_backbone", tiny_backbone)


def fake_repo(name: str, root: Path) -> Path:
    """A fake official repository of baseline ``name`` and its fetch record."""
    folder = root / name
    for rel, text in FAKES[name].items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text.lstrip())
    record = root / f"{name}.json"
    record.write_text(json.dumps({"path": str(folder), "commit": COMMIT}))
    return record


def layers(name: str, **settings: object) -> list[dict]:
    section = {"impl": "official", "pretrained": False, "epochs": 3, "batch_size": 5}
    return [{name: {**section, "eval_every_epochs": 2, **SETTINGS[name], **settings}}]


def train(name: str, record: Path, state_dir: Path, **settings: object) -> tuple:
    return train_baseline(
        name,
        noise_prepared(),
        views=None,
        state_dir=state_dir,
        preset="dia_code",
        layers=layers(name, **settings),
        seed=0,
        device="cpu",
        official=record,
    )


@pytest.mark.parametrize("name", ["rd4ad", "kdad", "meanshift", "uniad"])
def test_official_baseline_trains_scores_and_records_the_commit(name: str, tmp_path: Path) -> None:
    record = fake_repo(name, tmp_path)
    model, state, config = train(name, record, tmp_path / "state")
    assert [row["epoch"] for row in state.log] == [1, 2, 3]
    assert state.step == 9  # 12 images in batches of 5, the last partial one kept
    assert all(np.isfinite(row["loss"]) for row in state.log)
    assert [e for e, _ in state.evals] == [2]
    assert config["official_commit"] == COMMIT
    assert config[name]["impl"] == "official"
    ckpt = {"model_name": name, "config": config, "model": model.state_dict()}
    scores, meta = score_baseline(ckpt, noise_prepared(), "cpu", None, official=record)
    assert {k: v.shape for k, v in scores.items()} == {"val": (8,), "test": (8,)}
    assert all(np.isfinite(v).all() for v in scores.values())
    assert meta["official_commit"] == COMMIT
    ckpt["config"] = {**config, "official_commit": "f" * 40}
    with pytest.raises(DiaError, match="retrain it"):
        score_baseline(ckpt, noise_prepared(), "cpu", None, official=record)


@pytest.mark.parametrize("name", ["kdad", "meanshift", "uniad"])
def test_driven_official_loop_resumes_at_an_epoch_end(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun after a crash in epoch 2 continues from epoch 1's checkpoint (weights, optimiser,
    RNGs) and ends with the uninterrupted run's weights."""
    record = fake_repo(name, tmp_path)
    whole = train(name, record, tmp_path / "whole")[0]
    crashed = tmp_path / "crashed"
    real_end = adapters._Epochs.end

    def crash_in_epoch_two(self: adapters._Epochs, loss: float) -> None:
        if self.state.epoch == 1:
            raise RuntimeError("simulated crash")
        real_end(self, loss)

    monkeypatch.setattr(adapters._Epochs, "end", crash_in_epoch_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(name, record, crashed)
    monkeypatch.setattr(adapters._Epochs, "end", real_end)
    model, state, _ = train(name, record, crashed)
    assert [row["epoch"] for row in state.log] == [1, 2, 3]
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_official_run_starts_from_the_native_models_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeded alike, the official and native Mean-Shift draw the same (random) ResNet-18."""
    monkeypatch.setattr(adapters, "torchvision_backbone", torchvision_backbone)
    folder = Path(json.loads(fake_repo("meanshift", tmp_path).read_text())["path"])
    cfg = resolve("meanshift", "dia_code", layers("meanshift"))
    torch.manual_seed(3)
    official = adapters.ADAPTERS["meanshift"](cfg, folder)
    torch.manual_seed(3)
    native = build_baseline("meanshift", cfg)
    for key, value in native.backbone.state_dict().items():
        torch.testing.assert_close(official.net.backbone.state_dict()[key], value, msg=key)


def test_settings_the_official_code_hard_codes_are_refused(tmp_path: Path) -> None:
    record = fake_repo("meanshift", tmp_path)
    with pytest.raises(DiaError) as error:
        train("meanshift", record, tmp_path, image_size=64, temperature=0.5)
    assert "meanshift.image_size: 64 (official: 224)" in str(error.value)
    assert "meanshift.temperature: 0.5 (official: 0.25)" in str(error.value)
    kdad = fake_repo("kdad", tmp_path)
    with pytest.raises(DiaError, match=r"kdad\.score_pools: \(2, 3\)"):
        train("kdad", kdad, tmp_path, score_pools=[2, 3])


def test_missing_repository_or_snapshot_stops_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(DiaError, match="no official repository was given; run it through"):
        train("rd4ad", None, tmp_path)
    record = tmp_path / "gone.json"
    record.write_text(json.dumps({"path": str(tmp_path / "gone"), "commit": COMMIT}))
    with pytest.raises(DiaError, match=r"snapshot .*gone .* is missing"):
        train("rd4ad", record, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the official KDAD code may use this GPU")
def test_kdad_official_refuses_a_device_its_cuda_calls_would_not_use(tmp_path: Path) -> None:
    with pytest.raises(DiaError, match="runs on cpu"):
        train_baseline(
            "kdad",
            noise_prepared(),
            views=None,
            state_dir=tmp_path,
            preset="dia_code",
            layers=layers("kdad"),
            seed=0,
            device="cuda",
            official=fake_repo("kdad", tmp_path),
        )


def test_impl_is_a_baseline_setting() -> None:
    assert config_class("rd4ad")().impl == "native"
    with pytest.raises(DiaError, match=r"rd4ad\.impl: 'offical' is not one of native, official"):
        resolve("rd4ad", "dia_code", [{"rd4ad": {"impl": "offical"}}])


def test_plan_pairs_official_baselines_and_names_their_repositories() -> None:
    plan = Plan(PARITY)
    for name, repo in [
        ("rd4ad", "hq-deng__RD4AD"),
        ("kdad", "rohban-lab__Knowledge_Distillation_AD"),
        ("meanshift", "talreiss__Mean-Shifted-Anomaly-Detection"),
        ("uniad", "zhiyuanyou__UniAD"),
    ]:
        assert plan.parity_pairs[f"{name}_official"] == name
        assert plan.official_repo("phantom", f"{name}_official") == repo
        assert plan.official_repo("phantom", name) is None


def with_methods(methods: dict, **changes: object) -> dict:
    return {**PARITY, "methods": methods, **changes}


def test_plan_pairs_only_identical_settings() -> None:
    methods = {
        "rd4ad": {"model": "rd4ad", "rd4ad": {"epochs": 2}},
        "rd4ad_official": {"model": "rd4ad", "rd4ad": {"impl": "official"}},
        "kdad": {"model": "kdad"},
        "kdad_official": {"model": "kdad", "kdad": {"impl": "official"}, "rd4ad": {}},
    }
    assert Plan(with_methods(methods)).parity_pairs == {"kdad_official": "kdad"}


@pytest.mark.parametrize(
    ("methods", "error"),
    [
        ({"x": {"model": "rd4ad", "rd4ad": {"impl": "offical"}}}, r"rd4ad\.impl 'offical'"),
        (
            {"x": {"model": "transformaly", "transformaly": {"impl": "official"}}},
            "transformaly has no impl: official",
        ),
    ],
)
def test_plan_refuses_an_unknown_or_unavailable_impl(methods: dict, error: str) -> None:
    with pytest.raises(DiaError, match=rf"methods\.x: {error}"):
        Plan(with_methods(methods))


def test_plan_refuses_an_official_baseline_without_its_pin() -> None:
    repos = {k: v for k, v in PARITY["official_repos"].items() if k != "hq-deng__RD4AD"}
    config = with_methods(
        {"x": {"model": "rd4ad", "rd4ad": {"impl": "official"}}}, official_repos=repos
    )
    with pytest.raises(DiaError, match=r"methods\.x runs the official code: pin official_repos\."):
        Plan(config)


def test_an_impl_set_for_every_method_applies_to_each_run() -> None:
    config = with_methods({"rd4ad": {"model": "rd4ad"}}, rd4ad={"impl": "official"})
    plan = Plan(config)
    assert plan.official_repo("phantom", "rd4ad") == "hq-deng__RD4AD"
    assert plan.parity_pairs == {}


def test_the_plan_knows_exactly_the_baselines_with_an_adapter() -> None:
    """The torch-free plan's list of official code and the adapters agree."""
    assert set(OFFICIAL_CODE) - {"contrastive"} == set(adapters.ADAPTERS)
