"""Image classifiers the training loop knows by name.

- ``resnet18``: the CIFAR variant (3×3 stride-1 stem, no max-pool), for 32 px.
- ``wrn-D-K``: Wide ResNet of depth D and widen factor K with pre-activation blocks and
  dropout 0.3 between the two convolutions (``wrn-40-4`` is the CIFAR default; ``wrn-16-2``
  is a smaller one).
- ``resnet50``: the ImageNet ResNet-50 (7×7 stride-2 stem + max-pool, bottlenecks), for 224 px.
- ``small-cnn``: four conv-BN-ReLU layers; trains on 32 px digits on a CPU in seconds (demo, tests).
- ``torchvision:NAME`` / ``timm:NAME``: any architecture those libraries list, when they import.

ipmix's ResNets use torchvision's parameter names; the CIFAR ResNet-18 stem and the Wide ResNets
are the IPMix paper's CIFAR models.

``build_model(name, num_classes, image_size)`` returns a fresh ``nn.Module`` whose forward takes
normalised float images [B, 3, S, S] and returns logits [B, num_classes].
"""

from __future__ import annotations

import importlib
import io
import json
import re
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from ipmix_cli.common.errors import IpmixError, OptionError


# ---------------------------------------------------------------- ResNet (CIFAR and ImageNet)
# Module names follow torchvision's ResNet (conv1, bn1, layer1..layer4, downsample, fc), so a
# state_dict moves between ipmix and `torchvision.models.resnet50(num_classes=K)` unchanged.
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _projection(cin, width, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


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
        self.downsample = _projection(cin, cout, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _projection(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes: int, imagenet_stem: bool):
        super().__init__()
        if imagenet_stem:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet_stem else nn.Identity()
        cin = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for j in range(blocks):
                stage.append(block(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each residual branch: every block starts as the identity.
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)

    def stem(self, x):
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
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
MODEL_NAMES = ("resnet18", "wrn-40-4", "wrn-D-K", "resnet50", "small-cnn", "torchvision:NAME", "timm:NAME")
LIBRARIES = ("torchvision", "timm")  # --model LIBRARY:NAME builds that library's architecture


def canonical_name(name: str) -> str:
    library, _, arch = str(name).strip().partition(":")
    if arch and library.lower() in LIBRARIES:
        return f"{library.lower()}:{arch.strip()}"
    key = str(name).strip().lower().replace("_", "-")
    return {"resnet-18": "resnet18", "resnet-50": "resnet50", "smallcnn": "small-cnn"}.get(key, key)


def _is_library_model(key: str) -> bool:
    return key.partition(":")[0] in LIBRARIES and ":" in key


def _library(name: str):
    """The module of torchvision or timm; IpmixError naming the package when it does not import."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # missing, or installed for another torch (then it fails inside)
        why = "is not installed" if isinstance(exc, ModuleNotFoundError) and exc.name == name \
            else f"cannot be imported ({type(exc).__name__})"
        raise OptionError("{model} {library}:NAME needs {library}, which {why}; install a build that matches "
                          "torch {torch}: pip install {library}", library=name, why=why,
                          torch=torch.__version__) from None


def _check_library_model(key: str) -> None:
    library, arch = key.split(":", 1)
    module = _library(library)
    known = module.models.list_models() if library == "torchvision" else module.list_models()
    if arch not in known:
        raise IpmixError(f"{library} has no model {arch!r} (see {library}'s list_models())")


def _build_library_model(key: str, num_classes: int) -> nn.Module:
    library, arch = key.split(":", 1)
    module = _library(library)
    if library == "torchvision":
        return module.models.get_model(arch, weights=None, num_classes=num_classes)
    return module.create_model(arch, pretrained=False, num_classes=num_classes)


def check_model_name(name: str) -> str:
    """The canonical name, or IpmixError for a name the registry does not know."""
    key = canonical_name(name)
    wrn = _WRN.match(key)
    if _is_library_model(key):
        _check_library_model(key)
    elif wrn:
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
    if _is_library_model(key):
        return _build_library_model(key, int(num_classes))
    wrn = _WRN.match(key)
    if wrn:
        depth, widen = int(wrn.group(1)), int(wrn.group(2))
        builder, min_size = (lambda k: WideResNet(depth, widen, k, dropout=0.3)), 4
    else:
        builder, min_size, _ = _FIXED[key]
    if int(image_size) < min_size:
        raise IpmixError(f"model {key} needs images of at least {min_size} px, got {image_size}")
    return builder(int(num_classes))


# ---------------------------------------------------------------- trained weights to take away
WEIGHTS_NAME, INFO_NAME = "model.pt", "model.json"
INFO_KEYS = ("model", "num_classes", "image_size", "mean", "std", "classes")


def save_trained(run, net: nn.Module, info: dict) -> None:
    """RUN/model.pt (a plain state_dict, CPU tensors, no `module.` prefix) and RUN/model.json
    (what `load_trained` needs to rebuild the network: the INFO_KEYS and input size)."""
    from fractalgen.files import atomic_write_bytes, atomic_write_json

    run = Path(run)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(run / WEIGHTS_NAME, buffer.getbuffer())
    size = int(info["image_size"])
    atomic_write_json(run / INFO_NAME, {"format": "ipmix-model", "version": 1,
                                        **{k: info.get(k) for k in INFO_KEYS}, "input_size": [3, size, size],
                                        "weights": WEIGHTS_NAME})


def load_trained(run_or_weights, device="cpu") -> tuple[nn.Module, dict]:
    """(network in eval mode on `device`, model.json's dict) from a run directory or its model.pt."""
    path = Path(run_or_weights)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    info_file = weights.parent / INFO_NAME
    for needed in (weights, info_file):
        if not needed.is_file():
            raise IpmixError(f"no {needed.name} at {needed.parent} (written by `ipmix train`)")
    try:
        info = json.loads(info_file.read_text())
        missing = [k for k in INFO_KEYS if k not in info]
    except (ValueError, TypeError):
        info, missing = None, ["(not JSON)"]
    if missing:
        raise IpmixError(f"{info_file} is not an ipmix model description (missing {', '.join(missing)})")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IpmixError(f"cannot read {weights}: not a complete torch file ({type(exc).__name__})") from None
    net = build_model(info["model"], info["num_classes"], info["image_size"])
    load_weights(net, state, weights)
    return net.to(device).eval(), info


def load_weights(net: nn.Module, state, where) -> None:
    """net.load_state_dict(state), with a one-line IpmixError when the weights do not fit."""
    if not isinstance(state, dict):
        raise IpmixError(f"{where} does not hold a state_dict")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise IpmixError(f"the weights in {where} do not fit the network: {first[0].strip()}") from None


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


def to_model_input(images: torch.Tensor, dev, mean, std, channels_last: bool) -> torch.Tensor:
    """uint8 [B, V, 3, S, S] → normalised float [V·B, 3, S, S], view-major (all clean rows first)."""
    x = images.to(dev, non_blocking=True)
    x = x.transpose(0, 1).reshape(-1, *x.shape[2:])
    x = normalise(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


__all__ = ["build_model", "check_model_name", "count_parameters", "normalisation", "normalise", "MODEL_NAMES",
           "canonical_name", "load_trained", "save_trained", "load_weights", "to_model_input"]
