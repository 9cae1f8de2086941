"""The batch API (contract B): shapes, views, determinism, the bank, the reference oracle."""

import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.augment import Augmenter, MixingBank, ipmix_one, resolve_config, view_state
from ipmix_cli.augment.reference import (reference_crop, reference_make_views,
                                         reference_mixing_picture)
from ipmix_cli.common.errors import IpmixError
from tests._augment_helpers import make_mixing_folder, sample_images, smooth_image, views_in_worker

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def mixing(tmp_path_factory):
    return make_mixing_folder(tmp_path_factory.mktemp("augment") / "mix")


@pytest.fixture(scope="module")
def bank(mixing):
    return MixingBank.from_folder(mixing, resolve_config("cifar"))


def test_bank_loads_once_and_pickles_by_reference(mixing, bank, tmp_path):
    assert len(bank) == 4 and bank.pixels.shape == (4, 36, 36, 3) and bank.pixels.dtype == np.uint8
    assert len(bank.fingerprint) == 64
    assert bank.path is not None and not (mixing / ".ipmix-cache").exists()
    data = pickle.dumps(bank)
    assert len(data) < 2000  # the path, not the pixels
    clone = pickle.loads(data)
    assert np.array_equal(clone.pixels, bank.pixels) and clone.fingerprint == bank.fingerprint
    # the fingerprint is the content: a copy elsewhere has the same one, a changed picture not
    copy = tmp_path / "copy"
    shutil.copytree(mixing, copy)
    assert MixingBank.from_folder(copy, resolve_config("cifar")).fingerprint == bank.fingerprint
    im = np.asarray(Image.open(copy / "pic-00.png")).copy()
    im[0, 0] ^= 1
    Image.fromarray(im).save(copy / "pic-00.png")
    assert MixingBank.from_folder(copy, resolve_config("cifar")).fingerprint != bank.fingerprint
    # another size, another bank
    assert MixingBank.from_folder(copy, resolve_config("imagenet", image_size=40)).size == 46


def test_bank_pictures_are_resized_by_shorter_side(mixing, bank):
    pic = Image.open(mixing / "pic-01.png").convert("RGB")  # 60 x 48: shorter side 48 -> 36
    assert pic.size == (60, 48)
    resized = np.asarray(pic.resize((45, 36), Image.BILINEAR))  # int(36 * 60 / 48) = 45
    assert np.array_equal(bank.pixels[1], resized[:, 4:40])


