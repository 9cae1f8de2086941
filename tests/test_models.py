import sys

import pytest
import torch

from ipmix_cli.common.errors import IpmixError
from _torchvision_resnet import torchvision_resnet_state_shapes
from ipmix_cli.train.models import build_model, check_model_name, count_parameters, normalisation, normalise


@pytest.mark.parametrize("classes", [1000, 10])
def test_resnet50_has_torchvisions_parameter_names_and_shapes(classes):
    state = build_model("resnet50", classes, 224).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == torchvision_resnet_state_shapes((3, 4, 6, 3), 4, classes)


def test_resnet50_strides_where_torchvision_does():
    # torchvision's v1.5 bottleneck: stride on the 3x3 conv2 and on downsample.0, not on conv1.
    model = build_model("resnet50", 10, 224)
    first = model.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2) and first.downsample[0].stride == (2, 2)
    assert model.conv1.stride == (2, 2) and model.conv1.padding == (3, 3)


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_a_library_model_without_its_package_is_one_line_naming_it(library, monkeypatch):
    monkeypatch.setitem(sys.modules, library, None)  # how Python itself blocks an import
    with pytest.raises(IpmixError, match=rf"needs {library}, which is not installed.*pip install {library}$") as err:
        check_model_name(f"{library}:resnet50")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name,classes,params", [
    # Parameter counts published for these architectures (CIFAR ResNet-18 11.17 M, WRN-40-4 8.9 M,
    # torchvision's ResNet-50 25,557,032 with 1000 classes).
    ("resnet18", 10, 11_173_962),
    ("wrn-40-4", 10, 8_949_210),
    ("resnet50", 1000, 25_557_032),
])
def test_reference_architectures_have_their_published_sizes(name, classes, params):
    assert count_parameters(build_model(name, classes, 224 if name == "resnet50" else 32)) == params


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("wrn-16-2", 32), ("small-cnn", 32), ("resnet50", 64),
                                       ("ResNet-18", 16), ("WRN_10_1", 8)])
def test_forward_gives_logits_per_class(name, size):
    torch.manual_seed(0)
    model = build_model(name, 7, size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_resnet18_cifar_stem_keeps_resolution_and_resnet50_downsamples():
    r18 = build_model("resnet18", 10, 32)
    assert r18.conv1.kernel_size == (3, 3) and r18.conv1.stride == (1, 1)
    stem = r18.stem(torch.zeros(1, 3, 32, 32))
    assert stem.shape[-1] == 32  # 3x3 stride-1 stem, no max-pool
    r50 = build_model("resnet50", 10, 224)
    assert r50.stem(torch.zeros(1, 3, 224, 224)).shape[-1] == 56  # 7x7/2 + max-pool


def test_wide_resnet_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = build_model("wrn-10-1", 10, 32)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert all(b.dropout == 0.3 for b in model.blocks)


@pytest.mark.parametrize("name,message", [("vgg16", "unknown model"), ("torch:resnet50", "unknown model"), ("wrn-41-4", r"6n\+4"),
                                          ("wrn-40-0", r"6n\+4")])
def test_bad_model_names_are_one_line_errors(name, message):
    with pytest.raises(IpmixError, match=message):
        build_model(name, 10, 32)


def test_too_small_images_and_too_few_classes_are_refused():
    with pytest.raises(IpmixError, match="at least 32 px"):
        build_model("resnet50", 10, 16)
    with pytest.raises(IpmixError, match="2 classes"):
        build_model("small-cnn", 1, 32)


def test_normalisation_by_image_size():
    assert normalisation(32) == ((0.5,) * 3, (0.5,) * 3)
    mean, std = normalisation(224)
    assert mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225)
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2).expand(3, 1, 2)
    y = normalise(x, *normalisation(32))
    assert torch.allclose(y, torch.tensor([-1.0, 1.0]).view(1, 1, 2).expand(3, 1, 2))
    z = normalise(x, mean, std)
    assert torch.allclose(z[1, 0, 1], torch.tensor((1 - 0.456) / 0.224))
