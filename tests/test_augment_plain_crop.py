"""The `none` recipe's pad crop in NumPy (plain_crop) against the kernels it stands in for, and
the point of it: a build that mixes nothing never imports Numba."""

import subprocess
import sys

import numpy as np
import pytest

from ipmix_cli.augment import plain_crop
from tests._shards_build_helpers import write_cifar_binary

EXTREMES = [(0, 0), (3, 1), (2**63 - 1, 2**63 - 1), (12345, 2**40)]


@pytest.mark.kernels
@pytest.mark.parametrize("seed, epoch", EXTREMES)
def test_stream_keys_equal_the_kernel_generator(seed, epoch):
    from ipmix_cli.augment.rng import stream_key

    idx = np.array([0, 1, 2, 77, 2**31, 2**62, 2**63 - 1], np.int64)
    for stream in (0, 1, 2, 3):
        want = np.array([stream_key(seed, epoch, int(i), stream) for i in idx], np.uint64)
        np.testing.assert_array_equal(plain_crop.stream_keys(seed, epoch, idx, stream), want)


@pytest.mark.kernels
@pytest.mark.parametrize("seed, epoch", EXTREMES)
@pytest.mark.parametrize("flip_ok", [True, False])
def test_pad_crop_flip_equals_the_kernel_batch(seed, epoch, flip_ok):
    from ipmix_cli.augment.config import resolve_config
    from ipmix_cli.augment.ops import TABLES
    from ipmix_cli.augment.views import CROP_PAD, augment_batch

    rng = np.random.default_rng(seed % 1000 + epoch % 7)
    images = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    indices = np.concatenate([np.arange(200), rng.integers(0, 2**63 - 1, 100)]).astype(np.int64)
    no_bank = np.zeros((1, 32, 32, 3), np.uint8)
    no_bank.flags.writeable = False
    want = np.empty((300, 1, 32, 32, 3), np.uint8)
    augment_batch(images, CROP_PAD, flip_ok, no_bank, seed, epoch, indices,
                  resolve_config("cifar", "none", 1).kernel_recipe(), TABLES, want)
    got = np.full((300, 1, 32, 32, 3), 7, np.uint8)
    plain_crop.pad_crop_flip(images, seed, epoch, indices, flip_ok, got[:, 0])
    np.testing.assert_array_equal(got, want)
    oy, ox, flip = plain_crop.draw_pad_crops(seed, epoch, indices)
    assert set(oy.tolist()) == set(ox.tolist()) == set(range(9))  # every offset drawn, none outside
    assert 0.35 < flip.mean() < 0.65


def test_pad_crop_flip_of_a_known_picture():
    """Offsets and the mirror read off a picture whose pixels name their own position."""
    S = 8
    yy, xx = np.mgrid[:S, :S]
    picture = np.stack([yy + 1, xx + 1, np.full_like(yy, 200)], axis=-1).astype(np.uint8)
    images = np.repeat(picture[None], 64, axis=0)
    out = np.empty_like(images)
    oy, ox, flip = plain_crop.draw_pad_crops(5, 2, np.arange(64))
    plain_crop.pad_crop_flip(images, 5, 2, np.arange(64), True, out)
    for i in range(64):
        dy, dx = oy[i] - plain_crop.PAD, ox[i] - plain_crop.PAD
        for y in range(S):
            for x in range(S):
                sx = (S - 1 - x if flip[i] else x) + dx
                sy = y + dy
                inside = 0 <= sy < S and 0 <= sx < S
                want = picture[sy, sx] if inside else (0, 0, 0)
                assert tuple(out[i, y, x]) == tuple(want), (i, y, x)


def test_a_none_build_never_imports_numba(tmp_path):
    write_cifar_binary(tmp_path / "src", per_batch=12)
    script = (
        "import sys\n"
        "from ipmix_cli.shards import build_shards\n"
        f"m = build_shards(source='cifar10:{tmp_path / 'src'}', out='{tmp_path / 'out'}', recipe='none',"
        " epochs=2, seed=3, progress=False)\n"
        "print(m['totals']['samples'], 'numba' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["120", "False"]