def test_bad_mixing_folders(tmp_path):
    cfg = resolve_config("cifar")
    with pytest.raises(IpmixError, match="does not exist"):
        MixingBank.from_folder(tmp_path / "nope", cfg)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(IpmixError, match="holds no pictures"):
        MixingBank.from_folder(tmp_path / "empty", cfg)
    bad = make_mixing_folder(tmp_path / "bad", n=2)
    (bad / "pic-zz.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(IpmixError, match="pic-zz.png"):
        MixingBank.from_folder(bad, cfg)


def test_make_views_shapes_and_view_relations(bank):
    images = sample_images(1, 6, 32)
    idx = np.arange(100, 106)
    one = Augmenter(resolve_config("cifar"), bank).make_views(images, 3, 1, idx)
    three = Augmenter(resolve_config("cifar", views=3), bank).make_views(images, 3, 1, idx)
    clean = Augmenter(resolve_config("cifar", "none"), None).make_views(images, 3, 1, idx)
    assert one.shape == (6, 1, 32, 32, 3) and three.shape == (6, 3, 32, 32, 3) and one.dtype == np.uint8
    assert np.array_equal(three[:, 0], clean[:, 0])  # clean = crop + flip only
    assert np.array_equal(three[:, 1], one[:, 0])  # a one-view sample is view 1 of the triple
    assert not np.array_equal(three[:, 1], three[:, 2])  # the two views are independent
    # crop + flip (torchvision order): a 32 px window of the 4 px zero-padded image, maybe mirrored
    for x, c in zip(images, clean[:, 0]):
        pad = np.pad(x, ((4, 4), (4, 4), (0, 0)))
        windows = [pad[oy:oy + 32, ox:ox + 32] for oy in range(9) for ox in range(9)]
        assert any(np.array_equal(w, c) or np.array_equal(w[:, ::-1], c) for w in windows)


def test_rows_do_not_depend_on_batch_order_or_size(bank):
    aug = Augmenter(resolve_config("cifar", views=3), bank)
    images = sample_images(2, 10, 32)
    idx = np.arange(10) * 13 + 5
    full = aug.make_views(images, 7, 2, idx)
    perm = np.random.default_rng(0).permutation(10)
    assert np.array_equal(aug.make_views(images[perm], 7, 2, idx[perm]), full[perm])
    parts = [aug.make_views(images[i:i + 3], 7, 2, idx[i:i + 3]) for i in range(0, 10, 3)]
    assert np.array_equal(np.concatenate(parts), full)
    assert np.array_equal(aug.make_views(list(images), 7, 2, idx), full)
    assert not np.array_equal(aug.make_views(images, 7, 3, idx), full)  # another epoch
    assert not np.array_equal(aug.make_views(images, 8, 2, idx), full)  # another seed


def test_same_bytes_in_worker_processes(bank):
    from joblib import Parallel, delayed

    cfg = resolve_config("cifar", views=3)
    images = sample_images(3, 8, 32)
    idx = np.arange(8, dtype=np.int64)
    local = Augmenter(cfg, bank).make_views(images, 11, 0, idx)
    parts = Parallel(n_jobs=2, backend="loky")(
        delayed(views_in_worker)(cfg.to_dict(), bank, images[i:i + 4], 11, 0, idx[i:i + 4]) for i in (0, 4))
    assert np.array_equal(np.concatenate(parts), local)


@pytest.mark.parametrize("recipe, options", [
    ("ipmix", {}), ("ipmix", {"overflow": "wrap", "all_ops": True}), ("ipmix", {"partner": "mixed", "min_ops": 1}),
    ("augmix", {}), ("augmix", {"all_ops": True}), ("pixmix", {}), ("pixmix", {"all_ops": True}), ("none", {}),
])
def test_fast_path_equals_the_per_image_reference(bank, recipe, options):
    cfg = resolve_config("cifar", recipe, views=1 if recipe == "none" else 3, **options)
    images = sample_images(4, 12, 32)
    idx = np.arange(12) + 1000
    fast = Augmenter(cfg, bank).make_views(images, 5, 1, idx)
    ref = reference_make_views(cfg, bank.pixels, images, 5, 1, idx)
    diff = np.abs(fast.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


@pytest.mark.parametrize("preset, recipe, all_ops", [
    ("cifar", "augmix", None), ("cifar", "augmix", True), ("cifar", "pixmix", None), ("cifar", "pixmix", True),
    ("imagenet", "augmix", None), ("imagenet", "pixmix", None), ("imagenet", "pixmix", True),
])
def test_baseline_recipes_follow_the_reference_over_many_samples(preset, recipe, all_ops):
    """AugMix and PixMix kernels against the per-image reference (each op its row's Pillow
    call, each mix NumPy) over many samples: the same views up to float rounding, hence the same
    distribution of change per sample, and the ops really change the images."""
    size = 32 if preset == "cifar" else 64
    cfg = resolve_config(preset, recipe, views=3, image_size=size, all_ops=all_ops)
    rs = np.random.default_rng(size)
    bank = MixingBank.from_array(np.stack([smooth_image(rs, cfg.mixing_size) for _ in range(6)]))
    n = 96 if size == 32 else 24
    images = sample_images(9, n, size)
    idx = np.arange(n) + 50
    fast = Augmenter(cfg, bank).make_views(images, 3, 0, idx)
    ref = reference_make_views(cfg, bank.pixels, images, 3, 0, idx)
    diff = np.abs(fast.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999
    change = [np.abs(v[:, 1:].astype(float) - v[:, :1]).mean(axis=(1, 2, 3, 4)) for v in (fast, ref)]
    assert np.abs(change[0] - change[1]).max() < 0.01 and np.median(change[0]) > 2.0


def test_imagenet_preset_random_resized_crop(tmp_path):
    cfg = resolve_config("imagenet", image_size=48, views=3)
    bank = MixingBank.from_folder(make_mixing_folder(tmp_path / "mix", size=64), cfg)
    rs = np.random.default_rng(3)
    images = [smooth_image(rs, h, w) for h, w in ((60, 80), (48, 48), (100, 37), (53, 64))]
    idx = np.arange(4)
    out = Augmenter(cfg, bank).make_views(images, 0, 0, idx)
    assert out.shape == (4, 3, 48, 48, 3)
    ref = reference_make_views(cfg, bank.pixels, images, 0, 0, idx)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    # the clean view is torchvision's RandomResizedCrop: a crop of the source resized by PIL
    assert np.array_equal(out[:, 0], np.stack([reference_crop(im, cfg, 0, 0, i) for i, im in enumerate(images)]))


def test_decoded_pictures_give_the_same_views_as_arrays(tmp_path, monkeypatch):
    from ipmix_cli.common import pixels as pillow_pixels

    cfg = resolve_config("imagenet", image_size=48, views=3)
    bank = MixingBank.from_folder(make_mixing_folder(tmp_path / "mix", size=64), cfg)
    rs = np.random.default_rng(4)
    arrays = [smooth_image(rs, h, w) for h, w in ((60, 80), (120, 90), (49, 200))]
    pictures = [Image.fromarray(a) for a in arrays]
    pictures[2] = pictures[2].convert("RGBA")  # other modes are converted first
    view = pillow_pixels.rgbx_view(pictures[0])
    assert view.shape == (60, 80, 4) and np.array_equal(view[..., :3], arrays[0])  # no copy
    aug = Augmenter(cfg, bank)
    expected = aug.make_views(arrays, 1, 2, np.arange(3))
    assert np.array_equal(aug.make_views(pictures, 1, 2, np.arange(3)), expected)
    # where Pillow offers no export, the pixels are copied out instead: same views
    monkeypatch.setattr(pillow_pixels, "_export_view", lambda img: None)
    assert pillow_pixels.rgbx_view(pictures[0]).shape == (60, 80, 3)
    assert np.array_equal(aug.make_views(pictures, 1, 2, np.arange(3)), expected)


def test_per_image_api_equals_the_batch_row(bank):
    cfg = resolve_config("cifar")
    images = sample_images(6, 3, 32)
    out = Augmenter(cfg, bank).make_views(images, 2, 0, np.arange(3))
    for i, im in enumerate(images):
        x = reference_crop(im, cfg, 2, 0, i)
        f = reference_mixing_picture(bank.pixels, 32, 2, 0, i)
        assert np.array_equal(ipmix_one(x, f, view_state(2, 0, i, 0), cfg), out[i, 0])


def test_bad_batches_are_refused(bank):
    aug = Augmenter(resolve_config("cifar"), bank)
    with pytest.raises(IpmixError, match="share one size"):
        aug.make_views([np.zeros((32, 32, 3), np.uint8), np.zeros((30, 32, 3), np.uint8)], 0, 0, [0, 1])
    with pytest.raises(IpmixError, match=r"uint8 \[N, 32, 32, 3\]"):
        aug.make_views(np.zeros((2, 64, 64, 3), np.uint8), 0, 0, [0, 1])
    with pytest.raises(IpmixError, match="indices"):
        aug.make_views(np.zeros((2, 32, 32, 3), np.uint8), 0, 0, [0])
    with pytest.raises(IpmixError, match="non-negative"):
        aug.make_views(np.zeros((1, 32, 32, 3), np.uint8), -1, 0, [0])
    with pytest.raises(IpmixError, match="below 2"):
        aug.make_views(np.zeros((1, 32, 32, 3), np.uint8), 2**64, 0, [0])
    with pytest.raises(IpmixError, match="needs a mixing folder"):
        Augmenter(resolve_config("cifar"), None)
    big = resolve_config("imagenet", image_size=64)
    with pytest.raises(IpmixError, match="holds 36px pictures but this configuration resizes them to 73px"):
        Augmenter(big, bank)
    assert aug.make_views(np.zeros((0, 32, 32, 3), np.uint8), 0, 0, []).shape == (0, 1, 32, 32, 3)


def test_crop_draws():
    from ipmix_cli.augment.views import draw_pad_crop, random_resized_crop_box

    draws = np.array([draw_pad_crop(0, 0, i, 32) for i in range(3000)], dtype=np.int64)
    for col in (0, 1):
        counts = np.bincount(draws[:, col], minlength=9)
        assert len(counts) == 9 and np.abs(counts / 3000 - 1 / 9).max() < 0.03
    assert abs(draws[:, 2].mean() - 0.5) < 0.03
    flips = 0
    for i in range(500):
        top, left, h, w, flip = random_resized_crop_box(0, 0, i, 300, 400)
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        assert 0.08 * 120000 * 0.95 <= h * w <= 120000
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
        flips += flip
    assert 200 < flips < 300

