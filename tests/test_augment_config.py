"""Presets equal the spec's tables; bad settings are refused at configuration time."""

import json

import pytest

from ipmix_cli.augment import AugmentConfig, resolve_config
from ipmix_cli.common.errors import IpmixError

IPMIX_OPS = ["equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x",
             "translate_y", "mirror", "invert"]
EXTRA = ["autocontrast", "color", "contrast", "brightness", "sharpness"]


def test_cifar_preset_is_the_spec_table():
    cfg = resolve_config("cifar")
    assert (cfg.image_size, cfg.width, cfg.depth, cfg.min_ops) == (32, 3, 3, 0)
    assert (cfg.severity, cfg.beta) == (3.0, 3.0)
    assert cfg.patch_sizes == (4, 8, 16, 32)
    assert cfg.partner == "fractal" and cfg.overflow == "clip"
    assert cfg.crop == "pad" and cfg.mixing_size == 36
    assert list(cfg.ops) == IPMIX_OPS and cfg.views == 1


def test_imagenet_preset_is_the_spec_table():
    cfg = resolve_config("imagenet", views=3)
    assert (cfg.image_size, cfg.width, cfg.depth, cfg.min_ops) == (224, 3, 3, 0)
    assert (cfg.severity, cfg.beta) == (1.0, 4.0)
    assert cfg.patch_sizes == (4, 8, 16, 32, 64, 224)
    assert cfg.partner == "mixed" and cfg.crop == "random-resized" and cfg.mixing_size == 256
    assert list(cfg.ops) == IPMIX_OPS and cfg.views == 3


def test_recipes_and_options():
    assert list(resolve_config("cifar", all_ops=True).ops) == IPMIX_OPS + EXTRA
    augmix = resolve_config("cifar", "augmix")
    assert list(augmix.ops) == ["autocontrast", "equalize", "posterize", "rotate", "solarize",
                                "shear_x", "shear_y", "translate_x", "translate_y"]
    assert augmix.min_ops == 1 and augmix.width == 3 and augmix.severity == 3.0
    assert list(resolve_config("cifar", "augmix", all_ops=True).ops) == list(augmix.ops) + EXTRA[1:]
    pixmix = resolve_config("cifar", "pixmix")  # PixMix's cifar.py: AugMix's 9 ops, or 13 with --all-ops
    assert pixmix.width == 4 and pixmix.ops == augmix.ops and pixmix.beta == 3.0 and pixmix.severity == 3.0
    assert list(resolve_config("cifar", "pixmix", all_ops=True).ops) == list(augmix.ops) + EXTRA[1:]
    pixmix224 = resolve_config("imagenet", "pixmix")
    assert (pixmix224.width, pixmix224.beta, pixmix224.severity, pixmix224.ops) == (4, 4.0, 1.0, augmix.ops)
    assert resolve_config("cifar", "none").views == 1
    cfg = resolve_config("cifar", min_ops=1, partner="mixed", overflow="wrap", patch_sizes="4,32",
                         ops=["rotate", "invert"], severity=None)
    assert (cfg.min_ops, cfg.partner, cfg.overflow, cfg.patch_sizes, cfg.ops, cfg.severity) == \
        (1, "mixed", "wrap", (4, 32), ("rotate", "invert"), 3.0)
    small = resolve_config("imagenet", image_size=64)
    assert small.patch_sizes == (4, 8, 16, 32, 64) and small.mixing_size == 73


def test_to_dict_round_trips_through_json():
    for cfg in (resolve_config("cifar"), resolve_config("imagenet", "pixmix", views=3, overflow="wrap")):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert AugmentConfig.from_dict(d) == cfg
        assert AugmentConfig.from_dict(d).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("kwargs, message", [
    ({"patch_sizes": [4, 64]}, "patch size 64 is larger"),
    ({"width": 0}, "width k must be at least 1"),
    ({"depth": -1}, "depth t must be 0 or more"),
    ({"severity": 0}, "severity must be in (0, 10]"),
    ({"severity": 10.5}, "severity must be in (0, 10]"),
    ({"beta": 0}, "beta must be greater than 0"),
    ({"beta": -2}, "beta must be greater than 0"),
    ({"ops": "rotate,blur"}, "unknown op 'blur'"),
    ({"views": 2}, "views must be 1"),
    ({"recipe": "none", "views": 3}, "recipe 'none' makes no augmented views"),
    ({"preset": "mnist"}, "unknown preset"),
    ({"recipe": "cutmix"}, "unknown recipe"),
    ({"overflow": "saturate"}, "unknown overflow"),
    ({"partner": "noise"}, "unknown P-chain partner"),
    ({"min_ops": 2}, "min_ops must be 0"),
    ({"colour": 1}, "unknown augmentation option"),
    ({"width": "three"}, "bad augmentation option"),
    ({"mixing_size": 20}, "mixing size 20 is below"),
    ({"patch_sizes": "4,abc"}, "cannot read '4,abc' as a comma-separated list of whole numbers"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(IpmixError) as err:
        resolve_config(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_from_dict_rejects_unknown_and_missing_keys():
    d = resolve_config("cifar").to_dict()
    with pytest.raises(IpmixError, match="unknown augmentation setting"):
        AugmentConfig.from_dict({**d, "foo": 1})
    d.pop("beta")
    with pytest.raises(IpmixError, match="lack: beta"):
        AugmentConfig.from_dict(d)
    with pytest.raises(IpmixError, match="severity"):
        AugmentConfig.from_dict({**resolve_config("cifar").to_dict(), "severity": 11})


def test_dataset_card_names_the_authors_code_and_settings(tmp_path):
    from ipmix_cli.shards.card import render_card
    from tests._shards_tools_helpers import make_shards

    m = make_shards(tmp_path, shards=1, per_shard=2, pads=0)
    expected = {
        ("ipmix", None): ("hzlsaber/IPMix @ 050bcb6", "10 ops", "no autocontrast"),
        ("ipmix", True): ("hzlsaber/IPMix @ 050bcb6", "15 ops", "autocontrast cutoff 10 - level %"),
        ("augmix", None): ("google-research/augmix @ 9b9824c", "9 ops", "autocontrast cutoff 0"),
        ("pixmix", None): ("andyzoujm/pixmix @ f867e87", "9 ops", "autocontrast cutoff 0"),
        ("pixmix", True): ("andyzoujm/pixmix @ f867e87", "13 ops", "autocontrast cutoff 0"),
    }
    for (recipe, all_ops), words in expected.items():
        m["config"]["augment"] = resolve_config("cifar", recipe, all_ops=all_ops).to_dict()
        line = next(row for row in render_card(m).splitlines() if row.startswith("| augmentation |"))
        assert all(w in line for w in words), line
        assert ("mirror" in line) == (recipe == "ipmix")
