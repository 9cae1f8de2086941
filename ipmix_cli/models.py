"""Image classifiers the training loop knows by name.

- ``resnet18``: the CIFAR variant (3×3 stride-1 stem, no max-pool), for 32 px.
- ``wrn-D-K``: Wide ResNet of depth D and widen factor K with pre-activation blocks and
  dropout 0.3 between the two convolutions (``wrn-40-4`` is the CIFAR default; ``wrn-16-2``
  is a smaller one).
- ``resnet50``: the ImageNet ResNet-50 (7×7 stride-2 stem + max-pool, bottlenecks), for 224 px.
- ``small-cnn``: four conv-BN-ReLU layers; trains on 32 px digits on a CPU in seconds (demo, tests).

``build_model(name, num_classes, image_size)`` returns a fresh ``nn.Module`` whose forward takes
normalised float images [B, 3, S, S] and returns logits [B, num_classes].
"""

from __future__ import annotations

import re

import torch
from torch import nn
import torch.nn.functional as F

from ipmix_cli.errors import IpmixError


# ---------------------------------------------------------------- ResNet (CIFAR and ImageNet)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = _projection(cin, width, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3×3 (v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _projection(cin, cout, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _projection(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes: int, imagenet_stem: bool):
        super().__init__()
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(inplace=True))
        stages, cin = [], 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(block(cin, width, stride))
                cin = width * block.expansion
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each residual branch: every block starts as the identity.
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- Wide ResNet
class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3×3-dropout-BN-ReLU-conv3×3, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = F.dropout(F.relu(self.bn2(out)), p=self.dropout, training=self.training)
        out = self.conv2(out)
        # With a projection the shortcut sees the pre-activated input (as in the WRN paper's code).
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, dropout: float = 0.3):
        super().__init__()
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for g, cout in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(cin, cout, 2 if (g > 0 and j == 0) else 1, dropout))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- small CNN (demo, tests)
class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        layers, cin = [], 3
        for cout, stride in ((width, 1), (width * 2, 2), (width * 2, 1), (width * 4, 2)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ---------------------------------------------------------------- registry
# name → (builder(num_classes), smallest image side the network can take, image size it is for)
_FIXED = {
    "resnet18": (lambda k: ResNet(BasicBlock, (2, 2, 2, 2), k, imagenet_stem=False), 8, 32),
    "resnet50": (lambda k: ResNet(Bottleneck, (3, 4, 6, 3), k, imagenet_stem=True), 32, 224),
    "small-cnn": (lambda k: SmallCNN(k), 4, 32),
}
_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
MODEL_NAMES = ("resnet18", "wrn-40-4", "wrn-D-K", "resnet50", "small-cnn")


def canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    return {"resnet-18": "resnet18", "resnet-50": "resnet50", "smallcnn": "small-cnn"}.get(key, key)


def check_model_name(name: str) -> str:
    """The canonical name, or IpmixError for a name the registry does not know."""
    key = canonical_name(name)
    wrn = _WRN.match(key)
    if wrn:
        depth, widen = int(wrn.group(1)), int(wrn.group(2))
        if depth < 10 or (depth - 4) % 6 or widen < 1:
            raise IpmixError(f"bad Wide ResNet {name!r}: depth must be 6n+4 (10, 16, 28, 40, ...) "
                             "and width at least 1, e.g. wrn-40-4")
    elif key not in _FIXED:
        raise IpmixError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return key


def build_model(name: str, num_classes: int, image_size: int = 32) -> nn.Module:
    """A freshly initialised model; IpmixError for an unknown name or an impossible size."""
    key = check_model_name(name)
    if int(num_classes) < 2:
        raise IpmixError(f"a classifier needs at least 2 classes, got {num_classes}")
    wrn = _WRN.match(key)
    if wrn:
        depth, widen = int(wrn.group(1)), int(wrn.group(2))
        builder, min_size = (lambda k: WideResNet(depth, widen, k, dropout=0.3)), 4
    else:
        builder, min_size, _ = _FIXED[key]
    if int(image_size) < min_size:
        raise IpmixError(f"model {key} needs images of at least {min_size} px, got {image_size}")
    return builder(int(num_classes))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def normalisation(image_size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std: CIFAR-style 0.5/0.5 for small images, ImageNet's for large."""
    if image_size >= 64:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def normalise(x_uint8: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    """uint8 [..., 3, H, W] on any device → normalised float."""
    x = x_uint8.to(dtype).div_(255.0)
    m = torch.tensor(mean, dtype=dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


__all__ = ["build_model", "check_model_name", "count_parameters", "normalisation", "normalise", "MODEL_NAMES",
           "canonical_name"]
