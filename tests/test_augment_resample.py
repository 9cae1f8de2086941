"""The RandomResizedCrop resize kernel against PIL's bilinear `Image.resize`, bit for bit."""

import numpy as np
import pytest
from PIL import Image

from ipmix_cli.augment.resample import resize_bilinear, resized_window

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


def _pil(im, out_h, out_w):
    return np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize((out_w, out_h), Image.BILINEAR))


def test_resize_identical_to_pil_for_up_down_and_mixed_scales():
    rs = np.random.default_rng(0)
    cases = [(80, 60, 224, 224), (300, 200, 224, 224), (230, 30, 224, 224), (30, 230, 224, 224),
             (100, 100, 50, 150), (100, 100, 150, 50), (97, 41, 97, 13), (13, 97, 41, 97), (1, 5, 7, 3),
             (224, 224, 224, 224)]
    cases += [tuple(int(v) for v in rs.integers(1, 260, 4)) for _ in range(60)]
    for h, w, oh, ow in cases:
        im = rs.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert np.array_equal(resize_bilinear(im, oh, ow), _pil(im, oh, ow)), (h, w, oh, ow)


def test_window_equals_crop_then_resize():
    rs = np.random.default_rng(1)
    im = rs.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    for _ in range(40):
        top, left = int(rs.integers(0, 120)), int(rs.integers(0, 90))
        h, w = int(rs.integers(1, 121 - top)), int(rs.integers(1, 91 - left))
        size = int(rs.integers(8, 70))
        out = np.empty((size, size, 3), np.uint8)
        resized_window(im, top, left, h, w, size, size, out)
        assert np.array_equal(out, _pil(im[top:top + h, left:left + w], size, size))


def test_window_reads_rgbx_pixels_like_rgb():
    # Pillow keeps RGB images as 4 bytes per pixel; the kernel reads that layout directly
    rs = np.random.default_rng(2)
    rgb = rs.integers(0, 256, (150, 110, 3), dtype=np.uint8)
    rgbx = np.concatenate([rgb, rs.integers(0, 256, (150, 110, 1), dtype=np.uint8)], axis=2)
    for top, left, h, w, size in [(0, 0, 150, 110, 224), (10, 5, 120, 90, 64), (3, 7, 40, 100, 56),
                                  (20, 2, 100, 30, 48), (0, 0, 150, 110, 150)]:
        a = np.empty((size, size, 3), np.uint8)
        b = np.empty((size, size, 3), np.uint8)
        resized_window(rgb, top, left, h, w, size, size, a)
        resized_window(rgbx, top, left, h, w, size, size, b)
        assert np.array_equal(a, b), (top, left, h, w, size)
        assert np.array_equal(a, _pil(rgb[top:top + h, left:left + w], size, size))
