"""Crop and flip under the user's control: the four crop modes, the flip on or off, recorded in
the manifest and the dataset card, kept on resume, shown in `augment preview`."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from fractalgen.images import resize_center_crop
from ipmix_cli.augment import AugmentConfig, Augmenter, resolve_config
from ipmix_cli.augment.reference import reference_crop
from ipmix_cli.cli.main import run
from ipmix_cli.common.errors import IpmixError
from tests._augment_helpers import make_mixing_folder, sample_images, smooth_image
from tests._shards_build_helpers import write_image_folder, write_mixing_folder

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)

# (preset, crop, image size): each crop mode, at the size its preset trains
MODES = [("cifar", "pad", 32), ("imagenet", "random-resized", 48), ("cifar", "center", 32), ("imagenet", "none", 48)]


def _pictures(size, n=60):
    """Pictures the crops must fit: S x S for pad, other sizes and aspects for the rest."""
    if size == 32:
        return list(sample_images(5, n, 32))
    rs = np.random.default_rng(2)
    shapes = [(60, 80), (48, 48), (100, 37), (53, 64)]
    return [smooth_image(rs, *shapes[i % 4]) for i in range(n)]


def _clean(cfg, pictures, seed=3):
    """The training crops alone (recipe none: crop and flip, no augmentation)."""
    crop_only = dataclasses.replace(cfg, recipe="none", views=1)
    return Augmenter(crop_only, None).make_views(pictures, seed, 0, np.arange(len(pictures)))[:, 0]


@pytest.mark.parametrize("preset, crop, size", MODES)
def test_flip_off_keeps_the_crops_and_undoes_the_flips(preset, crop, size):
    pictures = _pictures(size)
    on = resolve_config(preset, "none", image_size=size, crop=crop)
    off = resolve_config(preset, "none", image_size=size, crop=crop, flip="0")
    assert on.flip is True and off.flip is False and on.crop == off.crop == crop
    with_flip, without = _clean(on, pictures), _clean(off, pictures)
    mirrored = 0
    for a, b, im, i in zip(with_flip, without, pictures, range(len(pictures))):
        assert np.array_equal(b, reference_crop(im, off, 3, 0, i))
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
        mirrored += not np.array_equal(a, b)
    assert 15 <= mirrored <= 45  # the flip is a coin toss per sample (60 samples)


def test_center_and_none_crops_are_pillows_resizes():
    pictures = _pictures(48, 12)
    for crop in ("center", "none"):
        cfg = resolve_config("imagenet", "none", image_size=48, crop=crop, flip=False)
        for got, im in zip(_clean(cfg, pictures), pictures):
            pil = Image.fromarray(im)
            want = resize_center_crop(pil, 48) if crop == "center" else pil.resize((48, 48), Image.BICUBIC, reducing_gap=3.0)
            assert np.array_equal(got, np.asarray(want))
    # decoded pictures and arrays give the same crops
    cfg = resolve_config("imagenet", "none", image_size=48, crop="center")
    assert np.array_equal(_clean(cfg, [Image.fromarray(p) for p in pictures]), _clean(cfg, pictures))


def test_augmented_views_start_from_the_unflipped_crop(tmp_path):
    from ipmix_cli.augment import MixingBank

    cfg = resolve_config("cifar", "ipmix", views=3, flip=0)
    bank = MixingBank.from_folder(make_mixing_folder(tmp_path / "mix"), cfg, cache_dir=tmp_path / "cache")
    images = sample_images(8, 6, 32)
    views = Augmenter(cfg, bank).make_views(images, 1, 0, np.arange(6))
    for i, im in enumerate(images):
        assert np.array_equal(views[i, 0], reference_crop(im, cfg, 1, 0, i))
    flipped = Augmenter(dataclasses.replace(cfg, flip=True), bank).make_views(images, 1, 0, np.arange(6))
    assert not np.array_equal(flipped, views)


def test_crop_and_flip_settings_are_checked_and_recorded():
    with pytest.raises(IpmixError, match="flip takes 0 or 1"):
        resolve_config("cifar", flip="sometimes")
    with pytest.raises(IpmixError, match="unknown crop 'zoom'"):
        resolve_config("cifar", crop="zoom")
    cfg = resolve_config("cifar", crop="none", flip="false")
    d = cfg.to_dict()
    assert (d["crop"], d["flip"]) == ("none", False) and AugmentConfig.from_dict(json.loads(json.dumps(d))) == cfg
    del d["flip"]  # settings written before the flip could be turned off: always flipped
    assert AugmentConfig.from_dict(d).flip is True
    assert resolve_config("imagenet").crop == "random-resized" and resolve_config("cifar").flip is True


def test_a_build_records_crop_and_flip_and_keeps_them_on_resume(tmp_path):
    from ipmix_cli.shards import build_shards
    from ipmix_cli.data.sources import open_source
    from ipmix_cli.shardformat.formats import decode_image
    from tests._shards_tools_helpers import read_tar_members

    folder = write_image_folder(tmp_path / "data", per_class=4, size=44)
    mix = write_mixing_folder(tmp_path / "mix")
    out = tmp_path / "out"
    args = ["shards", "build", "--quiet", "--source", str(folder), "--fractals", str(mix), "--out", str(out),
            "--shards", "2", "--recipe", "none", "--cache-dir", str(tmp_path / "cache")]
    assert run(args + ["--aug", "crop=center", "--aug", "flip=0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["config"]["augment"]["crop"], manifest["config"]["augment"]["flip"]) == ("center", False)
    assert "crop `center` without flip" in (out / "README.md").read_text()
    # every sample is its source picture's centre crop, never mirrored
    source = open_source(str(folder))
    shards = sorted(out.rglob("*.tar"))
    samples = 0
    for shard in shards:
        members = dict(read_tar_members(shard))
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[:-5]
                image_name = next(n for n in members if n.startswith(key + ".") and n.split(".", 1)[1] not in ("cls", "json"))
                want = resize_center_crop(Image.fromarray(source.read(json.loads(data)["index"])), 32)
                assert np.array_equal(decode_image(image_name.split(".", 1)[1], members[image_name]), np.asarray(want))
                samples += 1
    assert samples == manifest["samples_per_epoch"]
    before = {p: p.read_bytes() for p in shards}
    shards[1].unlink()  # an interrupted build: resume it with no options
    build_shards(out=out, progress=False)
    assert {p: p.read_bytes() for p in shards} == before
    assert json.loads((out / "manifest.json").read_text())["config"]["augment"]["flip"] is False
    assert run(args + ["--aug", "crop=center", "--aug", "flip=1"]) == 1  # another flip: refused
    assert {p: p.read_bytes() for p in shards} == before


def test_preview_shows_the_crop_and_flip(tmp_path, capsys):
    mix = make_mixing_folder(tmp_path / "mix")
    inputs = make_mixing_folder(tmp_path / "in", n=2, size=40, seed=3)
    out = tmp_path / "grid.png"
    assert run(["augment", "preview", str(inputs), "--fractals", str(mix), "--out", str(out), "--n", "2",
                "--crop", "center", "--flip", "0", "--zoom", "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    grid = np.asarray(Image.open(out))
    crop = resize_center_crop(Image.open(inputs / "pic-00.png").convert("RGB"), 32)
    assert np.array_equal(grid[2:34, 2:34], np.asarray(crop))  # the first tile is the training crop
